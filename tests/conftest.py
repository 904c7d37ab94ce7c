"""Shared pytest setup: float32 JAX on whatever backend is present, and the data-requirement switch."""

import os

import jax
import pytest

# Float32 matrix products at full float32 precision on every backend. On recent NVIDIA GPUs XLA's default computes
# them in TF32 (10-bit mantissa), and tests that compare a program with its loop or NumPy reference at float32
# tolerances then fail by up to ~1e-3 relative: 6 of the 181 contract tests on an H100 (2026-11-27), all of which pass
# with 'highest'. On CPU this changes nothing.
jax.config.update('jax_default_matmul_precision', 'highest')

# Tests that need Fashion-MNIST skip (with the reason) when the Debian package is absent on a user's machine.
# CI sets LOPT_REQUIRE_DATA=1 so that a missing dataset fails the run instead of silently skipping.
REQUIRE_DATA = os.environ.get('LOPT_REQUIRE_DATA', '') == '1'


def skip_or_fail_missing_data(reason: str) -> None:
  if REQUIRE_DATA:
    pytest.fail(f'LOPT_REQUIRE_DATA=1 but {reason}')
  pytest.skip(reason)


@pytest.fixture(scope='session')
def fashion_mnist_dir() -> str:
  """The directory holding the Fashion-MNIST IDX files. Skips with the searched places when they are absent
  (fails instead under LOPT_REQUIRE_DATA=1)."""
  from tasks import datasets  # Imported here so that collecting unrelated tests never touches the data code.
  try:
    return datasets.locate_fashion_mnist()
  except datasets.DatasetNotFoundError as e:
    skip_or_fail_missing_data(str(e))
