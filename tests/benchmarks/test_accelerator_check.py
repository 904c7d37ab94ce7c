"""benchmarks/accelerator_check.sh, exercised on CPU (no accelerator needed).

The script is meant for a machine with an accelerator; ``--allow-cpu`` lets it run here so that its wiring (device
report, both benchmark tables, the stage summary and exit status) is tested on every run of the suite. ``--no-install``
keeps it from re-pointing the test environment's editable install, and ``--skip-tests`` from running, inside this
suite, test files the suite runs anyway.
"""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'benchmarks', 'accelerator_check.sh')


def _run(tmp_path, *args, timeout, **env_extra):
  env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS='cpu',
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'), **env_extra)
  return subprocess.run(['bash', SCRIPT, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_without_an_accelerator_it_fails_with_the_devices_and_the_reason(tmp_path):
  done = _run(tmp_path, '--no-install', timeout=300)
  assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
  assert 'jax.devices() = [CpuDevice' in done.stdout
  assert 'no accelerator: jax found only CPU devices' in done.stderr
  assert 'step time' not in done.stdout  # it stops before running anything else


def test_unknown_argument_is_refused():
  done = subprocess.run(['bash', SCRIPT, '--no-such-flag'], cwd=REPO, capture_output=True, text=True, timeout=60)
  assert done.returncode == 2
  assert "unknown argument '--no-such-flag'" in done.stderr


# Compiles 36 step-time programs and 3 PES estimates: 2-5 minutes on 2 shared CPU cores. The programs are compiled
# at XLA's backend optimisation level 0 (40% less time: 128 s against 214 s on the 2-core machine): this test checks
# the script's wiring, not its timings, and the tiny programs run a few times each.
@pytest.mark.slow
def test_tiny_cpu_run_exits_0_and_prints_both_tables(tmp_path):
  xla_flags = (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
  done = _run(tmp_path, '--tiny', '--no-install', '--skip-tests', '--allow-cpu', timeout=1800,
              LOPT_CHECK_TIME_SCALE='12', XLA_FLAGS=xla_flags)
  out = done.stdout
  assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
  assert 'jax.devices() = [CpuDevice' in out
  # Step-time table: one per model with a row per optimizer, and the all-model summary.
  for model in ('mlp', 'convnet', 'transformer'):
    assert re.search(rf'^### {model}: .*, [\d,]+ parameters$', out, re.M), model
  assert '| optimizer | step B=16 (ms) | B=16 / Adam | step B=64 (ms) | B=64 / Adam | update (ms) | ' \
         'update ns / param | update / Adam | state bytes / param |' in out
  for optimizer in ('adam', 'adamw', 'hierarchical_rnn', 'mlp_lopt'):
    rows = re.findall(rf'^\| {optimizer} \| ([\d.]+) \| ([\d.]+)x \|', out, re.M)
    assert len(rows) == 3, (optimizer, rows)  # one row in each model's table
    assert all(float(ms) > 0 and float(ratio) > 0 for ms, ratio in rows), rows
  assert re.search(r'^\| adam \| [\d.]+ \| 1\.00x \|', out, re.M)
  assert 'process CPU time' in out  # the CPU backend reports CPU time, and says so
  # Throughput table.
  assert '| optimizer | inner steps/s |' in out
  for architecture in ('hierarchical_rnn', 'mlp_lopt', 'learnable_adam'):
    assert re.search(rf'^\| {architecture} \| [\d,]+ \|', out, re.M), architecture
  assert 'accelerator check: all stages passed' in out
