"""The validation suite, and the rule that meta-training, validation and test sets share no task or dataset."""

import importlib
import math

import jax
import numpy as np
import pytest

import tasks
from evaluation import heldout, validation


def _dataset_of(task) -> str | None:
  """The dataset a network task trains on (None for a synthetic landscape)."""
  inner = getattr(task, 'dataset', None)
  if inner is None:
    return None
  name = inner if isinstance(inner, str) else inner.name
  for prefix in ('image_patches', 'synthetic_images', 'fashion_mnist'):
    if name.startswith(prefix):
      return prefix
  return name


@pytest.fixture(scope='module')
def validation_entries():
  return validation.validation_suite()


def test_validation_and_test_suites_share_no_task_and_no_dataset(validation_entries):
  assert not set(validation.ALL_TASKS) & set(heldout.ALL_TASKS)
  assert not set(validation.DATASETS) & set(heldout.DATASETS)
  assert not set(validation.WICHROWSKA_VALIDATION) & set(heldout.WICHROWSKA_HELDOUT)
  for entry in validation_entries:
    dataset = _dataset_of(entry.task)
    assert dataset is None or dataset in validation.DATASETS, (entry.name, dataset)
  # The test suite's networks: every non-Fashion one is built without files, so check them here too.
  for entry in heldout.heldout_suite([n for n in heldout.ALL_TASKS if not n.startswith('fashion_mnist')]):
    dataset = _dataset_of(entry.task)
    assert dataset is None or dataset in heldout.DATASETS, (entry.name, dataset)


@pytest.mark.parametrize('make', [tasks.hrnn_training_set, tasks.hrnn_training_set_v2, tasks.hrnn_training_set_v3,
                                  tasks.mlp_lopt_training_set,
                                  lambda: importlib.import_module('configs.hrnn_round3_problems').training_set()])
def test_meta_training_sets_use_neither_suite(make):
  problems = make()
  assert not set(problems) & (set(validation.ALL_TASKS) | set(heldout.ALL_TASKS))
  for name in problems:
    task = problems[name].task(problems[name].sample(jax.random.key(0)))
    dataset = _dataset_of(task)
    assert dataset is None or dataset == 'synthetic_images', (name, dataset)


@pytest.mark.parametrize('name', validation.ALL_TASKS)
def test_every_validation_task_has_a_finite_loss_and_gradient_and_is_fixed(name):
  (entry,) = validation.validation_suite([name])
  params = entry.task.init(jax.random.key(1))
  batch = entry.task.batch(jax.random.key(2), 'train')
  loss, grads = jax.value_and_grad(entry.task.loss)(params, jax.random.key(3), batch)
  assert math.isfinite(float(loss))
  assert all(bool(np.all(np.isfinite(g))) for g in jax.tree.leaves(grads))
  (again,) = validation.validation_suite([name])
  assert float(again.task.loss(params, jax.random.key(3), again.task.batch(jax.random.key(2), 'train'))) == float(
      loss)


def test_unknown_validation_task_and_bad_budget_are_named():
  with pytest.raises(ValueError, match="unknown validation task 'digits_mlp'.*patches8_mlp_64"):
    validation.validation_suite(['digits_mlp'])
  with pytest.raises(ValueError, match='num_steps must be >= 1'):
    validation.validation_suite(['wine_mlp'], num_steps=0)
