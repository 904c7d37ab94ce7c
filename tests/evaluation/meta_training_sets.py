"""The meta-training problems of every committed config, for the tests that keep them apart from both suites.

A round of meta-training is data: its config names its problems (``[tasks] problems``), so the problems a shipped
or experimental optimizer was trained on are read from ``configs/*.toml`` and from the ``config.toml`` of every
committed run (``runs/*/``, which may still spell them the old way), never from a list kept in the library.
"""

from __future__ import annotations

import glob
import os

from meta_train.run import build
from meta_train.run import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Configs that reproduce a paper's setup and so train on what the suites hold, on purpose: no optimizer that the
#: suites judge comes from them. Every other config is checked.
PAPER_CONFIGS = {
    'wichrowska2017.toml': 'all 101 problems of Wichrowska et al. 2017, the suites\' Wichrowska problems included',
    'metz2019.toml': 'a Fashion-MNIST MLP, as Metz et al. 2019',
    'metz2020.toml': 'MLPs on Fashion-MNIST and digits, as Metz et al. 2020',
}


def config_paths() -> list[str]:
  """Every committed config: ``configs/*.toml``, then each run's ``runs/*/config.toml``."""
  return (sorted(glob.glob(os.path.join(REPO, 'configs', '*.toml')))
          + sorted(glob.glob(os.path.join(REPO, 'runs', '*', 'config.toml'))))


def label(path: str) -> str:
  """``configs/x.toml`` or ``runs/x/config.toml``: a test id."""
  return os.path.relpath(path, REPO)


def meta_training_configs() -> list[str]:
  """:func:`config_paths` without the paper reproductions of :data:`PAPER_CONFIGS`."""
  return [p for p in config_paths() if os.path.basename(p) not in PAPER_CONFIGS]


def problems_of(path: str) -> build.Problems:
  """The families a config trains on, with their names (``None`` for a family without named problems)."""
  config = config_lib.load(path)
  return build.build_problems(config.tasks, config.run.seed)


def named_problems(paths=None) -> dict[str, list[str]]:
  """Config label -> the names of the problems it trains on, for every config of ``paths`` (default
  :func:`meta_training_configs`) whose problems have names."""
  found = {}
  for path in meta_training_configs() if paths is None else paths:
    names = problems_of(path).names
    if names is not None:
      found[label(path)] = names
  return found
