"""The vectorized truncated unroll every estimator is built on.

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

Every estimator of :mod:`meta_train.estimators` is built on this unroll (docs/algorithms.md §8.1); the structure
groups of a run, each with its own unroll, are in :mod:`meta_train.structure_groups`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
