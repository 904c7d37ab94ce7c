"""Vectorized truncated meta-training of learned optimizers. See :mod:`meta_train.base`."""

from meta_train.base import GradientEstimator

__all__ = ['GradientEstimator']
