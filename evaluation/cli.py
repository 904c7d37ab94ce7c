"""Command line of the evaluation harness: learned optimizers against tuned baselines on the test or validation suite.

Examples::

    # The shipped hierarchical RNN (lopt.hierarchical_rnn()) on the whole test suite, 500 steps, 3 seeds:
    python -m evaluation --out runs/eval_hrnn

    # Choosing between checkpoints: the validation suite (never the test suite), at both horizons:
    python -m evaluation --suite validation --optimizer a=runs/x/a.npz --optimizer b=runs/x/b.npz --steps 2000 \\
        --baseline-cache ~/.cache/lopt_baselines --out runs/val_2000

    # Evaluate again later without re-running the baselines (they are stored in the cache directory):
    python -m evaluation --optimizer mine=runs/mine/final.npz --baseline-cache ~/.cache/lopt_baselines \\
        --out runs/eval_mine

    # Any lopt.save file (e.g. a meta-training run's final.npz) against Adam only, on two tasks:
    python -m evaluation --optimizer mine=runs/quickstart/final.npz \\
        --baselines adam_tuned,adam_1e-3 --tasks digits_mlp,rosenbrock_10d --out runs/eval_mine

``--optimizer`` (repeatable) takes ``NAME=FILE.npz`` (a :func:`lopt.save` file), ``FILE.npz``, or a built-in
architecture name (its shipped weights when the package has them, else its initial weights). DIR receives
``report.md`` (the markdown tables), ``report.json`` (the same numbers, machine-readable), ``curves/TASK.png`` (one
learning-curve figure per task) and ``curves/summary.png`` (each optimizer's final loss relative to tuned Adam,
one point per task); :mod:`evaluation.plots` says what the figures show.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import jax

from evaluation import harness
from evaluation import heldout
from evaluation import validation

#: The suites by name: ``test`` only reports, ``validation`` makes decisions (docs/evaluation_protocol.md).
SUITES = {'test': heldout, 'validation': validation}


def candidate(spec: str) -> tuple[str, harness.OptimizerSpec]:
  """``NAME=FILE``, ``FILE`` or an architecture name -> (name, OptimizerSpec)."""
  import lopt  # pylint: disable=import-outside-toplevel
  from lopt import pretrained  # pylint: disable=import-outside-toplevel
  name, _, path = spec.rpartition('=') if '=' in spec else ('', '', spec)
  if path.endswith('.npz') or os.sep in path:
    architecture, meta_params = lopt.load(path)
    name = name or pathlib.Path(path).stem
  else:
    try:
      architecture_cls = lopt.get_architecture(path)
    except (KeyError, ValueError) as e:
      raise SystemExit(f'--optimizer {spec!r}: not a .npz file and not an architecture name ({e}).') from None
    if pretrained.pretrained_path(path) is not None:
      architecture, meta_params = pretrained.load_pretrained(path)
      name = name or f'{path}_shipped'
    else:
      architecture = architecture_cls()
      meta_params = architecture.init(jax.random.key(0))
      name = name or f'{path}_init'
  return name, harness.OptimizerSpec(name, lambda: architecture.transform(meta_params))


def build_suite(suite: str, names, num_steps: int) -> list[harness.SuiteEntry]:
  """The entries of suite ``'test'`` or ``'validation'`` (:data:`SUITES`) with the given task names and budget."""
  if suite == 'test':
    return heldout.heldout_suite(names, num_steps=num_steps)
  return validation.validation_suite(names, num_steps=num_steps)


def main(argv: list[str] | None = None) -> int:
  epilog = '\n'.join(
      [f'{name} suite tasks: {", ".join(module.ALL_TASKS)}' for name, module in SUITES.items()]
      + [f'baselines: {", ".join(harness.default_baselines())}'])
  parser = argparse.ArgumentParser(prog='python -m evaluation',
                                   description=__doc__.split('\n\n')[0], epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--optimizer', action='append', default=None,
                      help='NAME=FILE.npz, FILE.npz or an architecture name (repeatable; default: '
                           'hierarchical_rnn, the shipped weights)')
  parser.add_argument('--suite', choices=sorted(SUITES), default='test',
                      help='test (reports only) or validation (for decisions) (default: test)')
  parser.add_argument('--tasks', default=None,
                      help="comma-separated task names of the suite (default: all of the suite's tasks, listed below)")
  parser.add_argument('--baselines', default=','.join(harness.default_baselines()),
                      help='comma-separated baseline names (adam_tuned is required; default: all, listed below)')
  parser.add_argument('--steps', type=int, default=heldout.DEFAULT_NUM_STEPS,
                      help=f'step budget per task (default: {heldout.DEFAULT_NUM_STEPS})')
  parser.add_argument('--seeds', type=int, default=3, help='seeds per task and optimizer (default: 3)')
  parser.add_argument('--speedup-horizon', type=float, default=4.0,
                      help='tuned Adam runs this many times the budget to measure speedups above 1 (default: 4)')
  parser.add_argument('--out', required=True, help='output directory (created)')
  parser.add_argument('--baseline-cache', default=None, metavar='DIR',
                      help='store baseline results in DIR and reuse them on later runs with the same tasks, steps, '
                           'seeds and library versions (baselines are most of the time)')
  args = parser.parse_args(argv)
  if args.steps < 20 or args.seeds < 1:
    parser.error(f'--steps must be >= 20 and --seeds >= 1, got {args.steps} and {args.seeds}.')

  candidates = dict(candidate(s) for s in (args.optimizer or ['hierarchical_rnn']))
  every = harness.default_baselines()
  wanted = [b for b in args.baselines.split(',') if b]
  unknown = [b for b in wanted if b not in every]
  if unknown:
    parser.error(f'unknown baselines {unknown}; choose from {", ".join(every)}.')
  if 'adam_tuned' not in wanted:
    parser.error('--baselines must include adam_tuned (the reference of the speedup measure).')
  try:
    names = SUITES[args.suite].ALL_TASKS if args.tasks is None else [t for t in args.tasks.split(',') if t]
    suite = build_suite(args.suite, names, args.steps)
  except ValueError as e:
    parser.error(str(e))
  try:
    os.makedirs(args.out, exist_ok=True)
  except OSError as e:
    parser.error(f'cannot create --out {args.out!r}: {e}')

  report = harness.evaluate(candidates, suite, {b: every[b] for b in wanted}, seeds=args.seeds,
                            speedup_horizon=args.speedup_horizon, cache_dir=args.baseline_cache)
  table = report.markdown()
  pathlib.Path(args.out, 'report.md').write_text(table + '\n')
  pathlib.Path(args.out, 'report.json').write_text(json.dumps(report.to_json(), indent=1) + '\n')
  report.plot(os.path.join(args.out, 'curves'))
  print(table)
  print(f'\nwrote {args.out}/report.md, report.json, curves/TASK.png (one per task) and curves/summary.png',
        file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
