"""TaskSet-style parametric families (Metz et al. 2020; docs/algorithms.md §12, families §12.2): the Wichrowska
problems with sampled settings.

TaskSet's ``losg_tasks_family`` re-samples the Wichrowska problems over wide ranges. What each family here samples
(per ``sample(key)``, inside jit, unless marked *host*: those fix shapes and are drawn by ``sample_structure``):

* :class:`NoisyQuadraticFamily`: dimension log-uniform integer in 10..1000 (*host*); fresh ``W, y ~ N(0, 1)``;
  gradient-noise stdev 0 with probability ½, else log-uniform in 0.01..10 (:data:`TASKSET_NOISE`).
* :class:`NoisyBowlFamily`: condition number log-uniform in 0.01..100; angle uniform over {0, 0, π/4, π/3};
  gradient noise as above.
* :class:`TestFunctionsFamily` (our extension; TaskSet only picks a function and a noise level): which of the nine
  2-D functions (uniform); an offset δ with ``δ_i ~ U(−0.1, 0.1)·(width of the init box along i)``; an output scale
  log-uniform in 0.1..10; gradient noise as above. The task is ``s·f(x − δ)`` with the init box shifted by δ, so the
  optimum moves relative to the init distribution's centre while staying ≥ 0.
* :class:`SparseFamily`: wraps any family; zero probability U(0.9, 0.99), plus gradient noise as above on the
  surviving elements (TaskSet's sparse problems sample both).
* :class:`RescaledFamily`: wraps any family; scale log-uniform in 1e-3..1e3.
* :class:`NormFamily` via ``NormFamily.sample_structure``: dimension log-uniform in 3..1000 (*host*), power U(0.1, 5).
* :func:`sample_family`: *host*: draws a whole structure the way ``losg_tasks_family`` does, i.e. a base problem
  (quadratic, bowl, test function, norm) and a modifier (none, sparse, rescale, log objective).

:class:`~tasks.quadratic.QuadraticFamily` (plain quadratics of one dimension) is re-exported here, because the
meta-training config names families of this module.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from tasks import base
from tasks import sampling
from tasks import test_functions
from tasks import wrappers
from tasks.norm import NormFamily
from tasks.quadratic import BowlFamily, QuadraticFamily

#: TaskSet's gradient noise: 0 with probability ½, else log-uniform in 0.01..10.
TASKSET_NOISE = sampling.ZeroOr(sampling.LogUniform(0.01, 10.0), 0.5)
#: TaskSet's sparse-gradient zero probability.
TASKSET_ZERO_PROBABILITY = sampling.Uniform(0.9, 0.99)
#: TaskSet's parameter rescaling.
TASKSET_SCALE = sampling.LogUniform(1e-3, 1e3)


class NoisyQuadraticFamily(wrappers.GradientNoiseFamily):
  """Quadratics of one dimension with TaskSet's sampled gradient noise. ``sample_structure`` draws the dimension."""

  def __init__(self, dim: int = 10, noise: sampling.Hyperparameter = TASKSET_NOISE):
    super().__init__(QuadraticFamily(dim), noise)
    self.dim = self.family.dim
    self.name = f'noisy_quadratic_{self.dim}'

  @classmethod
  def sample_structure(cls, key: jax.Array, min_dim: int = 10, max_dim: int = 1000,
                       noise: sampling.Hyperparameter = TASKSET_NOISE) -> 'NoisyQuadraticFamily':
    """The dimension, log-uniform in ``[min_dim, max_dim]`` (host), and the family of that shape."""
    return cls(sampling.log_uniform_int(key, min_dim, max_dim), noise)


class NoisyBowlFamily(wrappers.GradientNoiseFamily):
  """TaskSet's bowls: κ ~ LogUniform(0.01, 100), α ∈ {0, 0, π/4, π/3}, TaskSet's gradient noise."""

  def __init__(self, condition_number: sampling.Hyperparameter = sampling.LogUniform(0.01, 100.0),
               angle: sampling.Hyperparameter = sampling.Choice((0.0, 0.0, math.pi / 4, math.pi / 3)),
               noise: sampling.Hyperparameter = TASKSET_NOISE):
    super().__init__(BowlFamily(condition_number, angle), noise)
    self.name = 'noisy_bowl'


class ShiftedTestFunction(base.Task):
  """``s·f_i(x − δ)`` where the function index ``i`` may be traced (it selects with ``lax.switch``)."""

  def __init__(self, functions: Sequence[str], index, offset, scale, name: str = 'test_function'):
    self.functions = tuple(functions)
    self.index, self.offset, self.scale, self.name = index, offset, scale, name

  def init(self, key):
    branches = [lambda k, n=n: test_functions.sample_init(n, k) for n in self.functions]
    return jax.lax.switch(self.index, branches, key) + self.offset

  def loss(self, params, key, batch):
    del key, batch
    branches = [test_functions.TEST_FUNCTIONS[n][0] for n in self.functions]
    return self.scale * jax.lax.switch(self.index, branches, params - self.offset)


class TestFunctionsFamily(base.TaskFamily):
  """The 2-D test functions with sampled function, offset, scale and gradient noise (see the module docstring).

  All of them share one structure, so an ensemble mixing the nine functions vmaps as one computation (under
  ``vmap`` the switch evaluates every function and selects, which costs little for 2-D functions).
  """

  __test__ = False

  def __init__(self, functions: Sequence[str] = tuple(test_functions.TEST_FUNCTIONS),
               max_offset_fraction: float = 0.1, scale: sampling.Hyperparameter = sampling.LogUniform(0.1, 10.0),
               noise: sampling.Hyperparameter = TASKSET_NOISE):
    self.functions = tuple(test_functions.check_name(f) for f in functions)
    if not self.functions:
      raise ValueError('TestFunctionsFamily needs at least one function name.')
    if not max_offset_fraction >= 0:
      raise ValueError(f'max_offset_fraction must be >= 0, got {max_offset_fraction}.')
    self.max_offset_fraction, self.scale, self.noise = max_offset_fraction, scale, noise
    self.name = 'test_functions'

  def sample(self, key):
    index_key, offset_key, scale_key, noise_key = jax.random.split(key, 4)
    index = jax.random.randint(index_key, (), 0, len(self.functions))
    widths = jnp.asarray([test_functions.init_width(n) for n in self.functions], jnp.float32)[index]
    offset = jax.random.uniform(offset_key, (2,), jnp.float32, -1.0, 1.0) * self.max_offset_fraction * widths
    return {'function': index, 'offset': offset, 'scale': sampling.draw(self.scale, scale_key),
            'stdev': sampling.draw(self.noise, noise_key)}

  def task(self, cfg):
    inner = ShiftedTestFunction(self.functions, cfg['function'], cfg['offset'], cfg['scale'], name=self.name)
    return wrappers.GradientNoise(inner, cfg['stdev'])

  @property
  def structure_key(self):
    return ('test_functions', self.functions)

  def __repr__(self):
    return (f'TestFunctionsFamily(functions={self.functions}, max_offset_fraction={self.max_offset_fraction}, '
            f'scale={self.scale!r}, noise={self.noise!r})')


class SparseFamily(wrappers.SparseGradientsFamily):
  """TaskSet's sparse problems: ``family`` with sampled gradient noise, then elements zeroed w.p. U(0.9, 0.99)."""

  def __init__(self, family: base.TaskFamily,
               zero_probability: sampling.Hyperparameter = TASKSET_ZERO_PROBABILITY,
               noise: sampling.Hyperparameter = TASKSET_NOISE):
    super().__init__(wrappers.GradientNoiseFamily(family, noise), zero_probability)
    self.name = f'sparse_{family.name}'


class RescaledFamily(wrappers.RescaleFamily):
  """TaskSet's rescaled problems: ``family`` with parameters rescaled by a log-uniform scale in 1e-3..1e3."""

  def __init__(self, family: base.TaskFamily, scale: sampling.Hyperparameter = TASKSET_SCALE):
    super().__init__(family, scale)
    self.name = f'rescaled_{family.name}'


BASE_PROBLEMS = ('quadratic', 'bowl', 'test_functions', 'norm')
MODIFIERS = ('none', 'sparse', 'rescale', 'log_objective')


def sample_family(key: jax.Array, max_dim: int = 1000) -> base.TaskFamily:
  """Draws a family structure (host side) like TaskSet's ``losg_tasks_family``: base problem, then modifier.

  Base (uniform): a :class:`NoisyQuadraticFamily` (dim log-uniform 10..max_dim), :class:`NoisyBowlFamily`,
  :class:`TestFunctionsFamily` or a :class:`NormFamily` (dim log-uniform 3..max_dim, power U(0.1, 5)).
  Modifier (uniform): none, :class:`SparseFamily`, :class:`RescaledFamily` or
  :class:`~tasks.wrappers.LogObjectiveFamily`. The result is a fixed-structure family whose samples vmap.
  A pure function of ``key``; the (static) choices come back to the host.
  """
  base_key, modifier_key, structure_key = jax.random.split(key, 3)
  kind = BASE_PROBLEMS[int(jax.random.randint(base_key, (), 0, len(BASE_PROBLEMS)))]
  if kind == 'quadratic':
    family = NoisyQuadraticFamily.sample_structure(structure_key, 10, max_dim)
  elif kind == 'bowl':
    family = NoisyBowlFamily()
  elif kind == 'test_functions':
    family = TestFunctionsFamily()
  else:
    family = NormFamily.sample_structure(structure_key, 3, max_dim)
  modifier = MODIFIERS[int(jax.random.randint(modifier_key, (), 0, len(MODIFIERS)))]
  if modifier == 'sparse':
    return SparseFamily(family)
  if modifier == 'rescale':
    return RescaledFamily(family)
  if modifier == 'log_objective':
    return wrappers.LogObjectiveFamily(family)
  return family


__all__ = ['TASKSET_NOISE', 'TASKSET_SCALE', 'TASKSET_ZERO_PROBABILITY', 'BowlFamily', 'NoisyBowlFamily',
           'NoisyQuadraticFamily', 'NormFamily', 'QuadraticFamily', 'RescaledFamily', 'ShiftedTestFunction',
           'SparseFamily', 'TestFunctionsFamily', 'sample_family']
