"""Tests of run checkpoints (orbax step directories with our SHA-256 digest) and of the single-file format of
resume.npz: exact round trip, retention, fallback past corruption, checkpoints from before orbax, clear errors."""

import errno
import glob
import os
import shutil
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_train.run import checkpoint
from meta_train.run.checkpoint import CheckpointError, CheckpointManager


class _State(NamedTuple):
  step: jax.Array
  params: dict
  key: jax.Array


def _state(value: float) -> _State:
  return _State(step=jnp.asarray(int(value), jnp.int32),
                params={'w': jnp.full((3, 2), value, jnp.float32), 'b': jnp.arange(4, dtype=jnp.int8),
                        'h': jnp.asarray([value], jnp.bfloat16), 'e': jnp.zeros((0, 3), jnp.float32)},
                key=jax.random.key(int(value)))


def _assert_bitwise_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()


def test_round_trip_is_bitwise_and_keeps_types(tmp_path):
  state = _state(2.5)
  checkpoint.save(str(tmp_path / 'c.npz'), 7, state, {'note': 'x'})
  restored = checkpoint.load(str(tmp_path / 'c.npz'), jax.eval_shape(lambda: state))
  assert restored.step == 7 and restored.metadata == {'note': 'x'}
  assert isinstance(restored.tree, _State)
  _assert_bitwise_equal(restored.tree, state)
  # The restored key draws the same numbers as the original.
  assert np.array_equal(jax.random.normal(restored.tree.key, (3,)), jax.random.normal(state.key, (3,)))


def _template():
  return jax.eval_shape(lambda: _state(0))


def test_manager_round_trip_is_bitwise_and_keeps_types_in_orbax_layout(tmp_path):
  state = _state(2.5)
  with CheckpointManager(str(tmp_path), keep=2) as manager:
    manager.save(7, state, {'note': 'x'})
    restored = manager.restore_latest(_template())
  assert restored.step == 7 and restored.metadata == {'note': 'x'} and restored.path == str(tmp_path / '7')
  assert isinstance(restored.tree, _State)  # exactly the template's structure and dtypes
  assert jax.tree.structure(restored.tree) == jax.tree.structure(_template())
  for got, want in zip(jax.tree.leaves(restored.tree), jax.tree.leaves(_template())):
    assert got.dtype == want.dtype and got.shape == want.shape
  _assert_bitwise_equal(restored.tree, state)
  assert np.array_equal(jax.random.normal(restored.tree.key, (3,)), jax.random.normal(state.key, (3,)))
  # orbax's layout: one directory per step, holding the leaves and our digest.
  assert os.listdir(tmp_path) == ['7']
  assert {'state', 'digest'} <= set(os.listdir(tmp_path / '7'))


def test_manager_keeps_the_newest_checkpoints(tmp_path):
  manager = CheckpointManager(str(tmp_path), keep=2)
  for step in (3, 6, 9):
    manager.save(step, _state(step))
  assert manager.steps() == [6, 9]
  assert sorted(os.listdir(tmp_path)) == ['6', '9']
  restored = manager.restore_latest(_template())
  assert restored.step == 9
  _assert_bitwise_equal(restored.tree, _state(9))
  _assert_bitwise_equal(manager.restore(6, _template()).tree, _state(6))
  manager.close()


def test_no_checkpoint_restores_none(tmp_path):
  assert CheckpointManager(str(tmp_path / 'fresh'), keep=2).restore_latest(_state(0)) is None
  assert CheckpointManager(str(tmp_path / 'absent'), write=False).steps() == []
  assert not (tmp_path / 'absent').exists()  # a reader creates nothing


def _files(step_dir, item='state'):
  return sorted(f for f in glob.glob(os.path.join(step_dir, item, '**'), recursive=True) if os.path.isfile(f))


def _flip_bytes_in_data(step_dir):
  """Flips one byte in the middle of every file of the stored leaves (a bad disk block). orbax notices some of these
  (a broken compressed block) and not others (copies it no longer reads): either way the step must be refused."""
  for path in _files(step_dir):
    with open(path, 'r+b') as f:
      data = bytearray(f.read())
      data[len(data) // 2] ^= 0xFF
      f.seek(0)
      f.write(data)


def _swap_in_other_values(step_dir):
  """Replaces the leaves with another step's, a valid orbax item: orbax reads it without error, only the digest
  can tell."""
  other = os.path.join(os.path.dirname(step_dir), '3', 'state')
  shutil.rmtree(os.path.join(step_dir, 'state'))
  shutil.copytree(other, os.path.join(step_dir, 'state'))


def _truncate_files(step_dir):
  for path in _files(step_dir):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 3)


def _empty_files(step_dir):
  for path in _files(step_dir, '') :
    open(path, 'wb').close()


def _delete_digest(step_dir):
  shutil.rmtree(os.path.join(step_dir, 'digest'))


@pytest.mark.parametrize('damage', [_flip_bytes_in_data, _swap_in_other_values, _truncate_files, _empty_files,
                                    _delete_digest],
                         ids=['flipped-bytes', 'other-values', 'truncated', 'empty', 'no-digest'])
def test_corrupted_latest_falls_back_to_previous_with_a_warning(tmp_path, damage):
  manager = CheckpointManager(str(tmp_path), keep=3)
  manager.save(3, _state(3))
  manager.save(6, _state(6))
  manager.close()
  damage(manager.path(6))
  manager = CheckpointManager(str(tmp_path), keep=3)  # as the rerun after the damage opens it
  with pytest.warns(UserWarning, match=r'checkpoint 6 \(.*6\).*Falling back to the previous checkpoint') as record:
    restored = manager.restore_latest(_template())
  assert restored.step == 3
  _assert_bitwise_equal(restored.tree, _state(3))
  if damage is _swap_in_other_values:
    assert 'SHA-256 of its leaves does not match its digest' in str(record[0].message)
  # The run goes on from step 3 and saves step 4 although the damaged step 6 is newer.
  manager.save(4, _state(4))
  assert 4 in manager.steps()
  manager.close()


def test_every_checkpoint_corrupted_is_an_error_not_a_silent_restart(tmp_path):
  manager = CheckpointManager(str(tmp_path), keep=3)
  manager.save(3, _state(3))
  _truncate_files(manager.path(3))
  with pytest.warns(UserWarning), pytest.raises(CheckpointError, match='(?s)none of the 1 checkpoints.*start the run over'):
    manager.restore_latest(_template())
  manager.close()


def test_checkpoint_of_another_run_is_refused_naming_the_leaf(tmp_path):
  checkpoint.save(str(tmp_path / 'c.npz'), 1, _state(1))
  other = _State(step=jnp.zeros((), jnp.int32), params={'w': jnp.zeros((3, 5)), 'b': jnp.zeros(4, jnp.int8),
                                                        'h': jnp.zeros(1, jnp.bfloat16), 'e': jnp.zeros((0, 3))},
                 key=jax.random.key(0))
  with pytest.raises(CheckpointError, match=r"at leaf .*\['w'\].*shape \(3, 2\).*expected shape \(3, 5\)"):
    checkpoint.load(str(tmp_path / 'c.npz'), other)


def test_checkpoint_of_another_run_is_refused_by_the_manager_naming_the_leaf(tmp_path):
  manager = CheckpointManager(str(tmp_path), keep=2)
  manager.save(1, _state(1))
  other = _State(step=jnp.zeros((), jnp.int32), params={'w': jnp.zeros((3, 2)), 'b': jnp.zeros(4, jnp.int8),
                                                        'h': jnp.zeros(1, jnp.float32), 'e': jnp.zeros((0, 3))},
                 key=jax.random.key(0))
  with pytest.raises(CheckpointError, match=r"checkpoint 1 .*at leaf .*\['h'\].*dtype bfloat16.*expected .*float32"):
    manager.restore(1, other)
  manager.close()


def test_checkpoints_written_before_orbax_are_read_then_retired(tmp_path):
  checkpoint.save(str(tmp_path / 'ckpt_000000003.npz'), 3, _state(3), {'time': 1.0})  # the version-1 layout
  manager = CheckpointManager(str(tmp_path), keep=2)
  assert manager.steps() == [3] and manager.path(3) == str(tmp_path / 'ckpt_000000003.npz')
  restored = manager.restore_latest(_template())
  assert restored.step == 3 and restored.metadata == {'time': 1.0}
  _assert_bitwise_equal(restored.tree, _state(3))
  manager.save(6, _state(6))
  assert manager.steps() == [3, 6]  # kept while fewer than `keep` orbax checkpoints exist
  manager.save(9, _state(9))
  assert manager.steps() == [6, 9] and sorted(os.listdir(tmp_path)) == ['6', '9']
  manager.close()


def test_interrupted_write_leaves_no_checkpoint_and_is_cleaned_up(tmp_path, monkeypatch):
  import orbax.checkpoint as ocp
  manager = CheckpointManager(str(tmp_path), keep=2)
  manager.save(1, _state(1))

  class Died(Exception):
    pass

  def die(*args, **kwargs):
    raise Died  # the process dies once every leaf is written, before orbax commits the step (the rename)

  monkeypatch.setattr(ocp.Checkpointer, '_save_step_metadata', die)
  with pytest.raises(Died):
    manager.save(2, _state(2))
  monkeypatch.undo()
  assert manager.steps() == [1]  # the half-written step never got a step directory's name
  assert [n for n in os.listdir(tmp_path) if n.startswith('2.')]  # ...it is orbax's temporary directory,
  rerun = CheckpointManager(str(tmp_path), keep=2)
  assert rerun.restore_latest(_template()).step == 1
  rerun.save(3, _state(3))  # which the next run deletes
  assert sorted(os.listdir(tmp_path)) == ['1', '3']
  rerun.close()


@pytest.mark.parametrize('code, message', [(errno.ENOSPC, 'the disk is full'),
                                           (errno.EROFS, 'the file system is read-only'),
                                           (errno.EACCES, 'permission denied')])
def test_write_errors_are_explained(tmp_path, monkeypatch, code, message):
  def fail(fd):
    raise OSError(code, os.strerror(code))

  monkeypatch.setattr(os, 'fsync', fail)
  with pytest.raises(CheckpointError, match=rf'cannot write .*c.npz: .*\({message}'):
    checkpoint.save(str(tmp_path / 'c.npz'), 1, _state(1))
  monkeypatch.undo()
  assert os.listdir(tmp_path) == []  # the temporary file was removed


def test_unwritable_directory_is_a_clear_error(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(CheckpointError, match='cannot write checkpoint directory.*not a directory'):
    CheckpointManager(str(blocker / 'checkpoints'), keep=2)


@pytest.mark.parametrize('code, message', [(errno.ENOSPC, 'the disk is full'),
                                           (errno.EACCES, 'permission denied')])
def test_manager_write_errors_are_explained(tmp_path, monkeypatch, code, message):
  import orbax.checkpoint as ocp

  def fail(*args, **kwargs):
    raise OSError(code, os.strerror(code))

  manager = CheckpointManager(str(tmp_path), keep=2)
  monkeypatch.setattr(ocp.CheckpointManager, 'save', fail)
  with pytest.raises(CheckpointError, match=rf'cannot write checkpoint 1 in .*\({message}'):
    manager.save(1, _state(1))


def test_checkpoint_directory_replaced_by_a_file_is_a_clear_error(tmp_path):
  manager = CheckpointManager(str(tmp_path / 'checkpoints'), keep=2)
  manager.save(1, _state(1))
  shutil.rmtree(tmp_path / 'checkpoints')
  (tmp_path / 'checkpoints').write_text('')
  with pytest.raises(CheckpointError, match='cannot write checkpoint 2 in .*'):
    manager.save(2, _state(2))


def test_reader_cannot_save(tmp_path):
  with pytest.raises(CheckpointError, match='write=False'):
    CheckpointManager(str(tmp_path), write=False).save(1, _state(1))


def test_a_tree_of_only_empty_arrays_round_trips(tmp_path):
  tree = {'e': np.zeros((0, 2), np.float32), 'f': np.zeros(0, np.int32)}  # orbax alone refuses both
  with CheckpointManager(str(tmp_path), keep=2) as manager:
    manager.save(1, tree)
    restored = manager.restore_latest(jax.eval_shape(lambda: tree)).tree
  assert {k: (v.shape, v.dtype) for k, v in restored.items()} == {k: (v.shape, v.dtype) for k, v in tree.items()}
