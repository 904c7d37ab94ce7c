"""Grey patches of two natural photographs: real-image classification data that ships with scikit-learn.

scikit-learn bundles two 427x640 colour photographs (``sklearn.datasets.load_sample_images``: a temple in China and
a flower). They are the only natural images available without files or a download, and they share nothing with
Fashion-MNIST, digits or the generated images of :mod:`tasks.synthetic_images`, so the project uses them for its
*validation* suite (the tasks that choose checkpoints and recipes; see :mod:`evaluation.validation`).

A patch is a ``size x size`` grey crop (ITU-R 601 luma, ``0.299 R + 0.587 G + 0.114 B``) at a uniformly random
position. Its label says where it was cut from: ``2 * quadrant + image`` for the image (0 or 1) and the quadrant of
the photograph (top-left, top-right, bottom-left, bottom-right) that holds the patch's centre, so 8 classes. The
classes are learnable from texture and content (sky, roof, petals, leaves) but overlap near the quadrant borders,
so no network separates them completely. Stored as ``uint8``; ``pixel_scale`` maps them to [0, 1].

The four splits are drawn independently from the same distribution of positions (numpy ``RandomState``, whose
stream numpy freezes, so a seed gives the same patches forever). Crops of different splits may overlap in the
photographs: the test loss measures generalisation to new crops of the same two scenes, not to new scenes.

This module is plain numpy (scikit-learn supplies the photographs) and imports nothing of :mod:`tasks`;
:func:`tasks.datasets.load_image_patches` puts the patches on the device.
"""

from __future__ import annotations

import numpy as np

#: Examples per split of :func:`generate` (and so of :func:`tasks.datasets.load_image_patches`).
PATCH_SPLIT_SIZES = {'train': 20000, 'inner_valid': 2000, 'outer_valid': 2000, 'test': 4000}

#: Classes: 2 photographs x 4 quadrants.
NUM_CLASSES = 8

#: Examples per split of :func:`photograph_patches` (digits' sizes: a training set a wide net fits in ~1,000 steps).
PHOTOGRAPH_SPLIT_SIZES = {'train': 1197, 'inner_valid': 150, 'outer_valid': 150, 'test': 300}

#: Candidate crops :func:`photograph_patches` draws before keeping the textured ones (about 37% of 8x8 crops have a
#: pixel standard deviation above 10 of 255, so ~22,000 remain: far more than the splits need).
PHOTOGRAPH_POOL_SIZE = 60000

_LUMA = np.array([0.299, 0.587, 0.114])


def _consecutive_indices(split_sizes) -> dict:
  """Each split's indices into an array holding the splits back to back, in the order of ``split_sizes``."""
  ends = np.cumsum(list(split_sizes.values()))
  return {split: np.arange(end - count, end) for (split, count), end in zip(split_sizes.items(), ends)}


def _grey_photographs() -> list[np.ndarray]:
  from sklearn.datasets import load_sample_images  # Lazy: only this loader needs scikit-learn (and Pillow).
  return [np.rint(image.astype(np.float64) @ _LUMA).astype(np.uint8) for image in load_sample_images().images]


def generate(seed: int = 0, size: int = 16, split_sizes=None) -> tuple[np.ndarray, np.ndarray, dict]:
  """Cuts the patches: returns ``images [n, size, size] uint8``, ``labels [n] int32`` and each split's indices.

  Args:
    seed: seeds the crop positions and the choice of photograph.
    size: the side of a patch in pixels (8 gives 64 inputs, 28 gives MNIST's 784).
    split_sizes: examples per split (default :data:`PATCH_SPLIT_SIZES`).
  """
  split_sizes = dict(PATCH_SPLIT_SIZES if split_sizes is None else split_sizes)
  photos = _grey_photographs()
  height, width = photos[0].shape
  if not 1 <= size <= min(height, width) // 2:
    raise ValueError(f'patch size must be in [1, {min(height, width) // 2}], got {size}.')
  total = sum(split_sizes.values())
  rng = np.random.RandomState(seed)
  which = rng.randint(0, len(photos), total)
  top = rng.randint(0, height - size + 1, total)
  left = rng.randint(0, width - size + 1, total)
  offsets = np.arange(size)
  rows = top[:, None, None] + offsets[None, :, None]
  cols = left[:, None, None] + offsets[None, None, :]
  stacked = np.stack(photos)
  images = stacked[which[:, None, None], rows, cols]
  centre_y, centre_x = top + size / 2, left + size / 2
  quadrant = 2 * (centre_y >= height / 2) + (centre_x >= width / 2)
  labels = (2 * quadrant + which).astype(np.int32)
  return images, labels, _consecutive_indices(split_sizes)


def photograph_patches(seed: int = 0, size: int = 8, min_std: float = 10.0,
                       split_sizes=None) -> tuple[np.ndarray, np.ndarray, dict]:
  """Textured patches labelled by the photograph they come from (2 classes): a small set a wide net can fit.

  Half of all crops are nearly flat (sky, shadow: pixel standard deviation below ~2.5 of 255) and look the same in
  both photographs, so no network fits :func:`generate`'s labels on them. Keeping only crops whose pixel standard
  deviation exceeds ``min_std`` and labelling them by photograph alone (0: temple, 1: flower) gives a set whose
  training split a 64-512-512 ReLU net fits (measured, 3 seeds: Adam at 1e-3 reaches a mean minibatch loss of ~0.03
  over steps 1,000-1,500 and ~0.006 by step 5,000; the HRNN of candidate 9 ~5e-4 over steps 500-1,000), the regime
  in which a learned optimizer must keep its loss down once the gradients have become small.

  The candidates are the first :data:`PHOTOGRAPH_POOL_SIZE` crops of :func:`generate` with the same seed and size;
  the kept ones are assigned to the splits in order.

  Returns:
    ``images [n, size, size] uint8``, ``labels [n] int32`` in ``{0, 1}`` and each split's indices.
  """
  split_sizes = dict(PHOTOGRAPH_SPLIT_SIZES if split_sizes is None else split_sizes)
  images, labels, _ = generate(seed, size, {'pool': PHOTOGRAPH_POOL_SIZE})
  keep = np.flatnonzero(images.reshape(len(images), -1).std(axis=1) > min_std)
  needed = sum(split_sizes.values())
  if len(keep) < needed:
    raise ValueError(f'only {len(keep)} of {PHOTOGRAPH_POOL_SIZE} crops have a pixel standard deviation above '
                     f'min_std={min_std}, and the splits need {needed}; lower min_std or ask for smaller splits.')
  keep = keep[:needed]
  return images[keep], (labels[keep] % 2).astype(np.int32), _consecutive_indices(split_sizes)
