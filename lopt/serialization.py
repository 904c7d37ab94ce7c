"""Saving and loading meta-trained optimizers: one self-describing ``.npz`` file, no pickled code.

A file holds everything :func:`load` needs to rebuild the optimizer::

    lopt.save('hrnn.npz', lopt.HierarchicalRNN(), meta_params)
    optimizer, meta_params = lopt.load('hrnn.npz')
    tx = optimizer.transform(meta_params)

Format (version 1). A standard numpy ``.npz`` (a zip of ``.npy`` members, readable with
``np.load(path, allow_pickle=False)``):

* one member per meta-parameter leaf, keyed by its tree path as ``jax.tree_util.keystr`` prints it
  (e.g. ``['gru']['kernel']``). Dtypes numpy cannot store without pickle (bfloat16, ...) are stored as raw unsigned
  integers of the same width, and the header records the real dtype;
* a member ``__lopt_header__`` holding UTF-8 JSON::

    {"format": "lopt-meta-params", "format_version": 1,
     "architecture": <the class's `name`>, "config": <optimizer.config()>,
     "leaves": [{"path": ..., "shape": [...], "dtype": "float32"}, ...],   # in tree-flatten order
     "sha256": <hex digest of the leaves' C-order bytes, concatenated in that order>}

Integrity is checked twice: the zip's per-member CRC-32 catches flipped bytes, and the SHA-256 catches leaves edited
or re-zipped without the header being updated. :func:`load` then rebuilds the architecture from its name and config and
checks that the stored leaves are exactly the tree ``optimizer.init(key)`` would make (same paths, shapes, dtypes), so
a file written for another version of an architecture fails loudly, naming the leaf, instead of loading garbage.

Writes are atomic (a temporary file in the same directory, then ``os.replace``): a crash never leaves a half-written
file under the final name. The file gets the permissions of any new file (0o666 less the process umask).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt import base

FORMAT_NAME = 'lopt-meta-params'
FORMAT_VERSION = 1
HEADER_KEY = '__lopt_header__'
_ZIP_MAGIC = b'PK\x03\x04'


class LoptFileError(ValueError):
  """A file cannot be loaded as a learned optimizer; the message names the file and the problem."""


class LoptFileNotFoundError(LoptFileError, FileNotFoundError):
  """The file does not exist (also a ``FileNotFoundError``, so either ``except`` clause catches it)."""


def _leaf_key(path) -> str:
  return jax.tree_util.keystr(path) or '<root>'


def _expected_leaves(optimizer: base.LearnedOptimizer) -> tuple[list[str], list[jax.ShapeDtypeStruct], Any]:
  """The paths, shapes/dtypes and treedef of ``optimizer.init(key)``, traced abstractly (no arrays are made)."""
  shapes = jax.eval_shape(optimizer.init, jax.random.key(0))
  flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  return [_leaf_key(p) for p, _ in flat], [s for _, s in flat], treedef


def _storable(array: np.ndarray) -> np.ndarray:
  """``array`` as numpy can write it without pickle: extension dtypes (bfloat16, float8...) as raw unsigned ints."""
  if array.dtype.isbuiltin == 1 and array.dtype.kind in 'biufc':
    return array
  return array.view(np.dtype(f'u{array.dtype.itemsize}'))


def _digest(arrays: list[np.ndarray]) -> str:
  sha = hashlib.sha256()
  for a in arrays:
    sha.update(np.ascontiguousarray(a).tobytes())
  return sha.hexdigest()


def _describe_mismatch(
    where: str, got: Mapping[str, tuple[tuple[int, ...], str]], expected: Mapping[str, tuple[tuple[int, ...], str]]
) -> str | None:
  """A message naming the first differing leaves between two {path: (shape, dtype)} maps, or None if equal."""
  problems = []
  missing = [k for k in expected if k not in got]
  extra = [k for k in got if k not in expected]
  if missing:
    problems.append(f'leaf {missing[0]} is missing' + (f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''))
  if extra:
    problems.append(f'leaf {extra[0]} is unexpected' + (f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''))
  for k in expected:
    if k in got and got[k] != expected[k]:
      (gs, gd), (es, ed) = got[k], expected[k]
      problems.append(f'leaf {k} has shape {gs} dtype {gd} but the architecture makes shape {es} dtype {ed}')
  return f'{where}: ' + '; '.join(problems) if problems else None


def save(path: str | os.PathLike, optimizer: base.LearnedOptimizer, meta_params: base.MetaParams) -> None:
  """Writes ``optimizer`` (its architecture name and config) and ``meta_params`` to ``path`` atomically.

  ``path`` is used as given (no extension is appended; ``.npz`` is the convention). Raises ``TypeError`` if
  ``optimizer`` is not a :class:`lopt.LearnedOptimizer` or its config is not JSON-serialisable, and ``ValueError`` if
  ``meta_params`` does not have the tree structure, shapes and dtypes of ``optimizer.init(key)``: such a file could
  not be loaded back.
  """
  path = os.fspath(path)
  if not isinstance(optimizer, base.LearnedOptimizer):
    raise TypeError(f'lopt.save: optimizer must be a lopt.LearnedOptimizer (an architecture object such as '
                    f'lopt.HierarchicalRNN()), got {type(optimizer).__name__}.')
  try:
    config_json = json.dumps(optimizer.config())
  except TypeError as e:
    raise TypeError(f'lopt.save: the config of {optimizer!r} is not JSON-serialisable ({e}); architecture fields '
                    'must be bool, int, float, str or tuples of them.') from e

  flat, _ = jax.tree_util.tree_flatten_with_path(meta_params)
  paths = [_leaf_key(p) for p, _ in flat]
  arrays = [np.asarray(jax.device_get(x)) for _, x in flat]
  exp_paths, exp_shapes, _ = _expected_leaves(optimizer)
  mismatch = _describe_mismatch(
      f'lopt.save: meta_params do not match {type(optimizer).__name__}.init(key)',
      {p: (tuple(a.shape), str(a.dtype)) for p, a in zip(paths, arrays)},
      {p: (tuple(s.shape), str(s.dtype)) for p, s in zip(exp_paths, exp_shapes)})
  if mismatch:
    raise ValueError(mismatch + '. Save the meta-parameters this optimizer made (or was meta-trained from).')

  header = {
      'format': FORMAT_NAME,
      'format_version': FORMAT_VERSION,
      'architecture': optimizer.name,
      'config': json.loads(config_json),
      'leaves': [{'path': p, 'shape': list(a.shape), 'dtype': str(a.dtype)} for p, a in zip(paths, arrays)],
      'sha256': _digest(arrays),
  }
  members = {p: _storable(a) for p, a in zip(paths, arrays)}
  members[HEADER_KEY] = np.frombuffer(json.dumps(header, indent=1).encode('utf-8'), np.uint8)

  fd, tmp_path = _create_temporary(path)
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **members)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise


def _create_temporary(path: str) -> tuple[int, str]:
  """Opens a new temporary file next to ``path``; returns ``(fd, its path)``.

  Created with mode 0o666 filtered by the process umask, like any file the user writes (``tempfile.mkstemp`` would
  force 0o600, and ``os.replace`` keeps the temporary's mode, so saved optimizers would be unreadable by the group).
  ``O_EXCL`` with a random name gives mkstemp's guarantee that no other file is reused.
  """
  directory = os.path.dirname(os.path.abspath(path))
  flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0)
  for _ in range(100):
    tmp_path = os.path.join(directory, f'.{os.path.basename(path)}.{secrets.token_hex(6)}.tmp')
    try:
      return os.open(tmp_path, flags, 0o666), tmp_path
    except FileExistsError:
      continue
  raise FileExistsError(f'lopt.save: could not create a temporary file next to {path!r} (100 names taken).')


def _read_members(path: str) -> dict[str, np.ndarray]:
  """All members of the npz at ``path``, with every low-level failure turned into a :class:`LoptFileError`."""
  if not os.path.exists(path):
    raise LoptFileNotFoundError(f'lopt.load: no such file {path!r}.')
  with open(path, 'rb') as f:
    magic = f.read(len(_ZIP_MAGIC))
  if magic != _ZIP_MAGIC:
    if not magic:
      raise LoptFileError(f'lopt.load: {path!r} is empty (truncated to 0 bytes).')
    raise LoptFileError(f'lopt.load: {path!r} is not a lopt file (not a .npz archive; lopt.save writes one).')
  try:
    npz = np.load(path, allow_pickle=False)
  except (zipfile.BadZipFile, EOFError, OSError) as e:
    # The archive starts like a zip but its central directory (stored at the end) cannot be read: the tail is gone.
    raise LoptFileError(f'lopt.load: {path!r} is truncated or its end is damaged: the zip directory cannot be '
                        f'read ({e}). Re-copy or re-save the file.') from e
  with npz:
    if HEADER_KEY not in npz.files:
      raise LoptFileError(f'lopt.load: {path!r} is not a lopt file: it is a .npz without the {HEADER_KEY!r} member '
                          'that lopt.save writes.')
    members = {}
    for name in npz.files:
      try:
        members[name] = npz[name]
      except Exception as e:  # zip CRC failure, damaged .npy header, decompression error, ...
        raise LoptFileError(f'lopt.load: {path!r} is corrupted: member {name!r} cannot be read ({e}).') from e
  return members


def _parse_header(path: str, raw: np.ndarray) -> dict[str, Any]:
  try:
    header = json.loads(raw.tobytes().decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise LoptFileError(f'lopt.load: {path!r} is corrupted: its header is not valid JSON ({e}).') from e
  if not isinstance(header, dict) or header.get('format') != FORMAT_NAME:
    raise LoptFileError(f'lopt.load: {path!r} is not a lopt file: its header does not declare format '
                        f'{FORMAT_NAME!r}.')
  version = header.get('format_version')
  if version != FORMAT_VERSION:
    raise LoptFileError(f'lopt.load: {path!r} has format version {version!r}, but this lopt reads version '
                        f'{FORMAT_VERSION} only. Load it with the lopt release that wrote it.')
  for field in ('architecture', 'config', 'leaves', 'sha256'):
    if field not in header:
      raise LoptFileError(f'lopt.load: {path!r} is corrupted: its header has no {field!r} field.')
  return header


def load(
    path: str | os.PathLike, architectures: Mapping[str, type[base.LearnedOptimizer]] | None = None
) -> tuple[base.LearnedOptimizer, base.MetaParams]:
  """Reads a file written by :func:`save`; returns ``(optimizer, meta_params)``.

  Args:
    path: the file.
    architectures: maps an architecture ``name`` to its class; defaults to :data:`lopt.BUILTIN_ARCHITECTURES`. Pass
      ``{**lopt.BUILTIN_ARCHITECTURES, MyOpt.name: MyOpt}`` to load your own architectures.

  Raises:
    LoptFileNotFoundError: the file does not exist.
    LoptFileError: the file is truncated, corrupted (CRC or SHA-256 mismatch), not a lopt file, of an unsupported
      format version, made by an unknown architecture, or made with a config whose meta-parameters no longer match
      what the architecture builds. The message names the file and, where it applies, the leaf.
  """
  path = os.fspath(path)
  if architectures is None:
    # Imported here, not at module level: lopt.architectures imports every architecture module, and serialization
    # should stay usable (with an explicit mapping) while one of them is being edited.
    from lopt.architectures import BUILTIN_ARCHITECTURES as architectures  # pylint: disable=import-outside-toplevel

  members = _read_members(path)
  header = _parse_header(path, members.pop(HEADER_KEY))

  name = header['architecture']
  if name not in architectures:
    raise LoptFileError(f'lopt.load: {path!r} was written by architecture {name!r}, which is not known. Known '
                        f'architectures: {sorted(architectures)}. Pass architectures={{..., {name!r}: TheClass}} '
                        'to load a custom one.')
  cls = architectures[name]
  try:
    optimizer = cls.from_config(header['config'])
  except (TypeError, ValueError) as e:
    raise LoptFileError(f'lopt.load: {path!r} has a config that {cls.__name__} no longer accepts: {e}') from e

  # The file against its own header: catches members added, dropped or edited without going through lopt.save.
  stored = {}
  for leaf in header['leaves']:
    key, dtype = leaf['path'], jnp.dtype(leaf['dtype'])
    if key not in members:
      raise LoptFileError(f'lopt.load: {path!r} is corrupted: the header lists leaf {key} but the archive lacks it.')
    array = members.pop(key)
    if array.dtype != dtype:
      if array.dtype != _storable(np.zeros(0, dtype)).dtype:
        raise LoptFileError(f'lopt.load: {path!r} is corrupted: leaf {key} has dtype {array.dtype} but the header '
                            f'says {dtype}.')
      array = array.view(dtype)  # stored as raw unsigned ints (see _storable)
    if list(array.shape) != list(leaf['shape']):
      raise LoptFileError(f'lopt.load: {path!r} is corrupted: leaf {key} has shape {array.shape} but the header '
                          f'says {tuple(leaf["shape"])}.')
    stored[key] = array
  if members:
    raise LoptFileError(f'lopt.load: {path!r} is corrupted: the archive has member(s) {sorted(members)} that the '
                        'header does not list.')
  if _digest(list(stored.values())) != header['sha256']:
    raise LoptFileError(f'lopt.load: {path!r} is corrupted: the SHA-256 of the meta-parameters does not match the '
                        'header (the arrays were modified after saving).')

  # The file against what the architecture builds today.
  exp_paths, exp_shapes, treedef = _expected_leaves(optimizer)
  mismatch = _describe_mismatch(
      f'lopt.load: {path!r} does not match {cls.__name__}({_config_repr(header["config"])})',
      {k: (tuple(a.shape), str(a.dtype)) for k, a in stored.items()},
      {p: (tuple(s.shape), str(s.dtype)) for p, s in zip(exp_paths, exp_shapes)})
  if mismatch:
    raise LoptFileError(mismatch + '. The file was made for a different version or config of this architecture.')
  meta_params = jax.tree.unflatten(treedef, [jnp.asarray(stored[p]) for p in exp_paths])
  return optimizer, meta_params


def _config_repr(config: Mapping[str, Any]) -> str:
  return ', '.join(f'{k}={v!r}' for k, v in config.items())
