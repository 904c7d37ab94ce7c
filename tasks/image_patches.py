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

_LUMA = np.array([0.299, 0.587, 0.114])


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
  indices, start = {}, 0
  for split, count in split_sizes.items():
    indices[split] = np.arange(start, start + count)
    start += count
  return images, labels, indices
