"""The Metz et al. 2019 hybrid: reparameterization and ES gradients combined by inverse-variance weighting.

Metz et al. ("Understanding and correcting pathologies in the training of learned optimizers", ICML 2019,
``es_grad_inv_var.ESGradInvVarTrainer``) meta-train on the Gaussian-smoothed objective ``E_ε[L(θ + ε)]``, for which
two unbiased per-sample estimates exist. Each instance ``b`` draws ``ε_b ~ N(0, σ² I)`` and unrolls a ``±ε_b`` pair
from the same inner state and data::

    g_RP,b = ½ ∇_θ [ L_b(θ + ε_b) + L_b(θ − ε_b) ]          (reparameterization: backprop through both unrolls)
    g_ES,b = (L_b(θ + ε_b) − L_b(θ − ε_b)) / (2σ²) · ε_b     (antithetic ES)

Backprop is precise when the unrolled dynamics are tame and explodes when they are chaotic (long unrolls, large
learning rates); ES has a variance that does not depend on the unroll's Jacobians. Per element ``i`` of the
meta-parameters, with the sample means ``μ`` and unbiased sample variances ``v`` (+1e-8) of each estimator over the
``B`` instances, the combination

    g_i = (μ_ES,i / v_ES,i + μ_RP,i / v_RP,i) / (1 / v_ES,i + 1 / v_RP,i)

is the minimum-variance unbiased mix of two independent estimates (its variance, ``1 / (1/v_ES + 1/v_RP)`` per
sample, is at most the smaller of the two). The next truncation starts from the ``+ε`` trajectory's final state.

Scale: the paper's code computes ``∇(L+ + L−)`` and ``(L+ − L−)·ε/σ²``, both twice the gradient; we halve both so
the hybrid estimates the same gradient as the other estimators (the weighting is unchanged up to the 1e-8).
σ = 0.01 (ESCustomGetter's default). Differentiating with respect to per-instance copies of θ gives the per-instance
``g_RP,b`` in one backward pass. docs/algorithms.md §4 (and §8.5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from meta_train.estimators import perturbation
from meta_train.estimators.perturbation import PerturbedEstimator
from meta_train.structure_groups import StructureGroups
from meta_train.unroll import VectorizedUnroll, unroll_metrics

#: added to both sample variances, as in the paper's code, so a zero-variance estimator does not divide by zero.
VARIANCE_EPSILON = 1e-8


def inverse_variance_combine(rp: jax.Array, es: jax.Array, epsilon: float = VARIANCE_EPSILON) -> jax.Array:
  """Per-element inverse-variance weighted mean of two ``[B, ...]`` samples of estimates (over axis 0)."""
  mean_rp, mean_es = jnp.mean(rp, axis=0), jnp.mean(es, axis=0)
  inv_rp = 1.0 / (jnp.var(rp, axis=0, ddof=1) + epsilon)
  inv_es = 1.0 / (jnp.var(es, axis=0, ddof=1) + epsilon)
  return (mean_rp * inv_rp + mean_es * inv_es) / (inv_rp + inv_es)


class HybridEstimator(PerturbedEstimator):
  """Reparameterization + ES with per-element inverse-variance weighting; see the module docstring.

  Args:
    unroll: the unrolls to run (:class:`meta_train.structure_groups.StructureGroups` or one
      :class:`meta_train.unroll.VectorizedUnroll`) with ``num_tasks >= 2`` (the weights need sample variances over
      instances; the paper used 128). Its ``second_derivatives`` applies to the reparameterization part, and the
      paper's objective was :class:`meta_train.objectives.ClippedOuterValidLoss`.
    std: the perturbation scale σ (0.01).
  """

  def __init__(self, unroll: StructureGroups | VectorizedUnroll, *, std: float = 0.01):
    super().__init__(unroll, std=std)
    if self.num_tasks < 2:
      raise ValueError(f'HybridEstimator needs num_tasks >= 2 (it weights by sample variances over instances), '
                       f'got {self.num_tasks}.')

  def _init_group(self, unroll: VectorizedUnroll, key, meta_params):
    return unroll.init(key, meta_params, num_particles=1)

  def per_instance_estimates(self, unroll: VectorizedUnroll, meta_params, state, key, meta_step):
    """``(g_RP, g_ES, new_state, output, losses)`` for one group; the gradients have a leading ``[B]`` axis."""
    noise_key, unroll_key = jax.random.split(key)
    eps = perturbation.sample_perturbations(noise_key, meta_params, unroll.num_tasks, self.std)
    twins = perturbation.duplicate_particle(state, 2)
    copies = jax.tree.map(lambda x: jnp.broadcast_to(x, (unroll.num_tasks,) + jnp.shape(x)), meta_params)

    def summed_loss(theta_per_instance):
      new_state, output = unroll.unroll(perturbation.antithetic_meta_params(theta_per_instance, eps), twins,
                                        unroll_key, meta_step, per_particle=True)
      losses = unroll.truncation_loss(output)  # [B, 2]
      return 0.5 * jnp.sum(losses), (new_state, output, losses)

    (_, (new_state, output, losses)), rp = jax.value_and_grad(summed_loss, has_aux=True)(copies)
    es = jax.tree.map(lambda e: e * jnp.reshape((losses[:, 0] - losses[:, 1]) / (2 * self.std**2),
                                                (-1,) + (1,) * (e.ndim - 1)), eps)
    new_state = perturbation.take_particle(jax.lax.stop_gradient(new_state), 0)
    return rp, es, new_state, output, losses

  def _estimate_group(self, unroll: VectorizedUnroll, meta_params, state, key, meta_step):
    rp, es, new_state, output, losses = self.per_instance_estimates(unroll, meta_params, state, key, meta_step)
    grad = jax.tree.map(inverse_variance_combine, rp, es)
    return grad, new_state, unroll_metrics(output, losses)
