"""Command line: ``python -m meta_train CONFIG --out DIR [key=value ...]``.

Meta-trains the learned optimizer that the TOML file ``CONFIG`` describes (see :mod:`meta_train.run.config`), with
dotted ``key=value`` overrides, writing to ``DIR``:

* ``config.toml``: the config actually used (file plus overrides);
* ``metrics.jsonl``, ``tensorboard/``, ``meta_training.png``: meta-training curves (:mod:`meta_train.run.logging`);
* ``evaluation.jsonl``: periodic evaluation against Adam on fresh instances of the training problems (when
  ``evaluation.every > 0``);
* ``checkpoints/``: the newest ``run.keep_checkpoints`` checkpoints (:mod:`meta_train.run.checkpoint`);
* ``final.npz``: the final meta-parameters in the :func:`lopt.save` format (``lopt.load('DIR/final.npz')``).

Running the same command on the same ``DIR`` resumes from the latest checkpoint; a different config is refused
(except for the fields in ``config.RESUMABLE_FIELDS``, such as ``run.meta_steps`` to extend a run).

Several processes (hosts): start the same command in every process with ``--coordinator HOST:PORT
--num-processes N --process-id I`` (or ``--distributed`` where the cluster is detected automatically); see
``docs/distributed.md``.

Compilation: large configs (a whole problem set) compile for minutes. Setting ``JAX_COMPILATION_CACHE_DIR`` (JAX's
persistent compilation cache) lets a resumed run reuse the compiled programs instead of compiling them again.

Exit status: 0 on success, 2 for a bad config or unusable output directory (a one-line message, no traceback),
130 when interrupted with Ctrl-C (after saving a checkpoint).
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m meta_train',
      description='Meta-train a learned optimizer from a TOML config. Rerun the same command to resume.',
      epilog='Example: python -m meta_train configs/quickstart.toml --out runs/quick run.seed=1 '
             'meta_optimizer.learning_rate=3e-3')
  p.add_argument('config', help='TOML config file (see configs/)')
  p.add_argument('--out', required=True, help='output directory (created; an existing run there is resumed)')
  p.add_argument('overrides', nargs='*', metavar='key=value',
                 help='dotted overrides with TOML values, e.g. run.seed=3 estimator.kwargs.std=0.01')
  p.add_argument('--no-progress', action='store_true', help='no progress bar')
  g = p.add_argument_group('several processes (see docs/distributed.md)')
  g.add_argument('--distributed', action='store_true',
                 help='call jax.distributed.initialize() with cluster auto-detection (SLURM, Open MPI, TPU, env vars)')
  g.add_argument('--coordinator', default=None, help='coordinator HOST:PORT (process 0 listens there)')
  g.add_argument('--num-processes', type=int, default=None)
  g.add_argument('--process-id', type=int, default=None)
  return p


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_intermixed_args(argv)
  # Imports after argument parsing: `--help` stays instant, and jax.distributed must initialise before other JAX use.
  from meta_train.run import (checkpoint, config as config_lib, sharding,  # pylint: disable=import-outside-toplevel
                              trainer)

  try:
    if args.distributed or args.coordinator is not None:
      sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    config = config_lib.load(args.config, args.overrides)
    result = trainer.train(config, args.out, progress=not args.no_progress)
  except (config_lib.ConfigError, checkpoint.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('interrupted; rerun the same command to resume from the latest checkpoint.', file=sys.stderr)
    return 130
  if result.resumed_from:
    print(f'resumed from step {result.resumed_from}; ', end='', file=sys.stderr)
  print(f'done: {result.step} meta-steps; final meta-parameters in {args.out}/{trainer.FINAL_FILE}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
