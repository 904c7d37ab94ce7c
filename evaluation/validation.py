"""The validation suite: the tasks that make every decision (checkpoint, recipe, variant) about a learned optimizer.

The project keeps three disjoint sets of problems (``docs/evaluation_protocol.md`` lists them side by side):

1. the **meta-training** problems of a run's config, named in its ``[tasks] problems`` (generated data:
   :mod:`tasks.synthetic_images`, the Wichrowska 2017 problems, ReLU-teacher labels);
2. this **validation** suite, on data neither of the others uses: grey patches of scikit-learn's two sample
   photographs (:mod:`tasks.image_patches`), the ``wine`` and ``diabetes`` tables (:mod:`tasks.tabular`), and
   Wichrowska problems that no shipped optimizer trains on and the test suite leaves out;
3. the **test** suite (:mod:`evaluation.heldout`: Fashion-MNIST, digits, breast cancer, Friedman #1 and other
   Wichrowska problems), which only reports and never chooses anything.

=============================  ===============================================================================
``patches8_mlp_64``            64-64-8 ReLU MLP on 8x8 patches, batch 128
``patches8_mlp_512x512``       64-512-512-8 ReLU MLP on 8x8 patches, batch 128 (a wide net, as the robustness
                               checks ask)
``patches28_mlp_512x512``      784-512-512-8 ReLU MLP on 28x28 patches, batch 128 (MNIST's input size)
``patches8_photograph_mlp_512x512``
                               64-512-512-2 ReLU MLP on 1,197 textured 8x8 patches labelled by photograph, batch
                               128: Adam at 1e-3 fits its training set to ~0.03 by step ~1,000 and ~0.006 by 5,000,
                               the regime in which a learned optimizer must keep the loss down once it is small
``patches16_mlp_tanh``         256-128-8 tanh MLP on 16x16 patches, batch 128
``patches16_conv``             3-layer ReLU ConvNet (8, 16, 16 channels) on 16x16 patches, batch 64
``patches8_autoencoder``       64-32-8-32-64 tanh autoencoder of 8x8 patches, batch 128
``wine_mlp``                   13-32-3 ReLU classifier on ``wine``, batch 32
``wine_mlp_512x512``           13-512-512-3 ReLU classifier on ``wine``, batch 32 (a wide net that fits its 107
                               training rows exactly: per-tensor gradient RMS falls to 1e-7 and below and stays there,
                               the regime in which the HRNN's features fade and its loss climbed back)
``diabetes_mlp``               10-32-32-1 tanh regression on ``diabetes``, batch 32
``diabetes_binary_mlp_64x64``  10-64-64-2 ReLU classifier on ``diabetes_binary`` (progression above the mean), batch
                               32: a small net that can fit its 265 noisy training rows only by memorising them
``quadratic_1024``             Wichrowska's 1024-dimensional quadratic
``rescale350_quadratic_50``    a 50-dimensional quadratic on parameters 350 times larger
``styblinski_tang``            2-D Styblinski-Tang (several local minima)
``sum_7quadratics_noise0.1``   a sum of seven quadratics with gradient noise
``norm_22_p3``                 3-norm regression in 22 dimensions
=============================  ===============================================================================

Horizons: the suite is run at 500 and 2,000 steps (:data:`HORIZONS`), three seeds or more. Synthetic problems are
fixed instances (key :data:`INSTANCE_SEED`), so every optimizer sees the same problem.
"""

from __future__ import annotations

from typing import Sequence

import jax

import tasks
from evaluation.harness import SuiteEntry
from tasks import autoencoder, datasets, tabular

#: The two step budgets every decision looks at.
HORIZONS = (500, 2000)

#: Key of the fixed instance drawn from each synthetic family.
INSTANCE_SEED = 2017

#: Wichrowska problems of the validation suite: in neither the test suite nor any committed meta-training config's
#: problems (configs/*.toml but the paper reproduction wichrowska2017.toml; a test checks).
WICHROWSKA_VALIDATION = ('quadratic_1024', 'rescale350_quadratic_50', 'styblinski_tang', 'sum_7quadratics_noise0.1',
                         'norm_22_p3')

#: Every task name of the suite, in order.
ALL_TASKS = (('patches8_mlp_64', 'patches8_mlp_512x512', 'patches28_mlp_512x512',
             'patches8_photograph_mlp_512x512', 'patches16_mlp_tanh',
             'patches16_conv', 'patches8_autoencoder', 'wine_mlp', 'wine_mlp_512x512', 'diabetes_mlp',
             'diabetes_binary_mlp_64x64')
             + WICHROWSKA_VALIDATION)

#: The datasets the suite's networks train on (``docs/evaluation_protocol.md``; a test checks the disjointness).
DATASETS = ('image_patches', 'wine', 'diabetes', 'diabetes_binary')  # diabetes_binary: diabetes, thresholded


def _build(name: str) -> tuple[tasks.Task, bool]:
  """The task called ``name`` and whether it has a test split of its own."""
  if name == 'patches8_mlp_64':
    return tasks.mlp_task(datasets.load_image_patches(size=8), (64,), 'relu', batch_size=128), True
  if name == 'patches8_mlp_512x512':
    return tasks.mlp_task(datasets.load_image_patches(size=8), (512, 512), 'relu', batch_size=128), True
  if name == 'patches28_mlp_512x512':
    return tasks.mlp_task(datasets.load_image_patches(size=28), (512, 512), 'relu', batch_size=128), True
  if name == 'patches8_photograph_mlp_512x512':
    return tasks.mlp_task(datasets.load_photograph_patches(size=8), (512, 512), 'relu', batch_size=128), True
  if name == 'patches16_mlp_tanh':
    return tasks.mlp_task(datasets.load_image_patches(size=16), (128,), 'tanh', batch_size=128), True
  if name == 'patches16_conv':
    return tasks.conv_task(datasets.load_image_patches(size=16), (8, 16, 16), 'relu', batch_size=64), True
  if name == 'patches8_autoencoder':
    return autoencoder.AutoencoderTask(datasets.load_image_patches(size=8), (32, 8, 32), 'tanh', 128), True
  if name == 'wine_mlp':
    return tabular.TabularMLPTask('wine', (32,), 'relu', batch_size=32), True
  if name == 'wine_mlp_512x512':
    return tabular.TabularMLPTask('wine', (512, 512), 'relu', batch_size=32), True
  if name == 'diabetes_mlp':
    return tabular.TabularMLPTask('diabetes', (32, 32), 'tanh', batch_size=32), True
  if name == 'diabetes_binary_mlp_64x64':
    return tabular.TabularMLPTask('diabetes_binary', (64, 64), 'relu', batch_size=32), True
  if name in WICHROWSKA_VALIDATION:
    family = tasks.wichrowska2017()[name]
    return family.task(family.sample(jax.random.key(INSTANCE_SEED))), False
  raise ValueError(f'unknown validation task {name!r}; the suite has: {", ".join(ALL_TASKS)}.')


def validation_suite(names: Sequence[str] | None = None, num_steps: int = HORIZONS[0]) -> list[SuiteEntry]:
  """The validation suite (module docstring) as :class:`evaluation.harness.SuiteEntry` objects.

  Args:
    names: a subset of :data:`ALL_TASKS` (default: all of them).
    num_steps: the step budget of every task (the project decides at both of :data:`HORIZONS`).

  Raises:
    ValueError: for an unknown task name or a budget below 1.
  """
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}.')
  names = ALL_TASKS if names is None else tuple(names)
  entries = []
  for name in names:
    task, has_test_split = _build(name)
    entries.append(SuiteEntry(name, task, num_steps, has_test_split))
  return entries
