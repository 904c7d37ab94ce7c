"""The architectures shipped with lopt, by the ``name`` that :func:`lopt.save` records.

An immutable mapping, not a registry: nothing is added at import time and users never mutate global state. To load
your own architecture, pass ``architectures={**lopt.BUILTIN_ARCHITECTURES, MyOpt.name: MyOpt}`` to :func:`lopt.load`.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

from lopt import base
from lopt.coordinatewise_lstm import CoordinatewiseLSTM
from lopt.hierarchical_rnn import HierarchicalRNN
from lopt.learnable_adam import LearnableAdam
from lopt.learnable_sgdm import LearnableSGDM
from lopt.mlp_lopt import MLPLOpt
from lopt.rnn_mlp_lopt import RNNMLPLOpt

_CLASSES: tuple[type[base.LearnedOptimizer], ...] = (
    HierarchicalRNN, MLPLOpt, RNNMLPLOpt, CoordinatewiseLSTM, LearnableAdam, LearnableSGDM)


def _by_name(classes) -> Mapping[str, type[base.LearnedOptimizer]]:
  out = {}
  for cls in classes:
    if cls.name in out:
      raise AssertionError(f'two architectures are named {cls.name!r}: {out[cls.name].__name__} and {cls.__name__}')
    out[cls.name] = cls
  return types.MappingProxyType(out)


BUILTIN_ARCHITECTURES: Mapping[str, type[base.LearnedOptimizer]] = _by_name(_CLASSES)


def get_architecture(name: str) -> type[base.LearnedOptimizer]:
  """The built-in architecture class called ``name``; ``ValueError`` listing the valid names otherwise."""
  try:
    return BUILTIN_ARCHITECTURES[name]
  except KeyError:
    raise ValueError(f'Unknown architecture {name!r}; valid names: {sorted(BUILTIN_ARCHITECTURES)}.') from None
