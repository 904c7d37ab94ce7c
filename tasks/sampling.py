"""Distributions over task hyperparameters, drawn inside ``jit`` as a pure function of a key.

Task families take each continuous hyperparameter (noise level, condition number, rescaling factor, ...) either as
a plain number, which every sample repeats, or as one of the distributions below, which every sample draws afresh::

    family = BowlFamily(condition_number=LogUniform(0.01, 100.0))
    cfg = family.sample(key)        # cfg['condition_number'] is a float32 scalar drawn from the distribution

Either way the value lands in the family's cfg as a float32 array, so fixed and sampled settings share one tree
structure and compile together. Distributions are frozen dataclasses: hashable, comparable, printable.

Static (shape-changing) hyperparameters such as a quadratic's dimension cannot live in a cfg; families draw those on
the host with :func:`log_uniform_int` (a pure function of a key too) in their ``sample_structure`` class methods.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Union

import jax
import jax.numpy as jnp


class Distribution:
  """A distribution over float32 scalars. Subclasses implement ``__call__(key) -> scalar``."""

  def __call__(self, key: jax.Array) -> jax.Array:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Uniform(Distribution):
  """``U(low, high)``."""
  low: float
  high: float

  def __post_init__(self):
    if not self.low <= self.high:
      raise ValueError(f'Uniform needs low <= high, got low={self.low}, high={self.high}.')

  def __call__(self, key):
    return jax.random.uniform(key, (), jnp.float32, self.low, self.high)


@dataclasses.dataclass(frozen=True)
class LogUniform(Distribution):
  """``exp(U(log low, log high))``: every decade between ``low`` and ``high`` is equally likely."""
  low: float
  high: float

  def __post_init__(self):
    if not 0 < self.low <= self.high:
      raise ValueError(f'LogUniform needs 0 < low <= high, got low={self.low}, high={self.high}.')

  def __call__(self, key):
    return jnp.exp(jax.random.uniform(key, (), jnp.float32, math.log(self.low), math.log(self.high)))


@dataclasses.dataclass(frozen=True)
class Choice(Distribution):
  """One of ``values``, uniformly (repeat a value to weight it, as TaskSet does for the bowl angle)."""
  values: tuple[float, ...]

  def __post_init__(self):
    if not self.values:
      raise ValueError('Choice needs at least one value.')
    object.__setattr__(self, 'values', tuple(float(v) for v in self.values))

  def __call__(self, key):
    return jnp.asarray(self.values, jnp.float32)[jax.random.randint(key, (), 0, len(self.values))]


@dataclasses.dataclass(frozen=True)
class ZeroOr(Distribution):
  """``distribution`` with probability ``probability``, else exactly 0.

  TaskSet's "noise log-uniform in 0.01..10 with probability 0.5" is ``ZeroOr(LogUniform(0.01, 10.0), 0.5)``.
  """
  distribution: Distribution
  probability: float

  def __post_init__(self):
    if not 0.0 <= self.probability <= 1.0:
      raise ValueError(f'ZeroOr needs 0 <= probability <= 1, got {self.probability}.')

  def __call__(self, key):
    use_key, value_key = jax.random.split(key)
    on = jax.random.bernoulli(use_key, self.probability)
    return jnp.where(on, self.distribution(value_key), 0.0).astype(jnp.float32)


Hyperparameter = Union[float, Distribution]


def draw(value: Hyperparameter, key: jax.Array) -> jax.Array:
  """Returns a float32 scalar: ``value`` itself if it is a number, else a draw from the distribution."""
  if isinstance(value, Distribution):
    return value(key)
  if isinstance(value, (int, float)):
    return jnp.asarray(value, jnp.float32)
  raise TypeError(f'a hyperparameter must be a number or a tasks.sampling.Distribution, got {value!r}.')


def log_uniform_int(key: jax.Array, low: int, high: int) -> int:
  """A host integer in ``[low, high]`` drawn log-uniformly (``floor(exp(U(log low, log(high + 1))))``).

  For static structure (dimensions, widths) that decides shapes, so it returns a Python ``int`` and must be called
  outside ``jit``. It is still a pure function of ``key``.
  """
  if not 1 <= low <= high:
    raise ValueError(f'log_uniform_int needs 1 <= low <= high, got low={low}, high={high}.')
  u = float(jax.random.uniform(key, (), jnp.float32, math.log(low), math.log(high + 1)))
  return int(min(max(math.floor(math.exp(u)), low), high))
