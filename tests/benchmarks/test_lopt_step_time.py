"""benchmarks/lopt_step_time.py's optimizer table: every name builds an optimizer that updates, and the no-brake
variants are the shipped weights with only the loss brake removed (so their rows measure what the brake costs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from benchmarks import lopt_step_time

PARAMS = {'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), 'b': jnp.zeros(4)}
GRADS = jax.tree.map(lambda p: jnp.cos(3.0 * p) * 0.1, PARAMS)


@pytest.mark.parametrize('name', sorted(lopt_step_time.OPTIMIZERS))
def test_every_named_optimizer_gives_finite_updates(name):
  tx = lopt_step_time.make_optimizer(name)
  updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS, value=jnp.float32(1.0))
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize('name', ['hierarchical_rnn', 'mlp_lopt'])
def test_no_brake_variant_is_the_shipped_optimizer_without_its_brake(name):
  shipped, unbraked = lopt_step_time.make_optimizer(name), lopt_step_time.make_optimizer(f'{name}_no_brake')
  assert isinstance(shipped.init(PARAMS), lopt.brakes.LossBrakeState)
  assert not isinstance(unbraked.init(PARAMS), lopt.brakes.LossBrakeState)
  # Before its warm-up ends the brake's factor is 1, so the first updates agree (float32 rounding only).
  braked_updates, _ = shipped.update(GRADS, shipped.init(PARAMS), PARAMS, value=jnp.float32(1.0))
  plain_updates, _ = unbraked.update(GRADS, unbraked.init(PARAMS), PARAMS)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), braked_updates, plain_updates)
