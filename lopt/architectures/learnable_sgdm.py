"""SGD with momentum, with a meta-learnable learning rate and momentum.

The update of ``optax.sgd(learning_rate, momentum)`` (heavy-ball momentum, optax's ``trace``)::

  t <- g + mu t;   update = -lr t

Meta-parameters (float32 scalars): ``log_learning_rate`` = log lr and ``logit_momentum`` = logit mu, initialised from
the fields ``learning_rate`` and ``momentum``. As in :mod:`lopt.architectures.learnable_adam`, decoding is anchored at those
initial values (``lr = lr_0 exp(x - x_0)``, ``mu = mu_0 / (mu_0 + (1 - mu_0) exp(-(x - x_0)))``), which is exactly
``exp`` and ``sigmoid`` of the meta-parameter but reproduces ``optax.sgd(learning_rate, momentum)`` bit for bit at
initialisation (float32 ``exp(float32(log 0.1))`` is ``0.099999994``, not ``float32(0.1)``).

State: the momentum trace, a float32 tree shaped like the params.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt import base
from lopt.architectures.learnable_adam import logit, anchored_exp, anchored_sigmoid


class LearnableSGDMState(NamedTuple):
  trace: base.Params


@dataclasses.dataclass(frozen=True)
class LearnableSGDM(base.LearnedOptimizer):
  """Momentum SGD whose learning rate and momentum are meta-parameters; the fields are their initial values.

  At :meth:`init`'s meta-parameters it equals ``optax.sgd(learning_rate, momentum)`` (bitwise, tested).
  ``value`` and other keywords are ignored. ``state_dtype`` is the dtype of the trace (``'float32'`` or
  ``'bfloat16'``, :mod:`lopt.base`).
  """
  name = 'learnable_sgdm'

  learning_rate: float = 1e-2
  momentum: float = 0.9
  state_dtype: str = 'float32'

  def __post_init__(self):
    object.__setattr__(self, 'state_dtype', base.state_dtype_name(self.state_dtype, 'LearnableSGDM'))
    if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
      raise ValueError(f'LearnableSGDM.learning_rate must be positive and finite (it is learned in log space), '
                       f'got {self.learning_rate}.')
    if not 0.0 < self.momentum < 1.0:
      raise ValueError(f'LearnableSGDM.momentum must be in (0, 1) (it is learned as a logit), got {self.momentum}; '
                       'for plain SGD use optax.sgd.')

  def init(self, key: jax.Array) -> base.MetaParams:
    del key  # deterministic
    return {'log_learning_rate': jnp.asarray(math.log(self.learning_rate), jnp.float32),
            'logit_momentum': jnp.asarray(logit(self.momentum), jnp.float32)}

  def hyperparameters(self, meta_params: base.MetaParams) -> dict[str, jax.Array]:
    """Decoded ``learning_rate`` and ``momentum`` (float32 scalars)."""
    log_lr = jnp.asarray(meta_params['log_learning_rate'], jnp.float32)
    logit_momentum = jnp.asarray(meta_params['logit_momentum'], jnp.float32)
    momentum, _ = anchored_sigmoid(logit_momentum, logit(self.momentum), self.momentum)
    return {'learning_rate': anchored_exp(log_lr, math.log(self.learning_rate), self.learning_rate),
            'momentum': momentum}

  def transform(self, meta_params: base.MetaParams) -> optax.GradientTransformationExtraArgs:

    def init_fn(params):
      return LearnableSGDMState(trace=jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), self.state_dtype), params))

    def update_fn(grads, state, params=None, *, value=None, **extra_args):
      del value, extra_args
      hp = self.hyperparameters(meta_params)
      trace = jax.tree.map(lambda g, t: jnp.asarray(g, jnp.float32) + hp['momentum'] * base.from_state(t), grads,
                           state.trace)
      updates = jax.tree.map(lambda t: t * -hp['learning_rate'], trace)
      stored = jax.tree.map(lambda x: base.to_state(x, self.state_dtype), trace)
      return base.updates_like(params, jax.tree.leaves(updates)), LearnableSGDMState(trace=stored)

    return base.transformation('LearnableSGDM', init_fn, update_fn)
