"""Tests of ``python -m meta_train CONFIG --out DIR [key=value ...]``."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import quadratic_fixture
from meta_train.run import cli
from quadratic_fixture import REPO, subprocess_env, write_tiny_config


@pytest.mark.slow  # two CLI processes, each importing JAX and compiling: ~15 s CPU
def test_cli_trains_writes_outputs_and_resumes(tmp_path):
  config = write_tiny_config(tmp_path)
  out = tmp_path / 'run'
  command = [sys.executable, '-m', 'meta_train', config, '--out', str(out), 'run.meta_steps=6',
             'evaluation.every=6', 'evaluation.num_steps=5']
  done = subprocess.run(command, cwd=REPO, env=subprocess_env(tmp_path), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr
  # The progress bar reports the meta-loss, the speed and the remaining time.
  assert 'meta_loss=' in done.stderr and ('step/s' in done.stderr or 's/step' in done.stderr)
  assert '6/6' in done.stderr and '<' in done.stderr  # tqdm's "elapsed<remaining"
  for name in ('config.toml', 'metrics.jsonl', 'evaluation.jsonl', 'final.npz', 'meta_training.png'):
    assert (out / name).is_file(), name
  assert os.listdir(out / 'tensorboard')
  assert sorted(os.listdir(out / 'checkpoints')) == ['3', '6']  # orbax's step directories
  # The config written to DIR is the file plus the overrides.
  assert 'meta_steps = 6' in (out / 'config.toml').read_text()
  with open(out / 'evaluation.jsonl') as f:
    assert json.loads(f.readline())['step'] == 6
  from lopt import serialization
  _, meta_params = serialization.load(out / 'final.npz',
                                      {quadratic_fixture.LearnedSGD.name: quadratic_fixture.LearnedSGD})
  assert np.isfinite(meta_params['log_lr'])

  # The same command on the same DIR resumes (here: nothing left to do) instead of starting over.
  again = subprocess.run(command, cwd=REPO, env=subprocess_env(tmp_path), capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 0, again.stderr
  assert 'resumed from step 6' in again.stderr


def _run_main(capsys, *argv):
  code = cli.main(list(argv))
  return code, capsys.readouterr().err


def test_unknown_key_is_a_one_line_error_not_a_traceback(tmp_path, capsys):
  config = write_tiny_config(tmp_path)
  code, err = _run_main(capsys, config, '--out', str(tmp_path / 'run'), 'run.meta_stpes=3')
  assert code == 2
  assert err.startswith("error: unknown config key 'run.meta_stpes'. Did you mean 'meta_steps'?")
  assert 'Traceback' not in err
  assert not (tmp_path / 'run').exists()  # nothing is written for a config that does not validate


def test_wrong_type_names_the_field(tmp_path, capsys):
  code, err = _run_main(capsys, write_tiny_config(tmp_path), '--out', str(tmp_path / 'run'), 'run.seed="one"')
  assert code == 2 and "'run.seed' must be an integer" in err


def test_unwritable_output_directories_are_clear_errors(tmp_path, capsys):
  config = write_tiny_config(tmp_path)
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  code, err = _run_main(capsys, config, '--out', str(a_file))
  assert code == 2 and 'exists and is not a directory' in err and 'Traceback' not in err
  code, err = _run_main(capsys, config, '--out', str(a_file / 'run'))
  assert code == 2 and "cannot write the output directory" in err and 'not a directory' in err
  # /proc is read-only even for root (tests may run as root, for whom permission bits do not apply).
  code, err = _run_main(capsys, config, '--out', '/proc/lopt_meta_train_test_run')
  assert code == 2 and 'cannot write' in err and 'Traceback' not in err


def test_resume_with_a_different_config_is_refused_with_the_differences(tmp_path, capsys):
  from meta_train.run import config as config_lib, trainer
  config = write_tiny_config(tmp_path)
  trainer.prepare_output_dir(str(tmp_path / 'run'), config_lib.load(config))  # as a started run leaves it
  os.makedirs(tmp_path / 'run' / 'checkpoints')
  (tmp_path / 'run' / 'checkpoints' / 'ckpt_000000003.npz').write_bytes(b'')
  code, err = _run_main(capsys, config, '--out', str(tmp_path / 'run'), 'run.seed=5')
  assert code == 2
  assert 'holds a run with a different config' in err and 'run.seed: 0 in the existing run, 5 now' in err


def test_missing_config_file(tmp_path, capsys):
  code, err = _run_main(capsys, str(tmp_path / 'nope.toml'), '--out', str(tmp_path / 'run'))
  assert code == 2 and 'does not exist' in err


def test_help_documents_overrides(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['--help'])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert 'key=value' in out and '--out' in out and 'resume' in out


@pytest.mark.slow  # the full quickstart: ~40 s of CPU
def test_quickstart_config_lowers_the_meta_loss_and_beats_adam_on_held_out_tasks(tmp_path):
  out = tmp_path / 'quickstart'
  done = subprocess.run([sys.executable, '-m', 'meta_train', os.path.join(REPO, 'configs', 'quickstart.toml'),
                         '--out', str(out), '--no-progress'], cwd=REPO, env=subprocess_env(tmp_path),
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr
  with open(out / 'metrics.jsonl') as f:
    meta_loss = [json.loads(line)['meta_loss'] for line in f]
  # Observed with seed 0: from -0.0004 to -1.8 (a mean log loss ratio: the optimizer got ~6x better per episode).
  # 0.5 leaves room for other float rounding (other CPUs, BLAS) while a broken loop stays near 0.
  assert meta_loss[-1] < meta_loss[0] - 0.5
  with open(out / 'evaluation.jsonl') as f:
    final = [json.loads(line) for line in f][-1]
  # Observed: final loss 0.78 vs Adam's 25 on 4 held-out quadratics (log ratio -3.2); require only "better".
  assert final['lopt_vs_adam_log_ratio'] < 0 and final['lopt_win_rate'] >= 0.5


def test_export_writes_the_newest_checkpoints_meta_params(tmp_path, capsys):
  from meta_train.run import export
  from lopt import serialization
  config = write_tiny_config(tmp_path)
  out = tmp_path / 'run'
  code, err = _run_main(capsys, config, '--out', str(out), 'run.meta_steps=6', 'evaluation.every=0', '--no-progress')
  assert code == 0, err
  architectures = {quadratic_fixture.LearnedSGD.name: quadratic_fixture.LearnedSGD}
  _, final = serialization.load(out / 'final.npz', architectures)
  assert export.main([str(out), str(tmp_path / 'exported.npz')]) == 0
  assert 'after 6 meta-steps' in capsys.readouterr().err
  _, exported = serialization.load(tmp_path / 'exported.npz', architectures)
  np.testing.assert_array_equal(exported['log_lr'], final['log_lr'])
  # Without checkpoints/ (a run moved with only its committed files) the compact resume.npz gives the same values.
  shutil.rmtree(out / 'checkpoints')
  assert export.main([str(out), str(tmp_path / 'from_resume.npz')]) == 0
  assert 'after 6 meta-steps' in capsys.readouterr().err
  _, from_resume = serialization.load(tmp_path / 'from_resume.npz', architectures)
  np.testing.assert_array_equal(from_resume['log_lr'], final['log_lr'])
  # Not a run directory, and a run with neither: one-line errors.
  assert export.main([str(tmp_path), str(tmp_path / 'x.npz')]) == 2
  assert 'has no config.toml' in capsys.readouterr().err
  os.remove(out / 'resume.npz')
  assert export.main([str(out), str(tmp_path / 'x.npz')]) == 2
  assert 'has no checkpoint yet' in capsys.readouterr().err
