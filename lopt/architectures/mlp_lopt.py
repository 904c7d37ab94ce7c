"""The per-parameter MLP learned optimizer of Metz et al. 2019.

Metz, Maheswaranathan, Nixon, Freeman, Sohl-Dickstein, "Understanding and correcting pathologies in the training of
learned optimizers", ICML 2019; the architecture of the released ``fast_rolling_mlp.py`` (docs/algorithms.md
§3).

For every parameter ``w`` with gradient ``g``, at step ``t`` (0 on the first update), with decays
``beta_k in (0.5, 0.9, 0.99, 0.999, 0.9999)``::

  m_k   <- beta_k m_k   + (1 - beta_k) g          (momentum)
  v_k   <- beta_k v_k   + (1 - beta_k) g^2        (second moment; "rms" in the source)
  x      = [g, m_k rsqrt(v_k + 1e-6), w, m_k, v_k, rsqrt(v_k + 1e-6)]        22 features
  x     <- x rsqrt(1e-5 + mean_over_tensor(x^2))  (each feature, each tensor)
  x     <- [x, tanh(t / tau - 1) for tau in (3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e5)]   31 inputs
  (d, mu) = Dense_2(relu(Dense_32(x)))
  update = -d exp(0.001 mu) 0.001                 (w <- w - d exp(0.001 mu) 0.001)

The second moment (``include_rms``). The released code builds its rolling features with ``include_rms=False``, so
``v_k`` stays 0: ``rsqrt(v_k + 1e-6)`` is the constant 1000 and ``m_k rsqrt(...)`` is ``1000 m_k``, which after the
per-tensor normalisation duplicate the momentum features; 10 of the 22 features carry no new information. The paper's
actual setting is unknown. We default to ``include_rms=True`` (what the feature list describes: RMS-normalised
momentum); ``include_rms=False`` reproduces the released code (the input stays 31-wide, ``v_k = 0``, and the state
drops the 5 second-moment floats per parameter).

Layout. Meta-parameters are plain dicts in ``flax.linen.Dense``'s layout: ``{'dense_0': {'kernel': [31, 32], 'bias':
[32]}, 'dense_1': {'kernel': [32, 2], 'bias': [2]}}``. All parameter leaves are concatenated into one flat vector and
features are feature-major ``[F, N]`` (:mod:`lopt.features`). The 9 time features are the same for every parameter,
so their part of the first layer is computed once and added as a bias (identical math, 22 instead of 31 per-parameter
inputs).

State: a step count, ``5 + 5`` floats per parameter (``5`` with ``include_rms=False``) and one float per tensor (its
initial scale, read only with ``max_scale_growth``). ``value`` and other keywords are accepted and ignored: this
architecture has no loss features.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt import base
from lopt import brakes
from lopt import features

_NORMALIZE_EPS = 1e-5
_RSQRT_EPS = 1e-6


class MLPLOptState(NamedTuple):
  """``count``: updates so far (int32). ``momentum``: ``[K, N]``. ``second_moment``: ``[K, N]`` (``[0, N]`` if
  ``include_rms=False``). ``initial_scale``: ``[T]``, ``max(rms(w_0), relative_step_floor)`` per tensor (for
  ``max_scale_growth``). ``N`` counts all parameter elements, leaves concatenated in tree order; ``T`` the leaves."""
  count: jax.Array
  momentum: jax.Array
  second_moment: jax.Array
  initial_scale: jax.Array


@dataclasses.dataclass(frozen=True)
class MLPLOpt(base.LearnedOptimizer):
  """Per-parameter MLP optimizer (Metz et al. 2019); see the module docstring for the math.

  Attributes:
    hidden_sizes: widths of the hidden ReLU layers (paper's released code: one layer of 32; docs/algorithms.md
      §3.3).
    decays: momentum and second-moment decays.
    time_scales: ``tau`` of the ``tanh(t / tau - 1)`` features.
    include_rms: accumulate the second moment (default) or keep it 0 as the released code does (module docstring).
    step_multiplier: the 0.001 in ``d exp(magnitude_rate mu) step_multiplier``.
    magnitude_rate: the 0.001 inside the exponential. Both may be traced scalars (``optax.inject_hyperparams``).
    state_dtype: dtype of the momentum and second-moment arrays (``'float32'`` or ``'bfloat16'``, :mod:`lopt.base`).
    step_scale: ``'absolute'`` (paper): the step as above. ``'relative'``: that step multiplied by the tensor's
      parameter RMS, ``max(rms(w), relative_step_floor)`` (as :class:`lopt.HierarchicalRNN`'s option of the same
      name, which explains why: absolute steps that suit O(1) parameters are ``sqrt(fan_in)`` times too large for a
      wide layer's weights). No meta-parameter changes shape.
    relative_step_floor: the smallest parameter RMS ``'relative'`` scales by (biases at zero still move).
    max_scale_growth: ``None`` (default) or ``kappa > 0``, with ``step_scale='relative'`` only: the RMS a tensor's
      step is scaled by is at most ``kappa`` times its value at initialisation, ``scale = min(max(rms(w),
      floor), kappa max(rms(w_0), floor))``. Relative steps whose sign persists grow the weights geometrically (by
      ``1 + step`` per step); above ``kappa`` times its initial RMS a tensor's steps stop growing with it, so growth
      is at most linear (the same bound as :class:`lopt.HierarchicalRNN`'s, docs/algorithms.md §2.11 and §3.4).
      May be a traced scalar.
    max_relative_step: ``None`` (default) or ``c > 0``, with ``step_scale='relative'`` only: each tensor's step is
      scaled down where needed so that its RMS is at most ``c`` times the tensor's scale,
      ``step_T <- step_T min(1, c scale_T / rms(step_T))`` (a trust ratio, as LARS's). The MLP's output ``d`` is
      unbounded: on a 2048-dimensional quadratic one first step moved the parameters by 4.8 times their RMS and raised
      the loss 23-fold (docs/algorithms.md §3.4). The HRNN's cap on its learning rate plays this role there.
    min_gradient_rms: ``None`` (default) or ``epsilon > 0``: a tensor whose gradient RMS is below ``epsilon`` takes its
      step multiplied by ``rms_T(g) / epsilon``, as :class:`lopt.HierarchicalRNN`'s option of the same name. Without
      it the step never vanishes: the features are normalised per tensor, so at zero gradients the weight feature
      ``w`` alone still drives the MLP's output, and the weights drift (docs/algorithms.md §3.4).
    loss_brake: ``None`` (default) or a power ``p > 0``: the transformation is wrapped in :func:`lopt.loss_brake`,
      as :class:`lopt.HierarchicalRNN`'s option of the same name: the update is multiplied by ``min(1, best /
      average)^p`` of a 10-step average of the loss, so ``update`` then needs ``value=loss`` and the state is a
      :class:`lopt.brakes.LossBrakeState`. Against the memorising net's late climbs (``diabetes_binary_mlp_64x64``,
      release 6, 16 seeds over 5,000 steps: 2 above twice the initial loss without it, none with ``p = 1``;
      docs/algorithms.md §2.12). The shipped weights use ``p = 1`` since MLP release 7.
  """
  name = 'mlp_lopt'

  hidden_sizes: tuple[int, ...] = (32,)
  decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999, 0.9999)
  time_scales: tuple[float, ...] = (3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e5)
  include_rms: bool = True
  step_multiplier: float = 1e-3
  magnitude_rate: float = 1e-3
  state_dtype: str = 'float32'
  step_scale: str = 'absolute'
  relative_step_floor: float = 1e-2
  max_scale_growth: float | None = None
  max_relative_step: float | None = None
  min_gradient_rms: float | None = None
  loss_brake: float | None = None

  def __post_init__(self):
    object.__setattr__(self, 'state_dtype', base.state_dtype_name(self.state_dtype, 'MLPLOpt'))
    base.check_step_scale(self.step_scale, self.relative_step_floor, 'MLPLOpt')
    base.check_max_scale_growth(self.max_scale_growth, self.step_scale, 'MLPLOpt')
    base.check_min_gradient_rms(self.min_gradient_rms, 'MLPLOpt')
    base.check_relative_step_bound('max_relative_step', self.max_relative_step, self.step_scale, 'MLPLOpt',
                                   bounds='relative steps',
                                   meaning="the largest step RMS as a fraction of the tensor's scale")
    base.check_positive_finite('loss_brake', self.loss_brake, 'MLPLOpt',
                               meaning='the power of best / average loss the update is multiplied by; 1 was tried')
    if not all(isinstance(h, int) and h > 0 for h in self.hidden_sizes):
      raise ValueError(f'MLPLOpt.hidden_sizes must be positive ints, got {self.hidden_sizes}.')
    if not self.decays or not all(0.0 <= d < 1.0 for d in self.decays):
      raise ValueError(f'MLPLOpt.decays must be a non-empty tuple of values in [0, 1), got {self.decays}.')
    if not all(t > 0 for t in self.time_scales):
      raise ValueError(f'MLPLOpt.time_scales must be positive, got {self.time_scales}.')
    for field in ('step_multiplier', 'magnitude_rate'):
      if not base.is_traced(getattr(self, field)) and not math.isfinite(getattr(self, field)):
        raise ValueError(f'MLPLOpt.{field} must be finite, got {getattr(self, field)}.')

  @property
  def num_parameter_features(self) -> int:
    """Per-parameter features before the time features: ``g, w`` and four groups of ``len(decays)``."""
    return 2 + 4 * len(self.decays)

  @property
  def num_inputs(self) -> int:
    return self.num_parameter_features + len(self.time_scales)

  def init(self, key: jax.Array) -> base.MetaParams:
    sizes = (self.num_inputs, *self.hidden_sizes, 2)
    keys = jax.random.split(key, len(sizes) - 1)
    return {f'dense_{i}': features.dense_init(k, n_in, n_out)
            for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:]))}

  def transform(self, meta_params: base.MetaParams) -> optax.GradientTransformationExtraArgs:
    num_decays = len(self.decays)
    num_layers = len(self.hidden_sizes) + 1

    def tensor_scales(w, sizes):
      """``max(rms(w_T), relative_step_floor)`` per tensor ``[T]``: what a relative step is proportional to."""
      return jnp.maximum(jnp.sqrt(features.segment_mean(jnp.square(w)[None], sizes)[0]), self.relative_step_floor)

    def init_fn(params):
      n = features.num_elements(params)
      leaves = base.leaves_f32(params)
      sizes = tuple(int(x.size) for x in leaves)
      return MLPLOptState(
          count=jnp.zeros([], jnp.int32),
          momentum=jnp.zeros((num_decays, n), self.state_dtype),
          second_moment=jnp.zeros((num_decays if self.include_rms else 0, n), self.state_dtype),
          initial_scale=tensor_scales(features.flatten(leaves), sizes) if leaves else jnp.zeros((0,), jnp.float32))

    def update_fn(grads, state, params=None, *, value=None, **extra_args):
      del value, extra_args  # no loss features
      g, w, sizes = features.flat_inputs(grads, params)
      momentum = features.update_moments(base.from_state(state.momentum), g, self.decays)
      if self.include_rms:
        second_moment = features.update_moments(base.from_state(state.second_moment), jnp.square(g), self.decays)
        rms = second_moment
      else:
        second_moment = base.from_state(state.second_moment)
        rms = jnp.zeros_like(momentum)
      inv_rms = jax.lax.rsqrt(rms + _RSQRT_EPS)
      x = jnp.concatenate([g[None], momentum * inv_rms, w[None], momentum, rms, inv_rms])
      x = features.second_moment_normalize(x, sizes, _NORMALIZE_EPS)

      time = features.tanh_time_embedding(state.count, self.time_scales)
      first = meta_params['dense_0']
      kernel = jnp.asarray(first['kernel'], jnp.float32)
      per_param_kernel, time_kernel = kernel[:self.num_parameter_features], kernel[self.num_parameter_features:]
      shared_bias = time @ time_kernel + jnp.asarray(first['bias'], jnp.float32)
      h = per_param_kernel.T @ x + shared_bias[:, None]
      for i in range(1, num_layers):
        h = jax.nn.relu(h)
        layer = meta_params[f'dense_{i}']
        h = jnp.asarray(layer['kernel'], jnp.float32).T @ h + jnp.asarray(layer['bias'], jnp.float32)[:, None]
      direction, magnitude = h[0], h[1]
      step = direction * jnp.exp(self.magnitude_rate * magnitude) * self.step_multiplier
      if self.step_scale == 'relative':
        scale = tensor_scales(w, sizes)
        if self.max_scale_growth is not None:
          scale = jnp.minimum(scale, self.max_scale_growth * state.initial_scale)
        factor = scale
        if self.max_relative_step is not None:
          # rms_T(step * scale) = rms_T(step) * scale, so the cap c * scale on it is a cap c on rms_T(step).
          step_rms = jnp.sqrt(features.segment_mean(jnp.square(step)[None], sizes)[0])
          factor = factor * jnp.minimum(1.0, self.max_relative_step / jnp.maximum(step_rms, 1e-30))
        step = step * features.segment_broadcast(factor[None], sizes)[0]
      if self.min_gradient_rms is not None:
        gradient_rms = jnp.sqrt(features.segment_mean(jnp.square(g)[None], sizes)[0])
        step = step * features.segment_broadcast(base.gradient_gate(gradient_rms, self.min_gradient_rms)[None],
                                                 sizes)[0]
      new_state = MLPLOptState(count=optax.safe_increment(state.count),
                               momentum=base.to_state(momentum, self.state_dtype),
                               second_moment=base.to_state(second_moment, self.state_dtype),
                               initial_scale=state.initial_scale)
      return base.updates_like(params, features.unflatten(-step, sizes)), new_state

    tx = base.transformation('MLPLOpt', init_fn, update_fn)
    return tx if self.loss_brake is None else brakes.loss_brake(tx, power=self.loss_brake)
