"""Training and test losses on fresh instances of a family (evaluation/generalization.py)."""

import numpy as np
import optax

from evaluation import generalization
from tasks import generated_classification as gc

FAMILY = gc.MLPClassifierFamily(3, (4,), batch_size=8, n_samples=16)


def test_shapes_and_the_gap_are_test_minus_train():
  losses = generalization.family_losses(optax.adam(1e-2), FAMILY, num_tasks=3, num_steps=20, eval_every=5)
  assert losses.train.shape == losses.test.shape == (3, 4)
  np.testing.assert_array_equal(losses.steps, [5, 10, 15, 20])
  assert np.all(np.isfinite(losses.train)) and np.all(np.isfinite(losses.test))
  np.testing.assert_allclose(losses.gap, losses.test - losses.train)
  summary = generalization.summarize(losses)
  assert summary['gap_mean'] == np.mean(losses.gap[:, -1])


def test_every_optimizer_sees_the_same_instances_and_tuning_prefers_a_useful_rate():
  # A learning rate of 0 leaves the initial parameters: the same for both calls (same instances, same init).
  a = generalization.family_losses(optax.sgd(0.0), FAMILY, num_tasks=2, num_steps=10)
  b = generalization.family_losses(optax.sgd(0.0), FAMILY, num_tasks=2, num_steps=10)
  np.testing.assert_array_equal(a.train, b.train)
  best, results = generalization.tune_learning_rate(optax.adam, FAMILY, [1e-8, 1e-1], num_tasks=2, num_steps=50)
  assert best == 1e-1 and set(results) == {1e-8, 1e-1}
  # Another seed draws other instances.
  c = generalization.family_losses(optax.sgd(0.0), FAMILY, num_tasks=2, num_steps=10, seed=1)
  assert not np.array_equal(a.train, c.train)
