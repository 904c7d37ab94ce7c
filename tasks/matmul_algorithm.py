"""Searching for a matrix-multiplication algorithm (Wichrowska et al. 2017, problem_generator.MatMulAlgorithm).

For n×n matrices and k scalar multiplications, θ_a, θ_b ∈ R^{n²×k} and θ_c ∈ R^{k×n²} define the bilinear algorithm

    vec(C) = ((vec(A)·θ_a) ⊙ (vec(B)·θ_b))·θ_c,

which multiplies every pair of matrices iff it multiplies every pair of one-hot matrices (bilinearity). Stacking
those n⁴ pairs as rows gives P = (A·θ_a) ⊙ (B·θ_b) ∈ R^{n⁴×k}; θ_c is eliminated by least squares,
θ_c = (PᵀP)⁻¹PᵀC, and the objective is the residual sum of squares ‖P·θ_c − C‖² ≥ 0. A zero is an exact algorithm:
for n = 2 they exist for k ≥ 7 (Strassen) but not k ≤ 6; for n = 3, for 23 ≤ k ≤ 27.

Only θ_a, θ_b are parameters, initialised N(0, 1) with every column normalised to unit L2 norm. There is no random
instance data, so :class:`MatMulAlgorithmFamily` samples an empty cfg.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tasks import base


def one_hot_products(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """All n⁴ pairs of one-hot n×n matrices (rows of ``a``, ``b``, flattened) and their products ``c``."""
  one_hots = np.eye(n * n).reshape(n * n, n, n)
  a = np.repeat(one_hots, n * n, axis=0)
  b = np.tile(one_hots, (n * n, 1, 1))
  c = a @ b
  return tuple(m.reshape(n**4, n * n).astype(np.float32) for m in (a, b, c))


class MatMulAlgorithm(base.Task):
  """The least-squares residual of the best θ_c for given θ_a, θ_b (see the module docstring)."""

  def __init__(self, n: int, k: int):
    if int(n) != n or n < 2:
      raise ValueError(f'MatMulAlgorithm needs an integer n >= 2, got {n!r}.')
    if int(k) != k or not n**2 <= k <= n**3:
      raise ValueError(f'MatMulAlgorithm needs an integer k with n² <= k <= n³ ({n**2}..{n**3}), got {k!r}.')
    self.n, self.k = int(n), int(k)
    self.name = f'matmul_{self.n}_k{self.k}'

  def init(self, key):
    def unit_columns(key):
      x = jax.random.normal(key, (self.n**2, self.k), jnp.float32)
      return x / jnp.linalg.norm(x, axis=0, keepdims=True)
    a_key, b_key = jax.random.split(key)
    return {'theta_a': unit_columns(a_key), 'theta_b': unit_columns(b_key)}

  def loss(self, params, key, batch):
    del key, batch
    a, b, c = (jnp.asarray(m) for m in one_hot_products(self.n))
    p = (a @ params['theta_a']) * (b @ params['theta_b'])
    theta_c = jnp.linalg.solve(p.T @ p, p.T @ c)
    return jnp.sum((p @ theta_c - c)**2)


class MatMulAlgorithmFamily(base.TaskFamily):
  """The fixed MatMulAlgorithm(n, k) problem; only its initial parameters are random."""

  def __init__(self, n: int, k: int):
    self._task = MatMulAlgorithm(n, k)
    self.n, self.k, self.name = self._task.n, self._task.k, self._task.name

  def sample(self, key):
    del key
    return jnp.zeros((0,), jnp.float32)

  def task(self, cfg):
    del cfg
    return self._task

  @property
  def structure_key(self):
    return ('matmul_algorithm', self.n, self.k)

  def __repr__(self):
    return f'MatMulAlgorithmFamily(n={self.n}, k={self.k})'
