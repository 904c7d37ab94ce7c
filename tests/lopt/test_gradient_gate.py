"""``min_gradient_rms``, shared by the HRNN and the MLP optimizer (docs/algorithms.md §2.11, §3.4): a tensor's step is
multiplied by ``min(1, rms_T(g) / epsilon)``, so it vanishes with the gradient and is unchanged above ``epsilon``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import HierarchicalRNN, MLPLOpt

EPSILON = 1e-8
ARCHITECTURES = {
    'hierarchical_rnn': lambda **kw: HierarchicalRNN(lr_init_range=(1e-3, 1e-2), min_log_lr=-8.0, max_log_lr=0.0,
                                                     step_scale='relative', **kw),
    'mlp_lopt': lambda **kw: MLPLOpt(step_scale='relative', **kw),
}
GRAD_SCALES = {'b': 1e-3, 'w': 1.0}  # tensors with very different gradient scales


def _grads(step, scale):
  keys = jax.random.split(jax.random.PRNGKey(100 + step), 2)
  return {'b': scale * GRAD_SCALES['b'] * jax.random.normal(keys[0], (5,)),
          'w': scale * GRAD_SCALES['w'] * jax.random.normal(keys[1], (3, 4))}


def _plain_and_gated_updates(make, gradient_scale, num_warmup=5):
  """One update of the optimizer without and with the gate, from the state after ``num_warmup`` ordinary steps (so
  momenta and hidden states are far from zero), on gradients ``gradient_scale`` times the usual ones."""
  plain, gated = make(), make(min_gradient_rms=EPSILON)
  meta = plain.init(jax.random.PRNGKey(0))
  # Perturbed meta-parameters, so that zero-initialised readouts and every path of the network matter.
  leaves, treedef = jax.tree.flatten(meta)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  meta = jax.tree.unflatten(treedef, [v + 0.1 * jax.random.normal(k, jnp.shape(v)) for k, v in zip(keys, leaves)])
  params = {'b': jnp.linspace(-0.5, 0.5, 5), 'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)}
  tx = plain.transform(meta)
  state = tx.init(params)
  for step in range(num_warmup):
    updates, state = tx.update(_grads(step, 1.0), state, params)
    params = optax.apply_updates(params, updates)
  grads = _grads(num_warmup, gradient_scale)
  return tx.update(grads, state, params)[0], gated.transform(meta).update(grads, state, params)[0], grads


@pytest.mark.parametrize('make', ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_gate_changes_nothing_where_the_gradients_are_above_epsilon(make):
  # The factor is exactly 1: the updates are bitwise those of the ungated optimizer.
  plain, gated, _ = _plain_and_gated_updates(make, 1.0)
  for name in GRAD_SCALES:
    np.testing.assert_array_equal(np.asarray(gated[name]), np.asarray(plain[name]), err_msg=name)


@pytest.mark.parametrize('make', ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_gate_stops_the_drift_at_zero_gradients(make):
  # Without the gate both optimizers still step at zero gradients (the HRNN's unit-RMS direction, the MLP's weight
  # feature): the drift of docs/algorithms.md §2.11. With it, the steps are exactly zero.
  plain, gated, _ = _plain_and_gated_updates(make, 0.0)
  for name in GRAD_SCALES:
    assert float(jnp.max(jnp.abs(plain[name]))) > 0, name
    np.testing.assert_array_equal(np.asarray(gated[name]), 0.0, err_msg=name)


@pytest.mark.parametrize('make', ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_gate_shrinks_each_tensor_step_in_proportion_to_its_gradient_rms(make):
  # Gradients scaled by 1e-12 (RMS ~1e-15 and ~1e-12, both below epsilon): each gated update is the ungated one times
  # rms_T(g) / epsilon, per tensor. Tolerance: float32 rounding of one RMS reduction and one multiply (rtol 1e-5).
  plain, gated, grads = _plain_and_gated_updates(make, 1e-12)
  for name in GRAD_SCALES:
    factor = float(jnp.sqrt(jnp.mean(grads[name] ** 2))) / EPSILON
    assert factor < 1e-3, name
    np.testing.assert_allclose(np.asarray(gated[name]), factor * np.asarray(plain[name]), rtol=1e-5, atol=1e-30,
                               err_msg=name)


@pytest.mark.parametrize('architecture', [HierarchicalRNN, MLPLOpt], ids=['hierarchical_rnn', 'mlp_lopt'])
def test_min_gradient_rms_is_checked(architecture):
  for bad in (0.0, -1.0, float('nan'), float('inf'), True):
    with pytest.raises(ValueError, match='min_gradient_rms must be None or a finite number > 0'):
      architecture(min_gradient_rms=bad)
