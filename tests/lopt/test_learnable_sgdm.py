"""LearnableSGDM: equal to optax.sgd(lr, momentum) at init, decodes exp / sigmoid, differentiable."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.architectures.learnable_sgdm import LearnableSGDM

PARAMS = {'w': jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4), 's': jnp.asarray(0.75, jnp.float32)}


def run_updates(tx, grads_seq):
  def step(state, grads):
    updates, state = tx.update(grads, state, PARAMS)
    return state, updates

  return jax.jit(lambda g: jax.lax.scan(step, tx.init(PARAMS), g)[1])(grads_seq)


@pytest.mark.parametrize('config', [{}, dict(learning_rate=0.1, momentum=0.99)], ids=['default', 'custom'])
def test_init_updates_equal_optax_sgd_with_momentum_bitwise_over_50_steps(config):
  optimizer = LearnableSGDM(**config)
  keys = jax.random.split(jax.random.key(3), 50)
  grads_seq = jax.vmap(lambda k: jax.tree.map(lambda x: jax.random.normal(k, jnp.shape(x)), PARAMS))(keys)
  ours = run_updates(optimizer.transform(optimizer.init(jax.random.key(0))), grads_seq)
  theirs = run_updates(optax.sgd(optimizer.learning_rate, optimizer.momentum), grads_seq)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_meta_parameters_and_their_decoding():
  optimizer = LearnableSGDM()
  meta_params = optimizer.init(jax.random.key(0))
  assert sorted(meta_params) == ['log_learning_rate', 'logit_momentum']
  np.testing.assert_allclose(float(meta_params['logit_momentum']), math.log(0.9 / 0.1), rtol=1e-7)
  hp = optimizer.hyperparameters({'log_learning_rate': jnp.float32(-1.5), 'logit_momentum': jnp.float32(-0.7)})
  np.testing.assert_allclose(float(hp['learning_rate']), math.exp(-1.5), rtol=1e-6)  # a few float32 ulps
  np.testing.assert_allclose(float(hp['momentum']), 1.0 / (1.0 + math.exp(0.7)), rtol=1e-6)


def test_meta_gradient_through_scan_lowers_loss_with_more_momentum():
  # 10 steps of lr 0.01 on a unit quadratic from distance 1: the iterate is still far away, and more momentum (a
  # longer effective step) lowers the final loss, so d loss / d logit_momentum < 0 and d loss / d log_lr < 0.
  optimizer = LearnableSGDM()
  loss_fn = lambda p: sum(jnp.sum(jnp.square(x - 1.0)) for x in jax.tree.leaves(p))
  params0 = jax.tree.map(jnp.zeros_like, PARAMS)

  def meta_loss(meta_params):
    tx = optimizer.transform(meta_params)

    def step(carry, _):
      params, state = carry
      updates, state = tx.update(jax.grad(loss_fn)(params), state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params0, tx.init(params0)), length=10)
    return loss_fn(params)

  grads = jax.jit(jax.grad(meta_loss))(optimizer.init(jax.random.key(0)))
  assert float(grads['log_learning_rate']) < 0
  assert float(grads['logit_momentum']) < 0


@pytest.mark.parametrize('field, value', [('learning_rate', -0.1), ('momentum', 0.0), ('momentum', 1.0)])
def test_invalid_hyperparameter_raises_naming_it(field, value):
  with pytest.raises(ValueError, match=field):
    LearnableSGDM(**{field: value})
