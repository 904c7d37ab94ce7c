"""The gradient estimators against exact meta-gradients.

The problem: learned SGD (one meta-parameter, ``log_lr``) on diagonal quadratics ``f(x) = ½ Σ h x²`` from
``x0 = 1``, where SGD gives ``x_t = (1 − ηh)^t`` and every meta-objective is a closed-form function of ``log η``.
The exact gradient is ``jax.grad`` of that closed form (no unroll involved), evaluated per instance with the
curvatures the estimator drew (read back from its state).

Statistical tolerances: each test draws ``N`` independent single-instance estimates (``num_tasks = 1``, vmapped over
``N`` keys) and compares the mean error to its standard error ``se = std/√N``. ``|mean| < 4·se`` fails with
probability < 1e-4 for an unbiased estimator (normal approximation, fine at these N); "significantly biased" means
``|mean| > 8·se``, whose false-positive rate is negligible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_train.estimators.es import TruncatedES
from meta_train.estimators.hybrid import HybridEstimator, inverse_variance_combine
from meta_train.estimators.pes import TruncatedPES
from meta_train.estimators.truncated_backprop import TruncatedBackprop
from meta_train.objectives import FinalLoss, LogNormalizedTrainLoss
from meta_train.structure_groups import StructureGroups
from meta_train.truncation_schedules import ConstantTruncation
from tasks.base import Task, TaskFamily
from test_unroll import LearnedSGD, QuadraticFamily

ARCH = LearnedSGD(init_log_lr=-2.0)
THETA = ARCH.init(None)
FAMILY = QuadraticFamily(dim=2, min_curvature=0.5, max_curvature=2.0, random_init=False)


def exact_episode_objective(log_lr, curvature, num_steps):
  """Σ_t v_t over the first ``num_steps`` steps of an episode from x0 = 1 (closed form, no unroll)."""
  lr = jnp.exp(log_lr)
  t = jnp.arange(num_steps)[:, None]
  f = 0.5 * jnp.sum(curvature * (1 - lr * curvature)**(2 * t), axis=-1)
  return jnp.sum(jnp.log(f / (f[0] + 1e-6) + 1e-6))


exact_grad = jax.grad(exact_episode_objective)


def run_truncations(estimator, num_truncations, num_samples, seed=0):
  """``num_samples`` independent runs of ``num_truncations`` estimate() calls from init (one compile).

  Returns the summed gradient of each run, the curvature of the first episode and of the last (current) one.
  """
  def one_run(key):
    init_key, key = jax.random.split(key)
    state = estimator.init(init_key, THETA)
    first = state.groups[0]
    first = getattr(first, 'unroll', first)

    def body(state, key):
      grad, state, _ = estimator.estimate(THETA, state, key)
      return state, grad['log_lr']

    state, grads = jax.lax.scan(body, state, jax.random.split(key, num_truncations))
    last = state.groups[0]
    last = getattr(last, 'unroll', last)
    return jnp.sum(grads), first.cfg['curvature'][0, 0], last.cfg['curvature'][0, 0]

  return jax.jit(jax.vmap(one_run))(jax.random.split(jax.random.key(seed), num_samples))


def _make(cls, episode_length, unroll_length, **kwargs):
  groups = StructureGroups(ARCH, FAMILY, num_tasks=1, truncation_schedule=ConstantTruncation(episode_length),
                           objective=LogNormalizedTrainLoss(), unroll_length=unroll_length, stagger=False)
  return cls(groups, **kwargs)


@pytest.mark.parametrize('cls', [TruncatedES, TruncatedPES])
def test_es_and_pes_converge_to_the_exact_gradient_of_a_whole_episode(cls):
  """One truncation covering a whole episode: both are unbiased (up to the O(σ²) smoothing, ~1e-4 relative here,
  far below the tolerance), and the error shrinks like 1/√N."""
  steps = 8
  grads, curvature, _ = run_truncations(_make(cls, steps, steps), 1, 1600)
  # The truncation loss is the mean over its steps: (1/T) Σ_t v_t.
  exact = jax.vmap(lambda h: exact_grad(THETA['log_lr'], h, steps) / steps)(curvature)
  errors = np.asarray(grads - exact)
  for n in (100, 1600):
    se = errors[:n].std(ddof=1) / np.sqrt(n)
    assert abs(errors[:n].mean()) < 4 * se, (n, errors[:n].mean(), se)
  # With 1600 samples the 4·se band is narrower than 20% of the gradient, so the test has power to see a bias.
  assert 4 * errors.std(ddof=1) / np.sqrt(1600) < 0.2 * abs(float(np.mean(exact)))


@pytest.mark.slow
def test_over_a_split_episode_pes_is_unbiased_while_truncated_es_and_backprop_are_biased():
  """Episodes of 10 steps unrolled in truncations of 4: the third truncation crosses the episode boundary (steps 8, 9
  of the first episode, then steps 0, 1 of the next). The sum of the three truncation gradients estimates the
  gradient of (1/4)[Σ_{t<10} v_t(episode 1) + Σ_{t<2} v_t(episode 2)]."""
  episode, unroll, truncations, samples = 10, 4, 3, 1000

  def exact(first, last):
    return (exact_grad(THETA['log_lr'], first, episode) + exact_grad(THETA['log_lr'], last, 2)) / unroll

  errors = {}
  for cls in (TruncatedPES, TruncatedES, TruncatedBackprop):
    grads, first, last = run_truncations(_make(cls, episode, unroll), truncations, samples)
    errors[cls.__name__] = np.asarray(grads - jax.vmap(exact)(first, last))

  def z_score(e):
    return abs(e.mean()) / (e.std(ddof=1) / np.sqrt(len(e)))

  assert z_score(errors['TruncatedPES']) < 4
  assert z_score(errors['TruncatedES']) > 8
  # Backprop is deterministic given the task, so its error has no noise of its own; compare with PES's spread.
  tbptt_bias = errors['TruncatedBackprop'].mean()
  assert abs(tbptt_bias) > 8 * errors['TruncatedPES'].std(ddof=1) / np.sqrt(samples)
  # ES estimates the gradient of the same truncated objective as backprop, so it shares backprop's bias.
  es = errors['TruncatedES']
  assert abs(es.mean() - tbptt_bias) < 4 * es.std(ddof=1) / np.sqrt(samples)


# ------------------------------------------------------------------------------------------------------------------
# The hybrid.


class Sine(Task):
  """``f(x) = sin²(x) + 0.1``: gradient descent with a large step is chaotic, so the loss after many steps is a
  rugged function of the learning rate whose derivative explodes with the unroll length (Metz et al. 2019)."""
  name = 'sine'

  def __init__(self, x0):
    self.x0 = x0

  def init(self, key):
    del key
    return self.x0

  def loss(self, params, key, batch):
    del key, batch
    return jnp.sin(params)**2 + 0.1


class SineFamily(TaskFamily):
  name = 'sine'

  def sample(self, key):
    return jax.random.uniform(key, (), minval=0.2, maxval=1.4)

  def task(self, cfg):
    return Sine(cfg)


def _hybrid_parts(estimator, num_samples):
  def one(key):
    init_key, key = jax.random.split(key)
    state = estimator.init(init_key, THETA)
    unroll = estimator.unrolls[0]
    rp, es, _, _, _ = estimator.per_instance_estimates(unroll, THETA, state.groups[0], key, state.meta_step)
    rp, es = rp['log_lr'], es['log_lr']
    return jnp.mean(rp), jnp.mean(es), inverse_variance_combine(rp, es)

  return [np.asarray(x) for x in jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), num_samples))]


def _hybrid_variances(log_lr, unroll_length, num_samples=400):
  global THETA  # pylint: disable=global-statement
  saved, THETA = THETA, {'log_lr': jnp.asarray(log_lr, jnp.float32)}
  try:
    estimator = HybridEstimator(StructureGroups(ARCH, SineFamily(), num_tasks=16, unroll_length=unroll_length,
                                                truncation_schedule=ConstantTruncation(1000), stagger=False))
    rp, es, hybrid = _hybrid_parts(estimator, num_samples)
  finally:
    THETA = saved
  return rp.var(), es.var(), hybrid.var()


def test_hybrid_variance_stays_below_both_parts_where_backprop_explodes():
  """Chaotic regime (η = 1.6 on sin², 40-step unroll): backprop's variance is over 5× that of ES, and the hybrid's
  variance is at most 1.1·min(Var(RP), Var(ES)). Margin: with 400 samples a variance estimate has a relative
  standard error of √(2/399) ≈ 7%; the measured ratio to the minimum is ≈ 0.75, so the 10% margin leaves room for
  ~5 standard errors."""
  var_rp, var_es, var_hybrid = _hybrid_variances(np.log(1.6), 40)
  assert var_rp > 5 * var_es  # the regime the test is about
  assert var_hybrid <= 1.1 * min(var_rp, var_es), (var_rp, var_es, var_hybrid)


def test_hybrid_follows_backprop_where_backprop_is_precise():
  """Tame regime (η = 0.3, 10 steps): ES is the noisy part (Var ≈ 7× backprop's) and the hybrid's variance is far
  below it. With weights estimated from ``num_tasks = 16`` instances the hybrid pays for the noise in those weights:
  measured ≈ 1.4× Var(RP), so we only assert it stays below 2× Var(RP) and 0.3× Var(ES) (known cost of estimated
  inverse-variance weights, which a larger ensemble reduces)."""
  var_rp, var_es, var_hybrid = _hybrid_variances(np.log(0.3), 10)
  assert var_es > 3 * var_rp
  assert var_hybrid <= 0.3 * var_es and var_hybrid <= 2 * var_rp, (var_rp, var_es, var_hybrid)


def test_inverse_variance_combination_matches_the_formula():
  rp = np.array([[1.0, 2.0], [3.0, 2.5], [2.0, 0.0]], np.float32)
  es = np.array([[0.0, 1.0], [4.0, 1.0], [-1.0, 1.5]], np.float32)
  v_rp, v_es = rp.var(axis=0, ddof=1) + 1e-8, es.var(axis=0, ddof=1) + 1e-8
  expected = (rp.mean(0) / v_rp + es.mean(0) / v_es) / (1 / v_rp + 1 / v_es)
  np.testing.assert_allclose(inverse_variance_combine(jnp.asarray(rp), jnp.asarray(es)), expected, rtol=1e-6)


def test_estimators_return_gradients_shaped_like_meta_params_and_the_contract_metrics():
  meta = {'log_lr': THETA['log_lr'], 'unused': jnp.zeros((3,))}
  for cls in (TruncatedBackprop, TruncatedES, TruncatedPES, HybridEstimator):
    estimator = cls(StructureGroups(ARCH, FAMILY, num_tasks=2, unroll_length=2))
    state = jax.jit(estimator.init)(jax.random.key(0), meta)
    grad, new_state, metrics = jax.jit(estimator.estimate)(meta, state, jax.random.key(1))
    assert jax.tree.structure(grad) == jax.tree.structure(meta)
    assert grad['unused'].shape == (3,)
    assert {'meta_loss', 'inner_nonfinite_resets'} <= set(metrics)
    assert int(new_state.meta_step) == 1
    for leaf in jax.tree.leaves(new_state.groups):
      assert leaf.shape[0] == 2, cls  # the ensemble axis comes first


def test_second_derivatives_switch_drops_the_hessian_term():
  """Two SGD steps on ½hx² from x0 = 1: x2 = (1 − ηh)², so dv/dη involves the Hessian h through ∂g/∂x. Without
  second derivatives the gradient's dependence on x is cut: x1 = 1 − ηh, x2 = x1 − η·stop(h·x1)."""
  family = QuadraticFamily(dim=1, min_curvature=1.5, max_curvature=1.5, random_init=False)
  lr, h = float(np.exp(THETA['log_lr'])), 1.5
  grads = {}
  for flag in (True, False):
    estimator = TruncatedBackprop(StructureGroups(ARCH, family, num_tasks=1, unroll_length=3, stagger=False,
                                                  truncation_schedule=ConstantTruncation(3),
                                                  second_derivatives=flag, objective=FinalLoss()))
    grads[flag] = float(estimator.estimate(THETA, estimator.init(jax.random.key(0), THETA),
                                           jax.random.key(1))[0]['log_lr'])
  # Final loss after 3 steps, f3 = ½h x3²; d/dlog η = η ∂f3/∂η.
  full = lr * h * (1 - lr * h)**5 * 3 * (-h)
  x1, x2 = 1 - lr * h, (1 - lr * h)**2
  # First order: dx_{t+1}/dη = dx_t/dη − h x_t (the −η h dx_t/dη term is dropped).
  dx1 = -h
  dx2 = dx1 - h * x1
  x3 = (1 - lr * h)**3
  dx3 = dx2 - h * x2
  first_order = lr * h * x3 * dx3
  np.testing.assert_allclose(grads[True], full, rtol=1e-4)
  np.testing.assert_allclose(grads[False], first_order, rtol=1e-4)


def test_bad_estimator_arguments_name_the_problem():
  with pytest.raises(ValueError, match='std'):
    TruncatedPES(StructureGroups(ARCH, FAMILY, num_tasks=2), std=0.0)
  with pytest.raises(ValueError, match='std'):
    TruncatedES(StructureGroups(ARCH, FAMILY, num_tasks=2), std=-1.0)
  with pytest.raises(ValueError, match='num_tasks >= 2'):
    HybridEstimator(StructureGroups(ARCH, FAMILY, num_tasks=1))
  with pytest.raises(ValueError, match='group_weights'):
    TruncatedES(StructureGroups(ARCH, [FAMILY, QuadraticFamily(dim=3)], num_tasks=2, group_weights=[1.0, -1.0]))


@pytest.mark.slow  # compiles a PES estimate of the full HRNN: ~20-40 s
def test_pes_trains_a_loss_braked_hrnn():
  # The HRNN option loss_brake wraps the state in a LossBrakeState and reads the loss passed as `value`: one PES
  # estimate on a quadratic must carry that state through the unroll and give a finite meta-gradient of the HRNN's
  # meta-parameters (candidate 24 and the thirteenth round train this way).
  import lopt  # pylint: disable=import-outside-toplevel
  from lopt import brakes  # pylint: disable=import-outside-toplevel
  arch = lopt.HierarchicalRNN(step_scale='relative', max_log_lr=-2.0, min_log_lr=-33.0, loss_brake=1.0)
  meta = arch.init(jax.random.key(0))
  estimator = TruncatedPES(StructureGroups(arch, FAMILY, num_tasks=2, unroll_length=3), std=0.01)
  state = jax.jit(estimator.init)(jax.random.key(0), meta)
  assert any(isinstance(x, brakes.LossBrakeState)
             for x in jax.tree.leaves(state.groups, is_leaf=lambda x: isinstance(x, brakes.LossBrakeState)))
  grad, state, metrics = jax.jit(estimator.estimate)(meta, state, jax.random.key(1))
  assert jax.tree.structure(grad) == jax.tree.structure(meta)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))
  assert bool(jnp.isfinite(metrics['meta_loss'])) and int(state.meta_step) == 1
