"""Splitting the task ensemble over every device, on one host or many, with ``jax.jit`` and ``jax.sharding``.

The meta-gradient is a mean over the B task instances of an ensemble, and every per-instance array of an estimator's
state has the ensemble axis first (the :class:`meta_train.GradientEstimator` contract). So data parallelism is one
1-D device mesh with axis ``'tasks'``:

* every state leaf whose leading dimension is B is sharded along it, ``NamedSharding(mesh, P('tasks'))``;
* everything else (meta-parameters, the meta-optimizer state, scalars, PRNG keys) is replicated, ``P()``.

The unchanged, unsharded meta-step is then jitted with these shardings; XLA partitions the vmapped unroll and inserts
the all-reduce that the mean over instances needs. (``jax.pmap`` is in maintenance mode; this is its replacement.)
Placement never changes what is computed, only where, so a leaf that merely happens to have length B is still
handled correctly. The mean is reduced in a different order on several devices, so results agree with one device up
to float32 rounding, not bitwise.

Several hosts: every process runs the same program; :func:`initialize_distributed` calls
``jax.distributed.initialize`` (and on CPU selects the gloo collectives), after which ``jax.devices()`` lists the
devices of every process and the same mesh spans them all. See ``docs/distributed.md`` for the launch commands.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

ENSEMBLE_AXIS = 'tasks'


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins a multi-process run. Call before any other JAX call.

  With no arguments, ``jax.distributed.initialize`` detects the cluster (SLURM, Open MPI, TPU pods, or the
  ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` environment variables). On CPU the
  cross-process collectives need an implementation: gloo (TCP), the default since jax 0.5, is selected if a user
  config turned it off, since without one every cross-process reduction fails.
  """
  if jax.config.jax_cpu_collectives_implementation in (None, '', 'none'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)


def ensemble_mesh(devices=None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: every device of every process) with axis :data:`ENSEMBLE_AXIS`."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (ENSEMBLE_AXIS,))


def check_ensemble_size(ensemble_size: int, mesh: Mesh) -> None:
  """Raises a ``ValueError`` naming the fix if the ensemble cannot be split evenly over the mesh."""
  n = mesh.devices.size
  if ensemble_size % n:
    raise ValueError(
        f'tasks.num_tasks = {ensemble_size} cannot be split evenly over {n} devices; use a multiple of {n} '
        f'(for example tasks.num_tasks={n * max(1, round(ensemble_size / n))}).')


def ensemble_shardings(tree: Any, ensemble_size: int, mesh: Mesh) -> Any:
  """A tree of ``NamedSharding`` for ``tree`` (arrays or ``ShapeDtypeStruct``s): leading axis of length
  ``ensemble_size`` sharded over the mesh, every other leaf replicated."""
  split = NamedSharding(mesh, PartitionSpec(ENSEMBLE_AXIS))
  replicated = NamedSharding(mesh, PartitionSpec())

  def choose(x):
    shape = np.shape(x)
    return split if len(shape) >= 1 and shape[0] == ensemble_size and mesh.devices.size > 1 else replicated

  return jax.tree.map(choose, tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def put(tree: Any, shardings: Any) -> Any:
  """Places host arrays (identical on every process) onto ``shardings``, which may span several processes.

  Each process supplies only the shards of its own devices (``make_array_from_callback``), so this works in a
  multi-process run where ``jax.device_put`` onto non-addressable devices would not. Typed PRNG keys are placed as
  their key data and re-wrapped.
  """
  def place(x, sharding):
    if hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      impl = jax.random.key_impl(x)
      return jax.random.wrap_key_data(place(np.asarray(jax.random.key_data(x)), sharding), impl=impl)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(place, tree, shardings)


def to_host(tree: Any) -> Any:
  """NumPy copies of every leaf; leaves sharded across processes are gathered (all processes must call this)."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        x = x.addressable_data(0)
      else:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
          impl = jax.random.key_impl(x)
          data = multihost_utils.process_allgather(jax.random.key_data(x), tiled=True)
          return jax.random.wrap_key_data(np.asarray(data), impl=impl)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return x  # checkpoint.save stores key data; keep the typed key
    return np.asarray(jax.device_get(x))

  return jax.tree.map(fetch, tree)
