"""Sharding the task ensemble over devices (jax.jit + NamedSharding) and over processes (jax.distributed).

The device count is fixed when JAX starts, so every configuration runs in a fresh subprocess
(sharding_worker.py) with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``.

Tolerance. Splitting the ensemble changes only the order in which XLA sums the per-instance meta-gradients (and
where the partial sums meet: an all-reduce across devices or processes). In float32 each reordered addition can move
the result by about one ulp (1.2e-7 relative); with 4 instances and a 5-step unroll the gradient is a sum of a
handful of such terms, so agreement to rtol 1e-5 leaves a margin of ~50x while still failing for any real
difference (a lost or duplicated instance changes the mean by ~25%).
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from quadratic_fixture import HERE, REPO, subprocess_env, write_tiny_config

# Every test here starts JAX processes that compile ~6 programs each: 15-50 s on 2 shared cores.
pytestmark = pytest.mark.slow

RTOL, ATOL = 1e-5, 1e-7
WORKER = os.path.join(HERE, 'sharding_worker.py')


def _worker(tmp_path, name, devices_per_process, *args, env_extra=None):
  env = subprocess_env(tmp_path)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices_per_process}'
  env.update(env_extra or {})
  out = tmp_path / f'{name}.npz'
  return out, [sys.executable, WORKER, write_tiny_config(tmp_path), str(out), *args], env


def _run(command, env):
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]


def _leaves(results, prefix):
  keys = sorted(k for k in results.files if k.startswith(prefix))
  assert keys, f'no results {prefix}*'
  return [results[k] for k in keys]


def _grads(results, devices):
  return _leaves(results, f'{devices}_grad_')


@pytest.fixture(scope='module')
def four_devices(tmp_path_factory):
  """One process with 4 forced host devices: the meta-gradient on all 4 and on 1 of them, and a short trained run."""
  tmp_path = tmp_path_factory.mktemp('four_devices')
  out, command, env = _worker(tmp_path, 'four', 4, '--devices', '4,1', '--train-dir', str(tmp_path / 'run'))
  _run(command, env)
  return np.load(out)


def test_ensemble_is_split_over_four_devices(four_devices):
  assert int(four_devices['d4_num_devices']) == 4
  # Every per-instance leaf of the estimator state (params, curvatures, step counters) lives on all 4 devices,
  # one instance each; on one device nothing is split.
  assert four_devices['d4_split_over'].tolist() == [4, 4, 4]
  assert four_devices['d1_split_over'].tolist() == [1, 1, 1]


def test_four_device_meta_gradient_equals_single_device(four_devices):
  for sharded, single in zip(_grads(four_devices, 'd4'), _grads(four_devices, 'd1'), strict=True):
    np.testing.assert_allclose(sharded, single, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(four_devices['d4_meta_loss'], four_devices['d1_meta_loss'], rtol=RTOL)


def test_trainer_runs_and_resumes_sharded(four_devices):
  assert int(four_devices['train_resumed_from']) == 3
  assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(four_devices, 'train_param_'))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_give_the_single_process_meta_gradient(four_devices, tmp_path):
  """Two processes on localhost, 2 CPU devices each, joined by jax.distributed (gloo collectives over TCP)."""
  coordinator = f'127.0.0.1:{_free_port()}'
  procs = []
  for process_id in range(2):
    out, command, env = _worker(tmp_path, 'distributed', 2, '--train-dir', str(tmp_path / 'run'), '--coordinator',
                                coordinator, '--num-processes', '2', '--process-id', str(process_id))
    procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True))
  try:
    logs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [0, 0], '\n----\n'.join(log[-2000:] for log in logs)
  results = np.load(out)
  assert int(results['d0_num_devices']) == 4  # the mesh spans both processes
  assert results['d0_split_over'].tolist() == [4, 4, 4]
  for distributed, single in zip(_grads(results, 'd0'), _grads(four_devices, 'd1'), strict=True):
    np.testing.assert_allclose(distributed, single, rtol=RTOL, atol=ATOL)
  # The trained run checkpointed (gathering shards from both processes), resumed, and matches the 4-device run of one
  # process to the same tolerance: same arithmetic, different summation order.
  assert int(results['train_resumed_from']) == 3
  for a, b in zip(_leaves(results, 'train_param_'), _leaves(four_devices, 'train_param_'), strict=True):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
