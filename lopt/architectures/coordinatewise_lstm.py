"""The coordinatewise LSTM optimizer of Andrychowicz et al. 2016.

Andrychowicz, Denil, Gomez, Hoffman, Pfau, Schaul, Shillingford, de Freitas, "Learning to learn by gradient descent
by gradient descent", NeurIPS 2016; constants of the released ``learning-to-learn`` MNIST configuration (SPEC 6).

One small two-layer LSTM is shared by every coordinate (parameter element); each coordinate has its own LSTM state.
Per coordinate, with gradient ``g``::

  x        = log_and_sign(g, k=5)                 (2 inputs; ``lopt.features.log_and_sign``)
  c1, h1   = LSTM_20(x, c1, h1)
  c2, h2   = LSTM_20(h1, c2, h2)
  update   = 0.01 (W h2 + b)                       (theta <- theta + update, as in the paper)

The optimizer sees neither the parameter values nor the loss; ``value`` and other keywords are ignored.

Layout. Meta-parameters: ``{'lstm_0': ..., 'lstm_1': ..., 'output': {'kernel': [20, 1], 'bias': [1]}}``, the LSTMs
in ``flax.linen.LSTMCell``'s layout (:func:`lopt.features.lstm_init`; LeCun-normal kernels, forget-gate bias 1 as
Sonnet's LSTM adds) and the output in ``flax.linen.Dense``'s. The recurrence runs feature-major over all coordinates
at once (``[20, N]``, leaves concatenated): one ``[80, I + 20] @ [I + 20, N]`` matmul per layer, whatever the number
of leaves.

State: the cells and hidden states of both layers, ``2 * (20 + 20) = 80`` floats per parameter, zero at init.

Non-finite gradients. ``log_and_sign`` maps ``+-inf`` to a large finite input that saturates the LSTM gates, which
would hide an overflow; to keep the package-wide contract (:mod:`lopt.base`: non-finite gradients propagate), the
update of a coordinate whose gradient is not finite is NaN. Wrap the optimizer in ``optax.apply_if_finite`` to skip
such steps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt import base
from lopt import features


class CoordinatewiseLSTMState(NamedTuple):
  """``cells`` and ``hiddens``: one ``[hidden_size, N]`` float32 array per layer, bottom first.

  Kept per layer rather than stacked: stacking made XLA recompute the LSTM gates inside the concatenation (3x slower
  step on CPU)."""
  cells: tuple[jax.Array, ...]
  hiddens: tuple[jax.Array, ...]


@dataclasses.dataclass(frozen=True)
class CoordinatewiseLSTM(base.LearnedOptimizer):
  """Two-layer LSTM shared over coordinates (Andrychowicz et al. 2016); see the module docstring.

  Attributes:
    hidden_sizes: LSTM widths, bottom first; the paper: (20, 20).
    preprocess_k: ``k`` of the log-and-sign preprocessing; the paper: 5.
    output_scale: the update is ``output_scale`` times the linear readout; the paper: 0.01.
    state_dtype: dtype of the per-coordinate cells and hidden states (``'float32'`` or ``'bfloat16'``,
      :mod:`lopt.base`).
  """
  name = 'coordinatewise_lstm'

  hidden_sizes: tuple[int, ...] = (20, 20)
  preprocess_k: float = 5.0
  output_scale: float = 0.01
  state_dtype: str = 'float32'

  def __post_init__(self):
    object.__setattr__(self, 'state_dtype', base.state_dtype_name(self.state_dtype, 'CoordinatewiseLSTM'))
    if not self.hidden_sizes or not all(isinstance(h, int) and h > 0 for h in self.hidden_sizes):
      raise ValueError(f'CoordinatewiseLSTM.hidden_sizes must be a non-empty tuple of positive ints, '
                       f'got {self.hidden_sizes}.')
    if not (math.isfinite(self.preprocess_k) and self.preprocess_k > 0):
      raise ValueError(f'CoordinatewiseLSTM.preprocess_k must be positive and finite, got {self.preprocess_k}.')
    if not math.isfinite(self.output_scale):
      raise ValueError(f'CoordinatewiseLSTM.output_scale must be finite, got {self.output_scale}.')

  def init(self, key: jax.Array) -> base.MetaParams:
    keys = jax.random.split(key, len(self.hidden_sizes) + 1)
    input_sizes = (2, *self.hidden_sizes[:-1])
    meta_params = {f'lstm_{i}': features.lstm_init(k, n_in, n_hidden)
                   for i, (k, n_in, n_hidden) in enumerate(zip(keys, input_sizes, self.hidden_sizes))}
    meta_params['output'] = features.dense_init(keys[-1], self.hidden_sizes[-1], 1)
    return meta_params

  def transform(self, meta_params: base.MetaParams) -> optax.GradientTransformationExtraArgs:
    f32 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)

    def init_fn(params):
      n = features.num_elements(params)
      # Distinct buffers for every leaf, so that the state can be donated to a jitted step.
      zeros = lambda: tuple(jnp.zeros((h, n), self.state_dtype) for h in self.hidden_sizes)
      return CoordinatewiseLSTMState(cells=zeros(), hiddens=zeros())

    def update_fn(grads, state, params=None, *, value=None, **extra_args):
      del value, extra_args
      g, _, sizes = features.flat_inputs(grads, params)
      x = features.log_and_sign(g, self.preprocess_k)
      cells, hiddens = [], []
      for i, (cell, hidden) in enumerate(zip(state.cells, state.hiddens)):
        c, x = features.lstm_apply(f32(meta_params[f'lstm_{i}']), base.from_state(cell), base.from_state(hidden), x,
                                   feature_major=True)
        cells.append(c)
        hiddens.append(x)
      readout = f32(meta_params['output'])
      step = self.output_scale * (readout['kernel'][:, 0] @ x + readout['bias'][0])
      step = jnp.where(jnp.isfinite(g), step, jnp.nan)  # see "Non-finite gradients" in the module docstring
      store = lambda arrays: tuple(base.to_state(a, self.state_dtype) for a in arrays)
      new_state = CoordinatewiseLSTMState(cells=store(cells), hiddens=store(hiddens))
      return base.updates_like(params, features.unflatten(step, sizes)), new_state

    return base.transformation('CoordinatewiseLSTM', init_fn, update_fn)
