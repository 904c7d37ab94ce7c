"""The validation suite, and the rule that meta-training, validation and test sets share no task or dataset."""

import math
import os

import jax
import numpy as np
import pytest

import meta_training_sets
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


@pytest.mark.parametrize('path', meta_training_sets.meta_training_configs(), ids=meta_training_sets.label)
def test_meta_training_sets_use_neither_suite(path):
  """Every committed config (configs/*.toml and runs/*/config.toml) but the paper reproductions: no task of either
  suite by name, no dataset but the generated images."""
  problems = meta_training_sets.problems_of(path)
  suites = set(validation.ALL_TASKS) | set(heldout.ALL_TASKS)
  assert not set(problems.names or ()) & suites
  for i, family in enumerate(problems.families):
    dataset = _dataset_of(family.task(family.sample(jax.random.key(0))))
    assert dataset is None or dataset == 'synthetic_images', (problems.names and problems.names[i], dataset)


def test_only_the_paper_reproductions_are_exempt_and_each_is_committed():
  configs = {os.path.basename(p) for p in meta_training_sets.config_paths()}
  assert set(meta_training_sets.PAPER_CONFIGS) <= configs
  checked = {meta_training_sets.label(p) for p in meta_training_sets.meta_training_configs()}
  assert 'configs/hrnn_shipped.toml' in checked and 'configs/hrnn_round3.toml' in checked
  assert len(checked) == len(meta_training_sets.config_paths()) - len(meta_training_sets.PAPER_CONFIGS)


def test_the_validation_suites_wichrowska_problems_are_in_no_meta_training_set():
  for config, names in meta_training_sets.named_problems().items():
    assert not set(names) & set(validation.WICHROWSKA_VALIDATION), config


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
