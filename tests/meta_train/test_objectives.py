"""Meta-objectives: per-step values against their formulas, weights, clipping, and argument checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_train.objectives import ClippedOuterValidLoss, FinalLoss, LogNormalizedTrainLoss
from tasks.base import Task


class ScaledTask(Task):
  """A task whose normalizer divides by 4, to check that objectives apply it."""

  def init(self, key):
    return jnp.zeros(())

  def loss(self, params, key, batch):
    return params

  def normalizer(self, loss):
    return loss / 4.0


TASK = ScaledTask()


def test_log_normalized_train_loss_is_wichrowskas_formula():
  objective = LogNormalizedTrainLoss()
  f0, f = 2.0, np.array([2.0, 1.0, 1e-3, 0.0], np.float32)
  values = jax.vmap(lambda x: objective.step_value(TASK, x, None, jnp.float32(f0)))(f)
  np.testing.assert_allclose(values, np.log(f / (f0 + 1e-6) + 1e-6), rtol=1e-5)
  np.testing.assert_allclose(objective.step_weights(4), np.full(4, 0.25))
  # Negative losses are clamped to zero instead of producing NaN.
  assert float(objective.step_value(TASK, jnp.float32(-1.0), None, jnp.float32(f0))) == pytest.approx(np.log(1e-6))
  # The normaliser f0 is a constant: no gradient flows into it.
  grad = jax.grad(lambda f0: objective.step_value(TASK, jnp.float32(1.0), None, f0))(jnp.float32(f0))
  assert float(grad) == 0.0


def test_clipped_outer_valid_loss_clips_each_batch_and_uses_the_normalizer():
  objective = ClippedOuterValidLoss(clip=10.0, num_batches=3)
  assert objective.eval_split == 'outer_valid' and objective.num_eval_batches == 3
  losses = jnp.asarray([8.0, 44.0, 100.0])  # normalised: 2, 11, 25 -> clipped 2, 10, 10
  assert float(objective.step_value(TASK, jnp.float32(0.0), losses, jnp.float32(1.0))) == pytest.approx(22 / 3)
  grad = jax.grad(lambda l: objective.step_value(TASK, 0.0, l, 1.0))(losses)
  np.testing.assert_allclose(grad, [1 / 12, 0.0, 0.0])  # zero above the clip
  np.testing.assert_allclose(objective.step_weights(5), np.full(5, 0.2))


def test_final_loss_weights_only_the_last_step():
  objective = FinalLoss(split='test', num_batches=2)
  assert objective.eval_split == 'test'
  np.testing.assert_array_equal(objective.step_weights(3), [0.0, 0.0, 1.0])
  assert float(objective.step_value(TASK, jnp.float32(0.0), jnp.asarray([4.0, 12.0]), jnp.float32(1.0))) == 2.0


@pytest.mark.parametrize('make, message', [
    (lambda: LogNormalizedTrainLoss(epsilon=0.0), 'epsilon'),
    (lambda: ClippedOuterValidLoss(clip=-1.0), 'clip'),
    (lambda: ClippedOuterValidLoss(num_batches=0), 'num_batches'),
    (lambda: FinalLoss(split='validation'), "unknown split 'validation'"),
    (lambda: FinalLoss(num_batches=1.5), 'num_batches'),
])
def test_bad_arguments_name_the_problem(make, message):
  with pytest.raises(ValueError, match=message):
    make()
