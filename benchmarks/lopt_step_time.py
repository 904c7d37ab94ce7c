"""Per-step cost of learned optimizers on three model families, as ratios to optax.adam measured in the same run.

Models (``--models``; synthetic data, since timing does not depend on the data's values; nothing is downloaded):

* ``mlp``: the 784-64-10 ReLU MLP of the peer-library reference numbers (docs/benchmarks.md, "Reference numbers from
  a peer library"; 50,890 parameters), softmax cross-entropy;
* ``convnet``: a ConvNet on 32x32x3 images (three 3x3 convolutions, 16/32/64 channels, the last two with stride 2,
  then dense 4096-64-10; 286,442 parameters), softmax cross-entropy over 10 classes;
* ``transformer``: a 4-layer pre-LayerNorm decoder-only transformer language model (width 128, 4 heads, MLP 512,
  learned positions, vocabulary 8192, untied output layer, context 64; 2,906,880 parameters) on random tokens,
  next-token cross-entropy. Written with ``flax.linen`` below.

Each model is timed at two batch sizes (``--size`` picks them, see ``SIZES``). Optimizers (``--optimizers``): Adam
and AdamW (``optax``, lr 1e-3, AdamW weight decay 1e-4), the hierarchical RNN (``lopt.hierarchical_rnn()``) and the
MLP optimizer (``lopt.mlp_lopt()``), both with their shipped weights (``hierarchical_rnn_bf16`` / ``mlp_lopt_bf16``:
the same with ``state_dtype='bfloat16'``; ``hierarchical_rnn_no_brake`` / ``mlp_lopt_no_brake``: the same without
their loss brake, to measure what it costs); any other built-in architecture name
(``lopt.BUILTIN_ARCHITECTURES``) runs at its initial weights. Per model and optimizer, programs jitted with the
optimizer state (and parameters) donated, as a training loop would:

* full step, once per batch size: forward + backward + ``tx.update(grads, state, params, value=loss)`` +
  ``optax.apply_updates``;
* update alone: ``tx.update`` on fixed gradients, reported per parameter (ns / parameter): the number that transfers
  across models of different sizes.

State size: bytes of the optimizer state's leaves (the actual ``tx.init`` pytree, step counters included) per
parameter (Adam in float32: 8); a last table gives it for every optimizer in ``OPTIMIZERS``, timed or not.

Clock (``--clock``): every call is timed to ``block_until_ready`` in both wall time and process CPU time
(``time.process_time``: all threads of this process, so a multi-threaded XLA:CPU op counts the CPU time of every
thread it used, and load from other processes does not count). ``auto`` reports CPU time on the CPU backend (the
shared CI machine's wall times are dominated by other jobs) and wall time on an accelerator (where the host mostly
waits); the output says which. A wall-time ratio table follows the main one in either case. Each time is the median
over ``--steps`` calls after ``--warmup`` calls; within a model, optimizers, batch sizes and programs run in
interleaved blocks of ``--block`` calls, so load that comes and goes is spread over all of them.

Usage::

    python -m benchmarks.lopt_step_time                      # all models, the published setting (~25 min on 2 cores)
    python -m benchmarks.lopt_step_time --size quick         # same models, fewer calls: a few minutes on 2 CPU cores
    python -m benchmarks.lopt_step_time --size tiny          # miniature models: checks that everything runs
    python -m benchmarks.lopt_step_time --models mlp --optimizers adam,hierarchical_rnn,learnable_adam --steps 1000

Prints markdown tables on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import lopt

# ---- models ---------------------------------------------------------------------------------------------------------


class MLP(nn.Module):
  """ReLU MLP on flat inputs; ``sizes`` includes the input and output widths."""
  sizes: tuple[int, ...]

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.sizes[1:]):
      x = nn.Dense(width)(x)
      if i < len(self.sizes) - 2:
        x = nn.relu(x)
    return x


class ConvNet(nn.Module):
  """3x3 convolutions (the first at stride 1, the others at stride 2, SAME padding), then a dense ReLU layer."""
  channels: tuple[int, ...]
  hidden: int
  classes: int = 10

  @nn.compact
  def __call__(self, x):
    for i, c in enumerate(self.channels):
      x = nn.relu(nn.Conv(c, (3, 3), strides=(1, 1) if i == 0 else (2, 2))(x))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.classes)(nn.relu(nn.Dense(self.hidden)(x)))


class DecoderBlock(nn.Module):
  """Pre-LayerNorm transformer block: causal multi-head self-attention, then a GELU MLP, both residual."""
  heads: int
  mlp_width: int

  @nn.compact
  def __call__(self, x, mask):
    h = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h, mask=mask)
    h = nn.Dense(self.mlp_width)(nn.LayerNorm()(x))
    return x + nn.Dense(x.shape[-1])(nn.gelu(h))


class TransformerLM(nn.Module):
  """Decoder-only language model: token embedding + learned positions, blocks, final LayerNorm, untied output."""
  vocab: int
  width: int
  heads: int
  layers: int
  mlp_width: int
  context: int

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab, self.width)(tokens)
    x = x + self.param('positions', nn.initializers.normal(0.02), (self.context, self.width))[:tokens.shape[1]]
    mask = nn.make_causal_mask(tokens)
    for _ in range(self.layers):
      x = DecoderBlock(self.heads, self.mlp_width)(x, mask)
    return nn.Dense(self.vocab)(nn.LayerNorm()(x))


@dataclasses.dataclass(frozen=True)
class Model:
  """A flax module, how to draw a batch for it, and a description for the output."""
  name: str
  module: nn.Module
  batch_sizes: tuple[int, ...]
  description: str

  def make_batch(self, key: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """(inputs, integer targets) of random values."""
    m = self.module
    kx, ky = jax.random.split(key)
    if isinstance(m, TransformerLM):
      tokens = jax.random.randint(kx, (batch_size, m.context + 1), 0, m.vocab)
      return tokens[:, :-1], tokens[:, 1:]
    if isinstance(m, ConvNet):
      return jax.random.normal(kx, (batch_size, 32, 32, 3)), jax.random.randint(ky, (batch_size,), 0, m.classes)
    return jax.random.normal(kx, (batch_size, m.sizes[0])), jax.random.randint(ky, (batch_size,), 0, m.sizes[-1])

  def init(self, key: jax.Array) -> Any:
    return self.module.init(key, self.make_batch(key, 1)[0])['params']

  def loss(self, params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
    logits = self.module.apply({'params': params}, inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def _transformer(vocab, width, heads, layers, mlp_width, context, batch_sizes):
  return Model('transformer', TransformerLM(vocab, width, heads, layers, mlp_width, context), batch_sizes,
               f'{layers}-layer transformer LM (width {width}, {heads} heads, MLP {mlp_width}, vocabulary {vocab}, '
               f'context {context}), batch in sequences of {context} random tokens')


def _convnet(channels, hidden, batch_sizes):
  return Model('convnet', ConvNet(channels, hidden), batch_sizes,
               f'ConvNet 32x32x3, 3x3 convs {"/".join(map(str, channels))} channels, dense {hidden}-10')


def _mlp(sizes, batch_sizes):
  return Model('mlp', MLP(sizes), batch_sizes, f'{"-".join(map(str, sizes))} ReLU MLP')


#: --size: the models (same architectures at every size but ``tiny``) and the default number of calls.
SIZES = {
    'full': dict(steps=60, warmup=5, block=10, models=[
        _mlp((784, 64, 10), (128, 1024)),
        _convnet((16, 32, 64), 64, (32, 128)),
        _transformer(8192, 128, 4, 4, 512, 64, (4, 16)),
    ]),
    'quick': dict(steps=12, warmup=2, block=4, models=[
        _mlp((784, 64, 10), (128, 1024)),
        _convnet((16, 32, 64), 64, (32, 128)),
        _transformer(8192, 128, 4, 4, 512, 64, (4, 16)),
    ]),
    'tiny': dict(steps=4, warmup=1, block=2, models=[
        _mlp((784, 64, 10), (16, 64)),
        _convnet((4, 8, 8), 16, (2, 8)),
        _transformer(256, 32, 2, 1, 64, 16, (2, 4)),
    ]),
}

# ---- optimizers -----------------------------------------------------------------------------------------------------

def _without_brake(name: str) -> optax.GradientTransformation:
  """The shipped optimizer ``name`` with its loss brake turned off (a factory's ``None`` means the shipped value)."""
  architecture, meta_params = lopt.load_pretrained(name)
  return dataclasses.replace(architecture, loss_brake=None).transform(meta_params)


#: Optimizers by name; built-in learned-optimizer architectures not listed here run at their initial weights.
OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    'adam': lambda: optax.adam(1e-3),
    'adamw': lambda: optax.adamw(1e-3, weight_decay=1e-4),
    'hierarchical_rnn': lambda: lopt.hierarchical_rnn(),  # shipped weights (and their config)
    'mlp_lopt': lambda: lopt.mlp_lopt(),                  # shipped weights
    # The same shipped weights with the per-parameter state stored in bfloat16 (arithmetic stays float32).
    'hierarchical_rnn_bf16': lambda: lopt.hierarchical_rnn(state_dtype='bfloat16'),
    'mlp_lopt_bf16': lambda: lopt.mlp_lopt(state_dtype='bfloat16'),
    # The same shipped weights without their loss brake (HRNN release 10 on, MLP release 7 on): what the brake costs.
    'hierarchical_rnn_no_brake': lambda: _without_brake('hierarchical_rnn'),
    'mlp_lopt_no_brake': lambda: _without_brake('mlp_lopt'),
}
DEFAULT_OPTIMIZERS = 'adam,adamw,hierarchical_rnn,mlp_lopt'


def make_optimizer(name: str) -> optax.GradientTransformation:
  if name in OPTIMIZERS:
    return OPTIMIZERS[name]()
  architecture = lopt.get_architecture(name)()  # raises, listing the valid names, for an unknown one
  return architecture.transform(architecture.init(jax.random.key(0)))


def tree_bytes(tree: Any) -> int:
  """Bytes held by a pytree's array leaves (typed PRNG keys counted by their key data)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    total += leaf.size * leaf.dtype.itemsize
  return total


# ---- timing ---------------------------------------------------------------------------------------------------------


def log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


class Clocked:
  """Per-call wall and process-CPU times of one jitted program."""

  def __init__(self):
    self.wall: list[float] = []
    self.cpu: list[float] = []

  def call(self, fn: Callable[[], Any], record: bool) -> Any:
    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    if record:
      self.cpu.append(time.process_time() - cpu)
      self.wall.append(time.perf_counter() - wall)
    return out

  def median(self, clock: str) -> float:
    return statistics.median(self.cpu if clock == 'cpu' else self.wall)


class Timed:
  """One optimizer on one model: a full-step program per batch size and the update alone, with their running state."""

  def __init__(self, name: str, model: Model, params: Any, batches: dict[int, tuple[jax.Array, jax.Array]]):
    self.name = name
    tx = make_optimizer(name)
    self.num_params = sum(x.size for x in jax.tree.leaves(params))
    self.batches = batches

    def full_step(params, state, inputs, targets):
      loss, grads = jax.value_and_grad(model.loss)(params, inputs, targets)
      updates, state = tx.update(grads, state, params, value=loss)
      return optax.apply_updates(params, updates), state, loss

    def update_only(grads, state, params, loss):
      return tx.update(grads, state, params, value=loss)

    self._full_step = jax.jit(full_step, donate_argnums=(0, 1))
    self._update_only = jax.jit(update_only, donate_argnums=(1,))
    # Copies: some architectures' init returns one array under several names, which XLA refuses to donate twice.
    fresh_state = lambda: jax.tree.map(jnp.copy, tx.init(params))
    self.runs = {b: [jax.tree.map(jnp.copy, params), fresh_state()] for b in batches}
    self.update_state = fresh_state()
    self.state_bytes_per_param = tree_bytes(self.update_state) / self.num_params
    self.params = params
    self.loss, self.grads = jax.jit(jax.value_and_grad(model.loss))(params, *batches[min(batches)])
    self.full = {b: Clocked() for b in batches}
    self.update = Clocked()

  def run(self, num_calls: int, record: bool) -> None:
    for b, run in self.runs.items():
      for _ in range(num_calls):
        run[0], run[1], _ = self.full[b].call(lambda: self._full_step(run[0], run[1], *self.batches[b]), record)
    for _ in range(num_calls):
      _, self.update_state = self.update.call(
          lambda: self._update_only(self.grads, self.update_state, self.params, self.loss), record)


def measure_model(model: Model, optimizers: list[str], steps: int, warmup: int, block: int) -> list[Timed]:
  key_params, key_batch = jax.random.split(jax.random.key(0))
  params = jax.jit(model.init)(key_params)
  batches = {b: jax.jit(model.make_batch, static_argnums=1)(key_batch, b) for b in model.batch_sizes}
  timed = []
  for name in optimizers:
    start = time.perf_counter()
    t = Timed(name, model, params, batches)
    t.run(max(warmup, 1), record=False)  # at least one call: compiles every program before timing starts
    log(f'  {model.name} / {name}: compiled and warmed up in {time.perf_counter() - start:.1f} s')
    timed.append(t)
  done = 0
  while done < steps:
    n = min(block, steps - done)
    for t in timed:
      t.run(n, record=True)
    done += n
    log(f'  {model.name}: timed {done}/{steps} calls of each program')
  return timed


# ---- output ---------------------------------------------------------------------------------------------------------


def model_table(timed: list[Timed], batch_sizes: tuple[int, ...], clock: str) -> str:
  adam = next(t for t in timed if t.name == 'adam')
  header = ['optimizer']
  for b in batch_sizes:
    header += [f'step B={b} (ms)', f'B={b} / Adam']
  header += ['update (ms)', 'update ns / param', 'update / Adam', 'state bytes / param']
  rows = ['| ' + ' | '.join(header) + ' |', '|---|' + '---:|' * (len(header) - 1)]
  for t in timed:
    cells = [t.name]
    for b in batch_sizes:
      full = t.full[b].median(clock)
      cells += [f'{1e3 * full:.3f}', f'{full / adam.full[b].median(clock):.2f}x']
    update = t.update.median(clock)
    cells += [f'{1e3 * update:.3f}', f'{1e9 * update / t.num_params:.2f}', f'{update / adam.update.median(clock):.2f}x',
              f'{t.state_bytes_per_param:.2f}']
    rows.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows)


def ratio_table(results: list[tuple[Model, list[Timed]]], clock: str) -> str:
  """Compact all-model table: full step / Adam at each batch size and update ns / parameter."""
  names = [t.name for t in results[0][1]]
  header = ['optimizer']
  for model, _ in results:
    header += [f'{model.name} B={b} / Adam' for b in model.batch_sizes] + [f'{model.name} update ns/param']
  rows = ['| ' + ' | '.join(header) + ' |', '|---|' + '---:|' * (len(header) - 1)]
  for i, name in enumerate(names):
    cells = [name]
    for model, timed in results:
      adam, t = next(x for x in timed if x.name == 'adam'), timed[i]
      cells += [f'{t.full[b].median(clock) / adam.full[b].median(clock):.2f}x' for b in model.batch_sizes]
      cells.append(f'{1e9 * t.update.median(clock) / t.num_params:.2f}')
    rows.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows)


def state_table(models: list[Model]) -> str:
  """Optimizer state bytes per parameter of every optimizer in OPTIMIZERS on every model, from the shapes and dtypes
  of ``tx.init`` (``jax.eval_shape``: nothing is compiled or timed)."""
  rows = ['| optimizer | ' + ' | '.join(m.name for m in models) + ' |', '|---|' + '---:|' * len(models)]
  params = [jax.eval_shape(m.init, jax.random.key(0)) for m in models]
  for name in OPTIMIZERS:
    tx = make_optimizer(name)
    cells = [f'{tree_bytes(jax.eval_shape(tx.init, p)) / sum(x.size for x in jax.tree.leaves(p)):.2f}' for p in params]
    rows.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--size', choices=sorted(SIZES), default='full',
                      help='full: the published setting; quick: same models, fewer calls (a few minutes on 2 CPU '
                           'cores); tiny: miniature models and batches, to check that everything runs')
  parser.add_argument('--quick', action='store_const', const='quick', dest='size', help='same as --size quick')
  parser.add_argument('--models', default=None, help='comma-separated subset of mlp,convnet,transformer')
  parser.add_argument('--optimizers', '--architectures', default=DEFAULT_OPTIMIZERS,
                      help='comma-separated names: adam, adamw, hierarchical_rnn and mlp_lopt (shipped weights), '
                           'hierarchical_rnn_bf16 and mlp_lopt_bf16 (the same, bfloat16 state), '
                           'hierarchical_rnn_no_brake and mlp_lopt_no_brake (the same, loss brake off), or '
                           'any other built-in architecture (initial weights); adam is always added as the baseline')
  parser.add_argument('--steps', type=int, default=None, help='timed calls per program (default: per --size)')
  parser.add_argument('--warmup', type=int, default=None, help='untimed calls after compilation (default: per --size)')
  parser.add_argument('--block', type=int, default=None, help='calls per program before moving to the next one')
  parser.add_argument('--clock', choices=('auto', 'cpu', 'wall'), default='auto',
                      help='what the main tables report: process CPU time or wall time (auto: CPU time on the CPU '
                           'backend, wall time on an accelerator)')
  args = parser.parse_args(argv)

  size = SIZES[args.size]
  steps, warmup, block = (size[k] if getattr(args, k) is None else getattr(args, k)
                          for k in ('steps', 'warmup', 'block'))
  if steps < 1 or warmup < 0 or block < 1:
    parser.error(f'need --steps >= 1, --warmup >= 0, --block >= 1; got {steps}, {warmup}, {block}.')
  models = {m.name: m for m in size['models']}
  wanted = list(models) if args.models is None else [m for m in args.models.split(',') if m]
  unknown = [m for m in wanted if m not in models]
  if unknown or not wanted:
    parser.error(f'--models: unknown {unknown or "(empty)"}; valid: {",".join(models)}.')
  optimizers = [o for o in args.optimizers.split(',') if o]
  if 'adam' not in optimizers:
    optimizers.insert(0, 'adam')
  unknown = [n for n in optimizers if n not in OPTIMIZERS and n not in lopt.BUILTIN_ARCHITECTURES]
  if unknown:
    parser.error(f'--optimizers: unknown {unknown}; valid: {",".join(OPTIMIZERS)}, or a built-in architecture '
                 f'({",".join(sorted(lopt.BUILTIN_ARCHITECTURES))}) at its initial weights.')
  platform = jax.devices()[0].platform
  clock = args.clock if args.clock != 'auto' else ('cpu' if platform == 'cpu' else 'wall')
  clock_text = ('process CPU time (time.process_time: all threads of this process; other processes\' load excluded)'
                if clock == 'cpu' else 'wall time')
  machine = (f'jax {jax.__version__}, backend {platform}, {jax.device_count()} device(s) '
             f'({jax.devices()[0].device_kind}), {os.cpu_count()} CPU(s)')
  log(f'{machine}; size {args.size}: {steps} timed calls per program, clock: {clock}')

  print(f'Optimizer step time, size {args.size}: median {clock_text} per jitted call, {steps} calls per program after '
        f'{warmup} warm-up calls, programs interleaved in blocks of {block}; {machine}.\n', flush=True)
  results = []
  for name in wanted:  # each model's table is printed as soon as it is measured (a run cut short keeps them)
    model = models[name]
    log(f'{model.name}: {model.description}; compiling ...')
    timed = measure_model(model, optimizers, steps, warmup, block)
    results.append((model, timed))
    print(f'### {model.name}: {model.description}, {timed[0].num_params:,} parameters\n')
    print(model_table(timed, model.batch_sizes, clock) + '\n', flush=True)
  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
  print(f'1-min load average at the end: {load:.1f}.\n')
  print(f'### Summary ({clock_text}): full step / Adam and update ns / parameter\n')
  print(ratio_table(results, clock) + '\n')
  other = 'wall' if clock == 'cpu' else 'cpu'
  print(f'### Summary in {"wall time" if other == "wall" else "process CPU time"}, same calls\n')
  print(ratio_table(results, other) + '\n')
  print('### Optimizer state, bytes per parameter (shapes and dtypes of tx.init, step counters included)\n')
  print(state_table([model for model, _ in results]))


if __name__ == '__main__':
  main()
