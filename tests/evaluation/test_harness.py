"""Tests of the evaluation harness: learning-rate tuning, summary measures, report output."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from evaluation import harness
from tasks.base import Task


class _Quadratic(Task):
  """f(x) = 0.5 * sum(h * x**2) from x0 = 1 (deterministic: no data, no noise)."""

  def __init__(self, curvature):
    self.h = jnp.asarray(curvature, jnp.float32)
    self.name = 'quadratic'

  def init(self, key):
    del key
    return {'x': jnp.ones_like(self.h)}

  def loss(self, params, key, batch):
    del key, batch
    return 0.5 * jnp.sum(self.h * params['x'] ** 2)


GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def test_sgd_tuning_picks_the_learning_rate_closest_to_one_over_curvature():
  # Plain SGD on an isotropic quadratic contracts by |1 - lr*h| per step: the best lr is the one nearest 1/h = 0.25
  # (with |1 - 0.3*4| = 0.2 the smallest factor in the grid; 1.0 and 3.0 diverge).
  task = _Quadratic([4.0, 4.0])
  spec = harness.OptimizerSpec('sgd', optax.sgd, GRID)
  result = harness.run_optimizer(task, spec, num_steps=20, seeds=2, eval_every=5, with_test=False)
  assert result.learning_rate == 0.3
  np.testing.assert_allclose(result.train_loss[0, :3], 4.0 * np.array([1.0, 0.04, 0.0016]), rtol=1e-5)


def _numpy_adam_final_losses(h, lr, steps, b1=0.9, b2=0.999, eps=1e-8):
  x, m, v, losses = np.ones_like(h), np.zeros_like(h), np.zeros_like(h), []
  for t in range(1, steps + 1):
    losses.append(0.5 * np.sum(h * x**2))
    g = h * x
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    x = x - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
  return harness.final_loss(np.asarray(losses)[None])


def test_adam_tuning_agrees_with_an_independent_numpy_sweep():
  h = np.array([1.0, 10.0, 100.0])
  steps = 100
  expected = GRID[int(np.argmin([_numpy_adam_final_losses(h, lr, steps) for lr in GRID]))]
  result = harness.run_optimizer(_Quadratic(h), harness.OptimizerSpec('adam', optax.adam, GRID), steps,
                                 seeds=1, eval_every=10, with_test=False)
  assert result.learning_rate == expected
  assert result.final_loss == pytest.approx(_numpy_adam_final_losses(h, expected, steps), rel=1e-3)


def test_final_loss_averages_the_last_five_percent_and_flags_divergence():
  curve = np.concatenate([np.full(95, 10.0), np.full(5, 2.0)])[None]
  assert harness.final_loss(curve) == 2.0
  assert harness.final_loss(np.array([[1.0, np.nan]])) == math.inf


def test_steps_to_reach_and_interquartile_mean():
  curve = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
  assert harness.steps_to_reach(curve, 3.0, smoothing=1) == 3
  assert harness.steps_to_reach(curve, 0.5, smoothing=1) is None
  assert harness.steps_to_reach(curve, 3.0, smoothing=2) == 4  # running mean (3+2)/2 first reaches <= 3 at step 4
  assert harness.interquartile_mean([1, 2, 3, 4, 100, -100, 2.5, 3.5]) == pytest.approx(np.mean([2, 2.5, 3, 3.5]))
  # A diverged task (+inf) is the worst value, not a missing one: it pushes the middle half up; NaN is left out.
  assert harness.interquartile_mean([1, 2, 3, 4, math.inf, -100, 2.5, 3.5]) == pytest.approx(np.mean([2, 2.5, 3, 3.5]))
  assert harness.interquartile_mean([1.0, 2.0, 3.0, math.inf]) == pytest.approx(2.5)
  assert harness.interquartile_mean([1.0, 2.0, 3.0, math.nan]) == pytest.approx(2.0)
  assert harness.interquartile_mean([1.0, math.inf, math.inf, math.inf]) == math.inf


def test_log10_ratio_counts_divergence_as_worst_and_leaves_undefined_ratios_out():
  assert harness.log10_ratio(1.0, 10.0) == pytest.approx(-1.0)
  assert harness.log10_ratio(math.nan, 1.0) == math.inf
  assert harness.log10_ratio(math.inf, 1.0) == math.inf
  assert harness.log10_ratio(0.0, 1.0) == -math.inf
  for loss, reference in [(1.0, 0.0), (1.0, math.inf), (-1.0, 1.0), (1.0, -1.0)]:
    assert math.isnan(harness.log10_ratio(loss, reference))


def test_evaluate_reports_wins_speedup_and_writes_plots(tmp_path):
  task = _Quadratic([1.0, 3.0])
  suite = [harness.SuiteEntry('quad', task, num_steps=40, has_test_split=False)]
  baselines = {'adam_tuned': harness.OptimizerSpec('adam_tuned', optax.adam, (0.01, 0.1)),
               'sgd_tiny': harness.OptimizerSpec('sgd_tiny', lambda: optax.sgd(1e-4))}
  fast_sgd = harness.OptimizerSpec('fast_sgd', lambda: optax.sgd(0.5))
  report = harness.evaluate({'fast_sgd': fast_sgd}, suite, baselines, seeds=1, speedup_horizon=2.0, progress=False)
  assert report.win_rate('fast_sgd', 'sgd_tiny') == 1.0
  speedup = report.tasks[0].speedup['fast_sgd']
  # SGD(0.5) on curvatures (1, 3) contracts by 0.5 per step: its final loss is far below anything tuned Adam reaches in 80 steps.
  assert speedup is None
  table = report.markdown()
  # Censored, reported as censored (issue 10 E): '>= 2' with its count, never a placeholder number.
  assert '| quad | 40 |' in table and '| fast_sgd | >= 2 | 1/1 |' in table
  assert report.median_speedup('fast_sgd') == (None, 1)
  # It reaches tuned Adam's final loss within the budget, in its measured step time.
  seconds = report.tasks[0].time_to_adam_loss
  assert seconds['fast_sgd'] is not None and seconds['fast_sgd'] > 0
  assert report.tasks[0].results['fast_sgd'].step_seconds > 0
  assert "Wall-clock seconds to reach tuned Adam's final loss" in table and 'over 1 seeds' in table
  paths = report.plot(str(tmp_path))
  assert len(paths) == 2 and (tmp_path / 'quad.png').stat().st_size > 1000  # the task's curves, then summary.png
  assert (tmp_path / 'summary.png').stat().st_size > 1000


def test_censored_median_has_known_answers():
  # Measured values sort below the censored ones (None = '>= limit').
  assert harness.censored_median([0.5, 1.0, None], limit=2.0) == (1.0, 1)
  assert harness.censored_median([0.5, None, 1.5, None], limit=2.0) == (None, 2)  # central pair hits a censored one
  assert harness.censored_median([0.5, 0.7, 1.5, None], limit=2.0) == (pytest.approx(1.1), 1)
  assert harness.censored_median([None, None, 0.3], limit=2.0) == (None, 2)
  assert harness.censored_median([0.2, 0.4], limit=2.0) == (pytest.approx(0.3), 0)
  value, censored = harness.censored_median([], limit=2.0)
  assert math.isnan(value) and censored == 0


def test_evaluate_requires_tuned_adam_reference():
  with pytest.raises(ValueError, match="must include 'adam_tuned'"):
    harness.evaluate({}, [], baselines={'sgd': harness.OptimizerSpec('sgd', lambda: optax.sgd(0.1))})


def test_default_baselines_run_on_a_quadratic():
  task = _Quadratic([1.0, 2.0])
  for name, spec in harness.default_baselines(lr_grid=(0.01, 0.1)).items():
    result = harness.run_optimizer(task, spec, num_steps=10, seeds=1, eval_every=5, with_test=False)
    assert result.finite, name
    assert result.train_loss.shape == (1, 10)


def test_baseline_cache_reuses_baselines_only_for_the_same_task(tmp_path):
  calls = {'adam': 0, 'candidate': 0}

  def adam(learning_rate):  # inject_hyperparams needs the keyword in the signature
    calls['adam'] += 1
    return optax.adam(learning_rate)

  def sgd():
    calls['candidate'] += 1
    return optax.sgd(0.1)

  baselines = {'adam_tuned': harness.OptimizerSpec('adam_tuned', adam, (0.01, 0.1))}
  candidate = {'sgd': harness.OptimizerSpec('sgd', sgd)}

  def run(curvatures):
    suite = [harness.SuiteEntry('quad', _Quadratic(curvatures), num_steps=40, has_test_split=False)]
    # measure_time=False: the step-time measurement builds each optimizer once more, which is not a training run.
    return harness.evaluate(candidate, suite, baselines, seeds=2, speedup_horizon=2.0, progress=False,
                            measure_time=False,
                            cache_dir=str(tmp_path / 'cache'))

  first = run([1.0, 3.0])
  after_first = dict(calls)
  second = run([1.0, 3.0])
  # The candidate ran again; tuned Adam (and its long reference run) came from the cache, with identical numbers.
  assert calls['candidate'] == 2 * after_first['candidate'] and calls['adam'] == after_first['adam']
  a, b = first.tasks[0], second.tasks[0]
  np.testing.assert_array_equal(a.results['adam_tuned'].train_loss, b.results['adam_tuned'].train_loss)
  assert a.results['adam_tuned'].learning_rate == b.results['adam_tuned'].learning_rate
  assert a.speedup == b.speedup
  # Another task under the same name has another fingerprint: it misses the cache.
  run([2.0, 5.0])
  assert calls['adam'] > after_first['adam']
