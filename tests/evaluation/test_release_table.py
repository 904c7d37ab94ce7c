"""The model card's table from comparison files: known answers on hand-made files, and clear errors."""

import json

import pytest

from evaluation import release_table


def _comparison(path, report, candidate, losses, tests):
  tasks = {}
  for task, loss in losses.items():
    tasks[task] = {
        candidate: {'final_loss': loss, 'final_loss_std_over_seeds': 0.1 * loss, 'final_test_loss': tests[task],
                    'finite': True},
        'adam_tuned': {'final_loss': 1.0, 'final_loss_std_over_seeds': 0.01, 'final_test_loss': 2.0 if tests[task]
                       else None, 'finite': True},
        'adam_1e-3': {'final_loss': 3.0, 'final_loss_std_over_seeds': None, 'final_test_loss': None, 'finite': True},
    }
  path.write_text(json.dumps({'report': report, 'seeds': 3, 'tasks': tasks, 'summary': {candidate: {}}}))
  return str(path)


def test_table_puts_candidates_beside_the_baselines_with_test_loss_in_brackets(tmp_path, capsys):
  new = _comparison(tmp_path / 'new.json', 'r.json', 'cand_new', {'a': 0.5, 'b': 2.0}, {'a': 1.5, 'b': None})
  old = _comparison(tmp_path / 'old.json', 'r.json', 'cand_old', {'a': 0.8, 'b': 4.0}, {'a': 2.5, 'b': None})
  assert release_table.main([new, old, '--name', 'cand_new=release 10']) == 0
  text = capsys.readouterr().out
  assert '| task | **release 10** | cand_old | tuned Adam | Adam 1e-3 |' in text
  assert '| a | 0.5 ± 0.05 (1.5) | 0.8 ± 0.08 (2.5) | 1 ± 0.01 (2) | 3 |' in text
  assert '| b | 2 ± 0.2 | 4 ± 0.4 | 1 ± 0.01 | 3 |' in text
  # Test loss: 1.5 < 2 wins, 2.5 > 2 loses; task b has no test split and is not counted.
  assert "release 10: test loss below tuned Adam's on 1 of 1 tasks" in text
  assert "cand_old: test loss below tuned Adam's on 0 of 1 tasks" in text


def test_a_diverged_run_reads_non_finite():
  assert release_table.cell({'final_loss': float('nan'), 'finite': False}) == 'non-finite'
  assert release_table.cell({'final_loss': None}) == 'non-finite'
  assert release_table.cell(None) == ''


def test_files_from_different_reports_or_tasks_are_refused(tmp_path):
  a = _comparison(tmp_path / 'a.json', 'r.json', 'x', {'a': 1.0}, {'a': None})
  other_report = _comparison(tmp_path / 'b.json', 'other.json', 'y', {'a': 1.0}, {'a': None})
  other_tasks = _comparison(tmp_path / 'c.json', 'r.json', 'z', {'b': 1.0}, {'b': None})
  same_name = _comparison(tmp_path / 'd.json', 'r.json', 'x', {'a': 1.0}, {'a': None})
  with pytest.raises(ValueError, match='do not share baselines'):
    release_table.load_candidates([a, other_report])
  with pytest.raises(ValueError, match='has tasks'):
    release_table.load_candidates([a, other_tasks])
  with pytest.raises(ValueError, match='appears in two files'):
    release_table.load_candidates([a, same_name])
  (tmp_path / 'report.json').write_text(json.dumps({'tasks': []}))
  with pytest.raises(ValueError, match='not a comparison.json'):
    release_table.load_candidates([str(tmp_path / 'report.json')])
  with pytest.raises(SystemExit, match='not candidates'):
    release_table.main([a, '--name', 'nobody=x'])
