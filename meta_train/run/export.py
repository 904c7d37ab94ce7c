"""Export the meta-parameters of a run's newest checkpoint as a :func:`lopt.save` file, while it is still training.

A run writes ``final.npz`` only when it ends; this takes the newest readable checkpoint instead, so a long run can be
evaluated (or its current weights shipped) at any time. Where ``checkpoints/`` is absent or empty (a run moved to
another machine with only its committed files), the compact ``resume.npz`` is read instead, the same order of
preference as a resume::

    python -m meta_train.run.export runs/hrnn_shipped hrnn_now.npz
    python -m evaluation --optimizer now=hrnn_now.npz --out runs/eval_now

The run directory's ``config.toml`` says which architecture and state layout to expect; the checkpoint is checked
against it (integrity and shapes) exactly as a resume would.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax


def export_checkpoint(run_dir: str, out_path: str) -> int:
  """Writes the newest checkpoint's meta-parameters of ``run_dir`` to ``out_path``; returns that checkpoint's step.

  The newest readable full checkpoint in ``run_dir/checkpoints/``, else ``run_dir/resume.npz``.

  Raises:
    meta_train.run.config.ConfigError: ``run_dir`` has no ``config.toml`` or it does not build.
    meta_train.run.checkpoint.CheckpointError: no readable checkpoint, or one that does not match the config.
  """
  # pylint: disable=import-outside-toplevel
  from lopt import serialization
  from meta_train.run import build, checkpoint, config as config_lib, resume_state, trainer
  config_path = os.path.join(run_dir, trainer.CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise config_lib.ConfigError(f'{run_dir!r} is not a meta-training run directory: it has no {trainer.CONFIG_FILE}.')
  config = config_lib.load(config_path)
  components = build.build(config)
  template = jax.eval_shape(lambda k: trainer.init_state(components, k), jax.random.key(config.run.seed))
  manager = checkpoint.CheckpointManager(os.path.join(run_dir, trainer.CHECKPOINT_DIR), write=False)
  restored = manager.restore_latest(template)
  if restored is not None:
    serialization.save(out_path, components.architecture, restored.tree.meta_params)
    return restored.step
  resume_path = os.path.join(run_dir, resume_state.RESUME_FILE)
  if not os.path.isfile(resume_path):
    raise checkpoint.CheckpointError(f'{run_dir!r} has no checkpoint yet (looked in {manager.directory!r} and for '
                                     f'{resume_path!r}).')
  saved = resume_state.load(resume_path, template, config)
  serialization.save(out_path, components.architecture, saved.meta_params)
  return int(saved.step)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m meta_train.run.export', description=__doc__.split('\n\n')[0])
  parser.add_argument('run_dir', help='a meta-training output directory (holds config.toml and checkpoints/ or resume.npz)')
  parser.add_argument('out', help='the .npz file to write (lopt.save format)')
  args = parser.parse_args(argv)
  from meta_train.run import checkpoint, config as config_lib  # pylint: disable=import-outside-toplevel
  try:
    step = export_checkpoint(args.run_dir, args.out)
  except (config_lib.ConfigError, checkpoint.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {args.out}: meta-parameters after {step} meta-steps of {args.run_dir}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
