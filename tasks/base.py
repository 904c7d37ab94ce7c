"""The task contract: loss landscapes as pure JAX functions.

A :class:`Task` is one optimisation problem::

    params = task.init(key)                       # a pytree of float arrays
    batch = task.batch(key, split)                # split in SPLITS; pure function of (key, split)
    loss = task.loss(params, key, batch)          # a float32 scalar; `key` drives gradient noise, dropout, ...

Everything is a pure function of its arguments, so a whole truncated unroll (batch -> grad -> optimizer update)
jit-compiles into one ``lax.scan`` and ``vmap``s over task instances. Tasks without data return ``None`` from
``batch``. ``normalizer`` maps a raw loss to a scale comparable across tasks (identity by default); the meta-trainer
uses it when mixing tasks of different scales.

A :class:`TaskFamily` is a distribution over tasks of one tree structure::

    cfg = family.sample(key)                      # a pytree of arrays (jittable, same structure every call)
    task = family.task(cfg)                       # works on traced cfg, so vmap over a batch of cfgs works

Families whose definition varies shapes (a quadratic whose dimension is sampled, an MLP whose width is sampled)
are split into one fixed-structure family per shape; ``structure_key`` names the structure so a meta-trainer can
group instances that compile together.
"""

from __future__ import annotations

import abc
from typing import Any, Hashable

import jax
import jax.numpy as jnp

Params = Any
Batch = Any
Cfg = Any

#: The data splits every task understands. ``inner_valid`` feeds validation features to a learned optimizer,
#: ``outer_valid`` is the meta-objective's data, ``test`` is for reporting only (Metz et al. 2020's four splits).
SPLITS = ('train', 'inner_valid', 'outer_valid', 'test')


def check_split(split: str) -> str:
  """Returns ``split`` or raises a ``ValueError`` naming the valid splits."""
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; use one of {SPLITS}.')
  return split


class Task(abc.ABC):
  """One optimisation problem. Subclasses implement :meth:`init` and :meth:`loss`; data tasks also :meth:`batch`."""

  #: A short human-readable name, e.g. ``'rosenbrock'`` or ``'fashion_mnist_mlp_128'``.
  name: str = 'task'

  @abc.abstractmethod
  def init(self, key: jax.Array) -> Params:
    """Samples initial parameters."""

  @abc.abstractmethod
  def loss(self, params: Params, key: jax.Array, batch: Batch) -> jax.Array:
    """The scalar training loss of ``params`` on ``batch``; ``key`` drives any stochasticity (gradient noise)."""

  def batch(self, key: jax.Array, split: str = 'train') -> Batch:
    """Draws a batch of ``split`` as a pure function of ``key``. Tasks without data return ``None``."""
    check_split(split)
    return None

  def normalizer(self, loss: jax.Array) -> jax.Array:
    """Maps a raw loss onto a scale comparable across tasks. Identity unless a task says otherwise."""
    return loss


class TaskFamily(abc.ABC):
  """A distribution over tasks that all share one tree structure (so they vmap together)."""

  name: str = 'family'

  @abc.abstractmethod
  def sample(self, key: jax.Array) -> Cfg:
    """Samples a task configuration: a pytree of arrays. Jittable; the structure never depends on ``key``."""

  @abc.abstractmethod
  def task(self, cfg: Cfg) -> Task:
    """Builds the task for ``cfg``. Must work when ``cfg``'s leaves are tracers (inside ``jit``/``vmap``)."""

  @property
  def structure_key(self) -> Hashable:
    """Instances of families with equal structure keys vmap and compile together. Default: the family itself."""
    return self


class SingleTaskFamily(TaskFamily):
  """Wraps one fixed task as a family whose every sample is that task (cfg is an empty array)."""

  def __init__(self, task: Task):
    self._task = task
    self.name = task.name

  def sample(self, key: jax.Array) -> Cfg:
    del key
    return jnp.zeros((0,), jnp.float32)

  def task(self, cfg: Cfg) -> Task:
    del cfg
    return self._task
