"""Image patches, tabular MLPs and autoencoders: the data of the validation and test suites."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from tasks import autoencoder, datasets, image_patches, tabular


def test_patches_are_deterministic_balanced_and_labelled_by_image_and_quadrant():
  images, labels, indices = image_patches.generate(seed=0, size=8)
  again, again_labels, _ = image_patches.generate(seed=0, size=8)
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(labels, again_labels)
  assert images.dtype == np.uint8 and images.shape == (sum(image_patches.PATCH_SPLIT_SIZES.values()), 8, 8)
  assert set(indices) == {'train', 'inner_valid', 'outer_valid', 'test'}
  assert {k: len(v) for k, v in indices.items()} == image_patches.PATCH_SPLIT_SIZES
  counts = np.bincount(labels, minlength=image_patches.NUM_CLASSES)
  # 8 classes drawn uniformly (image) x by position (quadrant): each holds 1/8 of 28,000 patches up to sampling
  # noise (binomial sd ~ 55) and the quadrants' slight size differences at the photo's centre lines (< 2%).
  assert counts.min() > 0.11 * len(labels) and counts.max() < 0.14 * len(labels)
  # Patches are cut where their labels say: the mean brightness of a class is that of its image's quadrant.
  photos = image_patches._grey_photographs()
  height, width = photos[0].shape
  top_left_of_image0 = photos[0][:height // 2, :width // 2].mean()
  assert abs(images[labels == 0].mean() - top_left_of_image0) < 10


def test_photograph_patches_are_textured_labelled_by_photograph_and_deterministic():
  images, labels, indices = image_patches.photograph_patches(seed=0, size=8)
  again, again_labels, _ = image_patches.photograph_patches(seed=0, size=8)
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(labels, again_labels)
  assert {k: len(v) for k, v in indices.items()} == image_patches.PHOTOGRAPH_SPLIT_SIZES
  assert images.shape == (sum(image_patches.PHOTOGRAPH_SPLIT_SIZES.values()), 8, 8)
  assert set(np.unique(labels)) == {0, 1}
  assert (images.reshape(len(images), -1).std(axis=1) > 10).all()
  # They are the textured ones among generate()'s crops, in order, with the photograph (generate's label % 2).
  pool, pool_labels, _ = image_patches.generate(0, 8, {'pool': image_patches.PHOTOGRAPH_POOL_SIZE})
  textured = pool.reshape(len(pool), -1).std(axis=1) > 10
  np.testing.assert_array_equal(images, pool[textured][:len(images)])
  np.testing.assert_array_equal(labels, pool_labels[textured][:len(images)] % 2)


def test_photograph_patches_name_the_fix_when_too_few_are_textured():
  with pytest.raises(ValueError, match='lower min_std'):
    image_patches.photograph_patches(min_std=200.0)


def test_patch_size_is_checked():
  with pytest.raises(ValueError, match='patch size must be in'):
    image_patches.generate(size=0)


@pytest.mark.parametrize('name, classes', [('wine', 3), ('breast_cancer', 2), ('iris', 3), ('diabetes', 0),
                                           ('diabetes_binary', 2), ('friedman1', 0)])
def test_tabular_splits_are_disjoint_standardised_and_the_loss_starts_near_chance(name, classes):
  splits = tabular.load_tabular(name)
  sizes = {k: v.features.shape[0] for k, v in splits.items()}
  assert sum(sizes.values()) == {'wine': 178, 'breast_cancer': 569, 'iris': 150, 'diabetes': 442,
                                 'diabetes_binary': 442, 'friedman1': 1000}[name]
  train = np.asarray(splits['train'].features)
  np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(train.std(0), 1, atol=1e-3)
  task = tabular.TabularMLPTask(name, (16,), 'relu', batch_size=64)
  params = task.init(jax.random.key(0))
  loss = float(task.loss(params, jax.random.key(1), task.batch(jax.random.key(2), 'test')))
  assert math.isfinite(loss)
  # At initialisation: cross-entropy near log(classes), squared error near the standardised target's variance 1
  # (LeCun-normal weights give outputs of variance ~1, so up to ~2 plus batch noise).
  normalised = float(task.normalizer(loss))
  assert 0.3 < normalised < 4.0


def test_diabetes_binary_is_diabetes_thresholded_at_the_training_mean():
  regression, binary = tabular.load_tabular('diabetes'), tabular.load_tabular('diabetes_binary')
  for split in regression:
    np.testing.assert_array_equal(np.asarray(binary[split].features), np.asarray(regression[split].features))
    # The regression target is standardised with the training mean, so "above that mean" is "above 0".
    np.testing.assert_array_equal(np.asarray(binary[split].targets), np.asarray(regression[split].targets) > 0)
  labels = np.asarray(binary['train'].targets)
  assert labels.dtype == np.int32 and 0.3 < labels.mean() < 0.6  # both classes well represented


def test_tabular_unknown_dataset_is_named():
  with pytest.raises(ValueError, match="unknown tabular dataset 'housing'.*wine"):
    tabular.TabularMLPTask('housing')


def test_autoencoder_reconstructs_flattened_images_and_learns():
  import optax
  dataset = datasets.load_image_patches(size=8)
  task = autoencoder.AutoencoderTask(dataset, (16, 4, 16), 'tanh', batch_size=64)
  batch = task.batch(jax.random.key(0))
  assert batch.shape == (64, 64) and float(batch.min()) >= 0 and float(batch.max()) <= 1
  params = task.init(jax.random.key(1))
  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(params, state, key):
    loss, grads = jax.value_and_grad(task.loss)(params, key, task.batch(key))
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for i in range(300):
    params, state, loss = step(params, state, jax.random.key(i))
    losses.append(float(loss))
  # Predicting the mean patch leaves the pixel variance; a 4-unit bottleneck must beat it within 300 Adam steps.
  pixel_variance = float(jnp.var(task.batch(jax.random.key(99), 'test'), axis=0).mean())
  assert np.mean(losses[-20:]) < 0.7 * pixel_variance < losses[0]


def test_autoencoder_rejects_empty_bottleneck():
  with pytest.raises(ValueError, match='hidden_sizes must be a non-empty'):
    autoencoder.AutoencoderTask(datasets.load_image_patches(size=8), ())
