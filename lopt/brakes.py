"""A loss-based brake around any optimizer: shrink every update while the loss is above its best recent level.

A learned optimizer meta-trained on finite episodes can keep its learned rate high where a run needs it lower: on a
small net memorising noisy labels, HRNN release 9 fits most of the data within 1,000 steps and then, on some seeds,
oscillates at a loss 10-40x above its best for thousands of steps (docs/algorithms.md §2.12). The learned
architectures here do not read the loss; this wrapper does, and scales the inner optimizer's whole update by

    factor_t = min(1, best_t / average_t) ** power

where ``average_t`` is a bias-corrected exponential moving average of the minibatch loss with decay ``decay`` (as
Adam's moments: ``average_t = a_t / (1 - decay^t)`` with ``a_t = decay a_{t-1} + (1 - decay) f_t``) and ``best_t``
its lowest value since step ``warmup``. The factor is 1 while the averaged loss is at its best, and ``(best /
average)^power`` once it has risen above it: a run whose loss climbs 10x takes 10x smaller steps (``power = 1``)
until the loss comes back down, which brings the factor back to 1. Before ``warmup`` steps the factor is 1 (the
early loss of a run is not a level to hold it to).

The factor is defined only for a positive loss: where ``best_t`` or ``average_t`` is <= 0 (a landscape whose
minimum is negative) the factor is 1, and a non-finite loss leaves the average unchanged (it would otherwise stop
the brake for the rest of the run). For meta-gradients the factor is a constant (``stop_gradient``), as the HRNN's
attenuation and coherence factors.

Usage: the loss must reach ``update`` as ``value``, the keyword optax's line searches use::

    opt = lopt.loss_brake(optax.adam(1e-3))
    updates, state = opt.update(grads, state, params, value=loss)

Both shipped optimizers have this brake built in (their option ``loss_brake``): ``lopt.hierarchical_rnn()`` since
HRNN release 10 and ``lopt.mlp_lopt()`` since MLP release 7.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt import base


class LossBrakeState(NamedTuple):
  """State of :func:`loss_brake`: the inner optimizer's state and the loss statistics."""
  inner_state: optax.OptState
  count: jax.Array  # int32 [], steps with a finite loss
  loss_average: jax.Array  # float32 [], EMA of the loss, not bias-corrected (0 before the first finite loss)
  best_average: jax.Array  # float32 [], lowest bias-corrected average since `warmup` (float32 max before)


def loss_brake(inner: optax.GradientTransformation, *, power: float = 1.0, decay: float = 0.9,
               warmup: int = 50) -> optax.GradientTransformationExtraArgs:
  """Wraps ``inner`` so that its updates shrink while the averaged loss is above its best (module docstring).

  Args:
    inner: any optax transformation; extra keyword arguments of ``update`` (``value`` included) reach it.
    power: exponent of ``best / average``; > 0. 1 shrinks steps in proportion to how far the loss has risen.
    decay: decay of the loss average, in [0, 1); 0.9 averages over about 10 steps, enough to smooth minibatch noise
      and short enough to react within tens of steps.
    warmup: steps before the best average is first recorded (>= 1); the factor is 1 until then.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``value=loss``.
  """
  if not base.is_positive_finite(power):
    raise ValueError(f'loss_brake: power must be a finite number > 0, got {power!r}.')
  if isinstance(decay, bool) or not (isinstance(decay, (int, float)) and 0.0 <= decay < 1.0):
    raise ValueError(f'loss_brake: decay must be in [0, 1), got {decay!r} (0.9 averages over about 10 steps).')
  if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
    raise ValueError(f'loss_brake: warmup must be an integer >= 1, got {warmup!r}.')
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    # No best yet: the largest float32 rather than inf, so the state stays finite (jax_debug_infs, and checks that
    # a state is finite, would flag an inf here).
    return LossBrakeState(inner.init(params), jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32),
                          jnp.full([], jnp.finfo(jnp.float32).max, jnp.float32))

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    if value is None:
      raise ValueError(
          'loss_brake needs the loss at every step: call update(grads, state, params, value=loss). Both shipped '
          'optimizers have the brake on (lopt.hierarchical_rnn() since HRNN release 10, lopt.mlp_lopt() since MLP '
          'release 7); where the loss cannot reach update, run one without: arch, meta = '
          "lopt.load_pretrained('hierarchical_rnn') (or 'mlp_lopt'); "
          'tx = dataclasses.replace(arch, loss_brake=None).transform(meta).')
    updates, inner_state = inner.update(updates, state.inner_state, params, value=value, **extra_args)
    loss = jax.lax.stop_gradient(jnp.asarray(value, jnp.float32))
    finite = jnp.isfinite(loss)
    count = jnp.where(finite, state.count + 1, state.count)
    average = jnp.where(finite, decay * state.loss_average + (1.0 - decay) * loss, state.loss_average)
    # Adam's bias correction; the max only keeps the division defined before the first finite loss.
    corrected = average / (1.0 - decay ** jnp.maximum(count, 1).astype(jnp.float32))
    best = jnp.where(finite & (count >= warmup), jnp.minimum(state.best_average, corrected), state.best_average)
    # Defined from the step after the first best; the inner where keeps the unused branch finite (no 0/0 or x/-y).
    defined = (count > warmup) & (best > 0) & (corrected > 0)
    factor = jnp.where(defined, jnp.minimum(1.0, best / jnp.where(defined, corrected, 1.0)) ** power, 1.0)
    updates = jax.tree.map(lambda u: None if u is None else u * factor.astype(u.dtype), updates,
                           is_leaf=lambda u: u is None)
    return updates, LossBrakeState(inner_state, count, average, best)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def unwrap(state):
  """The wrapped optimizer's state when ``state`` is a :class:`LossBrakeState`, else ``state`` itself: code that
  inspects an architecture's state (its learned rates, momenta) works with and without the brake."""
  return state.inner_state if isinstance(state, LossBrakeState) else state
