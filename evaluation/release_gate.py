"""A candidate's pre-registered release rule, run stage by stage until a stage fails.

A learned optimizer replaces the shipped one only under a rule written down before any of its runs (the model cards
hold each candidate's rule and result). This module runs such a rule from a TOML file committed before the
candidate's evaluation, so the commit dates the rule, and writes the decision::

    python -m evaluation.release_gate docs/release_rules/candidate21.toml \\
        --optimizer candidate21=runs/x/export.npz --out docs/eval_round13/gate_candidate21

A rule is a list of stages, run in the file's order; the first stage that fails ends the run (the later stages are
reported as not run: their hours of compute could not change the decision). Two kinds of stage:

- ``comparison``: the candidate against a stored **validation** report (:mod:`evaluation.against_report`: the
  report's seeds and budget, no baselines re-run), with bounds on wins against stored optimizers
  (``min_wins = {adam_1e-3 = 12}``), on the interquartile mean of ``log10(loss / tuned Adam)`` (``max_iqm``), and
  on the number of tasks whose loss is more than ``factor`` times tuned Adam's (``max_tasks_over = {factor = 10,
  count = 1}``; tasks where the ratio is undefined, such as tuned Adam reaching exactly 0, are not counted).
  Comparisons on the test suite are refused: the test suite reports, it decides nothing.
- ``robustness``: :func:`evaluation.robustness.check_robustness` on a suite's tasks (all of them by default) for
  ``multiple`` (10) times ``steps``, with ``seeds`` seeds; every task and seed must pass. Optionally ``max_climb``
  bounds how far any seed's loss climbs back from its best (mean over the run's last tenth / lowest mean over a
  tenth; the robustness check itself only reports it). On the test suite this is the one decision the test suite
  may take part in, a veto: it can withdraw a candidate, never choose one.

Each finished stage is stored as ``stage_K.json`` in the output directory with the candidate's identity (the
SHA-256 of its file) and the stage's definition; a rerun with the same candidate and stage reuses it, so an
interrupted gate resumes where it stopped. A robustness stage also stores each finished task as it goes
(``stage_K.partial.json``, removed when the stage ends), so a run stopped mid-stage loses only the task under way.
``decision.md`` holds every condition with its measured value and bound, and the verdict. Exit status: 0 when every
stage passes, 1 when one fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import tomllib
from typing import Any, Sequence

from evaluation import against_report
from evaluation import cli
from evaluation import harness
from evaluation import robustness

#: The reference optimizer of the IQM and of ``max_tasks_over`` (a stored report's per-task tuned Adam).
REFERENCE = against_report.REFERENCE

_STAGE_KEYS = {
    'comparison': {'kind', 'report', 'tasks', 'min_wins', 'max_iqm', 'max_tasks_over'},
    'robustness': {'kind', 'suite', 'tasks', 'steps', 'seeds', 'multiple', 'max_climb'},
}


@dataclasses.dataclass(frozen=True)
class Condition:
  """One bound of a stage: what was measured, against what, and whether it holds."""
  name: str
  measured: str
  bound: str
  holds: bool


@dataclasses.dataclass(frozen=True)
class StageResult:
  """A finished stage: its conditions, and the markdown table of what it ran."""
  title: str
  conditions: tuple[Condition, ...]
  table: str

  @property
  def passed(self) -> bool:
    return all(c.holds for c in self.conditions)

  def to_json(self) -> dict:
    return {'title': self.title, 'conditions': [dataclasses.asdict(c) for c in self.conditions], 'table': self.table}

  @classmethod
  def from_json(cls, data: dict) -> 'StageResult':
    return cls(data['title'], tuple(Condition(**c) for c in data['conditions']), data['table'])


@dataclasses.dataclass(frozen=True)
class Rule:
  """A parsed rule file: its name, its stages (dicts as in the file, checked) and the file it came from."""
  name: str
  stages: tuple[dict, ...]
  path: str = ''


def _fail(path: str, message: str) -> ValueError:
  return ValueError(f'{path}: {message}')


def parse_rule(text: str, path: str = '<rule>') -> Rule:
  """Parses and checks a rule file's text (see the module docstring); raises ``ValueError`` naming the problem."""
  try:
    data = tomllib.loads(text)
  except tomllib.TOMLDecodeError as e:
    raise _fail(path, f'not valid TOML ({e}).') from None
  unknown = set(data) - {'name', 'stage'}
  if unknown:
    raise _fail(path, f'unknown top-level keys {sorted(unknown)}; a rule has "name" and [[stage]] tables.')
  name = data.get('name')
  if not isinstance(name, str) or not name:
    raise _fail(path, 'needs name = "..." (the candidate the rule was written for).')
  stages = data.get('stage')
  if not isinstance(stages, list) or not stages:
    raise _fail(path, 'needs at least one [[stage]] table (kind = "comparison" or "robustness").')
  for i, stage in enumerate(stages, 1):
    _check_stage(stage, f'{path}, stage {i}')
  return Rule(name, tuple(stages), path)


def load_rule(path: str) -> Rule:
  with open(path, encoding='utf-8') as f:
    return parse_rule(f.read(), path)


def _check_stage(stage: dict, where: str) -> None:
  kind = stage.get('kind')
  if kind not in _STAGE_KEYS:
    raise _fail(where, f'kind must be one of {sorted(_STAGE_KEYS)}, got {kind!r}.')
  unknown = set(stage) - _STAGE_KEYS[kind]
  if unknown:
    raise _fail(where, f'unknown keys {sorted(unknown)} for a {kind} stage (it takes {sorted(_STAGE_KEYS[kind])}).')
  tasks = stage.get('tasks')
  if tasks is not None and (not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks)):
    raise _fail(where, f'tasks must be a non-empty list of task names, got {tasks!r}.')
  if kind == 'comparison':
    if not isinstance(stage.get('report'), str):
      raise _fail(where, 'a comparison needs report = "PATH" (a report.json of python -m evaluation --suite '
                  'validation).')
    bounds = [k for k in ('min_wins', 'max_iqm', 'max_tasks_over') if k in stage]
    if not bounds:
      raise _fail(where, 'a comparison without min_wins, max_iqm or max_tasks_over decides nothing; give at least '
                  'one bound.')
    wins = stage.get('min_wins', {})
    if not isinstance(wins, dict) or not all(_is_count(v) for v in wins.values()):
      raise _fail(where, f'min_wins must map stored optimizers to counts, e.g. {{adam_1e-3 = 12}}; got {wins!r}.')
    if 'max_iqm' in stage and not isinstance(stage['max_iqm'], (int, float)):
      raise _fail(where, f'max_iqm must be a number, got {stage["max_iqm"]!r}.')
    over = stage.get('max_tasks_over')
    if over is not None and not (isinstance(over, dict) and set(over) == {'factor', 'count'}
                                 and isinstance(over['factor'], (int, float)) and over['factor'] > 0
                                 and _is_count(over['count'])):
      raise _fail(where, f'max_tasks_over must be {{factor = F, count = N}} with F > 0, got {over!r}.')
  else:
    if stage.get('suite') not in cli.SUITES:
      raise _fail(where, f'suite must be one of {sorted(cli.SUITES)}, got {stage.get("suite")!r}.')
    for key in ('steps', 'seeds'):
      if not _is_count(stage.get(key)) or stage[key] < 1:
        raise _fail(where, f'{key} must be an integer >= 1, got {stage.get(key)!r}.')
    climb = stage.get('max_climb', 1)
    if isinstance(climb, bool) or not isinstance(climb, (int, float)) or climb < 1:
      raise _fail(where, f'max_climb must be a number >= 1 (the loss over the last tenth of the run / its lowest '
                  f'over a tenth), got {climb!r}.')
    multiple = stage.get('multiple', 10)
    if not isinstance(multiple, (int, float)) or multiple * stage['steps'] <= robustness.EARLY_STEP:
      raise _fail(where, f'multiple x steps must exceed {robustness.EARLY_STEP} (the early-descent check\'s step), '
                  f'got {multiple!r} x {stage["steps"]}.')


def _is_count(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def comparison_conditions(stage: dict, table: dict, candidate: str) -> tuple[Condition, ...]:
  """The bounds of a comparison stage on a table of :func:`evaluation.against_report.compare`."""
  summary = against_report.summary(table, [candidate])[candidate]
  conditions = []
  for other, count in stage.get('min_wins', {}).items():
    if other not in summary['wins']:
      raise ValueError(f'min_wins names {other!r}, which the report does not hold (it has '
                       f'{sorted(summary["wins"])}).')
    won = summary['wins'][other]
    conditions.append(Condition(f'wins vs {other}', f'{won}/{summary["tasks"]}', f'>= {count}', won >= count))
  if 'max_iqm' in stage:
    iqm = summary['log10_ratio_iqm_vs_adam_tuned']
    measured, bound = _distinct(iqm, stage['max_iqm'])
    conditions.append(Condition('IQM log10(loss / tuned Adam)', measured, f'<= {bound}',
                                bool(iqm <= stage['max_iqm'])))  # NaN (no defined ratio) fails
  if 'max_tasks_over' in stage:
    factor, count = stage['max_tasks_over']['factor'], stage['max_tasks_over']['count']
    over = tasks_over(table, candidate, factor)
    conditions.append(Condition(f'tasks over {factor:g}x tuned Adam', f'{len(over)}' + (f' ({", ".join(over)})'
                                                                                        if over else ''),
                                f'<= {count}', len(over) <= count))
  return tuple(conditions)


def _distinct(value: float, bound: float) -> tuple[str, str]:
  """``value`` and ``bound`` with 3 decimals, or with as many more (up to 8) as it takes to print them apart, so that
  a verdict on +0.0344 against +0.034 does not read "+0.034 <= +0.034: no"."""
  for digits in range(3, 9):
    shown = f'{value:+.{digits}f}', f'{bound:+.{digits}f}'
    if shown[0] != shown[1] or value == bound:
      break
  return shown


def tasks_over(table: dict, candidate: str, factor: float) -> list[str]:
  """Tasks whose candidate loss exceeds ``factor`` times tuned Adam's (undefined ratios are not counted)."""
  limit = math.log10(factor)
  out = []
  for task, row in table.items():
    ratio = harness.log10_ratio(against_report.comparable_loss(row[candidate]),
                                against_report.comparable_loss(row[REFERENCE]))
    if not math.isnan(ratio) and ratio > limit:
      out.append(task)
  return out


def preflight(rule: Rule, name: str) -> None:
  """Checks, in seconds, what would otherwise fail a stage hours into the gate: every comparison's report exists, is
  a validation report and holds the stage's tasks and the optimizers its ``min_wins`` names, and not ``name``; every
  robustness stage's tasks are in its suite. Raises ``ValueError`` naming the stage and the problem."""
  for k, stage in enumerate(rule.stages, 1):
    where = f'{rule.path or "rule"}, stage {k}'
    if stage['kind'] == 'comparison':
      report = _read_report(stage['report'], where)
      optimizers = {o for t in report['tasks'] for o in t['results']}
      unknown = against_report.unknown_tasks(report, stage.get('tasks') or ())
      if unknown:
        raise _fail(where, f'tasks {unknown} are not in {stage["report"]} (it has '
                    f'{sorted(t["name"] for t in report["tasks"])}).')
      missing = sorted(set(stage.get('min_wins', {})) - optimizers)
      if missing:
        raise _fail(where, f'min_wins names {missing}, which {stage["report"]} does not hold (it has '
                    f'{sorted(optimizers)}).')
      if REFERENCE not in optimizers and ('max_iqm' in stage or 'max_tasks_over' in stage):
        raise _fail(where, f'{stage["report"]} holds no {REFERENCE!r}, the reference of max_iqm and max_tasks_over.')
      if name in optimizers:
        raise _fail(where, f'the candidate\'s name {name!r} is already an optimizer of {stage["report"]}: pass '
                    'another with --optimizer NAME=FILE.')
    else:
      unknown = sorted(set(stage.get('tasks') or ()) - set(cli.SUITES[stage['suite']].ALL_TASKS))
      if unknown:
        raise _fail(where, f'tasks {unknown} are not in the {stage["suite"]} suite.')


def _read_report(path: str, where: str) -> dict:
  try:
    report = against_report.load_report(path)
  except ValueError as e:
    raise _fail(where, str(e)) from None
  try:
    suite = against_report.guess_suite(report)
  except ValueError:
    suite = 'unknown'
  if suite != 'validation':
    raise _fail(where, f'{path} is not a validation-suite report (its tasks are {suite!r}\'s): a release rule '
                'compares only on the validation suite; the test suite reports, and may only veto through a '
                'robustness stage.')
  return report


def _run_comparison(stage: dict, name: str, spec: harness.OptimizerSpec) -> StageResult:
  report = _read_report(stage['report'], 'comparison stage')
  table = against_report.compare(report, {name: spec}, 'validation', stage.get('tasks'))
  steps = sorted({t['num_steps'] for t in report['tasks']})
  title = (f'comparison on the validation suite, {"/".join(map(str, steps))} steps, '
           f'{_count(report["seeds"], "seed")} (`{stage["report"]}`)')
  return StageResult(title, comparison_conditions(stage, table, name),
                     against_report.markdown(table, [name], stage['report']))


def _run_robustness(stage: dict, name: str, spec: harness.OptimizerSpec, progress: bool,
                    partial: tuple[str, dict] | None = None) -> StageResult:
  """``partial``: ``(path, header)``; each finished task is stored there under ``header`` (the candidate and the
  stage), and tasks stored under the same header by an interrupted run are not run again."""
  suite_name = stage['suite']
  names = stage.get('tasks') or list(cli.SUITES[suite_name].ALL_TASKS)
  multiple = stage.get('multiple', 10)
  done: dict[str, robustness.TaskCheck] = {}
  if partial:
    stored = _read_json(partial[0])
    if stored and stored.get('header') == partial[1]:
      done = {t['name']: _task_check(t) for t in stored['tasks']}
      print(f'  reusing {len(done)} finished task(s) of {partial[0]}', file=sys.stderr)
  checks = []
  # One task at a time, stopping at the first failure: the stage has failed, the rest cannot change that.
  for entry in cli.build_suite(suite_name, names, stage['steps']):
    if entry.name in done:
      checks.append(done[entry.name])
    else:
      checks += robustness.check_robustness(spec, [entry], seeds=stage['seeds'], horizon_multiple=multiple,
                                            progress=progress)
      if partial:  # a stage runs for hours: a sitting that ends mid-stage keeps what it finished
        _write_json(partial[0], {'header': partial[1], 'tasks': [dataclasses.asdict(c) for c in checks]})
    if not checks[-1].passed:
      break
  failed = [c.name for c in checks if not c.passed]
  role = ' (veto only)' if suite_name == 'test' else ''
  title = (f'robustness on the {suite_name} suite{role}, {_count(stage["seeds"], "seed")}, '
           f'{multiple:g} x {stage["steps"]} steps')
  measured = f'{len(checks) - len(failed)}/{len(names)} tasks pass'
  if failed:
    measured += f'; failed: {", ".join(failed)}, the rest not run'
  worst, task = robustness.worst_seed(checks, 'max_ratio')
  if task:
    measured += f'; worst peak / initial loss {worst:.3g} ({task})'
  conditions = [Condition('every task and seed passes', measured, f'{len(names)}/{len(names)}', not failed)]
  if 'max_climb' in stage:
    # Undefined climbs (a loss whose lowest tenth is not positive) are not counted.
    worst, task = robustness.worst_seed(checks, 'climb')
    conditions.append(Condition('climb: last / best tenth of the run, worst task and seed',
                                'none defined' if math.isnan(worst) else f'{worst:.3g} ({task})',
                                f'<= {stage["max_climb"]:g}', math.isnan(worst) or worst <= stage['max_climb']))
  return StageResult(title, tuple(conditions), robustness.markdown(checks))


def _task_check(data: dict) -> robustness.TaskCheck:
  return robustness.TaskCheck(data['name'], data['num_steps'],
                              tuple(robustness.SeedCheck(**seed) for seed in data['seeds']))


def _count(n: int, noun: str) -> str:
  return f'{n} {noun}' + ('' if n == 1 else 's')


def run_gate(rule: Rule, name: str, spec: harness.OptimizerSpec, out_dir: str, identity: str,
             progress: bool = True) -> list[StageResult | None]:
  """Runs ``rule``'s stages for the candidate ``spec`` until one fails; ``None`` for the stages not run.

  Runs :func:`preflight` first. ``identity`` names what is judged (the CLI passes the SHA-256 of the candidate's
  file); a stage stored in ``out_dir`` by an earlier run is reused only when its identity, candidate name and
  definition all match.
  """
  preflight(rule, name)
  os.makedirs(out_dir, exist_ok=True)
  results: list[StageResult | None] = []
  for k, stage in enumerate(rule.stages, 1):
    if any(r is not None and not r.passed for r in results):
      results.append(None)
      continue
    path = os.path.join(out_dir, f'stage_{k}.json')
    # What a stored stage (or a robustness stage's finished tasks) must have been run for to be reused.
    header = {'name': name, 'identity': identity, 'stage': stage}
    stored = _read_json(path)
    if stored and {key: stored.get(key) for key in header} == header:
      result = StageResult.from_json(stored['result'])
      print(f'stage {k}: reusing {path}', file=sys.stderr)
    else:
      print(f'stage {k}: {stage["kind"]}', file=sys.stderr, flush=True)
      partial = os.path.join(out_dir, f'stage_{k}.partial.json')
      result = (_run_comparison(stage, name, spec) if stage['kind'] == 'comparison'
                else _run_robustness(stage, name, spec, progress, (partial, header)))
      _write_json(path, {**header, 'result': result.to_json()})
      if os.path.exists(partial):
        os.remove(partial)
    results.append(result)
    _write_decision(rule, name, identity, results + [None] * (len(rule.stages) - len(results)), out_dir)
  return results


def _write_json(path: str, data: dict) -> None:
  # Written beside, then renamed: a sitting that ends mid-write leaves the previous file, not half of one.
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(data, f, indent=1)
  os.replace(path + '.tmp', path)


def _read_json(path: str) -> dict | None:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def verdict(results: Sequence[StageResult | None]) -> str:
  """``'passes'`` when every stage ran and passed, ``'fails'`` when one failed, else ``'incomplete'``."""
  if any(r is not None and not r.passed for r in results):
    return 'fails'
  return 'passes' if all(r is not None for r in results) else 'incomplete'


def decision_markdown(rule: Rule, name: str, identity: str, results: Sequence[StageResult | None]) -> str:
  """The decision: one row per condition, then each stage's table."""
  outcome = verdict(results)
  failed = [k for k, r in enumerate(results, 1) if r is not None and not r.passed]
  line = {'passes': f'**{name} passes every stage of the rule.**',
          'fails': f'**{name} fails the rule at stage {failed[0]}**; later stages were not run.' if failed else '',
          'incomplete': f'**Incomplete**: {name} has passed every stage run so far.'}[outcome]
  lines = [f'# Release gate: {name}', '', f'Rule `{rule.path}` (rule name `{rule.name}`); candidate identity '
           f'`{identity}`.', '', line, '', 'Each stage\'s runs are in its section below.', '',
           '| stage | condition | measured | bound | holds |', '|---|---|---|---|---|']
  for k, (stage, result) in enumerate(zip(rule.stages, results), 1):
    if result is None:
      lines.append(f'| {k}. {stage["kind"]} | not run | | | |')
      continue
    for c in result.conditions:
      lines.append(f'| {k}. {stage["kind"]} | {c.name} | {c.measured} | {c.bound} | {"yes" if c.holds else "**no**"} |')
  for k, result in enumerate(results, 1):
    if result is not None:
      lines += ['', f'## Stage {k}: {result.title}', '', result.table.rstrip()]
  return '\n'.join(lines) + '\n'


def _write_decision(rule, name, identity, results, out_dir) -> None:
  with open(os.path.join(out_dir, 'decision.md'), 'w', encoding='utf-8') as f:
    f.write(decision_markdown(rule, name, identity, results))


def file_identity(path: str) -> str:
  """``sha256:<hex>`` of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return f'sha256:{digest.hexdigest()}'


def main(argv: list[str] | None = None) -> int:
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog='python -m evaluation.release_gate', description=__doc__.split('\n\n')[0])
  parser.add_argument('rule', help='a rule file (TOML; see the module docstring)')
  parser.add_argument('--optimizer', required=True, help='NAME=FILE.npz or FILE.npz: the candidate')
  parser.add_argument('--out', required=True, help='directory for stage_K.json and decision.md')
  args = parser.parse_args(argv)
  try:
    rule = load_rule(args.rule)
  except (OSError, ValueError) as e:
    parser.error(str(e))
  path = args.optimizer.rpartition('=')[2]
  if not os.path.isfile(path):
    parser.error(f'--optimizer {args.optimizer!r}: {path} is not a file; a release gate judges a saved optimizer '
                 '(export a run with python -m meta_train.run.export RUN FILE.npz).')
  name, spec = cli.candidate(args.optimizer)
  results = run_gate(rule, name, spec, args.out, file_identity(path))
  print(decision_markdown(rule, name, file_identity(path), results))
  return 0 if verdict(results) == 'passes' else 1


if __name__ == '__main__':
  sys.exit(main())
