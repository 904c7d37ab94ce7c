"""A procedurally generated image classification dataset: real-data-like training tasks that share no data with
Fashion-MNIST or digits, so that a learned optimizer can meta-train on image classifiers and still be evaluated on
those two datasets as held-out problems.

Each of the ``num_classes`` classes has a *prototype*: the sum of :data:`BLOBS_PER_CLASS` Gaussian blobs (random
centre, width and amplitude) on a ``size x size`` grid, scaled to a peak of 1. An example of class ``c`` is::

    x = clip(s * roll(prototype_c, (dy, dx)) + clutter + noise, 0, 1),   stored as uint8 (x * 255, rounded)

with an intensity ``s ~ U(0.4, 1.2)``, a cyclic shift ``dy, dx ~ U{-3..3}``, ``clutter`` :data:`CLUTTER_BLOBS` blobs
of random classes' kinds at random places with amplitudes ``U(0, 0.8)``, and pixel noise ``N(0, 0.15^2)``. So the
images are non-negative, spatially correlated and dark over large areas, like Fashion-MNIST's; the classes overlap
through the shifts and the clutter, so a network neither separates them at once nor fails to learn. Measured over 500
steps: a 256-64-10 ReLU MLP (batch 128) reaches cross-entropy 0.96 with Adam 1e-3 and 0.43 with Adam 1e-2, a
(8, 16, 16) ReLU ConvNet (batch 64) 1.32 and 0.75; chance is log 10 = 2.30, a nearest-class-mean rule gets 45% of
the test split right.

Generation uses numpy's ``RandomState`` (whose stream numpy freezes, NEP 19), so a seed gives the same dataset on
every machine and release. Splits: 10,000 train, 1,000 inner-validation, 1,000 outer-validation, 2,000 test,
drawn independently from the same distribution.

This module is plain numpy and imports nothing of :mod:`tasks`; :func:`tasks.datasets.load_synthetic_images` puts
the generated splits on the device (device placement and caching belong to :mod:`tasks.datasets`).
"""

from __future__ import annotations

import numpy as np

#: Examples per split of :func:`generate` (and so of :func:`tasks.datasets.load_synthetic_images`).
SYNTHETIC_SPLIT_SIZES = {'train': 10000, 'inner_valid': 1000, 'outer_valid': 1000, 'test': 2000}

#: Gaussian blobs summed into each class prototype.
BLOBS_PER_CLASS = 3

#: Largest cyclic shift of an example against its prototype, in pixels (each axis).
MAX_SHIFT = 3

#: Distractor blobs added to every example.
CLUTTER_BLOBS = 2

#: Standard deviation of the per-pixel noise (images in [0, 1]).
PIXEL_NOISE = 0.15


def _blob(grid_y: np.ndarray, grid_x: np.ndarray, centre: np.ndarray, width: np.ndarray) -> np.ndarray:
  """Gaussian bumps ``exp(-|p - centre|^2 / (2 width^2))``; centre ``[..., 2]``, width ``[...]`` -> ``[..., H, W]``."""
  dy = grid_y - centre[..., 0, None, None]
  dx = grid_x - centre[..., 1, None, None]
  return np.exp(-(dy**2 + dx**2) / (2 * width[..., None, None]**2))


def generate(seed: int = 0, size: int = 16, num_classes: int = 10,
             split_sizes: dict[str, int] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Images (uint8 ``[n, size, size]``) and labels (int ``[n]``) of every split; see the module docstring."""
  if size < 4 or num_classes < 2:
    raise ValueError(f'size must be >= 4 and num_classes >= 2, got size={size}, num_classes={num_classes}.')
  split_sizes = dict(SYNTHETIC_SPLIT_SIZES if split_sizes is None else split_sizes)
  rng = np.random.RandomState(seed)
  grid_y, grid_x = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing='ij')
  centres = rng.uniform(0.15 * size, 0.85 * size, (num_classes, BLOBS_PER_CLASS, 2))
  widths = rng.uniform(0.06 * size, 0.2 * size, (num_classes, BLOBS_PER_CLASS))
  amplitudes = rng.uniform(0.3, 1.0, (num_classes, BLOBS_PER_CLASS))
  prototypes = np.sum(amplitudes[..., None, None] * _blob(grid_y, grid_x, centres, widths), axis=1)
  prototypes /= prototypes.max(axis=(1, 2), keepdims=True)

  images, labels = {}, {}
  for split, n in split_sizes.items():
    y = rng.randint(0, num_classes, n)
    shifts = rng.randint(-MAX_SHIFT, MAX_SHIFT + 1, (n, 2))
    x = np.stack([np.roll(prototypes[c], tuple(s), axis=(0, 1)) for c, s in zip(y, shifts)])
    x *= rng.uniform(0.4, 1.2, (n, 1, 1))
    for _ in range(CLUTTER_BLOBS):
      clutter_kind = rng.randint(0, num_classes, n), rng.randint(0, BLOBS_PER_CLASS, n)
      clutter_centre = rng.uniform(0, size, (n, 2))
      x += rng.uniform(0, 0.8, (n, 1, 1)) * _blob(grid_y, grid_x, clutter_centre, widths[clutter_kind])
    x += rng.normal(0, PIXEL_NOISE, x.shape)
    images[split] = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    labels[split] = y
  return images, labels
