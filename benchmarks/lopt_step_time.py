"""Per-step cost of every built-in learned optimizer, as a ratio to optax.adam measured in the same run.

Problem: the 784-64-10 ReLU MLP of the peer-library reference numbers (docs/benchmarks.md, "Reference numbers from a
peer library"; 50,890 parameters), softmax cross-entropy, batch 128 of synthetic data (timing does not depend on the
data's values). Two programs are timed per optimizer, both jitted with the optimizer
state (and parameters) donated, as a training loop would:

* full step: forward + backward + ``tx.update(grads, state, params, value=loss)`` + ``optax.apply_updates``;
* update alone: ``tx.update`` on fixed gradients.

Each time is the median of per-call wall times (``block_until_ready`` after every call) over ``--steps`` calls after
``--warmup`` calls. The machine is shared, so optimizers are measured in interleaved blocks of ``--block`` calls:
load that comes and goes is spread over all of them instead of penalising whichever ran during it.
State size is the number of scalars in the optimizer state's leaves divided by the parameter count (Adam: 2).

Usage::

    python -m benchmarks.lopt_step_time     # from the repo root (or benchmarks/lopt_step_time.py once installed)
    python -m benchmarks.lopt_step_time --steps 1000 --architectures hierarchical_rnn,learnable_adam

Prints a markdown table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

import lopt

LAYER_SIZES = (784, 64, 10)
BATCH_SIZE = 128


def log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def init_mlp(key: jax.Array) -> dict:
  params = {}
  for i, (fan_in, fan_out) in enumerate(zip(LAYER_SIZES[:-1], LAYER_SIZES[1:])):
    key, sub = jax.random.split(key)
    params[f'layer{i}'] = {'w': jax.random.normal(sub, (fan_in, fan_out)) / math.sqrt(fan_in),
                           'b': jnp.zeros((fan_out,))}
  return params


def mlp_loss(params: dict, x: jax.Array, labels: jax.Array) -> jax.Array:
  h = x
  for i in range(len(LAYER_SIZES) - 1):
    layer = params[f'layer{i}']
    h = h @ layer['w'] + layer['b']
    if i < len(LAYER_SIZES) - 2:
      h = jax.nn.relu(h)
  return optax.softmax_cross_entropy_with_integer_labels(h, labels).mean()


class Timed:
  """One optimizer's two jitted programs, their running state, and the per-call times collected so far."""

  def __init__(self, name: str, tx: optax.GradientTransformation, params: dict, batch: tuple[jax.Array, jax.Array]):
    self.name = name
    self.batch = batch
    self.num_params = sum(x.size for x in jax.tree.leaves(params))

    def full_step(params, state, x, labels):
      loss, grads = jax.value_and_grad(mlp_loss)(params, x, labels)
      updates, state = tx.update(grads, state, params, value=loss)
      return optax.apply_updates(params, updates), state, loss

    def update_only(grads, state, params, loss):
      return tx.update(grads, state, params, value=loss)

    self._full_step = jax.jit(full_step, donate_argnums=(0, 1))
    self._update_only = jax.jit(update_only, donate_argnums=(1,))
    self.params = jax.tree.map(jnp.copy, params)
    # Copies: some architectures' init returns one array under several names, which XLA refuses to donate twice.
    self.state = jax.tree.map(jnp.copy, tx.init(self.params))
    self.state_floats = sum(x.size for x in jax.tree.leaves(self.state)) / self.num_params
    self.update_state = jax.tree.map(jnp.copy, tx.init(self.params))
    self.loss, self.grads = jax.jit(jax.value_and_grad(mlp_loss))(self.params, *batch)
    self.full_times: list[float] = []
    self.update_times: list[float] = []

  def run(self, num_calls: int, record: bool) -> None:
    for _ in range(num_calls):
      start = time.perf_counter()
      self.params, self.state, loss = self._full_step(self.params, self.state, *self.batch)
      jax.block_until_ready((self.params, self.state, loss))
      if record:
        self.full_times.append(time.perf_counter() - start)
    for _ in range(num_calls):
      start = time.perf_counter()
      updates, self.update_state = self._update_only(self.grads, self.update_state, self.params, self.loss)
      jax.block_until_ready((updates, self.update_state))
      if record:
        self.update_times.append(time.perf_counter() - start)


def measure(candidates: dict[str, Callable[[], optax.GradientTransformation]], steps: int, warmup: int,
            block: int) -> list[Timed]:
  key_params, key_x, key_y = jax.random.split(jax.random.key(0), 3)
  params = init_mlp(key_params)
  batch = (jax.random.normal(key_x, (BATCH_SIZE, LAYER_SIZES[0])),
           jax.random.randint(key_y, (BATCH_SIZE,), 0, LAYER_SIZES[-1]))
  timed = []
  for name, make_tx in candidates.items():
    log(f'compiling {name} ...')
    start = time.perf_counter()
    t = Timed(name, make_tx(), params, batch)
    t.run(warmup, record=False)
    log(f'  {name}: compiled and warmed up in {time.perf_counter() - start:.1f} s')
    timed.append(t)
  done = 0
  while done < steps:
    n = min(block, steps - done)
    for t in timed:
      t.run(n, record=True)
    done += n
    log(f'timed {done}/{steps} steps of each optimizer')
  return timed


def markdown_table(timed: list[Timed]) -> str:
  adam = next(t for t in timed if t.name == 'adam')
  adam_full, adam_update = statistics.median(adam.full_times), statistics.median(adam.update_times)
  rows = ['| optimizer | full step (ms) | full step / Adam | update alone (ms) | update / Adam | '
          'state floats / param |',
          '|---|---:|---:|---:|---:|---:|']
  for t in timed:
    full, update = statistics.median(t.full_times), statistics.median(t.update_times)
    rows.append(f'| {t.name} | {1e3 * full:.3f} | {full / adam_full:.2f}x | {1e3 * update:.3f} | '
                f'{update / adam_update:.2f}x | {t.state_floats:.2f} |')
  return '\n'.join(rows)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--steps', type=int, default=300, help='timed calls per optimizer and program (>= 300 for '
                      'the published numbers)')
  parser.add_argument('--warmup', type=int, default=20, help='untimed calls after compilation')
  parser.add_argument('--block', type=int, default=50, help='calls per optimizer before moving to the next one')
  parser.add_argument('--architectures', default=','.join(sorted(lopt.BUILTIN_ARCHITECTURES)),
                      help='comma-separated architecture names (default: all built-in ones)')
  args = parser.parse_args(argv)

  names = [n for n in args.architectures.split(',') if n]
  for name in names:
    lopt.get_architecture(name)  # fails early, listing the valid names
  candidates = {'adam': lambda: optax.adam(1e-3)}
  for name in names:
    architecture = lopt.get_architecture(name)()
    candidates[name] = lambda a=architecture: a.transform(a.init(jax.random.key(0)))

  log(f'jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device(s)); MLP '
      f'{"-".join(map(str, LAYER_SIZES))}, batch {BATCH_SIZE}')
  timed = measure(candidates, args.steps, args.warmup, args.block)
  print(f'Median per-step wall time over {args.steps} steps (jax {jax.__version__}, '
        f'{jax.devices()[0].platform}), {LAYER_SIZES[0]}-{LAYER_SIZES[1]}-{LAYER_SIZES[2]} MLP, '
        f'{timed[0].num_params:,} parameters, batch {BATCH_SIZE}.\n')
  print(markdown_table(timed))


if __name__ == '__main__':
  main()
