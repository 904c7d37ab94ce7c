"""lopt.loss_brake: known factors on scripted losses, pass-through of the inner optimizer, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt

PARAMS = {'w': jnp.ones((3, 2)), 'b': jnp.zeros((2,))}
GRADS = jax.tree.map(jnp.ones_like, PARAMS)


def _factors(losses, **kwargs):
  """The factor of each step: SGD(1) on unit gradients makes the update -factor in every element."""
  opt = lopt.loss_brake(optax.sgd(1.0), **kwargs)
  state = opt.init(PARAMS)
  factors = []
  for loss in losses:
    updates, state = opt.update(GRADS, state, PARAMS, value=jnp.float32(loss))
    factors.append(-float(updates['w'][0, 0]))
    np.testing.assert_allclose(updates['b'], updates['w'][0], rtol=0)  # one factor for the whole update
  return np.asarray(factors), state


def test_a_falling_loss_is_never_braked_and_a_risen_one_is_by_best_over_average():
  factors, _ = _factors(np.geomspace(1.0, 1e-3, 30), decay=0.5, warmup=3)
  np.testing.assert_array_equal(factors, 1.0)  # the average is at its best at every step
  # A loss flat at 1 from the start, then 10 from step 20: with decay 0 the average is the loss itself, so the
  # factor is exactly best / loss = 0.1 (power 1) or 0.01 (power 2) from step 20 on, and 1 before.
  losses = [1.0] * 20 + [10.0] * 5
  for power, expected in ((1.0, 0.1), (2.0, 0.01)):
    factors, _ = _factors(losses, decay=0.0, warmup=3, power=power)
    np.testing.assert_allclose(factors[:20], 1.0)
    np.testing.assert_allclose(factors[20:], expected, rtol=1e-6)


def test_the_average_is_bias_corrected_and_the_factor_waits_for_the_warmup():
  # Constant loss 2: the bias-corrected average is 2 from the first step, so nothing is braked even with a slow decay.
  factors, state = _factors([2.0] * 10, decay=0.99, warmup=1)
  np.testing.assert_allclose(factors, 1.0, rtol=1e-6)
  assert float(state.best_average) == pytest.approx(2.0, rel=1e-5)
  # A high loss before the warm-up ends is not a best to hold the run to: 10 then 100 with warmup=5 and decay 0
  # records the best from step 5 (the 100s), so the factor stays 1.
  factors, _ = _factors([10.0] * 4 + [100.0] * 6, decay=0.0, warmup=5)
  np.testing.assert_allclose(factors, 1.0)


def test_non_positive_and_non_finite_losses_leave_the_brake_defined():
  # Landscapes with negative losses: no factor is defined, steps pass unchanged.
  factors, _ = _factors([-1.0] * 5 + [-0.5] * 5, decay=0.0, warmup=2)
  np.testing.assert_allclose(factors, 1.0)
  # A NaN loss is skipped: the average and the count keep their values, and the brake still works afterwards.
  factors, state = _factors([1.0] * 5 + [float('nan')] + [4.0] * 3, decay=0.0, warmup=2)
  assert int(state.count) == 8
  np.testing.assert_allclose(factors[6:], 0.25, rtol=1e-6)


def test_the_inner_optimizer_receives_the_loss_and_its_state_is_kept():
  seen = []

  def update(updates, state, params=None, *, value=None):
    seen.append(value)
    return updates, state

  inner = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
  opt = lopt.loss_brake(inner)
  opt.update(GRADS, opt.init(PARAMS), PARAMS, value=jnp.float32(3.0))
  assert float(seen[0]) == 3.0
  architecture = lopt.HierarchicalRNN()  # no brake of its own (the shipped HRNN has one since release 10)
  hrnn = lopt.loss_brake(architecture.transform(architecture.init(jax.random.key(0))))
  state = hrnn.init(PARAMS)
  step = jax.jit(lambda s, v: hrnn.update(GRADS, s, PARAMS, value=v))
  updates, state = step(state, jnp.float32(1.0))
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
  assert int(state.inner_state.count) == 1  # the HRNN's own state advanced


def test_bad_arguments_and_a_missing_loss_name_the_fix():
  with pytest.raises(ValueError, match='value=loss'):
    opt = lopt.loss_brake(optax.sgd(1.0))
    opt.update(GRADS, opt.init(PARAMS), PARAMS)
  with pytest.raises(ValueError, match='power'):
    lopt.loss_brake(optax.sgd(1.0), power=0.0)
  for decay in (1.0, -0.1, False):
    with pytest.raises(ValueError, match='decay'):
      lopt.loss_brake(optax.sgd(1.0), decay=decay)
  with pytest.raises(ValueError, match='warmup'):
    lopt.loss_brake(optax.sgd(1.0), warmup=0)


@pytest.mark.parametrize('architecture', [lopt.HierarchicalRNN, lopt.MLPLOpt])
def test_the_option_is_the_wrapper_and_survives_save_and_load(tmp_path, architecture):
  plain = architecture()
  braked = architecture(loss_brake=1.0)
  meta = plain.init(jax.random.key(0))
  path = tmp_path / 'braked.npz'
  lopt.save(path, braked, meta)
  loaded, loaded_meta = lopt.load(path)
  assert loaded == braked
  by_option, by_hand = loaded.transform(loaded_meta), lopt.loss_brake(plain.transform(meta), power=1.0)
  state_a, state_b = by_option.init(PARAMS), by_hand.init(PARAMS)
  # Losses that fall then rise 8x: from step 60 on the factor is below 1, the same in both.
  for loss in [1.0] * 60 + [8.0] * 5:
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), PARAMS)
    a, state_a = by_option.update(grads, state_a, PARAMS, value=jnp.float32(loss))
    b, state_b = by_hand.update(grads, state_b, PARAMS, value=jnp.float32(loss))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)
  assert float(state_a.best_average) == pytest.approx(1.0) and isinstance(state_a, lopt.brakes.LossBrakeState)
  with pytest.raises(ValueError, match='loss_brake must be None or a finite number > 0'):
    architecture(loss_brake=-1.0)


def test_unwrap_gives_the_architecture_state_with_or_without_the_brake():
  plain = lopt.HierarchicalRNN()
  meta = plain.init(jax.random.key(0))
  bare = plain.transform(meta).init(PARAMS)
  braked = lopt.HierarchicalRNN(loss_brake=1.0).transform(meta).init(PARAMS)
  assert lopt.brakes.unwrap(bare) is bare
  assert type(lopt.brakes.unwrap(braked)) is type(bare)
  np.testing.assert_array_equal(lopt.brakes.unwrap(braked).log_lr, bare.log_lr)
  # No inf in a fresh state (the best loss starts at the largest float32): jax_debug_infs would flag one.
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(braked) if jnp.issubdtype(x.dtype, jnp.floating))
