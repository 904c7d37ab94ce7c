"""Structure groups: which task families share an unroll, and how the groups' meta-gradients are combined.

Task families with equal ``structure_key`` build tasks of one parameter structure, so their instances vmap together
in one :class:`meta_train.unroll.VectorizedUnroll`; :func:`group_by_structure` splits a run's families into such
groups. :class:`StructureGroups` builds one unroll per group (``num_tasks`` instances each) and combines the groups'
gradients with stated weights ``w_g`` (normalised to sum 1)::

    'all':    grad = sum_g w_g grad_g                  (every group advances every call)
    'sample': grad = grad_G,  G ~ Categorical(w)        (unbiased for the same sum; only group G advances)

Every estimator of :mod:`meta_train.estimators` takes a :class:`StructureGroups` (or a single unroll) and adds only
its own rule for one group's gradient. :class:`MultiTaskEstimator` combines arbitrary estimators (e.g. a different
estimator per group) the same way.

Compilation of sampled groups: in ``'sample'`` mode the group of a call is a *host-sampled branch* (see
:mod:`meta_train.estimators.base`): ``sample_branch(key)`` draws it on the host and ``estimate(..., key, branch=g)``
traces only group ``g``, so the trainer compiles each group's step once, the first time it is drawn, instead of one
program holding every group's unroll behind a ``lax.switch`` (87 groups for the Wichrowska 2017 set). ``estimate``
without ``branch`` still draws the group inside the program, and both draw the same group from the same key
(:func:`branch_thresholds`).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from meta_train.estimators.base import GradientEstimator
from meta_train.objectives import MetaObjective
from meta_train.truncation_schedules import TruncationSchedule
from meta_train.unroll import VectorizedUnroll
from tasks.base import TaskFamily


def group_indices(families: TaskFamily | Sequence[TaskFamily]) -> list[list[int]]:
  """The structure groups of ``families`` as lists of indices into it: families with equal ``structure_key``, groups
  in order of first appearance, members in their order."""
  if isinstance(families, TaskFamily):
    families = [families]
  families = list(families)
  if not families:
    raise ValueError('families is empty: give at least one tasks.TaskFamily.')
  groups: dict[Any, list[int]] = {}
  for i, family in enumerate(families):
    if not isinstance(family, TaskFamily):
      raise TypeError(f'families must hold tasks.TaskFamily objects, got {type(family).__name__}: {family!r}.')
    groups.setdefault(family.structure_key, []).append(i)
  return list(groups.values())


def group_by_structure(families: TaskFamily | Sequence[TaskFamily]) -> list[list[TaskFamily]]:
  """Groups ``families`` by ``structure_key`` (first-appearance order); members of a group vmap together."""
  families = [families] if isinstance(families, TaskFamily) else list(families)
  return [[families[i] for i in group] for group in group_indices(families)]


# -----------------------------------------------------------------------------------------------------------------
# Combining structure groups or estimators.

_SUMMED_METRICS = ('inner_nonfinite_resets', 'episode_resets')


def check_weights(weights, count: int, what: str) -> np.ndarray:
  weights = np.asarray([1.0] * count if weights is None else weights, np.float64)
  if weights.shape != (count,) or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
    raise ValueError(f'{what}: need {count} non-negative weights with a positive sum, got '
                     f'{np.asarray(weights).tolist()}.')
  return weights / weights.sum()


def branch_thresholds(weights: np.ndarray) -> tuple[int, ...]:
  """The integer thresholds that turn 32 random bits into a draw of one of ``len(weights)`` branches.

  With ``c_i = (w_0 + ... + w_i) / sum(w)``, threshold ``i`` is ``t_i = round(2^32 c_i)`` for ``i < n - 1``, and
  the branch of bits ``u`` (uniform on ``[0, 2^32)``) is ``g(u) = #{i : t_i <= u}``, so ``P(g) = (t_g - t_{g-1}) /
  2^32 = w_g / sum(w)`` up to ``2^-32``. A threshold equal to ``2^32`` is never reached and is dropped (trailing
  zero weights). The draw is integer arithmetic on bits from ``jax.random.bits``, so the host and a jitted program
  compute the same branch from the same key (a float draw such as ``jax.random.categorical`` could round
  differently once fused into a large program).
  """
  cumulative = np.cumsum(np.asarray(weights, np.float64))
  cumulative = cumulative / cumulative[-1]
  thresholds = np.round(cumulative[:-1] * 2.0**32).astype(np.int64)
  return tuple(int(t) for t in thresholds if t < 2**32)


@functools.partial(jax.jit, static_argnums=1)
def _draw_bits(key: jax.Array, num_branches: int) -> jax.Array:
  """The 32 bits that choose the branch of a call with key ``key``: from the last of the ``num_branches + 1`` keys
  :func:`combine` splits ``key`` into (the others are the branches' own keys)."""
  return jax.random.bits(jax.random.split(key, num_branches + 1)[-1], (), jnp.uint32)


def sample_branch_on_host(key: jax.Array, num_branches: int, thresholds: Sequence[int]) -> int:
  """The branch :func:`combine` draws in ``'sample'`` mode from ``key``, computed on the host (a Python int)."""
  if isinstance(key, jax.core.Tracer):
    raise TypeError('sample_branch draws on the host and needs a concrete PRNG key, not a traced one; under jit, '
                    'call estimate() without branch= (it then draws the branch inside the program).')
  bits = int(_draw_bits(key, num_branches))
  return sum(bits >= t for t in thresholds)


def combine(estimate_fns: Sequence[Callable], states: tuple, key: jax.Array, weights: np.ndarray, mode: str,
             branch: int | None = None):
  """Runs each ``estimate_fn(state, key) -> (grad, state, metrics)`` ('all') or one drawn by weight ('sample').

  'all': ``grad = sum_g w_g grad_g``; metrics are weighted means, except counts, which are summed.
  'sample': group ``g`` is drawn with probability ``w_g`` and its gradient returned unweighted, an unbiased
  estimate of the same weighted sum at a fraction of the cost (only the drawn group's instances advance). With
  ``branch=None`` the draw happens inside the program (a ``lax.switch`` over every group, all of them traced);
  with ``branch = sample_branch_on_host(key, ...)`` (a static int) only that group is traced, with the same result.
  """
  keys = jax.random.split(key, len(estimate_fns) + 1)
  if branch is not None:
    if mode != 'sample':
      raise ValueError(f"branch= is only meaningful in 'sample' mode (this estimator combines in {mode!r} mode).")
    g = operator.index(branch)
    if not 0 <= g < len(estimate_fns):
      raise ValueError(f'branch must be in [0, {len(estimate_fns)}), got {branch!r}.')
    grad, new_state, metrics = estimate_fns[g](states[g], keys[g])
    return grad, tuple(new_state if i == g else s for i, s in enumerate(states)), metrics
  if mode == 'all':
    results = [fn(s, k) for fn, s, k in zip(estimate_fns, states, keys)]
    grad = jax.tree.map(lambda *g: sum(w * x for w, x in zip(weights, g)), *[r[0] for r in results])
    metrics = {}
    for name in results[0][2]:
      values = [r[2][name] for r in results]
      metrics[name] = sum(values) if name in _SUMMED_METRICS else sum(w * v for w, v in zip(weights, values))
    return grad, tuple(r[1] for r in results), metrics

  def branch(g):
    def run(states):
      grad, new_state, metrics = estimate_fns[g](states[g], keys[g])
      new_states = tuple(new_state if i == g else s for i, s in enumerate(states))
      return grad, new_states, metrics
    return run

  thresholds = branch_thresholds(weights)
  bits = _draw_bits(key, len(estimate_fns))  # = jax.random.bits(keys[-1]), as sample_branch_on_host draws
  chosen = jnp.sum(bits >= jnp.asarray(thresholds, jnp.uint32)) if thresholds else 0
  return jax.lax.switch(chosen, [branch(g) for g in range(len(estimate_fns))], states)


def branch_arg(estimator, branch: int | None) -> int | None:
  """``branch`` for :func:`combine`; ``branch=0`` of a one-branch estimator is accepted and means the usual call."""
  if branch is not None and estimator.num_branches == 1:
    if operator.index(branch) != 0:
      raise ValueError(f'{type(estimator).__name__} has one branch (not in sample mode); got branch={branch!r}.')
    return None
  return branch


class StructureGroups:
  """The unrolls an estimator runs: one :class:`meta_train.unroll.VectorizedUnroll` per structure group, and the rule
  that combines their meta-gradients (see the module docstring).

  This is where the arguments shared by every truncated estimator live; an estimator takes a ``StructureGroups`` (or
  one ``VectorizedUnroll``, a single group) plus its own arguments::

      groups = StructureGroups(architecture, families, num_tasks=8, unroll_length=20)
      estimator = TruncatedPES(groups, std=0.01)

  Args:
    architecture: the :class:`lopt.LearnedOptimizer` being meta-trained.
    families: a :class:`tasks.TaskFamily` or a sequence of them (e.g. a problem set's families). They are grouped
      by ``structure_key``; each group gets ``num_tasks`` instances and is compiled once.
    num_tasks: instances per structure group (the ensemble axis ``B`` of every per-instance state array).
    truncation_schedule: episode lengths (default ``ConstantTruncation(100)``).
    objective: the meta-objective (default :class:`meta_train.objectives.LogNormalizedTrainLoss`).
    unroll_length: inner steps per truncation, i.e. per ``estimate`` call (static).
    use_valid_loss: pass an inner-valid loss as ``valid_value=`` to the optimizer (off by default; one extra
      forward pass per step).
    stagger: start instances at random offsets into their first episode.
    second_derivatives: differentiate through the inner gradient too (True); False stops it (the first-order
      approximation; matters only to estimators that backpropagate through the unroll: truncated backprop and the
      reparameterization half of the hybrid).
    group_weights: weight of each structure group's gradient, in group order (default: proportional to the number
      of families in the group, so the mixture matches drawing a family uniformly, as Wichrowska et al. did).
    family_weights: instead of ``group_weights``, one weight (> 0) per family, in the order of ``families``; each
      family's share of the meta-gradient is then ``w_f / sum(w)``. A group's weight is the sum of its members', and
      each instance of a group draws its family with probability proportional to the members' weights
      (``VectorizedUnroll``'s ``family_weights``), so a family that shares a group still gets its own share. A run
      config's ``tasks.weights`` (weights by problem name) arrives here. All weights equal is the default.
    group_mode: ``'all'`` (every group every call, gradients combined with the weights) or ``'sample'`` (one group
      per call, drawn by weight). In ``'sample'`` mode the groups are host-sampled branches (see
      :mod:`meta_train.estimators.base`): ``estimate(..., branch=sample_branch(key))`` traces only the drawn group,
      so the trainer compiles each group once, when first drawn; ``estimate`` without ``branch`` draws the same group
      inside the program.
  """

  def __init__(self, architecture, families: TaskFamily | Sequence[TaskFamily], num_tasks: int,
               truncation_schedule: TruncationSchedule | None = None, objective: MetaObjective | None = None, *,
               unroll_length: int = 20, use_valid_loss: bool = False, stagger: bool = True,
               second_derivatives: bool = True, group_weights: Sequence[float] | None = None,
               group_mode: str = 'all', family_weights: Sequence[float] | None = None):
    families = [families] if isinstance(families, TaskFamily) else list(families)
    indices = group_indices(families)
    groups = [[families[i] for i in g] for g in indices]
    if group_mode not in ('all', 'sample'):
      raise ValueError(f"group_mode must be 'all' or 'sample', got {group_mode!r}.")
    members: list[list[float] | None] = [None] * len(groups)  # per group: its families' draw weights (None: uniform)
    if family_weights is not None:
      if group_weights is not None:
        raise ValueError('give group_weights or family_weights, not both.')
      per_family = np.asarray(family_weights, np.float64)
      if per_family.shape != (len(families),) or not np.all(np.isfinite(per_family)) or np.any(per_family <= 0):
        raise ValueError(f'family_weights: need {len(families)} positive weights, one per family, got '
                         f'{np.asarray(family_weights).tolist()}.')
      group_weights = [float(per_family[g].sum()) for g in indices]
      # Equal weights within a group are the uniform draw; leaving them out keeps that draw's numbers bitwise.
      members = [None if len(set(per_family[g].tolist())) == 1 else per_family[g].tolist() for g in indices]
    if group_weights is None:
      group_weights = [len(g) for g in groups]
    weights = check_weights(group_weights, len(groups), f'group_weights ({len(groups)} structure groups)')
    unrolls = [
        VectorizedUnroll(architecture, g, num_tasks, unroll_length, truncation_schedule, objective,
                         use_valid_loss=use_valid_loss, second_derivatives=second_derivatives, stagger=stagger,
                         family_weights=m)
        for g, m in zip(groups, members)]
    self._set(unrolls, weights, group_mode)

  @classmethod
  def of(cls, unroll: VectorizedUnroll) -> StructureGroups:
    """One group: ``unroll`` itself, weight 1."""
    if not isinstance(unroll, VectorizedUnroll):
      raise TypeError(f'StructureGroups.of takes a VectorizedUnroll, got {type(unroll).__name__}.')
    groups = cls.__new__(cls)
    groups._set([unroll], np.ones(1), 'all')  # pylint: disable=protected-access
    return groups

  def _set(self, unrolls: list[VectorizedUnroll], weights: np.ndarray, mode: str) -> None:
    self.unrolls = unrolls
    self.weights = weights
    self.mode = mode
    self.architecture = unrolls[0].architecture
    self.num_tasks = unrolls[0].num_tasks
    self.num_branches = len(unrolls) if mode == 'sample' else 1
    self._thresholds = branch_thresholds(weights)

  def sample_branch(self, key) -> int:
    """On the host: the group a call with ``key`` trains in ``'sample'`` mode (0 in ``'all'``)."""
    if self.num_branches == 1:
      return 0
    return sample_branch_on_host(key, len(self.unrolls), self._thresholds)

  def combine(self, estimate_fns: Sequence[Callable], states: tuple, key: jax.Array, branch: int | None = None):
    """:func:`combine` with these groups' weights and mode; ``estimate_fns[g](state_g, key_g)`` runs group ``g``."""
    return combine(estimate_fns, states, key, self.weights, self.mode, branch)

  def __repr__(self) -> str:
    return (f'StructureGroups({len(self.unrolls)} groups, num_tasks={self.num_tasks}, '
            f'unroll_length={self.unrolls[0].unroll_length}, mode={self.mode!r})')


class MultiTaskEstimator(GradientEstimator):
  """Combines several estimators (e.g. one per structure group of a mixed ensemble) into one.

  ``grad = sum_i w_i grad_i`` with ``w`` = ``weights`` normalised to sum 1 (mode ``'all'``), or with ``'sample'`` one
  estimator drawn per call with probability ``w_i`` (unbiased for the same sum; only that estimator's instances
  advance). In ``'all'`` mode everything runs inside one jit, so each estimator's unroll is traced and compiled
  once. In ``'sample'`` mode the estimators are host-sampled branches (:attr:`num_branches`, :meth:`sample_branch`,
  ``estimate(..., branch=i)``): the trainer compiles one step per estimator, the first time it is drawn. (A
  sampled estimator that samples groups itself draws them inside the program.)
  The state is the tuple of the estimators' states. ``meta_loss`` is the weighted mean of the estimators';
  ``inner_nonfinite_resets`` is summed.

  Args:
    estimators: the :class:`meta_train.GradientEstimator` objects to combine (at least one).
    weights: one non-negative weight per estimator (default equal).
    mode: ``'all'`` or ``'sample'``.
  """

  def __init__(self, estimators: Sequence[GradientEstimator], weights: Sequence[float] | None = None,
               mode: str = 'all'):
    estimators = list(estimators)
    if not estimators:
      raise ValueError('MultiTaskEstimator needs at least one estimator.')
    if mode not in ('all', 'sample'):
      raise ValueError(f"MultiTaskEstimator: mode must be 'all' or 'sample', got {mode!r}.")
    self.estimators = estimators
    self.weights = check_weights(weights, len(estimators), 'MultiTaskEstimator weights')
    self.mode = mode
    self.num_branches = len(estimators) if mode == 'sample' else 1
    self._thresholds = branch_thresholds(self.weights)

  def init(self, key, meta_params):
    keys = jax.random.split(key, len(self.estimators))
    return tuple(e.init(k, meta_params) for e, k in zip(self.estimators, keys))

  def sample_branch(self, key) -> int:
    """On the host: the index of the estimator ``estimate(..., key)`` runs in ``'sample'`` mode (0 in ``'all'``)."""
    if self.num_branches == 1:
      return 0
    return sample_branch_on_host(key, len(self.estimators), self._thresholds)

  def estimate(self, meta_params, state, key, branch: int | None = None):
    fns = [lambda s, k, e=e: e.estimate(meta_params, s, k) for e in self.estimators]
    grad, states, metrics = combine(fns, tuple(state), key, self.weights, self.mode, branch_arg(self, branch))
    return grad, states, metrics
