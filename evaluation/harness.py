"""Evaluation harness: any optax optimizer, learned or not, against tuned baselines on a suite of tasks.

For every task of a suite and every optimizer it records learning curves over several seeds (training loss at every
step, test loss every ``eval_every`` steps where the task has a test split), then summarises:

* **final loss**: the training loss averaged over the last 5% of steps and over seeds (minibatch losses are noisy,
  a single last step is not a fair summary);
* **mean log loss**: the mean of ``log(loss)`` over all steps and seeds (area under the log learning curve; rewards
  being fast as well as ending low). Tasks whose loss can be non-positive report NaN here;
* **speedup** (Metz et al. 2022, VeLO, Fig. 1): the number of steps per-task-tuned Adam needs to reach the
  optimizer's final loss, divided by the step budget. 2 means Adam needs twice the budget. Adam is run for
  ``speedup_horizon`` times the budget, so a speedup above that is *censored*: it is known only to be
  ``>= speedup_horizon`` and is reported that way, never as a number;
* **time to tuned Adam's loss**: wall-clock seconds, counting each optimizer's own measured step time, until the
  smoothed training curve first reaches tuned Adam's final loss (censored, ``>= budget``, when it never does), next
  to tuned Adam's own. A learned optimizer that needs fewer steps but costs more per step shows both;
* **win/loss**: the optimizer wins against a baseline on a task when its final loss is lower.

Across tasks: the win rate against each baseline, the interquartile mean (IQM, the mean of the middle 50%,
robust to a few extreme tasks) of ``log10(final loss / tuned-Adam final loss)`` (negative is better than tuned Adam),
and the median speedup *with its count of censored tasks*. Censored values sort above every measured one, so the
median is exact while fewer than half the tasks are censored, and is reported as ``>= speedup_horizon`` otherwise
(:func:`censored_median`). Every table names its metric and the number of seeds, and gives the spread over seeds
(the standard deviation of the per-seed final losses).

Baselines (:func:`default_baselines`): Adam, RMSProp and SGD with momentum 0.9, each tuned per task over a
learning-rate grid (the lowest final training loss wins; diverged runs count as infinite loss); Adam at its default
1e-3; optax's tuning-free optimizers prodigy, DoG, D-Adaptation AdamW and schedule-free AdamW.

Every run is one jitted ``lax.scan`` (the loop of :mod:`evaluation.training`) vmapped over seeds, and a tuned
baseline is vmapped over its learning-rate grid too (through ``optax.inject_hyperparams``), so each (task, optimizer
family) compiles once.

**Baseline cache.** Baselines are most of the cost (the held-out suite's tuned baselines take ~20 CPU-minutes) and
do not change while a learned optimizer is being developed. ``evaluate(..., cache_dir=DIR)`` stores each baseline's
curves in ``DIR`` and reuses them when the same baseline (by name), learning-rate grid, task, budget, seeds, key,
jax/optax versions and inner training loop (:data:`evaluation.training.LOOP_VERSION`) come again. A task is
recognised by its name, parameter count and its loss at a fixed initialisation and batch (a fingerprint), so a
changed task under an old name misses the cache instead of reusing wrong numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

from evaluation import training
from tasks.base import Task

#: The default learning-rate grid of tuned baselines: 1e-5 .. 1 in factors of sqrt(10) (11 values).
DEFAULT_LR_GRID = tuple(float(10.0**e) for e in np.arange(-5.0, 0.01, 0.5))

#: Fraction of the final steps averaged into the "final loss".
FINAL_FRACTION = 0.05


@dataclasses.dataclass(frozen=True)
class SuiteEntry:
  """One task of an evaluation suite with its step budget."""
  name: str
  task: Task
  num_steps: int
  has_test_split: bool = True


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """An optimizer to evaluate.

  Attributes:
    name: shown in tables and plots.
    make: ``make(learning_rate) -> optax transformation`` when ``lr_grid`` is given (tuned), else ``make() -> tx``.
    lr_grid: learning rates to tune over (the lowest final training loss wins), or None for an untuned optimizer.
    eval_params: maps ``(opt_state, params)`` to the parameters to evaluate (schedule-free methods evaluate at a
      different point than they train); None means ``params``.
  """
  name: str
  make: Callable[..., optax.GradientTransformation]
  lr_grid: tuple[float, ...] | None = None
  eval_params: Callable | None = None


@dataclasses.dataclass
class RunResult:
  """Learning curves of one optimizer on one task (after tuning, for tuned optimizers)."""
  train_loss: np.ndarray          # [seeds, steps], loss at the pre-update parameters of each step
  test_loss: np.ndarray | None    # [seeds, evals], or None when the task has no test split
  test_steps: np.ndarray          # [evals], the step index at which each test loss was measured
  learning_rate: float | None = None
  step_seconds: float | None = None  # median wall-clock seconds of one training step (set by ``evaluate``)

  @property
  def final_loss(self) -> float:
    return final_loss(self.train_loss)

  @property
  def final_loss_std(self) -> float:
    """Standard deviation over seeds of the per-seed final losses (the spread behind :attr:`final_loss`)."""
    n = max(1, int(math.ceil(self.train_loss.shape[-1] * FINAL_FRACTION)))
    per_seed = np.mean(self.train_loss[..., -n:], axis=-1)
    return float(np.std(per_seed)) if np.all(np.isfinite(per_seed)) else math.inf

  @property
  def mean_log_loss(self) -> float:
    losses = self.train_loss
    if np.any(~np.isfinite(losses)) or np.any(losses <= 0):
      return float('nan')
    return float(np.mean(np.log(losses)))

  @property
  def finite(self) -> bool:
    return bool(np.all(np.isfinite(self.train_loss)))

  @property
  def final_test_loss(self) -> float | None:
    """Mean over seeds of the last test-loss measurement; None without a test split."""
    if self.test_loss is None:
      return None
    value = float(np.mean(self.test_loss[..., -1]))
    return value if math.isfinite(value) else math.inf


def final_loss(train_loss: np.ndarray) -> float:
  """Mean over seeds of the training loss averaged over the last :data:`FINAL_FRACTION` of steps; inf if not finite."""
  n = max(1, int(math.ceil(train_loss.shape[-1] * FINAL_FRACTION)))
  value = float(np.mean(train_loss[..., -n:]))
  return value if math.isfinite(value) else math.inf


def _train_curves(task: Task, tx: optax.GradientTransformation, num_steps: int, eval_every: int,
                  with_test: bool, eval_params: Callable | None, num_test_batches: int = 4):
  """``run(key) -> (train_loss[steps], test_loss[evals])`` for one seed (:func:`evaluation.training.make_run`);
  a task without a test split is evaluated on fresh training batches."""
  run = training.make_run(task, tx, num_steps, eval_every, ('test' if with_test else 'train',),
                          eval_params=eval_params, num_eval_batches=num_test_batches)

  def curves(key):
    train_loss, eval_loss = run(key)
    return train_loss, eval_loss[:, 0]
  return curves


def run_optimizer(task: Task, spec: OptimizerSpec, num_steps: int, seeds: int = 3, eval_every: int | None = None,
                  with_test: bool = True, key: jax.Array | None = None) -> RunResult:
  """Trains ``task`` with ``spec`` for ``num_steps`` steps over ``seeds`` seeds, tuning the learning rate if asked.

  Seeds share their initial parameters and batches across optimizers (the same ``key``), so comparisons are paired.
  """
  if num_steps < 1 or seeds < 1:
    raise ValueError(f'num_steps and seeds must be >= 1, got {num_steps} and {seeds}.')
  eval_every = eval_every or max(1, num_steps // 20)
  if num_steps % eval_every:
    raise ValueError(f'num_steps={num_steps} must be a multiple of eval_every={eval_every}.')
  keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, seeds)

  if spec.lr_grid is None:
    run = _train_curves(task, spec.make(), num_steps, eval_every, with_test, spec.eval_params)
    train, test = jax.jit(jax.vmap(run))(keys)
    return RunResult(np.asarray(train), np.asarray(test) if with_test else None,
                     np.arange(1, num_steps // eval_every + 1) * eval_every)

  def run_at(lr, key):
    tx = optax.inject_hyperparams(spec.make)(learning_rate=lr)
    return _train_curves(task, tx, num_steps, eval_every, with_test, spec.eval_params)(key)

  grid = jnp.asarray(spec.lr_grid, jnp.float32)
  train, test = jax.jit(jax.vmap(jax.vmap(run_at, (None, 0)), (0, None)))(grid, keys)
  train, test = np.asarray(train), np.asarray(test)
  best = int(np.argmin([final_loss(t) for t in train]))
  return RunResult(train[best], test[best] if with_test else None,
                   np.arange(1, num_steps // eval_every + 1) * eval_every, learning_rate=spec.lr_grid[best])


def default_baselines(lr_grid: Sequence[float] = DEFAULT_LR_GRID) -> dict[str, OptimizerSpec]:
  """Tuned Adam/RMSProp/SGDM, Adam at 1e-3, and optax's tuning-free optimizers."""
  lr_grid = tuple(lr_grid)
  schedule_free = getattr(optax.contrib, 'schedule_free_adamw', None) or optax.schedule_free_adamw
  schedule_free_eval = (getattr(optax.contrib, 'schedule_free_eval_params', None)
                        or optax.schedule_free_eval_params)
  return {
      'adam_tuned': OptimizerSpec('adam_tuned', optax.adam, lr_grid),
      'rmsprop_tuned': OptimizerSpec('rmsprop_tuned', optax.rmsprop, lr_grid),
      'sgdm_tuned': OptimizerSpec('sgdm_tuned', lambda learning_rate: optax.sgd(learning_rate, 0.9), lr_grid),
      'adam_1e-3': OptimizerSpec('adam_1e-3', lambda: optax.adam(1e-3)),
      'prodigy': OptimizerSpec('prodigy', optax.contrib.prodigy),
      'dog': OptimizerSpec('dog', optax.contrib.dog),
      'dadapt_adamw': OptimizerSpec('dadapt_adamw', optax.contrib.dadapt_adamw),
      'schedule_free_adamw': OptimizerSpec('schedule_free_adamw', schedule_free,
                                           eval_params=lambda state, params: schedule_free_eval(state, params)),
  }


def steps_to_reach(curve: np.ndarray, target: float, smoothing: int) -> int | None:
  """First step (1-based) at which the running-mean-smoothed ``curve`` is <= ``target``; None if never."""
  if not math.isfinite(target):
    return None
  smoothing = max(1, min(smoothing, len(curve)))
  smoothed = np.convolve(curve, np.ones(smoothing) / smoothing, mode='valid')
  hits = np.nonzero(smoothed <= target)[0]
  return int(hits[0]) + smoothing if hits.size else None


def censored_median(values: Sequence[float | None], limit: float) -> tuple[float | None, int]:
  """Median of values of which some are censored (``None``: known only to be ``>= limit``), and their count.

  Every censored value lies at or above ``limit``, above every measured value (which are ``<= limit``), so sorting
  puts them last. The median is exact when it falls among the measured values, i.e. when fewer than half are
  censored; otherwise it is itself censored and returned as ``None`` (report ``>= limit``). No placeholder number
  ever enters the median.
  """
  measured = sorted(float(v) for v in values if v is not None)
  censored = sum(v is None for v in values)
  n = len(measured) + censored
  if n == 0:
    return float('nan'), 0
  middle = [(n - 1) // 2, n // 2]  # one index for odd n, the two central ones for even n
  if middle[1] >= len(measured):
    return None, censored
  return float(np.mean([measured[i] for i in middle])), censored


def measure_step_seconds(task: Task, tx: optax.GradientTransformation, repeats: int = 20,
                         key: jax.Array | None = None) -> float:
  """Median wall-clock seconds of one jitted training step (batch, loss and gradient, update, apply) of ``tx``
  on ``task``, after compilation and a warm-up; what the time-to-loss measure multiplies steps by."""
  key = jax.random.PRNGKey(0) if key is None else key
  step = jax.jit(training.make_step(task, tx))  # the very step the learning curves were measured with
  params = task.init(key)
  carry = (params, training.with_extra_args(tx).init(params))
  for i in range(3):  # compile and warm up
    carry = step(carry, jax.random.fold_in(key, i))[0]
  jax.block_until_ready(carry)
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    carry = jax.block_until_ready(step(carry, jax.random.fold_in(key, 100 + i))[0])
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def interquartile_mean(values: Sequence[float]) -> float:
  """Mean of the values between the 25th and 75th percentiles (Agarwal et al. 2021); NaN for no values.

  NaN values (undefined) are left out; infinite values take part in the sort, so a few of them fall in the trimmed
  quarters and the IQM is infinite only when they reach the middle half. (A diverged task is the worst ratio there
  is: leaving it out would make an optimizer that diverges look better than one that merely does badly.)
  """
  x = np.sort(np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64))
  if x.size == 0:
    return float('nan')
  lo, hi = int(math.floor(0.25 * x.size)), int(math.ceil(0.75 * x.size))
  with np.errstate(invalid='ignore'):  # +inf and -inf both in the middle half: NaN, undefined
    return float(np.mean(x[lo:max(hi, lo + 1)]))


def log10_ratio(loss: float, reference: float) -> float:
  """``log10(loss / reference)`` of two final losses, with the cases a plain division gets wrong.

  ``+inf`` when ``loss`` is not finite (diverged) and the reference is; ``-inf`` when ``loss`` is exactly 0 and the
  reference is positive; NaN (undefined, left out of summaries) when the reference is not finite, 0 or negative, or
  ``loss`` is negative.
  """
  if not (math.isfinite(reference) and reference > 0):
    return float('nan')
  if not math.isfinite(loss):
    return math.inf
  if loss < 0:
    return float('nan')
  return -math.inf if loss == 0 else math.log10(loss / reference)


@dataclasses.dataclass
class TaskReport:
  entry: SuiteEntry
  results: dict[str, RunResult]     # optimizer name -> result
  speedup: dict[str, float | None]  # optimizer name -> speedup vs tuned Adam (None: censored, >= speedup_horizon)
  # optimizer name (candidates and 'adam_tuned') -> seconds to reach tuned Adam's final loss (None: never within
  # the budget, i.e. censored at budget x step time)
  time_to_adam_loss: dict[str, float | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Report:
  tasks: list[TaskReport]
  candidates: tuple[str, ...]
  baselines: tuple[str, ...]
  speedup_horizon: float

  def win_rate(self, candidate: str, baseline: str) -> float:
    wins = [t.results[candidate].final_loss < t.results[baseline].final_loss for t in self.tasks]
    return float(np.mean(wins)) if wins else float('nan')

  def log_ratio_iqm(self, candidate: str, reference: str = 'adam_tuned') -> float:
    """IQM over tasks of :func:`log10_ratio` (diverged tasks count as ``+inf``, undefined ratios are left out)."""
    return interquartile_mean([log10_ratio(t.results[candidate].final_loss, t.results[reference].final_loss)
                               for t in self.tasks])

  @property
  def num_seeds(self) -> int:
    return int(self.tasks[0].results[self.candidates[0]].train_loss.shape[0]) if self.tasks else 0

  def median_speedup(self, candidate: str) -> tuple[float | None, int]:
    """:func:`censored_median` of the candidate's speedups over tasks (None: censored) and the censored count."""
    return censored_median([t.speedup[candidate] for t in self.tasks], self.speedup_horizon)

  def markdown(self) -> str:
    """The per-task tables (training loss with spread, test loss, time to tuned Adam's loss) and the summary."""
    names = list(self.candidates) + list(self.baselines)
    seeds = self.num_seeds
    lines = [f'Final training loss (mean over the last {FINAL_FRACTION:.0%} of steps), mean ± standard deviation '
             f'over {seeds} seeds; tuned optimizers show their chosen learning rate.', '',
             '| task | steps | ' + ' | '.join(names) + ' |', '|' + '---|' * (len(names) + 2)]
    for t in self.tasks:
      cells = []
      for n in names:
        r = t.results[n]
        cell = f'{r.final_loss:.3g} ± {r.final_loss_std:.2g}'
        cell += f' (lr {r.learning_rate:.0e})' if r.learning_rate is not None else ''
        cells.append(cell if r.finite else cell + ' ⚠ non-finite')
      lines.append(f'| {t.entry.name} | {t.entry.num_steps} | ' + ' | '.join(cells) + ' |')
    lines += ['', f'Summary over {len(self.tasks)} tasks ({seeds} seeds each). Speedup: steps tuned Adam needs to '
              f'reach the candidate\'s final loss / budget, median over tasks; a task where Adam does not reach it '
              f'within {self.speedup_horizon:g}x the budget is censored (>= {self.speedup_horizon:g}) and counted.',
              '', '| candidate | speedup vs tuned Adam (median) | censored | log10 loss ratio vs tuned Adam (IQM) | ' +
              ' | '.join(f'wins vs {b}' for b in self.baselines) + ' |',
              '|' + '---|' * (len(self.baselines) + 4)]
    for c in self.candidates:
      med, censored = self.median_speedup(c)
      med_str = f'>= {self.speedup_horizon:g}' if med is None else f'{med:.2f}'
      rates = ' | '.join(f'{100 * self.win_rate(c, b):.0f}%' for b in self.baselines)
      lines.append(f'| {c} | {med_str} | {censored}/{len(self.tasks)} | {self.log_ratio_iqm(c):+.3f} | {rates} |')
    timed = [t for t in self.tasks if t.time_to_adam_loss]
    if timed:
      timed_names = [n for n in list(self.candidates) + ['adam_tuned'] if n in timed[0].time_to_adam_loss]
      lines += ['', 'Wall-clock seconds to reach tuned Adam\'s final loss (steps on the seed-mean curve x the '
                'optimizer\'s median step time on this machine; ">=" marks a censored value: not reached within the '
                'budget), and the step time in milliseconds:', '',
                '| task | ' + ' | '.join(timed_names) + ' |', '|' + '---|' * (len(timed_names) + 1)]
      for t in timed:
        cells = []
        for n in timed_names:
          r, seconds = t.results[n], t.time_to_adam_loss[n]
          step_ms = 1e3 * r.step_seconds
          value = (f'>= {t.entry.num_steps * r.step_seconds:.2f}' if seconds is None else f'{seconds:.2f}')
          cells.append(f'{value} s ({step_ms:.2f} ms/step)')
        lines.append(f'| {t.entry.name} | ' + ' | '.join(cells) + ' |')
    with_test = [t for t in self.tasks if t.entry.has_test_split]
    if with_test:
      lines += ['', f'Final test loss (the last measurement, {seeds} seeds), mean ± standard deviation over seeds:',
                '', '| task | ' + ' | '.join(names) + ' |', '|' + '---|' * (len(names) + 1)]
      for t in with_test:
        cells = []
        for n in names:
          last = t.results[n].test_loss[..., -1]
          cells.append(f'{t.results[n].final_test_loss:.3g} ± {float(np.std(last)):.2g}')
        lines.append(f'| {t.entry.name} | ' + ' | '.join(cells) + ' |')
    unstable = [(t.entry.name, c) for t in self.tasks for c in self.candidates if not t.results[c].finite]
    lines += ['', 'Non-finite losses: ' + (', '.join(f'{c} on {n}' for n, c in unstable) if unstable else 'none.')]
    return '\n'.join(lines)

  def to_json(self) -> dict:
    """Everything summarised in :meth:`markdown`, per task and optimizer, as plain JSON types."""
    def number(x):
      return None if x is None or not math.isfinite(x) else float(x)
    tasks = []
    for t in self.tasks:
      results = {}
      for name, r in t.results.items():
        results[name] = {'final_loss': number(r.final_loss), 'final_loss_std_over_seeds': number(r.final_loss_std),
                         'mean_log_loss': number(r.mean_log_loss),
                         'final_test_loss': number(r.final_test_loss), 'learning_rate': r.learning_rate,
                         'step_seconds': r.step_seconds, 'finite': r.finite}
      # None = censored: speedup >= speedup_horizon; time = not reached within the budget.
      tasks.append({'name': t.entry.name, 'num_steps': t.entry.num_steps, 'results': results,
                    'speedup_vs_adam_tuned': {c: number(v) for c, v in t.speedup.items()},
                    'seconds_to_adam_tuned_final_loss': {c: number(v) for c, v in t.time_to_adam_loss.items()}})
    summary = {c: {'log10_ratio_iqm_vs_adam_tuned': number(self.log_ratio_iqm(c)),
                   'median_speedup_vs_adam_tuned': number(self.median_speedup(c)[0]),
                   'speedup_censored_tasks': self.median_speedup(c)[1],
                   'win_rate': {b: self.win_rate(c, b) for b in self.baselines},
                   'all_finite': all(t.results[c].finite for t in self.tasks)} for c in self.candidates}
    return {'candidates': list(self.candidates), 'baselines': list(self.baselines), 'seeds': self.num_seeds,
            'speedup_horizon': self.speedup_horizon, 'tasks': tasks, 'summary': summary}

  def plot(self, out_dir: str) -> list[str]:
    """Writes one learning-curve PNG per task and ``summary.png`` across tasks into ``out_dir``; returns the paths
    (the summary last). What they show: :mod:`evaluation.plots`."""
    from evaluation import plots  # pylint: disable=import-outside-toplevel
    return plots.write_figures(self, out_dir)


def _task_fingerprint(task: Task) -> list:
  """Parameter count and the loss at a fixed initialisation and training batch: what identifies a task's numbers."""
  key = jax.random.PRNGKey(0)
  params = task.init(key)
  loss = task.loss(params, key, task.batch(key, 'train'))
  return [int(sum(np.size(x) for x in jax.tree.leaves(params))), float(np.float32(loss))]


def _cache_path(cache_dir: str, entry: SuiteEntry, fingerprint: list, spec: OptimizerSpec, num_steps: int,
                seeds: int, eval_every: int | None, key: jax.Array, kind: str) -> str:
  identity = {'kind': kind, 'task': entry.name, 'fingerprint': fingerprint, 'with_test': entry.has_test_split,
              'optimizer': spec.name, 'lr_grid': list(spec.lr_grid or ()), 'num_steps': num_steps, 'seeds': seeds,
              'eval_every': eval_every, 'key': np.asarray(jax.random.key_data(key) if jnp.issubdtype(
                  key.dtype, jax.dtypes.prng_key) else key).tolist(),
              'versions': [jax.__version__, optax.__version__], 'loop_version': training.LOOP_VERSION}
  digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
  return os.path.join(cache_dir, f'{entry.name}.{spec.name}.{kind}.{digest}.npz')


def _cached_run(cache_dir: str | None, path_args: tuple, run: Callable[[], RunResult]) -> RunResult:
  """``run()``, or its result stored in ``cache_dir`` under the identity ``path_args`` (then stored)."""
  if cache_dir is None:
    return run()
  path = _cache_path(cache_dir, *path_args)
  if os.path.exists(path):
    with np.load(path) as f:
      test = f['test_loss'] if f['has_test'] else None
      lr = float(f['learning_rate']) if f['has_lr'] else None
      return RunResult(f['train_loss'], test, f['test_steps'], lr)
  result = run()
  os.makedirs(cache_dir, exist_ok=True)
  temporary = path + '.tmp.npz'  # written whole, then renamed: an interrupted write never leaves a bad entry
  np.savez(temporary, train_loss=result.train_loss,
           test_loss=result.test_loss if result.test_loss is not None else np.zeros(0),
           has_test=result.test_loss is not None, test_steps=result.test_steps,
           learning_rate=result.learning_rate or 0.0, has_lr=result.learning_rate is not None)
  os.replace(temporary, path)
  return result


def evaluate(candidates: Mapping[str, OptimizerSpec], suite: Sequence[SuiteEntry],
             baselines: Mapping[str, OptimizerSpec] | None = None, seeds: int = 3,
             speedup_horizon: float = 1.0, key: jax.Array | None = None, progress: bool = True,
             cache_dir: str | None = None, measure_time: bool = True) -> Report:
  """Runs every candidate and baseline on every suite task and compares them (see the module docstring).

  ``baselines`` must include ``'adam_tuned'`` (the speedup reference); :func:`default_baselines` does.
  ``cache_dir``: where baseline results are stored and reused (module docstring); None runs everything.
  ``measure_time``: measure each candidate's and tuned Adam's step time on this machine (never cached: it belongs
  to the machine) and report the wall-clock time to reach tuned Adam's final loss.
  """
  from tqdm.auto import tqdm
  baselines = dict(default_baselines() if baselines is None else baselines)
  if 'adam_tuned' not in baselines:
    raise ValueError("baselines must include 'adam_tuned', the reference of the speedup measure.")
  clash = set(candidates) & set(baselines)
  if clash:
    raise ValueError(f'candidate names {sorted(clash)} are also baseline names; rename them.')
  key = jax.random.PRNGKey(0) if key is None else key
  specs = {**candidates, **baselines}
  reports = []
  with tqdm(total=len(suite) * len(specs), desc='evaluate', disable=not progress) as bar:
    for entry in suite:
      results = {}
      fingerprint = _task_fingerprint(entry.task) if cache_dir is not None else None
      for name, spec in specs.items():
        bar.set_postfix_str(f'{entry.name}: {name}')
        run = functools.partial(run_optimizer, entry.task, spec, entry.num_steps, seeds,
                                with_test=entry.has_test_split, key=key)
        if name in baselines:
          identity = (entry, fingerprint, spec, entry.num_steps, seeds, None, key, 'run')
          results[name] = _cached_run(cache_dir, identity, run)
        else:
          results[name] = run()
        bar.update()
      # Tuned Adam, re-run at its chosen learning rate for `speedup_horizon` x the budget.
      adam = results['adam_tuned']
      if speedup_horizon > 1:
        long_steps = int(entry.num_steps * speedup_horizon)
        long_steps -= long_steps % max(1, entry.num_steps // 20)
        adam_lr = adam.learning_rate
        long_spec = OptimizerSpec(f'adam_long_lr{adam_lr:g}', lambda: optax.adam(adam_lr))
        eval_every = max(1, entry.num_steps // 20)
        run = functools.partial(run_optimizer, entry.task, long_spec, long_steps, seeds, eval_every=eval_every,
                                with_test=entry.has_test_split, key=key)
        identity = (entry, fingerprint, long_spec, long_steps, seeds, eval_every, key, 'reference')
        reference = _cached_run(cache_dir, identity, run).train_loss
      else:
        reference = adam.train_loss
      reference = np.mean(reference, axis=0)
      smoothing = max(1, int(math.ceil(entry.num_steps * FINAL_FRACTION)))
      speedup = {}
      for name in candidates:
        steps = steps_to_reach(reference, results[name].final_loss, smoothing)
        speedup[name] = None if steps is None else steps / entry.num_steps
      time_to_adam_loss = {}
      if measure_time:
        target = adam.final_loss
        for name in list(candidates) + ['adam_tuned']:
          spec, result = specs[name], results[name]
          tx = spec.make(result.learning_rate) if spec.lr_grid is not None else spec.make()
          result.step_seconds = measure_step_seconds(entry.task, tx, key=key)
          steps = steps_to_reach(np.mean(result.train_loss, axis=0), target, smoothing)
          time_to_adam_loss[name] = None if steps is None else steps * result.step_seconds
      reports.append(TaskReport(entry, results, speedup, time_to_adam_loss))
  return Report(reports, tuple(candidates), tuple(baselines), speedup_horizon)
