"""benchmarks/self_training.py: the smoothing, the curves figure and the fresh-instance evaluation of runs."""

import json
import os

import jax
import numpy as np

import lopt
from benchmarks import self_training
from meta_train.run import config as config_lib

TINY_RUN = '''
[learned_optimizer]
architecture = "mlp_lopt"
[tasks]
family = "tasks.generated_classification:MLPClassifierFamily"
kwargs = {n_features = 3, hidden_sizes = [4], batch_size = 8, n_samples = 16}
'''


def test_smooth_is_a_bias_corrected_average_that_skips_non_finite_values():
  np.testing.assert_allclose(self_training.smooth([2.0, 2.0, 2.0]), [2.0, 2.0, 2.0])
  out = self_training.smooth([1.0, np.nan, 3.0], decay=0.5)
  assert out[1] == out[0] == 1.0
  np.testing.assert_allclose(out[2], (0.25 * 1.0 + 0.5 * 3.0) / 0.75)


def _fake_run(path, losses):
  os.makedirs(path)
  with open(os.path.join(path, 'metrics.jsonl'), 'w', encoding='utf-8') as f:
    for i, loss in enumerate(losses):
      f.write(json.dumps({'step': 5 * (i + 1), 'meta_loss': loss}) + '\n')
      f.write(json.dumps({'step': 5 * (i + 1), 'other': 1.0}) + '\n')  # records without the key are skipped


def test_curves_reads_metrics_and_writes_one_figure(tmp_path):
  _fake_run(tmp_path / 'a', [0.0, -0.5, -1.0])
  _fake_run(tmp_path / 'b', [0.0, -0.1, -0.2])
  steps, values = self_training.read_metrics(str(tmp_path / 'a'))
  np.testing.assert_array_equal(steps, [5, 10, 15])
  np.testing.assert_array_equal(values, [0.0, -0.5, -1.0])
  out = tmp_path / 'img' / 'curves.png'
  self_training.main(['curves', '--out', str(out), f'A={tmp_path / "a"}', str(tmp_path / 'b')])
  assert out.stat().st_size > 1000


def test_family_evaluates_a_run_against_adam_on_the_same_instances(tmp_path):
  run = tmp_path / 'run'
  os.makedirs(run)
  (run / 'config.toml').write_text(config_lib.dumps(config_lib.loads(TINY_RUN)))
  arch = lopt.MLPLOpt()
  lopt.save(str(run / 'final.npz'), arch, arch.init(jax.random.PRNGKey(0)))
  result = self_training.family_eval({'mine': str(run)}, [10], num_tasks=2, adam_grid=(1e-3, 1e-1))
  budget = result['budgets']['10']
  assert budget['adam_tuned_lr'] in (1e-3, 1e-1)
  names = set(budget['optimizers'])
  assert 'mine' in names and 'Adam 1e-3' in names and len(names) == 3
  for summary in budget['optimizers'].values():
    assert len(summary['train']) == 2 and np.isfinite(summary['gap_mean'])


def test_plot_gaps_writes_one_figure_with_a_panel_per_setting(tmp_path):
  out = tmp_path / 'gaps.png'
  self_training.plot_gaps({'family': {'a': [(0.2, 0.4), (0.25, 0.35)], 'b': [(0.3, 0.3)]},
                           'wine': {'a': [(0.1, 0.2)], 'b': [(0.1, 0.3)]}}, str(out), title='t')
  assert out.stat().st_size > 1000
