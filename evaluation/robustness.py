"""Robustness checks: what every shipped optimizer must do on every task and seed, whatever else it does.

For a training run of ``num_steps`` steps with per-step training losses ``f_0, f_1, ...`` (``f_0`` at the initial
parameters), a run *passes* when all three hold:

1. **finite**: every ``f_t`` is finite, over ``horizon_multiple`` (default 10) times the task's step budget;
2. **descends early**: the mean of ``f_t`` over the window of :data:`EARLY_WINDOW` steps ending at step
   :data:`EARLY_STEP` (100) is below ``f_0`` (a window because minibatch losses are noisy; the window is short
   enough that a run that has not descended by step 100 cannot pass on later progress);
3. **never blows up**: every ``f_t <= 2 f_0`` (raw per-step losses, no smoothing: a single spike counts).

Each seed also reports, without it deciding the pass, how far its loss **climbed back from its best**: the mean of
``f_t`` over the run's last tenth divided by the lowest mean over any of its ten tenths (1 for a loss that ends at its
best; tenths because minibatch losses are noisy). A run can climb 10x from its minimum and stay far below ``2 f_0`` on
a landscape whose initial loss is huge; a release rule may bound the climb (``max_climb`` in
:mod:`evaluation.release_gate`).

``f_0`` must be positive for 2 and 3 to mean anything; every network task of the suites has a positive loss. Tasks
whose initial loss is <= 0 report the checks as not applicable (``None``) rather than passing them silently.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from evaluation.harness import OptimizerSpec, SuiteEntry, run_optimizer

#: The step by which the loss must be below its initial value.
EARLY_STEP = 100
#: Steps averaged up to :data:`EARLY_STEP` for the "descends early" check.
EARLY_WINDOW = 10
#: The loss may never exceed this multiple of its initial value.
BLOWUP_FACTOR = 2.0
#: The climb compares the mean loss over the last of this many equal blocks of the run with the lowest block mean.
CLIMB_BLOCKS = 10


@dataclasses.dataclass(frozen=True)
class SeedCheck:
  """The three checks for one task and seed (``None``: not applicable, the initial loss is <= 0)."""
  initial_loss: float
  finite: bool
  descends_early: bool | None
  never_above_twice_initial: bool | None
  max_ratio: float  # max_t f_t / f_0 (inf when a loss is non-finite)
  # Mean over the last tenth / lowest mean over a tenth (NaN: undefined, or a check stored before it was measured).
  climb: float = math.nan

  @property
  def passed(self) -> bool:
    return self.finite and self.descends_early is not False and self.never_above_twice_initial is not False


def check_curve(train_loss: np.ndarray) -> SeedCheck:
  """The checks of the module docstring on one seed's per-step training losses ``[steps]``."""
  losses = np.asarray(train_loss, np.float64)
  if losses.size <= EARLY_STEP:
    raise ValueError(f'a robustness check needs more than {EARLY_STEP} steps, got {losses.size}.')
  initial = float(losses[0])
  finite = bool(np.all(np.isfinite(losses)))
  if not initial > 0:
    return SeedCheck(initial, finite, None, None, math.nan)
  early = float(np.mean(losses[EARLY_STEP - EARLY_WINDOW + 1:EARLY_STEP + 1]))
  peak = float(np.max(losses)) if finite else math.inf
  return SeedCheck(initial, finite, bool(early < initial), bool(peak <= BLOWUP_FACTOR * initial), peak / initial,
                   climb(losses))


def climb(train_loss: np.ndarray, blocks: int = CLIMB_BLOCKS) -> float:
  """Mean loss over the last of ``blocks`` equal blocks of the run / the lowest block mean (>= 1; the steps that do
  not fill a block are dropped from the front). ``inf`` when a loss is non-finite; NaN when the lowest block mean
  is not positive or the run is shorter than ``blocks`` steps."""
  losses = np.asarray(train_loss, np.float64)
  size = losses.size // blocks
  if size == 0:
    return math.nan
  if not np.all(np.isfinite(losses)):
    return math.inf
  means = losses[losses.size - size * blocks:].reshape(blocks, size).mean(axis=1)
  best = float(np.min(means))
  return float(means[-1]) / best if best > 0 else math.nan


@dataclasses.dataclass(frozen=True)
class TaskCheck:
  name: str
  num_steps: int
  seeds: tuple[SeedCheck, ...]

  @property
  def passed(self) -> bool:
    return all(s.passed for s in self.seeds)


def check_robustness(spec: OptimizerSpec, suite: Sequence[SuiteEntry], seeds: int = 3,
                     horizon_multiple: float = 10.0, progress: bool = True) -> list[TaskCheck]:
  """Runs ``spec`` on every task of ``suite`` for ``horizon_multiple`` times its budget and checks every seed."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  checks = []
  for entry in tqdm(suite, desc=f'robustness of {spec.name}', disable=not progress):
    num_steps = int(round(entry.num_steps * horizon_multiple))
    eval_every = max(1, num_steps // 10)
    num_steps -= num_steps % eval_every
    result = run_optimizer(entry.task, spec, num_steps, seeds=seeds, eval_every=eval_every, with_test=False)
    checks.append(TaskCheck(entry.name, num_steps, tuple(check_curve(curve) for curve in result.train_loss)))
  return checks


def markdown(checks: Sequence[TaskCheck]) -> str:
  """One row per task: pass/fail, the steps run, and the worst seed's numbers."""
  lines = ['| task | steps | passed | finite | below f_0 by step 100 | max f_t / f_0 (worst seed) | '
           'climb: last / best tenth (worst seed) |',
           '|---|---|---|---|---|---|---|']

  def cell(values):
    if any(v is None for v in values):
      return 'n/a'
    return f'{sum(values)}/{len(values)}'

  for check in checks:
    seeds = check.seeds
    # worst_seed skips NaN (not applicable) seeds; a plain max over floats would depend on where a NaN sits.
    lines.append(f'| {check.name} | {check.num_steps} | {"yes" if check.passed else "**no**"} | '
                 f'{cell([s.finite for s in seeds])} | {cell([s.descends_early for s in seeds])} | '
                 f'{worst_seed([check], "max_ratio")[0]:.3g} | {worst_seed([check], "climb")[0]:.3g} |')
  return '\n'.join(lines)


def worst_seed(checks: Sequence[TaskCheck], field: str) -> tuple[float, str]:
  """The largest defined value of a :class:`SeedCheck` field (``'max_ratio'`` or ``'climb'``) over the tasks' seeds,
  and its task; ``(nan, '')`` when no seed has one (NaN: not applicable, or not measured)."""
  values = [(getattr(s, field), c.name) for c in checks for s in c.seeds if not math.isnan(getattr(s, field))]
  return max(values) if values else (math.nan, '')


def main(argv: list[str] | None = None) -> int:
  """``python -m evaluation.robustness --optimizer FILE.npz --suite validation --steps 500`` prints the table."""
  import argparse  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  from evaluation import cli  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog='python -m evaluation.robustness', description=__doc__.split('\n\n')[0])
  parser.add_argument('--optimizer', default='hierarchical_rnn',
                      help='NAME=FILE.npz, FILE.npz or an architecture name (default: the shipped HRNN)')
  parser.add_argument('--suite', choices=sorted(cli.SUITES), default='validation')
  parser.add_argument('--tasks', default=None, help='comma-separated task names (default: the whole suite)')
  parser.add_argument('--steps', type=int, default=500, help='the horizon H; runs last 10 H by default')
  parser.add_argument('--multiple', type=float, default=10.0, help='run length as a multiple of --steps')
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--out', default=None, help='also write the table to this markdown file')
  args = parser.parse_args(argv)
  name, spec = cli.candidate(args.optimizer)
  module = cli.SUITES[args.suite]
  names = module.ALL_TASKS if args.tasks is None else [t for t in args.tasks.split(',') if t]
  suite = cli.build_suite(args.suite, names, args.steps)
  checks = check_robustness(spec, suite, seeds=args.seeds, horizon_multiple=args.multiple)
  table = (f'Robustness of {name} on the {args.suite} suite, {args.seeds} seeds, {args.multiple:g} x {args.steps} '
           f'steps:\n\n' + markdown(checks))
  print(table)
  if args.out:
    pathlib.Path(args.out).write_text(table + '\n')
  return 0 if all(c.passed for c in checks) else 1


if __name__ == '__main__':
  raise SystemExit(main())
