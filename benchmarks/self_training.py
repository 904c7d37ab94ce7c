"""Issue 14 parts B and C (Metz et al. 2020): meta-training curves of several runs in one figure, and the training
and test losses their optimizers reach on fresh instances of the runs' task family, against Adam (docs/self_training.md).

    python -m benchmarks.self_training curves --out docs/img/self_training_curves.png \
        'tuned Adam=runs/self_training_adam_tuned' 'Adam 1e-3=runs/self_training_adam_1e-3' 'HRNN=runs/...'
    python -m benchmarks.self_training family --out runs/self_training_family.json --num-tasks 32 --steps 50,200 \
        'tuned Adam=runs/self_training_adam_tuned' ...

``curves`` plots each run's ``metrics.jsonl`` meta-loss against the meta-step: the raw records faint, an exponential
moving average (:func:`smooth`) on top. ``family`` loads each run's ``final.npz`` and its ``config.toml``'s task family,
trains ``--num-tasks`` fresh instances (:mod:`evaluation.generalization`, the same instances for every optimizer) for
each budget of ``--steps`` (or, with ``--task NAME``, runs a validation-suite task from ``--num-tasks``
initializations), and adds Adam at 1e-3 and Adam tuned over half-decades 1e-4..1 on those instances (by
final training loss). Runs meta-trained with ``use_valid_loss`` get the inner-validation loss at every step, as in
meta-training. The JSON holds per-optimizer final train / test losses and gaps, per instance and summarised.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import optax

#: Adam's tuning grid on the family: half-decades 1e-4..1.
ADAM_GRID = tuple(float(f'{10 ** (e / 2):.0e}') if e % 2 else 10.0 ** (e // 2) for e in range(-8, 1))


def smooth(values, decay: float = 0.9) -> np.ndarray:
  """Bias-corrected exponential moving average of ``values`` (non-finite values are skipped, carrying the average)."""
  values = np.asarray(values, np.float64)
  out, mean, weight = np.empty_like(values), 0.0, 0.0
  for i, v in enumerate(values):
    if np.isfinite(v):
      mean, weight = decay * mean + (1 - decay) * v, decay * weight + (1 - decay)
    out[i] = mean / weight if weight > 0 else np.nan
  return out


def read_metrics(run_dir: str, key: str = 'meta_loss') -> tuple[np.ndarray, np.ndarray]:
  """``(steps, values)`` of ``key`` in ``run_dir/metrics.jsonl`` (records without it are skipped)."""
  steps, values = [], []
  with open(os.path.join(run_dir, 'metrics.jsonl'), encoding='utf-8') as f:
    for line in f:
      record = json.loads(line)
      if key in record:
        steps.append(record['step'])
        values.append(record[key])
  return np.asarray(steps), np.asarray(values, np.float64)


def plot_curves(runs: dict[str, str], out: str, title: str = '', decay: float = 0.9, key: str = 'meta_loss') -> None:
  """One figure: each run's ``key`` against the meta-step, raw faint and smoothed."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=90)
  for i, (label, run_dir) in enumerate(runs.items()):
    steps, values = read_metrics(run_dir, key)
    color = f'C{i}'
    ax.plot(steps, values, color=color, alpha=0.25, lw=0.8)
    ax.plot(steps, smooth(values, decay), color=color, lw=2.0, label=label)
  ax.set_xlabel('meta-step')
  ax.set_ylabel(key.replace('_', ' ') + ' (lower is better)')
  if title:
    ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out)
  plt.close(fig)


def plot_gaps(panels: dict[str, dict[str, list[tuple[float, float]]]], out: str, title: str = '') -> None:
  """One panel per entry of ``panels`` (a title -> {label: [(train, test), ...] one pair per seed}): each seed's
  final training loss (open) and test loss (filled) per label, joined by a line whose length is the gap."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.6, 3.6), dpi=100, squeeze=False)
  for ax, (panel, entries) in zip(axes[0], panels.items()):
    for i, (label, pairs) in enumerate(entries.items()):
      offsets = np.linspace(-0.15, 0.15, len(pairs)) if len(pairs) > 1 else [0.0]
      for j, ((train, test), dx) in enumerate(zip(pairs, offsets)):
        ax.plot([i + dx, i + dx], [train, test], color=f'C{i}', lw=1.2)
        ax.plot(i + dx, train, 'o', mfc='white', color=f'C{i}', ms=5, label='train' if i == j == 0 else None)
        ax.plot(i + dx, test, 'o', color=f'C{i}', ms=5, label='test' if i == j == 0 else None)
    ax.set_xticks(range(len(entries)), list(entries), fontsize=8)
    ax.set_xlim(-0.6, len(entries) - 0.4)
    ax.set_title(panel, fontsize=9)
    ax.set_ylabel('final loss')
    ax.grid(alpha=0.3, axis='y')
  axes[0][0].legend(fontsize=8, loc='best')
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out)
  plt.close(fig)


def _run_optimizer(run_dir: str):
  """``(optax transformation, task families, use_valid_loss)`` of a run's ``final.npz`` and ``config.toml``."""
  import lopt  # pylint: disable=import-outside-toplevel
  from meta_train.run import build, config as config_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.load(os.path.join(run_dir, 'config.toml'))
  architecture, meta_params = lopt.load(os.path.join(run_dir, 'final.npz'))
  families = build.build_families(config.tasks, config.run.seed)
  return architecture.transform(meta_params), families, bool(config.estimator.kwargs.get('use_valid_loss', False))


def validation_family(name: str):
  """The validation-suite task ``name`` as a one-task family (instances differ in initialization and batches)."""
  from evaluation import validation  # pylint: disable=import-outside-toplevel
  from tasks.base import SingleTaskFamily  # pylint: disable=import-outside-toplevel
  (entry,) = validation.validation_suite([name])
  return SingleTaskFamily(entry.task)


def family_eval(runs: dict[str, str], budgets, num_tasks: int, seed: int = 0, adam_grid=ADAM_GRID,
                family=None) -> dict:
  """Final train / test losses on fresh instances of ``family`` (default: the first run's family), per optimizer
  and budget."""
  from evaluation import generalization  # pylint: disable=import-outside-toplevel
  optimizers = {label: _run_optimizer(run_dir) for label, run_dir in runs.items()}
  family = family or next(iter(optimizers.values()))[1][0]
  result = {'family': repr(family), 'num_tasks': num_tasks, 'seed': seed, 'budgets': {}}
  for steps in budgets:
    kwargs = dict(num_tasks=num_tasks, num_steps=steps, seed=seed)
    entries = {}
    best_lr, tuned = generalization.tune_learning_rate(optax.adam, family, adam_grid, **kwargs)
    baselines = {f'Adam tuned ({best_lr:g})': tuned[best_lr],
                 'Adam 1e-3': tuned[1e-3] if 1e-3 in tuned else generalization.family_losses(optax.adam(1e-3), family,
                                                                                               **kwargs)}
    for label, (tx, _, use_valid) in optimizers.items():
      entries[label] = generalization.family_losses(tx, family, use_valid_loss=use_valid, **kwargs)
    entries.update(baselines)
    result['budgets'][str(steps)] = {
        'adam_tuned_lr': best_lr,
        'optimizers': {label: {**generalization.summarize(losses),
                               'train': losses.train[:, -1].tolist(), 'test': losses.test[:, -1].tolist()}
                       for label, losses in entries.items()}}
  return result


def _labelled(specs) -> dict[str, str]:
  out = {}
  for spec in specs:
    label, sep, path = spec.partition('=')
    out[label if sep else os.path.basename(spec.rstrip('/'))] = path if sep else spec
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
  sub = parser.add_subparsers(dest='command', required=True)
  curves = sub.add_parser('curves', help='meta-training curves of several runs in one figure')
  curves.add_argument('runs', nargs='+', help='LABEL=RUN_DIR or RUN_DIR')
  curves.add_argument('--out', required=True)
  curves.add_argument('--title', default='')
  curves.add_argument('--decay', type=float, default=0.9)
  family = sub.add_parser('family', help='train / test losses on fresh instances of the runs\' family')
  family.add_argument('runs', nargs='+', help='LABEL=RUN_DIR or RUN_DIR')
  family.add_argument('--out', required=True)
  family.add_argument('--num-tasks', type=int, default=32)
  family.add_argument('--steps', default='50', help='comma-separated step budgets')
  family.add_argument('--seed', type=int, default=0)
  family.add_argument('--task', default='', help='a validation-suite task instead of the runs\' family')
  args = parser.parse_args(argv)
  runs = _labelled(args.runs)
  if args.command == 'curves':
    plot_curves(runs, args.out, args.title, args.decay)
  else:
    result = family_eval(runs, [int(s) for s in args.steps.split(',')], args.num_tasks, args.seed,
                         family=validation_family(args.task) if args.task else None)
    with open(args.out, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=1)
    for steps, budget in result['budgets'].items():
      print(f'{steps} steps (Adam tuned lr {budget["adam_tuned_lr"]:g}):')
      for label, s in budget['optimizers'].items():
        print(f'  {label:28s} train {s["train_mean"]:.4f} ± {s["train_std"]:.4f}  test {s["test_mean"]:.4f} ± '
              f'{s["test_std"]:.4f}  gap {s["gap_mean"]:+.4f} ± {s["gap_std"]:.4f}')


if __name__ == '__main__':
  main()
