"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST (pure numpy, no downloads).

An IDX file is a 4-byte magic number, one big-endian ``uint32`` per dimension, then the array in C order,
big-endian::

    magic = 0x00 0x00 <dtype code> <ndim>
    dims  = ndim x uint32 (big-endian)
    data  = prod(dims) x itemsize(dtype) bytes

with dtype codes 0x08 ``uint8``, 0x09 ``int8``, 0x0B ``int16``, 0x0C ``int32``, 0x0D ``float32``, 0x0E ``float64``
(LeCun et al., "The MNIST database of handwritten digits", file-format section). Files may be gzipped; the reader
recognises gzip by its own magic bytes (``1f 8b``), not by the file name.

:func:`read_idx` checks everything it can before trusting the bytes: the two zero bytes of the magic number, the
dtype code, that the header fits, and that the payload has *exactly* the length the dimensions promise. A truncated
download or a corrupted gzip stream therefore raises :class:`IdxFormatError` naming the file and the problem instead
of returning a silently short or garbled array.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Union

import numpy as np

PathLike = Union[str, os.PathLike]

#: IDX dtype code -> numpy dtype (big-endian, as stored in the file).
IDX_DTYPES = {
    0x08: np.dtype('>u1'),
    0x09: np.dtype('>i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}
_CODE_OF_DTYPE = {dtype.newbyteorder('='): code for code, dtype in IDX_DTYPES.items()}
_GZIP_MAGIC = b'\x1f\x8b'


class IdxFormatError(ValueError):
  """An IDX file is truncated, corrupted or not an IDX file at all. The message names the file and the problem."""


def _read_bytes(path: PathLike) -> bytes:
  """The file's content, gunzipped if it is a gzip stream; gzip errors become :class:`IdxFormatError`."""
  with open(path, 'rb') as f:
    raw = f.read()
  if not raw.startswith(_GZIP_MAGIC):
    return raw
  try:
    return gzip.decompress(raw)
  except EOFError as e:  # The stream stops before its end marker: a partial download or copy.
    raise IdxFormatError(f'{os.fspath(path)}: truncated gzip stream ({e}); the file is incomplete, '
                         're-install or re-copy it.') from e
  except (gzip.BadGzipFile, zlib.error) as e:  # CRC or length mismatch, bad deflate data.
    raise IdxFormatError(f'{os.fspath(path)}: corrupted gzip stream ({e}); re-install or re-copy it.') from e


def parse_idx(content: bytes, name: str = '<bytes>') -> np.ndarray:
  """Parses the bytes of an (uncompressed) IDX file; ``name`` is used in error messages."""
  if len(content) < 4:
    raise IdxFormatError(f'{name}: {len(content)} bytes is too short for the 4-byte IDX magic number.')
  zero0, zero1, code, ndim = content[:4]
  if zero0 != 0 or zero1 != 0:
    raise IdxFormatError(f'{name}: bad magic number 0x{content[:4].hex()}; an IDX file starts with two zero bytes '
                         '(0x0000<dtype><ndim>). Is this an IDX file?')
  if code not in IDX_DTYPES:
    known = ', '.join(f'0x{c:02X}' for c in IDX_DTYPES)
    raise IdxFormatError(f'{name}: unknown IDX dtype code 0x{code:02X} in the magic number; expected one of {known}.')
  header_len = 4 + 4 * ndim
  if len(content) < header_len:
    raise IdxFormatError(f'{name}: file has {len(content)} bytes but its header declares {ndim} dimensions, '
                         f'which need a {header_len}-byte header.')
  shape = tuple(int(d) for d in np.frombuffer(content, dtype='>u4', count=ndim, offset=4))
  dtype = IDX_DTYPES[code]
  expected_len = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(content) != expected_len:
    problem = 'truncated' if len(content) < expected_len else 'has trailing bytes'
    raise IdxFormatError(f'{name}: wrong length, {problem}: dimensions {shape} of dtype {dtype.name} need '
                         f'{expected_len} bytes, the (decompressed) file has {len(content)}.')
  data = np.frombuffer(content, dtype=dtype, offset=header_len).reshape(shape)
  # Native byte order, and a writable copy independent of the (possibly huge) bytes object.
  return data.astype(dtype.newbyteorder('='))


def read_idx(path: PathLike) -> np.ndarray:
  """Reads an IDX file (gzipped or raw) into a native-endian numpy array, validating header and length.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    IdxFormatError: bad magic number, unknown dtype code, header or payload of the wrong length, truncated or
      corrupted gzip stream. The message starts with the path.
  """
  return parse_idx(_read_bytes(path), name=os.fspath(path))


def write_idx(path: PathLike, array: np.ndarray, compress: bool | None = None) -> None:
  """Writes ``array`` as an IDX file; gzipped if ``compress`` or (when ``None``) if ``path`` ends in ``.gz``."""
  array = np.asarray(array)
  native = array.dtype.newbyteorder('=')
  if native not in _CODE_OF_DTYPE:
    raise ValueError(f'IDX cannot store dtype {array.dtype}; use one of '
                     f'{sorted(d.name for d in _CODE_OF_DTYPE)}.')
  if array.ndim > 255:
    raise ValueError(f'IDX stores at most 255 dimensions, got {array.ndim}.')
  code = _CODE_OF_DTYPE[native]
  content = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype='>u4').tobytes() +
             np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes())
  if compress is None:
    compress = os.fspath(path).endswith('.gz')
  if compress:
    content = gzip.compress(content)
  with open(path, 'wb') as f:
    f.write(content)
