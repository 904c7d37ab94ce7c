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
