"""Vectorized truncated meta-training of learned optimizers.

The engine: :mod:`meta_train.unroll` (the vectorized truncated unroll), :mod:`meta_train.structure_groups` (task
families grouped by structure, one unroll per group, and how the groups' gradients combine),
:mod:`meta_train.estimators` (the gradient estimators; the contract is :mod:`meta_train.estimators.base`),
:mod:`meta_train.objectives` and :mod:`meta_train.truncation_schedules`. The run around it (configs, build, trainer,
checkpoints, logging, sharding, CLI) is :mod:`meta_train.run`; ``python -m meta_train CONFIG --out DIR`` runs it.
"""

from meta_train.estimators.base import GradientEstimator

__all__ = ['GradientEstimator']

# Unrolls, structure groups, gradient estimators, meta-objectives, truncation schedules.
from meta_train.estimators.es import TruncatedES
from meta_train.estimators.hybrid import HybridEstimator
from meta_train.estimators.pes import TruncatedPES
from meta_train.estimators.truncated import TruncatedEstimator
from meta_train.estimators.truncated_backprop import TruncatedBackprop
from meta_train.objectives import ClippedOuterValidLoss, FinalLoss, LogNormalizedTrainLoss, MetaObjective
from meta_train.structure_groups import MultiTaskEstimator, StructureGroups, group_by_structure
from meta_train.truncation_schedules import (ConstantTruncation, LinearIncreasingTruncation, LogUniformTruncation,
                                             TruncationSchedule, WichrowskaTruncation)
from meta_train.unroll import VectorizedUnroll

__all__ += ['HybridEstimator', 'TruncatedBackprop', 'TruncatedES', 'TruncatedPES', 'MultiTaskEstimator',
            'StructureGroups', 'TruncatedEstimator', 'VectorizedUnroll', 'group_by_structure', 'MetaObjective',
            'LogNormalizedTrainLoss', 'ClippedOuterValidLoss', 'FinalLoss', 'TruncationSchedule', 'ConstantTruncation',
            'LogUniformTruncation', 'WichrowskaTruncation', 'LinearIncreasingTruncation']

# Outer loop, configs, CLI (`python -m meta_train CONFIG --out DIR`).
from meta_train.run.config import Config, ConfigError, load as load_config
from meta_train.run.trainer import TrainResult, train

__all__ += ['Config', 'ConfigError', 'TrainResult', 'load_config', 'train']
