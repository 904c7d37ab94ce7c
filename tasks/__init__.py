"""Loss landscapes: synthetic problems, task families, and real-data tasks. See :mod:`tasks.base`."""

from tasks.base import SPLITS, SingleTaskFamily, Task, TaskFamily

__all__ = ['SPLITS', 'SingleTaskFamily', 'Task', 'TaskFamily']
