"""The base of the truncated estimators: a per-group rule run over the structure groups of a
:class:`meta_train.structure_groups.StructureGroups`.

An estimator is composed of the unrolls it runs (a :class:`~meta_train.structure_groups.StructureGroups`, or one
:class:`~meta_train.unroll.VectorizedUnroll` for a single group) and its own rule for one group's gradient, so a new
estimator is a subclass that implements :meth:`TruncatedEstimator._init_group` and
:meth:`TruncatedEstimator._estimate_group` and takes only its own arguments (``std`` for the perturbation-based ones)::

    estimator = TruncatedPES(StructureGroups(architecture, families, num_tasks=8, unroll_length=20), std=0.01)

The state is a :class:`TruncatedEstimatorState`: one state per group and the meta-step counter that the truncation
schedules see (shared by the groups, so in ``'sample'`` mode a group drawn late still sees the run's outer step).
The groups' gradients are combined by :meth:`StructureGroups.combine` (weighted sum, or one group drawn by weight).
docs/algorithms.md §8.1 describes the unroll and the structure groups.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meta_train.estimators.base import GradientEstimator
from meta_train.structure_groups import StructureGroups, branch_arg
from meta_train.unroll import VectorizedUnroll

MetaParams = Any


class TruncatedEstimatorState(NamedTuple):
  groups: tuple        # one estimator-specific state per structure group; per-instance leaves are [B, ...]
  meta_step: jax.Array  # int32 scalar: estimate() calls so far (the outer step the truncation schedule sees)


class TruncatedEstimator(GradientEstimator):
  """Runs a per-group rule over structure groups and combines the groups' gradients; see the module docstring.

  Subclasses set :attr:`num_particles`, implement :meth:`_init_group` and :meth:`_estimate_group`, and take their own
  arguments after ``unroll``.

  Args:
    unroll: the unrolls to run: a :class:`meta_train.structure_groups.StructureGroups` (architecture, families,
      ensemble size, unroll length, truncation schedule, objective, group weights and mode), or one
      :class:`meta_train.unroll.VectorizedUnroll` (a single structure group).
  """

  num_particles: int = 1

  def __init__(self, unroll: StructureGroups | VectorizedUnroll):
    if isinstance(unroll, VectorizedUnroll):
      unroll = StructureGroups.of(unroll)
    if not isinstance(unroll, StructureGroups):
      raise TypeError(f'{type(self).__name__} takes a meta_train.StructureGroups or a meta_train.VectorizedUnroll '
                      f'(the unrolls it runs), got {type(unroll).__name__}: {unroll!r}. Build one with '
                      'StructureGroups(architecture, families, num_tasks, ...).')
    self.groups = unroll

  # The groups' attributes, for the trainer (num_branches, sample_branch) and for readers of the estimator.
  architecture = property(lambda self: self.groups.architecture)
  num_tasks = property(lambda self: self.groups.num_tasks)
  unrolls = property(lambda self: self.groups.unrolls)
  group_weights = property(lambda self: self.groups.weights)
  group_mode = property(lambda self: self.groups.mode)
  num_branches = property(lambda self: self.groups.num_branches)

  @abc.abstractmethod
  def _init_group(self, unroll: VectorizedUnroll, key: jax.Array, meta_params: MetaParams) -> Any:
    """The persistent state of one group."""

  @abc.abstractmethod
  def _estimate_group(self, unroll: VectorizedUnroll, meta_params: MetaParams, state: Any, key: jax.Array,
                      meta_step: jax.Array) -> tuple[MetaParams, Any, dict[str, jax.Array]]:
    """One truncation of one group: ``(grad, new_state, metrics)``."""

  def init(self, key, meta_params):
    keys = jax.random.split(key, len(self.unrolls))
    groups = tuple(self._init_group(u, k, meta_params) for u, k in zip(self.unrolls, keys))
    return TruncatedEstimatorState(groups=groups, meta_step=jnp.zeros((), jnp.int32))

  def sample_branch(self, key) -> int:
    """On the host: the structure group ``estimate(..., key)`` trains in ``'sample'`` mode (0 in ``'all'``)."""
    return self.groups.sample_branch(key)

  def estimate(self, meta_params, state, key, branch: int | None = None):
    fns = [lambda s, k, u=u: self._estimate_group(u, meta_params, s, k, state.meta_step) for u in self.unrolls]
    grad, groups, metrics = self.groups.combine(fns, tuple(state.groups), key, branch_arg(self, branch))
    return grad, TruncatedEstimatorState(groups=groups, meta_step=state.meta_step + 1), metrics
