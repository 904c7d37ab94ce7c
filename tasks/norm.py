"""The p-norm regression problem of Wichrowska et al. 2017 (problem_generator.Norm).

    f(x) = (Σᵢ (|Wx − y|ᵢ + 1e-6)^p)^{1/p},   W ~ N(0, 1)^{n×n},  y ~ N(0, 1)^n,  x ~ N(0, 1)^n.

It is ≥ 0, with minimum ``n^{1/p}·1e-6`` at ``x = W⁻¹y``; the 1e-6 keeps the gradient of ``|·|^p`` finite at 0 for
p < 1 (the original's comment notes p < 1 still gave NaN gradients early in training there, hence p ≥ 1 in its set).
The power is a cfg entry, so one family may sample it (TaskSet: U(0.1, 5)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tasks import base
from tasks import sampling

#: problem_generator.EPSILON
NORM_EPSILON = 1e-6


class Norm(base.Task):
  """``(Σ(|Wx − y| + 1e-6)^p)^{1/p}`` for given ``w`` ([n, n]), ``y`` ([n]) and power ``p``."""

  def __init__(self, w, y, norm_power, name: str = 'norm'):
    self.w, self.y, self.name = w, y, name
    self.norm_power = jnp.asarray(norm_power, jnp.float32)

  def init(self, key):
    return jax.random.normal(key, self.y.shape, jnp.float32)

  def loss(self, params, key, batch):
    del key, batch
    p = self.norm_power
    return jnp.sum((jnp.abs(self.w @ params - self.y) + NORM_EPSILON)**p)**(1.0 / p)


class NormFamily(base.TaskFamily):
  """Norm problems of one dimension; each sample draws fresh ``W, y`` and (if a distribution) the power."""

  def __init__(self, dim: int = 10, norm_power: sampling.Hyperparameter = 2.0):
    if int(dim) != dim or dim < 1:
      raise ValueError(f'NormFamily needs a positive integer dim, got {dim!r}.')
    if isinstance(norm_power, (int, float)) and not norm_power > 0:
      raise ValueError(f'NormFamily needs norm_power > 0, got {norm_power}.')
    self.dim, self.norm_power = int(dim), norm_power
    self.name = f'norm_{self.dim}' + (f'_p{norm_power:g}' if isinstance(norm_power, (int, float)) else '')

  @classmethod
  def sample_structure(cls, key: jax.Array, min_dim: int = 3, max_dim: int = 1000,
                       norm_power: sampling.Hyperparameter = sampling.Uniform(0.1, 5.0)) -> 'NormFamily':
    """TaskSet's norm family: dimension log-uniform in 3..1000 (host), power U(0.1, 5) per sample."""
    return cls(sampling.log_uniform_int(key, min_dim, max_dim), norm_power)

  def sample(self, key):
    w_key, y_key, p_key = jax.random.split(key, 3)
    return {'w': jax.random.normal(w_key, (self.dim, self.dim), jnp.float32),
            'y': jax.random.normal(y_key, (self.dim,), jnp.float32),
            'norm_power': sampling.draw(self.norm_power, p_key)}

  def task(self, cfg):
    return Norm(cfg['w'], cfg['y'], cfg['norm_power'], name=self.name)

  @property
  def structure_key(self):
    return ('norm', self.dim)

  def __repr__(self):
    return f'NormFamily(dim={self.dim}, norm_power={self.norm_power!r})'
