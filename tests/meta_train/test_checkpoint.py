"""Tests of atomic checkpoints: exact round trip, retention, fallback past corruption, clear write errors."""

import errno
import os
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
                        'h': jnp.asarray([value], jnp.bfloat16)},
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


def test_manager_keeps_the_newest_checkpoints(tmp_path):
  manager = CheckpointManager(str(tmp_path), keep=2)
  for step in (3, 6, 9):
    manager.save(step, _state(step))
  assert manager.steps() == [6, 9]
  restored = manager.restore_latest(jax.eval_shape(lambda: _state(0)))
  assert restored.step == 9
  _assert_bitwise_equal(restored.tree, _state(9))


def test_no_checkpoint_restores_none(tmp_path):
  assert CheckpointManager(str(tmp_path / 'fresh'), keep=2).restore_latest(_state(0)) is None


def _flip_byte_in_data(path):
  """Flips one bit-pattern inside the stored parameter values (a bad disk block), not in zip metadata."""
  with open(path, 'rb') as f:
    data = bytearray(f.read())
  offset = data.index(np.float32(6.0).tobytes())  # the first element of params['w'] of _state(6)
  data[offset] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(data)


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 3)


@pytest.mark.parametrize('damage', [_flip_byte_in_data, _truncate, lambda p: open(p, 'wb').close()],
                         ids=['flipped-byte', 'truncated', 'empty'])
def test_corrupted_latest_falls_back_to_previous_with_a_warning(tmp_path, damage):
  manager = CheckpointManager(str(tmp_path), keep=3)
  manager.save(3, _state(3))
  manager.save(6, _state(6))
  damage(manager.path(6))
  with pytest.warns(UserWarning, match=r'ckpt_000000006.npz.*Falling back to the previous checkpoint'):
    restored = manager.restore_latest(jax.eval_shape(lambda: _state(0)))
  assert restored.step == 3
  _assert_bitwise_equal(restored.tree, _state(3))


def test_every_checkpoint_corrupted_is_an_error_not_a_silent_restart(tmp_path):
  manager = CheckpointManager(str(tmp_path), keep=3)
  manager.save(3, _state(3))
  _truncate(manager.path(3))
  with pytest.warns(UserWarning), pytest.raises(CheckpointError, match='(?s)none of the 1 checkpoints.*start the run over'):
    manager.restore_latest(jax.eval_shape(lambda: _state(0)))


def test_checkpoint_of_another_run_is_refused_naming_the_leaf(tmp_path):
  checkpoint.save(str(tmp_path / 'c.npz'), 1, _state(1))
  other = _State(step=jnp.zeros((), jnp.int32), params={'w': jnp.zeros((3, 5)), 'b': jnp.zeros(4, jnp.int8),
                                                        'h': jnp.zeros(1, jnp.bfloat16)}, key=jax.random.key(0))
  with pytest.raises(CheckpointError, match=r"at leaf .*\['w'\].*shape \(3, 2\).*expected shape \(3, 5\)"):
    checkpoint.load(str(tmp_path / 'c.npz'), other)


def test_interrupted_write_leaves_no_checkpoint_name_and_is_cleaned_up(tmp_path, monkeypatch):
  manager = CheckpointManager(str(tmp_path), keep=2)
  manager.save(1, _state(1))

  def crash(*args, **kwargs):
    raise KeyboardInterrupt  # stands in for the process dying inside np.savez

  monkeypatch.setattr(np, 'savez', crash)
  with pytest.raises(KeyboardInterrupt):
    manager.save(2, _state(2))
  monkeypatch.undo()
  assert manager.steps() == [1]  # the half-written file never got a checkpoint name
  stale = [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]
  assert stale  # ...it is a temporary file,
  os.rename(tmp_path / stale[0], tmp_path / stale[0].replace(f'.{os.getpid()}.', '.999999.'))  # of a dead process
  manager.save(3, _state(3))
  assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]  # which the next save removes


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
