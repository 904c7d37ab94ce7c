"""``attenuation`` of the HRNN (docs/algorithms.md §2.11): each tensor's step is multiplied by a factor of
``r = v_fast / v_slow``, bias-corrected EMAs of its ``mean_T(g^2)``: ``sqrt(min(1, r))`` (``'falls'``), so the step
shrinks once the gradient falls below its long-run level, ``sqrt(min(1, 1 / r))`` (``'rises'``) or
``sqrt(min(r, 1 / r))`` (``'both'``); unchanged while the gradient keeps its level."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import HierarchicalRNN, base
from lopt.base import ATTENUATIONS

import vanishing_gradient_meta_grads  # tests/lopt is on sys.path (pytest's rootdir-relative import of test modules)

DECAYS = (0.5, 0.999)
GRAD_SCALES = {'b': 1e-3, 'w': 1.0}  # tensors with very different gradient scales


def _make(**kw):
  return HierarchicalRNN(lr_init_range=(1e-3, 1e-2), min_log_lr=-8.0, max_log_lr=0.0, step_scale='relative', **kw)


def _grads(step, scale):
  keys = jax.random.split(jax.random.PRNGKey(100 + step), 2)
  return {'b': scale['b'] * GRAD_SCALES['b'] * jax.random.normal(keys[0], (5,)),
          'w': scale['w'] * GRAD_SCALES['w'] * jax.random.normal(keys[1], (3, 4))}


def _meta(opt):
  # Perturbed meta-parameters, so that zero-initialised readouts and every path of the network matter.
  meta = opt.init(jax.random.PRNGKey(0))
  leaves, treedef = jax.tree.flatten(meta)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  return jax.tree.unflatten(treedef, [v + 0.1 * jax.random.normal(k, jnp.shape(v)) for k, v in zip(keys, leaves)])


def _updates_with_and_without(scales, mode='falls'):
  """Runs the plain and the attenuated optimizer side by side on the same gradients; at every step the attenuated one
  is given the plain one's state too, so that the two updates differ only by the factor. Returns per step the plain
  and attenuated updates and the gradients."""
  plain, attenuated = _make(), _make(attenuation=mode, attenuation_decays=DECAYS)
  meta = _meta(plain)
  plain_tx, att_tx = plain.transform(meta), attenuated.transform(meta)
  plain_update, att_update = jax.jit(plain_tx.update), jax.jit(att_tx.update)
  params = {'b': jnp.linspace(-0.5, 0.5, 5), 'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)}
  plain_state, att_state = plain_tx.init(params), att_tx.init(params)
  out = []
  for step, scale in enumerate(scales):
    grads = _grads(step, scale)
    plain_updates, plain_state_next = plain_update(grads, plain_state, params)
    att_updates, att_state = att_update(
        grads, plain_state._replace(gradient_mean_squares=att_state.gradient_mean_squares), params)
    out.append((plain_updates, att_updates, grads))
    plain_state = plain_state_next
    params = optax.apply_updates(params, plain_updates)
  return out


def _reference_factors(grad_history, mode='falls'):
  """numpy: bias-corrected EMAs of each tensor's mean squared gradient r = fast / slow, then the factor of ``mode``."""
  factors = []
  for name in GRAD_SCALES:
    fast = slow = 0.0
    for count, grads in enumerate(grad_history, start=1):
      ms = float(np.mean(np.asarray(grads[name], np.float64) ** 2))
      fast = DECAYS[0] * fast + (1 - DECAYS[0]) * ms
      slow = DECAYS[1] * slow + (1 - DECAYS[1]) * ms
    ratio = (fast / (1 - DECAYS[0] ** count)) / (slow / (1 - DECAYS[1] ** count))
    factors.append(np.sqrt({'falls': min(1.0, ratio), 'rises': min(1.0, 1.0 / ratio), 'both': min(ratio, 1.0 / ratio)}[mode]))
  return dict(zip(GRAD_SCALES, factors))


def test_off_by_default_with_no_state():
  opt = HierarchicalRNN()
  assert opt.attenuation is None
  state = opt.transform(opt.init(jax.random.PRNGKey(0))).init({'w': jnp.ones((3, 4)), 'b': jnp.ones(2)})
  assert state.gradient_mean_squares.shape == (2, 0)
  on = HierarchicalRNN(attenuation='falls')
  state = on.transform(on.init(jax.random.PRNGKey(0))).init({'w': jnp.ones((3, 4)), 'b': jnp.ones(2)})
  assert state.gradient_mean_squares.shape == (2, 2)  # fast and slow, per tensor


def test_first_step_is_unchanged():
  # Bias correction makes both averages equal mean_T(g^2) after one step: the factor is 1 up to float32 rounding of
  # the two corrections (rtol 1e-6).
  [(plain, attenuated, _)] = _updates_with_and_without([{'b': 1.0, 'w': 1.0}])
  for name in GRAD_SCALES:
    np.testing.assert_allclose(np.asarray(attenuated[name]), np.asarray(plain[name]), rtol=1e-6, err_msg=name)


def test_a_tensor_whose_gradient_falls_takes_a_proportionally_smaller_step():
  # 20 steps at the usual scale, then the gradient of 'w' falls 1e3 times while 'b' keeps its scale: 25 steps later
  # (the fast EMA has forgotten all but 0.5^25 of the old level) 'w' steps ~1e3 times less than the plain optimizer,
  # 'b' ~as much (its gradient has kept its level), and both factors equal the numpy reference. Tolerance: float32
  # EMAs over 45 steps against float64 (rtol 1e-4).
  scales = [{"b": 1.0, "w": 1.0}] * 20 + [{"b": 1.0, "w": 1e-3}] * 25
  history = _updates_with_and_without(scales)
  plain, attenuated, _ = history[-1]
  expected = _reference_factors([grads for _, _, grads in history])
  assert expected['w'] < 2e-3
  for name in GRAD_SCALES:
    got = np.asarray(attenuated[name]) / np.asarray(plain[name])
    np.testing.assert_allclose(got, expected[name], rtol=1e-4, err_msg=name)


def test_a_tensor_whose_gradient_rises_takes_a_smaller_step_under_rises_and_both():
  # As above, but the gradient of 'w' rises 1e3 times: under 'falls' its factor is 1 (bitwise the plain step, since
  # the factor is exactly min(., 1) = 1); under 'rises' and 'both' 'w' steps less, by sqrt(slow / fast). After only 45
  # steps the bias correction divides the slow EMA by 1 - 0.999^45 = 0.044, so it already weighs the 25 new steps at
  # ~56% and the factor is ~0.66 (a long run would give ~1e-3 right after the rise). Tolerance as above.
  scales = [{'b': 1.0, 'w': 1.0}] * 20 + [{'b': 1.0, 'w': 1e3}] * 25
  for mode in ATTENUATIONS:
    history = _updates_with_and_without(scales, mode)
    plain, attenuated, _ = history[-1]
    expected = _reference_factors([grads for _, _, grads in history], mode)
    if mode != 'falls':
      assert 0.5 < expected['w'] < 0.8
    else:
      np.testing.assert_array_equal(np.asarray(attenuated['w']), np.asarray(plain['w']))
    for name in GRAD_SCALES:
      got = np.asarray(attenuated[name]) / np.asarray(plain[name])
      np.testing.assert_allclose(got, expected[name], rtol=1e-4, err_msg=f'{name} {mode}')


def test_steady_gradients_keep_a_factor_near_one():
  # Gradients of a steady scale (fresh noise every step): the factor is the square root of a ratio of two averages
  # of the same mean square, ~1 with the fast average's noise. Over 60 steps of 12-element noise the smallest factor
  # stays above 0.5 and the median above 0.9 (the fast EMA averages ~3 steps of a chi-square with 12 degrees of
  # freedom, whose relative spread is ~0.4/sqrt(3)).
  history = _updates_with_and_without([{'b': 1.0, 'w': 1.0}] * 60)
  ratios = np.array([float(np.sqrt(np.mean(np.asarray(a['w']) ** 2) / np.mean(np.asarray(p['w']) ** 2)))
                     for p, a, _ in history])
  assert ratios.min() > 0.5 and np.median(ratios) > 0.9, ratios


def test_attenuation_known_answer():
  # Constant mean square: the bias-corrected averages are equal at every count, factor 1 in every mode. Then a fall
  # by 1e4 with fast = 0 (the fast average is the last step's mean square): the slow EMA and its correction in
  # closed form give r; 'falls' and 'both' take sqrt(r), 'rises' 1. A rise by 1e4 instead: 'rises' and 'both' take
  # sqrt(1 / r), 'falls' 1.
  decays = (0.0, 0.9)
  steady = jnp.zeros((2, 1))
  for count in range(1, 11):
    steady = base.gradient_mean_square_averages(steady, jnp.array([2.0]), decays)
    for mode in ATTENUATIONS:
      np.testing.assert_allclose(np.asarray(base.attenuation(steady, count, decays, mode)), [1.0], rtol=1e-6)
  slow_before = 2.0 * (1 - 0.9 ** 10)  # the EMA after 10 steps at 2
  for new_level, affected in ((2e-4, ('falls', 'both')), (2e4, ('rises', 'both'))):
    averages = base.gradient_mean_square_averages(steady, jnp.array([new_level]), decays)
    r = new_level / ((0.9 * slow_before + 0.1 * new_level) / (1 - 0.9 ** 11))
    for mode in ATTENUATIONS:
      expected = np.sqrt(min(r, 1 / r)) if mode in affected else 1.0
      np.testing.assert_allclose(np.asarray(base.attenuation(averages, 11, decays, mode)), [expected], rtol=1e-5,
                                 err_msg=f'{new_level} {mode}')
  # All-zero gradients: no step with 'falls' and 'both'; 'rises' leaves it to the optimizer.
  zero = base.gradient_mean_square_averages(jnp.zeros((2, 1)), jnp.array([0.0]), DECAYS)
  for mode, expected in (('falls', 0.0), ('both', 0.0), ('rises', 1.0)):
    np.testing.assert_array_equal(np.asarray(base.attenuation(zero, 1, DECAYS, mode)), [expected], err_msg=mode)


@pytest.mark.parametrize('bad', [(0.9,), (0.999, 0.5), (0.5, 1.0), (-0.1, 0.9), (0.5, float('nan')), [0.5, 0.999],
                                 (True, 0.9), None])
def test_bad_decays_raise_naming_the_field(bad):
  with pytest.raises(ValueError, match=r'attenuation_decays must be a tuple \(fast, slow\)'):
    HierarchicalRNN(attenuation='falls', attenuation_decays=bad)


def test_bad_mode_raises_naming_the_choices():
  with pytest.raises(ValueError, match=r"attenuation must be None or one of \('falls', 'rises', 'both'\)"):
    HierarchicalRNN(attenuation='fall')


def test_config_round_trip():
  for mode in ATTENUATIONS:
    opt = HierarchicalRNN(attenuation=mode, attenuation_decays=(0.3, 0.99))
    assert HierarchicalRNN.from_config(opt.config()) == opt


def test_meta_gradient_is_finite_with_vanishing_gradients():
  # One tensor starts at its minimum (all-zero gradients, where the factor's own derivative would be 0/0), the other
  # is driven towards it: the meta-gradient through 10 steps stays finite (the factor is a constant for
  # meta-gradients) and reaches the step size.
  opt = _make(attenuation='both')
  meta_grads = vanishing_gradient_meta_grads.meta_gradients(opt)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(meta_grads))
  assert optax.tree.norm(meta_grads['step_size_offset']) > 0


def test_attenuate_vectors_false_leaves_vectors_at_full_step_and_attenuates_matrices():
  # Gradients that fall 1000x after 5 steps: three steps later the fast average (decay 0.5) has fallen to ~1/8 of the
  # slow one, so the falls side shrinks every tensor's step to ~0.35 of its size. With attenuate_vectors=False the
  # vector 'b' must take exactly the unattenuated step and the matrix 'w' exactly the attenuated one (same
  # meta-parameters and gradients throughout).
  meta = _meta(_make())
  params = {'b': jnp.linspace(-0.5, 0.5, 5), 'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)}
  history = [_grads(step, {'b': 1.0, 'w': 1.0} if step < 5 else {'b': 1e-3, 'w': 1e-3}) for step in range(8)]
  finals = {}
  for name, kw in {'none': {}, 'all': {'attenuation': 'both'},
                   'matrices': {'attenuation': 'both', 'attenuate_vectors': False}}.items():
    tx = _make(**kw).transform(meta)
    state = tx.init(params)
    for grads in history:
      updates, state = tx.update(grads, state, params)
    finals[name] = updates
  np.testing.assert_array_equal(finals['matrices']['b'], finals['none']['b'])
  np.testing.assert_array_equal(finals['matrices']['w'], finals['all']['w'])
  # The falls side did act on the last step (so the equalities above are not trivially equal updates).
  rms = {name: float(jnp.sqrt(jnp.mean(updates['b'] ** 2))) for name, updates in finals.items()}
  assert rms['all'] < 0.5 * rms['none']


def test_attenuate_vectors_checks_its_value():
  opt = _make(attenuation='both', attenuate_vectors=False)
  assert HierarchicalRNN.from_config(opt.config()) == opt and opt.attenuate_vectors is False
  with pytest.raises(ValueError, match='attenuate_vectors=False has no effect without an attenuation'):
    HierarchicalRNN(attenuate_vectors=False)
  with pytest.raises(TypeError, match='attenuate_vectors must be True or False'):
    HierarchicalRNN(attenuation='both', attenuate_vectors=1)
