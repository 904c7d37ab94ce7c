"""Does the learned optimizer keep learning? Per-tensor learning rates and training loss over a long run.

The hierarchical RNN's short-horizon failure is a learning rate that collapses once the loss flattens: the
per-parameter log learning rate ``l`` (its state) drifts down at every step until steps vanish. This script trains
validation-suite tasks (never test tasks) for ``--steps`` steps (default 5,000) with a hierarchical RNN and with
Adam tuned on the same horizon, and plots per task:

* the training loss of both (a 50-step running mean over ``--seeds`` seeds, the raw seed mean faint), and
* the HRNN's per-tensor learning rate ``exp(mean over the tensor of l)`` and the RMS of each tensor's update,
  next to tuned Adam's update RMS, so a collapse shows as a line falling by orders of magnitude.

    python -m benchmarks.learning_rate_trace --out docs/img/hrnn_lr_trace.png
    python -m benchmarks.learning_rate_trace --optimizer runs/x/final.npz --tasks patches8_mlp_64 --steps 2000

It prints, per task, the loss at a few checkpoints and the fraction of the last 20% of steps in which each
optimizer's smoothed loss still fell (a stalled optimizer is near 0.5, noise).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lopt
from evaluation import harness, validation
from lopt import brakes

DEFAULT_TASKS = ('patches8_mlp_64', 'diabetes_mlp', 'patches16_mlp_tanh')
LR_GRID = tuple(float(v) for v in 10.0 ** np.arange(-5, 0.01, 0.5))
SMOOTHING = 50


def _trace(task, tx, num_steps: int, key, record_lr: bool):
  """Per-step loss, per-tensor update RMS and (HRNN) per-tensor mean log learning rate, for one seed."""
  def step(carry, key):
    params, state = carry
    batch_key, loss_key = jax.random.split(key)
    loss, grads = jax.value_and_grad(task.loss)(params, loss_key, task.batch(batch_key, 'train'))
    updates, state = tx.update(grads, state, params, value=loss)
    update_rms = jnp.stack([jnp.sqrt(jnp.mean(u ** 2)) for u in jax.tree.leaves(updates)])
    if record_lr:
      sizes = [int(np.prod(np.shape(p))) for p in jax.tree.leaves(params)]
      offsets = np.cumsum([0] + sizes)
      log_lr = jnp.stack([jnp.mean(brakes.unwrap(state).log_lr[a:b]) for a, b in zip(offsets[:-1], offsets[1:])])
    else:
      log_lr = jnp.zeros(len(jax.tree.leaves(params)))
    return (optax.apply_updates(params, updates), state), (loss, update_rms, log_lr)

  init_key, run_key = jax.random.split(key)
  params = task.init(init_key)
  _, out = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(run_key, num_steps))
  return out


def _smooth(x: np.ndarray) -> np.ndarray:
  k = min(SMOOTHING, len(x))
  return np.convolve(x, np.ones(k) / k, mode='valid')


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--optimizer', default=None, help='a lopt.save file of a HierarchicalRNN (default: shipped)')
  parser.add_argument('--tasks', default=','.join(DEFAULT_TASKS), help='validation-suite task names')
  parser.add_argument('--steps', type=int, default=5000)
  parser.add_argument('--seeds', type=int, default=2)
  parser.add_argument('--out', default='lr_trace.png', help='PNG path')
  args = parser.parse_args(argv)

  if args.optimizer:
    arch, meta = lopt.load(args.optimizer)
  else:
    arch, meta = lopt.load_pretrained('hierarchical_rnn')
  if not isinstance(arch, lopt.HierarchicalRNN):
    parser.error(f'--optimizer must hold a HierarchicalRNN, got {type(arch).__name__}.')
  hrnn = arch.transform(meta)
  entries = validation.validation_suite(args.tasks.split(','), num_steps=args.steps)
  keys = jax.random.split(jax.random.PRNGKey(0), args.seeds)

  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, len(entries), figsize=(5 * len(entries), 7.5), squeeze=False)
  for column, entry in enumerate(entries):
    eval_every = max(1, args.steps // 10)
    tuned = harness.run_optimizer(entry.task, harness.OptimizerSpec('adam', optax.adam, LR_GRID), args.steps,
                                  seeds=1, eval_every=eval_every, with_test=False)
    adam = optax.adam(tuned.learning_rate)

    def run(tx, record_lr, task=entry.task):
      return jax.jit(jax.vmap(lambda k: _trace(task, tx, args.steps, k, record_lr)))(keys)

    h_loss, h_rms, h_lr = (np.asarray(x) for x in run(hrnn, True))
    a_loss, a_rms, _ = (np.asarray(x) for x in run(adam, False))

    ax = axes[0, column]
    steps = np.arange(1, args.steps + 1)
    for name, loss, colour in (('HRNN', h_loss, 'C0'), (f'Adam, tuned lr {tuned.learning_rate:.0e}', a_loss, 'C1')):
      mean = loss.mean(0)
      ax.plot(steps, mean, color=colour, alpha=0.2, lw=0.5)
      ax.plot(steps[SMOOTHING - 1:], _smooth(mean), color=colour, label=name)
    if np.all(h_loss > 0) and np.all(a_loss > 0):
      ax.set_yscale('log')
    ax.set(title=entry.name, xlabel='step', ylabel=f'training loss (mean of {args.seeds} seeds)')
    ax.legend(fontsize=8)

    ax = axes[1, column]
    for t in range(h_lr.shape[-1]):
      ax.plot(steps, np.exp(h_lr[..., t].mean(0)), color='C0', lw=1, alpha=0.8,
              label='HRNN learning rate exp(l), per tensor' if t == 0 else None)
      ax.plot(steps, h_rms[..., t].mean(0), color='C2', lw=0.6, alpha=0.6,
              label='HRNN update RMS, per tensor' if t == 0 else None)
      ax.plot(steps, a_rms[..., t].mean(0), color='C1', lw=0.6, alpha=0.6,
              label='tuned Adam update RMS, per tensor' if t == 0 else None)
    ax.set_yscale('log')
    ax.set(xlabel='step', ylabel='per-tensor step size')
    ax.legend(fontsize=7)

    tail = slice(int(0.8 * args.steps), None)
    for name, loss in (('hrnn', h_loss), ('adam_tuned', a_loss)):
      smooth = _smooth(loss.mean(0))
      falling = float(np.mean(np.diff(smooth[tail]) < 0))
      marks = ' '.join(f'{s}:{loss.mean(0)[max(0, s - SMOOTHING):s].mean():.4g}'
                       for s in (500, 1000, 2000, args.steps) if s <= args.steps)
      print(f'{entry.name:22s} {name:10s} loss at {marks}   smoothed loss falling in {falling:.0%} of the last 20% '
            f'of steps', flush=True)
  fig.suptitle(f'{os.path.basename(args.optimizer) if args.optimizer else "shipped HRNN"} against per-task tuned Adam, {args.steps} steps '
               f'(validation tasks)')
  fig.tight_layout()
  fig.savefig(args.out, dpi=90)
  print(f'wrote {args.out}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
