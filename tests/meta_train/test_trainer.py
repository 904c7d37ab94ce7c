"""Tests of the outer loop (in process, on the quadratic fixture of quadratic_fixture.py)."""

import dataclasses
import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

import quadratic_fixture
from meta_train.run import build, resume_state, trainer
from meta_train.run import config as config_lib
from meta_train.run.checkpoint import CheckpointManager


def _config(*overrides):
  return config_lib.loads(quadratic_fixture.TINY_CONFIG, list(overrides))


def _records(out_dir, name='metrics.jsonl'):
  with open(os.path.join(out_dir, name)) as f:
    return [json.loads(line) for line in f]


def _train(config, out_dir):
  return trainer.train(config, str(out_dir), progress=False)


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
  """One uninterrupted 12-step run with evaluation every 6 steps, shared by the tests below (compiles once)."""
  out_dir = tmp_path_factory.mktemp('straight')
  config = _config('evaluation.every=6', 'evaluation.num_steps=10', 'evaluation.num_tasks=3')
  return config, out_dir, _train(config, out_dir)


def test_meta_training_lowers_the_meta_loss_and_writes_every_output(straight_run):
  _, out_dir, result = straight_run
  records = _records(out_dir)
  assert [r['step'] for r in records] == [2, 4, 6, 8, 10, 12]
  # The fixture's learning rate starts far too small (e^-3), so a working outer loop raises it and the mean
  # log-loss falls by far more than its step-to-step noise (about 0.1 here).
  assert records[-1]['meta_loss'] < records[0]['meta_loss'] - 1.0
  assert float(result.meta_params['log_lr']) > -3.0 + 0.5
  for name in ('config.toml', 'final.npz', 'meta_training.png'):
    assert os.path.getsize(out_dir / name) > 0
  assert glob.glob(str(out_dir / 'tensorboard' / 'events.out.tfevents.*'))
  _, saved = quadratic_fixture_load(out_dir / 'final.npz')
  assert np.asarray(saved['log_lr']).tobytes() == np.asarray(result.meta_params['log_lr']).tobytes()


def test_periodic_evaluation_is_recorded(straight_run):
  _, out_dir, _ = straight_run
  records = _records(out_dir, 'evaluation.jsonl')
  assert [r['step'] for r in records] == [6, 12]
  for r in records:
    assert {'lopt_final_train_loss', 'adam_final_train_loss', 'lopt_win_rate', 'lopt_vs_adam_log_ratio'} <= set(r)
    assert np.isfinite(r['adam_final_train_loss'])


def test_resume_past_a_corrupted_checkpoint_extends_the_run_bitwise(straight_run, tmp_path):
  config, _, straight = straight_run
  first = _train(dataclasses.replace(config, run=dataclasses.replace(config.run, meta_steps=7)), tmp_path)
  assert first.step == 7
  manager = CheckpointManager(str(tmp_path / 'checkpoints'), keep=2)
  assert manager.steps() == [6, 7]
  for path in glob.glob(os.path.join(manager.path(7), 'state', '**'), recursive=True):
    if os.path.isfile(path):
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 3)
  # run.meta_steps may change on resume (7 -> 12); the damaged newest checkpoint is skipped with a warning.
  with pytest.warns(UserWarning, match=r'checkpoint 7 \(.*7\).*Falling back'):
    resumed = _train(config, tmp_path)
  assert resumed.resumed_from == 6 and resumed.step == 12
  assert resumed.meta_params['log_lr'].tobytes() == straight.meta_params['log_lr'].tobytes()
  # The logs of the resumed run hold every step once (records after step 6 were rewritten).
  assert [r['step'] for r in _records(tmp_path)] == [2, 4, 6, 8, 10, 12]
  assert [r['step'] for r in _records(tmp_path, 'evaluation.jsonl')] == [6, 12]


def quadratic_fixture_load(path):
  from lopt import serialization
  return serialization.load(path, {quadratic_fixture.LearnedSGD.name: quadratic_fixture.LearnedSGD})


def test_non_finite_meta_gradients_are_skipped_and_counted(tmp_path):
  config = _config('estimator.kwargs.nan_grad_every=3', 'run.meta_steps=6', 'run.log_every=1',
                   'run.checkpoint_every=1')
  _train(config, tmp_path)
  records = _records(tmp_path)
  assert [r['meta_grad_finite'] for r in records] == [1, 1, 0, 1, 1, 0]
  assert [r['nonfinite_meta_grads_total'] for r in records] == [0, 0, 1, 1, 1, 2]
  # The skipped step left the meta-parameters exactly as they were: checkpoints 5 and 6 hold the same values.
  manager = CheckpointManager(str(tmp_path / 'checkpoints'), keep=2)
  shapes = jax.eval_shape(lambda k: trainer.init_state(build.build(config), k), jax.random.key(0))
  state6 = manager.restore_latest(shapes).tree
  state5 = manager.restore(5, shapes).tree
  assert np.isfinite(state6.meta_params['log_lr'])
  assert state6.meta_params['log_lr'].tobytes() == state5.meta_params['log_lr'].tobytes()
  assert state6.meta_opt_state is not None and all(
      a.tobytes() == b.tobytes() for a, b in zip(jax.tree.leaves(state6.meta_opt_state),
                                                 jax.tree.leaves(state5.meta_opt_state)))


def test_inner_non_finite_resets_are_counted(tmp_path):
  # lr = e^15 ≈ 3.3e6 multiplies x by at least |1 - 3.3e6 * 0.5| ≈ 1.6e6 per step: the loss overflows float32
  # (3.4e38) within 3 steps, so the fixture must reset diverged instances and the trainer must sum the counts.
  config = _config('learned_optimizer.hparams.init_log_lr=15.0', 'run.meta_steps=4', 'run.log_every=1',
                   'meta_optimizer.learning_rate=1e-6')
  _train(config, tmp_path)
  records = _records(tmp_path)
  per_step = [r['inner_nonfinite_resets'] for r in records]
  assert per_step[0] > 0
  assert records[-1]['inner_nonfinite_resets_total'] == sum(per_step)


def _started_run(out_dir, config):
  """An output directory as a run leaves it after its first checkpoint (the checkpoint's content is not read)."""
  trainer.prepare_output_dir(str(out_dir), config)
  os.makedirs(out_dir / 'checkpoints')
  (out_dir / 'checkpoints' / 'ckpt_000000001.npz').write_bytes(b'')


def test_resuming_with_a_different_config_is_refused(tmp_path):
  _started_run(tmp_path, _config('run.meta_steps=3'))
  trainer.prepare_output_dir(str(tmp_path), _config('run.meta_steps=5', 'evaluation.every=2'))  # allowed changes
  with pytest.raises(trainer.OutputDirError,
                     match=r"(?s)different config.*meta_optimizer.learning_rate: 0.1 in the existing run, 0.5 now"):
    _train(_config('meta_optimizer.learning_rate=0.5'), tmp_path)


def test_output_path_that_is_a_file_is_refused(tmp_path):
  (tmp_path / 'taken').write_text('')
  with pytest.raises(trainer.OutputDirError, match='exists and is not a directory'):
    _train(_config(), tmp_path / 'taken')
  with pytest.raises(trainer.OutputDirError, match='cannot write the output directory.*not a directory'):
    _train(_config(), tmp_path / 'taken' / 'run')


def test_a_run_without_checkpoint_may_restart_with_another_config(tmp_path):
  trainer.prepare_output_dir(str(tmp_path), _config('meta_optimizer.learning_rate=0.5'))  # failed before step 1
  trainer.prepare_output_dir(str(tmp_path), _config())
  assert config_lib.load(tmp_path / 'config.toml') == _config()


REAL_PES_CONFIG = """
[run]
meta_steps = 4
checkpoint_every = 2
log_every = 1
[learned_optimizer]
architecture = "learnable_adam"
[tasks]
family = "QuadraticFamily"
kwargs = {dim = 4}
num_tasks = 4
[estimator]
name = "pes"
kwargs = {std = 0.01, unroll_length = 5}
[estimator.truncation]
name = "constant"
kwargs = {length = 12}
"""


def test_resume_is_bitwise_with_the_real_pes_estimator(tmp_path):
  """The built-in PES state (+/- twins, perturbation accumulators, episode counters, keys) survives a checkpoint.

  Episodes of 12 steps with 5-step truncations put an episode boundary inside the resumed truncations.
  """
  config = config_lib.loads(REAL_PES_CONFIG)
  straight = _train(config, tmp_path / 'straight')
  _train(dataclasses.replace(config, run=dataclasses.replace(config.run, meta_steps=3)), tmp_path / 'split')
  resumed = _train(config, tmp_path / 'split')
  assert resumed.resumed_from == 3
  for a, b in zip(jax.tree.leaves(straight.meta_params), jax.tree.leaves(resumed.meta_params), strict=True):
    assert a.tobytes() == b.tobytes()


def test_a_run_resumed_from_only_resume_npz_continues_from_its_meta_state(straight_run, tmp_path, capfd):
  config, _, _ = straight_run
  first = _train(dataclasses.replace(config, run=dataclasses.replace(config.run, meta_steps=7)), tmp_path)
  shapes = jax.eval_shape(lambda k: trainer.init_state(build.build(config), k), jax.random.key(0))
  full = CheckpointManager(str(tmp_path / 'checkpoints'), keep=2).restore_latest(shapes).tree
  # resume.npz holds exactly the meta-state of the newest full checkpoint, in kilobytes.
  compact = resume_state.load(str(tmp_path / 'resume.npz'), shapes, config)
  assert int(compact.step) == 7 and os.path.getsize(tmp_path / 'resume.npz') < 20_000
  for name in ('meta_params', 'meta_opt_state', 'key', 'nonfinite_meta_grads', 'inner_nonfinite_resets'):
    a, b = getattr(compact, name), getattr(full, name)
    assert jax.tree.structure(a) == jax.tree.structure(b), name
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x, y = jax.random.key_data(x), jax.random.key_data(y)
      assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), name

  # Without the full checkpoints, the trainer continues from resume.npz: the same step, meta-parameters and
  # meta-optimizer state, with freshly drawn task instances (and says so).
  shutil.rmtree(tmp_path / 'checkpoints')
  capfd.readouterr()
  resumed = _train(dataclasses.replace(config, run=dataclasses.replace(config.run, meta_steps=7)), tmp_path)
  assert resumed.resumed_from == 7 and resumed.step == 7
  assert resumed.meta_params['log_lr'].tobytes() == first.meta_params['log_lr'].tobytes()
  assert 'inner task instances redrawn' in capfd.readouterr().err
  longer = _train(config, tmp_path)
  assert longer.resumed_from == 7 and longer.step == 12
  assert [r['step'] for r in _records(tmp_path)] == [2, 4, 6, 7, 8, 10, 12]  # 7: the last step of the first run


def test_resume_npz_of_another_config_is_refused(straight_run, tmp_path):
  config, _, _ = straight_run
  _train(dataclasses.replace(config, run=dataclasses.replace(config.run, meta_steps=3)), tmp_path)
  shutil.rmtree(tmp_path / 'checkpoints')
  os.remove(tmp_path / 'config.toml')  # only resume.npz can tell
  with pytest.raises(trainer.OutputDirError, match='resume.npz.*another config.*new --out directory'):
    _train(_config('meta_optimizer.learning_rate=0.5'), tmp_path)
