"""From a validated :class:`meta_train.run.config.Config` to the objects a run needs: :func:`build`.

Every component is chosen by a name in the config: a built-in name (listed in the errors and in each section's
documentation), or ``'package.module:attr'`` to use your own code without editing this package (nothing is
registered globally; the import happens when the config is built). Keyword-argument tables (``hparams``,
``kwargs``) are checked against the chosen constructor's signature here, so a misspelt hyperparameter fails before
any compilation with the closest valid names, and a value of the wrong type names the field.

Custom hooks receive:

* ``learned_optimizer.architecture = 'mod:Cls'``: ``Cls(**hparams)``, a :class:`lopt.LearnedOptimizer`;
* ``tasks.family = 'mod:attr'``: a :class:`tasks.TaskFamily` subclass, called with ``**kwargs``, or a function
  returning a family or a sequence of families (a problem set; named problems need no hook: ``tasks.problems``);
* ``estimator.name = 'mod:factory'``: ``factory(architecture, families, num_tasks, **kwargs)`` returning a
  :class:`meta_train.GradientEstimator` (plus ``family_weights=`` when the config sets ``tasks.weights``);
* truncation schedules and meta-objectives: ``attr(**kwargs)``;
* ``meta_optimizer.name = 'mod:Cls'`` with ``meta_optimizer.weights = 'file.npz'``: the learned optimizer
  ``Cls`` (a :class:`lopt.LearnedOptimizer`) with the weights of that ``lopt.save`` file, frozen.
"""

from __future__ import annotations

import collections.abc as abc_types
import dataclasses
import difflib
import importlib
import inspect
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from evaluation import periodic
from lopt import pretrained, serialization
from lopt.architectures import BUILTIN_ARCHITECTURES
from lopt.base import LearnedOptimizer
from meta_train.run import config as config_lib
from meta_train import objectives, truncation_schedules
from meta_train.estimators.base import GradientEstimator
from meta_train.estimators.es import TruncatedES
from meta_train.estimators.hybrid import HybridEstimator
from meta_train.estimators.pes import TruncatedPES
from meta_train.estimators.truncated_backprop import TruncatedBackprop
from meta_train.run.config import ConfigError
from meta_train.structure_groups import StructureGroups
from tasks.base import SingleTaskFamily, Task, TaskFamily


# ----------------------------------------------------------------------------------------------------------------
# Name resolution and argument checking.


def import_attr(spec: str, field: str) -> Any:
  """Imports ``'package.module:attr'``; a ``ConfigError`` naming ``field`` if it cannot."""
  module_name, _, attr = spec.partition(':')
  if not module_name or not attr:
    raise ConfigError(f'config field {field!r}: {spec!r} is not of the form "package.module:attr".')
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ConfigError(f'config field {field!r}: cannot import module {module_name!r} ({e}). Is it on PYTHONPATH?'
                      ) from e
  try:
    return getattr(module, attr)
  except AttributeError:
    names = [n for n in dir(module) if not n.startswith('_')]
    raise ConfigError(f'config field {field!r}: module {module_name!r} has no attribute {attr!r}.'
                      f'{config_lib._closest(attr, names)}') from None  # pylint: disable=protected-access


def _signature_target(fn: Callable) -> Callable:
  return fn.__init__ if inspect.isclass(fn) else fn


def check_kwargs(fn: Callable, kwargs: dict, field: str, provided: Sequence[str] = ()) -> None:
  """Checks ``kwargs`` against ``fn``'s signature: unknown names and simple type mismatches name ``field.<name>``.

  ``provided``: parameters the builder passes itself (they may not appear in ``kwargs``).
  """
  try:
    signature = inspect.signature(fn)
  except (TypeError, ValueError):
    return  # builtins without a signature: let the call itself complain
  params = {n: p for n, p in signature.parameters.items() if n != 'self'}
  accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  valid = [n for n, p in params.items()
           if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
           and n not in provided]
  for name in kwargs:
    if name in provided:
      raise ConfigError(f'config field {field}.{name} is set by the trainer itself; remove it from {field}.')
    if name not in valid and not accepts_any:
      raise config_lib.unknown_key_error(field, name, valid)
  try:
    hints = typing.get_type_hints(_signature_target(fn))
  except Exception:  # pylint: disable=broad-except
    hints = {}  # unresolvable annotations: the constructor's own checks still run
  for name, value in kwargs.items():
    kinds = _accepted_kinds(hints.get(name, typing.Any))
    if kinds is not None and _kind(value) not in kinds:
      raise ConfigError(f'config field {field}.{name} must be {" or ".join(sorted(kinds))}, got {value!r} '
                        f'({type(value).__name__}).')


def _kind(value) -> str:
  """The kind of a TOML value: 'bool', 'int', 'float', 'str', 'array' or 'table'."""
  if isinstance(value, bool):
    return 'bool'
  if isinstance(value, int):
    return 'int'
  if isinstance(value, float):
    return 'float'
  if isinstance(value, str):
    return 'str'
  if isinstance(value, (list, tuple)):
    return 'array'
  return 'table'


def _accepted_kinds(annotation) -> set[str] | None:
  """The TOML value kinds an annotation admits, or ``None`` when it cannot be decided (``Any``, custom classes)."""
  if annotation is typing.Any or isinstance(annotation, typing.TypeVar):
    return None
  origin = typing.get_origin(annotation)
  if origin is typing.Union or (origin is None and type(annotation).__name__ == 'UnionType'):
    kinds = set()
    for member in typing.get_args(annotation):
      if member is type(None):
        continue
      sub = _accepted_kinds(member)
      if sub is None:
        return None
      kinds |= sub
    return kinds
  if origin is typing.Literal:
    return {_kind(v) for v in typing.get_args(annotation)}
  if origin is not None:
    annotation = origin
  if annotation is bool:
    return {'bool'}
  if annotation is int:
    return {'int'}
  if annotation in (float, complex):
    return {'int', 'float'}
  if annotation is str:
    return {'str'}
  if isinstance(annotation, type):
    if issubclass(annotation, np.generic):  # numpy scalar types
      return {'bool'} if issubclass(annotation, np.bool_) else {'int', 'float'}
    if issubclass(annotation, (np.ndarray, jax.Array)):
      return {'bool', 'int', 'float', 'array'}
    if issubclass(annotation, (list, tuple)) or annotation is abc_types.Sequence:
      return {'array'}
    if issubclass(annotation, dict) or annotation is abc_types.Mapping:
      return {'table'}
    if annotation is abc_types.Callable:
      return set()  # no TOML value is callable
  return None


def call(fn: Callable, kwargs: dict, field: str, *args, **provided) -> Any:
  """``fn(*args, **provided, **kwargs)`` after :func:`check_kwargs`; a ``TypeError``/``ValueError`` from the
  constructor (a value out of range, say) becomes a ``ConfigError`` naming ``field``."""
  check_kwargs(fn, kwargs, field, provided=tuple(provided))
  try:
    return fn(*args, **provided, **_tuples(kwargs))
  except (TypeError, ValueError, FileNotFoundError) as e:  # FileNotFoundError: a dataset that is not installed
    raise ConfigError(f'config field {field}: {e}') from e


def _tuples(kwargs: dict) -> dict:
  """TOML arrays arrive as lists; frozen dataclass hyperparameters want tuples (hashable)."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def _choose(name: str, table: dict[str, Any], field: str) -> Any:
  """A built-in by ``name`` from ``table``, or a ``module:attr`` hook."""
  if ':' in name:
    return import_attr(name, field)
  if name not in table:
    raise ConfigError(f'config field {field!r}: unknown name {name!r}.{config_lib._closest(name, table)} '  # pylint: disable=protected-access
                      'Or give "package.module:attr" for your own.')
  return table[name]


# ----------------------------------------------------------------------------------------------------------------
# The built-in names. Adding a component is one module plus one line in its table.

#: Estimator classes built as ``cls(StructureGroups(architecture, families, num_tasks, schedule, objective, **shared),
#: **own)``: ``estimator.kwargs`` are split between the estimator's own parameters and those of
#: :class:`meta_train.structure_groups.StructureGroups` (see :func:`build_estimator`).
ESTIMATORS: dict[str, Callable[..., Any]] = {
    'tbptt': TruncatedBackprop,
    'es': TruncatedES,
    'pes': TruncatedPES,
    'hybrid': HybridEstimator,
}

TRUNCATION_SCHEDULES: dict[str, Callable[..., Any]] = {
    'constant': truncation_schedules.ConstantTruncation,
    'log_uniform': truncation_schedules.LogUniformTruncation,
    'wichrowska': truncation_schedules.WichrowskaTruncation,
    'linear_increasing': truncation_schedules.LinearIncreasingTruncation,
}

OBJECTIVES: dict[str, Callable[..., Any]] = {
    'log_normalized_train': objectives.LogNormalizedTrainLoss,
    'clipped_outer_valid': objectives.ClippedOuterValidLoss,
    'final_loss': objectives.FinalLoss,
}


#: Modules whose public names ``tasks.family`` may use, searched in this order.
TASK_MODULES = ('tasks.families', 'tasks.problem_sets', 'tasks.image_families', 'tasks.image_classification')


def _task_source(name: str) -> Any:
  """The public callable ``name`` of the first module of :data:`TASK_MODULES` that has it, or a ``module:attr``
  hook."""
  if ':' in name:
    return import_attr(name, 'tasks.family')
  known = []
  for module_name in TASK_MODULES:
    module = importlib.import_module(module_name)
    names = getattr(module, '__all__', None) or [  # without __all__: what the module itself defines
        n for n, v in vars(module).items() if not n.startswith('_') and getattr(v, '__module__', '') == module_name]
    names = [n for n in names if callable(getattr(module, n, None))]
    if name in names:
      return getattr(module, name)
    known += [n for n in names if n not in known]
  raise ConfigError(f"config field 'tasks.family': unknown name {name!r}.{config_lib._closest(name, known)} "  # pylint: disable=protected-access
                    'Or give "package.module:attr" for your own.')


# ----------------------------------------------------------------------------------------------------------------
# Building each section.


def build_architecture(cfg: config_lib.LearnedOptimizerConfig):
  cls = _choose(cfg.architecture, BUILTIN_ARCHITECTURES, 'learned_optimizer.architecture')
  return call(cls, cfg.hparams, 'learned_optimizer.hparams')


def build_init_meta_params(architecture, cfg: config_lib.LearnedOptimizerConfig) -> Callable[[jax.Array], Any]:
  """``architecture.init``, or a function returning the meta-parameters of ``cfg.init_from``."""
  if not cfg.init_from:
    return architecture.init
  try:
    loaded_arch, meta_params = serialization.load(cfg.init_from, {architecture.name: type(architecture)})
  except (serialization.LoptFileError, OSError) as e:
    raise ConfigError(f'config field learned_optimizer.init_from: {e}') from e
  # The file supplies meta-parameters only; the config's hparams govern everything else (e.g. a fine-tuning run
  # may start the per-parameter learning rates elsewhere). What must agree is every meta-parameter's shape.
  expected = jax.eval_shape(architecture.init, jax.random.key(0))
  shape_of = lambda tree: jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype).name), tree)
  if (jax.tree.structure(expected) != jax.tree.structure(meta_params)
      or shape_of(expected) != shape_of(meta_params)):
    raise ConfigError(f'config field learned_optimizer.init_from: the meta-parameters of {cfg.init_from!r} '
                      f'({loaded_arch!r}) do not fit the config\'s {architecture!r}: their shapes differ; make '
                      'learned_optimizer.hparams match the file.')
  return lambda key: meta_params


class Problems(NamedTuple):
  """The task families of a run (see :func:`build_problems`).

  Attributes:
    families: the :class:`tasks.TaskFamily` objects, in order (structure groups form in order of first appearance).
    names: their names when the problems have names (``tasks.problems``, or a problem set named by
      ``tasks.family``), else ``None``.
    weights: one weight per family from ``tasks.weights`` (1 where a problem has none), or ``None`` when the config
      weighs no problem.
  """
  families: list
  names: list[str] | None
  weights: list[float] | None


def _unknown_problem(name: str, known, field: str) -> ConfigError:
  close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
  hint = f' Did you mean {", ".join(repr(m) for m in close)}?' if close else ''
  return ConfigError(f'config field {field}: unknown problem {name!r}.{hint}')


def build_problems(cfg: config_lib.TasksConfig, seed: int = 0) -> Problems:
  """The task families of a run with their names and weights: the named problems of ``tasks.problems`` (from
  :data:`tasks.PROBLEMS`), or what ``tasks.family`` makes (see :func:`build_families`); ``tasks.problems_prefix``
  keeps the problems whose name starts with it, and ``tasks.weights`` is checked against the names."""
  if cfg.problems:
    from tasks import problem_sets  # pylint: disable=import-outside-toplevel
    for name in cfg.problems:
      if name not in problem_sets.PROBLEMS:
        raise ConfigError(f'{_unknown_problem(name, problem_sets.PROBLEMS, "tasks.problems")} The names are those of '
                          'tasks.PROBLEMS (tasks/problem_sets.py: the Wichrowska 2017 set and EXTRA_PROBLEMS); list '
                          'them with python -c "import tasks; print(tasks.PROBLEMS.names())".')
    known = list(cfg.problems)
    names = [n for n in cfg.problems if n.startswith(cfg.problems_prefix)]
    if not names:
      raise ConfigError(f'config field tasks.problems_prefix = {cfg.problems_prefix!r} matches none of the '
                        f'{len(cfg.problems)} problems of tasks.problems.')
    families = [problem_sets.PROBLEMS[n] for n in names]
  else:
    families, names, known = _build_family(cfg, seed)
  weights = None
  if cfg.weights:
    if names is None:
      raise ConfigError(f'config field tasks.weights weighs problems by name, but tasks.family = {cfg.family!r} makes '
                        'families without names; name the problems in tasks.problems, or weight structure groups '
                        'with estimator.kwargs.group_weights.')
    for name in cfg.weights:
      if name not in known:
        raise ConfigError(f'{_unknown_problem(name, known, "tasks.weights")} It is not a problem of this run.')
    weights = [float(cfg.weights.get(n, 1.0)) for n in names]
  return Problems(families, names, weights)


def build_families(cfg: config_lib.TasksConfig, seed: int = 0) -> list:
  """The task families of a run: named problems, one family, a problem set's families, or structures drawn from a
  distribution (:func:`build_problems` without the names and weights).

  ``tasks.problems`` names problems of :data:`tasks.PROBLEMS`. Otherwise ``tasks.family`` may name a
  :class:`tasks.TaskFamily`, a function returning a family, a :class:`tasks.Task` (wrapped in
  :class:`tasks.SingleTaskFamily`) or a problem set (a mapping or sequence of families). With
  ``tasks.num_structures = n > 0`` it must name a structure distribution instead: a class with a ``sample_structure``
  classmethod (``kwargs`` go to it), a class whose instances have ``sample_structure`` (``kwargs`` go to the
  constructor), or a function ``f(key, **kwargs) -> TaskFamily``; ``n`` structures are drawn from ``seed``.
  """
  return build_problems(cfg, seed).families


def _build_family(cfg: config_lib.TasksConfig, seed: int) -> tuple[list, list[str] | None, list[str] | None]:
  """What ``tasks.family`` makes: the families, the names of those kept (a problem set's, else ``None``) and the
  names of all before ``tasks.problems_prefix`` filters them."""
  source = _task_source(cfg.family)
  made = None
  if cfg.num_structures:
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 0x7A5C), cfg.num_structures)
    sampler = getattr(source, 'sample_structure', None)
    if sampler is not None and inspect.ismethod(sampler):  # a classmethod: kwargs are its arguments
      families = [call(sampler, cfg.kwargs, 'tasks.kwargs', k) for k in keys]
    elif sampler is not None:  # an instance method: kwargs build the distribution
      distribution = call(source, cfg.kwargs, 'tasks.kwargs')
      families = [distribution.sample_structure(k) for k in keys]
    elif inspect.isfunction(source):
      families = [call(source, cfg.kwargs, 'tasks.kwargs', k) for k in keys]
    else:
      raise ConfigError(f'config field tasks.num_structures = {cfg.num_structures} needs a structure distribution, '
                        f'but tasks.family = {cfg.family!r} has no sample_structure; set tasks.num_structures = 0.')
  else:
    made = call(source, cfg.kwargs, 'tasks.kwargs')
    if isinstance(made, Task):
      made = SingleTaskFamily(made)
    if isinstance(made, TaskFamily):
      families = [made]
    elif isinstance(made, Mapping):  # a problem set: name -> family
      names = [str(n) for n in made if str(n).startswith(cfg.problems_prefix)]
      if not names:
        raise ConfigError(f'config field tasks.problems_prefix = {cfg.problems_prefix!r} matches none of the '
                          f'{len(made)} problems of {cfg.family!r}.')
      families = [made[n] for n in made if str(n).startswith(cfg.problems_prefix)]
    elif isinstance(made, Sequence) and not isinstance(made, str):
      families = list(made)
    else:
      families = []
  if cfg.problems_prefix and not isinstance(made, Mapping):
    raise ConfigError(f'config field tasks.problems_prefix applies to named problems only (tasks.problems or a problem '
                      f'set); {cfg.family!r} is not a problem set.')
  if not families or not all(isinstance(f, TaskFamily) for f in families):
    raise ConfigError(f'config field tasks.family: {cfg.family!r} does not make a TaskFamily, a Task, or a sequence '
                      'or mapping of TaskFamily.')
  if isinstance(made, Mapping):
    return families, names, [str(n) for n in made]
  return families, None, None


def build_meta_optimizer(cfg: config_lib.MetaOptimizerConfig) -> optax.GradientTransformationExtraArgs:
  """Clipping (optional, by value then by global norm) followed by the meta-optimizer.

  The meta-optimizer is ``optax.<name>(learning_rate, **kwargs)``, or a learned optimizer with frozen weights
  (:func:`build_learned_meta_optimizer`) when ``name`` is an architecture or ``weights`` is set. The result is an
  ``optax.GradientTransformationExtraArgs``: ``update(grads, state, params, value=meta_loss)`` passes ``value`` to
  the optimizers that take it (learned ones) and not to the others (clipping, optax optimizers).
  """
  if _is_learned(cfg):
    optimizer = build_learned_meta_optimizer(cfg)
  else:
    fn = getattr(optax, cfg.name, None)
    if fn is None or not callable(fn) or 'learning_rate' not in _parameters(fn):
      candidates = [n for n in dir(optax) if not n.startswith('_') and callable(getattr(optax, n))
                    and 'learning_rate' in _parameters(getattr(optax, n))]
      candidates += shipped_meta_optimizers()
      raise ConfigError(f'config field meta_optimizer.name: {cfg.name!r} is neither an optax optimizer taking a '
                        'learning_rate nor a learned optimizer with shipped weights (or set meta_optimizer.weights '
                        'to a lopt.save file and name its architecture).'
                        f'{config_lib._closest(cfg.name, candidates)}')  # pylint: disable=protected-access
    optimizer = call(fn, cfg.kwargs, 'meta_optimizer.kwargs', learning_rate=cfg.learning_rate)
  parts = []
  if cfg.clip_by_value > 0:
    parts.append(optax.clip(cfg.clip_by_value))
  if cfg.clip_by_global_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.clip_by_global_norm))
  return optax.chain(*parts, optimizer)


def shipped_meta_optimizers() -> list[str]:
  """The architectures whose meta-trained weights ship with ``lopt``: the learned ``meta_optimizer.name`` values
  that need no ``meta_optimizer.weights``."""
  return [name for name in BUILTIN_ARCHITECTURES if pretrained.pretrained_path(name) is not None]


def _is_learned(cfg: config_lib.MetaOptimizerConfig) -> bool:
  return bool(cfg.weights) or ':' in cfg.name or cfg.name in BUILTIN_ARCHITECTURES


_DEFAULT_META_LEARNING_RATE = config_lib.MetaOptimizerConfig().learning_rate


def build_learned_meta_optimizer(cfg: config_lib.MetaOptimizerConfig) -> optax.GradientTransformationExtraArgs:
  """The learned optimizer ``cfg.name`` with the shipped weights or those of ``cfg.weights``, frozen.

  ``cfg.kwargs`` override the hyperparameters of the weights' architecture (as ``lopt.hierarchical_rnn(**kwargs)``
  does) and must keep the weights' shapes. The weights are constants of the transformation (not in its state, not
  differentiated). Everything a config can get wrong raises a ``ConfigError`` naming the field: an unknown or
  weightless name, a missing or unreadable file, a file of another architecture, an unknown hyperparameter, an
  override that changes the shapes, a ``learning_rate`` other than the default.
  """
  custom = None
  if ':' in cfg.name:
    custom = import_attr(cfg.name, 'meta_optimizer.name')
    if not (inspect.isclass(custom) and issubclass(custom, LearnedOptimizer)):
      raise ConfigError(f'config field meta_optimizer.name: {cfg.name!r} is not a lopt.LearnedOptimizer subclass; '
                        'a "package.module:attr" meta-optimizer names a learned optimizer\'s architecture.')
  if cfg.weights:
    architectures = dict(BUILTIN_ARCHITECTURES)
    if custom is not None:
      architectures[custom.name] = custom
    try:
      architecture, meta_params = serialization.load(cfg.weights, architectures)
    except (serialization.LoptFileError, OSError) as e:
      raise ConfigError(f'config field meta_optimizer.weights: {e} Give the path of a file written by lopt.save '
                        '(a run\'s final.npz, or python -m meta_train.run.export of a checkpoint).') from e
    expected = custom.name if custom is not None else cfg.name
    if architecture.name != expected:
      raise ConfigError(f'config field meta_optimizer.name: meta_optimizer.weights = {cfg.weights!r} holds a '
                        f'{architecture.name!r} optimizer, but meta_optimizer.name is {cfg.name!r}; set '
                        f'meta_optimizer.name = "{architecture.name}".')
    source = repr(cfg.weights)
  else:
    shipped = shipped_meta_optimizers()
    if cfg.name not in shipped:
      raise ConfigError(f'config field meta_optimizer.name: no meta-trained weights are shipped for {cfg.name!r} '
                        f'(shipped: {", ".join(shipped) or "none"}); set meta_optimizer.weights to a lopt.save '
                        'file of that architecture.')
    try:
      architecture, meta_params = pretrained.load_pretrained(cfg.name)
    except (serialization.LoptFileError, OSError) as e:
      raise ConfigError(f'config field meta_optimizer.name: the shipped weights of {cfg.name!r} cannot be read: '
                        f'{e}') from e
    source = f'the shipped {cfg.name!r} weights'

  if cfg.learning_rate != _DEFAULT_META_LEARNING_RATE:
    raise ConfigError(f'config field meta_optimizer.learning_rate = {cfg.learning_rate!r} does not apply to a learned '
                      f'meta-optimizer ({cfg.name!r}), which sets its own step sizes; remove it. To change its steps, '
                      'override its hyperparameters in meta_optimizer.kwargs (hierarchical_rnn: lr_init_range, '
                      'max_log_lr; mlp_lopt: step_multiplier).')

  kwargs = _tuples(cfg.kwargs)
  check_kwargs(type(architecture), kwargs, 'meta_optimizer.kwargs')
  try:
    requested = dataclasses.replace(architecture, **kwargs)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'config field meta_optimizer.kwargs: {e}') from e
  if pretrained.meta_signature(requested) != pretrained.meta_signature(architecture):
    raise ConfigError(f'config field meta_optimizer.kwargs: {cfg.kwargs!r} changes the shapes of the '
                      f'meta-parameters of {type(architecture).__name__}, so {source} cannot run it; keep to '
                      'hyperparameters that leave the weights\' shapes alone (step sizes, clips, state_dtype).')
  return requested.transform(meta_params)


def _parameters(fn) -> set[str]:
  try:
    return set(inspect.signature(fn).parameters)
  except (TypeError, ValueError):
    return set()


#: What :func:`build_estimator` passes to :class:`meta_train.structure_groups.StructureGroups` itself.
_GROUPS_PROVIDED = ('architecture', 'families', 'num_tasks', 'truncation_schedule', 'objective', 'family_weights')


def build_estimator(cfg: config_lib.EstimatorConfig, architecture, families, num_tasks: int,
                    family_weights: Sequence[float] | None = None):
  """The gradient estimator with its truncation schedule and meta-objective.

  A built-in estimator is composed of the unrolls it runs and its own arguments: ``estimator.kwargs`` that the
  estimator class takes (``std``, say) go to it, the others (``unroll_length``, ``group_mode``, ...) to
  :class:`meta_train.structure_groups.StructureGroups`; a name neither takes is an error listing both's names.
  ``family_weights`` (one per family, from ``tasks.weights``) go to ``StructureGroups``, or to a ``module:factory``
  as ``family_weights=`` (one that does not take them is an error).
  """
  if 'family_weights' in cfg.kwargs:
    raise ConfigError('config field estimator.kwargs.family_weights is set from tasks.weights (weights by problem '
                      'name); remove it and write [tasks] weights = {"problem name" = weight, ...}.')
  if ':' in cfg.name:
    factory = import_attr(cfg.name, 'estimator.name')
    provided = {}
    if family_weights is not None:
      params = inspect.signature(factory).parameters.values() if callable(factory) else ()
      if not any(p.name == 'family_weights' or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise ConfigError(f'config field tasks.weights: estimator.name = {cfg.name!r} takes no family_weights '
                          'argument, so it cannot weigh the problems; remove tasks.weights or add the argument.')
      provided['family_weights'] = list(family_weights)
    return call(factory, cfg.kwargs, 'estimator.kwargs', architecture, families, num_tasks, **provided)
  estimator_cls = _choose(cfg.name, ESTIMATORS, 'estimator.name')
  own_names = _parameters(estimator_cls) - {'unroll'}
  group_names = _parameters(StructureGroups)
  for name in cfg.kwargs:
    if name not in own_names and name not in group_names:
      raise config_lib.unknown_key_error(
          'estimator.kwargs', name, sorted((own_names | group_names) - set(_GROUPS_PROVIDED)))
  schedule = call(_choose(cfg.truncation.name, TRUNCATION_SCHEDULES, 'estimator.truncation.name'),
                  cfg.truncation.kwargs, 'estimator.truncation.kwargs')
  objective = call(_choose(cfg.objective.name, OBJECTIVES, 'estimator.objective.name'),
                   cfg.objective.kwargs, 'estimator.objective.kwargs')
  own = {k: v for k, v in cfg.kwargs.items() if k in own_names}
  shared = {k: v for k, v in cfg.kwargs.items() if k not in own_names}
  groups = call(StructureGroups, shared, 'estimator.kwargs', architecture=architecture, families=families,
                num_tasks=num_tasks, truncation_schedule=schedule, objective=objective,
                family_weights=None if family_weights is None else list(family_weights))
  return call(estimator_cls, own, 'estimator.kwargs', unroll=groups)


class Components(NamedTuple):
  """The built pieces of a run (see :func:`meta_train.run.build.build`).

  Attributes:
    architecture: the learned optimizer being meta-trained (a :class:`lopt.LearnedOptimizer`).
    init_meta_params: ``key -> meta_params`` (``architecture.init``, or a function returning loaded parameters).
    estimator: the :class:`meta_train.GradientEstimator`.
    meta_optimizer: the optax transformation applied to meta-gradients (clipping included), an
      ``optax.GradientTransformationExtraArgs`` called with ``value=`` the meta-loss.
    ensemble_size: the length of the ensemble axis of the estimator state (the number of task instances).
    evaluate: ``meta_params -> dict of floats`` (see :mod:`evaluation.periodic`), or ``None``.
  """
  architecture: Any
  init_meta_params: Callable[[jax.Array], Any]
  estimator: GradientEstimator
  meta_optimizer: optax.GradientTransformationExtraArgs
  ensemble_size: int
  evaluate: Callable[[Any], dict] | None = None


def build(config: config_lib.Config) -> Components:
  """Builds every component of a run; raises ``ConfigError`` naming the field for anything the config gets wrong."""

  architecture = build_architecture(config.learned_optimizer)
  problems = build_problems(config.tasks, config.run.seed)
  families = problems.families
  if problems.names is not None and 'group_weights' in config.estimator.kwargs:
    raise ConfigError('config field estimator.kwargs.group_weights is a list of numbers in structure-group order; '
                      'the problems of this run have names, so weigh them by name instead: [tasks] weights = '
                      '{"problem name" = weight, ...} (a problem without one weighs 1; see '
                      'meta_train/run/config.py, TasksConfig).')
  estimator = build_estimator(config.estimator, architecture, families, config.tasks.num_tasks,
                              family_weights=problems.weights)
  evaluate = None
  if config.evaluation.every > 0:
    evaluate = periodic.make_evaluator(
        architecture, families, num_tasks=config.evaluation.num_tasks, num_steps=config.evaluation.num_steps,
        adam_learning_rate=config.evaluation.adam_learning_rate, seed=config.run.seed,
        use_valid_loss=bool(config.estimator.kwargs.get('use_valid_loss', False)))
  return Components(
      architecture=architecture,
      init_meta_params=build_init_meta_params(architecture, config.learned_optimizer),
      estimator=estimator,
      meta_optimizer=build_meta_optimizer(config.meta_optimizer),
      ensemble_size=config.tasks.num_tasks,
      evaluate=evaluate)
