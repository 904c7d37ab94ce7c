r"""The hierarchical RNN learned optimizer of Wichrowska et al. 2017 as an optax transformation.

Reference: O. Wichrowska, N. Maheswaranathan, M. W. Hoffman, S. Gomez Colmenarejo, M. Denil, N. de Freitas,
J. Sohl-Dickstein, "Learned Optimizers that Scale and Generalize", ICML 2017. Every constant below is listed, with its
source (mostly the released TensorFlow code), in docs/algorithms.md §2 (initial values §2.8).

Three levels of GRUs (:mod:`lopt.gru`), sharing weights across parameters and across tensors:

* a **parameter GRU** (10 units) runs on every scalar parameter, reading 12 features of its gradient history;
* a **tensor GRU** (20 units) per tensor reads the tensor-mean of the parameter GRUs' new states and inputs;
* a **global GRU** (20 units) reads the mean of the tensor GRUs' new states.

Each level's *previous* state enters the gates of the level below as an additive bias (``lopt.gru``).

One step, for a parameter with gradient ``g`` (per element unless "per tensor" is said; S = ``num_scales`` = 4):

1. Input decays ``d_1 = inp_decay`` (state), ``d_{i+1} = sqrt(d_i)``; momenta ``a_i <- (1 - d_i) g + d_i a_i``.
2. Mean squares ``ms_i <- (1 - s)(a_i^2 + e) + s ms_i`` with ``s = rms_decay`` (state), ``s = 0`` on the first step,
   and ``e = mean_square_eps`` (1e-12 by default; per tensor with ``relative_mean_square_eps``).
3. Features ``x_i = asinh(a_i / sqrt(ms_i + 1e-4 e))``; products ``x_i x_{i+1}``; relative log mean squares
   ``L_i - mean_j L_j`` with ``L_i = log(ms_i + 1e-4 e)``; relative log learning rate ``l - mean(l)`` where the mean is
   over **all elements of all tensors**. 12 features by default.
4. Parameter GRU: ``h' = GRU_10(features, h; A_t(tensor_state) + A_g(global_state))``.
5. Tensor GRU: ``tensor' = GRU_20(mean_over_tensor([h'; features]), tensor; A(global_state))``.
6. Readouts from ``h'``: direction ``delta = w_upd . h' + w_gs . x`` (the gradient shortcut), normalised to unit RMS
   per tensor, ``delta <- delta / sqrt(mean_over_tensor(delta^2) + 1e-16)``; next decays
   ``rms_decay = sigmoid(w_s . h' + 3.2)``, ``inp_decay = sigmoid(w_d . h' + 2.2)`` (used at the next step).
7. Learning rate: ``l_step = clip(l + w_lr . h' + b_lr, -33, 33)`` (straight-through gradient),
   ``l <- m l + (1 - m) l_step`` with ``m = sigmoid(c)``, and the update is ``-exp(l_step + o) delta``; with
   ``step_scale='relative'`` it is ``-exp(l_step + o) max(rms_T(theta), floor) delta``, a relative learning rate
   (docs/algorithms.md §2.11). With ``min_gradient_rms = epsilon`` the update of a tensor is multiplied by
   ``min(1, rms_T(g) / epsilon)``; with ``attenuation='falls'`` by ``sqrt(min(1, v_f / v_s))``, where ``v_f`` and
   ``v_s`` are bias-corrected EMAs (decays ``attenuation_decays``) of the tensor's ``mean_T(g^2)``
   (``'rises'``: ``sqrt(min(1, v_s / v_f))``; ``'both'``: ``sqrt(min(v_f / v_s, v_s / v_f))``); with
   ``coherence_decay = b`` by ``sqrt(min(1, mean_T(m_hat^2) / v_hat))``, ``m`` a per-element and ``v`` a per-tensor
   bias-corrected EMA (decay ``b``) of ``g`` and ``mean_T(g^2)``: smaller steps where the gradient is noise.
   ``attenuate_vectors=False`` leaves tensors of fan-in 1 out of the attenuation.
8. Global GRU: ``global' = GRU_20(mean over tensors of tensor', global)``.

**Global input: the mean over tensors (``global_input='mean'``, default).** The paper describes the global RNN as
reading the tensor RNNs' states; the released code passed only the *last* tensor's state (a quirk of a loop variable,
docs/algorithms.md §2.6), which makes the optimizer depend on the order of the parameter tree. We default to the
paper's mean; the released behaviour is ``global_input='last'``.

**Attention** (``use_attention=True``, docs/algorithms.md §2.7): a second direction ``delta_att`` (its own readout,
initialised as a copy of ``w_upd``, and its own shortcut) gives a Nesterov-like lookahead. The state keeps the "true"
parameters ``theta_true <- theta_true - exp(l_step + o) delta``, and the returned update moves the parameters to the
attended point ``theta_true_old - exp(l_step) delta_att``, where the next gradient is evaluated.

Implementation notes.

* All tensors are flattened and concatenated into one feature-major ``[features, N_total]`` block, so the parameter
  GRU is one matmul for the whole model, on the stacked ``[features; h]`` (``lopt.gru.stacked_kernel``). Everything
  after that matmul runs per tensor on static column ranges: the injected per-tensor bias is a broadcast column, the
  direction RMS and the tensor GRU's inputs are per-tensor reductions, and each update is produced in its tensor's own
  shape (the program grows linearly with the number of tensors, not with their size). The per-parameter state is
  stored in the flat layout: 21 floats per parameter (``h`` 10, two decays, log learning rate, 4 momenta, 4 mean
  squares; +1 for the true parameter with attention, +1 with ``coherence_decay``), plus 21 floats per tensor (the
  tensor GRU's 20 and the initial scale; +2 with ``attenuation``, +1 with ``coherence_decay``) and 20 global.
* The GRU cell is ``flax.linen.GRUCell``'s (see :mod:`lopt.gru` for how it differs from the TF ``BiasGRUCell``).
* Per-parameter learning-rate initialisation (docs/algorithms.md §2.8) is random but ``optax``'s ``init(params)``
  takes no key: it is drawn from ``fold_in(PRNGKey(lr_init_seed), leaf_index)``, so it is deterministic given the
  config and the order of the (non-None) leaves. ``l = U(log(lo)/2, log(hi)/2)`` per element plus one draw from the
  same range per tensor, then clipped to the tensor's ``[min_log_lr, max_log_lr]``: a triangular distribution on
  ``[log lo, log hi]``.
* ``value`` (the loss) and any other keyword are accepted and ignored: this architecture does not read the loss.
* Speed: most of the update's cost is the parameter GRU, which is compute-bound on CPU (its ``[40, 22] @ [22, N]``
  matmul and 3 transcendentals per unit and parameter), then the features, their ``[22, N]`` stacking and the
  per-tensor means. The measured costs, the project's target and the alternatives that measured slower (splitting
  the matmul around its zero blocks, tiling it over column blocks, fused multiply-adds) are in docs/benchmarks.md
  ("Optimizer step time"; "Measurements moved out of docstrings", ``lopt/architectures/hierarchical_rnn.py``).
  Choices that measured faster on CPU: feature-major layout; one matmul on ``[features; h]`` behind an
  ``optimization_barrier`` (without it XLA rewrites ``W @ concat(a, b)`` into one matmul per operand, each writing
  ``[40, N]``); per-tensor elementwise work with broadcast biases (rather than a gathered ``[30, N]`` bias, or a
  concatenation of per-tensor broadcasts, which XLA materialises over all ``N`` columns); per-scale rows in the feature
  computation (no reductions over the short scale axis); per-tensor means that avoid reducing column slices (XLA copies
  them first, see ``_Layout.segment_mean``); reading the shortcut's scaled momenta back from the stacked block rather
  than recomputing them; ``sigmoid`` through ``tanh`` in the parameter GRU (``lopt.gru``); a one-logarithm ``asinh``.

**At its initial (not meta-trained) weights** the optimizer descends, but slowly: the learned parts are random but
the gradient shortcut (``w_gs`` ~ 0.25 each) makes ``delta`` a positive mix of RMS-normalised momenta, and the step
is ``exp(l + o)`` with ``l`` around ``log 1e-4`` and ``o = -1``, ~4e-5 per unit-RMS direction. On a 10-dimensional
quadratic with condition number 100 every step descends, but 500 steps lower the loss far less than 10x; with
``lr_init_range=(1e-2, 1e-2)`` the same initial weights reduce it by more than 10x
(``tests/lopt/test_hierarchical_rnn.py`` pins both; docs/algorithms.md §2.8).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import base
from lopt import brakes
from lopt import features as feature_ops
from lopt import gru

# Constants of docs/algorithms.md §2.8 that are not hyperparameters of the architecture (they define the initial
# weights).
_AFFINE_SCALE = 0.5  # hrnn_affine_scale: bias affines N(0, 0.5 / sqrt(fan_in))
_READOUT_SCALE = 0.5  # hrnn_rnn_readout_scale
_RMS_DECAY_BIAS_INIT = 3.2  # sigmoid(3.2) ~ 0.961
_INPUT_DECAY_BIAS_INIT = 2.2  # sigmoid(2.2) ~ 0.90
_SHORTCUT_MEAN_INIT = 0.25
_SHORTCUT_STD_INIT = 0.1  # divided by sqrt(num_scales)
_LR_MOMENTUM_LOGIT_INIT = 3.2
_STEP_SIZE_OFFSET_INIT = -1.0
_RMS_EPS = 1e-16  # in the direction's normalisation (step 6)
_FEATURE_RMS_EPS_RATIO = 1e-4  # inside the features' sqrt / log, relative to mean_square_eps (1e-16 at the default)
_MIN_MEAN_SQUARE_EPS = 1e-30  # floor of the per-tensor e (relative_mean_square_eps); a^2 underflows below ~1e-38

_GLOBAL_INPUTS = ('mean', 'last')
# The state arrays over all N parameters, stored in ``state_dtype`` (true_param excepted: see HierarchicalRNN).
# coherence_momentum joins them only when coherence_decay is set (else it is an empty float32 placeholder).
_PER_PARAMETER_FIELDS = ('param_hidden', 'input_decay', 'rms_decay', 'log_lr', 'momenta', 'mean_squares')


class HierarchicalRNNState(NamedTuple):
  """Optimizer state. Per-parameter arrays are over the concatenation of all (non-None) leaves, N in total."""
  count: jax.Array  # int32 [], steps taken
  param_hidden: jax.Array  # [H0, N] parameter-GRU states (feature-major)
  input_decay: jax.Array  # [N] d_1 of the next step
  rms_decay: jax.Array  # [N] s of the next step
  log_lr: jax.Array  # [N] l
  momenta: jax.Array  # [S, N] a_i
  mean_squares: jax.Array  # [S, N] ms_i
  true_param: jax.Array  # [N] with attention, else [0]
  tensor_hidden: jax.Array  # [T, H1] tensor-GRU states
  global_hidden: jax.Array  # [H2] global-GRU state
  initial_scale: jax.Array  # [T] max(rms(theta_0), relative_step_floor) per tensor, for max_scale_growth
  gradient_mean_squares: jax.Array  # [2, T] fast and slow EMAs of mean_T(g^2) with attenuation, else [2, 0]
  coherence_momentum: jax.Array  # [N] EMA of g with coherence_decay, else [0]
  coherence_mean_square: jax.Array  # [T] EMA of mean_T(g^2) with coherence_decay, else [0]


class _Layout(NamedTuple):
  """Static description of the flattened parameters (from shapes only, known at trace time)."""
  sizes: tuple[int, ...]
  fan_ins: tuple[int, ...] = ()  # product of all but the last dimension; 1 for scalars and vectors

  @property
  def num_tensors(self) -> int:
    return len(self.sizes)

  @property
  def num_params(self) -> int:
    return sum(self.sizes)

  @classmethod
  def of(cls, leaves) -> '_Layout':
    sizes = tuple(int(math.prod(jnp.shape(x))) for x in leaves)
    fan_ins = tuple(int(math.prod(jnp.shape(x)[:-1])) if jnp.ndim(x) >= 2 else 1 for x in leaves)
    return cls(sizes, fan_ins)

  def segment_mean(self, x: jax.Array) -> jax.Array:
    """Per-tensor means of a feature-major ``[F, N]`` block: ``[F, T]``; 0 for zero-size tensors.

    Tensors are contiguous column ranges, so each sum is a reduction over a static slice (faster on CPU than
    ``jax.ops.segment_sum``, whose scatter is not vectorised there). But XLA:CPU copies a column slice before reducing
    it, which costs more than reducing whole rows, so the largest tensor's sum is taken as the row totals minus the
    other tensors' sums: the block is read once and only the smaller tensors' columns are copied. The subtraction
    adds an error of ~1 float32 ulp of the rows' absolute sums.
    """
    if not self.sizes:
      return jnp.zeros((x.shape[0], 0), x.dtype)
    largest = int(np.argmax(self.sizes))
    sums = [None if i == largest else jnp.sum(x[:, start:stop], axis=1)
            for i, (start, stop) in enumerate(self._ranges())]
    others = [v for v in sums if v is not None]
    sums[largest] = jnp.sum(x, axis=1) - sum(others[1:], others[0]) if others else jnp.sum(x, axis=1)
    return jnp.stack(sums, axis=1) / np.maximum(np.asarray(self.sizes, np.float32), 1.0)

  def _ranges(self):
    offsets = np.cumsum((0,) + self.sizes)
    return list(zip(offsets[:-1].tolist(), offsets[1:].tolist()))

  def flatten(self, leaves) -> jax.Array:
    if not leaves:
      return jnp.zeros((0,), jnp.float32)
    return jnp.concatenate([jnp.reshape(x, (-1,)) for x in leaves])


def _affine_init(key, fan_in: int, fan_out: int, scale: float) -> dict[str, jax.Array]:
  return {'kernel': scale / math.sqrt(fan_in) * jax.random.normal(key, (fan_in, fan_out), jnp.float32),
          'bias': jnp.zeros((fan_out,), jnp.float32)}


def _affine(params, x):
  return x @ params['kernel'] + params['bias']


def _asinh(x):
  """``arcsinh(x)`` to float32 rounding, with one logarithm (``jnp.arcsinh`` evaluates two branches, and is slower).

  ``asinh|x| = log1p(|x| + x^2 / (1 + sqrt(1 + x^2)))``, accurate near 0; above 1e18, where ``x^2`` would overflow,
  ``asinh|x| = log(2|x|)`` to float32 rounding.
  """
  ax = jnp.abs(x)
  big = ax > 1e18
  u = jnp.where(big, ax, ax + ax * ax / (1.0 + jnp.sqrt(1.0 + ax * ax)))
  return jnp.copysign(jnp.log1p(u) + jnp.where(big, math.log(2.0), 0.0), x)


def _straight_through_clip(x, lower, upper):
  """``clip(x, lower, upper)`` in the forward pass, identity gradient (as the released code)."""
  return x + jax.lax.stop_gradient(jnp.clip(x, lower, upper) - x)


@dataclasses.dataclass(frozen=True)
class HierarchicalRNN(base.LearnedOptimizer):
  """Hierarchical RNN optimizer (Wichrowska et al. 2017); see the module docstring for the math.

  Attributes:
    cell_sizes: state sizes of the parameter, tensor and global GRUs (paper's released code: 10, 20, 20;
      docs/algorithms.md §2.1).
    num_scales: momentum / mean-square timescales (paper's released code: 4; docs/algorithms.md §2.3), decays
      ``d, d^1/2, d^1/4, ...``.
    use_grad_products: add ``x_i x_{i+1}`` features.
    use_relative_log_ms: add ``log ms_i - mean_j log ms_j`` features.
    use_relative_lr: add ``l - mean(l)`` with the mean over all elements of all tensors.
    lr_init_range: ``(lo, hi)``: initial log learning rates are triangular on ``[log lo, log hi]``
      (docs/algorithms.md §2.8).
    max_log_lr: upper clip of the log learning rate (paper's released code: 33; docs/algorithms.md §2.5); may be a
      traced scalar (``optax.inject_hyperparams``).
    min_log_lr: lower clip of the log learning rate; ``None`` (default) is ``-max_log_lr``, the paper's symmetric
      clip. An asymmetric clip bounds the rate from above without raising its floor: with ``step_scale='relative'``
      a rate ``exp(l + o)`` of 1 means steps as large as the weights, and an unbounded ``l`` can grow until the
      loss is non-finite where the gradients vanish (docs/algorithms.md §2.11). A raised floor is the opposite
      bound: meta-trained rates fall by 1e2-1e4 once the loss flattens (the short-horizon bias of meta-training),
      and a floor keeps every relative step at least ``exp(min_log_lr + o)`` of its tensor's RMS (lowered for wide
      tensors with ``fan_in_reference``). Releases 5 and 6 shipped ``-8`` and ``-7`` and were withdrawn: on wide
      nets trained to near-zero loss the forced steps made the loss climb back (docs/algorithms.md §2.11); releases
      4 and 7 have no floor. May be traced.
    fan_in_reference: ``None`` (default) or a fan-in ``r``: a tensor of two or more dimensions whose fan-in ``n``
      (the product of all but its last dimension) exceeds ``r`` has both clips of ``l`` lowered by
      ``log(n / r) / 2``. A relative step that is coherent across a layer's inputs changes its outputs by about
      ``sqrt(n)`` times the relative step, so one cap (or floor) for every tensor is either too loose for wide layers
      or too tight for narrow ones and for vectors (docs/algorithms.md §2.11).
    use_attention: the attention / lookahead of docs/algorithms.md §2.7 (adds 1 state float per parameter).
    global_input: ``'mean'`` (paper, default): the global GRU reads the mean over tensors of the tensor GRUs' states;
      ``'last'`` (released code): only the last tensor's.
    lr_init_seed: seed of the per-parameter learning-rate initialisation (optax ``init`` has no key).
    step_scale: ``'absolute'`` (paper): the step is ``exp(l_step + o) delta``, the same size whatever the scale of
      the parameters. ``'relative'``: that step is multiplied by each tensor's parameter RMS,
      ``max(rms(theta), relative_step_floor)``, so ``exp(l_step + o)`` is a *relative* learning rate (the idea of
      Adafactor's relative step size and LARS's trust ratio). A network's weights are initialised at
      ``1/sqrt(fan_in)``, so an absolute step that suits the O(1) parameters of the synthetic meta-training
      problems is ``sqrt(fan_in)`` times too large for a wide layer: the paper's optimizer moves a 512x512 ReLU layer
      by three times its own weights on its first step. No meta-parameter changes shape.
    relative_step_floor: the smallest parameter RMS ``'relative'`` scales by, so tensors at zero (biases at
      initialisation) still move.
    max_scale_growth: ``None`` (default) or ``kappa > 0``, with ``step_scale='relative'`` only: the RMS a tensor's
      step is scaled by is at most ``kappa`` times its value at initialisation (both floored), so
      ``scale = min(max(rms(theta), floor), kappa max(rms(theta_0), floor))``. Relative steps feed back on
      themselves: a step proportional to the weights that keeps its sign makes them grow geometrically, by a factor
      ``1 + exp(l + o)`` per step, which at the upper clip of ``l`` is unbounded within a few hundred steps
      (measured: a ConvNet's output layer from RMS 0.29 to 160, then a non-finite loss; docs/algorithms.md §2.11).
      Above ``kappa`` times its initial RMS a tensor's steps stop growing with it, so growth is at most linear.
    min_gradient_rms: ``None`` (default) or ``epsilon > 0``: a tensor whose gradient RMS is below ``epsilon`` takes
      its step multiplied by ``rms_T(g) / epsilon``, so the step vanishes with the gradient (the role of Adam's
      ``eps``). Without it the step never vanishes: the direction is normalised to unit RMS, and once the gradients
      fall far below the features' own scale (``sqrt(mean_square_eps)``, 1e-6 at the default) it is the readout of
      ``h'`` alone, a direction that no longer depends on the loss, taken at no less than the floor of the learning
      rate. Measured: a wine classifier whose float32 loss is exactly 0 (gradients 1e-19-1e-29) drifted until single
      batches reached 8 times the initial loss (docs/algorithms.md §2.11). Above ``epsilon`` the factor is exactly 1:
      nothing else changes.
    mean_square_eps: ``e``, added to ``a_i^2`` in the mean squares (step 2; the features' ``sqrt`` and ``log`` add
      ``1e-4 e``). The features do not change when the gradients are rescaled, which is what lets one optimizer
      train any network, only while ``|a_i| >> sqrt(e)``: below, ``a_i / sqrt(ms_i)`` fades to 0 and the relative log
      mean squares flatten, so the direction no longer depends on the loss. At the default ``1e-12`` (the paper's
      constant) that happens below gradients of ~1e-6, which a wide ReLU net that fits its training set reaches within
      a few hundred steps and then keeps for thousands (gradients 1e-6-1e-10, docs/algorithms.md §2.11). In float32
      ``e`` can go down to ~1e-30 (``a^2`` underflows below ~1e-38). A smaller constant also stops fading the
      elements whose gradients are tiny within a tensor whose gradients are not (dead or rarely active units); on
      the validation suite's 512-512 nets that made training worse (docs/algorithms.md §2.11).
    relative_mean_square_eps: ``None`` (default: ``e`` is the constant above) or ``k > 0``: per tensor and timescale
      ``e_T = clip(k mean_T(a_i^2), 1e-30, mean_square_eps)``. Tensors whose momentum RMS is above
      ``sqrt(mean_square_eps / k)`` are unchanged; below, ``e_T`` scales with the tensor's gradients, so its features
      do not fade however small they get, and within the tensor the elements below ``sqrt(k)`` times its RMS still
      fade as they would at that RMS.
    attenuation: ``None`` (default), ``'falls'``, ``'rises'`` or ``'both'``: each tensor's step is multiplied by a
      factor of ``r = v_fast / v_slow``, bias-corrected EMAs of its ``mean_T(g^2)`` (:func:`lopt.base.attenuation`):
      ``sqrt(min(1, r))`` (``'falls'``), ``sqrt(min(1, 1 / r))`` (``'rises'``) or ``sqrt(min(r, 1 / r))``
      (``'both'``). The direction is normalised per tensor, so the step follows the learned rate whatever the
      gradient's size. ``'falls'`` makes it shrink once the gradient falls below its long-run level, as Adam's
      does: a net that fits its training set sees its gradients fall 100-1000x while its relative steps stay the
      same, and the loss climbs back (``diabetes_binary_mlp_64x64``); but on a deterministic landscape the gradient
      falls because the optimizer is converging, and there it stalls (``quadratic_1024`` at 500 steps: 1,580
      against 5.75). ``'rises'`` shrinks the step of a gradient spike, where it is most likely too large: a small
      net that memorises its training set oscillates between batches when the learned rate is too high for it.
      With release 4's weights only ``'both'`` keeps that net below twice its initial loss (either side alone
      fails); measurements in docs/algorithms.md §2.11. Adds 2 floats per tensor to the state.
    attenuation_decays: ``(fast, slow)``, the EMA decays of ``attenuation``, ``0 <= fast < slow < 1``; default
      ``(0.5, 0.999)`` (a fast average over ~2 steps, so that one spike is seen at once, and a slow one over ~1,000
      steps, Adam's ``b2``; a fast 0.9 reacted too late on ``diabetes_binary_mlp_64x64``).
    attenuate_vectors: ``True`` (default) applies ``attenuation`` to every tensor; ``False`` only to tensors of
      fan-in above 1 (weight matrices and kernels), leaving vectors and scalars (biases, a landscape's parameters)
      their full step. A falling gradient means different things there: a layer's weights that keep their relative
      step while their gradient falls 100-1000x move its outputs coherently until the loss climbs back, but a
      parameter vector whose gradient falls because it is converging only stalls (``quadratic_1024``, 2,000 steps,
      release 7's meta-parameters: 21.6 with the falls side on the vector, 2.83 without;
      ``diabetes_binary_mlp_64x64`` stays robust without it on the biases: docs/algorithms.md §2.11). Releases 8
      to 10 ship ``False``.
    coherence_decay: ``None`` (default) or ``b`` in ``(0, 1)``: each tensor's step is multiplied by
      ``sqrt(min(1, mean_T(m_hat^2) / v_hat))`` (:func:`lopt.base.coherence`), where ``m`` is a per-element EMA of the
      gradient and ``v`` an EMA of the tensor's ``mean_T(g^2)``, both with decay ``b`` and bias-corrected: 1 for a
      gradient that keeps its direction from step to step, ``sqrt((1 - b) / (1 + b))`` (0.23 at ``b = 0.9``) for
      one that is minibatch noise. Adam's ``m / sqrt(v)`` has this size; a direction normalised to unit RMS per
      tensor does not, so without it a net whose loss has reached its noise floor keeps taking full-size steps in
      noisy directions, and a wide one drifts until its loss climbs back (``patches8_mlp_512x512``: 19x the initial
      loss with candidate 15, 1.0x with ``b = 0.9``; docs/algorithms.md §2.11). Deterministic gradients keep a
      factor near 1. Releases 7 to 10 ship ``b = 0.9``. Adds 1 float per parameter and 1 per tensor to the state.
    loss_brake: ``None`` (default) or a power ``p > 0``: the transformation is wrapped in :func:`lopt.loss_brake`
      (decay 0.9, warm-up 50 steps), which multiplies the whole update by ``min(1, best / average)^p``, ``average``
      a 10-step average of the loss and ``best`` its lowest value so far: steps shrink while the loss is above its
      best level. Its ``update`` then needs ``value=loss``, and its state is a :class:`lopt.brakes.LossBrakeState`
      whose ``inner_state`` is this architecture's state (pass that to :meth:`input_features`). Against the
      memorising net's late oscillation (``diabetes_binary_mlp_64x64``, release 9, 16 seeds over 5,000 steps:
      2 above twice the initial loss and 5 climbing back over 2x from their best without it, none with ``p = 1``;
      docs/algorithms.md §2.12). Release 10 ships ``p = 1``.
    state_dtype: dtype of the per-parameter state (``'float32'`` or ``'bfloat16'``, :mod:`lopt.base`): ``h``, the
      decays, ``l``, the momenta and mean squares. The attention's ``true_param`` stays float32: it is a copy of the
      parameters, not a statistic, and rounding it would move the parameters by up to 2^-9 of their value per step.
  """

  name: ClassVar[str] = 'hierarchical_rnn'

  cell_sizes: tuple[int, int, int] = (10, 20, 20)
  num_scales: int = 4
  use_grad_products: bool = True
  use_relative_log_ms: bool = True
  use_relative_lr: bool = True
  lr_init_range: tuple[float, float] = (1e-6, 1e-2)
  max_log_lr: float = 33.0
  min_log_lr: float | None = None
  fan_in_reference: int | None = None
  use_attention: bool = False
  global_input: str = 'mean'
  lr_init_seed: int = 0
  step_scale: str = 'absolute'
  relative_step_floor: float = 1e-2
  max_scale_growth: float | None = None
  min_gradient_rms: float | None = None
  mean_square_eps: float = 1e-12
  relative_mean_square_eps: float | None = None
  attenuation: str | None = None
  attenuation_decays: tuple[float, float] = (0.5, 0.999)
  attenuate_vectors: bool = True
  coherence_decay: float | None = None
  loss_brake: float | None = None
  state_dtype: str = 'float32'

  def __post_init__(self):
    object.__setattr__(self, 'state_dtype', base.state_dtype_name(self.state_dtype, 'HierarchicalRNN'))
    def fail(message):
      raise ValueError(f'HierarchicalRNN: {message}')

    sizes = self.cell_sizes
    if (not isinstance(sizes, tuple) or len(sizes) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)):
      fail(f'cell_sizes must be a tuple of 3 positive ints (parameter, tensor, global GRU sizes), got {sizes!r}.')
    if not isinstance(self.num_scales, int) or isinstance(self.num_scales, bool) or self.num_scales < 1:
      fail(f'num_scales must be an int >= 1, got {self.num_scales!r}.')
    for field in ('use_grad_products', 'use_relative_log_ms', 'use_relative_lr', 'use_attention'):
      if not isinstance(getattr(self, field), bool):
        fail(f'{field} must be a bool, got {getattr(self, field)!r}.')
    lr_range = self.lr_init_range
    if (not isinstance(lr_range, tuple) or len(lr_range) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lr_range)
        or not 0 < lr_range[0] <= lr_range[1] or not math.isfinite(lr_range[1])):
      fail(f'lr_init_range must be a tuple (lo, hi) of learning rates with 0 < lo <= hi, got {lr_range!r}.')
    def is_finite_number(v):
      return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if self.min_log_lr is None:
      if not base.is_traced(self.max_log_lr) and not (is_finite_number(self.max_log_lr) and self.max_log_lr > 0):
        fail(f'max_log_lr must be a finite number > 0 (the log learning rate is clipped to [-max_log_lr, '
             f'max_log_lr]), got {self.max_log_lr!r}; set min_log_lr too for an asymmetric clip.')
    else:
      for field in ('min_log_lr', 'max_log_lr'):
        if not base.is_traced(getattr(self, field)) and not is_finite_number(getattr(self, field)):
          fail(f'{field} must be a finite number, got {getattr(self, field)!r}.')
      if (not base.is_traced(self.min_log_lr) and not base.is_traced(self.max_log_lr)
          and not self.min_log_lr < self.max_log_lr):
        fail(f'min_log_lr must be below max_log_lr, got min_log_lr={self.min_log_lr!r}, '
             f'max_log_lr={self.max_log_lr!r}.')
    if self.fan_in_reference is not None and (
        not isinstance(self.fan_in_reference, int) or isinstance(self.fan_in_reference, bool)
        or self.fan_in_reference < 1):
      fail(f'fan_in_reference must be None or an int >= 1, got {self.fan_in_reference!r}.')
    if self.global_input not in _GLOBAL_INPUTS:
      fail(f"global_input must be 'mean' (paper: mean over tensors) or 'last' (released code: last tensor only), "
           f'got {self.global_input!r}.')
    if not isinstance(self.lr_init_seed, int) or isinstance(self.lr_init_seed, bool):
      fail(f'lr_init_seed must be an int, got {self.lr_init_seed!r}.')
    base.check_step_scale(self.step_scale, self.relative_step_floor, 'HierarchicalRNN')
    base.check_max_scale_growth(self.max_scale_growth, self.step_scale, 'HierarchicalRNN')
    base.check_min_gradient_rms(self.min_gradient_rms, 'HierarchicalRNN')
    base.check_positive_finite('mean_square_eps', self.mean_square_eps, 'HierarchicalRNN', optional=False,
                               meaning="added to the squared momenta; 1e-12 is the paper's")
    base.check_positive_finite('relative_mean_square_eps', self.relative_mean_square_eps, 'HierarchicalRNN',
                               meaning='e per tensor is at most that multiple of the mean squared momentum; 1e-4 '
                                       'was tried')
    base.check_attenuation(self.attenuation, self.attenuation_decays, 'HierarchicalRNN')
    base.check_coherence_decay(self.coherence_decay, 'HierarchicalRNN')
    base.check_positive_finite('loss_brake', self.loss_brake, 'HierarchicalRNN',
                               meaning='the power of best / average loss the update is multiplied by; 1 was tried')
    if not isinstance(self.attenuate_vectors, bool):
      raise TypeError(f'HierarchicalRNN: attenuate_vectors must be True or False, got {self.attenuate_vectors!r}.')
    if not self.attenuate_vectors and self.attenuation is None:
      raise ValueError("HierarchicalRNN: attenuate_vectors=False has no effect without an attenuation; set "
                       "attenuation='falls', 'rises' or 'both', or leave attenuate_vectors at True.")

  @property
  def log_lr_bounds(self) -> tuple[float, float]:
    """``(lower, upper)`` clip of the log learning rate."""
    lower = -self.max_log_lr if self.min_log_lr is None else self.min_log_lr
    return lower, self.max_log_lr

  def _log_lr_clips(self, layout: _Layout) -> list[tuple]:
    """Each tensor's ``(lower, upper)`` clip of ``l``: :attr:`log_lr_bounds`, both lowered by the same amount for
    wide tensors (``fan_in_reference``)."""
    lower, upper = self.log_lr_bounds
    if self.fan_in_reference is None:
      return [(lower, upper)] * layout.num_tensors
    shifts = [0.5 * math.log(max(n / self.fan_in_reference, 1.0)) for n in layout.fan_ins]
    return [(lower - shift, upper - shift) for shift in shifts]

  @property
  def num_features(self) -> int:
    """Inputs of the parameter GRU: scaled momenta, their products, relative log mean squares, relative log lr."""
    s = self.num_scales
    return s + (s - 1) * self.use_grad_products + s * self.use_relative_log_ms + int(self.use_relative_lr)

  def state_floats_per_parameter(self) -> int:
    """Per-parameter optimizer state, in floats (the per-tensor and global states are extra, O(tensors))."""
    return (self.cell_sizes[0] + 3 + 2 * self.num_scales + int(self.use_attention)
            + int(self.coherence_decay is not None))

  # ----------------------------------------------------------------------------------------------------------------
  # Meta-parameters.

  def init(self, key: jax.Array) -> base.MetaParams:
    h0, h1, h2 = self.cell_sizes
    f = self.num_features
    s = self.num_scales
    keys = iter(jax.random.split(key, 16))
    readout_std = _READOUT_SCALE / math.sqrt(h0)
    shortcut_std = _SHORTCUT_STD_INIT / math.sqrt(s)

    def readout(bias):
      return {'kernel': readout_std * jax.random.normal(next(keys), (h0,), jnp.float32),
              'bias': jnp.asarray(bias, jnp.float32)}

    def shortcut():
      return _SHORTCUT_MEAN_INIT + shortcut_std * jax.random.normal(next(keys), (s,), jnp.float32)

    direction = readout_std * jax.random.normal(next(keys), (h0,), jnp.float32)
    meta = {
        'param_rnn': gru.gru_init(next(keys), f, h0),
        'tensor_rnn': gru.gru_init(next(keys), h0 + f, h1),
        'global_rnn': gru.gru_init(next(keys), h1, h2),
        'param_bias_from_tensor': _affine_init(next(keys), h1, 3 * h0, _AFFINE_SCALE),
        'param_bias_from_global': _affine_init(next(keys), h2, 3 * h0, _AFFINE_SCALE),
        'tensor_bias_from_global': _affine_init(next(keys), h2, 3 * h1, _AFFINE_SCALE),
        'param_hidden_init': jax.random.uniform(next(keys), (h0,), jnp.float32, -1.0, 1.0),
        'tensor_hidden_init': jax.random.uniform(next(keys), (h1,), jnp.float32, -1.0, 1.0),
        'global_hidden_init': jax.random.uniform(next(keys), (h2,), jnp.float32, -1.0, 1.0),
        'direction': direction,
        'gradient_shortcut': shortcut(),
        'rms_decay': readout(_RMS_DECAY_BIAS_INIT),
        'input_decay': readout(_INPUT_DECAY_BIAS_INIT),
        # zero_init_lr_weights=True: the learning rate changes only once meta-trained.
        'log_lr': {'kernel': jnp.zeros((h0,), jnp.float32), 'bias': jnp.zeros((), jnp.float32)},
        'lr_momentum_logit': jnp.asarray(_LR_MOMENTUM_LOGIT_INIT, jnp.float32),
        'step_size_offset': jnp.asarray(_STEP_SIZE_OFFSET_INIT, jnp.float32),
    }
    if self.use_attention:
      meta['attention_direction'] = direction  # a copy of the update readout, as the released code
      meta['attention_shortcut'] = shortcut()
    return meta

  # ----------------------------------------------------------------------------------------------------------------
  # The optax transformation.

  def init_state(self, meta_params: base.MetaParams, params: base.Params) -> HierarchicalRNNState:
    """The optimizer state for ``params`` (what ``transform(meta_params).init(params)`` returns)."""
    leaves = base.leaves_f32(params)
    layout = _Layout.of(leaves)
    n, t = layout.num_params, layout.num_tensors
    h0, h1, _ = self.cell_sizes
    lo, hi = (0.5 * math.log(v) for v in self.lr_init_range)
    root = jax.random.PRNGKey(self.lr_init_seed)
    log_lrs = []
    for index, size in enumerate(layout.sizes):
      element_key, tensor_key = jax.random.split(jax.random.fold_in(root, index))
      log_lrs.append(jax.random.uniform(element_key, (size,), jnp.float32, lo, hi)
                     + jax.random.uniform(tensor_key, (), jnp.float32, lo, hi))
    clips = self._log_lr_clips(layout)
    log_lr = layout.flatten([jnp.clip(v, lower, upper) for v, (lower, upper) in zip(log_lrs, clips)])
    meta = meta_params
    return self._store(HierarchicalRNNState(
        count=jnp.zeros((), jnp.int32),
        param_hidden=jnp.broadcast_to(jnp.asarray(meta['param_hidden_init'], jnp.float32)[:, None], (h0, n)),
        # Distinct arrays (not one zeros buffer under two names): a donated state must not alias itself.
        input_decay=jnp.zeros((n,), jnp.float32),
        rms_decay=jnp.zeros((n,), jnp.float32),
        log_lr=log_lr,
        momenta=jnp.zeros((self.num_scales, n), jnp.float32),
        mean_squares=jnp.zeros((self.num_scales, n), jnp.float32),
        true_param=layout.flatten(leaves) if self.use_attention else jnp.zeros((0,), jnp.float32),
        tensor_hidden=jnp.broadcast_to(jnp.asarray(meta['tensor_hidden_init'], jnp.float32), (t, h1)),
        # A copy: the state may be donated to a jitted step, which must not delete the meta-parameters' buffer.
        global_hidden=jnp.array(meta['global_hidden_init'], jnp.float32, copy=True),
        initial_scale=jnp.stack([self._tensor_scale(leaf) for leaf in leaves]) if leaves else jnp.zeros((0,)),
        gradient_mean_squares=jnp.zeros((2, t if self.attenuation is not None else 0), jnp.float32),
        coherence_momentum=jnp.zeros((n if self.coherence_decay is not None else 0,), jnp.float32),
        coherence_mean_square=jnp.zeros((t if self.coherence_decay is not None else 0,), jnp.float32),
    ))

  def _tensor_scale(self, param: jax.Array) -> jax.Array:
    """``max(rms(param), relative_step_floor)``: what a relative step is proportional to."""
    return jnp.maximum(jnp.sqrt(base.safe_mean(param ** 2)), self.relative_step_floor)

  def _load(self, state: HierarchicalRNNState) -> HierarchicalRNNState:
    """The stored state with its per-parameter arrays as float32 (``state_dtype``; no-op for float32)."""
    return state._replace(**{k: base.from_state(getattr(state, k)) for k in self._per_parameter_fields()})

  def _store(self, state: HierarchicalRNNState) -> HierarchicalRNNState:
    """The float32 state with its per-parameter arrays rounded to ``state_dtype`` for storage."""
    return state._replace(
        **{k: base.to_state(getattr(state, k), self.state_dtype) for k in self._per_parameter_fields()})

  def _per_parameter_fields(self) -> tuple[str, ...]:
    """The state fields over all N parameters, which ``state_dtype`` applies to."""
    return _PER_PARAMETER_FIELDS + (('coherence_momentum',) if self.coherence_decay is not None else ())

  def transform(self, meta_params: base.MetaParams) -> optax.GradientTransformationExtraArgs:

    def init_fn(params):
      return self.init_state(meta_params, params)

    def update_fn(grads, state, params=None, *, value=None, **extra_args):
      del value, extra_args  # this architecture does not read the loss; unknown keywords are ignored by contract
      layout = _Layout.of(jax.tree.leaves(params))
      grad_leaves = base.leaves_f32(grads)
      grads_flat = layout.flatten(grad_leaves)
      params_flat = layout.flatten(base.leaves_f32(params))
      # Per leaf rather than on slices of the flat block: XLA:CPU copies a column slice before reducing it, and
      # _Layout.segment_mean's "total minus the others" is not accurate for a tensor far smaller than the rest.
      # Each leaf's mean squared gradient, once, for the gate (its square root), the attenuation's and the
      # coherence's averages.
      averaged = self.attenuation is not None or self.coherence_decay is not None
      leaf_mean_squares = ([base.safe_mean(g ** 2) for g in grad_leaves]
                           if self.min_gradient_rms is not None or averaged else None)
      gradient_rms = None if self.min_gradient_rms is None else [jnp.sqrt(ms) for ms in leaf_mean_squares]
      gradient_mean_squares = None if not averaged or not grad_leaves else jnp.stack(leaf_mean_squares)
      update_leaves, new_state = self._step(meta_params, layout, grads_flat, params_flat, self._load(state),
                                            gradient_rms, gradient_mean_squares)
      return base.updates_like(params, update_leaves), self._store(new_state)

    tx = base.transformation(type(self).__name__, init_fn, update_fn)
    return tx if self.loss_brake is None else brakes.loss_brake(tx, power=self.loss_brake)

  # ----------------------------------------------------------------------------------------------------------------
  # The step, on the flat feature-major layout.

  def _mean_square_eps(self, momentum: jax.Array, sizes: tuple[int, ...]):
    """``e`` of step 2 for one timescale: the constant ``mean_square_eps``, or with ``relative_mean_square_eps = k``
    per tensor ``clip(k mean_T(a^2), 1e-30, mean_square_eps)`` broadcast to its elements (the floor keeps
    ``a / sqrt(ms)`` finite for a tensor whose gradients are all exactly 0)."""
    if self.relative_mean_square_eps is None:
      return self.mean_square_eps
    per_tensor = feature_ops.segment_mean(jnp.square(momentum)[None], sizes)
    per_tensor = jnp.clip(self.relative_mean_square_eps * per_tensor, _MIN_MEAN_SQUARE_EPS, self.mean_square_eps)
    return feature_ops.segment_broadcast(per_tensor, sizes)[0]

  def _input_features(self, state: HierarchicalRNNState, grads_flat: jax.Array,
                      sizes: tuple[int, ...]) -> dict[str, jax.Array]:
    """Steps 1-3 of the module docstring: new momenta and mean squares, and the parameter GRU's input features."""
    # Row by row over the S timescales (rather than on stacked [S, N] arrays), so that XLA sees S independent
    # elementwise chains and no reductions over the short axis.
    rms_decay = jnp.where(state.count == 0, 0.0, state.rms_decay)
    decay = state.input_decay
    momenta, mean_squares, scaled, log_ms = [], [], [], []
    for i in range(self.num_scales):
      if i:
        decay = jnp.sqrt(decay)  # each accumulator on twice the previous one's timescale
      momentum = (1.0 - decay) * grads_flat + decay * state.momenta[i]
      ms_eps = self._mean_square_eps(momentum, sizes)
      rms_eps = ms_eps * _FEATURE_RMS_EPS_RATIO
      # The first mean square is a^2 itself (the released code tests "ms is all zeros"; ms > 0 after any step).
      mean_square = (1.0 - rms_decay) * (momentum ** 2 + ms_eps) + rms_decay * state.mean_squares[i]
      momenta.append(momentum)
      mean_squares.append(mean_square)
      scaled.append(_asinh(momentum / jnp.sqrt(mean_square + rms_eps)))
      if self.use_relative_log_ms:
        log_ms.append(jnp.log(mean_square + rms_eps))
    out = {'momenta': jnp.stack(momenta), 'mean_squares': jnp.stack(mean_squares), 'scaled': jnp.stack(scaled)}
    features = list(scaled)
    if self.use_grad_products:
      products = [a * b for a, b in zip(scaled[:-1], scaled[1:])]
      out['products'] = jnp.stack(products) if products else jnp.zeros((0,) + grads_flat.shape, jnp.float32)
      features += products
    if self.use_relative_log_ms:
      mean_log_ms = sum(log_ms[1:], log_ms[0]) / self.num_scales
      relative = [v - mean_log_ms for v in log_ms]
      out['relative_log_ms'] = jnp.stack(relative)
      features += relative
    if self.use_relative_lr:
      relative_lr = state.log_lr - base.safe_mean(state.log_lr)
      out['relative_lr'] = relative_lr[None]
      features.append(relative_lr)
    out['features'] = jnp.stack(features)
    return out

  def input_features(self, grads: base.Params, state: HierarchicalRNNState,
                     params: base.Params) -> dict[str, jax.Array]:
    """The per-parameter inputs of one step, for inspection: flat feature-major ``[k, N]`` arrays.

    Keys: ``momenta``, ``mean_squares`` (after this step's update), ``scaled`` (asinh RMS-scaled momenta),
    ``products``, ``relative_log_ms``, ``relative_lr`` (when switched on) and ``features`` (all of them stacked, what
    the parameter GRU reads). Columns follow ``jax.tree.leaves(params)`` order, each leaf flattened row-major.
    """
    base.check_inputs(grads, params, type(self).__name__)
    base.check_state(state, params, lambda p: self.init_state(self.init(jax.random.PRNGKey(0)), p),
                     type(self).__name__)
    layout = _Layout.of(jax.tree.leaves(params))
    return self._input_features(self._load(state), layout.flatten(base.leaves_f32(grads)), layout.sizes)

  def _step(self, meta, layout: _Layout, grads_flat, params_flat, state: HierarchicalRNNState,
            gradient_rms: list[jax.Array] | None = None, gradient_mean_squares: jax.Array | None = None):
    inputs = self._input_features(state, grads_flat, layout.sizes)
    averages, step_factor = state.gradient_mean_squares, None
    coherence_momentum, coherence_mean_square = state.coherence_momentum, state.coherence_mean_square
    count = optax.safe_increment(state.count)
    if gradient_mean_squares is not None and self.attenuation is not None:
      averages = base.gradient_mean_square_averages(averages, gradient_mean_squares, self.attenuation_decays)
      step_factor = base.attenuation(averages, count, self.attenuation_decays, self.attenuation)
      if not self.attenuate_vectors:
        # Fan-in 1 (biases, scalars, a landscape's parameter vector): no attenuation; see the field's docstring.
        step_factor = jnp.where(np.asarray([fan_in > 1 for fan_in in layout.fan_ins]), step_factor, 1.0)
    if gradient_mean_squares is not None and self.coherence_decay is not None:
      b = self.coherence_decay
      coherence_momentum = b * coherence_momentum + (1.0 - b) * grads_flat
      coherence_mean_square = b * coherence_mean_square + (1.0 - b) * gradient_mean_squares
      factor = base.coherence(feature_ops.segment_mean(jnp.square(coherence_momentum)[None], layout.sizes)[0],
                              coherence_mean_square, count, b)
      step_factor = factor if step_factor is None else step_factor * factor
    features = inputs['features']
    tensor_prev, global_prev = state.tensor_hidden, state.global_hidden
    h0, f = self.cell_sizes[0], self.num_features

    # Parameter GRU, with the previous tensor and global states injected into its gates: one matmul on the stacked
    # [features; h] for all parameters. The barrier keeps XLA from splitting the matmul of a concatenation into one
    # matmul per operand (each writing a [4 H0, N] array, the dominant cost); it is an identity for values,
    # gradients and batching.
    bias_per_tensor = (_affine(meta['param_bias_from_tensor'], tensor_prev)
                       + _affine(meta['param_bias_from_global'], global_prev))  # [T, 3 H0]
    w_param, b_param = gru.stacked_kernel(meta['param_rnn'])
    stacked_input = jax.lax.optimization_barrier(jnp.concatenate([features, state.param_hidden]))  # [F + H0, N]
    preactivations = w_param @ stacked_input  # [4 H0, N]

    readout_kernels = [meta['direction'], meta['rms_decay']['kernel'], meta['input_decay']['kernel'],
                       meta['log_lr']['kernel']]
    shortcuts = [meta['gradient_shortcut']]
    if self.use_attention:
      readout_kernels.append(meta['attention_direction'])
      shortcuts.append(meta['attention_shortcut'])
    readout_kernels, shortcuts = jnp.stack(readout_kernels), jnp.stack(shortcuts)
    lr_momentum = jax.nn.sigmoid(meta['lr_momentum_logit'])

    # After the matmul the elementwise work is per tensor (static column ranges): the injected bias is a broadcast
    # column, the direction's RMS and the tensor GRU's input are means over the tensor, and the update is produced
    # in the tensor's own shape without a flat intermediate. Only the readouts are one matmul over all columns.
    hidden_pieces = [
        gru.gru_apply_stacked(preactivations[:, start:stop] + b_param[:, None], state.param_hidden[:, start:stop],
                              beta[:, None])
        for (start, stop), beta in zip(layout._ranges(), bias_per_tensor)]
    param_hidden = jnp.concatenate(hidden_pieces, axis=1) if hidden_pieces else state.param_hidden
    all_readouts = readout_kernels @ param_hidden  # [4 or 5, N], one matmul for all tensors

    # The tensor GRU's feature inputs, from the barrier's output (so the features are not recomputed) and over all its
    # rows: the previous h rows are reduced and dropped, which costs less than the copy XLA would make of the slice.
    feature_means = layout.segment_mean(stacked_input)[:f]  # [F, T]

    outputs = {k: [] for k in ('rms_decay', 'input_decay', 'log_lr', 'true_param', 'update')}
    tensor_inputs = []
    log_lr_clips = self._log_lr_clips(layout)
    for index, ((start, stop), hidden) in enumerate(zip(layout._ranges(), hidden_pieces)):
      cols = slice(start, stop)
      readouts = all_readouts[:, cols]
      # The shortcut as S multiply-adds on the barrier's output rows (rows :S are the scaled momenta): fused, where a
      # matmul would first copy the strided [S, n] slice, and read back rather than recomputed from the momenta.
      directions = jnp.concatenate([readouts[:1], readouts[4:]])  # [1 or 2, n]
      for i in range(self.num_scales):
        directions = directions + shortcuts[:, i:i + 1] * stacked_input[i, cols]
      tensor_inputs.append(jnp.concatenate([base.safe_mean(hidden, axis=1), feature_means[:, index]]))
      directions = directions / jnp.sqrt(base.safe_mean(directions ** 2, axis=1, keepdims=True) + _RMS_EPS)
      if gradient_rms is not None:
        directions = directions * base.gradient_gate(gradient_rms[index], self.min_gradient_rms)
      if step_factor is not None:
        directions = directions * step_factor[index]

      log_lr_prev = state.log_lr[cols]
      log_lr_step = _straight_through_clip(log_lr_prev + readouts[3] + meta['log_lr']['bias'], *log_lr_clips[index])
      step_size = jnp.exp(log_lr_step)
      if self.step_scale == 'relative':
        scale = self._tensor_scale(params_flat[cols])
        if self.max_scale_growth is not None:
          scale = jnp.minimum(scale, self.max_scale_growth * state.initial_scale[index])
        step_size = step_size * scale
      step = -step_size * jnp.exp(meta['step_size_offset']) * directions[0]
      if self.use_attention:
        outputs['true_param'].append(state.true_param[cols] + step)
        step = state.true_param[cols] - step_size * directions[1] - params_flat[cols]
      outputs['update'].append(step)
      outputs['rms_decay'].append(jax.nn.sigmoid(readouts[1] + meta['rms_decay']['bias']))
      outputs['input_decay'].append(jax.nn.sigmoid(readouts[2] + meta['input_decay']['bias']))
      outputs['log_lr'].append(lr_momentum * log_lr_prev + (1.0 - lr_momentum) * log_lr_step)

    def flat(name, like):
      return jnp.concatenate(outputs[name], axis=-1) if outputs[name] else like

    tensor_input = jnp.stack(tensor_inputs) if tensor_inputs else jnp.zeros((0, h0 + f), jnp.float32)
    tensor_hidden = gru.gru_apply(meta['tensor_rnn'], tensor_prev, tensor_input,
                                  _affine(meta['tensor_bias_from_global'], global_prev))
    if self.global_input == 'mean':
      global_input = base.safe_mean(tensor_hidden, axis=0)
    elif layout.num_tensors:
      global_input = tensor_hidden[-1]
    else:
      global_input = jnp.zeros_like(global_prev)
    global_hidden = gru.gru_apply(meta['global_rnn'], global_prev, global_input)

    new_state = HierarchicalRNNState(
        count=count,
        param_hidden=param_hidden,
        input_decay=flat('input_decay', state.input_decay),
        rms_decay=flat('rms_decay', state.rms_decay),
        log_lr=flat('log_lr', state.log_lr),
        momenta=inputs['momenta'],
        mean_squares=inputs['mean_squares'],
        true_param=flat('true_param', state.true_param) if self.use_attention else state.true_param,
        tensor_hidden=tensor_hidden,
        global_hidden=global_hidden,
        initial_scale=state.initial_scale,
        gradient_mean_squares=averages,
        coherence_momentum=coherence_momentum,
        coherence_mean_square=coherence_mean_square,
    )
    return outputs['update'], new_state
