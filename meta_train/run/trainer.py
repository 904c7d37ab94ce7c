"""The outer loop of meta-training, readable top to bottom: :func:`train`.

One meta-step is::

    grad, estimator_state, metrics = estimator.estimate(meta_params, estimator_state, key)  # one truncation
    if every element of grad is finite:
      meta_params, meta_opt_state = meta_optimizer step on grad, value=metrics['meta_loss']  # optax or learned
    else:
      skip the step and count it (nonfinite_meta_grads)

The estimator resets inner problems whose loss went non-finite and reports how many (``inner_nonfinite_resets``);
both counts are summed in the state, logged, and shown in the progress bar.

Everything that determines the future of the run lives in one :class:`TrainState` (meta-parameters, meta-optimizer
state, estimator state, PRNG key, step, counters). It is checkpointed every ``run.checkpoint_every`` steps, so the same
command on the same output directory resumes from the latest checkpoint and produces bitwise the meta-parameters an
uninterrupted run would have (on CPU; see ``tests/meta_train/test_resume_sigkill.py``). Every checkpoint also writes
the compact ``resume.npz`` (:mod:`meta_train.run.resume_state`: meta-parameters, meta-optimizer state, key, step; no
task instances); a directory that holds it but no checkpoint (a run committed to git, copied without its
checkpoints) resumes from it with freshly drawn task instances.

The ensemble axis of the estimator state is sharded over every device (:mod:`meta_train.run.sharding`); the step itself
is written for one device and ``jax.jit`` partitions it.

Estimators with host-sampled branches (``estimator.num_branches > 1``, e.g. ``group_mode = 'sample'`` over several
structure groups; see :mod:`meta_train.estimators.base`): before each meta-step the branch is drawn on the host from the
state's PRNG key (:func:`draw_branch`), and the step specialised to that branch is compiled the first time the branch
is drawn and reused afterwards. The draw depends on the key alone, so a resumed run draws what the uninterrupted run
drew, and it equals the draw the estimator makes inside a single program.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from lopt import serialization
from meta_train.run import build
from meta_train.run import checkpoint
from meta_train.run import config as config_lib
from meta_train.run import logging as run_logging
from meta_train.run import resume_state
from meta_train.run import sharding

CONFIG_FILE = 'config.toml'
FINAL_FILE = 'final.npz'
CHECKPOINT_DIR = 'checkpoints'
PLOT_INTERVAL_SECONDS = 60.0


class OutputDirError(config_lib.ConfigError):
  """The output directory cannot be used (not a directory, unwritable, or holds a run with another config)."""


class TrainState(NamedTuple):
  """Everything that determines the rest of a run; checkpointed as a whole."""
  step: jax.Array                    # int32 scalar: meta-steps taken
  meta_params: Any
  meta_opt_state: Any
  estimator_state: Any               # per-instance leaves have the ensemble axis first
  key: jax.Array                     # typed PRNG key for the next meta-step
  nonfinite_meta_grads: jax.Array    # int32: meta-steps skipped because the meta-gradient was not finite
  inner_nonfinite_resets: jax.Array  # float32: inner instances reset by the estimator, summed over the run


class TrainResult(NamedTuple):
  meta_params: Any      # host (numpy) arrays
  step: int
  resumed_from: int     # 0 for a fresh start
  out_dir: str


# ----------------------------------------------------------------------------------------------------------------
# The pure functions that jit compiles.


def init_state(components: build.Components, key: jax.Array) -> TrainState:
  params_key, estimator_key, run_key = jax.random.split(key, 3)
  meta_params = components.init_meta_params(params_key)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      meta_params=meta_params,
      meta_opt_state=components.meta_optimizer.init(meta_params),
      estimator_state=components.estimator.init(estimator_key, meta_params),
      key=run_key,
      nonfinite_meta_grads=jnp.zeros((), jnp.int32),
      inner_nonfinite_resets=jnp.zeros((), jnp.float32))


def draw_branch(components: build.Components, key: jax.Array) -> int | None:
  """On the host: the estimator branch of the meta-step whose state holds the PRNG key ``key`` (concrete), or
  ``None`` for an estimator with one branch (the usual case: the step needs no specialisation)."""
  estimator = components.estimator
  if getattr(estimator, 'num_branches', 1) <= 1:
    return None
  _, estimate_key = jax.random.split(key)  # the split meta_step makes, computed here for the same key
  return int(estimator.sample_branch(estimate_key))


def meta_step(components: build.Components, state: TrainState,
              branch: int | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One truncation, one meta-gradient, one (possibly skipped) meta-optimizer step.

  ``branch``: for an estimator with host-sampled branches, ``draw_branch(components, state.key)`` (static); the
  step then contains only that branch. ``None`` lets the estimator draw inside the program.
  """
  key, estimate_key = jax.random.split(state.key)
  if branch is None:
    grad, estimator_state, metrics = components.estimator.estimate(state.meta_params, state.estimator_state,
                                                                   estimate_key)
  else:
    grad, estimator_state, metrics = components.estimator.estimate(state.meta_params, state.estimator_state,
                                                                   estimate_key, branch=branch)
  finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grad)]))
  # The meta-loss goes along as optax's `value`: a learned meta-optimizer may read it, optax optimizers ignore it.
  meta_optimizer = optax.with_extra_args_support(components.meta_optimizer)
  extra = {'value': metrics['meta_loss']} if 'meta_loss' in metrics else {}
  updates, new_opt_state = meta_optimizer.update(grad, state.meta_opt_state, state.meta_params, **extra)
  new_params = optax.apply_updates(state.meta_params, updates)
  # A non-finite meta-gradient would poison the meta-parameters and Adam's moments for good: keep both unchanged.
  keep_if_finite = lambda new, old: jnp.where(finite, new, old)
  meta_params = jax.tree.map(keep_if_finite, new_params, state.meta_params)
  meta_opt_state = jax.tree.map(keep_if_finite, new_opt_state, state.meta_opt_state)

  resets = jnp.asarray(metrics.get('inner_nonfinite_resets', 0.0), jnp.float32)
  new_state = TrainState(
      step=state.step + 1,
      meta_params=meta_params,
      meta_opt_state=meta_opt_state,
      estimator_state=estimator_state,
      key=key,
      nonfinite_meta_grads=state.nonfinite_meta_grads + (~finite).astype(jnp.int32),
      inner_nonfinite_resets=state.inner_nonfinite_resets + resets)
  metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
  metrics['meta_grad_norm'] = jnp.where(finite, optax.tree.norm(grad), jnp.nan)
  metrics['meta_grad_finite'] = finite.astype(jnp.float32)
  return new_state, metrics


# ----------------------------------------------------------------------------------------------------------------
# The output directory.


def prepare_output_dir(out_dir: str, config: config_lib.Config, write: bool = True) -> None:
  """Creates ``out_dir`` and records ``config`` there; refuses a directory that holds a run with another config.

  ``write=False`` only checks (processes other than 0, and the check made before the components are built).
  """
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise OutputDirError(f'--out {out_dir!r} exists and is not a directory; choose another path.')
  config_path = os.path.join(out_dir, CONFIG_FILE)
  has_checkpoints = (bool(checkpoint.CheckpointManager(os.path.join(out_dir, CHECKPOINT_DIR), write=False).steps())
                     or os.path.exists(os.path.join(out_dir, resume_state.RESUME_FILE)))
  # Without a checkpoint there is nothing to resume, so a run that failed early may be restarted with a fixed config.
  if has_checkpoints and os.path.exists(config_path):
    try:
      previous = config_lib.load(config_path)
    except config_lib.ConfigError as e:
      raise OutputDirError(f'{config_path!r} (the config of the run in --out {out_dir!r}) is unreadable: {e} '
                           'Use a new --out directory.') from e
    changed = {k: v for k, v in config_lib.differences(previous, config).items()
               if k not in config_lib.RESUMABLE_FIELDS}
    if changed:
      lines = '\n'.join(f'  {k}: {old!r} in the existing run, {new!r} now' for k, (old, new) in changed.items())
      raise OutputDirError(
          f'--out {out_dir!r} holds a run with a different config, so it cannot be resumed with this one:\n{lines}\n'
          f'Use a new --out directory, or rerun with the config in {config_path!r}. (Only '
          f'{", ".join(sorted(config_lib.RESUMABLE_FIELDS))} may change on resume.)')
  if not write:
    return
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise OutputDirError(checkpoint.os_error_message(e, f'the output directory {out_dir!r}')) from e
  text = config_lib.dumps(config).encode('utf-8')
  try:
    checkpoint.atomic_write_bytes(config_path, lambda f: f.write(text))
  except checkpoint.CheckpointError as e:
    raise OutputDirError(str(e)) from e


# ----------------------------------------------------------------------------------------------------------------
# The loop.


def train(config: config_lib.Config, out_dir: str, components: build.Components | None = None, *,
          progress: bool = True) -> TrainResult:
  """Meta-trains as ``config`` says, writing everything to ``out_dir``; resumes if ``out_dir`` holds a checkpoint.

  Resumption, in order of preference:

  1. the newest readable full checkpoint in ``out_dir/checkpoints/``: bitwise the uninterrupted run (same machine);
  2. when ``checkpoints/`` is absent or empty, ``out_dir/resume.npz``: the meta-parameters, meta-optimizer state,
     PRNG key, step and counters it holds, with the inner task instances *redrawn* (a valid continuation of the
     meta-training, not bitwise the uninterrupted one; a line on stderr says so);
  3. otherwise a fresh start.

  Args:
    config: a validated :class:`meta_train.run.config.Config`.
    out_dir: the run's directory (created if missing).
    components: the built pieces; default ``meta_train.run.build.build(config)``.
    progress: show a tqdm progress bar (meta-loss, speed, ETA) on stderr.
  """
  run = config.run
  is_main = jax.process_index() == 0
  prepare_output_dir(out_dir, config, write=False)  # refuse a mismatched run before spending time on building
  if components is None:
    components = build.build(config)
  if is_main:
    prepare_output_dir(out_dir, config)  # written only once the config has proven buildable

  # Shard the ensemble axis over every device; meta-parameters and the meta-optimizer state are replicated.
  mesh = sharding.ensemble_mesh()
  try:
    sharding.check_ensemble_size(components.ensemble_size, mesh)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  root_key = jax.random.key(run.seed)
  state_shapes = jax.eval_shape(lambda k: init_state(components, k), root_key)
  # Only the estimator state has an ensemble axis; a meta-parameter that happens to have length B stays replicated.
  state_shardings = jax.tree.map(lambda _: sharding.replicated(mesh), state_shapes)._replace(
      estimator_state=sharding.ensemble_shardings(state_shapes.estimator_state, components.ensemble_size, mesh))
  # The state is donated: each meta-step writes the new state into the old one's buffers (no second copy of the
  # estimator state, which holds every inner instance, on the accelerator).
  step_fn = _BranchedStep(components, in_shardings=(state_shardings,),
                          out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)

  # Resume from the newest readable checkpoint, or start fresh.
  # Every process opens the checkpoints and calls save/restore; orbax coordinates the writes.
  manager = checkpoint.CheckpointManager(os.path.join(out_dir, CHECKPOINT_DIR), keep=run.keep_checkpoints)
  restored = manager.restore_latest(state_shapes)
  resume_path = os.path.join(out_dir, resume_state.RESUME_FILE)
  if restored is not None:
    state = sharding.put(restored.tree, state_shardings)
    start = restored.step
  elif os.path.exists(resume_path):
    try:
      saved = resume_state.load(resume_path, state_shapes, config)
    except checkpoint.CheckpointError as e:
      raise OutputDirError(str(e)) from e
    with jax.default_device(jax.local_devices()[0]):  # op by op, as a fresh start (below)
      estimator_state = components.estimator.init(resume_state.redraw_key(saved.key), saved.meta_params)
      state = sharding.put(TrainState(estimator_state=estimator_state, **saved._asdict()), state_shardings)
    start = int(saved.step)
    if is_main:
      print(f'resuming from {resume_path} at step {start} (no full checkpoint in {manager.directory}): '
            'meta-parameters, meta-optimizer state and PRNG key restored, inner task instances redrawn.',
            file=sys.stderr)
  else:
    # Run op by op, not as one jitted program: for a problem set of many structure groups, one program holding every
    # group's initialisation takes XLA longer to compile than running its small ops directly (the 87 groups of the
    # Wichrowska set: > 9.5 minutes of compiling unfinished, against 165 s op by op on one shared core).
    # (On this process's own first device: with several processes the global device 0 may belong to another.)
    with jax.default_device(jax.local_devices()[0]):
      state = sharding.put(init_state(components, root_key), state_shardings)
    start = 0

  logger = run_logging.RunLogger(out_dir, resume_step=start, enabled=is_main)
  bar = _progress_bar(progress and is_main, total=run.meta_steps, initial=start)
  # The metrics of the meta-steps since the last log line stay on the device and are fetched once per log line:
  # no device-to-host copy (and no wait for the device) every meta-step.
  pending_metrics: list[dict[str, jax.Array]] = []
  step = start
  last_plot = time.monotonic()

  def save_checkpoint():
    host_state = sharding.to_host(state)  # a collective in multi-process runs: every process calls it
    # The state's own step counter, not `step`: an interrupt can land between the meta-step and `step += 1`.
    # Every process calls save; it returns on each once the checkpoint is committed (so none can go on to read the
    # directory and find the previous one).
    manager.save(int(host_state.step), host_state, metadata={'time': time.time()})
    if is_main:
      resume_state.save(resume_path, host_state, config)

  try:
    while step < run.meta_steps:
      state, metrics = step_fn(state)
      step += 1
      pending_metrics.append(metrics)
      bar.update(1)

      if step % run.log_every == 0 or step == run.meta_steps:
        window = sharding.to_host(pending_metrics)
        record = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
        totals = sharding.to_host((state.nonfinite_meta_grads, state.inner_nonfinite_resets))
        record['nonfinite_meta_grads_total'] = int(totals[0])
        record['inner_nonfinite_resets_total'] = float(totals[1])
        record['unix_time'] = time.time()  # wall-clock timestamps let a model card state the compute spent
        logger.log(step, record)
        bar.set_postfix(meta_loss=f'{record.get("meta_loss", float("nan")):.4g}',
                        skipped=record['nonfinite_meta_grads_total'],
                        resets=int(record['inner_nonfinite_resets_total']))
        pending_metrics = []

      if _evaluation_due(config, step) and is_main and components.evaluate is not None:
        logger.log_evaluation(step, components.evaluate(sharding.to_host(state.meta_params)))

      if step % run.checkpoint_every == 0 or step == run.meta_steps:
        save_checkpoint()
        if time.monotonic() - last_plot > PLOT_INTERVAL_SECONDS:  # plotting costs ~1 s; the end always plots
          logger.plot()
          last_plot = time.monotonic()
  except KeyboardInterrupt:
    # Ctrl-C: keep the work done since the last checkpoint, then stop as asked. (Not with several processes: the
    # others did not get the signal and would never join the gather.)
    # If the interrupt landed inside a meta-step call after its input was donated, the state is gone: the last
    # checkpoint is then the newest state there is.
    if step > start and jax.process_count() == 1 and not _is_deleted(state):
      save_checkpoint()
    raise
  finally:
    bar.close()
    manager.close()

  meta_params = sharding.to_host(state.meta_params)
  if is_main:
    _save_final(os.path.join(out_dir, FINAL_FILE), components.architecture, meta_params)
    logger.plot()
  logger.close()
  return TrainResult(meta_params=meta_params, step=step, resumed_from=start, out_dir=out_dir)


class _BranchedStep:
  """``state -> (state, metrics)``: the jitted :func:`meta_step`, one compiled program per estimator branch.

  For an estimator with one branch this is a single ``jax.jit``. Otherwise each call draws the branch on the host
  and runs the step specialised to it, jitted (and compiled) the first time that branch is drawn. Every branch's
  step has the same ``jax.jit`` arguments (shardings), so the programs differ only in the branch they trace.

  The draw needs ``state.key``, which the meta-step advances by ``key, _ = split(key)`` whatever else happens. The
  host follows that chain itself on the CPU backend (one copy of the key from the device at the first call, none
  afterwards), so the host never waits for the meta-step in flight before queueing the next one. Threefry keys split
  the same on every backend, so the draws equal those from the device's key.
  """

  def __init__(self, components: build.Components, **jit_kwargs):
    self.components = components
    self.jit_kwargs = jit_kwargs
    self.steps: dict[int | None, Callable] = {}
    self.host_key: jax.Array | None = None  # state.key of the next call, on the CPU backend

  def __call__(self, state: TrainState):
    branched = getattr(self.components.estimator, 'num_branches', 1) > 1
    branch = None
    if branched:
      cpu = _host_device()
      with jax.default_device(cpu):
        if self.host_key is None:
          self.host_key = jax.device_put(sharding.to_host(state.key), cpu)
        branch = draw_branch(self.components, self.host_key)
        self.host_key, _ = jax.random.split(self.host_key)  # meta_step's own split of the key
    step = self.steps.get(branch)
    if step is None:
      step = jax.jit(lambda s: meta_step(self.components, s, branch), **self.jit_kwargs)
      self.steps[branch] = step
    return step(state)


def _host_device() -> jax.Device:
  """The CPU device, or (where JAX_PLATFORMS leaves the CPU backend out) this process's first device."""
  try:
    return jax.local_devices(backend='cpu')[0]
  except RuntimeError:
    return jax.local_devices()[0]


def _is_deleted(tree: Any) -> bool:
  """Whether any array of ``tree`` was donated to a computation (its buffer is gone)."""
  return any(isinstance(x, jax.Array) and x.is_deleted() for x in jax.tree.leaves(tree))


def _evaluation_due(config: config_lib.Config, step: int) -> bool:
  every = config.evaluation.every
  return every > 0 and (step % every == 0 or step == config.run.meta_steps)


def _save_final(path: str, architecture, meta_params) -> None:
  try:
    serialization.save(path, architecture, meta_params)
  except OSError as e:
    raise checkpoint.CheckpointError(checkpoint.os_error_message(e, path)) from e


def _progress_bar(enabled: bool, total: int, initial: int) -> tqdm:
  return tqdm(total=total, initial=initial, desc='meta-training', unit='step', dynamic_ncols=True,
              disable=not enabled)
