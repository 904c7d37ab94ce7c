"""Shared check of the HRNN's per-tensor step factors (attenuation, coherence): meta-gradients through steps where
one tensor's gradients are exactly zero.

The factors are ratios of gradient statistics; their own derivative there would be 0/0 in float32, which is why they
are constants for meta-gradients (``stop_gradient``). Each factor's test module calls :func:`meta_gradients` with the
option on and asserts the result is finite and reaches the step size.
"""
import jax
import jax.numpy as jnp
import optax


def meta_gradients(opt, steps: int = 10):
  """Meta-gradients of a quadratic's final loss after ``steps`` updates, with ``'w'`` starting at its minimum (zero
  gradient) and ``'b'`` driven towards it."""
  target = {'w': jnp.full((3, 4), 0.3), 'b': jnp.zeros(5)}

  def loss_fn(params):
    return sum(jnp.sum((p - t) ** 2) for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(target)))

  def meta_loss(meta):
    tx = opt.transform(meta)
    params = {'w': jnp.full((3, 4), 0.3), 'b': jnp.linspace(-0.1, 0.1, 5)}

    def body(carry, _):
      params, state = carry
      updates, state = tx.update(jax.grad(loss_fn)(params), state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
    return loss_fn(params)

  return jax.jit(jax.grad(meta_loss))(opt.init(jax.random.PRNGKey(0)))
