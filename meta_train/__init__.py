"""Vectorized truncated meta-training of learned optimizers. See :mod:`meta_train.base`."""

from meta_train.base import GradientEstimator

__all__ = ['GradientEstimator']

# Unrolls, gradient estimators, meta-objectives, truncation schedules.
from meta_train.hybrid import HybridEstimator
from meta_train.objectives import ClippedOuterValidLoss, FinalLoss, LogNormalizedTrainLoss, MetaObjective
from meta_train.truncated_backprop import TruncatedBackprop
from meta_train.truncated_es import TruncatedES
from meta_train.truncated_pes import TruncatedPES
from meta_train.truncated_step import MultiTaskEstimator, TruncatedEstimator, VectorizedUnroll, group_by_structure
from meta_train.truncation_schedules import (ConstantTruncation, LinearIncreasingTruncation, LogUniformTruncation,
                                             TruncationSchedule, WichrowskaTruncation)

__all__ += ['HybridEstimator', 'TruncatedBackprop', 'TruncatedES', 'TruncatedPES', 'MultiTaskEstimator',
            'TruncatedEstimator', 'VectorizedUnroll', 'group_by_structure', 'MetaObjective', 'LogNormalizedTrainLoss',
            'ClippedOuterValidLoss', 'FinalLoss', 'TruncationSchedule', 'ConstantTruncation', 'LogUniformTruncation',
            'WichrowskaTruncation', 'LinearIncreasingTruncation']

# Outer loop, configs, CLI (`python -m meta_train CONFIG --out DIR`).
from meta_train.config import Config, ConfigError, load as load_config
from meta_train.trainer import TrainResult, train

__all__ += ['Config', 'ConfigError', 'TrainResult', 'load_config', 'train']
