"""Problem transformations of Wichrowska et al. 2017 (docs/algorithms.md §11.4): gradient noise, sparse gradients,
rescaling, log objective and sums of problems, each as a :class:`~tasks.base.Task` wrapper plus a family wrapper.

Gradient noise and gradient sparsity live inside the pure ``loss(params, key, batch)``: the loss VALUE stays the
clean objective f, only its gradient changes, through ``stop_gradient`` terms that are exactly 0 in value:

* noise:   ``f(θ) + σ·(⟨ε, θ⟩ − sg(⟨ε, θ⟩))``, ε ~ N(0, I) from ``key``   →   ∇ = ∇f + σε
* sparse:  ``f(m⊙θ + (1 − m)⊙sg(θ))``, m_i ~ Bernoulli(1 − p)            →   ∇ = m⊙∇f

so ``jax.grad(task.loss)`` yields exactly what the original ``Problem.gradients`` returned, and the wrappers compose:
``SparseGradients(GradientNoise(f, σ), p)`` zeroes elements of ``∇f + σε``, as the original SparseProblem did with its
own ``noise_stdev``. The other wrappers change the objective itself:

* Rescale:       init ``s·θ₀``, objective ``f(θ/s)``; a minimiser θ* of f becomes ``s·θ*``.
* LogObjective:  ``log(f + 1e-6) − log(1e-6)``; ≥ 0 whenever f ≥ 0, and 0 where f = 0.
* Sum:           parameters are the tuple of the parts' parameters; objective, the sum of the parts' objectives.

The family wrappers keep their hyperparameter (σ, p, s) in the cfg as a float32 scalar, fixed or drawn from a
:mod:`tasks.sampling` distribution, so every setting of a wrapper over one inner structure compiles together.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from tasks import base
from tasks import sampling

#: The epsilon of LogObjective (problem_generator.EPSILON).
LOG_EPSILON = 1e-6


def _flat_dot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _normal_like(key, tree):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, max(len(leaves), 1))
  return treedef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


class _Wrapper(base.Task):
  """Delegates everything but what a subclass overrides to ``inner``."""

  def __init__(self, inner: base.Task, name: str):
    self.inner, self.name = inner, name

  def init(self, key):
    return self.inner.init(key)

  def batch(self, key, split='train'):
    return self.inner.batch(key, split)

  def normalizer(self, loss):
    return self.inner.normalizer(loss)


class GradientNoise(_Wrapper):
  """Adds ``stdev·ε``, ε ~ N(0, I) drawn from the loss ``key``, to the gradient; the loss value is unchanged."""

  def __init__(self, inner: base.Task, stdev):
    super().__init__(inner, f'{inner.name}_noise')
    self.stdev = jnp.asarray(stdev, jnp.float32)

  def loss(self, params, key, batch):
    noise_key, inner_key = jax.random.split(key)
    value = self.inner.loss(params, inner_key, batch)
    # ⟨ε, θ⟩ − sg(⟨ε, θ⟩) is exactly 0 in value and has gradient ε.
    projection = _flat_dot(_normal_like(noise_key, params), params)
    return value + self.stdev * (projection - jax.lax.stop_gradient(projection))


class SparseGradients(_Wrapper):
  """Zeroes each gradient element independently with probability ``zero_probability`` (fresh per loss ``key``)."""

  def __init__(self, inner: base.Task, zero_probability):
    super().__init__(inner, f'{inner.name}_sparse')
    self.zero_probability = jnp.asarray(zero_probability, jnp.float32)

  def loss(self, params, key, batch):
    mask_key, inner_key = jax.random.split(key)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(mask_key, max(len(leaves), 1))
    # The value sees θ everywhere; the gradient flows only through the kept elements.
    masked = [jnp.where(jax.random.bernoulli(k, 1.0 - self.zero_probability, x.shape), x, jax.lax.stop_gradient(x))
              for k, x in zip(keys, leaves)]
    return self.inner.loss(treedef.unflatten(masked), inner_key, batch)


class Rescale(_Wrapper):
  """Parameters on a different scale: init ``scale·θ₀``, objective ``f(θ / scale)``; the optimum moves to ``scale·θ*``.

  Gradients shrink by ``1/scale`` and curvature by ``1/scale²``, which is what the wrapper tests.
  """

  def __init__(self, inner: base.Task, scale):
    super().__init__(inner, f'{inner.name}_rescale')
    self.scale = jnp.asarray(scale, jnp.float32)

  def init(self, key):
    return jax.tree.map(lambda x: x * self.scale, self.inner.init(key))

  def loss(self, params, key, batch):
    return self.inner.loss(jax.tree.map(lambda x: x / self.scale, params), key, batch)


class LogObjective(_Wrapper):
  """``log(f + 1e-6) − log(1e-6)``: emphasises the late, small-loss phase. Needs ``f ≥ 0`` to be ≥ 0 itself."""

  def __init__(self, inner: base.Task):
    super().__init__(inner, f'log_{inner.name}')

  def loss(self, params, key, batch):
    return jnp.log(self.inner.loss(params, key, batch) + LOG_EPSILON) - jnp.log(LOG_EPSILON)


class Sum(base.Task):
  """The sum of several problems on disjoint parameters (Wichrowska's SumTask, an "ensemble" of problems).

  Parameters and batches are tuples with one entry per part; each part gets its own sub-key.
  """

  def __init__(self, tasks: Sequence[base.Task], name: str | None = None):
    if not tasks:
      raise ValueError('Sum needs at least one task.')
    self.tasks = tuple(tasks)
    self.name = name or 'sum(' + '+'.join(t.name for t in self.tasks) + ')'

  def init(self, key):
    return tuple(t.init(k) for t, k in zip(self.tasks, jax.random.split(key, len(self.tasks))))

  def batch(self, key, split='train'):
    base.check_split(split)
    return tuple(t.batch(k, split) for t, k in zip(self.tasks, jax.random.split(key, len(self.tasks))))

  def loss(self, params, key, batch):
    keys = jax.random.split(key, len(self.tasks))
    return sum(t.loss(p, k, b) for t, p, k, b in zip(self.tasks, params, keys, batch))


# ---------------------------------------------------------------------------------------------------------------
# Family wrappers.


class _WrapperFamily(base.TaskFamily):
  """cfg = ``{'inner': inner cfg, <hyperparameter>: float32 scalar}``."""

  _kind: str = ''
  _field: str = ''

  def __init__(self, family: base.TaskFamily, value: sampling.Hyperparameter, label: str):
    self.family, self.value = family, value
    self.name = f'{family.name}_{label}'

  def sample(self, key):
    inner_key, value_key = jax.random.split(key)
    return {'inner': self.family.sample(inner_key), self._field: sampling.draw(self.value, value_key)}

  @property
  def structure_key(self):
    return (self._kind, self.family.structure_key)

  def __repr__(self):
    return f'{type(self).__name__}({self.family!r}, {self.value!r})'


def _label(prefix, value):
  return f'{prefix}{value:g}' if isinstance(value, (int, float)) else prefix


class GradientNoiseFamily(_WrapperFamily):
  """:class:`GradientNoise` over every task of ``family``, with ``stdev`` fixed or sampled."""
  _kind, _field = 'gradient_noise', 'stdev'

  def __init__(self, family: base.TaskFamily, stdev: sampling.Hyperparameter):
    if isinstance(stdev, (int, float)) and stdev < 0:
      raise ValueError(f'gradient noise stdev must be >= 0, got {stdev}.')
    super().__init__(family, stdev, _label('noise', stdev))

  def task(self, cfg):
    return GradientNoise(self.family.task(cfg['inner']), cfg['stdev'])


class SparseGradientsFamily(_WrapperFamily):
  """:class:`SparseGradients` over every task of ``family``; Wichrowska's default zero probability is 0.99."""
  _kind, _field = 'sparse_gradients', 'zero_probability'

  def __init__(self, family: base.TaskFamily, zero_probability: sampling.Hyperparameter = 0.99):
    if isinstance(zero_probability, (int, float)) and not 0 <= zero_probability <= 1:
      raise ValueError(f'zero_probability must be in [0, 1], got {zero_probability}.')
    super().__init__(family, zero_probability, _label('sparse', zero_probability))

  def task(self, cfg):
    return SparseGradients(self.family.task(cfg['inner']), cfg['zero_probability'])


class RescaleFamily(_WrapperFamily):
  """:class:`Rescale` over every task of ``family``, with ``scale`` fixed or sampled."""
  _kind, _field = 'rescale', 'scale'

  def __init__(self, family: base.TaskFamily, scale: sampling.Hyperparameter):
    if isinstance(scale, (int, float)) and not scale > 0:
      raise ValueError(f'rescale needs scale > 0, got {scale}.')
    super().__init__(family, scale, _label('rescale', scale))

  def task(self, cfg):
    return Rescale(self.family.task(cfg['inner']), cfg['scale'])


class LogObjectiveFamily(base.TaskFamily):
  """:class:`LogObjective` over every task of ``family`` (cfg is the inner cfg)."""

  def __init__(self, family: base.TaskFamily):
    self.family = family
    self.name = f'log_{family.name}'

  def sample(self, key):
    return self.family.sample(key)

  def task(self, cfg):
    return LogObjective(self.family.task(cfg))

  @property
  def structure_key(self):
    return ('log_objective', self.family.structure_key)

  def __repr__(self):
    return f'LogObjectiveFamily({self.family!r})'


class SumFamily(base.TaskFamily):
  """:class:`Sum` of one task from each family (cfg is the tuple of their cfgs)."""

  def __init__(self, families: Sequence[base.TaskFamily], name: str | None = None):
    if not families:
      raise ValueError('SumFamily needs at least one family.')
    self.families = tuple(families)
    self.name = name or 'sum(' + '+'.join(f.name for f in self.families) + ')'

  def sample(self, key):
    return tuple(f.sample(k) for f, k in zip(self.families, jax.random.split(key, len(self.families))))

  def task(self, cfg):
    return Sum([f.task(c) for f, c in zip(self.families, cfg)], name=self.name)

  @property
  def structure_key(self):
    return ('sum',) + tuple(f.structure_key for f in self.families)

  def __repr__(self):
    return f'SumFamily({list(self.families)!r})'
