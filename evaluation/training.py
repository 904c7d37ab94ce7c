"""The inner training loop every evaluation runs: one task, one optax optimizer, ``num_steps`` steps.

Both the harness (:mod:`evaluation.harness`, learning curves against tuned baselines) and the trainer's periodic
health check (:mod:`evaluation.periodic`) train through :func:`make_run`, so the two always measure the same thing.

One step at parameters :math:`\\theta_t` with the step's key :math:`k_t`::

    k_batch, k_loss = split(k_t)
    L_t, g_t = value_and_grad(loss)(theta_t, k_loss, batch(k_batch, 'train'))
    updates, state = tx.update(g_t, state, theta_t, value=L_t [, valid_value=V_t])
    theta_{t+1} = theta_t + updates

The batch and the loss get different keys: a task whose loss draws noise from its key (dropout, gradient noise)
would otherwise draw noise correlated with the very batch it is evaluated on. With ``use_valid_loss`` the
inner-validation loss :math:`V_t` (optimizers with validation features read it; every other ``tx`` ignores unknown
keyword arguments) is measured on a batch and loss key drawn from ``fold_in(k_t, 1)``, again split in two, so the
training keys above do not depend on whether it is used.

Every ``eval_every`` steps the parameters (mapped through ``eval_params`` for schedule-free methods, which evaluate
at a different point than they train) are evaluated on each split of ``eval_splits``, averaging
``num_eval_batches`` fresh batches, each with its own batch and loss keys.

The returned function is pure, so callers ``jax.vmap`` it over seeds, learning rates or task instances and
``jax.jit`` it once.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from tasks.base import Task

#: Changes whenever the loop computes other numbers from the same inputs; the harness's baseline cache keys on it, so
#: results of an older loop are recomputed instead of reused. (2: the evaluation batch and loss got different keys.)
LOOP_VERSION = 2


def with_extra_args(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``tx`` accepting (and ignoring, if it has no use for them) keyword arguments such as ``value=``."""
  if isinstance(tx, optax.GradientTransformationExtraArgs):
    return tx
  return optax.with_extra_args_support(tx)


def loss_on_fresh_batch(task: Task, params, key: jax.Array, split: str) -> jax.Array:
  """The loss of ``params`` on one batch of ``split``; the batch and the loss get different keys."""
  batch_key, loss_key = jax.random.split(key)
  return task.loss(params, loss_key, task.batch(batch_key, split))


def make_step(task: Task, tx: optax.GradientTransformation, *, use_valid_loss: bool = False
              ) -> Callable[[tuple, jax.Array], tuple[tuple, jax.Array]]:
  """One training step (module docstring) as ``step((params, opt_state), key) -> ((params, opt_state), loss)``,
  the body of :func:`make_run`'s scan; ``loss`` is the minibatch loss before the update."""
  tx = with_extra_args(tx)

  def one_step(carry, key):
    params, opt_state = carry
    batch_key, loss_key = jax.random.split(key)
    loss, grads = jax.value_and_grad(task.loss)(params, loss_key, task.batch(batch_key, 'train'))
    extra = {}
    if use_valid_loss:
      extra['valid_value'] = loss_on_fresh_batch(task, params, jax.random.fold_in(key, 1), 'inner_valid')
    updates, opt_state = tx.update(grads, opt_state, params, value=loss, **extra)
    return (optax.apply_updates(params, updates), opt_state), loss

  return one_step


def make_run(task: Task, tx: optax.GradientTransformation, num_steps: int, eval_every: int,
             eval_splits: Sequence[str] = ('test',), *, eval_params: Callable | None = None,
             num_eval_batches: int = 1, use_valid_loss: bool = False
             ) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
  """Builds ``run(key) -> (train_loss[num_steps], eval_loss[num_steps // eval_every, len(eval_splits)])``.

  ``train_loss[t]`` is the minibatch loss at the parameters *before* step ``t``'s update; ``eval_loss[i, j]`` the
  mean over ``num_eval_batches`` batches of split ``eval_splits[j]`` after ``(i + 1) * eval_every`` steps.

  Raises:
    ValueError: when ``num_steps`` is not a positive multiple of ``eval_every``.
  """
  if num_steps < 1 or eval_every < 1 or num_steps % eval_every:
    raise ValueError(f'num_steps={num_steps} must be a positive multiple of eval_every={eval_every}.')
  tx = with_extra_args(tx)
  num_evals = num_steps // eval_every

  def evaluate(params, opt_state, key):
    if eval_params is not None:
      params = eval_params(opt_state, params)
    losses = []
    for split, split_key in zip(eval_splits, jax.random.split(key, len(eval_splits))):
      keys = jax.random.split(split_key, num_eval_batches)
      losses.append(jnp.mean(jax.vmap(lambda k, s=split: loss_on_fresh_batch(task, params, k, s))(keys)))
    return jnp.stack(losses)

  one_step = make_step(task, tx, use_valid_loss=use_valid_loss)

  def one_chunk(carry, key):
    step_key, eval_key = jax.random.split(key)
    carry, losses = jax.lax.scan(one_step, carry, jax.random.split(step_key, eval_every))
    return carry, (losses, evaluate(*carry, eval_key))

  def run(key):
    init_key, run_key = jax.random.split(key)
    params = task.init(init_key)
    carry = (params, tx.init(params))
    _, (losses, evals) = jax.lax.scan(one_chunk, carry, jax.random.split(run_key, num_evals))
    return losses.reshape(-1), evals

  return run
