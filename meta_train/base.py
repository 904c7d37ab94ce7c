"""The gradient-estimator contract shared by truncated backprop, ES, PES and the Metz 2019 hybrid.

An estimator owns everything that persists between meta-steps for its ensemble of inner problems: inner
parameters, inner optimizer states, step counters, task configurations and (for PES) perturbation accumulators.
One call of :meth:`GradientEstimator.estimate` advances every inner problem by one truncation and returns an
estimate of the gradient of the meta-objective with respect to the meta-parameters::

    state = estimator.init(key, meta_params)
    grad, state, metrics = estimator.estimate(meta_params, state, key)   # pure; jit it

``grad`` has the structure of ``meta_params``. ``metrics`` is a flat dict of scalars; every estimator reports at
least ``meta_loss`` (the mean meta-objective over the truncation) and ``inner_nonfinite_resets`` (how many inner
instances were reset because their loss went non-finite).
"""

from __future__ import annotations

import abc
from typing import Any

import jax

MetaParams = Any
EstimatorState = Any
Metrics = dict[str, jax.Array]


class GradientEstimator(abc.ABC):
  """Estimates the meta-gradient over one truncation of an ensemble of inner problems."""

  @abc.abstractmethod
  def init(self, key: jax.Array, meta_params: MetaParams) -> EstimatorState:
    """Starts every inner problem (staggered, so they are not in lockstep) and zeroes any accumulators."""

  @abc.abstractmethod
  def estimate(self, meta_params: MetaParams, state: EstimatorState,
               key: jax.Array) -> tuple[MetaParams, EstimatorState, Metrics]:
    """Unrolls one truncation and returns ``(meta_gradient, new_state, metrics)``. Pure and jittable."""
