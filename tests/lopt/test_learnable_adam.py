"""LearnableAdam: equal to optax.adam at init, decodes its meta-parameters as exp / sigmoid, differentiable."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.architectures.learnable_adam import LearnableAdam

PARAMS = {'w': jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4),
          'b': jnp.linspace(0.5, -0.25, 4, dtype=jnp.float32), 's': jnp.asarray(0.75, jnp.float32)}
NUM_STEPS = 50


def gradient_sequence(num_steps=NUM_STEPS):
  """Gradients of PARAMS' shape whose scale sweeps 1e-3..1e2 and whose signs change, so every term of Adam matters."""
  keys = jax.random.split(jax.random.key(42), num_steps)
  scales = 10.0 ** jnp.linspace(-3.0, 2.0, num_steps)

  def one(key, scale):
    leaves, treedef = jax.tree.flatten(PARAMS)
    ks = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [scale * jax.random.normal(k, jnp.shape(x)) for k, x in zip(ks, leaves)])

  return jax.vmap(one)(keys, scales)


def run_updates(tx, grads_seq):
  """All updates of ``tx`` fed ``grads_seq`` (params fixed at PARAMS), in one jitted scan."""

  def step(state, grads):
    updates, state = tx.update(grads, state, PARAMS)
    return state, updates

  return jax.jit(lambda g: jax.lax.scan(step, tx.init(PARAMS), g)[1])(grads_seq)


@pytest.mark.parametrize('config', [{}, dict(learning_rate=3e-2, b1=0.5, b2=0.99, eps=1e-4)], ids=['default', 'custom'])
def test_init_updates_equal_optax_adam_bitwise_over_50_steps(config):
  optimizer = LearnableAdam(**config)
  reference = optax.adam(optimizer.learning_rate, optimizer.b1, optimizer.b2, optimizer.eps)
  grads_seq = gradient_sequence()
  ours = run_updates(optimizer.transform(optimizer.init(jax.random.key(0))), grads_seq)
  theirs = run_updates(reference, grads_seq)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_meta_parameters_are_the_four_log_or_logit_scalars():
  meta_params = LearnableAdam().init(jax.random.key(0))
  assert sorted(meta_params) == ['log_eps', 'log_learning_rate', 'logit_b1', 'logit_b2']
  assert all(x.shape == () and x.dtype == jnp.float32 for x in meta_params.values())
  np.testing.assert_allclose(float(meta_params['logit_b2']), math.log(0.999 / 0.001), rtol=1e-7)


def test_perturbed_meta_parameters_decode_as_exp_and_sigmoid():
  optimizer = LearnableAdam()
  meta_params = {'log_learning_rate': jnp.float32(-3.0), 'logit_b1': jnp.float32(0.3),
                 'logit_b2': jnp.float32(5.0), 'log_eps': jnp.float32(-10.0)}
  hp = optimizer.hyperparameters(meta_params)
  sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))
  # float64 reference; float32 decoding through the anchored form costs a few ulps (rtol 1e-6 = ~8 ulps).
  expected = {'learning_rate': math.exp(-3.0), 'b1': sigmoid(0.3), 'one_minus_b1': sigmoid(-0.3),
              'b2': sigmoid(5.0), 'one_minus_b2': sigmoid(-5.0), 'eps': math.exp(-10.0)}
  for name, value in expected.items():
    np.testing.assert_allclose(float(hp[name]), value, rtol=1e-6, err_msg=name)


def test_meta_gradient_through_scan_lowers_loss_with_larger_learning_rate():
  # On a quadratic far from its minimum, 20 Adam steps with lr 1e-3 are too short: a larger learning rate lowers the
  # final loss, so d loss / d log_lr must be negative; every meta-gradient is finite and lr/b1/b2 ones non-zero.
  # The loss ignores PARAMS['s'], whose gradient is exactly 0 throughout (v = 0): sqrt's slope at 0 must not make
  # the meta-gradient NaN.
  optimizer = LearnableAdam()
  loss_fn = lambda p: jnp.sum(jnp.square(p['w'] - 3.0)) + jnp.sum(jnp.square(p['b'] - 3.0))

  def meta_loss(meta_params):
    tx = optimizer.transform(meta_params)

    def step(carry, _):
      params, state = carry
      updates, state = tx.update(jax.grad(loss_fn)(params), state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (PARAMS, tx.init(PARAMS)), length=20)
    return loss_fn(params)

  grads = jax.jit(jax.grad(meta_loss))(optimizer.init(jax.random.key(0)))
  assert all(bool(jnp.isfinite(g)) for g in grads.values())
  assert float(grads['log_learning_rate']) < 0
  assert float(grads['logit_b1']) != 0 and float(grads['logit_b2']) != 0


@pytest.mark.parametrize('field, value', [('learning_rate', 0.0), ('b1', 1.0), ('b2', 0.0), ('eps', -1e-8)])
def test_invalid_hyperparameter_raises_naming_it(field, value):
  with pytest.raises(ValueError, match=field):
    LearnableAdam(**{field: value})
