"""The vectorized truncated unroll every estimator is built on, and the structure-group machinery.

:class:`VectorizedUnroll` advances ``B`` task instances of one *structure group* (task families with equal
``structure_key``, which vmap together) by ``T`` inner steps in one ``lax.scan``. Every instance has its own task
configuration, inner parameters, inner optimizer state, step counter and episode length. Each instance carries ``P``
*particles*: copies that see the same task, data and resets but may use different meta-parameters (``P = 2`` holds
the ``+ε``/``−ε`` twins of antithetic ES and PES). Every array of :class:`UnrollState` has shape ``[B, P, ...]``:
the ensemble axis comes first, so the state can be sharded over devices along it.

One inner step of one particle (``tx = architecture.transform(meta_params)``)::

    batch = task.batch(k, 'train');  f_t, g = value_and_grad(task.loss)(phi, k', batch)
    updates, opt_state = tx.update(g, opt_state, phi, value=f_t[, valid_value=inner-valid loss])
    phi = phi + updates;  v_t = objective.step_value(...)

Episodes: at the start of a step, an instance whose counter reached its episode length is reset (inside the jit):
a family is drawn from the group, a configuration from that family, fresh parameters from ``task.init``, a fresh
optimizer state from ``tx.init``, and a new episode length from the truncation schedule. An instance whose training
loss, objective value or parameters become non-finite is reset at the next step in the same way, and counted. The
twins of an instance always reset together, so their trajectories stay comparable.

Staggering: :meth:`VectorizedUnroll.init` starts each instance's counter at a uniform random offset in
``[0, length)``, so the instances of an ensemble reach their episode ends at different meta-steps instead of in
lockstep (the parameters are fresh; only the reset times are staggered).

:class:`TruncatedEstimator` is the base of the estimators: it splits a list of families into structure groups,
gives each group ``num_tasks`` instances, and combines the groups' meta-gradients with stated weights.
:class:`MultiTaskEstimator` combines arbitrary estimators (e.g. a different estimator per group) the same way.

Compilation of sampled groups: in ``'sample'`` mode the group of a call is a *host-sampled branch* (see
:mod:`meta_train.base`): ``sample_branch(key)`` draws it on the host and ``estimate(..., key, branch=g)`` traces
only group ``g``, so the trainer compiles each group's step once, the first time it is drawn, instead of one program
holding every group's unroll behind a ``lax.switch`` (87 groups for the Wichrowska 2017 set: tens of minutes of
compilation before the first step). ``estimate`` without ``branch`` still draws the group inside the program, and
both draw the same group from the same key (:func:`branch_thresholds`).
"""

from __future__ import annotations

import abc
import functools
import operator
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from meta_train.base import GradientEstimator
from meta_train.objectives import LogNormalizedTrainLoss, MetaObjective
from meta_train.truncation_schedules import ConstantTruncation, TruncationSchedule
from tasks.base import TaskFamily

MetaParams = Any


class UnrollState(NamedTuple):
  """Per-instance, per-particle state of a structure group. Every leaf has shape ``[B, P, ...]``."""
  params: Any               # inner parameters
  opt_state: Any            # inner optimizer state
  cfg: Any                  # task configuration (from TaskFamily.sample)
  family_index: jax.Array   # int32: which family of the group the configuration came from
  step: jax.Array           # int32: inner steps taken in the current episode
  length: jax.Array         # int32: the current episode's length
  start_loss: jax.Array     # float32: training loss at the episode's first step (for normalised objectives)


class UnrollOutput(NamedTuple):
  """What one truncation of ``T`` steps produced (leading axis ``T``)."""
  values: jax.Array          # [T, B, P] objective values v_t (0 where not valid)
  valid: jax.Array           # [T, B] bool: the step's values are finite for every particle
  before_reset: jax.Array    # [T, B] bool: the step belongs to the episode running when the truncation began
  train_loss: jax.Array      # [T, B, P] training loss before each update
  nonfinite_reset: jax.Array  # [T, B] bool: the instance went non-finite at this step (reset at the next one)
  episode_reset: jax.Array   # [T, B] bool: the instance was reset at the start of this step


def group_by_structure(families: TaskFamily | Sequence[TaskFamily]) -> list[list[TaskFamily]]:
  """Groups ``families`` by ``structure_key`` (first-appearance order); members of a group vmap together."""
  if isinstance(families, TaskFamily):
    families = [families]
  families = list(families)
  if not families:
    raise ValueError('families is empty: give at least one tasks.TaskFamily.')
  groups: dict[Any, list[TaskFamily]] = {}
  for family in families:
    if not isinstance(family, TaskFamily):
      raise TypeError(f'families must hold tasks.TaskFamily objects, got {type(family).__name__}: {family!r}.')
    groups.setdefault(family.structure_key, []).append(family)
  return list(groups.values())


def select_instances(mask: jax.Array, new: Any, old: Any) -> Any:
  """``new`` where ``mask`` (shape ``[B]``), else ``old``, leaf by leaf (leaves ``[B, ...]``)."""
  def select(n, o):
    return jnp.where(jnp.reshape(mask, mask.shape + (1,) * (jnp.ndim(o) - mask.ndim)), n, o)
  return jax.tree.map(select, new, old)


def _broadcast_particles(tree: Any, num_particles: int) -> Any:
  """``[B, ...] -> [B, P, ...]`` by repetition."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], num_particles) + x.shape[1:]), tree)


def _all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.asarray(leaves)) if leaves else jnp.asarray(True)


class VectorizedUnroll:
  """Unrolls ``num_tasks`` instances of one structure group; see the module docstring.

  Args:
    architecture: the :class:`lopt.LearnedOptimizer` being meta-trained (only ``transform`` is used).
    families: task families with one common ``structure_key``. At every reset an instance draws its family from
      them with probabilities ``family_weights`` (uniform by default), then a configuration from that family. The
      group's first family builds every task: families of one structure build the same task from the same
      configuration, and differ only in how they sample it.
    num_tasks: ``B``, the number of instances.
    unroll_length: ``T``, inner steps per truncation (static: the length of the ``lax.scan``).
    truncation_schedule: draws each episode's length (default ``ConstantTruncation(100)``).
    objective: the meta-objective (default :class:`LogNormalizedTrainLoss`).
    use_valid_loss: also pass an inner-valid loss as ``valid_value=`` to the optimizer (one extra forward pass per
      step on a batch of the ``'inner_valid'`` split), for optimizers with validation features (Metz et al. 2020).
    second_derivatives: if False, the inner gradient is ``stop_gradient``-ed, which removes its dependence on the
      meta-parameters (the first-order approximation of Andrychowicz et al. 2016). Matters only when
      differentiating through the unroll.
    stagger: start instances at random offsets into their first episode (see module docstring).
    family_weights: sampling probabilities of ``families`` (normalised here); default uniform.
  """

  def __init__(self, architecture, families: Sequence[TaskFamily], num_tasks: int, unroll_length: int,
               truncation_schedule: TruncationSchedule | None = None, objective: MetaObjective | None = None,
               use_valid_loss: bool = False, second_derivatives: bool = True, stagger: bool = True,
               family_weights: Sequence[float] | None = None):
    families = list(families)
    if not families:
      raise ValueError('VectorizedUnroll needs at least one task family.')
    keys = {f.structure_key for f in families}
    if len(keys) != 1:
      raise ValueError(f'VectorizedUnroll: the families have {len(keys)} different structure keys; group them with '
                       'group_by_structure() and build one unroll per group.')
    for name, value in (('num_tasks', num_tasks), ('unroll_length', unroll_length)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an integer >= 1, got {value!r}.')
    if family_weights is None:
      family_weights = [1.0] * len(families)
    family_weights = np.asarray(family_weights, np.float64)
    if family_weights.shape != (len(families),) or not np.all(family_weights >= 0) or family_weights.sum() <= 0:
      raise ValueError(f'family_weights must be {len(families)} non-negative numbers with a positive sum, got '
                       f'{family_weights.tolist()}.')
    self.architecture = architecture
    self.families = families
    self.num_tasks = num_tasks
    self.unroll_length = unroll_length
    self.truncation_schedule = truncation_schedule or ConstantTruncation(100)
    self.objective = objective or LogNormalizedTrainLoss()
    self.use_valid_loss = use_valid_loss
    self.second_derivatives = second_derivatives
    self.stagger = stagger
    self.family_log_weights = np.log(family_weights / family_weights.sum()).astype(np.float32)
    self._check_family_structures()

  def _check_family_structures(self) -> None:
    """Families of one group must sample configurations of one structure (lax.switch needs it)."""
    key = jax.random.key(0)
    reference = jax.eval_shape(self.families[0].sample, key)
    for family in self.families[1:]:
      shape = jax.eval_shape(family.sample, key)
      if jax.tree.structure(shape) != jax.tree.structure(reference) or any(
          (a.shape, a.dtype) != (b.shape, b.dtype) for a, b in zip(jax.tree.leaves(shape), jax.tree.leaves(reference))):
        raise ValueError(f'families {self.families[0]!r} and {family!r} have the same structure_key but sample '
                         f'configurations of different shapes:\n  {reference}\n  {shape}')

  # ---------------------------------------------------------------------------------------------------------------
  # Fresh instances.

  def _sample_cfg(self, key: jax.Array) -> tuple[jax.Array, Any]:
    if len(self.families) == 1:
      return jnp.zeros((), jnp.int32), self.families[0].sample(key)
    choice_key, cfg_key = jax.random.split(key)
    index = jax.random.categorical(choice_key, jnp.asarray(self.family_log_weights)).astype(jnp.int32)
    return index, jax.lax.switch(index, [f.sample for f in self.families], cfg_key)

  def _fresh(self, key: jax.Array, meta_step: jax.Array):
    """A fresh instance (unbatched): family index, configuration, parameters, episode length."""
    cfg_key, init_key, length_key = jax.random.split(key, 3)
    index, cfg = self._sample_cfg(cfg_key)
    params = self.families[0].task(cfg).init(init_key)
    length = jnp.maximum(self.truncation_schedule.sample(length_key, meta_step), 1).astype(jnp.int32)
    return index, cfg, params, length

  def _opt_init(self, meta_params: MetaParams, params: Any, per_particle: bool) -> Any:
    """Optimizer states ``[B, P, ...]`` for parameters ``[B, P, ...]``."""
    def init_one(meta, p):
      return self.architecture.transform(meta).init(p)
    inner = jax.vmap(init_one, in_axes=(0 if per_particle else None, 0))
    return jax.vmap(inner, in_axes=(0 if per_particle else None, 0))(meta_params, params)

  def init(self, key: jax.Array, meta_params: MetaParams, num_particles: int = 1,
           meta_step: jax.Array | int = 0) -> UnrollState:
    """Fresh instances with staggered counters; ``meta_params`` are shared (unbatched)."""
    fresh_key, offset_key, loss_key = jax.random.split(key, 3)
    meta_step = jnp.asarray(meta_step, jnp.int32)
    index, cfg, params, length = jax.vmap(self._fresh, in_axes=(0, None))(
        jax.random.split(fresh_key, self.num_tasks), meta_step)
    if self.stagger:
      step = jax.random.randint(offset_key, (self.num_tasks,), 0, jnp.iinfo(jnp.int32).max) % length
    else:
      step = jnp.zeros((self.num_tasks,), jnp.int32)

    def start_loss(cfg, params, key):
      task = self.families[0].task(cfg)
      batch_key, loss_key = jax.random.split(key)
      return task.loss(params, loss_key, task.batch(batch_key, 'train')).astype(jnp.float32)

    # A staggered instance never passes through step 0 of its first episode, so its normaliser is measured here.
    loss0 = jax.vmap(start_loss)(cfg, params, jax.random.split(loss_key, self.num_tasks))
    per_instance = (index, cfg, params, step, length, loss0)
    index, cfg, params, step, length, loss0 = _broadcast_particles(per_instance, num_particles)
    opt_state = self._opt_init(meta_params, params, per_particle=False)
    return UnrollState(params=params, opt_state=opt_state, cfg=cfg, family_index=index, step=step, length=length,
                       start_loss=loss0)

  def _reset(self, state: UnrollState, done: jax.Array, key: jax.Array, meta_params: MetaParams,
             meta_step: jax.Array, per_particle: bool) -> UnrollState:
    num_particles = state.step.shape[1]
    index, cfg, params, length = jax.vmap(self._fresh, in_axes=(0, None))(
        jax.random.split(key, self.num_tasks), meta_step)
    index, cfg, params, length = _broadcast_particles((index, cfg, params, length), num_particles)
    opt_state = self._opt_init(meta_params, params, per_particle)
    fresh = UnrollState(params=params, opt_state=opt_state, cfg=cfg, family_index=index,
                        step=jnp.zeros_like(state.step), length=length, start_loss=state.start_loss)
    return select_instances(done, fresh, state)

  # ---------------------------------------------------------------------------------------------------------------
  # One truncation.

  def _particle_step(self, meta_params, params, opt_state, cfg, step, start_loss, key):
    """One inner step of one particle (unbatched)."""
    task = self.families[0].task(cfg)
    batch_key, loss_key, valid_key, eval_key = jax.random.split(key, 4)
    batch = task.batch(batch_key, 'train')
    loss, grads = jax.value_and_grad(task.loss)(params, loss_key, batch)
    if not self.second_derivatives:
      grads = jax.lax.stop_gradient(grads)
    extra = {'value': loss}
    if self.use_valid_loss:
      batch_key, loss_key = jax.random.split(valid_key)
      extra['valid_value'] = task.loss(params, loss_key, task.batch(batch_key, 'inner_valid'))
    tx = self.architecture.transform(meta_params)
    updates, opt_state = tx.update(grads, opt_state, params, **extra)
    new_params = optax.apply_updates(params, updates)
    start_loss = jnp.where(step == 0, jax.lax.stop_gradient(loss).astype(jnp.float32), start_loss)

    objective = self.objective
    eval_losses = None
    if objective.eval_split is not None:
      def eval_one(k):
        batch_key, loss_key = jax.random.split(k)
        return task.loss(new_params, loss_key, task.batch(batch_key, objective.eval_split))
      eval_losses = jax.vmap(eval_one)(jax.random.split(eval_key, objective.num_eval_batches))
    value = objective.step_value(task, loss, eval_losses, start_loss).astype(jnp.float32)
    finite = jnp.isfinite(loss) & jnp.isfinite(value) & _all_finite(new_params)
    return new_params, opt_state, start_loss, value, loss.astype(jnp.float32), finite

  def unroll(self, meta_params: MetaParams, state: UnrollState, key: jax.Array, meta_step: jax.Array | int = 0,
             per_particle: bool = False) -> tuple[UnrollState, UnrollOutput]:
    """Advances every instance by ``unroll_length`` steps.

    Args:
      meta_params: shared meta-parameters, or with ``per_particle=True`` a pytree whose leaves have shape
        ``[B, P, ...]`` (one set per particle, e.g. ``θ ± ε``).
      state: the group's :class:`UnrollState`.
      key: the randomness of this truncation (data, gradient noise, resets); shared by an instance's particles.
      meta_step: the outer step, passed to the truncation schedule at resets.
      per_particle: see ``meta_params``.
    """
    meta_step = jnp.asarray(meta_step, jnp.int32)
    meta_axis = 0 if per_particle else None
    particle_step = jax.vmap(self._particle_step, in_axes=(meta_axis, 0, 0, 0, 0, 0, None))
    instance_step = jax.vmap(particle_step, in_axes=(meta_axis, 0, 0, 0, 0, 0, 0))

    def body(carry, step_key):
      state, before_reset = carry
      reset_key, data_key = jax.random.split(step_key)
      done = jnp.any(state.step >= state.length, axis=1)
      # Under jit (and unbatched) the fresh instances are only computed on steps where some instance needs them.
      state = jax.lax.cond(jnp.any(done),
                           lambda s: self._reset(s, done, reset_key, meta_params, meta_step, per_particle),
                           lambda s: s, state)
      before_reset = before_reset & ~done
      params, opt_state, start_loss, value, loss, finite = instance_step(
          meta_params, state.params, state.opt_state, state.cfg, state.step, state.start_loss,
          jax.random.split(data_key, self.num_tasks))
      ok = jnp.all(finite, axis=1)
      # A non-finite instance jumps to the end of its episode, so the next step resets it.
      step = jnp.where(ok[:, None], state.step + 1, state.length)
      state = state._replace(params=params, opt_state=opt_state, start_loss=start_loss, step=step)
      out = UnrollOutput(values=jnp.where(ok[:, None], value, 0.0), valid=ok, before_reset=before_reset,
                         train_loss=loss, nonfinite_reset=~ok, episode_reset=done)
      return (state, before_reset), out

    keys = jax.random.split(key, self.unroll_length)
    before = jnp.ones((self.num_tasks,), bool)
    (state, _), output = jax.lax.scan(body, (state, before), keys)
    return state, output

  def weights(self) -> jax.Array:
    """The objective's per-step weights for this unroll length, shape ``[T]``."""
    return jnp.asarray(self.objective.step_weights(self.unroll_length))

  def truncation_loss(self, output: UnrollOutput) -> jax.Array:
    """The meta-loss of each instance and particle, ``[B, P]``: ``sum_t w_t v_t``."""
    return jnp.einsum('t,tbp->bp', self.weights(), output.values)


def unroll_metrics(output: UnrollOutput, losses: jax.Array) -> dict[str, jax.Array]:
  """The metrics every truncated estimator reports for one group: ``meta_loss`` (mean truncation loss over
  instances and particles), ``inner_nonfinite_resets`` and ``episode_resets`` (counts over the truncation), and
  ``inner_train_loss`` (mean finite training loss)."""
  valid = output.valid[:, :, None] & jnp.isfinite(output.train_loss)
  mean_train = jnp.sum(jnp.where(valid, output.train_loss, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
  return {
      'meta_loss': jnp.mean(losses),
      'inner_nonfinite_resets': jnp.sum(output.nonfinite_reset).astype(jnp.float32),
      'episode_resets': jnp.sum(output.episode_reset).astype(jnp.float32),
      'inner_train_loss': mean_train,
  }


# -----------------------------------------------------------------------------------------------------------------
# Combining structure groups or estimators.

_SUMMED_METRICS = ('inner_nonfinite_resets', 'episode_resets')


def _check_weights(weights, count: int, what: str) -> np.ndarray:
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
  :func:`_combine` splits ``key`` into (the others are the branches' own keys)."""
  return jax.random.bits(jax.random.split(key, num_branches + 1)[-1], (), jnp.uint32)


def sample_branch_on_host(key: jax.Array, num_branches: int, thresholds: Sequence[int]) -> int:
  """The branch :func:`_combine` draws in ``'sample'`` mode from ``key``, computed on the host (a Python int)."""
  if isinstance(key, jax.core.Tracer):
    raise TypeError('sample_branch draws on the host and needs a concrete PRNG key, not a traced one; under jit, '
                    'call estimate() without branch= (it then draws the branch inside the program).')
  bits = int(_draw_bits(key, num_branches))
  return sum(bits >= t for t in thresholds)


def _combine(estimate_fns: Sequence[Callable], states: tuple, key: jax.Array, weights: np.ndarray, mode: str,
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
    self.weights = _check_weights(weights, len(estimators), 'MultiTaskEstimator weights')
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
    grad, states, metrics = _combine(fns, tuple(state), key, self.weights, self.mode, _branch_arg(self, branch))
    return grad, states, metrics


class TruncatedEstimatorState(NamedTuple):
  groups: tuple        # one estimator-specific state per structure group; per-instance leaves are [B, ...]
  meta_step: jax.Array  # int32 scalar: estimate() calls so far (the outer step the truncation schedule sees)


class TruncatedEstimator(GradientEstimator):
  """Base of the truncated estimators: structure groups, their unrolls, and the combination of their gradients.

  Subclasses set :attr:`num_particles` and implement :meth:`_init_group` and :meth:`_estimate_group`.

  Args:
    architecture: the :class:`lopt.LearnedOptimizer` being meta-trained.
    families: a :class:`tasks.TaskFamily` or a sequence of them (e.g. a problem set's families). They are grouped
      by ``structure_key``; each group gets ``num_tasks`` instances and is compiled once.
    num_tasks: instances per structure group (the ensemble axis ``B`` of every per-instance state array).
    truncation_schedule: episode lengths (default ``ConstantTruncation(100)``).
    objective: the meta-objective (default :class:`LogNormalizedTrainLoss`).
    unroll_length: inner steps per truncation, i.e. per :meth:`estimate` call (static).
    use_valid_loss: pass an inner-valid loss as ``valid_value=`` to the optimizer (off by default; one extra
      forward pass per step).
    stagger: start instances at random offsets into their first episode.
    group_weights: weight of each structure group's gradient, in group order (default: proportional to the number
      of families in the group, so the mixture matches drawing a family uniformly, as Wichrowska et al. did).
    group_mode: ``'all'`` (every group every call, gradients combined with the weights) or ``'sample'`` (one group
      per call, drawn by weight). In ``'sample'`` mode the groups are host-sampled branches (see
      :mod:`meta_train.base`): ``estimate(..., branch=sample_branch(key))`` traces only the drawn group, so the
      trainer compiles each group once, when first drawn; ``estimate`` without ``branch`` draws the same group
      inside the program.
  """

  num_particles: int = 1

  def __init__(self, architecture, families: TaskFamily | Sequence[TaskFamily], num_tasks: int,
               truncation_schedule: TruncationSchedule | None = None, objective: MetaObjective | None = None, *,
               unroll_length: int = 20, use_valid_loss: bool = False, stagger: bool = True,
               group_weights: Sequence[float] | None = None, group_mode: str = 'all',
               second_derivatives: bool = True):
    groups = group_by_structure(families)
    if group_mode not in ('all', 'sample'):
      raise ValueError(f"group_mode must be 'all' or 'sample', got {group_mode!r}.")
    if group_weights is None:
      group_weights = [len(g) for g in groups]
    self.architecture = architecture
    self.num_tasks = num_tasks
    self.group_weights = _check_weights(group_weights, len(groups), f'group_weights ({len(groups)} structure groups)')
    self.group_mode = group_mode
    self.num_branches = len(groups) if group_mode == 'sample' else 1
    self._thresholds = branch_thresholds(self.group_weights)
    self.unrolls = [
        VectorizedUnroll(architecture, g, num_tasks, unroll_length, truncation_schedule, objective,
                         use_valid_loss=use_valid_loss, second_derivatives=second_derivatives, stagger=stagger)
        for g in groups]

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
    if self.num_branches == 1:
      return 0
    return sample_branch_on_host(key, len(self.unrolls), self._thresholds)

  def estimate(self, meta_params, state, key, branch: int | None = None):
    fns = [lambda s, k, u=u: self._estimate_group(u, meta_params, s, k, state.meta_step) for u in self.unrolls]
    grad, groups, metrics = _combine(fns, tuple(state.groups), key, self.group_weights, self.group_mode,
                                     _branch_arg(self, branch))
    return grad, TruncatedEstimatorState(groups=groups, meta_step=state.meta_step + 1), metrics


def _branch_arg(estimator: GradientEstimator, branch: int | None) -> int | None:
  """``branch`` for :func:`_combine`; ``branch=0`` of a one-branch estimator is accepted and means the usual call."""
  if branch is not None and estimator.num_branches == 1:
    if operator.index(branch) != 0:
      raise ValueError(f'{type(estimator).__name__} has one branch (not in sample mode); got branch={branch!r}.')
    return None
  return branch


# -----------------------------------------------------------------------------------------------------------------
# Helpers shared by the perturbation-based estimators.


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
    architecture, families, num_tasks, truncation_schedule, objective, unroll_length, use_valid_loss, stagger,
    group_weights, group_mode: as :class:`TruncatedEstimator`.
    std: the perturbation scale σ (0.01).
  """

  num_particles = 2  # the antithetic twins θ + ε and θ − ε
  # Only the hybrid estimator differentiates through the unroll; its constructor sets this before calling here.
  second_derivatives: bool = True

  def __init__(self, architecture, families: TaskFamily | Sequence[TaskFamily], num_tasks: int,
               truncation_schedule: TruncationSchedule | None = None, objective: MetaObjective | None = None, *,
               unroll_length: int = 20, std: float = 0.01, use_valid_loss: bool = False, stagger: bool = True,
               group_weights: Sequence[float] | None = None, group_mode: str = 'all'):
    self.std = check_std(std, type(self).__name__)
    super().__init__(architecture, families, num_tasks, truncation_schedule, objective, unroll_length=unroll_length,
                     use_valid_loss=use_valid_loss, stagger=stagger, group_weights=group_weights,
                     group_mode=group_mode, second_derivatives=self.second_derivatives)


def check_std(std: float, name: str) -> float:
  if not (isinstance(std, (int, float)) and not isinstance(std, bool) and std > 0 and np.isfinite(std)):
    raise ValueError(f'{name}: std (the perturbation scale σ) must be a positive number, got {std!r}.')
  return float(std)
