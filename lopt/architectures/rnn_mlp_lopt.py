"""The per-tensor LSTM + per-parameter MLP learned optimizer of Metz et al. 2020, with loss features.

Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein, "Tasks, stability, architecture, and compute: training more
effective learned optimizers, and using them to train themselves", arXiv 2009.11243 (SPEC 4; the constants are those
of the JAX re-implementation that says it "introduces" this model).

One step, for a problem with ``T`` parameter tensors and ``N`` parameter elements:

1. **Dynamic gradient clipping.** ``g <- clip(g, +-10 r / (1 - 0.99^t))`` where ``r`` is an EMA (decay 0.99) of the
   global RMS of the clipped gradients and ``t`` the number of previous steps (no clipping at ``t = 0``); then
   ``r <- 0.99 r + 0.01 rms(g)``. Non-finite gradient elements are not clipped, so they propagate (:mod:`lopt.base`).
2. **Accumulators** at decays ``beta_k in (0.5, 0.9, 0.99, 0.999, 0.9999)``: ``m_k`` of ``g``, ``v_k`` of ``g^2``.
3. **Loss features** (scalars). With the training loss ``L = value``: EMAs (decay 0.9) of its mean ``mu`` and of the
   squared deviation from the previous bias-corrected mean ``s``, both bias-corrected, and
   ``train_feat = clip((L - mu) / sqrt(s + 1e-8), -5, 5)`` (exactly 0 for the first loss). With the validation loss
   ``V = valid_value``: its EMA (decay 0.95), bias-corrected, ``mu_V``, and
   ``valid_feat = clip((mu_V - mu) / sqrt(s + 1e-8), -5, 5)`` (normalised by the *training* statistics, as in the
   source).
4. **Per-tensor LSTM** (hidden 64, shared over tensors, ``flax.linen.LSTMCell`` layout) on 52 inputs per tensor: 18
   features (``cl(x) = clip(log(1e-8 + |x|), -5, 5)``): ``cl(mean m), sign(mean m), cl(var m), cl(mean v),
   sign(mean v), cl(var v), cl(mean w), sign(mean w), cl(var w), cl(||w||), cl(||g||)``, ``+-1`` for scalar / not,
   ``log(d_j) - 1`` for the first 4 dimensions (missing ones count as 1), ``train_feat, valid_feat``; means and
   variances are over the tensor's elements and (for ``m``, ``v``) the 5 decays. Plus the previous step's 16
   per-tensor means of the MLP's extra outputs, and the previous step's 18 mixing values shared by all tensors.
5. **Mixing.** ``to_mlp = Dense_17(h_lstm)`` per tensor; the next step's 18 mixing values are
   ``mean_over_tensors(Dense_18(h_lstm))``.
6. **Per-parameter MLP** (hidden 32, 32, ReLU) on 54 inputs: 23 per-parameter features ``[g, w, log(|w| + 1e-8),
   m_k, m_k rsqrt(v_k + 1e-6), v_k, rsqrt(v_k + 1e-6)]``, each normalised per tensor by
   ``x rsqrt(1e-5 + mean(x^2))``; ``sin(t / (tau pi))`` for 11 ``tau`` log-spaced in ``[1, 1e5]``;
   ``log(T) - 1``, ``cl(||w||)``, ``log(n_elements)``; ``to_mlp`` (17). Outputs ``(d, mu, 16 extra)``;
   ``update = -d exp(0.001 mu) 0.001``.

Loss keywords. The training loss arrives as ``value=`` (optax's name), the validation loss as ``valid_value=``. The
reference instead makes a separate ``update(..., is_valid=True)`` call that only updates the validation EMA; here a
validation loss rides on a normal update, is folded into the EMA first, and is used by that same step. When a keyword
is absent its EMA is left untouched: without ``value`` the training feature is its neutral value 0; without
``valid_value`` the validation feature keeps using the last validation EMA (losses are typically evaluated only every
few steps), and is 0 until a validation loss and a training loss have both been seen. Which keywords are passed is
static: a jitted step traces once per combination.

``log(||w||)`` in the MLP's per-tensor inputs is clipped as the LSTM's magnitudes are (``cl``), so an all-zero tensor
gives -5, not -18; ``log(n_elements)`` uses ``max(n, 1)`` and ``log(d_j)`` uses ``max(d_j, 1)`` for zero-size
tensors; tensors of rank > 4 fold their trailing dimensions into the fourth.

Layout. Meta-parameters: ``{'lstm': LSTM 52->64, 'lstm_to_mlp': Dense 64->17, 'lstm_to_lstm': Dense 64->18,
'mlp': {'dense_0': 54->32, 'dense_1': 32->32, 'dense_2': 32->18}}`` in flax.linen layouts. The parameter leaves are
concatenated into one flat ``[N]`` vector and per-parameter features are feature-major ``[F, N]``
(:mod:`lopt.features`). The MLP inputs that are constant over a tensor (time, tensor statistics, ``to_mlp``) enter
the first layer as a per-tensor bias: the same math with 23 instead of 54 per-parameter inputs.

State: 10 floats per parameter (``m_k``, ``v_k``), per tensor the LSTM cell and hidden state and the 16 MLP means,
and a few scalars.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt import base
from lopt import features

_NORMALIZE_EPS = 1e-5
_RSQRT_EPS = 1e-6
_LOSS_VAR_EPS = 1e-8
_FEATURE_BOUND = 5.0
_NUM_TENSOR_FEATURES = 18  # the LSTM's own per-tensor features (step 4 of the module docstring)
_NUM_PARAM_FEATURES_PER_DECAY = 4  # m_k, m_k rsqrt(v_k), v_k, rsqrt(v_k)


class RNNMLPLOptState(NamedTuple):
  """All float32 but the int32 counters. ``N``: parameter elements (flat), ``T``: parameter tensors."""
  count: jax.Array  # updates so far
  momentum: jax.Array  # [K, N]
  second_moment: jax.Array  # [K, N]
  lstm_cell: jax.Array  # [T, lstm_hidden_size]
  lstm_hidden: jax.Array  # [T, lstm_hidden_size]
  mlp_to_lstm: jax.Array  # [T, num_mlp_to_lstm], per-tensor means of the MLP's extra outputs
  lstm_to_lstm: jax.Array  # [num_lstm_to_lstm], mean over tensors of the LSTM's mixing output
  clip_rms: jax.Array  # [], EMA of the clipped gradients' RMS (not bias-corrected)
  train_loss_mean: jax.Array  # [], EMA (not bias-corrected)
  train_loss_var: jax.Array  # [], EMA of squared deviations (not bias-corrected)
  train_loss_count: jax.Array  # [] int32
  valid_loss_mean: jax.Array  # [], EMA (not bias-corrected)
  valid_loss_count: jax.Array  # [] int32


def _bias_corrected(ema: jax.Array, decay: float, count: jax.Array) -> jax.Array:
  """``ema / (1 - decay^count)``, and 0 for ``count = 0`` (with a safe denominator, so gradients stay finite)."""
  seen = count > 0
  # 1 - decay^count as -expm1(count log(decay)) with log(decay) in double precision: in float32, 1 - 0.99^1 loses
  # 6 digits to cancellation, and a bias-corrected mean of one loss must come back as that loss.
  denominator = jnp.where(seen, -jnp.expm1(count.astype(jnp.float32) * math.log(decay)), 1.0)
  return jnp.where(seen, ema / denominator, 0.0)


def loss_features(state: RNNMLPLOptState, value, valid_value, train_decay: float, valid_decay: float):
  """Updates the loss EMAs with the losses given (None: left untouched); returns ``(train_feat, valid_feat, stats)``.

  ``stats`` is ``(train_loss_mean, train_loss_var, train_loss_count, valid_loss_mean, valid_loss_count)``.
  """
  mean, var, count = state.train_loss_mean, state.train_loss_var, state.train_loss_count
  train_feat = jnp.zeros([], jnp.float32)
  if value is not None:
    loss = jnp.asarray(value, jnp.float32)
    previous_mean = jnp.where(count > 0, _bias_corrected(mean, train_decay, count), loss)
    mean = train_decay * mean + (1.0 - train_decay) * loss
    var = train_decay * var + (1.0 - train_decay) * jnp.square(loss - previous_mean)
    train_feat = jnp.clip((loss - _bias_corrected(mean, train_decay, count + 1))
                          * jax.lax.rsqrt(_bias_corrected(var, train_decay, count + 1) + _LOSS_VAR_EPS),
                          -_FEATURE_BOUND, _FEATURE_BOUND)
    # With a single loss the deviation is 0 up to float rounding, which 1 / sqrt(0 + 1e-8) would amplify 1e4-fold.
    train_feat = jnp.where(count > 0, train_feat, 0.0)
    count = optax.safe_increment(count)
  valid_mean, valid_count = state.valid_loss_mean, state.valid_loss_count
  if valid_value is not None:
    valid_mean = valid_decay * valid_mean + (1.0 - valid_decay) * jnp.asarray(valid_value, jnp.float32)
    valid_count = optax.safe_increment(valid_count)
  valid_feat = jnp.clip((_bias_corrected(valid_mean, valid_decay, valid_count)
                         - _bias_corrected(mean, train_decay, count))
                        * jax.lax.rsqrt(_bias_corrected(var, train_decay, count) + _LOSS_VAR_EPS),
                        -_FEATURE_BOUND, _FEATURE_BOUND)
  valid_feat = jnp.where((valid_count > 0) & (count > 0), valid_feat, 0.0)
  return train_feat, valid_feat, (mean, var, count, valid_mean, valid_count)


def _segment_mean_var(x: jax.Array, sizes: Sequence[int]) -> tuple[jax.Array, jax.Array]:
  """Mean and variance over each tensor's elements and all rows of ``x: [F, N]``: two ``[T]`` arrays."""
  mean = jnp.mean(features.segment_mean(x, sizes), axis=0)
  deviation = x - features.segment_broadcast(mean[None], sizes)
  return mean, jnp.mean(features.segment_mean(jnp.square(deviation), sizes), axis=0)


def segment_norm(x: jax.Array, sizes: Sequence[int]) -> jax.Array:
  """Per-tensor L2 norms of ``x: [N]``: ``[T]``. The double ``where`` keeps the derivative 0, not NaN, at a zero norm
  (zero-initialised biases are common, and ``sqrt``'s infinite slope at 0 times the clipped log's zero slope is NaN)."""
  sum_sq = features.segment_mean(jnp.square(x)[None], sizes)[0] * jnp.asarray(sizes, jnp.float32)
  positive = sum_sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sum_sq, 1.0)), 0.0)


def shape_features(shapes: Sequence[tuple[int, ...]]) -> jax.Array:
  """``[T, 5]``: ``+1`` for scalars else ``-1``, then ``log(d_j) - 1`` for the first 4 dims (padded with 1; trailing
  dims of rank > 4 tensors folded into the fourth; zero-size dims count as 1)."""
  rows = []
  for shape in shapes:
    dims = list(shape[:3]) + ([math.prod(shape[3:])] if len(shape) > 3 else [])
    dims += [1] * (4 - len(dims))
    rows.append([1.0 if len(shape) == 0 else -1.0] + [math.log(max(d, 1)) - 1.0 for d in dims])
  return jnp.asarray(rows, jnp.float32).reshape(len(shapes), 5)


def tensor_features(g, w, momentum, second_moment, sizes, shapes, train_feat, valid_feat) -> jax.Array:
  """The LSTM's 18 per-tensor features (module docstring, step 4): ``[T, 18]``."""
  cl = features.clipped_log_abs
  mean_m, var_m = _segment_mean_var(momentum, sizes)
  mean_v, var_v = _segment_mean_var(second_moment, sizes)
  mean_w, var_w = _segment_mean_var(w[None], sizes)
  norm_w, norm_g = segment_norm(w, sizes), segment_norm(g, sizes)
  num_tensors = len(sizes)
  stats = jnp.stack([cl(mean_m), jnp.sign(mean_m), cl(var_m), cl(mean_v), jnp.sign(mean_v), cl(var_v),
                     cl(mean_w), jnp.sign(mean_w), cl(var_w), cl(norm_w), cl(norm_g)], axis=1)
  losses = jnp.broadcast_to(jnp.stack([train_feat, valid_feat]), (num_tensors, 2))
  return jnp.concatenate([stats, shape_features(shapes), losses], axis=1)


def parameter_features(g, w, momentum, second_moment, sizes) -> jax.Array:
  """The MLP's 23 per-parameter features, normalised per tensor (module docstring, step 6): ``[23, N]``."""
  inv_rms = jax.lax.rsqrt(second_moment + _RSQRT_EPS)
  x = jnp.concatenate([g[None], w[None], jnp.log(jnp.abs(w) + 1e-8)[None], momentum, momentum * inv_rms,
                       second_moment, inv_rms])
  return features.second_moment_normalize(x, sizes, _NORMALIZE_EPS)


def clip_gradients(g: jax.Array, clip_rms: jax.Array, count: jax.Array, decay: float, clip_mult: float):
  """Dynamic gradient clipping (module docstring, step 1); returns ``(clipped g, new clip_rms)``."""
  seen = count > 0
  threshold = clip_mult * _bias_corrected(clip_rms, decay, count)
  clipped = jnp.where(seen & jnp.isfinite(g), jnp.clip(g, -threshold, threshold), g)
  # The tiny constant keeps sqrt's derivative finite for an all-zero gradient (it is ~1e-15 next to any real RMS).
  rms = jnp.sqrt(base.safe_mean(jnp.square(clipped)) + 1e-30)
  return clipped, decay * clip_rms + (1.0 - decay) * rms


@dataclasses.dataclass(frozen=True)
class RNNMLPLOpt(base.LearnedOptimizer):
  """Per-tensor LSTM + per-parameter MLP with loss features (Metz et al. 2020); see the module docstring.

  Attributes:
    lstm_hidden_size: the per-tensor LSTM's width (64).
    mlp_hidden_sizes: the per-parameter MLP's hidden ReLU layers ((32, 32)).
    decays: momentum and second-moment decays.
    time_scales: ``tau`` of the ``sin(t / (tau pi))`` features (11, log-spaced in [1, 1e5]).
    num_mlp_to_lstm: the MLP's extra outputs averaged per tensor into the LSTM (16).
    num_lstm_to_lstm: mixing values averaged over tensors into the LSTM (18).
    num_lstm_to_mlp: per-tensor LSTM outputs broadcast into the MLP (17).
    clip_decay, clip_mult: the dynamic gradient clipper's EMA decay (0.99) and multiple of the RMS (10).
    train_loss_decay, valid_loss_decay: EMA decays of the loss features (0.9, 0.95).
    step_multiplier, magnitude_rate: the two 0.001 of ``d exp(0.001 mu) 0.001``.
    state_dtype: dtype of the per-parameter ``m_k``, ``v_k`` (``'float32'`` or ``'bfloat16'``, :mod:`lopt.base`);
      the per-tensor LSTM state stays float32.
  """
  name = 'rnn_mlp_lopt'

  lstm_hidden_size: int = 64
  mlp_hidden_sizes: tuple[int, ...] = (32, 32)
  decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999, 0.9999)
  time_scales: tuple[float, ...] = tuple(10.0 ** (i / 2) for i in range(11))
  num_mlp_to_lstm: int = 16
  num_lstm_to_lstm: int = 18
  num_lstm_to_mlp: int = 17
  clip_decay: float = 0.99
  clip_mult: float = 10.0
  train_loss_decay: float = 0.9
  valid_loss_decay: float = 0.95
  step_multiplier: float = 1e-3
  magnitude_rate: float = 1e-3
  state_dtype: str = 'float32'

  def __post_init__(self):
    object.__setattr__(self, 'state_dtype', base.state_dtype_name(self.state_dtype, 'RNNMLPLOpt'))
    for field in ('lstm_hidden_size', 'num_mlp_to_lstm', 'num_lstm_to_lstm', 'num_lstm_to_mlp'):
      value = getattr(self, field)
      if not isinstance(value, int) or value < (1 if field == 'lstm_hidden_size' else 0):
        raise ValueError(f'RNNMLPLOpt.{field} must be a {"positive" if field == "lstm_hidden_size" else "non-negative"}'
                         f' int, got {value!r}.')
    if not all(isinstance(h, int) and h > 0 for h in self.mlp_hidden_sizes):
      raise ValueError(f'RNNMLPLOpt.mlp_hidden_sizes must be positive ints, got {self.mlp_hidden_sizes}.')
    if not self.decays or not all(0.0 <= d < 1.0 for d in self.decays):
      raise ValueError(f'RNNMLPLOpt.decays must be a non-empty tuple of values in [0, 1), got {self.decays}.')
    if not all(t > 0 for t in self.time_scales):
      raise ValueError(f'RNNMLPLOpt.time_scales must be positive, got {self.time_scales}.')
    for field in ('clip_decay', 'train_loss_decay', 'valid_loss_decay'):
      if not 0.0 < getattr(self, field) < 1.0:
        raise ValueError(f'RNNMLPLOpt.{field} must be in (0, 1), got {getattr(self, field)}.')
    if not self.clip_mult > 0:
      raise ValueError(f'RNNMLPLOpt.clip_mult must be positive, got {self.clip_mult}.')
    for field in ('step_multiplier', 'magnitude_rate'):
      if not math.isfinite(getattr(self, field)):
        raise ValueError(f'RNNMLPLOpt.{field} must be finite, got {getattr(self, field)}.')

  @property
  def num_parameter_features(self) -> int:
    """Per-parameter MLP inputs: ``g, w, log|w|`` and four groups of ``len(decays)`` (23)."""
    return 3 + _NUM_PARAM_FEATURES_PER_DECAY * len(self.decays)

  @property
  def num_mlp_inputs(self) -> int:
    """Per-parameter features, time features, 3 tensor scalars and the LSTM's per-tensor outputs (54)."""
    return self.num_parameter_features + len(self.time_scales) + 3 + self.num_lstm_to_mlp

  @property
  def num_lstm_inputs(self) -> int:
    """The 18 tensor features plus the two mixing inputs (52)."""
    return _NUM_TENSOR_FEATURES + self.num_mlp_to_lstm + self.num_lstm_to_lstm

  def init(self, key: jax.Array) -> base.MetaParams:
    k_lstm, k_to_mlp, k_to_lstm, k_mlp = jax.random.split(key, 4)
    widths = (self.num_mlp_inputs, *self.mlp_hidden_sizes, 2 + self.num_mlp_to_lstm)
    mlp_keys = jax.random.split(k_mlp, len(widths) - 1)
    return {
        'lstm': features.lstm_init(k_lstm, self.num_lstm_inputs, self.lstm_hidden_size),
        'lstm_to_mlp': features.dense_init(k_to_mlp, self.lstm_hidden_size, self.num_lstm_to_mlp),
        'lstm_to_lstm': features.dense_init(k_to_lstm, self.lstm_hidden_size, self.num_lstm_to_lstm),
        'mlp': {f'dense_{i}': features.dense_init(k, n_in, n_out)
                for i, (k, n_in, n_out) in enumerate(zip(mlp_keys, widths[:-1], widths[1:]))},
    }

  def transform(self, meta_params: base.MetaParams) -> optax.GradientTransformationExtraArgs:
    meta_params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), meta_params)
    num_decays = len(self.decays)
    num_mlp_layers = len(self.mlp_hidden_sizes) + 1

    def init_fn(params):
      n = features.num_elements(params)
      t = len(jax.tree.leaves(params))
      # Fresh arrays for every leaf (no shared buffers), so that the state can be donated to a jitted step.
      zero = lambda: jnp.zeros([], jnp.float32)
      zero_count = lambda: jnp.zeros([], jnp.int32)
      return RNNMLPLOptState(
          count=zero_count(),
          momentum=jnp.zeros((num_decays, n), self.state_dtype),
          second_moment=jnp.zeros((num_decays, n), self.state_dtype),
          lstm_cell=jnp.zeros((t, self.lstm_hidden_size), jnp.float32),
          lstm_hidden=jnp.zeros((t, self.lstm_hidden_size), jnp.float32),
          mlp_to_lstm=jnp.zeros((t, self.num_mlp_to_lstm), jnp.float32),
          lstm_to_lstm=jnp.zeros((self.num_lstm_to_lstm,), jnp.float32),
          clip_rms=zero(), train_loss_mean=zero(), train_loss_var=zero(), train_loss_count=zero_count(),
          valid_loss_mean=zero(), valid_loss_count=zero_count())

    def update_fn(grads, state, params=None, *, value=None, valid_value=None, **extra_args):
      del extra_args
      raw_g, w, sizes = features.flat_inputs(grads, params)
      shapes = [tuple(jnp.shape(p)) for p in jax.tree.leaves(params)]
      num_tensors = len(sizes)
      g, clip_rms = clip_gradients(raw_g, state.clip_rms, state.count, self.clip_decay, self.clip_mult)
      momentum = features.update_moments(base.from_state(state.momentum), g, self.decays)
      second_moment = features.update_moments(base.from_state(state.second_moment), jnp.square(g), self.decays)
      train_feat, valid_feat, loss_stats = loss_features(state, value, valid_value, self.train_loss_decay,
                                                         self.valid_loss_decay)

      # Per-tensor LSTM.
      lstm_inputs = jnp.concatenate([
          tensor_features(g, w, momentum, second_moment, sizes, shapes, train_feat, valid_feat),
          state.mlp_to_lstm,
          jnp.broadcast_to(state.lstm_to_lstm, (num_tensors, self.num_lstm_to_lstm))], axis=1)
      lstm_cell, lstm_hidden = features.lstm_apply(meta_params['lstm'], state.lstm_cell, state.lstm_hidden,
                                                   lstm_inputs)
      dense = lambda layer, x: x @ layer['kernel'] + layer['bias']
      lstm_to_mlp = dense(meta_params['lstm_to_mlp'], lstm_hidden)  # [T, 17]
      lstm_to_lstm = base.safe_mean(dense(meta_params['lstm_to_lstm'], lstm_hidden), axis=0)  # [18]

      # Per-parameter MLP; the inputs constant over a tensor become a per-tensor bias of the first layer.
      x = parameter_features(g, w, momentum, second_moment, sizes)
      counts = jnp.asarray(sizes, jnp.float32)
      norm_w = segment_norm(w, sizes)
      per_tensor_inputs = jnp.concatenate([
          jnp.broadcast_to(features.sin_time_embedding(state.count, self.time_scales),
                           (num_tensors, len(self.time_scales))),
          jnp.full((num_tensors, 1), math.log(max(num_tensors, 1)) - 1.0, jnp.float32),
          features.clipped_log_abs(norm_w)[:, None],
          jnp.log(jnp.maximum(counts, 1.0))[:, None],
          lstm_to_mlp], axis=1)
      first = meta_params['mlp']['dense_0']
      kernel = first['kernel']
      num_param_features = self.num_parameter_features
      per_tensor_bias = per_tensor_inputs @ kernel[num_param_features:] + first['bias']  # [T, H]
      h = kernel[:num_param_features].T @ x + features.segment_broadcast(per_tensor_bias.T, sizes)
      for i in range(1, num_mlp_layers):
        h = jax.nn.relu(h)
        layer = meta_params['mlp'][f'dense_{i}']
        h = layer['kernel'].T @ h + layer['bias'][:, None]
      direction, magnitude = h[0], h[1]
      mlp_to_lstm = features.segment_mean(h[2:], sizes).T  # [T, 16]
      step = direction * jnp.exp(self.magnitude_rate * magnitude) * self.step_multiplier

      train_mean, train_var, train_count, valid_mean, valid_count = loss_stats
      new_state = RNNMLPLOptState(
          count=optax.safe_increment(state.count), momentum=base.to_state(momentum, self.state_dtype),
          second_moment=base.to_state(second_moment, self.state_dtype),
          lstm_cell=lstm_cell, lstm_hidden=lstm_hidden, mlp_to_lstm=mlp_to_lstm, lstm_to_lstm=lstm_to_lstm,
          clip_rms=clip_rms, train_loss_mean=train_mean, train_loss_var=train_var, train_loss_count=train_count,
          valid_loss_mean=valid_mean, valid_loss_count=valid_count)
      return base.updates_like(params, features.unflatten(-step, sizes)), new_state

    return base.transformation('RNNMLPLOpt', init_fn, update_fn)
