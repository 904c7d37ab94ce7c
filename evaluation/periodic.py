"""Periodic evaluation during meta-training: the current learned optimizer against Adam on held-out tasks.

A quick health check, not the benchmark (that is :mod:`evaluation.harness`). ``num_tasks`` tasks are sampled once,
with a PRNG stream the training never uses, from the training families; every evaluation trains each of them for
``num_steps`` steps twice from the same initial parameters and with the same minibatches: once with the learned
optimizer at the current meta-parameters, once with ``optax.adam(adam_learning_rate)``. Reported, as means over the
tasks:

* ``lopt_final_train_loss`` / ``adam_final_train_loss``: training loss after the last step, on a fresh batch;
* ``lopt_final_test_loss`` / ``adam_final_test_loss``: the same on the ``test`` split;
* ``lopt_win_rate``: fraction of tasks where the learned optimizer's final training loss is lower (a diverged run,
  NaN, never wins);
* ``lopt_vs_adam_log_ratio``: mean of ``log(lopt / adam)`` final training loss over the tasks where both are
  positive and finite (scale-free across tasks; negative means the learned optimizer is ahead).

Each family is one jitted, vmapped ``lax.scan`` (the loop of :mod:`evaluation.training`, shared with the harness)
compiled once and reused at every evaluation. The trainer (:mod:`meta_train`) builds it through
:func:`make_evaluator`; this package imports nothing of meta-training.
"""

from __future__ import annotations

import collections
from typing import Callable, Sequence

import jax
import numpy as np
import optax

from evaluation import training
from lopt.base import LearnedOptimizer
from tasks.base import TaskFamily


def _train_final_losses(tx: optax.GradientTransformation, family: TaskFamily, cfg, key: jax.Array,
                        num_steps: int, use_valid_loss: bool) -> tuple[jax.Array, jax.Array]:
  """Trains the task of ``cfg`` for ``num_steps`` with ``tx`` (:func:`evaluation.training.make_run`); returns its
  final (train, test) losses, each on one fresh batch."""
  run = training.make_run(family.task(cfg), tx, num_steps, eval_every=num_steps, eval_splits=('train', 'test'),
                          use_valid_loss=use_valid_loss)
  _, final = run(key)
  return final[0, 0], final[0, 1]


def make_evaluator(architecture: LearnedOptimizer, families: Sequence[TaskFamily], *, num_tasks: int,
                   num_steps: int, adam_learning_rate: float,
                   seed: int = 0, use_valid_loss: bool = False) -> Callable[[object], dict[str, float]]:
  """Returns ``evaluate(meta_params) -> dict`` of the metrics in the module docstring.

  ``families``: the training families (one, or the structure groups of a problem set). The held-out tasks, their
  families and their keys are fixed here from ``seed`` so that successive evaluations are comparable.
  ``use_valid_loss``: pass the inner-valid loss as ``valid_value=`` at every step, as meta-training did.
  """
  if not families:
    raise ValueError('make_evaluator needs at least one task family.')
  rng = np.random.default_rng([seed, 0x5EED_E7A1])  # a stream disjoint from training's jax.random keys
  picks = collections.Counter(int(i) for i in rng.integers(len(families), size=num_tasks))
  base_key = jax.random.key(int(rng.integers(2**31)))
  adam = optax.adam(adam_learning_rate)

  groups = []
  for index, count in sorted(picks.items()):
    family = families[index]
    sample_key, run_key = jax.random.split(jax.random.fold_in(base_key, index))

    def run_group(meta_params, sample_key, run_key, family=family, count=count):
      # Sampling inside the jit: building an evaluator costs nothing until its first use.
      cfgs = jax.vmap(family.sample)(jax.random.split(sample_key, count))

      def both(cfg, key):
        lopt = _train_final_losses(architecture.transform(meta_params), family, cfg, key, num_steps, use_valid_loss)
        base = _train_final_losses(adam, family, cfg, key, num_steps, False)
        return lopt, base
      return jax.vmap(both)(cfgs, jax.random.split(run_key, count))

    groups.append((jax.jit(run_group), sample_key, run_key))

  def evaluate(meta_params) -> dict[str, float]:
    outs = [fn(meta_params, sample_key, run_key) for fn, sample_key, run_key in groups]
    (lt, ls), (at, as_) = [[np.concatenate([np.asarray(o[i][j], np.float64) for o in outs]) for j in range(2)]
                           for i in range(2)]
    both_positive = np.isfinite(lt) & np.isfinite(at) & (lt > 0) & (at > 0)
    return {
        'lopt_final_train_loss': float(np.mean(lt)),
        'adam_final_train_loss': float(np.mean(at)),
        'lopt_final_test_loss': float(np.mean(ls)),
        'adam_final_test_loss': float(np.mean(as_)),
        'lopt_win_rate': float(np.mean(lt < at)),
        'lopt_vs_adam_log_ratio': (float(np.mean(np.log(lt[both_positive] / at[both_positive])))
                                   if both_positive.any() else float('nan')),
    }

  return evaluate
