"""Meta-training throughput: inner steps per second of a PES gradient estimate, and its compile time.

Setting (that of the peer-library reference numbers in docs/benchmarks.md, "Reference numbers from a peer library", and
of ``configs/pes_quadratics.toml``): :class:`meta_train.TruncatedPES` with truncations of ``T = 20`` inner steps,
``B = 8`` task instances, each with a ``+`` and a ``−`` antithetic twin, on ``tasks.QuadraticFamily(dim=10)``
(noise-free least squares ``½‖Wx − y‖²``, fresh ``W, y`` per episode; pass ``--family noisy_quadratic`` for TaskSet's
gradient-noise variant), episodes of 200 steps (``ConstantTruncation``), staggered, log-normalised training-loss
objective, σ = 0.01. One ``estimate`` call therefore advances ``2 × B × T = 320`` inner steps (the twins counted
separately, as the reference numbers do), plus the resets of the instances whose episode ends inside the truncation.

Per architecture, ``estimator.estimate`` is jitted with the estimator state donated (as the trainer does) and compiled
ahead of time, which splits the first call into *trace + lower* (Python), *XLA compile* and the first execution.
Throughput is ``2 B T / median(call time)`` over ``--calls`` calls after ``--warmup`` calls, each call timed to
``block_until_ready``. The machine is shared, so the architectures run in interleaved blocks of ``--block`` calls:
load that comes and goes is spread over all of them instead of penalising whichever ran during it. The 1-minute load
average is printed with the results; on a busy machine the numbers are lower bounds.

Usage::

    python -m benchmarks.meta_train_throughput      # from the repo root
    python -m benchmarks.meta_train_throughput --calls 500 --architectures hierarchical_rnn,mlp_lopt

Prints a markdown table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax

import lopt
import meta_train
import tasks

#: The best-known JAX learned-optimizer library (jax 0.4.30) in this setting on this machine class
#: (docs/benchmarks.md, "Reference numbers from a peer library").
REFERENCE_STEPS_PER_SECOND = {'Adafactor-MLP (reference library)': 30_000, 'VeLO (reference library)': 7_570}
#: The project's target for the hierarchical RNN (docs/benchmarks.md, "Targets").
TARGET_STEPS_PER_SECOND = {'hierarchical_rnn': 30_000}

FAMILIES = {
    'quadratic': lambda dim: tasks.QuadraticFamily(dim=dim),
    'noisy_quadratic': lambda dim: tasks.NoisyQuadraticFamily(dim=dim),
}


def log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


class Timed:
  """One architecture's compiled PES estimate, its running state, and the per-call times collected so far."""

  def __init__(self, name: str, estimator: meta_train.TruncatedPES, meta_params, seed: int):
    self.name = name
    self.meta_params = meta_params
    self.inner_steps_per_call = (estimator.num_particles * estimator.num_tasks
                                 * sum(u.unroll_length for u in estimator.unrolls))
    init_key, self._key = jax.random.split(jax.random.key(seed))
    state = jax.jit(estimator.init)(init_key, meta_params)
    jax.block_until_ready(state)
    key = self._next_key()

    start = time.perf_counter()
    lowered = jax.jit(estimator.estimate, donate_argnums=(1,)).lower(meta_params, state, key)
    traced = time.perf_counter()
    self._estimate = lowered.compile()
    compiled = time.perf_counter()
    self.state = state
    self._call(key)
    executed = time.perf_counter()
    self.trace_seconds = traced - start
    self.compile_seconds = compiled - traced
    self.first_call_seconds = executed - start
    self.times: list[float] = []

  def _next_key(self) -> jax.Array:
    self._key, key = jax.random.split(self._key)
    return jax.block_until_ready(key)

  def _call(self, key: jax.Array) -> float:
    start = time.perf_counter()
    grad, self.state, metrics = self._estimate(self.meta_params, self.state, key)
    jax.block_until_ready((grad, self.state, metrics))
    return time.perf_counter() - start

  def run(self, num_calls: int, record: bool) -> None:
    for _ in range(num_calls):
      elapsed = self._call(self._next_key())
      if record:
        self.times.append(elapsed)

  @property
  def steps_per_second(self) -> float:
    return self.inner_steps_per_call / statistics.median(self.times)


def build(name: str, family: str, dim: int, num_tasks: int, unroll_length: int, episode_length: int,
          seed: int) -> Timed:
  architecture = lopt.get_architecture(name)()
  estimator = meta_train.TruncatedPES(meta_train.StructureGroups(
      architecture, FAMILIES[family](dim), num_tasks,
      truncation_schedule=meta_train.ConstantTruncation(episode_length), unroll_length=unroll_length))
  meta_params = architecture.init(jax.random.key(seed))
  return Timed(name, estimator, meta_params, seed)


def measure(names: list[str], args: argparse.Namespace) -> list[Timed]:
  timed = []
  for name in names:
    log(f'compiling {name} ...')
    t = build(name, args.family, args.dim, args.num_tasks, args.unroll_length, args.episode_length, args.seed)
    log(f'  {name}: trace+lower {t.trace_seconds:.1f} s, compile {t.compile_seconds:.1f} s, first call '
        f'{t.first_call_seconds:.1f} s in all')
    t.run(args.warmup, record=False)
    timed.append(t)
  done = 0
  while done < args.calls:
    n = min(args.block, args.calls - done)
    for t in timed:
      t.run(n, record=True)
    done += n
    log(f'timed {done}/{args.calls} estimate calls of each architecture')
  return timed


def markdown_table(timed: list[Timed]) -> str:
  rows = ['| optimizer | inner steps/s | target | ms / estimate (median) | p10-p90 ms | trace+lower (s) | '
          'XLA compile (s) | first call (s) |',
          '|---|---:|---:|---:|---:|---:|---:|---:|']
  for t in timed:
    deciles = statistics.quantiles(t.times, n=10)
    target = TARGET_STEPS_PER_SECOND.get(t.name)
    target_text = f'>= {target:,} ({t.steps_per_second / target:.2f}x)' if target else ''
    rows.append(f'| {t.name} | {t.steps_per_second:,.0f} | {target_text} | {1e3 * statistics.median(t.times):.2f} | '
                f'{1e3 * deciles[0]:.2f}-{1e3 * deciles[-1]:.2f} | {t.trace_seconds:.1f} | {t.compile_seconds:.1f} | '
                f'{t.first_call_seconds:.1f} |')
  for name, rate in REFERENCE_STEPS_PER_SECOND.items():
    rows.append(f'| {name} | {rate:,} | | | | | | |')
  return '\n'.join(rows)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--calls', type=int, default=200, help='timed estimate calls per architecture')
  parser.add_argument('--warmup', type=int, default=10, help='untimed calls after the first (compiling) one')
  parser.add_argument('--block', type=int, default=20, help='calls per architecture before moving to the next one')
  parser.add_argument('--architectures', default='hierarchical_rnn,mlp_lopt,learnable_adam',
                      help='comma-separated architecture names (learnable_adam is a cheap reference)')
  parser.add_argument('--family', choices=sorted(FAMILIES), default='quadratic', help='task family')
  parser.add_argument('--dim', type=int, default=10, help='quadratic dimension')
  parser.add_argument('--num-tasks', type=int, default=8, help='task instances (each with a + and a - twin)')
  parser.add_argument('--unroll-length', type=int, default=20, help='inner steps per truncation')
  parser.add_argument('--episode-length', type=int, default=200, help='inner steps per episode')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  for flag in ('calls', 'warmup', 'block', 'dim', 'num_tasks', 'unroll_length', 'episode_length'):
    minimum = 0 if flag == 'warmup' else (2 if flag == 'calls' else 1)
    if getattr(args, flag) < minimum:
      parser.error(f'--{flag.replace("_", "-")} must be >= {minimum}, got {getattr(args, flag)}.')

  names = [n for n in args.architectures.split(',') if n]
  for name in names:
    lopt.get_architecture(name)  # fails early, listing the valid names

  setting = (f'TruncatedPES, {args.num_tasks} tasks x 2 antithetic twins, truncation {args.unroll_length}, '
             f'episodes of {args.episode_length}, {FAMILIES[args.family](args.dim)!r}')
  platform = f'jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device(s), ' \
             f'{os.cpu_count()} CPU(s))'
  log(f'{platform}; {setting}')
  timed = measure(names, args)
  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
  print(f'{setting}. Inner steps/s = {timed[0].inner_steps_per_call} (+ and - twins counted separately) / median '
        f'wall time of one jitted estimate call over {args.calls} calls; {platform}; 1-min load average at the end '
        f'{load:.1f}. Reference rows: docs/benchmarks.md (jax 0.4.30, same machine class).\n')
  print(markdown_table(timed))


if __name__ == '__main__':
  main()
