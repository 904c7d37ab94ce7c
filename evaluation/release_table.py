"""The model card's per-task table: candidates from several ``comparison.json`` files beside the stored baselines.

Each release section of a model card shows, per task, the new release, the one before it, tuned Adam and Adam 1e-3:
final training loss as mean ± standard deviation over seeds, and the mean final test loss in brackets where the task
has a test split. The numbers come from ``comparison.json`` files written by :mod:`evaluation.against_report` on the
same stored report (so the same tasks, seeds and baselines)::

    python -m evaluation.release_table docs/eval_round14/test_500_candidate23/comparison.json \\
        docs/eval_round13/test_500_candidate22/comparison.json --name candidate23='release 10' \\
        --name candidate22='release 9'

Below the table it counts, per candidate, the tasks whose *test* loss beats tuned Adam's (training-loss wins are in
``comparison.md``), since the card reports both.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from evaluation import against_report

BASELINES = ('adam_tuned', 'adam_1e-3')
BASELINE_TITLES = {'adam_tuned': 'tuned Adam', 'adam_1e-3': 'Adam 1e-3'}


def load_candidates(paths: Sequence[str]) -> tuple[dict, list[str]]:
  """Reads comparison files; returns ``({task: {optimizer: numbers}}, candidate names in the files' order)``.

  Every file must come from the same stored report and hold the same tasks; a candidate name may appear only once.
  """
  rows: dict = {}
  candidates: list[str] = []
  report = None
  for path in paths:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get('tasks'), dict) or 'summary' not in data:
      raise ValueError(f'{path} is not a comparison.json of python -m evaluation.against_report.')
    if report is None:
      report = data['report']
      rows = {task: {b: row[b] for b in BASELINES if b in row} for task, row in data['tasks'].items()}
    elif data['report'] != report:
      raise ValueError(f'{path} compares against {data["report"]}, the first file against {report}: tables from '
                       'different reports do not share baselines.')
    elif set(data['tasks']) != set(rows):
      raise ValueError(f'{path} has tasks {sorted(data["tasks"])}, the first file {sorted(rows)}.')
    for cand in data['summary']:
      if cand in candidates:
        raise ValueError(f'candidate {cand!r} appears in two files; rename one with --name in against_report.')
      candidates.append(cand)
      for task, row in data['tasks'].items():
        rows[task][cand] = row[cand]
  return rows, candidates


def cell(result: dict | None) -> str:
  """``mean ± std (test)`` for one optimizer on one task; ``non-finite`` for a diverged run."""
  text = against_report.cell(result)
  test = result.get('final_test_loss') if result is not None else None
  if test is not None and text != 'non-finite':
    text += f' ({test:.3g})'
  return text


def test_loss_wins(rows: dict, candidate: str, reference: str = 'adam_tuned') -> tuple[int, int]:
  """(tasks whose mean final test loss is below ``reference``'s, tasks where both have one)."""
  wins = total = 0
  for row in rows.values():
    a, b = row.get(candidate, {}).get('final_test_loss'), row.get(reference, {}).get('final_test_loss')
    if a is None or b is None:
      continue
    total += 1
    wins += a < b
  return wins, total


def markdown(rows: dict, candidates: Sequence[str], titles: dict[str, str]) -> str:
  """The card's table: bold first candidate, then the others, then the baselines; test-loss wins below it."""
  columns = list(candidates) + [b for b in BASELINES if any(b in r for r in rows.values())]

  def title(name, i):
    text = titles.get(name, BASELINE_TITLES.get(name, name))
    return f'**{text}**' if i == 0 else text

  lines = ['| task | ' + ' | '.join(title(c, i) for i, c in enumerate(columns)) + ' |',
           '|---|' + '---:|' * len(columns)]
  for task, row in rows.items():
    lines.append(f'| {task} | ' + ' | '.join(cell(row.get(c)) for c in columns) + ' |')
  lines.append('')
  for cand in candidates:
    wins, total = test_loss_wins(rows, cand)
    lines.append(f'{titles.get(cand, cand)}: test loss below tuned Adam\'s on {wins} of {total} tasks with a test '
                 'split.')
  return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m evaluation.release_table', description=__doc__.split('\n\n')[0])
  parser.add_argument('comparisons', nargs='+', help='comparison.json files of against_report on one stored report')
  parser.add_argument('--name', action='append', default=[],
                      help="CANDIDATE='column title' (repeatable; default: the candidate's own name)")
  args = parser.parse_args(argv)
  titles = {}
  for item in args.name:
    key, sep, value = item.partition('=')
    if not sep or not key:
      raise SystemExit(f"--name {item!r}: expected CANDIDATE='column title'.")
    titles[key] = value
  try:
    rows, candidates = load_candidates(args.comparisons)
  except (OSError, ValueError, json.JSONDecodeError) as e:
    raise SystemExit(str(e)) from None
  unknown = sorted(set(titles) - set(candidates))
  if unknown:
    raise SystemExit(f'--name: {unknown} are not candidates of these files (they hold {candidates}).')
  print(markdown(rows, candidates, titles), end='')
  return 0


if __name__ == '__main__':
  sys.exit(main())
