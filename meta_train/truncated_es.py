"""Antithetic truncated evolution strategies (ES), SPEC 5.1.

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

from typing import Sequence

import jax

from meta_train import truncated_step
from meta_train.objectives import MetaObjective
from meta_train.truncated_step import TruncatedEstimator, VectorizedUnroll
from meta_train.truncation_schedules import TruncationSchedule
from tasks.base import TaskFamily


class TruncatedES(TruncatedEstimator):
  """Antithetic ES over one truncation; see the module docstring.

  The state of each structure group is a one-particle :class:`meta_train.truncated_step.UnrollState`; it is
  duplicated into the ``±ε`` twins for the truncation and the ``+ε`` twin is kept.

  Args:
    architecture: the :class:`lopt.LearnedOptimizer` being meta-trained.
    families: a :class:`tasks.TaskFamily` or a sequence of them (grouped by ``structure_key``).
    num_tasks: instances per structure group (the ensemble axis ``B``); each runs an antithetic pair.
    truncation_schedule: episode lengths (default ``ConstantTruncation(100)``).
    objective: the meta-objective (default :class:`meta_train.objectives.LogNormalizedTrainLoss`).
    unroll_length: inner steps per truncation (20).
    std: the perturbation scale σ (0.01).
    use_valid_loss: pass an inner-valid loss as ``valid_value=`` to the optimizer (False).
    stagger: random offsets into the first episode (True).
    group_weights: weights of the structure groups' gradients (default: proportional to their family counts).
    group_mode: ``'all'`` or ``'sample'`` (see :class:`meta_train.truncated_step.TruncatedEstimator`).
  """

  num_particles = 2

  def __init__(self, architecture, families: TaskFamily | Sequence[TaskFamily], num_tasks: int,
               truncation_schedule: TruncationSchedule | None = None, objective: MetaObjective | None = None, *,
               unroll_length: int = 20, std: float = 0.01, use_valid_loss: bool = False, stagger: bool = True,
               group_weights: Sequence[float] | None = None, group_mode: str = 'all'):
    self.std = truncated_step.check_std(std, 'TruncatedES')
    super().__init__(architecture, families, num_tasks, truncation_schedule, objective, unroll_length=unroll_length,
                     use_valid_loss=use_valid_loss, stagger=stagger, group_weights=group_weights,
                     group_mode=group_mode)

  def _init_group(self, unroll: VectorizedUnroll, key, meta_params):
    return unroll.init(key, meta_params, num_particles=1)

  def _estimate_group(self, unroll: VectorizedUnroll, meta_params, state, key, meta_step):
    noise_key, unroll_key = jax.random.split(key)
    eps = truncated_step.sample_perturbations(noise_key, meta_params, unroll.num_tasks, self.std)
    twins = truncated_step.duplicate_particle(state, 2)
    new_state, output = unroll.unroll(truncated_step.antithetic_meta_params(meta_params, eps), twins, unroll_key,
                                      meta_step, per_particle=True)
    losses = unroll.truncation_loss(output)  # [B, 2]
    coefficients = (losses[:, 0] - losses[:, 1]) / (2 * self.std**2)
    grad = truncated_step.weighted_tree_mean(coefficients, eps)
    return grad, truncated_step.take_particle(new_state, 0), truncated_step.unroll_metrics(output, losses)
