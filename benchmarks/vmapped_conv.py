"""A ConvNet vmapped over task instances: Flax's convolution against the patch formulation (``conv_impl='patches'``).

Meta-training evaluates a task on ``B`` instances at once with ``jax.vmap``, each instance with its own weights. A
vmapped ``lax.conv`` becomes one grouped convolution; :class:`tasks.image_classification.PatchConv` computes the same
layer as strided slices of the input times the kernel, which vmaps into a batched matmul. This script times one
gradient of the training loss, vmapped over ``--instances`` instances, for both implementations, and the unbatched
gradient of one instance for reference.

Setting: the validation suite's ConvNet shape (channels 8, 16, 16, stride 2, 3x3 kernels) on the generated 16x16
images of :mod:`tasks.synthetic_images`, batch 64, and the 28x28 version (the meta-training problem
``synthetic_images_conv_16x32x32_relu_bs32`` is twice as wide, with batch 32). Each program is jitted and run once before timing; the two implementations run in
interleaved blocks so that load which comes and goes on a shared machine is spread over both. Reported: the median
over ``--calls`` calls, in milliseconds, and the ratio of the Flax time to the patch time (above 1: patches faster).

    python -m benchmarks.vmapped_conv
    python -m benchmarks.vmapped_conv --instances 16 --calls 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax

from tasks import datasets
from tasks import image_classification as ic


def _timer(fn, *args):
  jax.block_until_ready(fn(*args))

  def once():
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start
  return once


def _programs(size: int, instances: int, batch_size: int):
  """{(impl, mode): timer} for one image size."""
  data = datasets.load_synthetic_images(size=size)
  out = {}
  for impl in ic.CONV_IMPLS:
    task = ic.conv_task(data, (8, 16, 16), 'relu', batch_size, conv_impl=impl)

    def grad(params, key, task=task):
      return jax.grad(task.loss)(params, key, task.batch(key))
    keys = jax.random.split(jax.random.key(0), instances)
    out[impl, f'vmap x{instances}'] = _timer(jax.jit(jax.vmap(grad)), jax.vmap(task.init)(keys), keys)
    out[impl, 'one instance'] = _timer(jax.jit(grad), task.init(keys[0]), keys[0])
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--instances', type=int, default=8)
  parser.add_argument('--calls', type=int, default=60)
  parser.add_argument('--block', type=int, default=10)
  parser.add_argument('--batch-size', type=int, default=64)
  args = parser.parse_args(argv)

  print('| image size | program | lax.conv (ms) | patches (ms) | lax / patches |')
  print('|---|---|---:|---:|---:|')
  for size in (16, 28):
    print(f'compiling {size}x{size}...', file=sys.stderr)
    timers = _programs(size, args.instances, args.batch_size)
    times = {key: [] for key in timers}
    while min(len(v) for v in times.values()) < args.calls:
      for key, timer in timers.items():
        times[key] += [timer() for _ in range(args.block)]
    for mode in dict.fromkeys(mode for _, mode in timers):
      lax_ms, patch_ms = (1e3 * statistics.median(times[impl, mode]) for impl in ic.CONV_IMPLS)
      print(f'| {size}x{size} | grad, {mode} | {lax_ms:.2f} | {patch_ms:.2f} | {lax_ms / patch_ms:.2f}x |')
  print(f'\n{args.calls} calls each; jax {jax.__version__}, {jax.devices()[0].platform}; '
        f'1-min load average {os.getloadavg()[0]:.1f}.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
