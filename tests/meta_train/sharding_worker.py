"""Subprocess worker of test_sharding.py: one meta-gradient of a config, computed with the ensemble axis sharded.

The device count must be fixed before JAX is imported (``XLA_FLAGS=--xla_force_host_platform_device_count=N``), so
every sharded computation runs in a fresh process::

    python sharding_worker.py CONFIG OUT.npz [--devices K,L,...] [--train-dir DIR]
                              [--coordinator HOST:PORT --num-processes N --process-id I]

It builds the run's components from CONFIG (exactly as the CLI does) and, for each K (0 = all devices of all
processes), initialises the training state sharded over the first K devices, computes one meta-gradient with
``estimator.estimate`` jitted under those shardings, and (process 0) writes the gradient leaves, the meta-loss and the
number of devices each ensemble-axis leaf is split over to OUT.npz under keys prefixed ``d{K}_``.

With ``--train-dir``, it then runs ``trainer.train`` for 3 meta-steps over all devices and resumes it to 4 (the
checkpoint gather and the sharded restore of a multi-process run), and writes the final meta-parameters under
``train_`` keys.
"""

import argparse
import dataclasses
import sys


def main():
  p = argparse.ArgumentParser()
  p.add_argument('config')
  p.add_argument('out')
  p.add_argument('--devices', default='0')
  p.add_argument('--train-dir', default=None)
  p.add_argument('--coordinator', default=None)
  p.add_argument('--num-processes', type=int, default=None)
  p.add_argument('--process-id', type=int, default=None)
  args = p.parse_args()

  from meta_train.run import sharding  # pylint: disable=import-outside-toplevel
  if args.coordinator:
    sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id)

  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from meta_train.run import build, config as config_lib, trainer  # pylint: disable=import-outside-toplevel

  config = config_lib.load(args.config)
  components = build.build(config)
  results = {}
  for count in [int(c) for c in args.devices.split(',')]:
    devices = jax.devices()[:count] if count else jax.devices()
    mesh = sharding.ensemble_mesh(devices)
    key = jax.random.key(config.run.seed)
    init = lambda k: trainer.init_state(components, k)
    shapes = jax.eval_shape(init, key)
    shardings = sharding.ensemble_shardings(shapes, components.ensemble_size, mesh)
    state = jax.jit(init, out_shardings=shardings)(key)
    estimate = jax.jit(components.estimator.estimate,
                       in_shardings=(shardings.meta_params, shardings.estimator_state, sharding.replicated(mesh)),
                       out_shardings=sharding.replicated(mesh))
    grad, _, metrics = estimate(state.meta_params, state.estimator_state, jax.random.key(123))
    grad, metrics = sharding.to_host((grad, metrics))
    split_over = [len(x.sharding.device_set) for x in jax.tree.leaves(state.estimator_state)
                  if np.ndim(x) >= 1 and np.shape(x)[0] == components.ensemble_size]
    results[f'd{count}_meta_loss'] = np.asarray(metrics['meta_loss'])
    results[f'd{count}_split_over'] = np.asarray(split_over)
    results[f'd{count}_num_devices'] = np.asarray(len(devices))
    for i, g in enumerate(jax.tree.leaves(grad)):
      results[f'd{count}_grad_{i}'] = np.asarray(g)

  if args.train_dir:
    for steps in (3, 4):
      run = dataclasses.replace(config.run, meta_steps=steps, checkpoint_every=2)
      result = trainer.train(dataclasses.replace(config, run=run), args.train_dir, components, progress=False)
    results['train_resumed_from'] = np.asarray(result.resumed_from)
    for i, leaf in enumerate(jax.tree.leaves(result.meta_params)):
      results[f'train_param_{i}'] = np.asarray(leaf)

  if jax.process_index() == 0:
    np.savez(args.out, **results)
  return 0


if __name__ == '__main__':
  sys.exit(main())
