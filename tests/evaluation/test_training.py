"""The inner training loop shared by the harness and the periodic evaluation."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from evaluation import training
from tasks.base import Task


class _KeyProbe(Task):
  """loss = (u(loss key) - batch)^2 with batch = u(batch key): exactly 0 when both keys are the same key."""
  name = 'key_probe'

  def init(self, key):
    del key
    return {'x': jnp.zeros(())}

  def batch(self, key, split='train'):
    del split
    return jax.random.uniform(key)

  def loss(self, params, key, batch):
    return (jax.random.uniform(key) - batch) ** 2 + 0.0 * params['x']


@pytest.mark.parametrize('use_valid_loss', [False, True])
def test_batch_and_loss_get_different_keys_in_training_and_evaluation(use_valid_loss):
  run = training.make_run(_KeyProbe(), optax.sgd(0.1), num_steps=6, eval_every=3, eval_splits=('train', 'test'),
                          num_eval_batches=2, use_valid_loss=use_valid_loss)
  train_loss, eval_loss = jax.jit(run)(jax.random.key(0))
  assert train_loss.shape == (6,) and eval_loss.shape == (2, 2)
  assert np.all(np.asarray(train_loss) > 0) and np.all(np.asarray(eval_loss) > 0)


def test_valid_loss_does_not_change_the_training_keys():
  """With or without the inner-valid loss, an optimizer that ignores it trains on exactly the same batches."""
  curves = [jax.jit(training.make_run(_KeyProbe(), optax.sgd(0.1), 4, 2, use_valid_loss=v))(jax.random.key(1))[0]
            for v in (False, True)]
  np.testing.assert_array_equal(curves[0], curves[1])


def test_budget_must_be_a_multiple_of_the_evaluation_interval():
  with pytest.raises(ValueError, match='num_steps=10 must be a positive multiple of eval_every=3'):
    training.make_run(_KeyProbe(), optax.sgd(0.1), 10, 3)


def test_evaluation_imports_nothing_of_meta_training():
  """evaluation may depend on lopt and tasks only (the trainer depends on it, not the other way round)."""
  code = ('import sys, evaluation, evaluation.cli; '
          'bad = sorted(m for m in sys.modules if m.split(".")[0] == "meta_train"); assert not bad, bad')
  subprocess.run([sys.executable, '-c', code], check=True, cwd=pathlib.Path(__file__).parents[2])
