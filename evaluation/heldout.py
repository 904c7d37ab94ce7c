"""The test suite ("held-out"): tasks that only report. Nothing in it ever chooses a checkpoint, recipe or variant.

Decisions are made on the validation suite (:mod:`evaluation.validation`); ``docs/evaluation_protocol.md`` lists
the meta-training, validation and test sets side by side, and a test checks that they share no task or dataset.

Each meta-training round names its problems in its config (``[tasks] problems`` in ``configs/*.toml``). The shipped
hierarchical RNN is meta-trained on 15 problems of the Wichrowska et al. 2017 set (``configs/hrnn_shipped.toml``:
quadratics of 20 to 100 dimensions, 2-D bowls, Beale and Booth, softmax regression and small sigmoid MLPs on
generated data), then fine-tuned with three ReLU MLPs on generated data added (``configs/hrnn_shipped_v2.toml``:
:mod:`tasks.synthetic_images` and ReLU-teacher labels; no Fashion-MNIST or digits); later rounds add networks on
generated data only. :func:`heldout_suite` evaluates on problem *types* and datasets those sets leave out; the tests
read every committed config's problems and check it (``tests/evaluation/meta_training_sets.py``):

=================================  ========================================================================
``fashion_mnist_mlp``              784-128-10 ReLU MLP on Fashion-MNIST, batch 128 (101,770 parameters)
``fashion_mnist_conv``             3-layer ReLU ConvNet (8, 16, 16 channels) on Fashion-MNIST, batch 64
``digits_mlp``                     64-32-10 ReLU MLP on scikit-learn's 8x8 digits, batch 64
``fashion_mnist_mlp_512x512``      784-512-512-10 ReLU MLP on Fashion-MNIST, batch 128 (a wide net)
``digits_mlp_512x512``             64-512-512-10 ReLU MLP on digits, batch 128 (a wide net)
``digits_mlp_tanh``                64-64-10 tanh MLP on digits, batch 64
``fashion_mnist_autoencoder``      784-128-32-128-784 ReLU autoencoder of Fashion-MNIST, batch 128
``breast_cancer_mlp``              30-32-2 ReLU classifier on scikit-learn's breast-cancer table, batch 32
``friedman1_mlp``                  10-64-64-1 ReLU regression on Friedman #1 (generated table), batch 32
``rosenbrock_10d``                 the chained 10-dimensional Rosenbrock function
``noisy_quadratic_5``              ½‖Wx − y‖² in 5 dimensions (below the training range), gradient noise 0.1
``noisy_quadratic_500``            the same in 500 dimensions (above it), gradient noise 1.0
``quadratic_2048``                 Wichrowska's largest quadratic (excluded from training)
``matmul_3_k21``                   MatMulAlgorithm search, 3x3 with 21 products (Wichrowska, excluded)
``norm_25_p2``                     p-norm regression (Wichrowska, excluded)
``logsumexp_noise1``               2-D LogSumExp with gradient noise (Wichrowska, excluded)
``ackley``                         2-D Ackley (Wichrowska, excluded)
``sum_norm18p3_quadratic25_ros..`` a sum of a norm, a quadratic and Rosenbrock (Wichrowska, excluded)
=================================  ========================================================================

Every synthetic task is one fixed instance drawn from its family with a fixed key, so every optimizer (and every
run of the suite) sees the same problem. The step budget defaults to :data:`DEFAULT_NUM_STEPS` = 500, 25 times the
20-step truncations of ``configs/hrnn_shipped.toml`` (the project's target for this ratio: docs/benchmarks.md,
"Targets").

Run it from the command line with ``python -m evaluation`` (see :mod:`evaluation.cli`).
"""

from __future__ import annotations

from typing import Sequence

import jax

import tasks
from evaluation.harness import SuiteEntry
from tasks import autoencoder, tabular

#: Steps per held-out task: 25x the 20-step meta-training truncation.
DEFAULT_NUM_STEPS = 500

#: Key of the fixed instance drawn from each synthetic family (any fixed value: the point is that it never changes).
INSTANCE_SEED = 2017

#: Wichrowska problems that no committed meta-training config trains on (configs/*.toml but the paper reproduction
#: wichrowska2017.toml; a test checks) and the suite evaluates on.
WICHROWSKA_HELDOUT = ('quadratic_2048', 'matmul_3_k21', 'norm_25_p2', 'logsumexp_noise1', 'ackley',
                      'sum_norm18p3_quadratic25_rosenbrock')

#: Every task name of the full suite, in order.
ALL_TASKS = ('fashion_mnist_mlp', 'fashion_mnist_conv', 'digits_mlp', 'fashion_mnist_mlp_512x512',
             'digits_mlp_512x512', 'digits_mlp_tanh', 'fashion_mnist_autoencoder', 'breast_cancer_mlp',
             'friedman1_mlp', 'rosenbrock_10d', 'noisy_quadratic_5', 'noisy_quadratic_500') + WICHROWSKA_HELDOUT

#: The datasets the suite's networks train on (``docs/evaluation_protocol.md``; a test checks the disjointness).
DATASETS = ('fashion_mnist', 'digits', 'breast_cancer', 'friedman1')


def _instance(family: tasks.TaskFamily) -> tasks.Task:
  return family.task(family.sample(jax.random.key(INSTANCE_SEED)))


def _noisy_quadratic(dim: int, stdev: float) -> tasks.Task:
  return tasks.GradientNoise(_instance(tasks.QuadraticFamily(dim)), stdev)


def _unknown_task(name: str) -> ValueError:
  return ValueError(f'unknown held-out task {name!r}; the suite has: {", ".join(ALL_TASKS)}.')


def _build(name: str, data_dir: str | None) -> tuple[tasks.Task, bool]:
  """The task called ``name`` and whether it has a test split of its own."""
  if name == 'fashion_mnist_mlp':
    return tasks.mlp_task('fashion_mnist', (128,), 'relu', batch_size=128, data_dir=data_dir), True
  if name == 'fashion_mnist_conv':
    return tasks.conv_task('fashion_mnist', (8, 16, 16), 'relu', batch_size=64, data_dir=data_dir), True
  if name == 'digits_mlp':
    return tasks.mlp_task('digits', (32,), 'relu', batch_size=64), True
  if name == 'fashion_mnist_mlp_512x512':
    return tasks.mlp_task('fashion_mnist', (512, 512), 'relu', batch_size=128, data_dir=data_dir), True
  if name == 'digits_mlp_512x512':
    return tasks.mlp_task('digits', (512, 512), 'relu', batch_size=128), True
  if name == 'digits_mlp_tanh':
    return tasks.mlp_task('digits', (64,), 'tanh', batch_size=64), True
  if name == 'fashion_mnist_autoencoder':
    dataset = tasks.load_dataset('fashion_mnist', data_dir)
    return autoencoder.AutoencoderTask(dataset, (128, 32, 128), 'relu', batch_size=128), True
  if name == 'breast_cancer_mlp':
    return tabular.TabularMLPTask('breast_cancer', (32,), 'relu', batch_size=32), True
  if name == 'friedman1_mlp':
    return tabular.TabularMLPTask('friedman1', (64, 64), 'relu', batch_size=32), True
  if name == 'rosenbrock_10d':
    return tasks.RosenbrockND(10), False
  if name == 'noisy_quadratic_5':
    return _noisy_quadratic(5, 0.1), False
  if name == 'noisy_quadratic_500':
    return _noisy_quadratic(500, 1.0), False
  if name in WICHROWSKA_HELDOUT:
    return _instance(tasks.wichrowska2017()[name]), False
  raise _unknown_task(name)


def heldout_suite(names: Sequence[str] | None = None, num_steps: int = DEFAULT_NUM_STEPS,
                  data_dir: str | None = None) -> list[SuiteEntry]:
  """The held-out suite (module docstring) as :class:`evaluation.harness.SuiteEntry` objects.

  Args:
    names: a subset of :data:`ALL_TASKS` (default: all of them).
    num_steps: step budget of every task.
    data_dir: Fashion-MNIST directory (default: the Debian package's, or ``$LOPT_FASHION_MNIST_DIR``).

  Raises:
    ValueError: for an unknown task name.
    tasks.DatasetNotFoundError: when Fashion-MNIST is asked for and not installed (the message says how).
  """
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}.')
  names = ALL_TASKS if names is None else tuple(names)
  for name in names:
    if name not in ALL_TASKS:
      raise _unknown_task(name)
  entries = []
  for name in names:
    task, has_test_split = _build(name, data_dir)
    entries.append(SuiteEntry(name, task, num_steps, has_test_split))
  return entries
