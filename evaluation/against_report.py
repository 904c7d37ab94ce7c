"""Candidates against the stored numbers of an earlier report: no baseline runs.

``python -m evaluation`` tunes Adam on every task before it reports anything, which on the 2,000-step validation
suite is most of an hour of CPU. When a committed ``report.json`` of the same suite, step budget and seeds already
holds those baselines, this runs only the candidates (the same harness, so the same seeds, initial parameters and
batches: :func:`evaluation.harness.run_optimizer` is deterministic given its key) and compares them with the stored
final losses::

    python -m evaluation.against_report docs/eval_release3/validation_2000_shipped.json \\
        --optimizer new=runs/x/export.npz --out runs/val_2000_new

It prints (and writes to ``--out``) a markdown table of final training losses, mean ± std over seeds, with the
report's own optimizers beside them, and per candidate the wins against every stored optimizer and the IQM of
:func:`evaluation.harness.log10_ratio` to tuned Adam (a diverged task counts as ``+inf``). What it cannot give:
learning curves of the stored optimizers, speedups, and the step time of anything (the report holds only numbers).
The comparison is only as fair as the stored report is current: if the task definitions or the training loop changed
since it was written, run ``python -m evaluation`` instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Sequence

import numpy as np

from evaluation import cli
from evaluation import harness

REFERENCE = 'adam_tuned'


def compare(report: dict, candidates: dict[str, harness.OptimizerSpec], suite: str,
            tasks: Sequence[str] | None = None) -> dict:
  """Runs ``candidates`` on the report's tasks, step budget and seeds; returns ``{task: {optimizer: numbers}}``.

  The report's optimizers keep their stored numbers; each candidate gets ``final_loss``, ``final_loss_std_over_seeds``
  and ``finite``.
  """
  entries = {t['name']: t for t in report['tasks']}
  names = list(tasks) if tasks else list(entries)
  unknown = unknown_tasks(report, names)
  if unknown:
    raise ValueError(f'tasks {unknown} are not in the report (it has {sorted(entries)}).')
  table = {}
  for name in names:
    stored = entries[name]
    entry = cli.build_suite(suite, [name], stored['num_steps'])[0]
    results = {k: dict(v) for k, v in stored['results'].items()}
    for cand, spec in candidates.items():
      run = harness.run_optimizer(entry.task, spec, entry.num_steps, seeds=report['seeds'],
                                  with_test=entry.has_test_split)
      results[cand] = {'final_loss': run.final_loss, 'final_loss_std_over_seeds': run.final_loss_std,
                       'final_test_loss': run.final_test_loss, 'finite': run.finite}
    table[name] = results
    print(f'{name}: ' + ', '.join(f'{c} {results[c]["final_loss"]:.4g}' for c in candidates), file=sys.stderr,
          flush=True)
  return table


def unknown_tasks(report: dict, tasks: Sequence[str]) -> list[str]:
  """The names in ``tasks`` that ``report`` holds no task of, sorted."""
  return sorted(set(tasks) - {t['name'] for t in report['tasks']})


def summary(table: dict, candidates: Sequence[str]) -> dict:
  """Per candidate: wins against every other optimizer of the table and the IQM of log10 ratios to tuned Adam."""
  others = sorted({k for row in table.values() for k in row})
  out = {}
  for cand in candidates:
    wins = {o: sum(comparable_loss(row[cand]) < comparable_loss(row[o]) for row in table.values())
            for o in others if o != cand}
    ratios = [harness.log10_ratio(comparable_loss(row[cand]), comparable_loss(row[REFERENCE]))
              for row in table.values()]
    out[cand] = {'wins': wins, 'tasks': len(table), 'log10_ratio_iqm_vs_adam_tuned': harness.interquartile_mean(ratios),
                 'non_finite': sum(not row[cand]['finite'] for row in table.values())}
  return out


def comparable_loss(result: dict) -> float:
  """A table entry's final loss for ranking: ``inf`` when the run diverged or has no loss."""
  loss = result.get('final_loss')
  return float('inf') if loss is None or not result.get('finite', True) else float(loss)


def cell(result: dict | None) -> str:
  """``mean ± std`` of one optimizer's final training loss on one task; ``non-finite`` for a diverged run."""
  if result is None:
    return ''
  loss = result.get('final_loss')
  if loss is None or not result.get('finite', True) or not math.isfinite(loss):
    return 'non-finite'
  std = result.get('final_loss_std_over_seeds')
  return f'{loss:.3g}' + (f' ± {std:.2g}' if std is not None else '')


def markdown(table: dict, candidates: Sequence[str], report_path: str) -> str:
  names = list(candidates) + sorted({k for row in table.values() for k in row} - set(candidates))
  lines = [f'Final training loss, mean ± std over seeds; stored numbers from `{report_path}` beside the candidates.',
           '', '| task | ' + ' | '.join(names) + ' |', '|---|' + '---:|' * len(names)]
  for task, row in table.items():
    lines.append(f'| {task} | ' + ' | '.join(cell(row.get(n)) for n in names) + ' |')
  lines += ['', '| candidate | ' + ' | '.join(f'wins vs {o}' for o in names if o not in candidates)
            + ' | IQM log10(loss / tuned Adam) | non-finite |',
            '|---|' + '---:|' * (len(names) - len(candidates) + 2)]
  for cand, s in summary(table, candidates).items():
    wins = ' | '.join(f'{s["wins"][o]}/{s["tasks"]}' for o in names if o not in candidates)
    lines.append(f'| {cand} | {wins} | {s["log10_ratio_iqm_vs_adam_tuned"]:+.3f} | {s["non_finite"]} |')
  return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m evaluation.against_report', description=__doc__.split('\n\n')[0])
  parser.add_argument('report', help='a report.json written by python -m evaluation')
  parser.add_argument('--optimizer', action='append', required=True,
                      help='NAME=FILE.npz, FILE.npz or an architecture name (repeatable)')
  parser.add_argument('--suite', choices=sorted(cli.SUITES), default=None,
                      help="the report's suite (default: guessed from its task names)")
  parser.add_argument('--tasks', default=None, help='comma-separated subset of the report\'s tasks')
  parser.add_argument('--out', default=None, help='directory for comparison.md and comparison.json')
  args = parser.parse_args(argv)
  try:
    report = load_report(args.report)
  except ValueError as e:
    raise SystemExit(str(e)) from None
  try:
    suite = args.suite or guess_suite(report)
  except ValueError as e:
    raise SystemExit(str(e)) from None
  candidates = dict(cli.candidate(s) for s in args.optimizer)
  clash = set(candidates) & {k for t in report['tasks'] for k in t['results']}
  if clash:
    raise SystemExit(f'--optimizer names {sorted(clash)} are already in the report: choose other names.')
  tasks = args.tasks.split(',') if args.tasks else None
  unknown = unknown_tasks(report, tasks or ())
  if unknown:
    raise SystemExit(f'--tasks: {unknown} are not in the report (it has {sorted(t["name"] for t in report["tasks"])}).')
  table = compare(report, candidates, suite, tasks)
  text = markdown(table, list(candidates), args.report)
  print(text)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'comparison.md'), 'w', encoding='utf-8') as f:
      f.write(text)
    with open(os.path.join(args.out, 'comparison.json'), 'w', encoding='utf-8') as f:
      json.dump({'report': args.report, 'seeds': report['seeds'], 'tasks': table,
                 'summary': summary(table, list(candidates))}, f, indent=1, default=_json_number)
  return 0


def load_report(path: str) -> dict:
  """Reads a ``report.json`` written by ``python -m evaluation``; ``ValueError`` naming the problem otherwise."""
  try:
    with open(path, encoding='utf-8') as f:
      report = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f'cannot read the report {path} ({e}).') from None
  if not isinstance(report, dict) or not isinstance(report.get('tasks'), list):
    # A comparison.json (this tool's own output) keeps its tasks in a dict, and holds no runs to compare against.
    raise ValueError(f'{path} is not a report.json of python -m evaluation (its "tasks" is not a list; a '
                     'comparison.json written by python -m evaluation.against_report cannot be compared against): '
                     'pass the report it was made from, named in its "report" field.')
  return report


def guess_suite(report: dict) -> str:
  """The suite (``'test'`` or ``'validation'``) whose tasks hold all of a report's; ``ValueError`` when neither."""
  names = {t['name'] for t in report['tasks']}
  for suite, module in cli.SUITES.items():
    if names <= set(module.ALL_TASKS):
      return suite
  raise ValueError('cannot tell the report\'s suite from its task names: pass --suite.')


def _json_number(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  raise TypeError(f'not JSON serialisable: {type(x)}')


if __name__ == '__main__':
  sys.exit(main())
