"""Evaluating optimizers, learned or not: the held-out suite, the harness against tuned baselines, its command line.

* :mod:`evaluation.training`: the one inner training loop every evaluation runs (batch and loss keys split);
* :mod:`evaluation.harness`: learning curves, tuned baselines, speedups, win rates, reports (``evaluate``);
* :mod:`evaluation.plots`: the report's figures, learning curves per task and a summary across tasks;
* :mod:`evaluation.heldout`: the held-out suite, tasks the shipped optimizers never saw in meta-training;
* :mod:`evaluation.periodic`: the quick check the meta-trainer runs every ``evaluation.every`` meta-steps;
* :mod:`evaluation.cli`: ``python -m evaluation --out DIR``.

This package depends on :mod:`lopt` and :mod:`tasks` only; :mod:`meta_train` uses it, never the other way round.
"""

from evaluation.harness import OptimizerSpec, Report, RunResult, SuiteEntry, default_baselines, evaluate, run_optimizer
from evaluation.heldout import heldout_suite
from evaluation.periodic import make_evaluator

__all__ = ['OptimizerSpec', 'Report', 'RunResult', 'SuiteEntry', 'default_baselines', 'evaluate', 'heldout_suite',
           'make_evaluator', 'run_optimizer']
