"""TaskSet-style families of image classifiers (Metz et al. 2020; docs/algorithms.md §12.4): sampled width, depth,
activation, batch.

Width, depth and batch size change array shapes, so they are *structure*: drawn on the host, once, by
:meth:`MLPFamily.sample_structure` / :meth:`ConvNetFamily.sample_structure`, which return a
:class:`FixedImageClassifierFamily`. That family is a proper :class:`~tasks.base.TaskFamily`: its ``sample(key)`` is
jittable and its tasks vmap over a batch of configurations. The activation does not change shapes, so it lives in
the configuration as a traced index and instances with different activations share one compilation::

    family = MLPFamily().sample_structure(jax.random.key(0))      # e.g. digits, 2 x 64 hidden, batch 32
    cfgs = jax.vmap(family.sample)(jax.random.split(key, 8))      # 8 activations drawn from family.activations
    losses = jax.vmap(lambda cfg, k: ...family.task(cfg)...)(cfgs, keys)

Inside ``vmap`` the activation is chosen by ``lax.switch`` on a batched index, which XLA lowers to evaluating every
candidate activation and selecting: a few elementwise ops per hidden unit, small next to the matmuls.

Default ranges (ours; TaskSet samples these quantities but its exact ranges were not recorded, docs/algorithms.md
§12.4): one hidden width for all layers from {16, 32, 64, 128, 256} (one width rather than one per layer keeps the
number of distinct structures, hence compilations, small), depth 1..3, batch size from {32, 64, 128}, activations relu,
tanh, sigmoid, elu, gelu, swish; ConvNets with 1..3 stride-2 layers whose channels double from a base in {8, 16, 32}.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from tasks import datasets as datasets_lib
from tasks import image_classification as ic
from tasks.base import TaskFamily

DEFAULT_ACTIVATIONS = ('relu', 'tanh', 'sigmoid', 'elu', 'gelu', 'swish')
DEFAULT_DATASETS = ('fashion_mnist', 'digits')


class ImageTaskConfig(NamedTuple):
  """A sampled instance of a fixed-structure image family: the index into the family's ``activations``."""
  activation: jax.Array  # int32 scalar


def switch_activation(index: jax.Array, activations: Sequence[str]) -> Callable[[jax.Array], jax.Array]:
  """The activation ``activations[index]`` as a callable; ``index`` may be a tracer."""
  functions = [ic.get_activation(name) for name in activations]
  if len(functions) == 1:
    return functions[0]
  return lambda x: jax.lax.switch(index, functions, x)


@dataclasses.dataclass(frozen=True)
class FixedImageClassifierFamily(TaskFamily):
  """Image classifiers of one shape (architecture, sizes, dataset, batch size) with a sampled activation.

  Hashable and comparable by value, so it is its own ``structure_key``.

  Attributes:
    dataset: ``'fashion_mnist'``, ``'mnist'`` or ``'digits'``.
    architecture: ``'mlp'`` (``sizes`` = hidden widths) or ``'conv'`` (``sizes`` = channels per layer).
    sizes: the static layer sizes.
    batch_size: examples per minibatch.
    activations: the candidates that ``sample`` draws from uniformly.
    data_dir: where to read the IDX files (``None``: the loaders' default search).
  """
  dataset: str
  architecture: str
  sizes: tuple[int, ...]
  batch_size: int
  activations: tuple[str, ...] = DEFAULT_ACTIVATIONS
  data_dir: str | None = None

  def __post_init__(self):
    if self.architecture not in ('mlp', 'conv'):
      raise ValueError(f"architecture must be 'mlp' or 'conv', got {self.architecture!r}.")
    if not self.activations:
      raise ValueError('activations must name at least one activation.')
    for name in self.activations:
      ic.get_activation(name)  # Fails early, naming the valid activations.

  @property
  def name(self) -> str:
    sizes = 'x'.join(map(str, self.sizes)) or 'linear'
    return f'{self.dataset}_{self.architecture}_{sizes}_bs{self.batch_size}'

  def sample(self, key: jax.Array) -> ImageTaskConfig:
    return ImageTaskConfig(jax.random.randint(key, (), 0, len(self.activations), dtype=jnp.int32))

  def task(self, cfg: ImageTaskConfig) -> ic.ImageClassificationTask:
    activation = switch_activation(cfg.activation, self.activations)
    data = datasets_lib.load_dataset(self.dataset, self.data_dir)
    make = ic.mlp_task if self.architecture == 'mlp' else ic.conv_task
    task = make(data, self.sizes, activation, self.batch_size)
    task.name = self.name
    return task


def _choice(key: jax.Array, options: Sequence):
  """One element of ``options``, uniformly; host-side (returns a Python value)."""
  return options[int(jax.random.randint(key, (), 0, len(options)))]


def _check_options(**options):
  for name, values in options.items():
    if len(values) == 0:
      raise ValueError(f'{name} must list at least one option.')


@dataclasses.dataclass(frozen=True)
class MLPFamily:
  """A distribution over MLP classifier structures; draw one with :meth:`sample_structure`."""
  datasets: tuple[str, ...] = DEFAULT_DATASETS
  widths: tuple[int, ...] = (16, 32, 64, 128, 256)
  depths: tuple[int, ...] = (1, 2, 3)
  batch_sizes: tuple[int, ...] = (32, 64, 128)
  activations: tuple[str, ...] = DEFAULT_ACTIVATIONS
  data_dirs: tuple[tuple[str, str], ...] = ()  # (dataset, directory) pairs for non-default IDX locations.

  def __post_init__(self):
    _check_options(datasets=self.datasets, widths=self.widths, depths=self.depths, batch_sizes=self.batch_sizes,
                   activations=self.activations)

  def sample_structure(self, key: jax.Array) -> FixedImageClassifierFamily:
    """Draws dataset, depth, width and batch size (host-side, not jittable) -> a fixed-structure family."""
    k_data, k_depth, k_width, k_batch = jax.random.split(key, 4)
    dataset = _choice(k_data, self.datasets)
    sizes = (int(_choice(k_width, self.widths)),) * int(_choice(k_depth, self.depths))
    return FixedImageClassifierFamily(dataset, 'mlp', sizes, int(_choice(k_batch, self.batch_sizes)),
                                      tuple(self.activations), dict(self.data_dirs).get(dataset))


@dataclasses.dataclass(frozen=True)
class ConvNetFamily:
  """A distribution over small ConvNet structures: channels ``base * 2**i`` for ``i < depth``."""
  datasets: tuple[str, ...] = DEFAULT_DATASETS
  base_channels: tuple[int, ...] = (8, 16, 32)
  depths: tuple[int, ...] = (1, 2, 3)
  batch_sizes: tuple[int, ...] = (32, 64, 128)
  activations: tuple[str, ...] = DEFAULT_ACTIVATIONS
  data_dirs: tuple[tuple[str, str], ...] = ()

  def __post_init__(self):
    _check_options(datasets=self.datasets, base_channels=self.base_channels, depths=self.depths,
                   batch_sizes=self.batch_sizes, activations=self.activations)

  def sample_structure(self, key: jax.Array) -> FixedImageClassifierFamily:
    """Draws dataset, depth, base channels and batch size (host-side) -> a fixed-structure family."""
    k_data, k_depth, k_width, k_batch = jax.random.split(key, 4)
    dataset = _choice(k_data, self.datasets)
    base = int(_choice(k_width, self.base_channels))
    sizes = tuple(base * 2**i for i in range(int(_choice(k_depth, self.depths))))
    return FixedImageClassifierFamily(dataset, 'conv', sizes, int(_choice(k_batch, self.batch_sizes)),
                                      tuple(self.activations), dict(self.data_dirs).get(dataset))
