"""Truncation schedules: how many inner steps an episode lasts before its task instance is reset.

A schedule is a pure function of a PRNG key and the outer (meta-training) step::

    length = schedule.sample(key, meta_step)      # int32 scalar >= 1; jittable, vmappable over keys

The vectorized unroll (:mod:`meta_train.unroll`) calls it once per instance whenever that instance starts a
new episode, so every instance of an ensemble has its own episode length. The number of steps unrolled per
meta-gradient (the *truncation* or *unroll length*) is a static argument of the estimator, because a ``lax.scan`` has a
fixed length; an episode therefore spans ``length / unroll_length`` meta-steps on average.

Schedules:

* :class:`ConstantTruncation`: every episode has the same length.
* :class:`LogUniformTruncation`: ``round(exp(U(log a, log b)))``, a scale-free spread of horizons.
* :class:`WichrowskaTruncation`: the heavy-tailed lengths of Wichrowska et al. 2017 (docs/algorithms.md §9.3).
* :class:`LinearIncreasingTruncation`: lengths that grow linearly with the meta-step, with multiplicative jitter
  (Metz et al. 2019, docs/algorithms.md §9.4), a curriculum from short to long horizons.
"""

from __future__ import annotations

import abc
import math

import jax
import jax.numpy as jnp


class TruncationSchedule(abc.ABC):
  """Samples per-instance episode lengths. Subclasses implement :meth:`sample`."""

  @abc.abstractmethod
  def sample(self, key: jax.Array, meta_step: jax.Array | int = 0) -> jax.Array:
    """An int32 scalar >= 1: the length, in inner steps, of an episode that starts at outer step ``meta_step``."""


def _check_positive_int(value, name: str, cls: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'{cls}: {name} must be an integer >= 1, got {value!r}.')


class ConstantTruncation(TruncationSchedule):
  """Every episode lasts ``length`` inner steps.

  Args:
    length: the episode length in inner steps (>= 1).
  """

  def __init__(self, length: int = 100):
    _check_positive_int(length, 'length', 'ConstantTruncation')
    self.length = length

  def sample(self, key, meta_step=0):
    del key, meta_step
    return jnp.asarray(self.length, jnp.int32)

  def __repr__(self):
    return f'ConstantTruncation(length={self.length})'


class LogUniformTruncation(TruncationSchedule):
  """Episode lengths ``round(exp(u))`` with ``u ~ U(log min_length, log max_length)``, clipped to that range.

  Args:
    min_length: the shortest episode (>= 1).
    max_length: the longest episode (>= ``min_length``).
  """

  def __init__(self, min_length: int = 10, max_length: int = 1000):
    _check_positive_int(min_length, 'min_length', 'LogUniformTruncation')
    _check_positive_int(max_length, 'max_length', 'LogUniformTruncation')
    if max_length < min_length:
      raise ValueError(f'LogUniformTruncation: max_length ({max_length}) must be >= min_length ({min_length}).')
    self.min_length, self.max_length = min_length, max_length

  def sample(self, key, meta_step=0):
    del meta_step
    u = jax.random.uniform(key, (), minval=math.log(self.min_length), maxval=math.log(self.max_length))
    return jnp.clip(jnp.round(jnp.exp(u)), self.min_length, self.max_length).astype(jnp.int32)

  def __repr__(self):
    return f'LogUniformTruncation(min_length={self.min_length}, max_length={self.max_length})'


class WichrowskaTruncation(TruncationSchedule):
  """The heavy-tailed episodes of Wichrowska et al. 2017 (``metaopt.train_optimizer``; docs/algorithms.md §9.3).

  In the original, one meta-iteration (the span between fresh problem parameters) is
  ``U = round(Exp(scale=mean_extra_unrolls)) + 1`` partial unrolls, each of ``round(Exp(scale=unroll_scale)) +
  min_unroll_steps`` steps. Our unrolls have a fixed length (a ``lax.scan``), so the heavy tail goes into the episode
  length instead: the episode is the whole meta-iteration,

      length = round(Gamma(U, scale=unroll_scale)) + min_unroll_steps * U,

  since a sum of ``U`` independent ``Exp(scale)`` variables is ``Gamma(U, scale)``. (Summing ``U`` rounded
  exponentials instead differs by less than ``U/2`` steps.) The mean is ``(mean_extra_unrolls + 1) *
  (unroll_scale + min_unroll_steps)`` ≈ 10,250 steps with the defaults.

  Args:
    unroll_scale: the mean of the exponential part of one partial unroll (200 in the paper's code).
    min_unroll_steps: the fixed part of one partial unroll (50).
    mean_extra_unrolls: the mean of the exponential number of partial unrolls beyond the first (40).
  """

  def __init__(self, unroll_scale: float = 200.0, min_unroll_steps: int = 50, mean_extra_unrolls: float = 40.0):
    if not unroll_scale >= 0:
      raise ValueError(f'WichrowskaTruncation: unroll_scale must be >= 0, got {unroll_scale!r}.')
    if not mean_extra_unrolls >= 0:
      raise ValueError(f'WichrowskaTruncation: mean_extra_unrolls must be >= 0, got {mean_extra_unrolls!r}.')
    _check_positive_int(min_unroll_steps, 'min_unroll_steps', 'WichrowskaTruncation')
    self.unroll_scale = float(unroll_scale)
    self.min_unroll_steps = min_unroll_steps
    self.mean_extra_unrolls = float(mean_extra_unrolls)

  def sample(self, key, meta_step=0):
    del meta_step
    count_key, steps_key = jax.random.split(key)
    num_unrolls = jnp.round(jax.random.exponential(count_key) * self.mean_extra_unrolls) + 1.0
    exponential_steps = jax.random.gamma(steps_key, num_unrolls) * self.unroll_scale
    return (jnp.round(exponential_steps) + self.min_unroll_steps * num_unrolls).astype(jnp.int32)

  def __repr__(self):
    return (f'WichrowskaTruncation(unroll_scale={self.unroll_scale}, min_unroll_steps={self.min_unroll_steps}, '
            f'mean_extra_unrolls={self.mean_extra_unrolls})')


class LinearIncreasingTruncation(TruncationSchedule):
  """Episode lengths that grow linearly with the meta-step, with multiplicative jitter (Metz et al. 2019;
  docs/algorithms.md §9.4).

      base(s) = min_length + (max_length - min_length) * min(s / num_meta_steps, 1)
      length  = clip(round(base(s) * U(1 - jitter, 1 + jitter)), 1, max_length)

  In the released ``FixedLengthIncreasingTruncationStrategy`` the *unroll* grows from 10 to 10,000 steps over 20,000
  meta-steps (× U(0.8, 1.2)) inside inner runs of 10,000 steps. Our unroll length is static, so the curriculum acts on
  the episode length, which bounds the horizon the meta-gradient can see in the same way.

  Args:
    min_length: the base length at meta-step 0 (10).
    max_length: the base length from ``num_meta_steps`` on, and the cap after jitter (10,000).
    num_meta_steps: the meta-step at which the base length reaches ``max_length`` (20,000).
    jitter: the half-width of the multiplicative uniform jitter, in [0, 1) (0.2 gives U(0.8, 1.2)).
  """

  def __init__(self, min_length: int = 10, max_length: int = 10_000, num_meta_steps: int = 20_000,
               jitter: float = 0.2):
    _check_positive_int(min_length, 'min_length', 'LinearIncreasingTruncation')
    _check_positive_int(max_length, 'max_length', 'LinearIncreasingTruncation')
    _check_positive_int(num_meta_steps, 'num_meta_steps', 'LinearIncreasingTruncation')
    if max_length < min_length:
      raise ValueError(f'LinearIncreasingTruncation: max_length ({max_length}) must be >= min_length '
                       f'({min_length}).')
    if not 0 <= jitter < 1:
      raise ValueError(f'LinearIncreasingTruncation: jitter must be in [0, 1), got {jitter!r}.')
    self.min_length, self.max_length = min_length, max_length
    self.num_meta_steps, self.jitter = num_meta_steps, float(jitter)

  def base_length(self, meta_step) -> jax.Array:
    """The un-jittered length at ``meta_step`` (float32)."""
    progress = jnp.minimum(jnp.asarray(meta_step, jnp.float32) / self.num_meta_steps, 1.0)
    return self.min_length + (self.max_length - self.min_length) * progress

  def sample(self, key, meta_step=0):
    factor = jax.random.uniform(key, (), minval=1.0 - self.jitter, maxval=1.0 + self.jitter)
    length = jnp.round(self.base_length(meta_step) * factor)
    return jnp.clip(length, 1, self.max_length).astype(jnp.int32)

  def __repr__(self):
    return (f'LinearIncreasingTruncation(min_length={self.min_length}, max_length={self.max_length}, '
            f'num_meta_steps={self.num_meta_steps}, jitter={self.jitter})')
