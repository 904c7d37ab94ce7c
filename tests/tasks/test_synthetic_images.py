"""The generated image dataset: deterministic, balanced, image-like, and learnable but not trivial."""

import numpy as np
import pytest

from tasks import datasets, synthetic_images
from tasks.base import SPLITS


@pytest.fixture(scope='module')
def generated():
  return synthetic_images.generate(seed=0)


def test_same_seed_same_data_other_seed_other_data(generated):
  images, labels = generated
  small = {'train': 50, 'inner_valid': 5, 'outer_valid': 5, 'test': 10}
  again, again_labels = synthetic_images.generate(seed=0)
  for split in SPLITS:
    np.testing.assert_array_equal(again[split], images[split])
    np.testing.assert_array_equal(again_labels[split], labels[split])
  other, _ = synthetic_images.generate(seed=1, split_sizes=small)
  assert not np.array_equal(other['train'], images['train'][:50])


def test_splits_shapes_and_balance(generated):
  images, labels = generated
  for split, n in synthetic_images.SYNTHETIC_SPLIT_SIZES.items():
    assert images[split].shape == (n, 16, 16) and images[split].dtype == np.uint8
    assert labels[split].shape == (n,) and set(np.unique(labels[split])) == set(range(10))
  # Uniform labels: with 10,000 draws each class's share is 0.1 +- 0.003 (1 sd), so [0.088, 0.112] is 4 sd.
  shares = np.bincount(labels['train'], minlength=10) / len(labels['train'])
  assert np.all(np.abs(shares - 0.1) < 0.012), shares


def test_images_look_like_images(generated):
  images, _ = generated
  x = images['train'].astype(np.float64) / 255
  # Mostly dark, with bright structure (Fashion-MNIST: mean 0.29, half the pixels below 0.08).
  assert 0.1 < x.mean() < 0.35
  assert np.mean(x < 0.08) > 0.25 and np.mean(x > 0.5) > 0.05
  # Spatially correlated: neighbouring pixels correlate far more than pixel noise alone would allow.
  right_neighbour = np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1]
  assert right_neighbour > 0.6


def test_classes_are_learnable_but_not_trivially_separable(generated):
  """A nearest-class-mean classifier (no training) sits far above chance (0.1) and far below perfect: the shifts
  and the clutter leave something for a network to learn (measured: 0.45)."""
  images, labels = generated
  train = images['train'].reshape(len(images['train']), -1) / 255
  test = images['test'].reshape(len(images['test']), -1) / 255
  means = np.stack([train[labels['train'] == c].mean(0) for c in range(10)])
  predicted = np.argmin(((test[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
  accuracy = np.mean(predicted == labels['test'])
  assert 0.3 < accuracy < 0.7, accuracy


def test_load_dataset_gives_an_image_dataset():
  dataset = datasets.load_dataset('synthetic_images')
  assert dataset.name == 'synthetic_images' and dataset.num_classes == 10 and dataset.image_shape == (16, 16)
  assert {s: dataset.size(s) for s in SPLITS} == synthetic_images.SYNTHETIC_SPLIT_SIZES
  pixels = np.asarray(dataset.images_as_float(dataset.splits['test'].images))
  assert pixels.min() >= 0 and pixels.max() <= 1
  with pytest.raises(ValueError, match='synthetic_images needs no files and takes no data_dir'):
    datasets.load_dataset('synthetic_images', data_dir='/tmp')


@pytest.mark.parametrize('kwargs, message', [({'size': 2}, 'size must be >= 4'),
                                             ({'num_classes': 1}, 'num_classes >= 2')])
def test_bad_arguments_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    synthetic_images.generate(**kwargs)
