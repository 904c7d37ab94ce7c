"""Dataset loaders: split sizes, disjoint splits, contents equal to the source files, and errors for missing data."""

import os

import numpy as np
import pytest
import sklearn.datasets

from tasks import datasets, idx
from tasks.base import SPLITS


def _assert_disjoint_cover(dataset, pool_size):
  """Every split is a set of distinct source indices, no index is in two splits, and they cover the pool."""
  seen = np.concatenate([dataset.source_indices[s] for s in SPLITS])
  assert len(np.unique(seen)) == len(seen), 'an example appears in two splits (or twice in one)'
  np.testing.assert_array_equal(np.sort(seen), np.arange(pool_size))


def test_digits_splits_match_sklearn():
  digits = datasets.load_digits()
  assert {s: digits.size(s) for s in SPLITS} == datasets.DIGITS_SPLIT_SIZES
  assert sum(datasets.DIGITS_SPLIT_SIZES.values()) == 1797
  _assert_disjoint_cover(digits, 1797)
  reference = sklearn.datasets.load_digits()
  for split in SPLITS:
    ix = digits.source_indices[split]
    data = digits.splits[split]
    assert data.images.dtype == np.uint8 and data.images.shape == (len(ix), 8, 8)
    np.testing.assert_array_equal(np.asarray(digits.images_as_float(data.images)), reference.images[ix] / 16)
    np.testing.assert_array_equal(np.asarray(data.labels), reference.target[ix])
  assert datasets.load_digits() is digits  # Loaded once per process.


@pytest.mark.data
def test_fashion_mnist_matches_the_idx_files(fashion_mnist_dir):
  fashion = datasets.load_fashion_mnist()
  assert {s: fashion.size(s) for s in SPLITS} == datasets.MNIST_SPLIT_SIZES
  assert fashion.image_shape == (28, 28) and fashion.num_classes == 10
  _assert_disjoint_cover(fashion, 70000)
  # Independent reference: the raw files, read directly; train/valid splits are slices of the train file.
  train_labels = idx.read_idx(os.path.join(fashion_mnist_dir, 'train-labels-idx1-ubyte.gz'))
  test_images = idx.read_idx(os.path.join(fashion_mnist_dir, 't10k-images-idx3-ubyte.gz'))
  np.testing.assert_array_equal(np.asarray(fashion.splits['test'].images), test_images)
  for split in ('train', 'inner_valid', 'outer_valid'):
    np.testing.assert_array_equal(np.asarray(fashion.splits[split].labels),
                                  train_labels[fashion.source_indices[split]])
  for split in SPLITS:
    data = fashion.splits[split]
    assert data.images.dtype == np.uint8 and data.labels.dtype == np.int32
    # Every split holds all ten classes, and nothing else (Fashion-MNIST is balanced, so 3000 examples suffice).
    np.testing.assert_array_equal(np.unique(np.asarray(data.labels)), np.arange(10))
    scaled = np.asarray(fashion.images_as_float(data.images[:500]))
    assert scaled.min() == 0.0 and scaled.max() == 1.0
  assert datasets.load_fashion_mnist(fashion_mnist_dir) is fashion  # Cached per resolved directory.


@pytest.mark.data
def test_mnist_reads_a_user_directory_with_dotted_names(fashion_mnist_dir, tmp_path):
  # MNIST and Fashion-MNIST share the file layout; links to the Fashion-MNIST files under the dotted names some
  # MNIST mirrors use exercise the MNIST loader and its name variants without needing MNIST itself.
  for stem in datasets._IDX_STEMS.values():
    os.symlink(os.path.join(fashion_mnist_dir, stem + '.gz'),
               tmp_path / (stem.replace('-idx', '.idx') + '.gz'))
  mnist = datasets.load_mnist(data_dir=tmp_path)
  fashion = datasets.load_fashion_mnist()
  assert mnist.name == 'mnist' and mnist.source == os.path.realpath(tmp_path)
  for split in SPLITS:
    np.testing.assert_array_equal(np.asarray(mnist.splits[split].labels), np.asarray(fashion.splits[split].labels))


def test_missing_fashion_mnist_lists_every_place_and_the_fix(tmp_path, monkeypatch):
  env_dir, system_dir = tmp_path / 'from_env', tmp_path / 'system'
  env_dir.mkdir()
  monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(env_dir))
  monkeypatch.setattr(datasets, 'FASHION_MNIST_SYSTEM_DIR', str(system_dir))
  with pytest.raises(datasets.DatasetNotFoundError) as error:
    datasets.load_fashion_mnist()
  message = str(error.value)
  assert f'{env_dir} (${datasets.FASHION_MNIST_ENV})' in message
  assert f'{system_dir} (system location)' in message
  assert 'train-images-idx3-ubyte[.gz]' in message
  assert 'apt-get install dataset-fashion-mnist' in message and 'data_dir=' in message

  with pytest.raises(datasets.DatasetNotFoundError, match=f'{tmp_path} \\(data_dir argument\\)'):
    datasets.load_dataset('fashion_mnist', data_dir=tmp_path)


def test_missing_mnist_says_the_variable_is_unset(monkeypatch):
  monkeypatch.delenv(datasets.MNIST_ENV, raising=False)
  with pytest.raises(datasets.DatasetNotFoundError, match=rf'\${datasets.MNIST_ENV}: not set(.|\n)*data_dir='):
    datasets.load_mnist()


def _write_small_mnist(directory, train_labels, num_test=10):
  n = len(train_labels)
  idx.write_idx(directory / 'train-images-idx3-ubyte', np.zeros((n, 28, 28), np.uint8))
  idx.write_idx(directory / 'train-labels-idx1-ubyte', np.asarray(train_labels, np.uint8))
  idx.write_idx(directory / 't10k-images-idx3-ubyte', np.zeros((num_test, 28, 28), np.uint8))
  idx.write_idx(directory / 't10k-labels-idx1-ubyte', np.zeros(num_test, np.uint8))


def test_rejects_labels_out_of_range(tmp_path):
  _write_small_mnist(tmp_path, [0, 3, 11])
  with pytest.raises(idx.IdxFormatError, match=r'train-labels-idx1-ubyte: labels must lie in 0..9, found 0..11'):
    datasets.load_mnist(tmp_path)


def test_rejects_a_subset_of_mnist(tmp_path):
  _write_small_mnist(tmp_path, [1, 2, 3])
  with pytest.raises(idx.IdxFormatError, match=r'train-images-idx3-ubyte: holds 3 images; .* has 60000'):
    datasets.load_mnist(tmp_path)


@pytest.mark.data
def test_truncated_file_is_named(fashion_mnist_dir, tmp_path):
  for stem in datasets._IDX_STEMS.values():
    os.symlink(os.path.join(fashion_mnist_dir, stem + '.gz'), tmp_path / (stem + '.gz'))
  # Replace the training images by the first 100 kB of their gzip stream: an interrupted copy.
  (tmp_path / 'train-images-idx3-ubyte.gz').unlink()
  with open(os.path.join(fashion_mnist_dir, 'train-images-idx3-ubyte.gz'), 'rb') as f:
    (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(f.read(100_000))
  with pytest.raises(idx.IdxFormatError, match=r'train-images-idx3-ubyte\.gz: truncated gzip stream'):
    datasets.load_fashion_mnist(tmp_path)


def test_unknown_dataset_names_the_choices():
  with pytest.raises(ValueError, match=r"unknown dataset 'cifar'.*'digits'"):
    datasets.load_dataset('cifar')
