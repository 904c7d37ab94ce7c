"""evaluation.release_gate: a pre-registered release rule, run stage by stage until one fails."""

import json
import os
import pathlib

import optax
import pytest

from evaluation import harness
from evaluation import release_gate
from evaluation import validation

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASK = 'norm_22_p3'  # a cheap validation task (no data, no test split)
STEPS = 20


def _spec():
  return harness.OptimizerSpec('adam', lambda: optax.adam(1e-2))


def _failing_spec():
  def factory():
    raise AssertionError('the gate ran the candidate although the stage was stored')
  return harness.OptimizerSpec('stored', factory)


def _write_report(path, adam_tuned, adam_1e3):
  report = {'seeds': 2, 'candidates': [], 'tasks': [{'name': TASK, 'num_steps': STEPS, 'results': {
      'adam_tuned': {'final_loss': adam_tuned, 'final_loss_std_over_seeds': 0.0, 'finite': True},
      'adam_1e-3': {'final_loss': adam_1e3, 'final_loss_std_over_seeds': 0.0, 'finite': True}}}]}
  path.write_text(json.dumps(report))
  return str(path)


def _rule_text(report_path, tuned_wins_needed):
  return f'''
name = "example"
[[stage]]
kind = "comparison"
report = "{report_path}"
min_wins = {{adam_1e-3 = 1}}
max_tasks_over = {{factor = 10, count = 0}}
[[stage]]
kind = "robustness"
suite = "validation"
tasks = ["{TASK}"]
steps = 11
seeds = 1
[[stage]]
kind = "comparison"
report = "{report_path}"
min_wins = {{adam_tuned = {tuned_wins_needed}}}
[[stage]]
kind = "robustness"
suite = "test"
steps = 500
seeds = 3
'''


@pytest.fixture(scope='module')
def candidate_loss():
  entry = validation.validation_suite([TASK], num_steps=STEPS)[0]
  return harness.run_optimizer(entry.task, _spec(), STEPS, seeds=2, with_test=False).final_loss


def test_stages_run_in_order_until_one_fails_and_a_rerun_reuses_the_stored_stages(tmp_path, candidate_loss):
  # Stored baselines on either side of the candidate's loss: it beats Adam 1e-3 (stage 1 holds), is within 10x of
  # tuned Adam, and loses to tuned Adam, so stage 3 (one win against tuned Adam) fails and stage 4, a test-suite
  # robustness check over hours, is never run.
  report = _write_report(tmp_path / 'report.json', adam_tuned=candidate_loss / 2, adam_1e3=candidate_loss * 2)
  rule = release_gate.parse_rule(_rule_text(report, tuned_wins_needed=1), 'rule.toml')
  out = tmp_path / 'gate'
  results = release_gate.run_gate(rule, 'cand', _spec(), str(out), identity='sha256:a', progress=False)
  assert [r is not None and r.passed for r in results[:3]] == [True, True, False] and results[3] is None
  assert release_gate.verdict(results) == 'fails'
  assert [c.measured for c in results[0].conditions] == ['1/1', '0']
  assert results[1].conditions[0].measured.startswith('1/1 tasks pass; worst peak / initial loss')
  assert results[2].conditions[0].measured == '0/1' and not results[2].conditions[0].holds
  decision = (out / 'decision.md').read_text()
  assert '**cand fails the rule at stage 3**' in decision and '| 4. robustness | not run |' in decision
  assert not (out / 'stage_4.json').exists()
  # Same candidate, same stages: nothing is run again (the spec would raise if it were called).
  again = release_gate.run_gate(rule, 'cand', _failing_spec(), str(out), identity='sha256:a', progress=False)
  assert [r.to_json() if r else None for r in again] == [r.to_json() if r else None for r in results]
  # Another candidate file under the same name: every stage runs again.
  with pytest.raises(AssertionError, match='although the stage was stored'):
    release_gate.run_gate(rule, 'cand', _failing_spec(), str(out), identity='sha256:b', progress=False)


def _two_task_robustness_rule(extra=''):
  return release_gate.parse_rule(f'''
name = "example"
[[stage]]
kind = "robustness"
suite = "validation"
tasks = ["{TASK}", "styblinski_tang"]
steps = 11
seeds = 1
{extra}''', 'rule.toml')


def _stored_first_task(max_ratio=1.0, **extra):
  """A check of the first task as an interrupted run stores it (``extra``: more SeedCheck fields)."""
  seed = {'initial_loss': 2.0, 'finite': True, 'descends_early': True, 'never_above_twice_initial': True,
          'max_ratio': max_ratio, **extra}
  return {'name': TASK, 'num_steps': 110, 'seeds': [seed]}


def test_a_robustness_stage_stopped_mid_way_resumes_after_its_last_finished_task(tmp_path):
  rule = _two_task_robustness_rule()
  out = tmp_path / 'gate'
  out.mkdir()
  # What a run stopped during the second task leaves: the first task's check, under the candidate and the stage.
  # Its peak ratio (1.5) is one no real run of this task gives, so the result shows whether it was reused.
  first = _stored_first_task(max_ratio=1.5)
  header = {'name': 'cand', 'identity': 'sha256:a', 'stage': rule.stages[0]}
  partial = out / 'stage_1.partial.json'
  partial.write_text(json.dumps({'header': header, 'tasks': [first]}))
  result, = release_gate.run_gate(rule, 'cand', _spec(), str(out), identity='sha256:a', progress=False)
  assert result.passed and '1.5 (norm_22_p3)' in result.conditions[0].measured
  assert not partial.exists() and (out / 'stage_1.json').exists()  # a finished stage keeps only its result
  # Stored for another candidate file, the finished task is run again.
  partial.write_text(json.dumps({'header': {**header, 'identity': 'sha256:b'}, 'tasks': [first]}))
  (out / 'stage_1.json').unlink()
  result, = release_gate.run_gate(rule, 'cand', _spec(), str(out), identity='sha256:a', progress=False)
  assert result.passed and '1.5 (norm_22_p3)' not in result.conditions[0].measured


def test_max_climb_bounds_the_worst_climb_from_the_best_tenth(tmp_path):
  rule = _two_task_robustness_rule('max_climb = 3\n')
  out = tmp_path / 'gate'
  out.mkdir()
  # The first task passes issue 10 C but climbed 10x from its best.
  header = {'name': 'cand', 'identity': 'sha256:a', 'stage': rule.stages[0]}
  (out / 'stage_1.partial.json').write_text(json.dumps({'header': header, 'tasks': [_stored_first_task(climb=10.0)]}))
  result, = release_gate.run_gate(rule, 'cand', _spec(), str(out), identity='sha256:a', progress=False)
  passes, climb = result.conditions
  assert passes.holds and (climb.measured, climb.bound, climb.holds) == ('10 (norm_22_p3)', '<= 3', False)
  assert not result.passed and '| 10 |' in result.table


def test_comparison_bounds_count_wins_iqm_and_tasks_over_a_factor():
  def row(cand, tuned):
    return {'c': {'final_loss': cand, 'finite': cand is not None}, 'adam_tuned': {'final_loss': tuned, 'finite': True}}
  # log10 ratios to tuned Adam: 0.5, 1.5, -1, undefined (tuned Adam reached exactly 0), +inf (diverged).
  table = {'a': row(10 ** 0.5, 1.0), 'b': row(10 ** 1.5, 1.0), 'c': row(0.1, 1.0), 'd': row(1e-4, 0.0),
           'e': row(None, 1.0)}
  assert release_gate.tasks_over(table, 'c', 10) == ['b', 'e']  # 'd' has no defined ratio: not counted
  stage = {'min_wins': {'adam_tuned': 1}, 'max_iqm': 0.6, 'max_tasks_over': {'factor': 10, 'count': 1}}
  conditions = {c.name: c for c in release_gate.comparison_conditions(stage, table, 'c')}
  assert conditions['wins vs adam_tuned'].measured == '1/5' and conditions['wins vs adam_tuned'].holds
  # IQM of the four defined ratios sorted (-1, 0.5, 1.5, inf): the middle two, (0.5 + 1.5) / 2 = 1.0 > 0.6.
  assert conditions['IQM log10(loss / tuned Adam)'].measured == '+1.000'
  assert not conditions['IQM log10(loss / tuned Adam)'].holds
  assert conditions['tasks over 10x tuned Adam'].measured == '2 (b, e)'
  assert not conditions['tasks over 10x tuned Adam'].holds
  # A bound missed in the fourth decimal is printed with four, so the verdict can be read from the numbers.
  tight = {'a': row(10 ** 0.0344, 1.0)}
  iqm, = release_gate.comparison_conditions({'max_iqm': 0.034}, tight, 'c')
  assert (iqm.measured, iqm.bound, iqm.holds) == ('+0.0344', '<= +0.0340', False)


@pytest.mark.parametrize('text, message', [
    ('name = "x"\n[[stage]]\nkind = "comparisn"\n', "kind must be one of"),
    ('name = "x"\nstages = 1\n', 'unknown top-level keys'),
    ('[[stage]]\nkind = "robustness"\n', 'needs name'),
    ('name = "x"\n[[stage]]\nkind = "comparison"\nreport = "r.json"\n', 'decides nothing'),
    ('name = "x"\n[[stage]]\nkind = "comparison"\nreport = "r.json"\nmax_iqm = 0\nmin_wins = {adam = -1}\n',
     'min_wins must map'),
    ('name = "x"\n[[stage]]\nkind = "robustness"\nsuite = "validation"\nsteps = 500\nseeds = 3\nmax_climb = 0.5\n',
     'max_climb must be a number >= 1'),
    ('name = "x"\n[[stage]]\nkind = "robustness"\nsuite = "validation"\nsteps = 10\nseeds = 3\n',
     'must exceed 100'),
    ('name = "x"\n[[stage]]\nkind = "robustness"\nsuite = "validation"\nsteps = 500\nseeds = 3\nhorizon = 10\n',
     r"unknown keys \['horizon'\]"),
])
def test_malformed_rules_are_refused_with_the_problem_named(text, message):
  with pytest.raises(ValueError, match=message):
    release_gate.parse_rule(text, 'rule.toml')


def test_preflight_refuses_test_suite_comparisons_and_unknown_names_before_running_anything(tmp_path):
  validation_report = _write_report(tmp_path / 'v.json', 1.0, 2.0)
  test_report = tmp_path / 't.json'
  test_report.write_text(json.dumps({'seeds': 3, 'tasks': [{'name': 'ackley', 'num_steps': 500, 'results': {
      'adam_tuned': {'final_loss': 19.2, 'finite': True}}}]}))

  def check(stage_toml, name='cand'):
    rule = release_gate.parse_rule(f'name = "x"\n[[stage]]\n{stage_toml}\n', 'rule.toml')
    release_gate.preflight(rule, name)

  with pytest.raises(ValueError, match='not a validation-suite report.*may only veto'):
    check(f'kind = "comparison"\nreport = "{test_report}"\nmax_iqm = 0')
  with pytest.raises(ValueError, match=r"min_wins names \['adam_3e-4'\]"):
    check(f'kind = "comparison"\nreport = "{validation_report}"\nmin_wins = {{adam_3e-4 = 1}}')
  with pytest.raises(ValueError, match="'adam_tuned' is already an optimizer"):
    check(f'kind = "comparison"\nreport = "{validation_report}"\nmax_iqm = 0', name='adam_tuned')
  with pytest.raises(ValueError, match='cannot read the report'):
    check(f'kind = "comparison"\nreport = "{tmp_path / "missing.json"}"\nmax_iqm = 0')
  comparison_json = tmp_path / 'comparison.json'  # against_report's output keeps its tasks in a dict
  comparison_json.write_text('{"report": "r.json", "tasks": {}}')
  with pytest.raises(ValueError, match=r'stage 1: .*is not a report.json'):
    check(f'kind = "comparison"\nreport = "{comparison_json}"\nmax_iqm = 0')
  with pytest.raises(ValueError, match=r"tasks \['digits_mlp'\] are not in the validation suite"):
    check('kind = "robustness"\nsuite = "validation"\ntasks = ["digits_mlp"]\nsteps = 500\nseeds = 3')
  check(f'kind = "comparison"\nreport = "{validation_report}"\nmax_iqm = 0')  # a well-formed stage passes


def test_the_cli_refuses_a_candidate_that_is_not_a_file(tmp_path, capsys):
  rule = tmp_path / 'rule.toml'
  rule.write_text('name = "x"\n[[stage]]\nkind = "robustness"\nsuite = "validation"\nsteps = 500\nseeds = 3\n')
  with pytest.raises(SystemExit):
    release_gate.main([str(rule), '--optimizer', 'hierarchical_rnn', '--out', str(tmp_path / 'out')])
  assert 'is not a file' in capsys.readouterr().err


def test_every_committed_rule_file_parses_and_passes_preflight(monkeypatch):
  # A rule is committed before its candidate's runs; it must still run when the candidate is ready.
  monkeypatch.chdir(REPO)  # rules name their reports relative to the repository root
  rules = sorted(pathlib.Path('docs', 'release_rules').glob('*.toml'))
  assert rules, 'docs/release_rules/ holds no rule'
  for path in rules:
    rule = release_gate.load_rule(str(path))
    release_gate.preflight(rule, rule.name)
