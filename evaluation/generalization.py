"""Training and test losses of optimizers on fresh instances of a task family: the generalization gap.

Issue 14 part C (Metz et al. 2020 report that validation-loss features act as an implicit regulariser) asks how far
the test loss of the inner problems ends up above their training loss, for a learned optimizer and for tuned Adam.
:func:`family_losses` trains ``num_tasks`` instances of a family, drawn from a PRNG stream no meta-training uses (a
``numpy`` generator seeded with ``[seed, 0x6E4E]``), every optimizer on the same instances, initial parameters and
minibatches, and records every ``eval_every`` steps the mean loss over ``num_eval_batches`` batches of the ``train``
split (batches of the instance's fixed training set, for the generated-data families) and of the ``test`` split
(fresh points). :func:`tune_learning_rate` picks the learning rate of a baseline on the same instances by the final
training loss, as the harness tunes its baselines (``docs/evaluation_protocol.md``).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from evaluation import training
from tasks.base import TaskFamily


class FamilyLosses(NamedTuple):
  """Losses of one optimizer on ``num_tasks`` instances, at ``steps`` (after that many updates).

  ``train`` and ``test``: float64 ``[num_tasks, len(steps)]``; ``gap = test - train``.
  """
  steps: np.ndarray
  train: np.ndarray
  test: np.ndarray

  @property
  def gap(self) -> np.ndarray:
    return self.test - self.train


def instance_keys(seed: int, num_tasks: int) -> tuple[jax.Array, jax.Array]:
  """``(sample_keys, run_keys)``, each ``[num_tasks]``, from a stream disjoint from meta-training's ``jax.random``."""
  rng = np.random.default_rng([seed, 0x6E4E])
  base = jax.random.key(int(rng.integers(2**31)))
  sample_key, run_key = jax.random.split(base)
  return jax.random.split(sample_key, num_tasks), jax.random.split(run_key, num_tasks)


def family_losses(tx: optax.GradientTransformation, family: TaskFamily, *, num_tasks: int, num_steps: int,
                  eval_every: int | None = None, num_eval_batches: int = 8, seed: int = 0,
                  use_valid_loss: bool = False) -> FamilyLosses:
  """Trains ``num_tasks`` fresh instances of ``family`` with ``tx`` for ``num_steps``; see the module docstring.

  ``eval_every`` defaults to ``num_steps`` (final losses only); ``use_valid_loss`` passes the inner-valid loss as
  ``valid_value=`` at every step (for optimizers meta-trained with validation features).
  """
  eval_every = eval_every or num_steps
  sample_keys, run_keys = instance_keys(seed, num_tasks)

  @jax.jit
  def run_all(sample_keys, run_keys):
    def one(sample_key, run_key):
      task = family.task(family.sample(sample_key))
      run = training.make_run(task, tx, num_steps, eval_every, eval_splits=('train', 'test'),
                              num_eval_batches=num_eval_batches, use_valid_loss=use_valid_loss)
      return run(run_key)[1]
    return jax.vmap(one)(sample_keys, run_keys)

  evals = np.asarray(run_all(sample_keys, run_keys), np.float64)  # [num_tasks, num_evals, 2]
  steps = np.arange(1, num_steps // eval_every + 1) * eval_every
  return FamilyLosses(steps=steps, train=evals[..., 0], test=evals[..., 1])


def tune_learning_rate(make_tx: Callable[[float], optax.GradientTransformation], family: TaskFamily,
                       learning_rates: Sequence[float], **kwargs) -> tuple[float, dict[float, FamilyLosses]]:
  """The learning rate of ``make_tx`` with the lowest mean final log training loss over the instances of
  :func:`family_losses` (``kwargs``), and every rate's losses. A rate with a non-finite final loss never wins."""
  results, scores = {}, {}
  for lr in learning_rates:
    results[lr] = family_losses(make_tx(lr), family, **kwargs)
    final = results[lr].train[:, -1]
    scores[lr] = float(np.mean(np.log(final))) if np.all(np.isfinite(final)) and np.all(final > 0) else math.inf
  best = min(learning_rates, key=lambda lr: scores[lr])
  return best, results


def summarize(losses: FamilyLosses) -> dict[str, float]:
  """Means and standard deviations over instances of the final train loss, test loss and gap."""
  out = {}
  for name, values in (('train', losses.train[:, -1]), ('test', losses.test[:, -1]), ('gap', losses.gap[:, -1])):
    out[f'{name}_mean'] = float(np.mean(values))
    out[f'{name}_std'] = float(np.std(values))
  return out


__all__ = ['FamilyLosses', 'family_losses', 'instance_keys', 'summarize', 'tune_learning_rate']
del jnp
