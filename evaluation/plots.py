"""Figures of an evaluation report (:class:`evaluation.harness.Report`): per-task learning curves and a summary.

:func:`write_figures` (what ``Report.plot`` and ``python -m evaluation`` call) writes into one directory:

* ``TASK.png`` for every task (:func:`curve_figure`): the training loss of every optimizer, smoothed by a trailing
  running mean of :func:`smoothing_window` steps (5% of the budget, the window of the reports' "final loss", so the
  smoothed curve ends exactly at the final loss of ``report.md``), with the unsmoothed seed-mean curve faint behind
  it and the spread over seeds (min..max) as a band; next to it the test loss at each evaluation, where the task has
  a test split. Tuned optimizers show their chosen learning rate in the legend, e.g. ``adam (tuned, lr=3.2e-3)``.
  The y axis is logarithmic when no loss is negative and the curves fall by a decade or more from the initial loss
  (:func:`uses_log_scale`; a loss of exactly 0 is drawn on the bottom edge and labelled ``[reaches 0]``).
* ``summary.png`` (:func:`summary_figure`): for each optimizer but tuned Adam, the distribution over tasks of
  ``log10(final loss / tuned Adam's final loss)`` as a box plot with one point per task, the zero line (tuned Adam)
  and the interquartile mean of the table (IQM, :meth:`evaluation.harness.Report.log_ratio_iqm`). Tasks where the
  ratio is not a finite number are drawn in a panel of their own, never dropped: the optimizer diverged (ratio
  +inf), reached a loss of exactly 0 (ratio -inf), or the ratio is undefined (a loss <= 0, or tuned Adam diverged).

Figures are matplotlib ``Figure`` objects made outside pyplot and rendered by the Agg backend (no display needed,
and a notebook's backend is left alone); :func:`curve_figure` and :func:`summary_figure` return them before anything
is written, so tests can inspect their artists, and :func:`summary_data` holds the numbers behind the summary.
"""

from __future__ import annotations

import dataclasses
import math
import os
import textwrap
from typing import Sequence

import numpy as np

from evaluation import harness

#: File name of the summary figure, written next to the per-task PNGs.
SUMMARY_FILE = 'summary.png'

#: The reference of the summary's ratios (and the black line of every learning-curve figure).
REFERENCE = 'adam_tuned'

#: Smallest factor by which the curves must fall below the initial loss to be drawn on a logarithmic axis.
LOG_SCALE_SPAN = 10.0

_DPI = 110


def _figure(**kwargs):
  """A matplotlib ``Figure`` outside pyplot: ``savefig`` renders PNGs with Agg, no display is needed, and neither
  pyplot's global backend (a notebook's, say) nor its list of open figures is touched. Imported late: the harness
  runs without matplotlib until it plots."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure(layout='constrained', **kwargs)


def format_lr(lr: float) -> str:
  """A learning rate in short scientific notation: ``0.0031622`` -> ``'3.2e-3'``, ``0.001`` -> ``'1e-3'``,
  ``1.0`` -> ``'1'``."""
  mantissa, exponent = f'{lr:.1e}'.split('e')
  mantissa = mantissa.rstrip('0').rstrip('.')
  return mantissa if int(exponent) == 0 else f'{mantissa}e{int(exponent)}'


def optimizer_label(name: str, result: harness.RunResult | None = None) -> str:
  """The legend label of an optimizer: ``adam_tuned`` with learning rate 3e-3 becomes ``adam (tuned, lr=3e-3)``;
  an untuned optimizer keeps its name; a run with non-finite losses says so."""
  label = name
  if result is not None and result.learning_rate is not None:
    base = name[:-len('_tuned')] if name.endswith('_tuned') else name
    label = f'{base} (tuned, lr={format_lr(result.learning_rate)})'
  elif name.endswith('_tuned'):
    label = f'{name[:-len("_tuned")]} (tuned)'
  if result is not None and not result.finite:
    label += ' [non-finite]'
  return label


def smoothing_window(num_steps: int) -> int:
  """Steps of the running mean of the curves: :data:`evaluation.harness.FINAL_FRACTION` of the budget (>= 1)."""
  return max(1, int(math.ceil(num_steps * harness.FINAL_FRACTION)))


def smooth(curves: np.ndarray, window: int) -> np.ndarray:
  """Trailing running mean over the last axis, same length: entry ``t`` is the mean of steps ``t-window+1..t``
  (of the steps so far near the start). The last entry is the harness's final loss of that curve."""
  curves = np.asarray(curves, np.float64)
  window = max(1, min(int(window), curves.shape[-1]))
  # Sums of each window, not differences of a cumulative sum: losses spanning many decades keep their precision.
  head = np.cumsum(curves[..., :window - 1], axis=-1) / np.arange(1, window)
  tail = np.lib.stride_tricks.sliding_window_view(curves, window, axis=-1).mean(axis=-1)
  return np.concatenate([head, tail], axis=-1)


def _colours(names: Sequence[str]) -> dict:
  """One colour per optimizer, the same in every figure of a report; tuned Adam (the reference) is black."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  palette = matplotlib.colormaps['tab10' if len(names) <= 11 else 'tab20']
  others = [n for n in names if n != REFERENCE]
  colours = {name: palette(i % palette.N) for i, name in enumerate(others)}
  if REFERENCE in names:
    colours[REFERENCE] = 'black'
  return colours


def _finite(values) -> np.ndarray:
  values = np.asarray(values, np.float64).ravel()
  return values[np.isfinite(values)]


def _concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
  return _finite(np.concatenate([np.ravel(a) for a in arrays])) if len(arrays) else np.zeros(0)


def uses_log_scale(curves: Sequence[np.ndarray], initial: float) -> bool:
  """Whether losses belong on a logarithmic axis: no finite value is negative, and from the initial loss the curves
  descend by a factor of :data:`LOG_SCALE_SPAN` (a decade) or more. Exact zeros (a loss that underflows) do not
  forbid it: they are drawn on the bottom edge. A transient spike above the initial loss does not ask for it."""
  values = _concat(curves)
  positive = values[values > 0]
  if not (values.size and positive.size and values.min() >= 0 and math.isfinite(initial) and initial > 0):
    return False
  return bool(min(initial, positive.max()) / positive.min() >= LOG_SCALE_SPAN)


def _y_limits(means: Sequence[np.ndarray], lows: Sequence[np.ndarray], initial: float,
              log: bool) -> tuple[float, float] | None:
  """Limits that show every curve's descent: from the lowest band or mean to the highest mean, but no higher than
  well above the initial loss (a blow-up leaves the top of the plot instead of flattening every other curve)."""
  means, lows = _concat(means), _concat(list(lows) + list(means))
  if log:
    means, lows = means[means > 0], lows[lows > 0]
  if means.size == 0 or lows.size == 0:
    return None
  lo, hi = float(lows.min()), float(means.max())
  if log:
    if math.isfinite(initial) and initial > 0:
      hi = min(hi, 10.0 * initial)
    return lo / 1.5, max(hi, lo) * 1.5
  if math.isfinite(initial):
    hi = min(hi, initial + 0.5 * abs(initial - lo))
  margin = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
  return lo - margin, hi + margin


def _minor_log_label(y: float, _=None) -> str:
  """Label of a minor tick of a log axis: ``'0.2'``, ``'30'``, ``'5'`` for 2, 3 and 5 x 10^k, else none."""
  if not (y > 0 and math.isfinite(y)):
    return ''
  mantissa = y / 10.0**math.floor(math.log10(y))
  return f'{y:g}' if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ''


@dataclasses.dataclass
class _Curves:
  """What one optimizer's learning curves draw (:func:`curve_figure`)."""
  steps: np.ndarray
  raw_mean: np.ndarray     # seed-mean of the unsmoothed training loss
  mean: np.ndarray         # seed-mean of the smoothed training loss
  low: np.ndarray          # min over seeds of the smoothed training loss
  high: np.ndarray         # max over seeds
  test_steps: np.ndarray | None = None
  test_mean: np.ndarray | None = None
  test_low: np.ndarray | None = None
  test_high: np.ndarray | None = None


def _curves(result: harness.RunResult, window: int, with_test: bool) -> _Curves:
  smoothed = smooth(result.train_loss, window)  # [seeds, steps]
  curves = _Curves(np.arange(1, smoothed.shape[-1] + 1), np.mean(result.train_loss, axis=0),
                   np.mean(smoothed, axis=0), smoothed.min(axis=0), smoothed.max(axis=0))
  if with_test:
    test = np.asarray(result.test_loss, np.float64)
    curves.test_steps, curves.test_mean = np.asarray(result.test_steps), np.mean(test, axis=0)
    curves.test_low, curves.test_high = test.min(axis=0), test.max(axis=0)
  return curves


def curve_figure(task: harness.TaskReport, names: Sequence[str], candidates: Sequence[str] = (),
                 colours: dict | None = None):
  """The learning-curve figure of one task (module docstring); returns the matplotlib ``Figure``.

  Args:
    task: one task of a report.
    names: the optimizers to draw, in legend order.
    candidates: the ones drawn thick (the optimizers under evaluation); the others are thinner.
    colours: optimizer name -> colour (default: :func:`_colours` of ``names``).

  The training axes is ``fig.axes[0]`` (titled ``'training loss ...'``); with a test split, ``fig.axes[1]`` holds the
  test loss. Each optimizer with more than one seed gets one band (a ``PolyCollection``) per axes. On a log axis a
  loss of exactly 0 is drawn on the bottom edge, and the legend says ``[reaches 0]``.
  """
  import matplotlib.ticker  # pylint: disable=import-outside-toplevel
  colours = colours or _colours(names)
  entry = task.entry
  results = {n: task.results[n] for n in names}
  seeds = int(next(iter(results.values())).train_loss.shape[0])
  window = smoothing_window(entry.num_steps)
  with_test = entry.has_test_split and all(r.test_loss is not None for r in results.values())
  curves = {n: _curves(results[n], window, with_test) for n in names}

  initial = float(np.median([c.raw_mean[0] for c in curves.values()]))
  means = [c.mean for c in curves.values()] + [c.test_mean for c in curves.values() if with_test]
  lows = [c.low for c in curves.values()] + [c.test_low for c in curves.values() if with_test]
  log = uses_log_scale(means, initial)
  limits = _y_limits(means, lows, initial, log)
  floor = limits[0] if log and limits is not None else None

  def drawn(values):  # on a log axis, zeros (and anything below the axis) sit on its bottom edge
    return values if floor is None else np.where(values < floor, floor, values)

  fig = _figure(figsize=(11.5 if with_test else 8.0, 4.4))
  axes = fig.subplots(1, 2 if with_test else 1, sharey=True, squeeze=False)
  ax_train = axes[0, 0]
  for name in names:
    c, is_candidate, colour = curves[name], name in candidates, colours[name]
    line = dict(color=colour, lw=2.2 if is_candidate else 1.3, zorder=4 if is_candidate else 3)
    band = dict(color=colour, alpha=0.22 if is_candidate else 0.1, lw=0, zorder=2)  # baselines' bands lighter
    label = optimizer_label(name, results[name])
    if floor is not None and np.any(c.mean <= 0):
      label += ' [reaches 0]'
    ax_train.plot(c.steps, drawn(c.raw_mean), color=colour, lw=0.5, alpha=0.25, zorder=1)
    if seeds > 1:
      ax_train.fill_between(c.steps, drawn(c.low), drawn(c.high), **band)
    ax_train.plot(c.steps, drawn(c.mean), label=label, **line)
    if with_test:
      ax_test = axes[0, 1]
      ax_test.plot(c.test_steps, drawn(c.test_mean), marker='o', ms=3, **line)
      if seeds > 1:
        ax_test.fill_between(c.test_steps, drawn(c.test_low), drawn(c.test_high), **band)

  spread = f'band: min–max over {seeds} seeds' if seeds > 1 else '1 seed, no band'
  ax_train.set_title(f'training loss: mean over seeds of a {window}-step running mean\n'
                     f'({spread}; faint: unsmoothed)', fontsize=9)
  ax_train.set(xlabel='step', ylabel='training loss' + (' (log scale)' if log else ''))
  if with_test:
    test_steps = curves[names[0]].test_steps
    every = int(test_steps[0]) if len(test_steps) else 0
    ax_test = axes[0, 1]
    ax_test.set_title(f'test loss, every {every} steps: mean over seeds\n({spread})', fontsize=9)
    ax_test.set(xlabel='step', ylabel='test loss')
    ax_test.yaxis.set_tick_params(labelleft=True)
  for ax in axes[0]:
    if log:
      ax.set_yscale('log')
      if limits is not None and limits[1] / limits[0] < 1e3:
        # Under three decades, plain numbers, and the minor ticks 2, 3 and 5 x 10^k labelled too: an axis
        # from 0.15 to 20 is not left with two labels.
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f'{y:g}'))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_minor_log_label))
        ax.tick_params(axis='y', which='minor', labelsize=7)
    ax.grid(True, which='major', alpha=0.3)
    ax.set_xlim(0, entry.num_steps)
  if limits is not None:
    ax_train.set_ylim(*limits)
  fig.suptitle(f'{entry.name}: {entry.num_steps} steps, {seeds} seed{"s" if seeds != 1 else ""}'
               + ('' if with_test else ' (no test split)'), fontsize=12)
  fig.legend(loc='outside right center', fontsize=8, frameon=False)
  return fig


@dataclasses.dataclass
class RatioRow:
  """One optimizer's row of the summary figure: where each task's ``log10(final loss / tuned Adam's)`` lies.

  Every task of the report appears in exactly one of ``finite``, ``diverged``, ``zero`` and ``undefined``.
  """
  name: str
  label: str
  finite: dict[str, float]   # task -> log10 ratio
  diverged: list[str]        # the optimizer's final loss is not finite (tuned Adam's is): ratio +inf
  zero: list[str]            # the optimizer's final loss is exactly 0 (tuned Adam's is positive): ratio -inf
  undefined: list[str]       # no ratio: tuned Adam diverged, or a final loss is negative (or Adam's is 0)
  iqm: float                 # Report.log_ratio_iqm, as in report.md (diverged tasks count as +inf)
  reasons: dict[str, str] = dataclasses.field(default_factory=dict)  # task -> why its ratio is not finite

  @property
  def num_tasks(self) -> int:
    return len(self.finite) + len(self.diverged) + len(self.zero) + len(self.undefined)


def summary_data(report: harness.Report, reference: str = REFERENCE) -> list[RatioRow]:
  """The numbers behind :func:`summary_figure`: one :class:`RatioRow` per optimizer (candidates first) except the
  reference."""
  rows = []
  for name in list(report.candidates) + list(report.baselines):
    if name == reference:
      continue
    finite, diverged, zero, undefined, reasons = {}, [], [], [], {}
    for t in report.tasks:
      mine, ref = t.results[name].final_loss, t.results[reference].final_loss
      task = t.entry.name
      ratio = harness.log10_ratio(mine, ref)  # the ratio report.md's IQM uses, so the two agree task by task
      if math.isfinite(ratio):
        finite[task] = ratio
      elif ratio == math.inf:
        diverged.append(task)
        reasons[task] = 'diverged'
      elif ratio == -math.inf:
        zero.append(task)
        reasons[task] = 'final loss 0'
      else:
        undefined.append(task)
        if not math.isfinite(ref):
          reasons[task] = 'tuned Adam diverged'
        elif ref <= 0:
          reasons[task] = "tuned Adam's final loss is 0" if ref == 0 else "tuned Adam's final loss is negative"
        else:
          reasons[task] = 'negative final loss'
    rows.append(RatioRow(name, optimizer_label(name), finite, diverged, zero, undefined,
                         report.log_ratio_iqm(name, reference), reasons))
  return rows


def summary_figure(report: harness.Report, reference: str = REFERENCE):
  """The summary figure across tasks (module docstring); returns the matplotlib ``Figure``.

  ``fig.axes[0]`` holds the finite ratios: one ``PathCollection`` (scatter) per optimizer with one point per task
  whose ratio is finite, ``gid`` = the optimizer's name. ``fig.axes[1]`` holds the tasks without a finite ratio,
  one scatter per optimizer and kind, ``gid`` = ``'NAME:diverged'``, ``'NAME:zero'`` or ``'NAME:undefined'``.
  """
  import matplotlib.patches  # pylint: disable=import-outside-toplevel
  rows = summary_data(report, reference)
  names = list(report.candidates) + list(report.baselines)
  colours = _colours(names)
  height = 1.3 + 0.45 * max(1, len(rows))
  fig = _figure(figsize=(10.0, height))
  ax, ax_out = fig.subplots(1, 2, sharey=True, width_ratios=[5, 1.35])
  rng = np.random.default_rng(0)  # the same jitter every time
  ys = np.arange(len(rows))[::-1]  # candidates on top
  all_finite = [v for row in rows for v in row.finite.values()]
  kinds = (('zero', 'loss 0\n(−∞)', 'v'), ('diverged', 'diverged\n(+∞)', 'X'), ('undefined', 'no ratio', 's'))
  iqm_label = 'IQM (report.md; a diverged task counts as +inf)'
  for y, row in zip(ys, rows):
    colour = colours[row.name]
    values = np.array(list(row.finite.values()))
    if values.size >= 2:
      ax.boxplot(values, positions=[y], orientation='horizontal', widths=0.55, showfliers=False,
                 patch_artist=True, boxprops=dict(facecolor='none', edgecolor='0.55'),
                 medianprops=dict(color='0.35'), whiskerprops=dict(color='0.55'), capprops=dict(color='0.55'),
                 manage_ticks=False, zorder=2)
    jitter = rng.uniform(-0.17, 0.17, size=values.size)
    ax.scatter(values, y + jitter, s=22, color=colour, alpha=0.85, edgecolor='white', linewidth=0.4, zorder=3,
               gid=row.name)
    if math.isfinite(row.iqm):
      ax.plot([row.iqm, row.iqm], [y - 0.32, y + 0.32], color='crimson', lw=2.4, zorder=4, solid_capstyle='butt',
              label=iqm_label)
      iqm_label = None  # one legend entry
    elif not math.isnan(row.iqm):  # diverged (or zero) tasks reach the middle half: say so at the edge
      ax.annotate(f'IQM {"+" if row.iqm > 0 else "−"}∞', (1.0 if row.iqm > 0 else 0.0, y),
                  xycoords=('axes fraction', 'data'), ha='right' if row.iqm > 0 else 'left', va='center', fontsize=8,
                  color='crimson')
    for x, (kind, _, marker) in enumerate(kinds):
      tasks_of_kind = getattr(row, kind)
      ax_out.scatter(np.full(len(tasks_of_kind), x, float) + rng.uniform(-0.2, 0.2, size=len(tasks_of_kind)),
                     np.full(len(tasks_of_kind), y, float) + rng.uniform(-0.17, 0.17, size=len(tasks_of_kind)),
                     s=30, marker=marker, color=colour, zorder=3, gid=f'{row.name}:{kind}')
      if tasks_of_kind:
        ax_out.annotate(str(len(tasks_of_kind)), (x, y + 0.27), fontsize=7.5, ha='center', va='bottom',
                        color='0.25')
  ax.axvline(0.0, color='black', lw=1.0, zorder=1, label='tuned Adam')
  if all_finite:
    span = max(0.1, float(np.max(np.abs(all_finite))))
    ax.set_xlim(min(-0.1, min(all_finite) - 0.08 * span), max(0.1, max(all_finite) + 0.08 * span))
  labels = [f'{row.label}\n{len(row.finite)} of {row.num_tasks} tasks finite' for row in rows]
  ax.set_yticks(ys, labels, fontsize=8)
  ax.set_ylim(-0.6, len(rows) - 0.4)
  ax.grid(True, axis='x', alpha=0.3)
  ax.set_xlabel("log10(final training loss / tuned Adam's)     ← better than tuned Adam | worse →")
  handles, _ = ax.get_legend_handles_labels()
  box = matplotlib.patches.Patch(facecolor='none', edgecolor='0.55',
                                 label='box: quartiles, median, 1.5-IQR whiskers')
  ax.legend(handles=handles + [box], loc='lower left', bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize=8,
            frameon=False, borderaxespad=0.2, columnspacing=1.2)
  ax_out.set_xticks(range(len(kinds)), [k[1] for k in kinds], fontsize=7.5)
  ax_out.set_xlim(-0.5, len(kinds) - 0.5)
  ax_out.set_title('not a finite ratio\n(count per row)', fontsize=8.5)
  ax_out.tick_params(axis='y', left=False)
  ax_out.grid(True, axis='x', alpha=0.3)
  footnote = _non_finite_footnote(report, rows)
  if footnote:
    fig.supxlabel(footnote, fontsize=7.5, x=0.01, ha='left', color='0.25')
  budgets = sorted({t.entry.num_steps for t in report.tasks})
  steps = '/'.join(str(b) for b in budgets)
  fig.suptitle(f'Final training loss relative to tuned Adam: {len(report.tasks)} tasks, {steps} steps, '
               f'{report.num_seeds} seeds (one point per task)', fontsize=11)
  return fig


def _non_finite_footnote(report: harness.Report, rows: Sequence[RatioRow], width: int = 150) -> str:
  """Which task lacks a finite ratio for which optimizer, and why, e.g.
  ``'Not a finite ratio: wine_mlp (all: tuned Adam's final loss is 0); norm_22_p3 (dog: diverged).'``"""
  parts = []
  for t in report.tasks:
    by_reason = {}
    for row in rows:
      if t.entry.name in row.reasons:
        by_reason.setdefault(row.reasons[t.entry.name], []).append(row.name)
    if by_reason:
      reasons = [f'{"all" if len(who) == len(rows) > 1 else ", ".join(who)}: {reason}'
                 for reason, who in by_reason.items()]
      parts.append(f'{t.entry.name} ({"; ".join(reasons)})')
  if not parts:
    return ''
  return textwrap.fill('Not a finite ratio: ' + '; '.join(parts) + '.', width)


def write_figures(report: harness.Report, out_dir: str) -> list[str]:
  """Writes ``TASK.png`` for every task and :data:`SUMMARY_FILE` into ``out_dir`` (created); returns the paths, the
  summary last."""
  os.makedirs(out_dir, exist_ok=True)
  names = list(report.candidates) + list(report.baselines)
  colours = _colours(names)
  paths = []
  for t in report.tasks:
    fig = curve_figure(t, names, report.candidates, colours)
    paths.append(os.path.join(out_dir, f'{t.entry.name}.png'))
    fig.savefig(paths[-1], dpi=_DPI)
  if report.tasks and REFERENCE in names:
    fig = summary_figure(report)
    paths.append(os.path.join(out_dir, SUMMARY_FILE))
    fig.savefig(paths[-1], dpi=_DPI)
  return paths
