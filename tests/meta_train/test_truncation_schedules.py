"""Truncation schedules: distributions against their definitions (moments within stated tolerances), ranges,
dependence on the meta-step, and argument checks."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from meta_train.truncation_schedules import (ConstantTruncation, LinearIncreasingTruncation, LogUniformTruncation,
                                             WichrowskaTruncation)

N = 20_000


def draw(schedule, meta_step=0, n=N, seed=0):
  keys = jax.random.split(jax.random.key(seed), n)
  lengths = jax.jit(jax.vmap(schedule.sample, in_axes=(0, None)))(keys, meta_step)
  assert lengths.dtype == np.int32
  return np.asarray(lengths)


def test_constant():
  np.testing.assert_array_equal(draw(ConstantTruncation(37), n=5), 37)


def test_log_uniform_has_uniform_log_lengths_in_range():
  lengths = draw(LogUniformTruncation(10, 1000))
  assert lengths.min() >= 10 and lengths.max() <= 1000
  # log(length) ~ U(log 10, log 1000) up to rounding: mean log 10^2, sd (log 100)/√3; 5 standard errors.
  logs = np.log(lengths)
  assert abs(logs.mean() - np.log(100)) < 5 * (np.log(100) / np.sqrt(3)) / np.sqrt(N)
  # Each decade holds about half of the draws (binomial sd √(N/4)).
  assert abs(np.mean(lengths < 100) - 0.5) < 5 * 0.5 / np.sqrt(N)


def test_wichrowska_lengths_are_a_random_number_of_heavy_tailed_unrolls():
  schedule = WichrowskaTruncation()
  lengths = draw(schedule)
  # Mean: E[U]·(200 + 50) with E[U] = E[round(Exp(40))] + 1 ≈ 41 (rounding an exponential changes its mean by
  # < 0.01). Tolerance: 5 standard errors of the sample mean.
  expected_mean = 41.0 * 250.0
  assert abs(lengths.mean() - expected_mean) < 5 * lengths.std() / np.sqrt(N)
  assert lengths.min() >= 50
  # Heavy tail: the exponential number of unrolls gives a coefficient of variation near 1.
  assert 0.8 < lengths.std() / lengths.mean() < 1.2
  # One unroll (no extra ones): round(Exp(200)) + 50, mean 250, minimum 50.
  single = draw(WichrowskaTruncation(mean_extra_unrolls=0.0))
  assert single.min() == 50 or single.min() > 50 and np.mean(single < 52) < 0.02
  assert abs(single.mean() - 250.0) < 5 * single.std() / np.sqrt(N)


def test_linear_increasing_grows_with_the_meta_step_within_the_jitter():
  schedule = LinearIncreasingTruncation(min_length=10, max_length=1000, num_meta_steps=100, jitter=0.2)
  for step, base in ((0, 10.0), (50, 505.0), (100, 1000.0), (10_000, 1000.0)):
    lengths = draw(schedule, meta_step=step, n=4000)
    assert lengths.min() >= np.floor(0.8 * base) and lengths.max() <= min(np.ceil(1.2 * base), 1000)
    if step == 50:  # uniform jitter: mean base, sd 0.4·base/√12; 5 standard errors
      assert abs(lengths.mean() - base) < 5 * (0.4 * base / np.sqrt(12)) / np.sqrt(4000) + 0.5
  no_jitter = LinearIncreasingTruncation(min_length=10, max_length=1000, num_meta_steps=100, jitter=0.0)
  np.testing.assert_array_equal(draw(no_jitter, meta_step=25, n=3), round(10 + 990 * 0.25))


@pytest.mark.parametrize('make, message', [
    (lambda: ConstantTruncation(0), 'length'),
    (lambda: ConstantTruncation(2.5), 'length'),
    (lambda: LogUniformTruncation(100, 10), 'max_length'),
    (lambda: WichrowskaTruncation(unroll_scale=-1.0), 'unroll_scale'),
    (lambda: WichrowskaTruncation(mean_extra_unrolls=-1.0), 'mean_extra_unrolls'),
    (lambda: LinearIncreasingTruncation(jitter=1.5), 'jitter'),
    (lambda: LinearIncreasingTruncation(min_length=50, max_length=10), 'max_length'),
    (lambda: LinearIncreasingTruncation(num_meta_steps=0), 'num_meta_steps'),
])
def test_bad_arguments_name_the_problem(make, message):
  with pytest.raises(ValueError, match=message):
    make()
