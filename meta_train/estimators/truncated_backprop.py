"""Truncated backpropagation through time (TBPTT) through a vectorized unroll.

For each instance ``b`` the meta-loss of a truncation, ``L_b(θ) = sum_t w_t v_t`` (see :mod:`meta_train.objectives`),
is differentiated through the ``T`` inner steps of the truncation (Wichrowska et al. 2017 meta-train this way, with
one meta-gradient per partial unroll and the inner state carried over)::

    ĝ = (1/B) sum_b ∇_θ L_b(θ; s_b)

The inner state ``s_b`` at the start of the truncation is treated as a constant, so the influence of the
meta-parameters on it through earlier truncations is ignored: the estimate is *biased* whenever episodes span
several truncations (short-horizon bias), and its variance can explode for long unrolls because the product of
inner-step Jacobians grows geometrically when the inner dynamics are unstable (Metz et al. 2019).

``second_derivatives=False`` (an argument of the unroll, :class:`meta_train.structure_groups.StructureGroups`) stops
the gradient through the inner gradient (``∂g/∂φ``, Hessian-vector terms), the first-order approximation of
Andrychowicz et al. 2016; Wichrowska et al. keep them (the default). docs/algorithms.md §8.2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from meta_train.estimators.truncated import TruncatedEstimator
from meta_train.unroll import VectorizedUnroll, unroll_metrics


class TruncatedBackprop(TruncatedEstimator):
  """Gradient through the unrolled inner training; see the module docstring.

  The state of each structure group is a :class:`meta_train.unroll.UnrollState` with one particle.

  Args:
    unroll: the unrolls to run, a :class:`meta_train.structure_groups.StructureGroups` or one
      :class:`meta_train.unroll.VectorizedUnroll` (its ``second_derivatives`` decides whether the inner gradient is
      differentiated too). Truncated backprop has no arguments of its own.
  """

  num_particles = 1

  def _init_group(self, unroll: VectorizedUnroll, key, meta_params):
    return unroll.init(key, meta_params, num_particles=1)

  def _estimate_group(self, unroll: VectorizedUnroll, meta_params, state, key, meta_step):
    def meta_loss(theta):
      new_state, output = unroll.unroll(theta, state, key, meta_step)
      losses = unroll.truncation_loss(output)[:, 0]
      return jnp.mean(losses), (new_state, output, losses)

    (_, (new_state, output, losses)), grad = jax.value_and_grad(meta_loss, has_aux=True)(meta_params)
    new_state = jax.lax.stop_gradient(new_state)
    return grad, new_state, unroll_metrics(output, losses)
