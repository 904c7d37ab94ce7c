"""The vectorized truncated unroll: staggering, resets at episode end and on non-finite losses, the loss arguments
passed to the optimizer, structure groups.

The fixtures here (a learned SGD with one meta-parameter and a diagonal quadratic family) are also used by
``test_estimators.py``. They touch meta_train only through the public lopt/tasks contracts.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.base import LearnedOptimizer
from meta_train import structure_groups
from meta_train.estimators.truncated_backprop import TruncatedBackprop
from meta_train.objectives import ClippedOuterValidLoss, LogNormalizedTrainLoss
from meta_train.structure_groups import MultiTaskEstimator, StructureGroups
from meta_train.unroll import VectorizedUnroll
from meta_train.truncation_schedules import ConstantTruncation, LogUniformTruncation
from tasks.base import Task, TaskFamily

# ------------------------------------------------------------------------------------------------------------------
# Fixtures.

#: the fixture quadratic's loss is 0.5 * sum(h x^2) + SPLIT_OFFSET[split], so every split's loss is known exactly.
SPLIT_OFFSET = {'train': 0.0, 'inner_valid': 1.0, 'outer_valid': 2.0, 'test': 3.0}


class SGDState(NamedTuple):
  last_value: jax.Array        # the `value=` of the last update
  last_valid_value: jax.Array  # the `valid_value=` of the last update (NaN if none was passed)


@dataclasses.dataclass(frozen=True)
class LearnedSGD(LearnedOptimizer):
  """``φ ← φ − exp(log_lr)·g``; the state records the loss arguments of the last update."""
  init_log_lr: float = -2.0
  name = 'test_learned_sgd'

  def init(self, key):
    del key
    return {'log_lr': jnp.asarray(self.init_log_lr, jnp.float32)}

  def transform(self, meta_params):
    def init_fn(params):
      del params
      return SGDState(jnp.asarray(jnp.nan, jnp.float32), jnp.asarray(jnp.nan, jnp.float32))

    def update_fn(grads, state, params=None, *, value=None, valid_value=None, **extra):
      del state, params, extra
      lr = jnp.exp(meta_params['log_lr'])
      new_state = SGDState(jnp.asarray(value, jnp.float32),
                           jnp.asarray(jnp.nan if valid_value is None else valid_value, jnp.float32))
      return jax.tree.map(lambda g: -lr * g, grads), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class Quadratic(Task):
  name = 'diag_quadratic'

  def __init__(self, curvature, init_scale, random_init):
    self.curvature, self.init_scale, self.random_init = curvature, init_scale, random_init

  def init(self, key):
    if self.random_init:
      return self.init_scale * jax.random.normal(key, self.curvature.shape)
    return self.init_scale * jnp.ones(self.curvature.shape)

  def batch(self, key, split='train'):
    del key
    return jnp.asarray(SPLIT_OFFSET[split], jnp.float32)

  def loss(self, params, key, batch):
    del key
    return 0.5 * jnp.sum(self.curvature * params**2) + batch


class QuadraticFamily(TaskFamily):
  """Curvatures ``h`` log-uniform in [min_curvature, max_curvature]; init ``init_scale·N(0, I)`` or ``init_scale·1``."""
  name = 'diag_quadratic'

  def __init__(self, dim=2, min_curvature=0.5, max_curvature=2.0, init_scale=1.0, random_init=True):
    self.dim, self.min_curvature, self.max_curvature = dim, min_curvature, max_curvature
    self.init_scale, self.random_init = init_scale, random_init

  def sample(self, key):
    u = jax.random.uniform(key, (self.dim,), minval=np.log(self.min_curvature), maxval=np.log(self.max_curvature))
    return {'curvature': jnp.exp(u)}

  def task(self, cfg):
    return Quadratic(cfg['curvature'], self.init_scale, self.random_init)

  @property
  def structure_key(self):
    return ('diag_quadratic', self.dim, self.init_scale, self.random_init)


# ------------------------------------------------------------------------------------------------------------------
# Tests.

ARCH = LearnedSGD()
THETA = ARCH.init(None)


def test_staggered_starts_differ_and_lie_inside_the_first_episode():
  unroll = VectorizedUnroll(ARCH, [QuadraticFamily()], num_tasks=16, unroll_length=1,
                            truncation_schedule=LogUniformTruncation(20, 200))
  state = jax.jit(unroll.init)(jax.random.key(0), THETA)
  step, length = np.asarray(state.step[:, 0]), np.asarray(state.length[:, 0])
  # 16 draws uniform on [0, length) with length >= 20 coincide all-equal with probability < 20^-15.
  assert len(np.unique(step)) > 1
  assert np.all((0 <= step) & (step < length))
  # Fresh parameters per instance, identical for the particles of an instance.
  assert len(np.unique(np.asarray(state.params[:, 0, 0]))) == 16

  unstaggered = VectorizedUnroll(ARCH, [QuadraticFamily()], num_tasks=4, unroll_length=1, stagger=False)
  assert np.all(np.asarray(unstaggered.init(jax.random.key(0), THETA).step) == 0)


def test_episode_end_resets_to_fresh_params_inside_the_unroll():
  """Deterministic init x0 = 1: after T steps with episodes of length L, the parameters are those of a fresh
  instance advanced ``T mod L`` steps, x0·(1 − ηh)^(T mod L), with the curvature of the new configuration."""
  length, steps = 5, 12
  unroll = VectorizedUnroll(ARCH, [QuadraticFamily(random_init=False)], num_tasks=3, unroll_length=steps,
                            truncation_schedule=ConstantTruncation(length), stagger=False)
  state = unroll.init(jax.random.key(1), THETA)
  new_state, out = jax.jit(unroll.unroll)(THETA, state, jax.random.key(2))
  lr = np.exp(float(THETA['log_lr']))
  h = np.asarray(new_state.cfg['curvature'][:, 0])
  expected = (1 - lr * h)**(steps % length)
  np.testing.assert_allclose(np.asarray(new_state.params[:, 0]), expected, rtol=1e-5)
  assert np.all(np.asarray(new_state.step) == steps % length)
  # Resets happen at the start of steps 5 and 10; new curvatures were drawn.
  np.testing.assert_array_equal(np.asarray(out.episode_reset).any(axis=1), [t in (5, 10) for t in range(steps)])
  assert not np.allclose(h, np.asarray(state.cfg['curvature'][:, 0]))
  np.testing.assert_array_equal(np.asarray(out.before_reset[:, 0]), np.arange(steps) < length)
  assert float(out.nonfinite_reset.sum()) == 0


def _reference_nonfinite_resets(lr, h, steps):
  """Independent float32 simulation of SGD on 0.5·h·x² from x = 1, restarting whenever the loss or x overflows."""
  x, count = np.float32(1.0), 0
  with np.errstate(over='ignore', invalid='ignore'):
    for _ in range(steps):
      loss = np.float32(0.5) * h * x * x
      new_x = np.float32(x - np.float32(lr) * h * x)
      if not (np.isfinite(loss) and np.isfinite(new_x)):
        count += 1
        x = np.float32(1.0)  # restarted before the next step
      else:
        x = new_x
  return count


def test_nonfinite_instances_are_reset_and_counted():
  steps = 40
  family = QuadraticFamily(dim=1, min_curvature=1.0, max_curvature=1.0, random_init=False)
  unroll = VectorizedUnroll(ARCH, [family], num_tasks=2, unroll_length=steps,
                            truncation_schedule=ConstantTruncation(10_000), stagger=False)
  theta = {'log_lr': jnp.asarray(np.log(1e4), jnp.float32)}  # x grows ×1e4 per step: the loss overflows in 5 steps
  state = unroll.init(jax.random.key(0), theta)
  new_state, out = jax.jit(unroll.unroll)(theta, state, jax.random.key(1))
  expected = _reference_nonfinite_resets(np.float32(np.exp(np.float32(np.log(1e4)))), np.float32(1.0), steps)
  assert expected > 1
  np.testing.assert_array_equal(np.asarray(out.nonfinite_reset.sum(axis=0)), [expected, expected])
  assert np.all(np.isfinite(np.asarray(out.values)))
  assert np.all(np.isfinite(np.asarray(new_state.params)))
  # The estimator reports the same count as a metric, and a finite meta-loss.
  estimator = TruncatedBackprop(StructureGroups(ARCH, family, num_tasks=2, unroll_length=steps, stagger=False,
                                                truncation_schedule=ConstantTruncation(10_000)))
  _, _, metrics = jax.jit(estimator.estimate)(theta, estimator.init(jax.random.key(0), theta), jax.random.key(1))
  assert float(metrics['inner_nonfinite_resets']) == 2 * expected
  assert np.isfinite(float(metrics['meta_loss']))


def test_training_and_validation_losses_reach_the_optimizer():
  family = QuadraticFamily(dim=3)
  kwargs = dict(num_tasks=2, unroll_length=1, objective=ClippedOuterValidLoss(clip=1e9, num_batches=2))
  with_valid = VectorizedUnroll(ARCH, [family], use_valid_loss=True, **kwargs)
  state = with_valid.init(jax.random.key(0), THETA)
  new_state, out = with_valid.unroll(THETA, state, jax.random.key(1))
  train_loss = 0.5 * np.sum(np.asarray(state.cfg['curvature'] * state.params**2), axis=-1)
  np.testing.assert_allclose(np.asarray(new_state.opt_state.last_value), train_loss, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(new_state.opt_state.last_valid_value), train_loss + 1.0, rtol=1e-6)
  # The outer-valid objective is evaluated at the updated parameters.
  outer = 0.5 * np.sum(np.asarray(new_state.cfg['curvature'] * new_state.params**2), axis=-1) + 2.0
  np.testing.assert_allclose(np.asarray(out.values[0]), outer, rtol=1e-6)

  without_valid = VectorizedUnroll(ARCH, [family], **kwargs)
  new_state, _ = without_valid.unroll(THETA, without_valid.init(jax.random.key(0), THETA), jax.random.key(1))
  assert np.all(np.isnan(np.asarray(new_state.opt_state.last_valid_value)))


def test_log_normalized_objective_of_a_whole_episode_matches_the_closed_form():
  """With x0 = 1 and T = episode length, v_t = log(f_t/(f_0 + 1e-6) + 1e-6), f_t = ½ Σ h (1 − ηh)^{2t}."""
  steps = 6
  unroll = VectorizedUnroll(ARCH, [QuadraticFamily(random_init=False)], num_tasks=2, unroll_length=steps,
                            truncation_schedule=ConstantTruncation(steps), stagger=False,
                            objective=LogNormalizedTrainLoss())
  state = unroll.init(jax.random.key(3), THETA)
  _, out = unroll.unroll(THETA, state, jax.random.key(4))
  h = np.asarray(state.cfg['curvature'][:, 0], np.float64)
  lr = np.exp(float(THETA['log_lr']))
  f = np.stack([0.5 * np.sum(h * (1 - lr * h)**(2 * t), axis=-1) for t in range(steps)])
  expected = np.log(f / (f[0] + 1e-6) + 1e-6)
  np.testing.assert_allclose(np.asarray(out.values[:, :, 0]), expected, rtol=1e-4, atol=1e-5)


def test_families_are_grouped_by_structure_and_each_group_has_num_tasks_instances():
  small, small_too, large = QuadraticFamily(dim=2), QuadraticFamily(dim=2, max_curvature=8.0), QuadraticFamily(dim=5)
  assert [len(g) for g in structure_groups.group_by_structure([small, large, small_too])] == [2, 1]
  estimator = TruncatedBackprop(StructureGroups(ARCH, [small, large, small_too], num_tasks=64, unroll_length=1))
  np.testing.assert_allclose(estimator.group_weights, [2 / 3, 1 / 3])
  state = jax.jit(estimator.init)(jax.random.key(0), THETA)
  assert state.groups[0].params.shape == (64, 1, 2) and state.groups[1].params.shape == (64, 1, 5)
  # Both families of the first group are drawn (each with probability 1/2: all 64 equal has probability 2^-63).
  assert set(np.unique(np.asarray(state.groups[0].family_index))) == {0, 1}


def test_family_weights_give_each_family_its_share_whether_or_not_it_shares_a_group():
  """A group weighs the sum of its members' weights; inside it, each instance draws its family by those weights."""
  small, small_too, large = QuadraticFamily(dim=2), QuadraticFamily(dim=2, max_curvature=8.0), QuadraticFamily(dim=5)
  estimator = TruncatedBackprop(StructureGroups(ARCH, [small, large, small_too], num_tasks=256, unroll_length=1,
                                                family_weights=[3.0, 2.0, 1.0]))
  np.testing.assert_allclose(estimator.group_weights, [4 / 6, 2 / 6])
  first = estimator.groups.unrolls[0]
  np.testing.assert_allclose(np.exp(first.family_log_weights), [3 / 4, 1 / 4], rtol=1e-6)
  state = jax.jit(estimator.init)(jax.random.key(0), THETA)
  share = float(np.mean(np.asarray(state.groups[0].family_index) == 0))
  assert abs(share - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 256), share
  # Equal weights are the default, bitwise: the groups' weights and the draw inside each group.
  plain = TruncatedBackprop(StructureGroups(ARCH, [small, large, small_too], num_tasks=4, unroll_length=1))
  equal = TruncatedBackprop(StructureGroups(ARCH, [small, large, small_too], num_tasks=4, unroll_length=1,
                                            family_weights=[0.1, 0.1, 0.1]))
  np.testing.assert_array_equal(plain.group_weights, equal.group_weights)
  for a, b in zip(plain.groups.unrolls, equal.groups.unrolls):
    np.testing.assert_array_equal(a.family_log_weights, b.family_log_weights)
  with pytest.raises(ValueError, match='group_weights or family_weights, not both'):
    StructureGroups(ARCH, [small, large], num_tasks=2, group_weights=[1.0, 1.0], family_weights=[1.0, 1.0])
  with pytest.raises(ValueError, match='family_weights: need 2 positive weights'):
    StructureGroups(ARCH, [small, large], num_tasks=2, family_weights=[1.0, 0.0])


def test_multi_task_estimator_is_the_weighted_sum_of_its_parts():
  one = TruncatedBackprop(StructureGroups(ARCH, QuadraticFamily(dim=2), num_tasks=2, unroll_length=3))
  two = TruncatedBackprop(StructureGroups(ARCH, QuadraticFamily(dim=4), num_tasks=2, unroll_length=3))
  multi = MultiTaskEstimator([one, two], weights=[3.0, 1.0])
  init_key, key = jax.random.key(0), jax.random.key(1)
  grad, _, metrics = jax.jit(multi.estimate)(THETA, multi.init(init_key, THETA), key)
  init_keys, keys = jax.random.split(init_key, 2), jax.random.split(key, 3)
  parts = [e.estimate(THETA, e.init(k0, THETA), k1) for e, k0, k1 in zip([one, two], init_keys, keys)]
  np.testing.assert_allclose(grad['log_lr'], 0.75 * parts[0][0]['log_lr'] + 0.25 * parts[1][0]['log_lr'], rtol=1e-5)
  np.testing.assert_allclose(metrics['meta_loss'], 0.75 * parts[0][2]['meta_loss'] + 0.25 * parts[1][2]['meta_loss'],
                             rtol=1e-5)

  with pytest.raises(ValueError, match='weights'):
    MultiTaskEstimator([one, two], weights=[1.0])
  with pytest.raises(ValueError, match='mode'):
    MultiTaskEstimator([one], mode='random')


def test_sampled_group_mode_advances_only_the_drawn_group():
  estimator = TruncatedBackprop(StructureGroups(ARCH, [QuadraticFamily(dim=2), QuadraticFamily(dim=3)], num_tasks=2,
                                                unroll_length=2, group_mode='sample', stagger=False))
  state = estimator.init(jax.random.key(0), THETA)
  _, new_state, _ = jax.jit(estimator.estimate)(THETA, state, jax.random.key(5))
  advanced = [int(np.asarray(g.step).max()) for g in new_state.groups]
  assert sorted(advanced) == [0, 2]


def test_bad_arguments_name_the_problem():
  with pytest.raises(ValueError, match='num_tasks'):
    VectorizedUnroll(ARCH, [QuadraticFamily()], num_tasks=0, unroll_length=1)
  with pytest.raises(ValueError, match='unroll_length'):
    StructureGroups(ARCH, QuadraticFamily(), num_tasks=2, unroll_length=0)
  with pytest.raises(ValueError, match='empty'):
    StructureGroups(ARCH, [], num_tasks=2)
  with pytest.raises(TypeError, match='TaskFamily'):
    StructureGroups(ARCH, ['quadratic'], num_tasks=2)
  with pytest.raises(ValueError, match='group_mode'):
    StructureGroups(ARCH, QuadraticFamily(), num_tasks=2, group_mode='every')
  with pytest.raises(TypeError, match='StructureGroups or a meta_train.VectorizedUnroll'):
    TruncatedBackprop(ARCH)
  with pytest.raises(ValueError, match='structure keys'):
    VectorizedUnroll(ARCH, [QuadraticFamily(dim=2), QuadraticFamily(dim=3)], num_tasks=2, unroll_length=1)
