"""CoordinatewiseLSTM (Andrychowicz et al. 2016): preprocessing, LSTM cell, update, coordinatewise sharing."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import features
from lopt.architectures.coordinatewise_lstm import CoordinatewiseLSTM

PARAMS = {'w': jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4), 's': jnp.asarray(0.75, jnp.float32)}


def test_log_and_sign_matches_the_papers_piecewise_definition():
  k = 5.0
  g = np.array([0.0, 1e-9, -1e-4, 3e-3, -6.7e-3, 6.8e-3, 0.1, -1.0, 7.0, -250.0], np.float32)
  magnitude, sign = np.asarray(features.log_and_sign(jnp.asarray(g), k))
  for x, got_mag, got_sign in zip(g.astype(np.float64), magnitude, sign):
    # Paper (Appendix A): (log|x| / k, sign x) if |x| >= e^-k, else (-1, e^k x).
    want = (math.log(abs(x)) / k, math.copysign(1.0, x)) if abs(x) >= math.exp(-k) else (-1.0, math.exp(k) * x)
    np.testing.assert_allclose([got_mag, got_sign], want, rtol=1e-6, atol=1e-7, err_msg=f'g={x}')


def test_lstm_cell_equals_flax_linen_lstm_cell_in_both_layouts():
  params = features.lstm_init(jax.random.key(0), 3, 5)
  x = jax.random.normal(jax.random.key(1), (7, 3))
  c = jax.random.normal(jax.random.key(2), (7, 5))
  h = jax.random.normal(jax.random.key(3), (7, 5))
  (want_c, want_h), _ = nn.LSTMCell(5).apply({'params': params}, (c, h), x)
  got_c, got_h = features.lstm_apply(params, c, h, x)
  np.testing.assert_allclose(got_c, want_c, rtol=1e-5, atol=1e-6)  # same math, differently grouped matmuls
  np.testing.assert_allclose(got_h, want_h, rtol=1e-5, atol=1e-6)
  fm_c, fm_h = features.lstm_apply(params, c.T, h.T, x.T, feature_major=True)
  np.testing.assert_allclose(fm_c.T, want_c, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fm_h.T, want_h, rtol=1e-5, atol=1e-6)


def numpy_reference(meta_params, grads_seq):
  """Two stacked LSTMs per coordinate, float64, written from the equations (not from lopt.features)."""
  meta = jax.tree.map(lambda x: np.asarray(x, np.float64), meta_params)
  sigmoid = lambda z: 1 / (1 + np.exp(-z))

  def cell(p, c, h, x):
    pre = {gate: x @ p['i' + gate]['kernel'] + h @ p['h' + gate]['kernel'] + p['h' + gate]['bias'] for gate in 'ifgo'}
    c = sigmoid(pre['f']) * c + sigmoid(pre['i']) * np.tanh(pre['g'])
    return c, sigmoid(pre['o']) * np.tanh(c)

  n = 13
  state = [(np.zeros((n, 20)), np.zeros((n, 20))) for _ in range(2)]
  out = []
  for grads in grads_seq:
    g = np.concatenate([np.ravel(grads['s']), np.ravel(grads['w'])]).astype(np.float64)  # jax's key order
    big = np.abs(g) >= math.exp(-5)
    x = np.stack([np.where(big, np.log(np.abs(g) + 1e-30) / 5, -1.0),
                  np.where(big, np.sign(g), math.exp(5) * g)], axis=1)
    for layer in range(2):
      state[layer] = cell(meta[f'lstm_{layer}'], *state[layer], x)
      x = state[layer][1]
    update = 0.01 * (x @ meta['output']['kernel'][:, 0] + meta['output']['bias'][0])
    out.append({'s': update[0], 'w': update[1:].reshape(3, 4)})
  return out


def test_updates_match_numpy_reference_over_three_steps():
  optimizer = CoordinatewiseLSTM()
  meta_params = optimizer.init(jax.random.key(5))
  tx = optimizer.transform(meta_params)
  keys = jax.random.split(jax.random.key(6), 3)
  grads_seq = [jax.tree.map(lambda x, s=s: s * jax.random.normal(k, jnp.shape(x)), PARAMS)
               for k, s in zip(keys, [1.0, 1e-4, 10.0])]
  state = tx.init(PARAMS)
  step = jax.jit(tx.update)
  for grads, want in zip(grads_seq, numpy_reference(meta_params, grads_seq)):
    updates, state = step(grads, state, PARAMS)
    # float32 vs float64 through two 20-wide LSTM layers (bounded activations, O(1) pre-activations) and a 20-term
    # readout: ~1e-6 absolute on the readout, i.e. ~1e-8 on the update (x 0.01). atol 1e-7 keeps a 10x margin.
    for k in PARAMS:
      np.testing.assert_allclose(np.asarray(updates[k]), want[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_one_network_shared_over_coordinates_whatever_the_tree():
  # Coordinatewise: a coordinate's update depends only on its own gradient history, so splitting one tensor into two
  # leaves, or reordering coordinates, gives the same per-coordinate updates.
  optimizer = CoordinatewiseLSTM()
  tx = optimizer.transform(optimizer.init(jax.random.key(0)))
  g = jax.random.normal(jax.random.key(1), (10,))
  whole = {'x': jnp.zeros(10)}
  split = {'a': jnp.zeros(4), 'b': jnp.zeros(6)}
  u_whole, s_whole = tx.update({'x': g}, tx.init(whole), whole)
  u_split, s_split = tx.update({'a': g[:4], 'b': g[4:]}, tx.init(split), split)
  u_whole, _ = tx.update({'x': -g}, s_whole, whole)
  u_split, _ = tx.update({'a': -g[:4], 'b': -g[4:]}, s_split, split)
  np.testing.assert_allclose(np.concatenate([u_split['a'], u_split['b']]), u_whole['x'], rtol=1e-6, atol=1e-9)
  u_reversed, _ = tx.update({'x': g[::-1]}, tx.init(whole), whole)
  u_forward, _ = tx.update({'x': g}, tx.init(whole), whole)
  np.testing.assert_allclose(u_reversed['x'][::-1], u_forward['x'], rtol=1e-6, atol=1e-9)


def test_non_finite_gradient_gives_nan_update_only_at_that_coordinate():
  optimizer = CoordinatewiseLSTM()
  tx = optimizer.transform(optimizer.init(jax.random.key(0)))
  grads = {'w': PARAMS['w'].at[1, 2].set(jnp.inf), 's': jnp.asarray(0.1)}
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  assert bool(jnp.isnan(updates['w'][1, 2]))
  assert int(jnp.sum(~jnp.isfinite(updates['w']))) == 1 and bool(jnp.isfinite(updates['s']))


def test_meta_parameter_count():
  # LSTM(2 -> 20): 4 gates * (2*20 + 20*20 + 20) = 1840; LSTM(20 -> 20): 4 * (20*20 + 20*20 + 20) = 3280; readout
  # 20 + 1. Total 5141.
  meta_params = CoordinatewiseLSTM().init(jax.random.key(0))
  assert sum(x.size for x in jax.tree.leaves(meta_params)) == 1840 + 3280 + 21
  state = CoordinatewiseLSTM().transform(meta_params).init(PARAMS)
  shapes = [x.shape for x in state.cells + state.hiddens]
  assert shapes == [(20, 13)] * 4  # 80 floats per parameter


@pytest.mark.parametrize('field, value', [('hidden_sizes', ()), ('hidden_sizes', (20, 0)), ('preprocess_k', 0.0),
                                          ('output_scale', float('inf'))])
def test_invalid_hyperparameter_raises_naming_it(field, value):
  with pytest.raises(ValueError, match=field):
    CoordinatewiseLSTM(**{field: value})
