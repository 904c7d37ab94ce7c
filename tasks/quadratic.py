"""Random least-squares quadratics and the 2-D quadratic bowl (Wichrowska et al. 2017, problem_generator.py).

Quadratic(n):  f(x) = ½‖Wx − y‖²,  W ~ N(0, 1)^{n×n},  y ~ N(0, 1)^n,  x ∈ Rⁿ initialised N(0, 1).
Bowl(κ, α):    f(x) = ½‖diag(√κ, 1)·R(α)·x‖²,  x ∈ R² initialised N(0, 1), R(α) the rotation by α.

Both are ≥ 0 with minimum 0 (at W⁻¹y and at the origin), as the log meta-objective of Wichrowska et al. needs.
Every :meth:`QuadraticFamily.sample` draws a fresh (W, y), matching the original's fresh seed per build.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tasks import base
from tasks import sampling


class Quadratic(base.Task):
  """``f(x) = ½‖Wx − y‖²`` for a given ``w`` ([n, n]) and ``y`` ([n]); parameters ``x`` ([n]) start N(0, 1)."""

  def __init__(self, w: jax.Array, y: jax.Array, name: str = 'quadratic'):
    self.w, self.y, self.name = w, y, name

  def init(self, key):
    return jax.random.normal(key, self.y.shape, jnp.float32)

  def loss(self, params, key, batch):
    del key, batch
    residual = self.w @ params - self.y
    return 0.5 * jnp.sum(residual**2)


class QuadraticFamily(base.TaskFamily):
  """Quadratics of one dimension, each sample a fresh ``W, y ~ N(0, 1)``.

  The dimension fixes the shapes, so it is a constructor argument; :meth:`sample_structure` draws it
  log-uniformly (TaskSet: 10..1000) and returns the fixed-structure family, whose samples vmap together.
  """

  def __init__(self, dim: int = 10):
    if int(dim) != dim or dim < 1:
      raise ValueError(f'QuadraticFamily needs a positive integer dim, got {dim!r}.')
    self.dim = int(dim)
    self.name = f'quadratic_{self.dim}'

  @classmethod
  def sample_structure(cls, key: jax.Array, min_dim: int = 10, max_dim: int = 1000) -> 'QuadraticFamily':
    """Draws the dimension log-uniformly in ``[min_dim, max_dim]`` on the host (TaskSet's quadratic family)."""
    return cls(sampling.log_uniform_int(key, min_dim, max_dim))

  def sample(self, key):
    w_key, y_key = jax.random.split(key)
    return {'w': jax.random.normal(w_key, (self.dim, self.dim), jnp.float32),
            'y': jax.random.normal(y_key, (self.dim,), jnp.float32)}

  def task(self, cfg):
    return Quadratic(cfg['w'], cfg['y'], name=self.name)

  @property
  def structure_key(self):
    return ('quadratic', self.dim)

  def __repr__(self):
    return f'QuadraticFamily(dim={self.dim})'


def bowl_matrix(condition_number: jax.Array, angle: jax.Array) -> jax.Array:
  """``diag(√κ, 1)·R(α)``, the square root of the bowl's Hessian ``R(α)ᵀ diag(κ, 1) R(α)``."""
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  rotation = jnp.array([[cos, -sin], [sin, cos]])
  return jnp.array([jnp.sqrt(condition_number), 1.0])[:, None] * rotation


class Bowl(base.Task):
  """``f(x) = ½‖diag(√κ, 1)·R(α)·x‖²`` on ``x ∈ R²``; Hessian eigenvalues κ and 1, minimum 0 at the origin."""

  def __init__(self, condition_number, angle=0.0, name: str = 'bowl'):
    self.condition_number = jnp.asarray(condition_number, jnp.float32)
    self.angle = jnp.asarray(angle, jnp.float32)
    self.name = name

  def init(self, key):
    return jax.random.normal(key, (2,), jnp.float32)

  def loss(self, params, key, batch):
    del key, batch
    return 0.5 * jnp.sum((bowl_matrix(self.condition_number, self.angle) @ params)**2)


class BowlFamily(base.TaskFamily):
  """Bowls with a fixed or sampled condition number ``κ`` and angle ``α`` (cfg holds both as scalars).

  Wichrowska et al. use fixed (κ, α); TaskSet samples κ ~ LogUniform(0.01, 100), α ∈ {0, 0, π/4, π/3}.
  All bowls share one structure, so any mix of them vmaps together.
  """

  def __init__(self, condition_number: sampling.Hyperparameter = 1.0, angle: sampling.Hyperparameter = 0.0):
    if not isinstance(condition_number, sampling.Distribution) and not condition_number > 0:
      raise ValueError(f'Bowl needs condition_number > 0, got {condition_number!r}.')
    self.condition_number, self.angle = condition_number, angle
    self.name = f'bowl_{condition_number}' if isinstance(condition_number, (int, float)) else 'bowl'

  def sample(self, key):
    kappa_key, angle_key = jax.random.split(key)
    return {'condition_number': sampling.draw(self.condition_number, kappa_key),
            'angle': sampling.draw(self.angle, angle_key)}

  def task(self, cfg):
    return Bowl(cfg['condition_number'], cfg['angle'], name=self.name)

  @property
  def structure_key(self):
    return ('bowl',)

  def __repr__(self):
    return f'BowlFamily(condition_number={self.condition_number!r}, angle={self.angle!r})'
