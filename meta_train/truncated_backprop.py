"""Truncated backpropagation through time (TBPTT) through a vectorized unroll.

For each instance ``b`` the meta-loss of a truncation, ``L_b(θ) = sum_t w_t v_t`` (see :mod:`meta_train.objectives`),
is differentiated through the ``T`` inner steps of the truncation (Wichrowska et al. 2017 meta-train this way, with
one meta-gradient per partial unroll and the inner state carried over)::

    ĝ = (1/B) sum_b ∇_θ L_b(θ; s_b)

The inner state ``s_b`` at the start of the truncation is treated as a constant, so the influence of the
meta-parameters on it through earlier truncations is ignored: the estimate is *biased* whenever episodes span
several truncations (short-horizon bias), and its variance can explode for long unrolls because the product of
inner-step Jacobians grows geometrically when the inner dynamics are unstable (Metz et al. 2019).

``second_derivatives=False`` stops the gradient through the inner gradient (``∂g/∂φ``, Hessian-vector terms), the
first-order approximation of Andrychowicz et al. 2016; Wichrowska et al. keep them (the default).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from meta_train import truncated_step
from meta_train.objectives import MetaObjective
from meta_train.truncated_step import TruncatedEstimator, VectorizedUnroll
from meta_train.truncation_schedules import TruncationSchedule
from tasks.base import TaskFamily


class TruncatedBackprop(TruncatedEstimator):
  """Gradient through the unrolled inner training; see the module docstring.

  The state of each structure group is a :class:`meta_train.truncated_step.UnrollState` with one particle.

  Args:
    architecture: the :class:`lopt.LearnedOptimizer` being meta-trained.
    families: a :class:`tasks.TaskFamily` or a sequence of them (grouped by ``structure_key``).
    num_tasks: instances per structure group (the ensemble axis ``B``).
    truncation_schedule: episode lengths (default ``ConstantTruncation(100)``).
    objective: the meta-objective (default :class:`meta_train.objectives.LogNormalizedTrainLoss`).
    unroll_length: inner steps per truncation (20).
    second_derivatives: differentiate through the inner gradient too (True); False stops it.
    use_valid_loss: pass an inner-valid loss as ``valid_value=`` to the optimizer (False).
    stagger: random offsets into the first episode (True).
    group_weights: weights of the structure groups' gradients (default: proportional to their family counts).
    group_mode: ``'all'`` or ``'sample'`` (see :class:`meta_train.truncated_step.TruncatedEstimator`).
  """

  num_particles = 1

  def __init__(self, architecture, families: TaskFamily | Sequence[TaskFamily], num_tasks: int,
               truncation_schedule: TruncationSchedule | None = None, objective: MetaObjective | None = None, *,
               unroll_length: int = 20, second_derivatives: bool = True, use_valid_loss: bool = False,
               stagger: bool = True, group_weights: Sequence[float] | None = None, group_mode: str = 'all'):
    super().__init__(architecture, families, num_tasks, truncation_schedule, objective, unroll_length=unroll_length,
                     use_valid_loss=use_valid_loss, stagger=stagger, group_weights=group_weights,
                     group_mode=group_mode, second_derivatives=second_derivatives)

  def _init_group(self, unroll: VectorizedUnroll, key, meta_params):
    return unroll.init(key, meta_params, num_particles=1)

  def _estimate_group(self, unroll: VectorizedUnroll, meta_params, state, key, meta_step):
    def meta_loss(theta):
      new_state, output = unroll.unroll(theta, state, key, meta_step)
      losses = unroll.truncation_loss(output)[:, 0]
      return jnp.mean(losses), (new_state, output, losses)

    (_, (new_state, output, losses)), grad = jax.value_and_grad(meta_loss, has_aux=True)(meta_params)
    new_state = jax.lax.stop_gradient(new_state)
    return grad, new_state, truncated_step.unroll_metrics(output, losses)
