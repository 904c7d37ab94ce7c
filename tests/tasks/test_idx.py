"""The IDX reader: round trips of files the test writes, and clear errors for every kind of damage."""

import gzip
import struct

import numpy as np
import pytest

from tasks import idx


@pytest.mark.parametrize('compress', [True, False])
@pytest.mark.parametrize('dtype', ['uint8', 'int8', 'int16', 'int32', 'float32', 'float64'])
def test_round_trip(tmp_path, dtype, compress):
  rng = np.random.default_rng(0)
  array = (rng.normal(size=(3, 5, 7)) * 100).astype(dtype)
  path = tmp_path / ('a.idx.gz' if compress else 'a.idx')
  idx.write_idx(path, array)
  assert (path.read_bytes()[:2] == b'\x1f\x8b') == compress
  loaded = idx.read_idx(path)
  assert loaded.dtype == np.dtype(dtype)  # Native byte order, same kind.
  np.testing.assert_array_equal(loaded, array)


def test_header_layout_matches_the_format(tmp_path):
  # An independent, hand-built file: magic 0x00000C02 (int32, 2 dims), dims 2 and 3 big-endian, big-endian payload.
  values = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
  content = bytes([0, 0, 0x0C, 2]) + struct.pack('>II', 2, 3) + struct.pack('>6i', *values.ravel())
  (tmp_path / 'hand.idx').write_bytes(content)
  np.testing.assert_array_equal(idx.read_idx(tmp_path / 'hand.idx'), values)
  idx.write_idx(tmp_path / 'ours.idx', values)
  assert (tmp_path / 'ours.idx').read_bytes() == content


def test_gzip_is_detected_by_content_not_name(tmp_path):
  array = np.arange(10, dtype=np.uint8)
  idx.write_idx(tmp_path / 'no_suffix', array, compress=True)
  np.testing.assert_array_equal(idx.read_idx(tmp_path / 'no_suffix'), array)


def _write_raw(tmp_path, content, name='bad.idx'):
  path = tmp_path / name
  path.write_bytes(content)
  return path


def test_rejects_bad_magic(tmp_path):
  path = _write_raw(tmp_path, b'\x01\x00\x08\x01' + struct.pack('>I', 1) + b'\x00')
  with pytest.raises(idx.IdxFormatError, match=r'bad\.idx: bad magic number 0x01000801'):
    idx.read_idx(path)


def test_rejects_unknown_dtype_code(tmp_path):
  path = _write_raw(tmp_path, b'\x00\x00\x0A\x01' + struct.pack('>I', 1) + b'\x00')
  with pytest.raises(idx.IdxFormatError, match=r'bad\.idx: unknown IDX dtype code 0x0A'):
    idx.read_idx(path)


@pytest.mark.parametrize('delta, problem', [(-1, 'truncated'), (+3, 'has trailing bytes')])
def test_rejects_wrong_length(tmp_path, delta, problem):
  idx.write_idx(tmp_path / 'good.idx', np.zeros((4, 5), np.int16))  # 12-byte header + 40 bytes of data.
  content = (tmp_path / 'good.idx').read_bytes()
  content = content[:delta] if delta < 0 else content + b'\x00' * delta
  path = _write_raw(tmp_path, content)
  with pytest.raises(idx.IdxFormatError, match=rf'bad\.idx: wrong length, {problem}.*\(4, 5\).*int16 need 52 bytes'):
    idx.read_idx(path)


def test_rejects_header_shorter_than_its_dimensions(tmp_path):
  path = _write_raw(tmp_path, b'\x00\x00\x08\x03' + struct.pack('>I', 7))
  with pytest.raises(idx.IdxFormatError, match=r'bad\.idx: .*declares 3 dimensions.*16-byte header'):
    idx.read_idx(path)


def test_rejects_truncated_gzip(tmp_path):
  idx.write_idx(tmp_path / 'full.idx.gz', np.arange(1000, dtype=np.int32))
  content = (tmp_path / 'full.idx.gz').read_bytes()
  path = _write_raw(tmp_path, content[:len(content) // 2], 'cut.idx.gz')
  with pytest.raises(idx.IdxFormatError, match=r'cut\.idx\.gz: truncated gzip stream'):
    idx.read_idx(path)


def test_rejects_corrupted_gzip(tmp_path):
  # A valid gzip stream whose CRC trailer is wrong: the payload cannot be trusted.
  content = bytearray(gzip.compress(b'\x00\x00\x08\x01' + struct.pack('>I', 3) + b'abc'))
  content[-8] ^= 0xFF
  path = _write_raw(tmp_path, bytes(content), 'crc.idx.gz')
  with pytest.raises(idx.IdxFormatError, match=r'crc\.idx\.gz: corrupted gzip stream'):
    idx.read_idx(path)


def test_writer_rejects_unsupported_dtype(tmp_path):
  with pytest.raises(ValueError, match='cannot store dtype uint16'):
    idx.write_idx(tmp_path / 'x.idx', np.zeros(3, np.uint16))
