"""Gaussian perturbations of the meta-parameters, shared by the estimators that use them (ES, PES, the hybrid).

Antithetic sampling (docs/algorithms.md §8.3): each instance ``b`` draws ``ε_b ~ N(0, σ² I)`` over all
meta-parameters and runs two *particles* (twins) of the unroll, one with ``θ + ε_b`` and one with ``θ − ε_b``, from
the same inner state and data. The difference of their losses times ``ε_b / (2σ²)`` estimates the gradient of the
Gaussian-smoothed loss; pairing ``±ε`` cancels the even terms of the loss's Taylor expansion, which lowers the
variance against a one-sided estimate. The helpers here draw ``ε``, form the ``[B, 2, ...]`` meta-parameters of the
twins, move between one- and two-particle unroll states and average ``coefficient_b · ε_b`` over instances.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from meta_train.estimators.truncated import TruncatedEstimator
from meta_train.structure_groups import StructureGroups
from meta_train.unroll import VectorizedUnroll

MetaParams = Any


def sample_perturbations(key: jax.Array, meta_params: MetaParams, num_tasks: int, std: float) -> MetaParams:
  """``ε ~ N(0, std² I)`` per instance: a pytree like ``meta_params`` with a leading axis ``num_tasks``."""
  leaves, treedef = jax.tree.flatten(meta_params)
  keys = jax.random.split(key, len(leaves))
  eps = [std * jax.random.normal(k, (num_tasks,) + jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, eps)


def antithetic_meta_params(meta_params: MetaParams, eps: MetaParams) -> MetaParams:
  """``[B, 2, ...]`` meta-parameters: ``θ + ε_b`` (particle 0) and ``θ − ε_b`` (particle 1).

  ``meta_params`` may itself carry a leading ``[B]`` axis (per-instance copies, for per-instance gradients).
  """
  def pair(theta, e):
    theta = jnp.broadcast_to(theta, e.shape)
    return jnp.stack([theta + e, theta - e], axis=1)
  return jax.tree.map(pair, meta_params, eps)


def weighted_tree_mean(coefficients: jax.Array, tree: MetaParams) -> MetaParams:
  """``mean_b coefficients[b] * tree[b]`` for every leaf (leaves ``[B, ...]``)."""
  def combine(x):
    c = jnp.reshape(coefficients, coefficients.shape + (1,) * (x.ndim - 1))
    return jnp.mean(c * x, axis=0)
  return jax.tree.map(combine, tree)


def take_particle(state: Any, particle: int) -> Any:
  """Keeps particle ``particle`` of a ``[B, P, ...]`` state as a ``[B, 1, ...]`` state."""
  return jax.tree.map(lambda x: x[:, particle:particle + 1], state)


def duplicate_particle(state: Any, num_particles: int) -> Any:
  """``[B, 1, ...] -> [B, num_particles, ...]``."""
  return jax.tree.map(lambda x: jnp.repeat(x, num_particles, axis=1), state)


class PerturbedEstimator(TruncatedEstimator):
  """Base of the estimators that perturb the meta-parameters with Gaussian noise of scale σ (ES, PES, hybrid).

  Args:
    unroll: the unrolls to run (see :class:`meta_train.estimators.truncated.TruncatedEstimator`).
    std: the perturbation scale σ (0.01, as in learned_optimization and Metz et al. 2019; docs/algorithms.md §8.3).
  """

  num_particles = 2  # the antithetic twins θ + ε and θ − ε

  def __init__(self, unroll: StructureGroups | VectorizedUnroll, *, std: float = 0.01):
    super().__init__(unroll)
    self.std = check_std(std, type(self).__name__)


def check_std(std: float, name: str) -> float:
  if not (isinstance(std, (int, float)) and not isinstance(std, bool) and std > 0 and np.isfinite(std)):
    raise ValueError(f'{name}: std (the perturbation scale σ) must be a positive number, got {std!r}.')
  return float(std)
