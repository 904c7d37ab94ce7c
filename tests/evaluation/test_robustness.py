"""Robustness checks: known answers on hand-made curves, and a real run."""

import math

import numpy as np
import optax
import pytest

from evaluation import harness, robustness, validation


def test_checks_have_known_answers_on_made_up_curves():
  falling = np.linspace(2.0, 0.5, 300)
  assert robustness.check_curve(falling).passed
  spike = falling.copy()
  spike[50] = 4.1  # 2.05 x the initial 2.0
  check = robustness.check_curve(spike)
  assert not check.passed and check.never_above_twice_initial is False and check.max_ratio == pytest.approx(2.05)
  flat_then_fall = np.concatenate([np.full(150, 2.0), np.linspace(2.0, 0.1, 150)])
  check = robustness.check_curve(flat_then_fall)
  assert not check.passed and check.descends_early is False  # not below f_0 by step 100, whatever comes later
  broken = falling.copy()
  broken[-1] = np.nan
  check = robustness.check_curve(broken)
  assert not check.passed and not check.finite and math.isinf(check.max_ratio)
  negative = falling - 5.0  # initial loss <= 0: the ratio checks do not apply, and say so
  check = robustness.check_curve(negative)
  assert check.descends_early is None and check.passed
  with pytest.raises(ValueError, match='more than 100 steps'):
    robustness.check_curve(falling[:100])


def test_climb_compares_the_last_tenth_with_the_best_tenth():
  # A loss that ends at its best climbs 1x; one that falls to 1 and climbs back to 10 (the quadratic_1024 pattern,
  # far below twice its initial 1000) passes the checks and reports its climb.
  assert robustness.climb(np.linspace(2.0, 0.5, 300)) == pytest.approx(1.0)
  fall_then_climb = np.concatenate([np.full(100, 1000.0), np.full(100, 1.0), np.full(100, 10.0)])
  # 10 blocks of 30 steps: the lowest block means are 1 (blocks wholly in the middle third), the last 10.
  check = robustness.check_curve(fall_then_climb)
  assert check.passed and check.climb == pytest.approx(10.0)
  # Noise within a block is averaged away: an alternating 0.5 / 1.5 loss has block means of 1 everywhere.
  assert robustness.climb(np.tile([0.5, 1.5], 150)) == pytest.approx(1.0)
  # The steps that do not fill a block are dropped from the front (here the first: a 1e6 start changes nothing).
  assert robustness.climb(np.concatenate([[1e6], np.full(300, 2.0)])) == pytest.approx(1.0)
  assert math.isinf(robustness.climb(np.concatenate([np.ones(299), [np.inf]])))
  assert math.isnan(robustness.climb(np.zeros(300)))  # the best tenth is 0: no ratio
  assert math.isnan(robustness.climb(np.ones(9)))  # fewer steps than blocks
  checks = [robustness.TaskCheck('a', 300, (check,)), robustness.TaskCheck('b', 300, (robustness.check_curve(
      np.linspace(2.0, 0.5, 300)),))]
  assert robustness.worst_seed(checks, 'climb') == (pytest.approx(10.0), 'a')
  assert '| a | 300 | yes | 1/1 | 1/1 | 1 | 10 |' in robustness.markdown(checks)
  # A seed whose ratios do not apply (initial loss <= 0, NaN) never hides another seed's peak, wherever it sits.
  not_applicable = robustness.check_curve(np.linspace(2.0, 0.5, 300) - 5.0)
  for order in ((not_applicable, check), (check, not_applicable)):
    table = robustness.markdown([robustness.TaskCheck('c', 300, order)])
    assert '| c | 300 | yes | 2/2 | n/a | 1 | 10 |' in table


def test_adam_passes_and_a_huge_learning_rate_fails_on_a_wide_relu_net():
  suite = validation.validation_suite(['patches8_mlp_512x512'], num_steps=15)  # x10 = 150 steps
  good = robustness.check_robustness(harness.OptimizerSpec('adam', lambda: optax.adam(1e-3)), suite, seeds=2,
                                     progress=False)
  assert good[0].passed and good[0].num_steps == 150
  bad = robustness.check_robustness(harness.OptimizerSpec('sgd_huge', lambda: optax.sgd(50.0)), suite, seeds=2,
                                    progress=False)
  assert not bad[0].passed
  table = robustness.markdown(good + bad)
  assert '| patches8_mlp_512x512 | 150 | yes |' in table and '| **no** |' in table
