"""MLP autoencoders on image datasets: unsupervised reconstruction, a landscape unlike classification's.

The images of an :class:`tasks.datasets.ImageDataset` (scaled to [0, 1]) are flattened to ``x`` of ``d`` pixels and
reconstructed through a bottleneck::

    z = act(... act(W_1 x + b_1) ...),   x_hat = sigmoid(W_out z + b_out),   loss = mean over pixels (x_hat - x)^2

The sigmoid output keeps reconstructions in the images' range. A network that outputs the mean image has a loss of
roughly the pixel variance (~0.1 for Fashion-MNIST), so progress beyond that is learning structure. The labels of
the dataset are ignored.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from tasks import datasets as datasets_lib
from tasks.base import Task, check_split
from tasks.image_classification import MLP, get_activation


class AutoencoderTask(Task):
  """Mean squared reconstruction error of an MLP autoencoder on minibatches of an image dataset.

  Args:
    dataset: a dataset name of :func:`tasks.datasets.load_dataset` or a loaded dataset.
    hidden_sizes: widths of the encoder and decoder's hidden layers in order, e.g. ``(128, 32, 128)``.
    activation: hidden activation (a name of :func:`tasks.image_classification.get_activation` or a function).
    batch_size: images per minibatch.
  """

  def __init__(self, dataset: str | datasets_lib.ImageDataset, hidden_sizes: Sequence[int] = (128, 32, 128),
               activation: str | Callable = 'relu', batch_size: int = 128):
    self.dataset = datasets_lib.load_dataset(dataset) if isinstance(dataset, str) else dataset
    if batch_size < 1:
      raise ValueError(f'batch_size must be a positive integer, got {batch_size}.')
    self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
    if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
      raise ValueError(f'hidden_sizes must be a non-empty sequence of positive widths, got {hidden_sizes}.')
    self.batch_size = int(batch_size)
    height, width = self.dataset.image_shape
    self.num_pixels = height * width
    self.model = MLP(self.hidden_sizes, self.num_pixels, get_activation(activation))  # sigmoid applied in loss
    act = activation if isinstance(activation, str) else getattr(activation, '__name__', 'custom')
    self.name = f'{self.dataset.name}_autoencoder_{"x".join(map(str, self.hidden_sizes))}_{act}_bs{batch_size}'

  def init(self, key: jax.Array):
    """Flax's default initialisation (LeCun-normal kernels, zero biases)."""
    return self.model.init(key, jnp.zeros((1, self.num_pixels), jnp.float32))['params']

  def batch(self, key: jax.Array, split: str = 'train') -> jax.Array:
    """``batch_size`` flattened images in [0, 1], drawn with replacement from ``split``."""
    data = self.dataset.splits[check_split(split)]
    index = jax.random.randint(key, (self.batch_size,), 0, data.labels.shape[0])
    images = self.dataset.images_as_float(jnp.take(data.images, index, axis=0))
    return images.reshape(self.batch_size, self.num_pixels)

  def loss(self, params, key: jax.Array, batch: jax.Array) -> jax.Array:
    del key  # Deterministic given the batch.
    reconstruction = jax.nn.sigmoid(self.model.apply({'params': params}, batch))
    return jnp.mean((reconstruction - batch) ** 2)
