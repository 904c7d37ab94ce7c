"""Adam with meta-learnable learning rate, decays and epsilon.

Kingma & Ba 2015's update, with its four hyperparameters as meta-parameters (the ``TrainableAdam`` baseline of the
hierarchical-RNN code, SPEC 1)::

  m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2;   t <- t + 1
  update = -lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

Meta-parameters (scalars, float32): ``log_learning_rate`` = log lr, ``logit_b1`` = logit b1, ``logit_b2`` = logit b2,
``log_eps`` = log eps, initialised from the fields ``learning_rate``, ``b1``, ``b2``, ``eps``.

Decoding is anchored at the configured defaults so that at initialisation the update equals ``optax.adam``'s
bit for bit. The float32 numbers nearest ``log(1e-3)`` or ``logit(0.999)`` do not decode back to ``float32(1e-3)`` or
``float32(0.999)`` (``exp(float32(log 1e-3)) = 0.0009999999``), and float32 ``1 - b2`` loses 4 digits to cancellation
(``1 - float32(0.999) = 0.00099998713``), so we write, with ``delta = x - x_init`` (exactly 0 at init)::

  lr  = lr_0 exp(delta_lr),             eps = eps_0 exp(delta_eps)
  b   = b_0 / (b_0 + (1 - b_0) exp(-delta_b)),   1 - b = (1 - b_0) / ((1 - b_0) + b_0 exp(delta_b))

which are exactly ``exp(x)`` and ``sigmoid(x)``, ``sigmoid(-x)`` as functions of the meta-parameter ``x`` (same values
up to float rounding, same derivatives), with ``lr_0``, ``b_0``, ``1 - b_0`` rounded to float32 from double
precision as optax does. Arithmetic is then in optax's order.

State: optax's (``count``, ``mu``, ``nu``), with ``mu`` and ``nu`` trees shaped like the params, in ``state_dtype``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt import base


class LearnableAdamState(NamedTuple):
  count: jax.Array  # int32, updates so far
  mu: base.Params
  nu: base.Params


@functools.partial(jax.jit, inline=True)
def _bias_correction(decay: jax.Array, count: jax.Array) -> jax.Array:
  """``1 - decay^count`` in float32. Jitted (inlined into any enclosing jit), as optax's is: op-by-op ``pow`` can
  differ from the compiled one by an ulp, which the cancellation in ``1 - 0.999^t`` turns into 1e-5 relative, so this
  keeps eager calls equal to jitted ones (and to optax.adam's)."""
  return 1 - decay ** count


def _sqrt_with_zero_slope_at_zero(x: jax.Array) -> jax.Array:
  """``sqrt(x)`` for ``x >= 0``, with derivative 0 instead of ``inf`` at ``x = 0``.

  A parameter whose gradients have all been exactly 0 (a dead ReLU unit) has ``v = 0``; ``sqrt``'s infinite slope
  there times a zero cotangent would make the meta-gradient NaN. Values are ``jnp.sqrt``'s bit for bit.
  """
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def logit(p: float) -> float:
  """log(p / (1 - p)) in double precision."""
  return math.log(p) - math.log1p(-p)


def anchored_exp(x: jax.Array, x_init: float, value_init: float) -> jax.Array:
  """``exp(x)`` written as ``value_init * exp(x - x_init)``: exactly ``float32(value_init)`` at ``x = x_init``."""
  return jnp.float32(value_init) * jnp.exp(x - jnp.float32(x_init))


def anchored_sigmoid(x: jax.Array, x_init: float, value_init: float) -> tuple[jax.Array, jax.Array]:
  """``(sigmoid(x), sigmoid(-x))``, exactly ``float32(value_init)`` and ``float32(1 - value_init)`` at ``x_init``."""
  delta = x - jnp.float32(x_init)
  b0, one_minus_b0 = jnp.float32(value_init), jnp.float32(1.0 - value_init)
  return (b0 / (b0 + one_minus_b0 * jnp.exp(-delta)),
          one_minus_b0 / (one_minus_b0 + b0 * jnp.exp(delta)))


@dataclasses.dataclass(frozen=True)
class LearnableAdam(base.LearnedOptimizer):
  """Adam whose learning rate, ``b1``, ``b2`` and ``eps`` are meta-parameters; the fields are their initial values.

  At :meth:`init`'s meta-parameters, ``transform(meta_params)`` equals ``optax.adam(learning_rate, b1, b2, eps)``
  (bitwise, tested). ``value`` and other keywords are ignored. ``state_dtype`` is the dtype of ``mu`` and ``nu``
  (``'float32'`` or ``'bfloat16'``, :mod:`lopt.base`), like ``optax.adam``'s ``mu_dtype``.
  """
  name = 'learnable_adam'

  learning_rate: float = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  state_dtype: str = 'float32'

  def __post_init__(self):
    object.__setattr__(self, 'state_dtype', base.state_dtype_name(self.state_dtype, 'LearnableAdam'))
    if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
      raise ValueError(f'LearnableAdam.learning_rate must be positive and finite (it is learned in log space), '
                       f'got {self.learning_rate}.')
    for field in ('b1', 'b2'):
      if not 0.0 < getattr(self, field) < 1.0:
        raise ValueError(f'LearnableAdam.{field} must be in (0, 1) (it is learned as a logit), '
                         f'got {getattr(self, field)}.')
    if not (math.isfinite(self.eps) and self.eps > 0):
      raise ValueError(f'LearnableAdam.eps must be positive and finite (it is learned in log space), got {self.eps}.')

  def init(self, key: jax.Array) -> base.MetaParams:
    del key  # deterministic
    return {
        'log_learning_rate': jnp.asarray(math.log(self.learning_rate), jnp.float32),
        'logit_b1': jnp.asarray(logit(self.b1), jnp.float32),
        'logit_b2': jnp.asarray(logit(self.b2), jnp.float32),
        'log_eps': jnp.asarray(math.log(self.eps), jnp.float32),
    }

  def hyperparameters(self, meta_params: base.MetaParams) -> dict[str, jax.Array]:
    """Decoded ``learning_rate``, ``b1``, ``one_minus_b1``, ``b2``, ``one_minus_b2``, ``eps`` (float32 scalars)."""
    as_f32 = lambda name: jnp.asarray(meta_params[name], jnp.float32)
    b1, one_minus_b1 = anchored_sigmoid(as_f32('logit_b1'), logit(self.b1), self.b1)
    b2, one_minus_b2 = anchored_sigmoid(as_f32('logit_b2'), logit(self.b2), self.b2)
    return {
        'learning_rate': anchored_exp(as_f32('log_learning_rate'), math.log(self.learning_rate), self.learning_rate),
        'b1': b1, 'one_minus_b1': one_minus_b1, 'b2': b2, 'one_minus_b2': one_minus_b2,
        'eps': anchored_exp(as_f32('log_eps'), math.log(self.eps), self.eps),
    }

  def transform(self, meta_params: base.MetaParams) -> optax.GradientTransformationExtraArgs:

    def init_fn(params):
      zeros = lambda p: jnp.zeros(jnp.shape(p), self.state_dtype)
      return LearnableAdamState(count=jnp.zeros([], jnp.int32), mu=jax.tree.map(zeros, params),
                                nu=jax.tree.map(zeros, params))

    def update_fn(grads, state, params=None, *, value=None, **extra_args):
      del value, extra_args
      hp = self.hyperparameters(meta_params)
      grads = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads)
      mu = jax.tree.map(lambda g, m: hp['one_minus_b1'] * g + hp['b1'] * base.from_state(m), grads, state.mu)
      nu = jax.tree.map(lambda g, v: hp['one_minus_b2'] * (g ** 2) + hp['b2'] * base.from_state(v), grads, state.nu)
      count = optax.safe_increment(state.count)
      # Bias corrections as optax computes them: 1 - b^t in float32, t promoted from int32.
      mu_correction = _bias_correction(hp['b1'], count)
      nu_correction = _bias_correction(hp['b2'], count)
      root = _sqrt_with_zero_slope_at_zero
      step = lambda m, v: (m / mu_correction) / (root(v / nu_correction) + hp['eps']) * -hp['learning_rate']
      updates = jax.tree.map(step, mu, nu)
      store = lambda tree: jax.tree.map(lambda x: base.to_state(x, self.state_dtype), tree)
      return base.updates_like(params, jax.tree.leaves(updates)), LearnableAdamState(count=count, mu=store(mu),
                                                                                     nu=store(nu))

    return base.transformation('LearnableAdam', init_fn, update_fn)
