"""evaluation.against_report: candidates against a stored report's numbers, without re-running its baselines."""

import json
import math

import optax
import pytest

from evaluation import against_report
from evaluation import harness
from evaluation import validation

TASK = 'norm_22_p3'  # a cheap validation task (no data, no test split)
STEPS = 20


def _report(adam_tuned: float, adam_1e3: float) -> dict:
  return {'seeds': 2, 'candidates': ['old'], 'tasks': [{'name': TASK, 'num_steps': STEPS, 'results': {
      'adam_tuned': {'final_loss': adam_tuned, 'final_loss_std_over_seeds': 0.0, 'finite': True},
      'adam_1e-3': {'final_loss': adam_1e3, 'final_loss_std_over_seeds': 0.0, 'finite': True},
      'old': {'final_loss': None, 'finite': False}}}]}


def test_candidates_run_on_the_reports_budget_and_seeds_and_match_the_harness():
  spec = harness.OptimizerSpec('sgd', lambda: optax.sgd(1e-2))
  direct = harness.run_optimizer(validation.validation_suite([TASK], num_steps=STEPS)[0].task, spec, STEPS, seeds=2,
                                 with_test=False)
  # Stored numbers on either side of the candidate's: one win, one loss, against a stored diverged optimizer a win.
  report = _report(adam_tuned=direct.final_loss / 10, adam_1e3=direct.final_loss * 10)
  table = against_report.compare(report, {'sgd': spec}, 'validation')
  assert table[TASK]['sgd']['final_loss'] == pytest.approx(direct.final_loss, rel=1e-6)
  assert table[TASK]['adam_tuned']['final_loss'] == report['tasks'][0]['results']['adam_tuned']['final_loss']
  s = against_report.summary(table, ['sgd'])['sgd']
  assert s['wins'] == {'adam_tuned': 0, 'adam_1e-3': 1, 'old': 1}
  assert s['log10_ratio_iqm_vs_adam_tuned'] == pytest.approx(1.0, abs=1e-6)
  text = against_report.markdown(table, ['sgd'], 'r.json')
  assert f'| {TASK} |' in text and 'non-finite' in text  # the stored diverged optimizer is shown as such


def test_a_diverging_candidate_counts_as_worst_and_the_cli_writes_its_files(tmp_path):
  report_path = tmp_path / 'report.json'
  report_path.write_text(json.dumps(_report(adam_tuned=1.0, adam_1e3=2.0)))
  table = against_report.compare(json.loads(report_path.read_text()),
                                 {'wild': harness.OptimizerSpec('wild', lambda: optax.scale(math.nan))}, 'validation')
  s = against_report.summary(table, ['wild'])['wild']
  assert s['non_finite'] == 1 and s['log10_ratio_iqm_vs_adam_tuned'] == math.inf and s['wins']['old'] == 0
  # The command line: a built-in architecture name as the candidate, files written, names must be new.
  assert against_report.main([str(report_path), '--optimizer', 'lsgd=learnable_sgdm', '--out',
                              str(tmp_path / 'out')]) == 0
  assert (tmp_path / 'out' / 'comparison.md').exists()
  assert json.loads((tmp_path / 'out' / 'comparison.json').read_text())['summary']['lsgd']['tasks'] == 1
  with pytest.raises(SystemExit, match='already in the report'):
    against_report.main([str(report_path), '--optimizer', 'old=learnable_sgdm'])
  # This tool's own comparison.json is not a report: it says so and names the report to pass instead.
  with pytest.raises(SystemExit, match='not a report.json.*"report" field'):
    against_report.main([str(tmp_path / 'out' / 'comparison.json'), '--optimizer', 'x=learnable_sgdm'])
