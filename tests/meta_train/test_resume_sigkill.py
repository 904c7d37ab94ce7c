"""Nothing lost: a meta-training killed with SIGKILL at a random moment resumes to bitwise the same result."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from quadratic_fixture import REPO, subprocess_env, write_tiny_config

META_STEPS = 40
# Every meta-step sleeps this long on the host (the fixture's sleep_seconds), so the run lasts about 2 s after its
# first checkpoint whatever the machine's speed, and a kill drawn in KILL_WINDOW always lands before the end.
SLEEP_SECONDS = 0.05
KILL_WINDOW = (0.0, 1.2)


def _command(config, out):
  return [sys.executable, '-m', 'meta_train', config, '--out', str(out), '--no-progress',
          f'run.meta_steps={META_STEPS}', 'run.checkpoint_every=4', 'run.log_every=2',
          f'estimator.kwargs.sleep_seconds={SLEEP_SECONDS}']


def _final_bytes(out):
  with np.load(out / 'final.npz', allow_pickle=False) as npz:
    return {name: npz[name].tobytes() for name in npz.files if not name.startswith('__')}


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_rerun_gives_bitwise_the_uninterrupted_result(tmp_path):
  config = write_tiny_config(tmp_path)
  env = subprocess_env(tmp_path)
  seed = int.from_bytes(os.urandom(4), 'little')
  delay = random.Random(seed).uniform(*KILL_WINDOW)
  note = f'(kill delay {delay:.3f} s after the first checkpoint, seed {seed})'

  # The uninterrupted reference runs alongside the run that gets killed.
  reference = subprocess.Popen(_command(config, tmp_path / 'reference'), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  victim_out = tmp_path / 'victim'
  victim = subprocess.Popen(_command(config, victim_out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 240
    while not (victim_out / 'checkpoints').is_dir() or not any(  # a committed orbax step directory
        n.isdigit() for n in os.listdir(victim_out / 'checkpoints')):
      assert victim.poll() is None, f'the run ended before its first checkpoint {note}'
      assert time.monotonic() < deadline, 'no checkpoint within 240 s'
      time.sleep(0.01)
    time.sleep(delay)
    assert victim.poll() is None, f'the run finished before it could be killed {note}'
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
  finally:
    if victim.poll() is None:
      victim.kill()
  assert not (victim_out / 'final.npz').exists()

  resumed = subprocess.run(_command(config, victim_out), cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr
  assert 'resumed from step' in resumed.stderr, f'the rerun started over instead of resuming {note}'
  _, reference_err = reference.communicate(timeout=300)
  assert reference.returncode == 0, reference_err

  assert _final_bytes(victim_out) == _final_bytes(tmp_path / 'reference'), note
  with open(victim_out / 'metrics.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f]
  assert steps == list(range(2, META_STEPS + 1, 2)), f'every logged step exactly once {note}'
  # Only committed step directories remain: the rerun deleted any temporary directory of a save the kill interrupted.
  assert all(n.isdigit() for n in os.listdir(victim_out / 'checkpoints')), os.listdir(victim_out / 'checkpoints')
