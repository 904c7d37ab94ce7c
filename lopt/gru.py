"""A GRU cell as pure functions, in ``flax.linen.GRUCell``'s parameter layout, with an injected bias.

The hierarchical RNN optimizer (Wichrowska et al. 2017, "Learned Optimizers that Scale and Generalize") runs one GRU
per parameter, one per tensor and one global GRU, and feeds each level's state into the gates of the level below as an
additive bias. This module holds that cell.

Equations (``flax.linen.GRUCell``'s exactly, plus the injected bias ``beta = [beta_r; beta_z; beta_n]``)::

  r  = sigmoid(W_ir x + b_ir + W_hr h + beta_r)
  z  = sigmoid(W_iz x + b_iz + W_hz h + beta_z)
  n  = tanh(W_in x + b_in + r * (W_hn h + b_hn) + beta_n)
  h' = (1 - z) * n + z * h

With ``beta = 0`` this is ``flax.linen.GRUCell(features=H).apply({'params': params}, h, x)`` (tested). The parameter
dict has flax.linen's layout: ``ir``, ``iz``, ``in`` each ``{'kernel': [I, H], 'bias': [H]}``; ``hr``, ``hz``
``{'kernel': [H, H]}``; ``hn`` ``{'kernel': [H, H], 'bias': [H]}``. (``flax.nnx.GRUCell`` lays its parameters out
differently; we follow linen.)

Difference from the released TensorFlow ``BiasGRUCell`` (docs/algorithms.md §2.2): that cell computes the candidate as
``tanh(W_c [x; r*h] + b_c + beta_c)``, i.e. the reset gate multiplies ``h`` *before* the matmul, and has no ``b_hn``.
We use the flax cell (the project is built on Flax's GRU) with ``r`` applied after the recurrent matmul; the two are
equally expressive families of gated units but their weights are not interchangeable.

Initialisation (docs/algorithms.md §2.8, ``utils.affine`` of the released code): the TF cell applies one affine map to
``[x; h]``, so every kernel here (the input and recurrent halves of that map) is drawn from
``N(0, (scale / sqrt(I + H))^2)`` with ``scale = 0.5``; the gate biases ``b_ir`` and ``b_iz`` are 2.2, so
``z = sigmoid(2.2) ~ 0.9`` keeps ~90% of the old state at initialisation; the candidate biases ``b_in``, ``b_hn`` are 0.

Layouts. :func:`gru_apply` works batch-major (``x: [..., I]``, ``h: [..., H]``, as flax) or **feature-major**
(``x: [I, N]``, ``h: [H, N]``). The per-parameter GRU of the optimizer runs feature-major: over ~50k parameters with
H = 10 the long axis is then the contiguous one, which measured faster on CPU than flax's layout (timings in
docs/benchmarks.md, "Reference numbers from a peer library" and ``lopt/gru.py``).
It uses :func:`stacked_kernel` and :func:`gru_apply_stacked`: one matmul on the stacked ``[x; h]`` (``[4H, I + H]``
kernel), then the elementwise part; same equations, only the summation order inside the matmul differs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

GRUParams = dict[str, dict[str, jax.Array]]

DEFAULT_WEIGHT_SCALE = 0.5
DEFAULT_GATE_BIAS = 2.2

_INPUT_GATES = ('ir', 'iz', 'in')
_HIDDEN_GATES = ('hr', 'hz', 'hn')


def gru_init(key: jax.Array, input_size: int, hidden_size: int, *, weight_scale: float = DEFAULT_WEIGHT_SCALE,
             gate_bias: float = DEFAULT_GATE_BIAS) -> GRUParams:
  """Returns GRU parameters in flax.linen.GRUCell's layout, initialised as the Wichrowska et al. 2017 cell.

  Args:
    key: PRNG key.
    input_size: I, the number of input features.
    hidden_size: H, the state size.
    weight_scale: kernels are ``N(0, (weight_scale / sqrt(I + H))^2)`` (fan-in of the TF cell's affine on [x; h]).
    gate_bias: initial ``b_ir`` and ``b_iz``.
  """
  if input_size < 0 or hidden_size <= 0:
    raise ValueError(f'gru_init needs input_size >= 0 and hidden_size > 0, got {input_size} and {hidden_size}.')
  std = weight_scale / (input_size + hidden_size) ** 0.5
  keys = jax.random.split(key, 6)
  params: dict[str, dict[str, Any]] = {}
  for k, name in zip(keys[:3], _INPUT_GATES):
    params[name] = {'kernel': std * jax.random.normal(k, (input_size, hidden_size), jnp.float32)}
  for k, name in zip(keys[3:], _HIDDEN_GATES):
    params[name] = {'kernel': std * jax.random.normal(k, (hidden_size, hidden_size), jnp.float32)}
  params['ir']['bias'] = jnp.full((hidden_size,), gate_bias, jnp.float32)
  params['iz']['bias'] = jnp.full((hidden_size,), gate_bias, jnp.float32)
  params['in']['bias'] = jnp.zeros((hidden_size,), jnp.float32)
  params['hn']['bias'] = jnp.zeros((hidden_size,), jnp.float32)
  return params


def gru_apply(params: GRUParams, h: jax.Array, x: jax.Array, bias: jax.Array | None = None, *,
              feature_major: bool = False) -> jax.Array:
  """One GRU step; returns the new state ``h'`` (same shape as ``h``).

  Args:
    params: from :func:`gru_init` (or a flax.linen.GRUCell's ``params``).
    h: state, ``[..., H]`` or, with ``feature_major``, ``[H, N]``.
    x: input, ``[..., I]`` or ``[I, N]``.
    bias: optional injected bias ``[beta_r; beta_z; beta_n]`` of ``3H`` features along the feature axis, broadcastable
      against the gate pre-activations (``[..., 3H]``, or ``[3H, N]`` / ``[3H, 1]`` feature-major).
    feature_major: features on axis 0 and the batch on axis 1 (one matmul per input, long axis contiguous).
  """
  gates_x, gates_h, b_hn = _gate_preactivations(params, h, x, feature_major)
  if bias is not None:
    gates_x = gates_x + bias
  return _gates_to_state(gates_x, gates_h, h, b_hn, 0 if feature_major else -1)


def _gate_preactivations(params, h, x, feature_major):
  """``W_i x + b_i`` and ``W_h h`` for the three gates stacked as ``[r; z; n]``, and ``b_hn`` shaped to broadcast."""
  # The three input (and three recurrent) kernels are concatenated so that each side is one matmul.
  w_in = jnp.concatenate([params[g]['kernel'] for g in _INPUT_GATES], axis=1)  # [I, 3H]
  b_in = jnp.concatenate([params[g]['bias'] for g in _INPUT_GATES])  # [3H]
  w_hid = jnp.concatenate([params[g]['kernel'] for g in _HIDDEN_GATES], axis=1)  # [H, 3H]
  b_hn = params['hn']['bias']
  if feature_major:
    gates_x = w_in.T @ x + b_in[:, None]
    gates_h = w_hid.T @ h
    b_hn = b_hn[:, None]
  else:
    gates_x = x @ w_in + b_in
    gates_h = h @ w_hid
  return gates_x, gates_h, b_hn


def stacked_kernel(params: GRUParams) -> tuple[jax.Array, jax.Array]:
  """The cell's six kernels as one feature-major matrix on the stacked input ``[x; h]``, and its four biases.

  Returns ``w`` of shape ``[4H, I + H]`` and ``b`` of shape ``[4H]`` such that ``w @ [x; h] + b[:, None]`` stacks,
  along the feature axis,

    ``[W_ir x + W_hr h + b_ir;  W_iz x + W_hz h + b_iz;  W_in x + b_in;  W_hn h + b_hn]``

  which is what :func:`gru_apply_stacked` reads. One matmul with ``K = I + H`` replaces the input-side and
  hidden-side matmuls: over many columns the ``[3H, N]`` outputs dominate the cost (a matmul with ``K ~ 10`` is
  memory-bound), so writing one ``[4H, N]`` array instead of two ``[3H, N]`` ones plus their sum is what matters.
  The zero blocks (``W_in`` does not see ``h``, ``W_hn`` does not see ``x``) keep ``r`` outside ``W_hn h + b_hn``.
  """
  i, hidden = params['ir']['kernel'].shape
  dtype = params['ir']['kernel'].dtype
  w = jnp.concatenate([
      jnp.concatenate([params['ir']['kernel'], params['hr']['kernel']]),
      jnp.concatenate([params['iz']['kernel'], params['hz']['kernel']]),
      jnp.concatenate([params['in']['kernel'], jnp.zeros((hidden, hidden), dtype)]),
      jnp.concatenate([jnp.zeros((i, hidden), dtype), params['hn']['kernel']]),
  ], axis=1).T  # [4H, I + H]
  b = jnp.concatenate([params['ir']['bias'], params['iz']['bias'], params['in']['bias'], params['hn']['bias']])
  return w, b


def gru_apply_stacked(preactivations: jax.Array, h: jax.Array, bias: jax.Array | None = None) -> jax.Array:
  """The feature-major GRU step from ``stacked_kernel(params)`` applied to ``[x; h]``; returns ``h'`` (``[H, N]``).

  Args:
    preactivations: ``w @ [x; h] + b[:, None]`` with ``(w, b) = stacked_kernel(params)``, ``[4H, N]``.
    h: the previous state, ``[H, N]``.
    bias: optional injected bias ``[beta_r; beta_z; beta_n]``, ``[3H, N]`` or ``[3H, 1]``.

  Equals ``gru_apply(params, h, x, bias, feature_major=True)`` up to the summation order inside the matmul.
  """
  p_r, p_z, p_xn, p_hn = jnp.split(preactivations, 4, axis=0)
  if bias is not None:
    beta_r, beta_z, beta_n = jnp.split(bias, 3, axis=0)
    p_r, p_z, p_xn = p_r + beta_r, p_z + beta_z, p_xn + beta_n
  r = _sigmoid_via_tanh(p_r)
  z = _sigmoid_via_tanh(p_z)
  n = jnp.tanh(p_xn + r * p_hn)
  return (1.0 - z) * n + z * h


def _sigmoid_via_tanh(x: jax.Array) -> jax.Array:
  """``sigmoid(x) = (1 + tanh(x / 2)) / 2``, an identity (to float32 rounding).

  XLA:CPU lowers ``logistic`` to ``1 / (1 + exp(-x))``, an exp and a division, and ``tanh`` to one rational
  approximation: the per-parameter GRU's elementwise part (compute-bound there) measured faster this way
  (docs/benchmarks.md, ``lopt/gru.py``).
  """
  return 0.5 + 0.5 * jnp.tanh(0.5 * x)


def _gates_to_state(gates_x, gates_h, h, b_hn, axis):
  """The GRU's elementwise part, from the input-side and hidden-side gate pre-activations (each ``[r; z; n]``)."""
  x_r, x_z, x_n = jnp.split(gates_x, 3, axis=axis)
  h_r, h_z, h_n = jnp.split(gates_h, 3, axis=axis)
  r = jax.nn.sigmoid(x_r + h_r)
  z = jax.nn.sigmoid(x_z + h_z)
  n = jnp.tanh(x_n + r * (h_n + b_hn))
  return (1.0 - z) * n + z * h
