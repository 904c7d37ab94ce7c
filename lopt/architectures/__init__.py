"""The architectures shipped with lopt, one module each, by the ``name`` that :func:`lopt.save` records.

Every public module of this package (``lopt/architectures/<name>.py``) defines exactly one architecture: a
:class:`lopt.LearnedOptimizer` subclass whose ``name`` is the module's name (the same name keys the shipped weights,
``lopt/weights/<name>.npz``). The mapping below is built from the modules found here, so adding an architecture is
one new module (plus one line in ``lopt/__init__.py`` to export the class as ``lopt.<ClassName>``); the contract
suite (``tests/lopt/test_contract.py``) then checks it like the others.

:data:`BUILTIN_ARCHITECTURES` is an immutable mapping, not a registry: it is fixed by the package's files, nothing can
add to it at run time and users never mutate global state. To load your own architecture, pass
``architectures={**lopt.BUILTIN_ARCHITECTURES, MyOpt.name: MyOpt}`` to :func:`lopt.load`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from collections.abc import Mapping

from lopt import base


def _architecture_of(module: types.ModuleType) -> type[base.LearnedOptimizer]:
  """The one architecture class defined in ``module`` (not imported into it), named after the module."""
  short_name = module.__name__.rsplit('.', 1)[-1]
  found = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
           if issubclass(cls, base.LearnedOptimizer) and cls.__module__ == module.__name__
           and not inspect.isabstract(cls)]
  if len(found) != 1:
    raise AssertionError(
        f'{module.__name__} must define exactly one lopt.LearnedOptimizer subclass, found '
        f'{[c.__name__ for c in found]}; helpers belong in lopt/ (or a module whose name starts with "_").')
  cls = found[0]
  if cls.name != short_name:
    raise AssertionError(f'{cls.__name__}.name is {cls.name!r} but its module is {module.__name__}: name the module '
                         f'{cls.name}.py (the name is what lopt.save records and what the shipped weights are named).')
  return cls


def _discover() -> Mapping[str, type[base.LearnedOptimizer]]:
  out = {}
  for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if info.name.startswith('_'):
      continue
    cls = _architecture_of(importlib.import_module(f'{__name__}.{info.name}'))
    out[cls.name] = cls
  return types.MappingProxyType(out)


BUILTIN_ARCHITECTURES: Mapping[str, type[base.LearnedOptimizer]] = _discover()


def get_architecture(name: str) -> type[base.LearnedOptimizer]:
  """The built-in architecture class called ``name``; ``ValueError`` listing the valid names otherwise."""
  try:
    return BUILTIN_ARCHITECTURES[name]
  except KeyError:
    raise ValueError(f'Unknown architecture {name!r}; valid names: {sorted(BUILTIN_ARCHITECTURES)}.') from None
