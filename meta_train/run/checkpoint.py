"""Atomic, self-checking checkpoints of a whole meta-training state, with fallback past corrupted files.

A checkpoint is one ``.npz`` file ``ckpt_<step>.npz`` holding every leaf of a pytree (the trainer's state:
meta-parameters, meta-optimizer state, estimator state, PRNG key, step and counters) plus a JSON header::

    {"format": "meta-train-checkpoint", "format_version": 1, "step": ..., "metadata": {...},
     "leaves": [{"path": ..., "shape": [...], "dtype": ..., "key_impl": null | "threefry2x32"}, ...],
     "sha256": <digest of the leaves' bytes in order>}

Writes are atomic: the file is written under a temporary name in the same directory, flushed to disk with
``fsync``, then renamed (``os.replace`` is atomic on POSIX), and the directory entry is synced. A process killed at
any moment therefore leaves either the previous set of checkpoints or the new one, never a half-written file under a
checkpoint name. Only the newest ``keep`` checkpoints are kept.

Reading checks the zip CRCs, the SHA-256 and that the stored tree matches the expected one (paths, shapes,
dtypes). A checkpoint that fails any check is skipped with a warning and the previous one is tried, so a file
damaged after it was written (a bad disk block, a truncated copy) costs ``checkpoint_every`` steps, not the run.

Typed PRNG keys (``jax.random.key``) are stored as their raw key data with the implementation's name.
Arrays sharded across several processes are gathered first (:func:`meta_train.sharding.to_host`); in a
multi-process run only process 0 writes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import warnings
import zipfile
from typing import Any, NamedTuple

import jax
import numpy as np

from lopt import serialization

FORMAT_NAME = 'meta-train-checkpoint'
FORMAT_VERSION = 1
_HEADER = '__header__'
_NAME = re.compile(r'^ckpt_(\d+)\.npz$')


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written, or no stored checkpoint can be read. The message names the file and the fix."""


class Restored(NamedTuple):
  step: int
  tree: Any
  metadata: dict
  path: str


# One definition of the pickle-free leaf encoding, shared with lopt.save's format (lopt/serialization.py).
_path_key = serialization._leaf_key  # pylint: disable=protected-access
_storable = serialization._storable  # pylint: disable=protected-access
_digest = serialization._digest  # pylint: disable=protected-access


def _is_key_array(x) -> bool:
  return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def os_error_message(e: OSError, what: str) -> str:
  """A one-line explanation of an ``OSError`` met while writing ``what``, with the likely fix."""
  reason = {
      errno.ENOSPC: 'the disk is full; free space or choose another --out directory',
      errno.EDQUOT: 'the disk quota is exceeded; free space or choose another --out directory',
      errno.EACCES: 'permission denied; choose a writable --out directory',
      errno.EPERM: 'permission denied; choose a writable --out directory',
      errno.EROFS: 'the file system is read-only; choose a writable --out directory',
      errno.ENOTDIR: 'a path component is a file, not a directory; choose another --out directory',
  }.get(e.errno, 'choose a writable --out directory with free space')
  return f'cannot write {what}: {e.strerror or e} ({reason}).'


def _sync_directory(directory: str) -> None:
  """Makes a rename inside ``directory`` durable (POSIX); a no-op where directories cannot be opened."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def atomic_write_bytes(path: str, write) -> None:
  """Calls ``write(file)`` on a temporary file next to ``path``, syncs it, and renames it to ``path``.

  Raises :class:`CheckpointError` with a clear reason for any ``OSError`` (full disk, permissions, ...).
  """
  directory = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(directory, f'.{os.path.basename(path)}.{os.getpid()}.tmp')
  try:
    with open(tmp, 'wb') as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_directory(directory)
  except OSError as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise CheckpointError(os_error_message(e, path)) from e


def save(path: str, step: int, tree: Any, metadata: dict | None = None) -> None:
  """Writes ``tree`` (host or device arrays, fully addressable) to ``path`` atomically."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  arrays, leaves = [], []
  for p, x in flat:
    impl = None
    if _is_key_array(x):
      impl = str(jax.random.key_impl(x))
      x = jax.random.key_data(x)
    a = np.asarray(jax.device_get(x))
    leaves.append({'path': _path_key(p), 'shape': list(a.shape), 'dtype': str(a.dtype), 'key_impl': impl})
    arrays.append(_storable(a))
  header = {'format': FORMAT_NAME, 'format_version': FORMAT_VERSION, 'step': int(step),
            'metadata': metadata or {}, 'leaves': leaves, 'sha256': _digest(arrays)}
  members = {f'leaf_{i:05d}': a for i, a in enumerate(arrays)}
  members[_HEADER] = np.frombuffer(json.dumps(header).encode('utf-8'), np.uint8)
  atomic_write_bytes(path, lambda f: np.savez(f, **members))


def _expected(template) -> list[dict]:
  flat, _ = jax.tree_util.tree_flatten_with_path(template)
  out = []
  for p, x in flat:
    if _is_key_array(x):
      data = jax.eval_shape(jax.random.key_data, x)
      out.append({'path': _path_key(p), 'shape': list(data.shape), 'dtype': str(np.dtype(data.dtype)), 'key': True})
    else:
      out.append({'path': _path_key(p), 'shape': list(np.shape(x)), 'dtype': str(np.dtype(x.dtype)), 'key': False})
  return out


def load(path: str, template: Any) -> Restored:
  """Reads ``path``, checking integrity and that it matches ``template`` (a tree of arrays or ShapeDtypeStructs).

  Raises :class:`CheckpointError` naming the file and the problem.
  """
  try:
    with np.load(path, allow_pickle=False) as npz:
      members = {name: npz[name] for name in npz.files}  # reading every member checks the zip CRCs
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
    raise CheckpointError(f'checkpoint {path!r} is unreadable ({type(e).__name__}: {e}).') from e
  try:
    header = json.loads(members.pop(_HEADER).tobytes().decode('utf-8'))
    assert header['format'] == FORMAT_NAME and header['format_version'] == FORMAT_VERSION
    stored = [members[f'leaf_{i:05d}'] for i in range(len(header['leaves']))]
  except (KeyError, AssertionError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointError(f'checkpoint {path!r} has a damaged or foreign header ({type(e).__name__}).') from e
  if _digest(stored) != header['sha256']:
    raise CheckpointError(f'checkpoint {path!r} is corrupted: its SHA-256 does not match its header.')

  expected = _expected(template)
  got = header['leaves']
  if len(got) != len(expected):
    raise CheckpointError(
        f'checkpoint {path!r} holds {len(got)} arrays but this run\'s state has {len(expected)}: it was written '
        'by a different estimator, architecture or task setup. Use a new --out directory for a different run.')
  for g, e in zip(got, expected):
    if (g['path'], g['shape'], g['dtype']) != (e['path'], e['shape'], e['dtype']):
      raise CheckpointError(
          f'checkpoint {path!r} does not match this run\'s state at leaf {e["path"]}: stored {g["path"]} '
          f'shape {tuple(g["shape"])} dtype {g["dtype"]}, expected shape {tuple(e["shape"])} dtype {e["dtype"]}. '
          'Use a new --out directory for a different run.')
  leaves = []
  for g, a in zip(got, stored):
    if str(a.dtype) != g['dtype']:
      a = a.view(jax.numpy.dtype(g['dtype']))  # stored as raw unsigned integers (see _storable)
    leaves.append(jax.random.wrap_key_data(a, impl=g['key_impl']) if g['key_impl'] else a)
  tree = jax.tree.unflatten(jax.tree.structure(template), leaves)
  return Restored(int(header['step']), tree, header.get('metadata', {}), path)


class CheckpointManager:
  """Keeps the newest ``keep`` checkpoints of a run in ``directory``; restores the newest readable one."""

  def __init__(self, directory: str, keep: int = 3, write: bool = True):
    """``write=False`` (processes other than 0 in a multi-process run) reads but never writes or deletes."""
    if keep < 1:
      raise ValueError(f'keep must be >= 1, got {keep}.')
    self.directory = os.fspath(directory)
    self.keep = keep
    self.write = write
    if write:
      try:
        os.makedirs(self.directory, exist_ok=True)
      except OSError as e:
        raise CheckpointError(os_error_message(e, f'checkpoint directory {self.directory!r}')) from e

  def path(self, step: int) -> str:
    return os.path.join(self.directory, f'ckpt_{step:09d}.npz')

  def steps(self) -> list[int]:
    """Steps of the checkpoint files present, oldest first (temporary files of interrupted writes are ignored)."""
    try:
      names = os.listdir(self.directory)
    except (FileNotFoundError, NotADirectoryError):
      return []
    return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)

  def save(self, step: int, tree: Any, metadata: dict | None = None) -> None:
    if not self.write:
      return
    save(self.path(step), step, tree, metadata)
    for old in self.steps()[:-self.keep]:
      try:
        os.remove(self.path(old))
      except FileNotFoundError:
        pass
    self._remove_stale_temporaries()

  def _remove_stale_temporaries(self) -> None:
    """Deletes ``.ckpt_*.tmp`` files left by a process killed mid-write (they never carry a checkpoint name)."""
    for name in os.listdir(self.directory):
      if name.startswith('.ckpt_') and name.endswith('.tmp') and f'.{os.getpid()}.' not in name:
        try:
          os.remove(os.path.join(self.directory, name))
        except OSError:
          pass

  def restore_latest(self, template: Any) -> Restored | None:
    """The newest checkpoint that passes every check, or ``None`` if there is none.

    Corrupted checkpoints are skipped with a ``UserWarning`` naming them. If checkpoints exist but none is
    readable, raises :class:`CheckpointError` rather than silently starting over.
    """
    steps = self.steps()
    failures = []
    for step in reversed(steps):
      path = self.path(step)
      try:
        return load(path, template)
      except CheckpointError as e:
        failures.append(str(e))
        warnings.warn(f'{e} Falling back to the previous checkpoint.', UserWarning, stacklevel=2)
    if failures:
      raise CheckpointError(
          f'none of the {len(steps)} checkpoints in {self.directory!r} can be restored:\n  ' + '\n  '.join(failures) +
          '\nDelete that directory (or use a new --out directory) to start the run over.')
    return None
