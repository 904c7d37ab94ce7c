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

Host-sampled branches (optional). An estimator that runs one of several alternative programs per call (one structure
group drawn at random, ``group_mode = 'sample'``) can let the caller draw the alternative on the host, so that a
jitted step contains only the drawn one instead of all of them behind a ``lax.switch``::

    branch = estimator.sample_branch(key)                          # a Python int, drawn from the key alone
    grad, state, metrics = estimator.estimate(meta_params, state, key, branch=branch)   # branch is static

It sets :attr:`GradientEstimator.num_branches` above 1 and overrides :meth:`GradientEstimator.sample_branch`. The
draw is a deterministic function of ``key``, so a run that draws it on the host computes exactly what
``estimate(meta_params, state, key)`` computes under jit (which draws the same branch inside the program), and a
resumed run draws the same branches as an uninterrupted one. The trainer compiles one step per branch, lazily, the
first time the branch is drawn. Estimators with ``num_branches == 1`` (the default) are never passed ``branch``.
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
    """Unrolls one truncation and returns ``(meta_gradient, new_state, metrics)``. Pure and jittable.

    Estimators with :attr:`num_branches` > 1 also accept ``branch=`` (a static Python int, normally
    ``sample_branch(key)``) and then trace only that branch; without it they draw the branch inside the program.
    """

  #: how many alternative programs :meth:`estimate` chooses between per call (see the module docstring).
  num_branches: int = 1

  def sample_branch(self, key: jax.Array) -> int:
    """On the host: the branch ``estimate(..., key)`` runs, a deterministic function of ``key`` (a concrete typed
    PRNG key, not a tracer). ``0`` unless :attr:`num_branches` > 1."""
    del key
    return 0
