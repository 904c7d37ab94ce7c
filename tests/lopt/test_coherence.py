"""``coherence_decay`` of the HRNN (docs/algorithms.md §2.11): each tensor's step is multiplied by
``sqrt(min(1, mean_T(m_hat^2) / v_hat))``, with ``m`` a per-element and ``v`` a per-tensor bias-corrected EMA of ``g``
and ``mean_T(g^2)``: 1 for a gradient that keeps its direction, ~``sqrt((1 - b) / (1 + b))`` for noise."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import HierarchicalRNN, base

import vanishing_gradient_meta_grads  # tests/lopt is on sys.path (pytest's rootdir-relative import of test modules)

DECAY = 0.9


def _make(**kw):
  return HierarchicalRNN(lr_init_range=(1e-3, 1e-2), min_log_lr=-8.0, max_log_lr=0.0, step_scale='relative', **kw)


def _meta(opt):
  # Perturbed meta-parameters, so that zero-initialised readouts and every path of the network matter.
  meta = opt.init(jax.random.PRNGKey(0))
  leaves, treedef = jax.tree.flatten(meta)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  return jax.tree.unflatten(treedef, [v + 0.1 * jax.random.normal(k, jnp.shape(v)) for k, v in zip(keys, leaves)])


def _updates_with_and_without(gradient_history, **kw):
  """The plain and the coherence-scaled optimizer side by side on the same gradients; the scaled one is given the plain
  one's state (with its own coherence averages) at every step, so the two updates differ only by the factor."""
  plain, scaled = _make(), _make(coherence_decay=DECAY, **kw)
  meta = _meta(plain)
  plain_tx, scaled_tx = plain.transform(meta), scaled.transform(meta)
  plain_update, scaled_update = jax.jit(plain_tx.update), jax.jit(scaled_tx.update)
  params = {'b': jnp.linspace(-0.5, 0.5, 5), 'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)}
  plain_state, scaled_state = plain_tx.init(params), scaled_tx.init(params)
  out = []
  for grads in gradient_history:
    plain_updates, plain_state_next = plain_update(grads, plain_state, params)
    scaled_updates, scaled_state = scaled_update(grads, plain_state._replace(
        coherence_momentum=scaled_state.coherence_momentum,
        coherence_mean_square=scaled_state.coherence_mean_square), params)
    out.append((plain_updates, scaled_updates))
    plain_state = plain_state_next
    params = optax.apply_updates(params, plain_updates)
  return out


def _reference_factors(gradient_history):
  """numpy, float64: the bias-corrected EMAs and the factor of each tensor after the whole history."""
  factors = {}
  for name in ('b', 'w'):
    m, v = 0.0, 0.0
    for count, grads in enumerate(gradient_history, start=1):
      g = np.asarray(grads[name], np.float64)
      m = DECAY * m + (1 - DECAY) * g
      v = DECAY * v + (1 - DECAY) * np.mean(g ** 2)
    correction = 1 - DECAY ** count
    factors[name] = np.sqrt(min(1.0, np.mean((m / correction) ** 2) / (v / correction)))
  return factors


def _noise(step, scale=1.0):
  keys = jax.random.split(jax.random.PRNGKey(100 + step), 2)
  return {'b': 1e-3 * scale * jax.random.normal(keys[0], (5,)), 'w': scale * jax.random.normal(keys[1], (3, 4))}


def test_off_by_default_with_no_state():
  opt = HierarchicalRNN()
  assert opt.coherence_decay is None
  params = {'w': jnp.ones((3, 4)), 'b': jnp.ones(2)}
  state = opt.transform(opt.init(jax.random.PRNGKey(0))).init(params)
  assert state.coherence_momentum.shape == (0,) and state.coherence_mean_square.shape == (0,)
  on = HierarchicalRNN(coherence_decay=DECAY)
  state = on.transform(on.init(jax.random.PRNGKey(0))).init(params)
  assert state.coherence_momentum.shape == (14,)  # one average per parameter
  assert state.coherence_mean_square.shape == (2,)  # and one per tensor
  assert on.state_floats_per_parameter() == opt.state_floats_per_parameter() + 1


def test_first_step_is_unchanged():
  # After one step m_hat = g and v_hat = mean_T(g^2): the factor is 1 up to float32 rounding (rtol 1e-6).
  [(plain, scaled)] = _updates_with_and_without([_noise(0)])
  for name in ('b', 'w'):
    np.testing.assert_allclose(np.asarray(scaled[name]), np.asarray(plain[name]), rtol=1e-6, err_msg=name)


def test_a_gradient_that_keeps_its_direction_keeps_its_step():
  # The same gradient at every step (a steady direction): m_hat = g and v_hat = mean_T(g^2) at every count, factor 1.
  fixed = _noise(0)
  for plain, scaled in _updates_with_and_without([fixed] * 30):
    for name in ('b', 'w'):
      np.testing.assert_allclose(np.asarray(scaled[name]), np.asarray(plain[name]), rtol=1e-5, err_msg=name)


def test_noise_takes_a_smaller_step_equal_to_the_reference():
  # Fresh noise at every step, with 'b' 1e3 times smaller than 'w' (the factor does not depend on the scale): after
  # 60 steps both tensors' factors equal the float64 reference (tolerance: float32 EMAs over 60 steps, rtol 1e-4)
  # and are well below 1 (noise; 12 and 5 elements, so far from the large-tensor limit 0.23).
  history = [_noise(step) for step in range(60)]
  plain, scaled = _updates_with_and_without(history)[-1]
  expected = _reference_factors(history)
  for name in ('b', 'w'):
    assert expected[name] < 0.7, expected
    got = np.asarray(scaled[name]) / np.asarray(plain[name])
    np.testing.assert_allclose(got, expected[name], rtol=1e-4, err_msg=name)


def test_coherence_known_answers():
  n, decay = 20_000, 0.9
  def run(gradients):
    m, v = jnp.zeros(n), jnp.zeros(())
    for g in gradients:
      m = decay * m + (1 - decay) * g
      v = decay * v + (1 - decay) * jnp.mean(g ** 2)
    return float(base.coherence(jnp.mean(m ** 2), v, len(gradients), decay))
  # A constant gradient: exactly 1 (up to float32 rounding of the two corrections).
  g = jax.random.normal(jax.random.PRNGKey(0), (n,))
  assert run([g] * 25) == pytest.approx(1.0, rel=1e-5)
  # A gradient that alternates in sign: m_t = (1 - b) g sum_k b^k (-1)^k = (1 - b)(1 - (-b)^t) / (1 + b) g (sign
  # aside), v_hat = mean(g^2), so the factor is |(1 - b)(1 - (-b)^t) / ((1 + b)(1 - b^t))| in closed form.
  t = 25
  expected = abs((1 - decay) * (1 - (-decay) ** t) / ((1 + decay) * (1 - decay ** t)))
  alternating = [g * (-1) ** k for k in range(t)]
  assert run(alternating) == pytest.approx(expected, rel=1e-4)
  # Independent noise for 200 steps (the start's bias long forgotten): E[m^2] = (1 - b) / (1 + b) E[g^2] in the
  # stationary limit, so the factor is sqrt(0.1 / 1.9) = 0.229; 20,000 elements average the noise to ~1% (rel 0.03).
  keys = jax.random.split(jax.random.PRNGKey(1), 200)
  noise = [jax.random.normal(k, (n,)) for k in keys]
  assert run(noise) == pytest.approx(np.sqrt((1 - decay) / (1 + decay)), rel=0.03)
  # All-zero gradients: no step.
  assert run([jnp.zeros(n)] * 3) == 0.0


@pytest.mark.parametrize('bad', [0.0, 1.0, -0.5, 1.5, float('nan'), True, '0.9'])
def test_bad_decay_raises_naming_the_field(bad):
  with pytest.raises(ValueError, match=r'coherence_decay must be None or an EMA decay in \(0, 1\)'):
    HierarchicalRNN(coherence_decay=bad)


def test_config_round_trip_and_bfloat16_state():
  opt = HierarchicalRNN(coherence_decay=0.8, attenuation='both')
  assert HierarchicalRNN.from_config(opt.config()) == opt
  bf16 = dataclasses.replace(opt, state_dtype='bfloat16')
  params = {'w': jnp.ones((3, 4)), 'b': jnp.ones(2)}
  tx = bf16.transform(bf16.init(jax.random.PRNGKey(0)))
  state = tx.init(params)
  _, state = tx.update(jax.tree.map(lambda p: 0.1 * p, params), state, params)
  assert state.coherence_momentum.dtype == jnp.bfloat16  # a per-parameter statistic, stored like the momenta
  assert state.coherence_mean_square.dtype == jnp.float32
  # Off, the empty placeholder stays float32 like every other non-per-parameter field (the contract suite's rule).
  off_tx = dataclasses.replace(bf16, coherence_decay=None).transform(bf16.init(jax.random.PRNGKey(0)))
  _, state = off_tx.update(jax.tree.map(lambda p: 0.1 * p, params), off_tx.init(params), params)
  assert state.coherence_momentum.shape == (0,) and state.coherence_momentum.dtype == jnp.float32
  assert state.momenta.dtype == jnp.bfloat16


def test_meta_gradient_is_finite_with_vanishing_gradients():
  # One tensor sits at its minimum (all-zero gradients, where the factor's own derivative would be 0/0), the other is
  # driven towards it: the meta-gradient through 10 steps stays finite (the factor is a constant for meta-gradients)
  # and reaches the step size.
  opt = _make(coherence_decay=DECAY, attenuation='both')
  meta_grads = vanishing_gradient_meta_grads.meta_gradients(opt)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(meta_grads))
  assert optax.tree.norm(meta_grads['step_size_offset']) > 0
