"""A tiny, self-contained meta-training setup for testing the outer-loop machinery (trainer, CLI, checkpoints, sharding).

* :class:`LearnedSGD`: a learned optimizer with one meta-parameter, ``log_lr``; the update is ``-exp(log_lr) * g``.
* :class:`DiagonalQuadraticFamily`: ``f(x) = 0.5 * sum(h * x**2)``, curvatures ``h`` log-uniform in [0.5, 2] (by
  default; equal bounds make it isotropic).
* :class:`TruncatedBackpropQuadratic`: a :class:`meta_train.GradientEstimator` that unrolls every instance of the
  ensemble for ``unroll_length`` steps (staggered starts, resets at episode end and on non-finite loss, like the real
  estimators) and differentiates the mean log-loss through the unroll.

It is referenced from TOML configs as ``quadratic_fixture:...`` (the tests put this directory on ``PYTHONPATH``), which
exercises the ``module:attr`` hooks of :mod:`meta_train.run.build` too. It does not depend on the real estimators, so the
machinery is tested on its own.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.base import LearnedOptimizer
from meta_train.estimators.base import GradientEstimator
from tasks.base import Task, TaskFamily


@dataclasses.dataclass(frozen=True)
class LearnedSGD(LearnedOptimizer):
  init_log_lr: float = -3.0
  name = 'fixture_learned_sgd'

  def init(self, key):
    del key
    return {'log_lr': jnp.asarray(self.init_log_lr, jnp.float32)}

  def transform(self, meta_params):
    def init_fn(params):
      del params
      return optax.EmptyState()

    def update_fn(grads, state, params=None, **extra):
      del params, extra
      lr = jnp.exp(meta_params['log_lr'])
      return jax.tree.map(lambda g: -lr * g, grads), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class _Quadratic(Task):
  name = 'diagonal_quadratic'

  def __init__(self, curvature):
    self.curvature = curvature

  def init(self, key):
    return jax.random.normal(key, self.curvature.shape)

  def loss(self, params, key, batch):
    del key, batch
    return 0.5 * jnp.sum(self.curvature * params**2)


class DiagonalQuadraticFamily(TaskFamily):
  """Curvatures log-uniform in ``[min_curvature, max_curvature]``; equal bounds give the isotropic quadratic of that
  curvature ``h``, on which the best learning rate of gradient descent is known: ``1 / h`` (one step to the minimum)."""
  name = 'diagonal_quadratic'

  def __init__(self, dim: int = 4, min_curvature: float = 0.5, max_curvature: float = 2.0):
    self.dim = dim
    self.min_curvature = min_curvature
    self.max_curvature = max_curvature

  def sample(self, key):
    if self.min_curvature == self.max_curvature:
      return jnp.full((self.dim,), self.min_curvature, jnp.float32)
    return jnp.exp(jax.random.uniform(key, (self.dim,), minval=jnp.log(self.min_curvature),
                                      maxval=jnp.log(self.max_curvature)))

  def task(self, cfg):
    return _Quadratic(cfg)


class QuadraticState(NamedTuple):
  params: jax.Array     # (B, dim)
  curvature: jax.Array  # (B, dim)
  step: jax.Array       # (B,) int32
  calls: jax.Array      # () int32: estimate() calls so far (drives nan_grad_every)


class TruncatedBackpropQuadratic(GradientEstimator):
  """Truncated backprop on :class:`DiagonalQuadraticFamily`, for machinery tests.

  ``nan_grad_every=k > 0`` replaces every k-th meta-gradient by NaN, to test that the trainer skips and counts them.
  ``sleep_seconds > 0`` makes every call wait that long on the host (a ``jax.debug.callback``), so that a test can
  kill a run in the middle; it changes no value.
  """

  def __init__(self, architecture, family, num_tasks, unroll_length=5, episode_length=20, nan_grad_every=0,
               sleep_seconds=0.0):
    self.sleep_seconds = sleep_seconds
    self.architecture = architecture
    self.family = family
    self.num_tasks = num_tasks
    self.unroll_length = unroll_length
    self.episode_length = episode_length
    self.nan_grad_every = nan_grad_every

  def _fresh(self, key):
    cfg_key, init_key = jax.random.split(key)
    curvature = self.family.sample(cfg_key)
    return self.family.task(curvature).init(init_key), curvature

  def init(self, key, meta_params):
    del meta_params
    fresh_key, offset_key = jax.random.split(key)
    params, curvature = jax.vmap(self._fresh)(jax.random.split(fresh_key, self.num_tasks))
    step = jax.random.randint(offset_key, (self.num_tasks,), 0, self.episode_length)
    return QuadraticState(params, curvature, step, jnp.zeros((), jnp.int32))

  def _unroll(self, meta_params, params, curvature, step, key):
    tx = self.architecture.transform(meta_params)

    def body(carry, step_key):
      params, curvature, step, resets = carry
      done = step >= self.episode_length
      new_params, new_curvature = self._fresh(step_key)
      params = jnp.where(done, new_params, params)
      curvature = jnp.where(done, new_curvature, curvature)
      step = jnp.where(done, 0, step)
      task = self.family.task(curvature)
      loss, grads = jax.value_and_grad(task.loss)(params, None, None)
      updates, _ = tx.update(grads, tx.init(params), params, value=loss)
      params = params + updates
      bad = ~jnp.isfinite(task.loss(params, None, None))
      params = jnp.where(bad, new_params, params)  # a diverged instance restarts on a fresh problem
      curvature = jnp.where(bad, new_curvature, curvature)
      step = jnp.where(bad, 0, step + 1)
      return (params, curvature, step, resets + bad), jnp.log(jnp.where(jnp.isfinite(loss), loss, 1.0) + 1e-8)

    keys = jax.random.split(key, self.unroll_length)
    (params, curvature, step, resets), log_losses = jax.lax.scan(body, (params, curvature, step, 0), keys)
    return jnp.mean(log_losses), (params, curvature, step, resets)

  def estimate(self, meta_params, state, key):
    def ensemble_loss(meta_params):
      losses, aux = jax.vmap(self._unroll, in_axes=(None, 0, 0, 0, 0))(
          meta_params, state.params, state.curvature, state.step, jax.random.split(key, self.num_tasks))
      return jnp.mean(losses), aux

    (meta_loss, (params, curvature, step, resets)), grad = jax.value_and_grad(ensemble_loss, has_aux=True)(
        meta_params)
    params, curvature = jax.lax.stop_gradient((params, curvature))
    calls = state.calls + 1
    if self.sleep_seconds:
      jax.debug.callback(lambda calls: time.sleep(self.sleep_seconds), calls)
    if self.nan_grad_every:
      poison = (calls % self.nan_grad_every) == 0
      grad = jax.tree.map(lambda g: jnp.where(poison, jnp.nan, g), grad)
    metrics = {'meta_loss': meta_loss, 'inner_nonfinite_resets': jnp.sum(resets).astype(jnp.float32)}
    return grad, QuadraticState(params, curvature, step, calls), metrics


def make_estimator(architecture, families, num_tasks, **kwargs):
  """The ``module:factory`` hook :mod:`meta_train.run.build` calls for ``estimator.name = "quadratic_fixture:..."``."""
  (family,) = families
  return TruncatedBackpropQuadratic(architecture, family, num_tasks, **kwargs)


def quadratics(dims=(2, 3, 4)):
  """The ``tasks.family = "quadratic_fixture:quadratics"`` hook: one :class:`tasks.QuadraticFamily` per entry of
  ``dims``; different dimensions are different structure groups (used by ``test_sampled_groups.py``)."""
  from tasks import QuadraticFamily  # pylint: disable=import-outside-toplevel
  return [QuadraticFamily(d) for d in dims]


TINY_CONFIG = """
[run]
seed = 0
meta_steps = 12
log_every = 2
checkpoint_every = 3
keep_checkpoints = 2

[learned_optimizer]
architecture = "quadratic_fixture:LearnedSGD"
hparams = {init_log_lr = -3.0}

[tasks]
family = "quadratic_fixture:DiagonalQuadraticFamily"
kwargs = {dim = 4}
num_tasks = 4

[estimator]
name = "quadratic_fixture:make_estimator"
kwargs = {unroll_length = 5, episode_length = 20}

[meta_optimizer]
name = "adam"
learning_rate = 0.1
"""


# ---- helpers of the subprocess tests ----------------------------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))


def subprocess_env(tmp_path) -> dict:
  """Environment of a CLI subprocess: the fixture importable, and a compilation cache shared by the runs of one test
  (a resumed run compiles exactly the programs of the first run; the cache only saves the time)."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([REPO, HERE, env.get('PYTHONPATH', '')])
  env['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path / 'jax_cache')
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def write_tiny_config(tmp_path) -> str:
  path = tmp_path / 'tiny.toml'
  path.write_text(TINY_CONFIG)
  return str(path)
