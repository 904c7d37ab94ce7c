"""Antithetic truncated evolution strategies (ES); docs/algorithms.md §8.3.

Each instance ``b`` draws ``ε_b ~ N(0, σ² I)`` over all meta-parameters; its ``+ε`` and ``−ε`` copies start from the
*same* inner state ``s_b`` and see the same data, and::

    ĝ = (1/B) sum_b (L_b(θ + ε_b; s_b) − L_b(θ − ε_b; s_b)) / (2σ²) · ε_b

is an unbiased estimate of the gradient of the Gaussian-smoothed truncation loss ``E_ε[L(θ + ε; s)]`` (the same
sample also estimates the gradient of ``L`` itself up to ``O(σ²)``). The state then advances along the ``+ε``
trajectory. Like truncated backprop it ignores how θ shaped ``s_b`` in earlier truncations, so it is biased when
episodes span several truncations; unlike backprop its variance does not grow with the unroll's Jacobians.
σ = 0.01 as in learned_optimization's ``truncated_es`` and Metz et al. 2019.
"""

from __future__ import annotations

import jax

from meta_train.estimators import perturbation
from meta_train.estimators.perturbation import PerturbedEstimator
from meta_train.unroll import VectorizedUnroll, unroll_metrics


class TruncatedES(PerturbedEstimator):
  """Antithetic ES over one truncation; see the module docstring.

  The state of each structure group is a one-particle :class:`meta_train.unroll.UnrollState`; it is duplicated
  into the ``±ε`` twins for the truncation and the ``+ε`` twin is kept.

  Args: ``unroll`` and ``std`` (σ), as :class:`meta_train.estimators.perturbation.PerturbedEstimator`.
  """

  def _init_group(self, unroll: VectorizedUnroll, key, meta_params):
    return unroll.init(key, meta_params, num_particles=1)

  def _estimate_group(self, unroll: VectorizedUnroll, meta_params, state, key, meta_step):
    noise_key, unroll_key = jax.random.split(key)
    eps = perturbation.sample_perturbations(noise_key, meta_params, unroll.num_tasks, self.std)
    twins = perturbation.duplicate_particle(state, 2)
    new_state, output = unroll.unroll(perturbation.antithetic_meta_params(meta_params, eps), twins, unroll_key,
                                      meta_step, per_particle=True)
    losses = unroll.truncation_loss(output)  # [B, 2]
    coefficients = (losses[:, 0] - losses[:, 1]) / (2 * self.std**2)
    grad = perturbation.weighted_tree_mean(coefficients, eps)
    return grad, perturbation.take_particle(new_state, 0), unroll_metrics(output, losses)
