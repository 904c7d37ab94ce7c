"""Meta-objectives: what a truncation of inner training is scored by.

The meta-loss of a truncation of ``T`` inner steps is a weighted sum of per-step values::

    L = sum_t w_t * v_t,        v_t = objective.step_value(task, train_loss_t, eval_losses_t, start_loss)
                                w   = objective.step_weights(T)

* ``train_loss_t`` is the minibatch training loss at the parameters *before* step ``t``'s update (the loss the inner
  optimizer receives as ``value=``; it costs nothing extra);
* ``eval_losses_t`` are ``num_eval_batches`` losses on batches of ``eval_split`` at the parameters *after* the update
  (only computed when ``eval_split`` is not ``None``);
* ``start_loss`` is the training loss at the first step of the instance's current episode.

Writing the objective as per-step values with static weights is what lets PES split a truncation at an episode
boundary (docs/algorithms.md §8.4, §10.1): the steps before and after the boundary are weighted sums over disjoint
sets of steps.

Objectives:

* :class:`LogNormalizedTrainLoss`: Wichrowska et al. 2017's mean log normalised training loss
  (docs/algorithms.md §10.2);
* :class:`ClippedOuterValidLoss`: Metz et al. 2019's mean clipped loss on the outer-validation split
  (docs/algorithms.md §10.3);
* :class:`FinalLoss`: the loss after the last step of the truncation.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import SPLITS, Task


class MetaObjective(abc.ABC):
  """Per-step values and their weights. Subclasses set ``eval_split``/``num_eval_batches`` if they need them."""

  #: the split evaluated after every update, or ``None`` if only the training loss is used.
  eval_split: str | None = None
  #: how many batches of ``eval_split`` are averaged per step.
  num_eval_batches: int = 0

  @abc.abstractmethod
  def step_value(self, task: Task, train_loss: jax.Array, eval_losses: jax.Array | None,
                 start_loss: jax.Array) -> jax.Array:
    """The scalar value of one inner step (``eval_losses`` has shape ``[num_eval_batches]`` or is ``None``)."""

  @abc.abstractmethod
  def step_weights(self, num_steps: int) -> np.ndarray:
    """Static float32 weights of the ``num_steps`` per-step values of a truncation."""


def _mean_weights(num_steps: int) -> np.ndarray:
  return np.full((num_steps,), 1.0 / num_steps, np.float32)


class LogNormalizedTrainLoss(MetaObjective):
  """Mean log of the training loss normalised by the loss at the start of the episode (Wichrowska et al. 2017).

      v_t = log( max(f_t, 0) / (f_0 + eps) + eps ),      L = (1/T) sum_t v_t

  with ``f_t`` the training loss before step ``t``'s update and ``f_0`` the training loss at the episode's first step
  (held constant, as in ``TrainableOptimizer.train``'s ``scale_objective``). The log makes every task's contribution
  scale-free. The original needs losses >= 0; a negative loss is clamped to 0 here (giving ``log(eps)``) rather than
  producing a NaN. The original uses the full-dataset loss for ``f_t``; we use the minibatch loss the optimizer sees.

  Args:
    epsilon: the ``1e-6`` of the paper, in both the denominator and inside the log.
  """

  def __init__(self, epsilon: float = 1e-6):
    if not epsilon > 0:
      raise ValueError(f'LogNormalizedTrainLoss: epsilon must be > 0, got {epsilon!r}.')
    self.epsilon = float(epsilon)

  def step_value(self, task, train_loss, eval_losses, start_loss):
    del task, eval_losses
    ratio = jnp.maximum(train_loss, 0.0) / (jax.lax.stop_gradient(start_loss) + self.epsilon)
    return jnp.log(ratio + self.epsilon)

  def step_weights(self, num_steps):
    return _mean_weights(num_steps)

  def __repr__(self):
    return f'LogNormalizedTrainLoss(epsilon={self.epsilon})'


class ClippedOuterValidLoss(MetaObjective):
  """Mean clipped loss on the outer-validation split (Metz et al. 2019, ``DeterministicMetaLossEvaluator``).

      v_t = (1/J) sum_j min( normalizer(l_outer(phi_t; batch_tj)), clip ),      L = (1/T) sum_t v_t

  where ``phi_t`` are the inner parameters after step ``t`` and ``J = num_batches``. Clipping bounds the meta-loss of
  a diverging instance (its gradient is zero above the clip). ``normalizer`` is the task's own
  :meth:`tasks.Task.normalizer` (identity for most tasks), which puts mixed tasks on one scale.

  Args:
    clip: the upper clip of each loss (10 in the paper).
    num_batches: outer-valid batches per step (``meta_loss_evals = 5`` in the paper; each costs one forward pass).
  """

  eval_split = 'outer_valid'

  def __init__(self, clip: float = 10.0, num_batches: int = 5):
    if not clip > 0:
      raise ValueError(f'ClippedOuterValidLoss: clip must be > 0, got {clip!r}.')
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
      raise ValueError(f'ClippedOuterValidLoss: num_batches must be an integer >= 1, got {num_batches!r}.')
    self.clip = float(clip)
    self.num_eval_batches = num_batches

  def step_value(self, task, train_loss, eval_losses, start_loss):
    del train_loss, start_loss
    return jnp.mean(jnp.minimum(task.normalizer(eval_losses), self.clip))

  def step_weights(self, num_steps):
    return _mean_weights(num_steps)

  def __repr__(self):
    return f'ClippedOuterValidLoss(clip={self.clip}, num_batches={self.num_eval_batches})'


class FinalLoss(MetaObjective):
  """The loss after the truncation's last update: ``L = (1/J) sum_j normalizer(l_split(phi_T; batch_j))``.

  Only the last step carries weight; the per-step evaluation still runs every step (a ``lax.scan`` body is the same
  at every step), costing ``num_batches`` forward passes per step.

  Args:
    split: the data split the final loss is measured on: one of ``tasks.SPLITS`` (default ``'train'``).
    num_batches: batches averaged (>= 1).
  """

  def __init__(self, split: str = 'train', num_batches: int = 1):
    if split not in SPLITS:
      raise ValueError(f'FinalLoss: unknown split {split!r}; use one of {SPLITS}.')
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
      raise ValueError(f'FinalLoss: num_batches must be an integer >= 1, got {num_batches!r}.')
    self.eval_split = split
    self.num_eval_batches = num_batches

  def step_value(self, task, train_loss, eval_losses, start_loss):
    del train_loss, start_loss
    return jnp.mean(task.normalizer(eval_losses))

  def step_weights(self, num_steps):
    weights = np.zeros((num_steps,), np.float32)
    weights[-1] = 1.0
    return weights

  def __repr__(self):
    return f'FinalLoss(split={self.eval_split!r}, num_batches={self.num_eval_batches})'
