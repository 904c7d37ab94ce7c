"""Run checkpoints through orbax's ``CheckpointManager``, verified by our own SHA-256, with fallback past damage.

Why orbax. ``orbax-checkpoint`` writes each checkpoint into a temporary directory and renames it into place only
once every process has written its part (a process killed at any moment leaves the previous checkpoints and, at
worst, a temporary directory that the next run deletes), keeps the newest N, and works for arrays sharded across
hosts: every process calls :meth:`CheckpointManager.save` and :meth:`CheckpointManager.restore_latest`, and orbax
decides who writes what (replicated host arrays are written by the primary process) and synchronises the processes
(a save returns on every process once the checkpoint is committed).

Layout (orbax's)::

    DIR/checkpoints/<step>/state/...      the leaves of the tree (a flat dict ``leaf_00000``, ``leaf_00001``, ...
                                          in tree-flatten order), orbax PyTree format (OCDBT + zarr)
    DIR/checkpoints/<step>/digest/...     JSON, written inside the step directory before orbax commits it:
        {"format": "meta-train-checkpoint", "format_version": 2, "step": ..., "metadata": {...},
         "leaves": [{"path": ..., "shape": [...], "dtype": ..., "key_impl": null | "threefry2x32"}, ...],
         "sha256": <digest of the leaves' bytes in order, as lopt.serialization computes it>}

Why our own digest. orbax's storage detects some damage (a broken compressed block) but not all: a flipped byte
in an uncompressed chunk, or a step directory whose files were swapped or edited, reads back as other numbers without
an error. Restoring therefore recomputes the SHA-256 of the leaves it read and compares it with the ``digest`` item,
checks the stored leaves against the expected tree (paths, shapes, dtypes; a checkpoint of another run is refused
naming the leaf), and returns exactly the template's structure and dtypes. A checkpoint that fails any check is
skipped with a ``UserWarning`` naming its step, and the previous one is tried, so damage costs
``checkpoint_every`` steps, not the run.

Typed PRNG keys (``jax.random.key``) are stored as their raw key data with the implementation's name, and restored
with ``jax.random.wrap_key_data``. Trees are saved from host copies (:func:`meta_train.run.sharding.to_host` gathers
arrays sharded across processes; every process passes the same tree) and restored as NumPy arrays that the caller
places on devices.

Checkpoints written before orbax (``DIR/checkpoints/ckpt_<step>.npz``, format version 1) are still read, by the
single-file reader below: a run interrupted before the upgrade resumes from them, and they are deleted once ``keep``
orbax checkpoints exist. The same single-file format (:func:`save`, :func:`load`: one ``.npz`` with a JSON header,
written atomically) stays the format of the compact ``DIR/resume.npz`` (:mod:`meta_train.run.resume_state`).
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
FORMAT_VERSION = 1          # the single-file format: resume.npz, and run checkpoints written before orbax
ORBAX_FORMAT_VERSION = 2    # the digest item of an orbax step directory
_HEADER = '__header__'
_LEGACY_NAME = re.compile(r'^ckpt_(\d+)\.npz$')
_STATE_ITEM, _DIGEST_ITEM = 'state', 'digest'


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written, or no stored checkpoint can be read. The message names the file and the fix."""


class Restored(NamedTuple):
  step: int
  tree: Any
  metadata: dict
  path: str   # the step directory (or, for a checkpoint written before orbax, its .npz file)


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


def _encode(tree: Any) -> tuple[list[dict], list[np.ndarray]]:
  """The leaf records (path, shape, dtype, key_impl) of ``tree`` and its leaves as storable host arrays."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  arrays, records = [], []
  for p, x in flat:
    impl = None
    if _is_key_array(x):
      impl = str(jax.random.key_impl(x))
      x = jax.random.key_data(x)
    a = np.asarray(jax.device_get(x))
    records.append({'path': _path_key(p), 'shape': list(a.shape), 'dtype': str(a.dtype), 'key_impl': impl})
    arrays.append(_storable(a))
  return records, arrays


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


def _check_records(where: str, got: list[dict], template: Any) -> None:
  """Raises :class:`CheckpointError` unless the stored leaf records ``got`` are exactly ``template``'s leaves."""
  expected = _expected(template)
  if len(got) != len(expected):
    raise CheckpointError(
        f'{where} holds {len(got)} arrays but this run\'s state has {len(expected)}: it was written '
        'by a different estimator, architecture or task setup. Use a new --out directory for a different run.')
  for g, e in zip(got, expected):
    if (g['path'], g['shape'], g['dtype'], bool(g['key_impl'])) != (e['path'], e['shape'], e['dtype'], e['key']):
      raise CheckpointError(
          f'{where} does not match this run\'s state at leaf {e["path"]}: stored {g["path"]} '
          f'shape {tuple(g["shape"])} dtype {g["dtype"]}{" (PRNG key data)" if g["key_impl"] else ""}, expected '
          f'shape {tuple(e["shape"])} dtype {e["dtype"]}{" (PRNG key data)" if e["key"] else ""}. '
          'Use a new --out directory for a different run.')


def _decode(records: list[dict], stored: list[np.ndarray], template: Any) -> Any:
  """The tree of ``template``'s structure from checked records and their stored arrays (keys re-wrapped)."""
  leaves = []
  for g, a in zip(records, stored):
    if str(a.dtype) != g['dtype']:
      a = a.view(jax.numpy.dtype(g['dtype']))  # stored as raw unsigned integers (see _storable)
    leaves.append(jax.random.wrap_key_data(a, impl=g['key_impl']) if g['key_impl'] else a)
  return jax.tree.unflatten(jax.tree.structure(template), leaves)


def save(path: str, step: int, tree: Any, metadata: dict | None = None) -> None:
  """Writes ``tree`` (host or device arrays, fully addressable) to the single file ``path`` atomically.

  The single-file format of ``resume.npz`` (and of run checkpoints before orbax); see the module docstring.
  """
  records, arrays = _encode(tree)
  header = {'format': FORMAT_NAME, 'format_version': FORMAT_VERSION, 'step': int(step),
            'metadata': metadata or {}, 'leaves': records, 'sha256': _digest(arrays)}
  members = {f'leaf_{i:05d}': a for i, a in enumerate(arrays)}
  members[_HEADER] = np.frombuffer(json.dumps(header).encode('utf-8'), np.uint8)
  atomic_write_bytes(path, lambda f: np.savez(f, **members))


def load(path: str, template: Any) -> Restored:
  """Reads the single file ``path``, checking integrity and that it matches ``template`` (a tree of arrays or
  ShapeDtypeStructs).

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
  _check_records(f'checkpoint {path!r}', header['leaves'], template)
  return Restored(int(header['step']), _decode(header['leaves'], stored, template), header.get('metadata', {}), path)


class CheckpointManager:
  """The newest ``keep`` checkpoints of a run in ``directory`` (``<directory>/<step>/``, orbax); restores the newest
  one that passes every check. In a multi-process run every process creates one and calls :meth:`save` and
  :meth:`restore_latest` with the same arguments.
  """

  def __init__(self, directory: str, keep: int = 3, write: bool = True):
    """``write=False`` (a reader, e.g. ``meta_train.run.export`` or a config check) never creates, writes or deletes."""
    if keep < 1:
      raise ValueError(f'keep must be >= 1, got {keep}.')
    self.directory = os.path.abspath(os.fspath(directory))
    self.keep = keep
    self.write = write
    self._orbax = None
    if write:
      try:
        os.makedirs(self.directory, exist_ok=True)
      except OSError as e:
        raise CheckpointError(os_error_message(e, f'checkpoint directory {self.directory!r}')) from e

  # -- orbax ------------------------------------------------------------------------------------------------------

  def _manager(self):
    """The orbax manager, made on first use (importing orbax takes a second; a read-only check needs none)."""
    if self._orbax is None:
      import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
      options = ocp.CheckpointManagerOptions(
          max_to_keep=self.keep,
          # Synchronous: save returns once the step directory is committed on every process, so the trainer's
          # resume.npz, written next, never runs ahead of the checkpoints.
          enable_async_checkpointing=False,
          # Temporary directories of a save killed part-way are deleted when the next run opens the directory.
          cleanup_tmp_directories=self.write,
          create=self.write,
          read_only=not self.write)
      try:
        self._orbax = ocp.CheckpointManager(self.directory, options=options, item_names=(_STATE_ITEM, _DIGEST_ITEM))
      except OSError as e:
        raise CheckpointError(os_error_message(e, f'checkpoint directory {self.directory!r}')) from e
    return self._orbax

  def close(self) -> None:
    """Releases orbax's threads; the manager may be used again afterwards (it reopens the directory)."""
    if self._orbax is not None:
      self._orbax.close()
      self._orbax = None

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  # -- layout -----------------------------------------------------------------------------------------------------

  def path(self, step: int) -> str:
    """Where checkpoint ``step`` is: its orbax step directory, or the ``.npz`` of a checkpoint written before orbax."""
    legacy = self._legacy_path(step)
    if step not in self._orbax_steps() and os.path.isfile(legacy):
      return legacy
    return os.path.join(self.directory, str(step))

  def _legacy_path(self, step: int) -> str:
    return os.path.join(self.directory, f'ckpt_{step:09d}.npz')

  def _orbax_steps(self) -> list[int]:
    if not os.path.isdir(self.directory):
      return []
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    return sorted(ocp.utils.checkpoint_steps(self.directory))  # committed step directories only

  def _legacy_steps(self) -> list[int]:
    try:
      names = os.listdir(self.directory)
    except (FileNotFoundError, NotADirectoryError):
      return []
    return sorted(int(m.group(1)) for m in map(_LEGACY_NAME.match, names) if m)

  def steps(self) -> list[int]:
    """Steps of the checkpoints present (both formats), oldest first; interrupted writes are not listed."""
    return sorted(set(self._orbax_steps()) | set(self._legacy_steps()))

  # -- save and restore -------------------------------------------------------------------------------------------

  def save(self, step: int, tree: Any, metadata: dict | None = None) -> None:
    """Writes checkpoint ``step`` of ``tree`` (host arrays; the same on every process) and drops the oldest.

    Every process of a multi-process run must call this; it returns once the checkpoint is committed.
    Raises :class:`CheckpointError` naming the directory and the likely fix if it cannot be written.
    """
    if not self.write:
      raise CheckpointError(f'CheckpointManager({self.directory!r}, write=False) cannot save; make it with '
                            'write=True.')
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    step = int(step)
    records, arrays = _encode(tree)
    digest = {'format': FORMAT_NAME, 'format_version': ORBAX_FORMAT_VERSION, 'step': step,
              'metadata': metadata or {}, 'leaves': records, 'sha256': _digest(arrays)}
    # Stored as the real dtypes (orbax writes bfloat16 and friends natively); the digest covers the same bytes.
    # orbax refuses zero-size arrays: those are rebuilt from their shape in the digest (they hold no bytes).
    leaves = {f'leaf_{i:05d}': a.view(np.dtype(r['dtype'])) if str(a.dtype) != r['dtype'] else a
              for i, (r, a) in enumerate(zip(records, arrays)) if a.size}
    items = {_DIGEST_ITEM: ocp.args.JsonSave(digest)}
    if leaves:  # nor does it save an empty tree
      items[_STATE_ITEM] = ocp.args.PyTreeSave(leaves)
    what = f'checkpoint {step} in {self.directory!r}'
    manager = self._manager()
    try:
      if step in manager.all_steps():  # a rerun of a step already saved (e.g. Ctrl-C right after a checkpoint)
        manager.delete(step)
      manager.save(step, args=ocp.args.Composite(**items), force=True)
    except BaseException as e:
      # Drop the orbax manager (waiting for its threads): the next save reopens the directory, which deletes the
      # temporary directory this one left.
      try:
        self.close()
      except Exception:  # pylint: disable=broad-except
        pass
      if isinstance(e, OSError):
        raise CheckpointError(os_error_message(e, what)) from e
      if isinstance(e, (ValueError, RuntimeError)):  # tensorstore reports I/O failures as ValueError
        raise CheckpointError(f'cannot write {what}: {type(e).__name__}: {str(e)[:500]} (choose a writable --out '
                              'directory with free space).') from e
      raise
    self._remove_legacy()

  def _remove_legacy(self) -> None:
    """Deletes checkpoints written before orbax once ``keep`` orbax checkpoints exist (primary process only)."""
    if jax.process_index() != 0 or len(self._orbax_steps()) < self.keep:
      return
    for step in self._legacy_steps():
      try:
        os.remove(self._legacy_path(step))
      except OSError:
        pass

  def restore(self, step: int, template: Any) -> Restored:
    """Reads checkpoint ``step`` into ``template``'s structure (see :meth:`restore_latest`).

    Raises :class:`CheckpointError` naming the step for any damage or mismatch.
    """
    if step not in self._orbax_steps():
      if os.path.isfile(self._legacy_path(step)):
        return load(self._legacy_path(step), template)
      raise CheckpointError(f'there is no checkpoint {step} in {self.directory!r} (steps present: {self.steps()}).')
    return self._restore_orbax(step, template)

  def _restore_orbax(self, step: int, template: Any) -> Restored:
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    path = os.path.join(self.directory, str(step))
    where = f'checkpoint {step} ({path})'
    manager = self._manager()
    try:
      digest = manager.restore(step, args=ocp.args.Composite(**{_DIGEST_ITEM: ocp.args.JsonRestore()}))[_DIGEST_ITEM]
      if not isinstance(digest, dict) or digest.get('format') != FORMAT_NAME:
        raise ValueError(f'its {_DIGEST_ITEM!r} item is not a {FORMAT_NAME} digest')
      if digest.get('format_version') != ORBAX_FORMAT_VERSION:
        raise ValueError(f'format version {digest.get("format_version")!r}, this code reads {ORBAX_FORMAT_VERSION}')
      records = digest['leaves']
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # any failure to read means: damaged, fall back
      raise CheckpointError(f'{where} has a missing or damaged digest ({type(e).__name__}: {e}).') from e
    if int(digest.get('step', -1)) != step:
      raise CheckpointError(f'{where} is corrupted: its digest is that of step {digest.get("step")!r}.')
    _check_records(where, records, template)
    abstract = {f'leaf_{i:05d}': jax.ShapeDtypeStruct(tuple(r['shape']), jax.numpy.dtype(r['dtype']))
                for i, r in enumerate(records) if np.prod(r['shape'], dtype=np.int64)}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
    try:
      state = {}
      if abstract:
        state = manager.restore(step, args=ocp.args.Composite(**{
            _STATE_ITEM: ocp.args.PyTreeRestore(abstract, restore_args=restore_args)}))[_STATE_ITEM]
      stored = [np.asarray(state[name]) if name in abstract else np.empty(r['shape'], jax.numpy.dtype(r['dtype']))
                for name, r in ((f'leaf_{i:05d}', r) for i, r in enumerate(records))]
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'{where} is unreadable ({type(e).__name__}: {str(e)[:500]}).') from e
    for r, a in zip(records, stored):
      if list(a.shape) != r['shape'] or str(a.dtype) != r['dtype']:
        raise CheckpointError(f'{where} is corrupted: leaf {r["path"]} reads back as shape {a.shape} dtype {a.dtype}, '
                              f'its digest says shape {tuple(r["shape"])} dtype {r["dtype"]}.')
    if _digest([_storable(a) for a in stored]) != digest['sha256']:
      raise CheckpointError(f'{where} is corrupted: the SHA-256 of its leaves does not match its digest (the data '
                            'changed after it was written).')
    return Restored(step, _decode(records, stored, template), digest.get('metadata', {}), path)

  def restore_latest(self, template: Any) -> Restored | None:
    """The newest checkpoint that passes every check, or ``None`` if there is none.

    ``template``: the tree to restore into (arrays or ``ShapeDtypeStruct``s); the result has exactly its structure
    and dtypes, as host arrays (typed PRNG keys as keys). Damaged checkpoints are skipped with a ``UserWarning``
    naming their step. If checkpoints exist but none is readable, raises :class:`CheckpointError` rather than
    silently starting over.
    """
    orbax_steps = set(self._orbax_steps())
    steps = sorted(orbax_steps | set(self._legacy_steps()))
    failures = []
    for step in reversed(steps):
      try:
        if step in orbax_steps:
          return self._restore_orbax(step, template)
        return load(self._legacy_path(step), template)
      except CheckpointError as e:
        failures.append(str(e))
        warnings.warn(f'{e} Falling back to the previous checkpoint.', UserWarning, stacklevel=2)
    if failures:
      raise CheckpointError(
          f'none of the {len(steps)} checkpoints in {self.directory!r} can be restored:\n  ' + '\n  '.join(failures) +
          '\nDelete that directory (or use a new --out directory) to start the run over.')
    return None

