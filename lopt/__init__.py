"""Learned optimizers as optax transformations.

See :mod:`lopt.base` for the contract every architecture follows.
"""

from lopt.base import LearnedOptimizer, check_inputs

__all__ = ['LearnedOptimizer', 'check_inputs']
