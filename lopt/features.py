"""Building blocks shared by the per-parameter learned optimizers (MLP, RNN-MLP, coordinatewise LSTM).

Flat layout. These optimizers apply one small network to every parameter, so they concatenate all parameter leaves
into one flat vector of ``N`` elements and keep per-parameter quantities **feature-major**, ``[F, N]``: the long axis
is contiguous and each network layer is one ``[H, F] @ [F, N]`` matmul, whatever the number of leaves (on 2 CPU cores
a per-parameter RNN is ~2x faster this way than in the batch-major ``[N, F]`` layout, see DESIGN.md). A leaf is a
contiguous *segment* of the flat vector; ``sizes`` (a static tuple) gives each segment's length, so per-tensor
statistics are static slices, with no scatter. Zero-size leaves are empty segments: their statistics are 0 (never NaN).

The LSTM cell used by two of the optimizers is here too, in ``flax.linen.LSTMCell``'s parameter layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from lopt import base

# --------------------------------------------------------------------------------------------- flat layout


def flatten(leaves: Sequence[jax.Array]) -> jax.Array:
  """Concatenates the raveled ``leaves`` into one ``[N]`` vector (scalars become one element)."""
  if not leaves:
    return jnp.zeros((0,), jnp.float32)
  return jnp.concatenate([jnp.ravel(x) for x in leaves])


def flat_inputs(grads, params) -> tuple[jax.Array, jax.Array, tuple[int, ...]]:
  """Float32 ``(g [N], w [N], sizes)``, for inputs already checked by :func:`lopt.base.transformation`."""
  param_leaves = base.leaves_f32(params)
  sizes = tuple(int(x.size) for x in param_leaves)
  return flatten(base.leaves_f32(grads)), flatten(param_leaves), sizes


def num_elements(params) -> int:
  """The total number of elements of ``params``' leaves (the flat length ``N``)."""
  return sum(int(math.prod(jnp.shape(x))) for x in jax.tree.leaves(params))


def unflatten(flat: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
  """Splits a ``[N]`` vector back into segments of ``sizes`` (flat; :func:`lopt.base.updates_like` reshapes)."""
  offsets = [0]
  for n in sizes:
    offsets.append(offsets[-1] + n)
  return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def segment_mean(x: jax.Array, sizes: Sequence[int]) -> jax.Array:
  """Per-tensor means of a feature-major ``[F, N]`` array: ``[F, T]`` with ``T = len(sizes)`` (0 for empty ones)."""
  means, start = [], 0
  for n in sizes:
    means.append(base.safe_mean(x[:, start:start + n], axis=1))
    start += n
  return jnp.stack(means, axis=1) if means else jnp.zeros((x.shape[0], 0), x.dtype)


def segment_broadcast(per_tensor: jax.Array, sizes: Sequence[int]) -> jax.Array:
  """Broadcasts ``[F, T]`` per-tensor values to every element of each segment: ``[F, N]``.

  A concatenation of broadcasts, which XLA fuses into the elementwise consumer (no gather).
  """
  num_features = per_tensor.shape[0]
  pieces = [jnp.broadcast_to(per_tensor[:, i:i + 1], (num_features, n)) for i, n in enumerate(sizes)]
  return jnp.concatenate(pieces, axis=1) if pieces else jnp.zeros((num_features, 0), per_tensor.dtype)


def second_moment_normalize(x: jax.Array, sizes: Sequence[int], eps: float) -> jax.Array:
  """``x * rsqrt(eps + mean_over_tensor(x^2))`` for each feature row of ``x: [F, N]`` and each tensor.

  The per-tensor feature normalisation of Metz et al. 2019/2020 (SPEC 3.4, 4): every feature has unit second moment
  within each tensor, so the network sees the same scale whatever the tensor's gradient scale.
  """
  return x * segment_broadcast(jax.lax.rsqrt(eps + segment_mean(jnp.square(x), sizes)), sizes)


# --------------------------------------------------------------------------------------------- accumulators


def decays_column(decays: Sequence[float]) -> jax.Array:
  """``decays`` as a ``[K, 1]`` float32 column, to broadcast against ``[K, N]`` accumulators."""
  return jnp.asarray(decays, jnp.float32)[:, None]


def update_moments(moments: jax.Array, x: jax.Array, decays: Sequence[float]) -> jax.Array:
  """Exponential moving averages at K decays: ``m_k <- d_k m_k + (1 - d_k) x``; ``moments: [K, N]``, ``x: [N]``.

  ``1 - d_k`` is computed in double precision before rounding: in float32, ``1 - float32(0.9999)`` is off by 1.7e-4
  relative, which would bias the slow accumulators.
  """
  one_minus = jnp.asarray([1.0 - d for d in decays], jnp.float32)[:, None]
  return decays_column(decays) * moments + one_minus * x[None, :]


# --------------------------------------------------------------------------------------------- input encodings


def tanh_time_embedding(step: jax.Array, timescales: Sequence[float]) -> jax.Array:
  """``tanh(t / tau - 1)`` for each ``tau`` (Metz et al. 2019, SPEC 3.4): ``[len(timescales)]``.

  Each entry moves from ``tanh(-1)`` towards 1 around ``t ~ tau``, so the network can tell how far training is.
  """
  return jnp.tanh(jnp.asarray(step, jnp.float32) / jnp.asarray(timescales, jnp.float32) - 1.0)


def sin_time_embedding(step: jax.Array, timescales: Sequence[float]) -> jax.Array:
  """``sin(t / (tau * pi))`` for each ``tau`` (Metz et al. 2020, SPEC 4): ``[len(timescales)]``."""
  return jnp.sin(jnp.asarray(step, jnp.float32) / (jnp.asarray(timescales, jnp.float32) * math.pi))


def clipped_log_abs(x: jax.Array, eps: float = 1e-8, bound: float = 5.0) -> jax.Array:
  """``clip(log(eps + |x|), -bound, bound)``: a magnitude feature that is finite for ``x = 0`` (SPEC 4)."""
  return jnp.clip(jnp.log(eps + jnp.abs(x)), -bound, bound)


def log_and_sign(g: jax.Array, k: float, eps: float = 1e-8) -> jax.Array:
  """Andrychowicz et al. 2016's gradient preprocessing, ``[2, *g.shape]``.

  ``(log|g| / k, sign(g))`` if ``|g| >= exp(-k)``, else ``(-1, exp(k) g)``, written as two clamps:
  ``max(log(|g| + eps) / k, -1)`` and ``clip(exp(k) g, -1, 1)``. It maps gradients spanning many orders of magnitude
  to O(1) inputs while keeping the sign. ``eps`` only keeps ``log`` (and its derivative, zeroed by the clamp) finite
  at ``g = 0``; it changes no value for ``|g| >= exp(-k)``.
  """
  magnitude = jnp.maximum(jnp.log(jnp.abs(g) + eps) / k, -1.0)
  sign = jnp.clip(g * math.exp(k), -1.0, 1.0)
  return jnp.stack([magnitude, sign])


# --------------------------------------------------------------------------------------------- LSTM cell

LSTMParams = dict[str, dict[str, jax.Array]]
_LSTM_GATES = ('i', 'f', 'g', 'o')


def lstm_init(key: jax.Array, input_size: int, hidden_size: int, forget_bias: float = 1.0) -> LSTMParams:
  """LSTM parameters in ``flax.linen.LSTMCell``'s layout: ``i{i,f,g,o}: {'kernel': [I, H]}``,
  ``h{i,f,g,o}: {'kernel': [H, H], 'bias': [H]}``.

  Kernels are LeCun-normal (``N(0, 1/fan_in)``). The forget-gate bias starts at ``forget_bias`` (1.0, the constant
  that Sonnet's and Haiku's LSTMs add to the forget gate, so that the cell remembers by default); other biases 0.
  """
  keys = jax.random.split(key, 8)
  params: LSTMParams = {}
  for k_in, k_hid, gate in zip(keys[:4], keys[4:], _LSTM_GATES):
    input_kernel = jax.random.normal(k_in, (input_size, hidden_size), jnp.float32) / math.sqrt(max(input_size, 1))
    hidden_kernel = jax.random.normal(k_hid, (hidden_size, hidden_size), jnp.float32) / math.sqrt(hidden_size)
    params['i' + gate] = {'kernel': input_kernel}
    params['h' + gate] = {'kernel': hidden_kernel,
                          'bias': jnp.full((hidden_size,), forget_bias if gate == 'f' else 0.0, jnp.float32)}
  return params


def lstm_apply(params: LSTMParams, c: jax.Array, h: jax.Array, x: jax.Array, *,
               feature_major: bool = False) -> tuple[jax.Array, jax.Array]:
  """One LSTM step, ``flax.linen.LSTMCell``'s equations; returns ``(c', h')``.

  ``i, f, o = sigmoid(W_i* x + W_h* h + b_*)``, ``g = tanh(W_ig x + W_hg h + b_g)``, ``c' = f c + i g``,
  ``h' = o tanh(c')``. Batch-major: ``x: [..., I]``, ``c, h: [..., H]``; feature-major: ``x: [I, N]``,
  ``c, h: [H, N]``.
  """
  # One matmul on [x; h] with the stacked kernel [[W_i*]; [W_h*]]: on CPU, feature-major over ~50k coordinates, this
  # is ~2.5x faster for a two-layer LSTM(20) than two matmuls whose [4H, N] results are then added.
  kernel = jnp.concatenate([
      jnp.concatenate([params['i' + g]['kernel'] for g in _LSTM_GATES], axis=1),  # [I, 4H]
      jnp.concatenate([params['h' + g]['kernel'] for g in _LSTM_GATES], axis=1)])  # [H, 4H]
  bias = jnp.concatenate([params['h' + g]['bias'] for g in _LSTM_GATES])  # [4H]
  if feature_major:
    gates = kernel.T @ jnp.concatenate([x, h], axis=0) + bias[:, None]
    axis = 0
  else:
    gates = jnp.concatenate([x, h], axis=-1) @ kernel + bias
    axis = -1
  i, f, g, o = jnp.split(gates, 4, axis=axis)
  new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  return new_c, jax.nn.sigmoid(o) * jnp.tanh(new_c)


# --------------------------------------------------------------------------------------------- dense layers


def dense_init(key: jax.Array, input_size: int, output_size: int) -> dict[str, jax.Array]:
  """A dense layer in ``flax.linen.Dense``'s layout, ``{'kernel': [in, out], 'bias': [out]}``; LeCun-normal kernel."""
  kernel = jax.random.normal(key, (input_size, output_size), jnp.float32) / math.sqrt(max(input_size, 1))
  return {'kernel': kernel, 'bias': jnp.zeros((output_size,), jnp.float32)}
