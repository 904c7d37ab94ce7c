"""Persistent evolution strategies (PES, Vicol et al. 2021); docs/algorithms.md §8.4.

Each instance keeps two persistent inner trajectories, the ``+`` and ``−`` twins, and a perturbation accumulator
``ξ_b``. At every truncation a fresh ``ε_b ~ N(0, σ² I)`` is drawn, the ``+`` twin is unrolled with ``θ + ε_b`` and
the ``−`` twin with ``θ − ε_b`` (same data), and ``ξ_b ← ξ_b + ε_b``: ``ξ_b`` is the sum of every perturbation that
shaped the ``+`` twin's current episode, and ``−ξ_b`` the ``−`` twin's. Unrolling the whole episode with a perturbed
θ is the ES estimate of the gradient of the *full* episode loss, and the accumulator makes the sum over truncations
telescope into it, so PES is unbiased where truncated ES and backprop are not.

When an instance's episode ends inside the truncation (learned_optimization's ``compute_pes_grad``), the steps before
the boundary were shaped by all of ``ξ_b`` and the steps after it only by ``ε_b``::

    ĝ = (1/B) sum_b [ ΔL_b^old · ξ_b + ΔL_b^new · ε_b ] / (2σ²),
    ΔL_b^old = sum_{t < boundary} w_t (v_t^+ − v_t^−),   ΔL_b^new = sum_{t >= boundary} w_t (v_t^+ − v_t^−),

with ``ξ_b`` already including ``ε_b``, and afterwards ``ξ_b ← ε_b`` (the new episode has seen ``ε_b`` only). The
twins always reset together. ``w_t`` are the objective's per-step weights (:mod:`meta_train.objectives`).
σ = 0.01 as in learned_optimization's ``truncated_pes``.

At :meth:`init` both twins are identical and ``ξ = 0``; the optimizer states of the first episodes are initialised
with the unperturbed θ (every later reset initialises them with the twin's perturbed θ), so for architectures whose
*initial state* depends on θ the first episode of each instance misses that one term.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meta_train.estimators import perturbation
from meta_train.estimators.perturbation import PerturbedEstimator
from meta_train.unroll import UnrollState, VectorizedUnroll, select_instances, unroll_metrics


class PESGroupState(NamedTuple):
  unroll: UnrollState  # [B, 2, ...]: the + and − twins
  accumulator: Any     # like meta_params with a leading [B] axis: ξ_b of the + twin


class TruncatedPES(PerturbedEstimator):
  """Persistent evolution strategies; see the module docstring.

  Args: ``unroll`` and ``std`` (σ), as :class:`meta_train.estimators.perturbation.PerturbedEstimator`.
  """

  def _init_group(self, unroll: VectorizedUnroll, key, meta_params):
    accumulator = jax.tree.map(lambda x: jnp.zeros((unroll.num_tasks,) + jnp.shape(x), jnp.result_type(x)),
                               meta_params)
    return PESGroupState(unroll=unroll.init(key, meta_params, num_particles=2), accumulator=accumulator)

  def _estimate_group(self, unroll: VectorizedUnroll, meta_params, state: PESGroupState, key, meta_step):
    noise_key, unroll_key = jax.random.split(key)
    eps = perturbation.sample_perturbations(noise_key, meta_params, unroll.num_tasks, self.std)
    accumulator = jax.tree.map(jnp.add, state.accumulator, eps)
    new_unroll, output = unroll.unroll(perturbation.antithetic_meta_params(meta_params, eps), state.unroll,
                                       unroll_key, meta_step, per_particle=True)
    differences = (output.values[:, :, 0] - output.values[:, :, 1]) * unroll.weights()[:, None]  # [T, B]
    delta_old = jnp.sum(jnp.where(output.before_reset, differences, 0.0), axis=0)
    delta_new = jnp.sum(jnp.where(output.before_reset, 0.0, differences), axis=0)
    scale = 1.0 / (2 * self.std**2)
    grad = jax.tree.map(jnp.add, perturbation.weighted_tree_mean(delta_old * scale, accumulator),
                        perturbation.weighted_tree_mean(delta_new * scale, eps))
    episode_ended = ~output.before_reset[-1]
    accumulator = select_instances(episode_ended, eps, accumulator)
    losses = unroll.truncation_loss(output)
    return grad, PESGroupState(new_unroll, accumulator), unroll_metrics(output, losses)
