"""Wrappers: gradient noise and sparsity statistics, Rescale's optimum, LogObjective and Sum composition."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import quadratic
from tasks import test_functions
from tasks import wrappers

DIM = 100
NUM_KEYS = 200       # gradients drawn per statistical test
NUM_ELEMENTS = DIM * NUM_KEYS


def _quadratic(seed=0, dim=DIM):
  family = quadratic.QuadraticFamily(dim)
  return family.task(family.sample(jax.random.PRNGKey(seed)))


def _grads_over_keys(task, params):
  keys = jax.random.split(jax.random.PRNGKey(42), NUM_KEYS)
  return jax.jit(jax.vmap(jax.value_and_grad(task.loss), in_axes=(None, 0, None)))(params, keys, None)


def test_gradient_noise_std_matches_setting_and_value_is_clean():
  clean = _quadratic()
  params = clean.init(jax.random.PRNGKey(1))
  stdev = 0.5
  values, grads = _grads_over_keys(wrappers.GradientNoise(clean, stdev), params)
  np.testing.assert_allclose(values, clean.loss(params, None, None) * np.ones(NUM_KEYS), rtol=1e-6)
  noise = (np.asarray(grads) - np.asarray(jax.grad(clean.loss)(params, None, None))) / stdev
  # The standardised noise is N(0, 1) over M = 20000 elements: the sample std has standard error ≈ 1/√(2M)
  # = 0.005 and the mean 1/√M = 0.007; allow 5 standard errors each.
  assert abs(noise.std() - 1.0) < 5 / math.sqrt(2 * NUM_ELEMENTS)
  assert abs(noise.mean()) < 5 / math.sqrt(NUM_ELEMENTS)
  # Fresh noise per key, independent across keys: correlation of two keys' noise vectors ~ N(0, 1/DIM).
  assert abs(np.corrcoef(noise[0], noise[1])[0, 1]) < 5 / math.sqrt(DIM)


def test_sparse_gradient_zero_rate_matches_setting():
  clean = _quadratic()
  params = clean.init(jax.random.PRNGKey(1))
  zero_probability = 0.9
  _, grads = _grads_over_keys(wrappers.SparseGradients(clean, zero_probability), params)
  clean_grad = np.asarray(jax.grad(clean.loss)(params, None, None))
  assert np.all(clean_grad != 0)
  zeros = np.asarray(grads) == 0
  # Each element is zeroed independently: the zero count is Binomial(M, p), standard error √(p(1−p)/M) = 0.0021.
  assert abs(zeros.mean() - zero_probability) < 5 * math.sqrt(zero_probability * (1 - zero_probability) /
                                                              NUM_ELEMENTS)
  # The surviving elements are the clean gradient (up to float32 rounding of the vmapped matmul).
  np.testing.assert_allclose(np.asarray(grads)[~zeros], np.broadcast_to(clean_grad, zeros.shape)[~zeros], rtol=1e-5)


def test_sparse_of_noise_zeroes_the_noisy_gradient():
  clean = _quadratic(dim=20)
  params = clean.init(jax.random.PRNGKey(1))
  task = wrappers.SparseGradients(wrappers.GradientNoise(clean, 1.0), 0.5)
  key = jax.random.PRNGKey(3)
  grad = np.asarray(jax.grad(task.loss)(params, key, None))
  clean_grad = np.asarray(jax.grad(clean.loss)(params, None, None))
  kept = grad != 0
  assert 0 < kept.sum() < 20
  # Kept elements carry noise (they differ from the clean gradient); the value is still clean.
  assert np.all(grad[kept] != clean_grad[kept])
  assert task.loss(params, key, None) == clean.loss(params, None, None)


def test_rescale_moves_the_optimum_and_scales_init():
  clean = _quadratic(dim=10)
  optimum = jnp.linalg.solve(clean.w, clean.y)
  scale = 350.0
  task = wrappers.Rescale(clean, scale)
  np.testing.assert_allclose(task.loss(scale * optimum, None, None), 0.0, atol=1e-8)
  np.testing.assert_allclose(jax.grad(task.loss)(scale * optimum, None, None), 0.0, atol=1e-5)
  key = jax.random.PRNGKey(5)
  np.testing.assert_allclose(task.init(key), scale * clean.init(key), rtol=1e-6)
  # Same loss at corresponding points; gradients shrink by 1/scale.
  x = clean.init(key)
  np.testing.assert_allclose(task.loss(scale * x, None, None), clean.loss(x, None, None), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(task.loss)(scale * x, None, None), jax.grad(clean.loss)(x, None, None) / scale,
                             rtol=1e-4)


def test_log_objective_value_and_gradient():
  clean = test_functions.TestFunction('booth')
  task = wrappers.LogObjective(clean)
  x = jnp.array([2.0, -1.0])
  f = clean.loss(x, None, None)
  np.testing.assert_allclose(task.loss(x, None, None), math.log(float(f) + 1e-6) - math.log(1e-6), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(task.loss)(x, None, None), jax.grad(clean.loss)(x, None, None) / (f + 1e-6),
                             rtol=1e-5)
  np.testing.assert_allclose(task.loss(jnp.array([1.0, 3.0]), None, None), 0.0, atol=1e-4)  # f = 0 → 0


def test_sum_composes_wrapped_parts():
  parts = [wrappers.LogObjective(test_functions.TestFunction('rosenbrock')),
           wrappers.Rescale(_quadratic(dim=5), 10.0),
           wrappers.SparseGradients(wrappers.Rescale(_quadratic(seed=1, dim=4), 0.1), 0.5)]
  task = wrappers.Sum(parts)
  key = jax.random.PRNGKey(0)
  params = task.init(key)
  assert isinstance(params, tuple) and [p.shape for p in params] == [(2,), (5,), (4,)]
  loss_keys = jax.random.split(key, 3)
  expected = sum(t.loss(p, k, None) for t, p, k in zip(parts, params, loss_keys))
  np.testing.assert_allclose(task.loss(params, key, task.batch(key)), expected, rtol=1e-6)
  grads = jax.grad(task.loss)(params, key, task.batch(key))
  for part, p, k, g in zip(parts, params, loss_keys, grads):
    np.testing.assert_allclose(g, jax.grad(part.loss)(p, k, None), rtol=1e-5)


def test_family_wrappers_keep_hyperparameters_in_cfg_and_share_structure():
  fixed = wrappers.GradientNoiseFamily(quadratic.QuadraticFamily(5), 0.5)
  other = wrappers.GradientNoiseFamily(quadratic.QuadraticFamily(5), 2.0)
  assert fixed.structure_key == other.structure_key
  assert fixed.structure_key != wrappers.GradientNoiseFamily(quadratic.QuadraticFamily(6), 0.5).structure_key
  cfg = fixed.sample(jax.random.PRNGKey(0))
  assert float(cfg['stdev']) == 0.5
  assert jax.tree.structure(cfg) == jax.tree.structure(other.sample(jax.random.PRNGKey(1)))


def test_bad_wrapper_settings_are_rejected():
  family = quadratic.QuadraticFamily(3)
  with pytest.raises(ValueError, match='stdev must be >= 0'):
    wrappers.GradientNoiseFamily(family, -1.0)
  with pytest.raises(ValueError, match=r'zero_probability must be in \[0, 1\]'):
    wrappers.SparseGradientsFamily(family, 1.5)
  with pytest.raises(ValueError, match='scale > 0'):
    wrappers.RescaleFamily(family, 0.0)
  with pytest.raises(ValueError, match='at least one'):
    wrappers.Sum([])
