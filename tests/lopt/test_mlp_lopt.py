"""MLPLOpt (Metz et al. 2019, docs/algorithms.md §3): features, MLP and output formula against an independent numpy
reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.architectures.mlp_lopt import MLPLOpt

DECAYS = np.array([0.5, 0.9, 0.99, 0.999, 0.9999])
TIMESCALES = np.array([3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e5])
PARAMS = {'w': jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4),
          'b': jnp.linspace(0.5, -0.25, 4, dtype=jnp.float32), 's': jnp.asarray(0.75, jnp.float32)}


def numpy_reference(meta_params, grads_seq, params, include_rms):
  """docs/algorithms.md §3.1-§3.2 written out per tensor in float64: the updates of each step (params held fixed)."""
  meta = jax.tree.map(lambda x: np.asarray(x, np.float64), meta_params)
  names = sorted(params)  # jax's dict order
  m = {k: np.zeros((5,) + np.shape(params[k])) for k in names}
  v = {k: np.zeros((5,) + np.shape(params[k])) for k in names}
  expand = lambda d, x: d.reshape((5,) + (1,) * np.ndim(x))
  all_updates = []
  for t, grads in enumerate(grads_seq):
    updates = {}
    for k in names:
      g, w = np.asarray(grads[k], np.float64), np.asarray(params[k], np.float64)
      m[k] = expand(DECAYS, g) * m[k] + (1 - expand(DECAYS, g)) * g
      if include_rms:
        v[k] = expand(DECAYS, g) * v[k] + (1 - expand(DECAYS, g)) * g * g
      rsqrt = 1 / np.sqrt(v[k] + 1e-6)
      rows = [g[None], m[k] * rsqrt, w[None], m[k], v[k], rsqrt]
      x = np.concatenate([r.reshape(r.shape[0], -1) for r in rows])  # [22, n]
      x = x / np.sqrt(1e-5 + np.mean(x * x, axis=1, keepdims=True))
      time = np.tanh(t / TIMESCALES - 1)
      inputs = np.concatenate([x, np.repeat(time[:, None], x.shape[1], axis=1)])  # [31, n]
      hidden = np.maximum(inputs.T @ meta['dense_0']['kernel'] + meta['dense_0']['bias'], 0)
      out = hidden @ meta['dense_1']['kernel'] + meta['dense_1']['bias']
      updates[k] = (-out[:, 0] * np.exp(0.001 * out[:, 1]) * 0.001).reshape(np.shape(w))
    all_updates.append(updates)
  return all_updates


@pytest.mark.parametrize('include_rms', [True, False])
def test_updates_match_numpy_reference_of_spec(include_rms):
  optimizer = MLPLOpt(include_rms=include_rms)
  meta_params = optimizer.init(jax.random.key(1))
  tx = optimizer.transform(meta_params)
  keys = jax.random.split(jax.random.key(2), 3)
  # Different scales per tensor and step: the per-tensor normalisation must remove them.
  grads_seq = [jax.tree.map(lambda x, s=s: s * jax.random.normal(k, jnp.shape(x)), PARAMS)
               for k, s in zip(keys, [1.0, 1e-3, 30.0])]
  expected = numpy_reference(meta_params, grads_seq, PARAMS, include_rms)
  state = tx.init(PARAMS)
  step = jax.jit(tx.update)
  for grads, want in zip(grads_seq, expected):
    updates, state = step(grads, state, PARAMS)
    # float32 against float64: the normalised features carry ~1e-7 relative error, and the MLP's two ~32-term dot
    # products of O(1)-O(10) terms add ~1e-5 absolute error to the output d (fp32 eps 6e-8 * 32 terms * O(10)), i.e.
    # 1e-8 on the update d * 1e-3 where d cancels to ~0. Hence rtol 1e-5 plus atol 3e-8 (updates are ~1e-4); a wrong
    # feature, decay or constant changes updates by >1e-2 relative.
    for k in PARAMS:
      np.testing.assert_allclose(np.asarray(updates[k]), want[k], rtol=1e-5, atol=3e-8, err_msg=k)


def test_meta_parameter_count_and_layout():
  # 31 inputs (22 features + 9 time) -> 32 -> 2: 31*32 + 32 + 32*2 + 2 = 1090, with or without the rms features.
  for include_rms in (True, False):
    meta_params = MLPLOpt(include_rms=include_rms).init(jax.random.key(0))
    assert jax.tree.map(jnp.shape, meta_params) == {'dense_0': {'kernel': (31, 32), 'bias': (32,)},
                                                    'dense_1': {'kernel': (32, 2), 'bias': (2,)}}
    assert sum(x.size for x in jax.tree.leaves(meta_params)) == 1090


def test_state_holds_second_moment_only_with_include_rms():
  n = 12 + 4 + 1
  for include_rms, rows in ((True, 5), (False, 0)):
    optimizer = MLPLOpt(include_rms=include_rms)
    state = optimizer.transform(optimizer.init(jax.random.key(0))).init(PARAMS)
    assert state.momentum.shape == (5, n) and state.second_moment.shape == (rows, n)


def test_update_step_size_is_one_thousandth_of_direction():
  # With zero output weights and output bias (d, mu) = (2, 0) the MLP's output is constant: update = -2 * 1e-3.
  optimizer = MLPLOpt()
  meta_params = optimizer.init(jax.random.key(0))
  meta_params['dense_1'] = {'kernel': jnp.zeros((32, 2)), 'bias': jnp.asarray([2.0, 0.0])}
  tx = optimizer.transform(meta_params)
  updates, _ = tx.update(PARAMS, tx.init(PARAMS), PARAMS)
  for u in jax.tree.leaves(updates):
    np.testing.assert_allclose(np.asarray(u), -2e-3, rtol=1e-6)
  meta_params['dense_1'] = {'kernel': jnp.zeros((32, 2)), 'bias': jnp.asarray([2.0, 1000.0])}  # exp(0.001 * 1000)
  tx = optimizer.transform(meta_params)
  updates, _ = tx.update(PARAMS, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(np.asarray(updates['w']), -2e-3 * np.e, rtol=1e-6)


@pytest.mark.parametrize('field, value', [('hidden_sizes', (0,)), ('decays', (0.9, 1.0)), ('time_scales', (-1.0,)),
                                          ('step_multiplier', float('nan'))])
def test_invalid_hyperparameter_raises_naming_it(field, value):
  with pytest.raises(ValueError, match=field):
    MLPLOpt(**{field: value})


def test_relative_steps_scale_with_each_tensors_parameter_rms():
  """step_scale='relative' multiplies each tensor's step by max(rms(w), floor); the meta-parameters are shared."""
  absolute = MLPLOpt()
  relative = MLPLOpt(step_scale='relative')
  meta = absolute.init(jax.random.PRNGKey(0))
  params = {'w': jnp.array([[1.0, -2.0], [0.5, 3.0]]), 'b': jnp.zeros(2)}
  grads = {'w': jnp.array([[0.3, -1.0], [2.0, 0.5]]), 'b': jnp.array([0.1, -0.2])}

  def first_update(arch):
    tx = arch.transform(meta)
    return tx.update(grads, tx.init(params), params)[0]

  base_update, got = first_update(absolute), first_update(relative)
  rms_w = float(jnp.sqrt(jnp.mean(params['w'] ** 2)))
  np.testing.assert_allclose(got['w'], rms_w * base_update['w'], rtol=1e-5)
  np.testing.assert_allclose(got['b'], relative.relative_step_floor * base_update['b'], rtol=1e-5)
  with pytest.raises(ValueError, match="step_scale must be 'absolute'"):
    MLPLOpt(step_scale='adaptive')
  with pytest.raises(ValueError, match='relative_step_floor must be a finite number > 0'):
    MLPLOpt(relative_step_floor=-1.0)


def test_max_scale_growth_bounds_the_geometric_growth_of_coherent_relative_steps():
  """Steps of a fixed sign proportional to the weights grow them geometrically; capped, at most linearly. The MLP's
  output is made constant ((d, mu) = (-20, 0): every step is +2% of the tensor's scale, for 300 steps)."""
  def final_rms(arch):
    meta = arch.init(jax.random.PRNGKey(0))
    meta['dense_1'] = {'kernel': jnp.zeros((32, 2)), 'bias': jnp.asarray([-20.0, 0.0])}
    tx = arch.transform(meta)
    theta = jnp.full((16,), 0.1)
    state = tx.init(theta)
    for _ in range(300):
      updates, state = tx.update(jnp.ones_like(theta), state, theta)
      theta = theta + updates
    return float(jnp.sqrt(jnp.mean(theta ** 2)))

  uncapped = final_rms(MLPLOpt(step_scale='relative'))
  capped = final_rms(MLPLOpt(step_scale='relative', max_scale_growth=2.0))
  # Uncapped: 0.1 x 1.02^300 ~ 38. Capped: steps at most 2% of 2 x 0.1, so at most 0.1 + 300 x 0.004 = 1.3.
  np.testing.assert_allclose(uncapped, 0.1 * 1.02 ** 300, rtol=1e-3)
  np.testing.assert_allclose(capped, 0.2 + (300 - 35) * 0.004, rtol=0.05)
  assert capped <= 0.1 + 300 * 0.004


def test_max_relative_step_caps_each_tensor_step_rms_at_a_fraction_of_its_scale():
  """A constant MLP output d = -200 asks for steps of 200 x step_multiplier = 0.2 of each tensor's scale; capped at
  c = 0.05 every tensor's step has RMS exactly c x scale, and a cap above 0.2 changes nothing (bitwise)."""
  params = {'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), 'b': jnp.full((4,), 0.5)}
  grads = jax.tree.map(jnp.ones_like, params)

  def update(**kw):
    arch = MLPLOpt(step_scale='relative', **kw)
    meta = arch.init(jax.random.PRNGKey(0))
    meta['dense_1'] = {'kernel': jnp.zeros((32, 2)), 'bias': jnp.asarray([-200.0, 0.0])}
    tx = arch.transform(meta)
    return tx.update(grads, tx.init(params), params)[0]

  uncapped, capped, loose = update(), update(max_relative_step=0.05), update(max_relative_step=0.5)
  for name, value in params.items():
    scale = max(float(jnp.sqrt(jnp.mean(value ** 2))), 1e-2)
    rms = lambda x: float(jnp.sqrt(jnp.mean(x ** 2)))
    # Tolerance: float32 rounding of two RMS reductions and a division (rtol 1e-5).
    np.testing.assert_allclose(rms(uncapped[name]), 0.2 * scale, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(rms(capped[name]), 0.05 * scale, rtol=1e-5, err_msg=name)
    np.testing.assert_array_equal(np.asarray(loose[name]), np.asarray(uncapped[name]), err_msg=name)


def test_max_relative_step_is_checked():
  with pytest.raises(ValueError, match="needs step_scale='relative'"):
    MLPLOpt(max_relative_step=0.1)
  for bad in (0.0, -1.0, float('nan'), float('inf')):
    with pytest.raises(ValueError, match='max_relative_step must be None or a finite number > 0'):
      MLPLOpt(step_scale='relative', max_relative_step=bad)
