"""The held-out suite and the harness command line."""

import json
import math
import os

import jax
import numpy as np
import pytest

import meta_training_sets
import tasks
from evaluation import cli
from evaluation import heldout

SYNTHETIC = [n for n in heldout.ALL_TASKS if not n.startswith('fashion_mnist')]


def test_suite_is_disjoint_from_every_meta_training_set():
  """No committed config (but the paper reproductions) trains on a Wichrowska problem of the suite, and the suite's
  quadratics (5, 500 and 2,048 dimensions) lie outside the dimensions they train on (20..250)."""
  named = meta_training_sets.named_problems()
  assert 'configs/hrnn_shipped.toml' in named
  trained = set().union(*named.values())
  assert not trained & set(heldout.WICHROWSKA_HELDOUT)
  trained_dims = {tasks.problem(n).task(tasks.problem(n).sample(jax.random.key(0))).init(jax.random.key(0)).shape[0]
                  for n in trained if n.startswith('quadratic_')}
  assert min(trained_dims) == 20 and max(trained_dims) == 250
  for entry in heldout.heldout_suite(['noisy_quadratic_5', 'noisy_quadratic_500', 'quadratic_2048']):
    dim = entry.task.init(jax.random.key(0)).shape[0]
    assert not min(trained_dims) <= dim <= max(trained_dims), entry.name


@pytest.mark.parametrize('earlier, later', [('hrnn_shipped', 'hrnn_shipped_v2'),
                                            ('hrnn_shipped_v2', 'hrnn_shipped_v3')])
def test_second_round_training_sets_add_relu_networks_on_data_outside_the_suite(earlier, later):
  """configs/hrnn_shipped_v2.toml and _v3.toml train on the round before's problems plus ReLU networks, none on
  held-out data."""
  paths = [os.path.join(meta_training_sets.REPO, 'configs', f'{n}.toml') for n in (earlier, later)]
  before, problems = (meta_training_sets.problems_of(p) for p in paths)
  assert problems.names[:len(before.names)] == before.names
  extra = problems.names[len(before.names):]
  assert extra and not set(problems.names) & set(heldout.ALL_TASKS)
  for name in extra:
    family = problems.families[problems.names.index(name)]
    dataset = getattr(family.task(family.sample(jax.random.key(0))), 'dataset', None)
    assert dataset is None or dataset.name.startswith('synthetic_images'), name
    assert 'relu' in name


@pytest.mark.parametrize('name', SYNTHETIC)
def test_every_synthetic_task_has_a_finite_loss_and_gradient_and_is_fixed(name):
  (entry,) = heldout.heldout_suite([name])
  assert entry.num_steps == heldout.DEFAULT_NUM_STEPS
  params = entry.task.init(jax.random.key(1))
  batch = entry.task.batch(jax.random.key(2), 'train')
  loss, grads = jax.value_and_grad(entry.task.loss)(params, jax.random.key(3), batch)
  assert math.isfinite(float(loss))
  assert all(bool(np.all(np.isfinite(g))) for g in jax.tree.leaves(grads))
  # Building the suite again gives the same instance (the same loss at the same point).
  (again,) = heldout.heldout_suite([name])
  assert float(again.task.loss(params, jax.random.key(3), again.task.batch(jax.random.key(2), 'train'))) == float(
      loss)


@pytest.mark.data
def test_fashion_mnist_tasks_build(fashion_mnist_dir):
  entries = heldout.heldout_suite(['fashion_mnist_mlp', 'fashion_mnist_conv'], data_dir=fashion_mnist_dir)
  for entry in entries:
    assert entry.has_test_split
    params = entry.task.init(jax.random.key(0))
    loss = entry.task.loss(params, jax.random.key(1), entry.task.batch(jax.random.key(2), 'test'))
    assert abs(float(loss) - math.log(10)) < 0.5  # ten classes at init: close to uniform


def test_unknown_task_and_bad_budget_are_named():
  with pytest.raises(ValueError, match="unknown held-out task 'mnist_mlp'.*digits_mlp"):
    heldout.heldout_suite(['mnist_mlp'])
  with pytest.raises(ValueError, match='num_steps must be >= 1'):
    heldout.heldout_suite(['ackley'], num_steps=0)


def test_cli_writes_report_files(tmp_path, capsys):
  out = tmp_path / 'eval'
  code = cli.main(['--optimizer', 'learnable_adam', '--tasks', 'ackley,noisy_quadratic_5', '--steps', '40',
                           '--seeds', '1', '--baselines', 'adam_tuned,adam_1e-3', '--speedup-horizon', '1',
                           '--out', str(out)])
  assert code == 0
  report = json.loads((out / 'report.json').read_text())
  assert [t['name'] for t in report['tasks']] == ['ackley', 'noisy_quadratic_5']
  assert report['candidates'] == ['learnable_adam_init']
  for t in report['tasks']:
    # LearnableAdam at init is Adam(1e-3) exactly: same final loss as the adam_1e-3 baseline.
    assert t['results']['learnable_adam_init']['final_loss'] == pytest.approx(
        t['results']['adam_1e-3']['final_loss'], rel=1e-5)
  assert '| ackley | 40 |' in (out / 'report.md').read_text()
  assert sorted(p.name for p in (out / 'curves').iterdir()) == ['ackley.png', 'noisy_quadratic_5.png', 'summary.png']
  assert '| candidate |' in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path):
  with pytest.raises(SystemExit):
    cli.main(['--baselines', 'adam_1e-3', '--out', str(tmp_path)])  # no tuned Adam reference
  with pytest.raises(SystemExit):
    cli.main(['--baselines', 'adam_tuned,adamw', '--out', str(tmp_path)])
  with pytest.raises(SystemExit):
    cli.main(['--optimizer', 'no_such_optimizer', '--out', str(tmp_path)])
