"""lopt.gru: the cell equals flax.linen.GRUCell, in both layouts, and the injected bias and init are as documented."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import gru

# Same equations, same float32 inputs; the only difference is the summation order inside the matmuls (one fused
# [I, 3H] kernel here versus one [I, H] kernel per gate in flax), so agreement is to a few float32 ulps of O(1) values.
TOL = dict(rtol=1e-6, atol=1e-6)
IN, HID, BATCH = 7, 5, 9


@pytest.fixture(scope='module')
def setup():
  params = gru.gru_init(jax.random.PRNGKey(0), IN, HID)
  x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, IN))
  h = jax.random.uniform(jax.random.PRNGKey(2), (BATCH, HID), minval=-1, maxval=1)
  return params, x, h


def test_param_layout_matches_flax_linen():
  flax_params = nn.GRUCell(features=HID).init(jax.random.PRNGKey(0), jnp.zeros((1, HID)), jnp.zeros((1, IN)))
  ours = gru.gru_init(jax.random.PRNGKey(0), IN, HID)
  assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, flax_params['params'])


def test_equals_flax_grucell_batch_major(setup):
  params, x, h = setup
  expected, _ = nn.GRUCell(features=HID).apply({'params': params}, h, x)
  np.testing.assert_allclose(gru.gru_apply(params, h, x), expected, **TOL)


def test_equals_flax_grucell_feature_major(setup):
  params, x, h = setup
  expected, _ = nn.GRUCell(features=HID).apply({'params': params}, h, x)
  got = gru.gru_apply(params, h.T, x.T, feature_major=True)
  np.testing.assert_allclose(got.T, expected, **TOL)


def _manual_cell(params, x, h, beta):
  """The documented equations in float64 numpy, bias injected into r, z and (outside the r product) n."""
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
  sig = lambda v: 1 / (1 + np.exp(-v))
  br, bz, bn = np.split(np.asarray(beta, np.float64), 3, axis=-1)
  r = sig(x @ p['ir']['kernel'] + p['ir']['bias'] + h @ p['hr']['kernel'] + br)
  z = sig(x @ p['iz']['kernel'] + p['iz']['bias'] + h @ p['hz']['kernel'] + bz)
  n = np.tanh(x @ p['in']['kernel'] + p['in']['bias'] + r * (h @ p['hn']['kernel'] + p['hn']['bias']) + bn)
  return (1 - z) * n + z * h


def test_injected_bias_enters_r_z_and_n(setup):
  params, x, h = setup
  beta = jax.random.normal(jax.random.PRNGKey(3), (BATCH, 3 * HID))
  expected = _manual_cell(params, np.asarray(x, np.float64), np.asarray(h, np.float64), beta)
  np.testing.assert_allclose(gru.gru_apply(params, h, x, beta), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gru.gru_apply(params, h.T, x.T, beta.T, feature_major=True).T, expected,
                             rtol=1e-5, atol=1e-6)
  # Each third of the bias matters (a bias added in the wrong place would leave some third without effect).
  for third in range(3):
    only = jnp.zeros_like(beta).at[:, third * HID:(third + 1) * HID].set(1.0)
    assert not np.allclose(gru.gru_apply(params, h, x, only), gru.gru_apply(params, h, x))


def test_init_follows_spec_constants():
  params = gru.gru_init(jax.random.PRNGKey(7), 40, 60)
  np.testing.assert_array_equal(params['ir']['bias'], np.float32(2.2))
  np.testing.assert_array_equal(params['iz']['bias'], np.float32(2.2))
  np.testing.assert_array_equal(params['in']['bias'], 0.0)
  np.testing.assert_array_equal(params['hn']['bias'], 0.0)
  # std 0.5 / sqrt(40 + 60) = 0.05; with 3 * 40 * 60 + 3 * 60 * 60 = 18,000 draws the sample std has relative
  # standard error 1 / sqrt(2 * 18000) ~ 0.5%, so 3% is > 5 standard errors.
  kernels = np.concatenate([np.ravel(params[g]['kernel']) for g in ('ir', 'iz', 'in', 'hr', 'hz', 'hn')])
  assert abs(kernels.std() / 0.05 - 1) < 0.03
  assert abs(kernels.mean()) < 5 * 0.05 / np.sqrt(kernels.size)


def test_init_rejects_bad_sizes():
  with pytest.raises(ValueError, match='hidden_size > 0'):
    gru.gru_init(jax.random.PRNGKey(0), 3, 0)
