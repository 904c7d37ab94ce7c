"""The compact resumable state of a run, ``DIR/resume.npz``: kilobytes where a full checkpoint is megabytes.

A full checkpoint (:mod:`meta_train.run.checkpoint`) holds the whole :class:`meta_train.run.trainer.TrainState`,
including the estimator state: the inner parameters and optimizer states of every task instance of the ensemble, most
of its size (the committed runs: 5 to 14 MB each). What determines the *meta*-training's future is much smaller::

    resume.npz = {step, meta_params, meta_opt_state, key, nonfinite_meta_grads, inner_nonfinite_resets}
                 + metadata {config_fingerprint: config.fingerprint(config)}

Every checkpoint also writes this file, in the atomic, checksummed single-file tree format of
:func:`meta_train.run.checkpoint.save` (the orbax checkpoints do not use it). When ``DIR/checkpoints/`` is absent or
empty and ``resume.npz`` exists, the trainer resumes from it: the meta-parameters, the meta-optimizer state, the
run's PRNG key, the step and the counters are those of the file, and the inner task instances are *redrawn*
(``estimator.init`` with a key folded from the stored one). The continuation is therefore a valid continuation of
the meta-training, but not bitwise the one an uninterrupted run would have made (its task instances were part-way
through their truncations); full checkpoints stay for bitwise resumption on one machine.
This is what lets ``runs/`` in git keep only kilobytes per run.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from meta_train.run import checkpoint
from meta_train.run import config as config_lib

#: The file's name inside a run directory.
RESUME_FILE = 'resume.npz'

#: Folded into the stored key to draw the replacement task instances (a key the run's own stream never produces).
_REDRAW_SALT = 0x2E5D


class CompactState(NamedTuple):
  """The part of the trainer's state that ``resume.npz`` holds (same field names as ``TrainState``)."""
  step: jax.Array
  meta_params: Any
  meta_opt_state: Any
  key: jax.Array
  nonfinite_meta_grads: jax.Array
  inner_nonfinite_resets: jax.Array


def compact(state) -> CompactState:
  """The fields of a ``TrainState`` (or of its shapes) that ``resume.npz`` stores."""
  return CompactState(*(getattr(state, name) for name in CompactState._fields))


def save(path: str, state, config: config_lib.Config) -> None:
  """Writes the compact part of ``state`` (host arrays) to ``path`` atomically, with the config's fingerprint."""
  checkpoint.save(path, int(state.step), compact(state),
                  metadata={'config_fingerprint': config_lib.fingerprint(config)})


def load(path: str, state_shapes, config: config_lib.Config) -> CompactState:
  """Reads ``path``, checking integrity, the tree against ``state_shapes`` and the config's fingerprint.

  Raises:
    checkpoint.CheckpointError: damaged file, another run's state, or a config that differs in a field outside
      ``config.RESUMABLE_FIELDS``; the message names the file and what to do.
  """
  restored = checkpoint.load(path, compact(state_shapes))
  stored = restored.metadata.get('config_fingerprint')
  if stored != config_lib.fingerprint(config):
    raise checkpoint.CheckpointError(
        f'{path!r} was written by a run with another config (fingerprint {stored} != '
        f'{config_lib.fingerprint(config)}); only {", ".join(sorted(config_lib.RESUMABLE_FIELDS))} may change on '
        'resume. Rerun with the config.toml of that directory, or use a new --out directory.')
  return restored.tree


def redraw_key(key: jax.Array) -> jax.Array:
  """The key the replacement task instances are drawn from, given the run's stored PRNG key."""
  return jax.random.fold_in(key, _REDRAW_SALT)
