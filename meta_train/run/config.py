"""The meta-training run configuration: a schema of frozen dataclasses, loaded from TOML and validated.

A run is described by one TOML file whose tables mirror :class:`Config`::

    [run]                      # RunConfig: seed, length, logging/checkpoint cadence
    [learned_optimizer]        # LearnedOptimizerConfig: which architecture, its hyperparameters
    [tasks]                    # TasksConfig: the task family or problem set, ensemble size
    [estimator]                # EstimatorConfig: gradient estimator, plus its
    [estimator.truncation]     #   truncation schedule and
    [estimator.objective]      #   meta-objective
    [meta_optimizer]           # MetaOptimizerConfig: the optimizer of the meta-parameters (optax, or learned)
    [evaluation]               # EvaluationConfig: periodic comparison against Adam on fresh training-problem instances

Every field has a default, so a file only states what it changes. Loading is strict, because a typo in a config
silently falling back to a default wastes a day of compute:

* an unknown key raises :class:`ConfigError` naming it and the closest valid names (``difflib``);
* a value of the wrong type or outside its range raises :class:`ConfigError` naming the field;
* command-line overrides are dotted ``key=value`` strings whose values follow TOML literal rules
  (``run.seed=3``, ``meta_optimizer.learning_rate=3e-4``, ``estimator.name="pes"``; a bare word that is not a
  TOML literal, such as ``estimator.name=pes``, is taken as a string).

The ``kwargs`` tables (``learned_optimizer.hparams``, ``tasks.kwargs``, ``estimator.kwargs``, ...) are passed to
the component the ``name`` field selects; :mod:`meta_train.run.build` checks them against that component's signature
with the same strict rules.

The meta-optimizer may itself be a learned optimizer, with frozen weights (Metz et al. 2020, "Tasks, stability,
architecture, and compute: training more effective learned optimizers, and using them to train themselves")::

    [meta_optimizer]
    name = "hierarchical_rnn"          # the shipped weights of lopt.hierarchical_rnn(); or "mlp_lopt"

    [meta_optimizer]
    name = "hierarchical_rnn"          # the architecture of the file below
    weights = "runs/x/final.npz"       # a lopt.save file

It receives the clipped meta-gradient and the meta-loss (``value=``), and ``learning_rate`` does not apply to it
(left at its default; see :class:`MetaOptimizerConfig`). A name, file or hyperparameter that does not work is a
:class:`ConfigError` when the run is built, before anything is compiled.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import tomllib
import typing
from typing import Any, Callable

import tomli_w

from meta_train.run import legacy


class ConfigError(ValueError):
  """A configuration file or override is invalid. The message names the field and the fix."""


def _field(default, doc: str, check: Callable[[Any], bool] | None = None, rule: str = ''):
  """A dataclass field with documentation and an optional value check (``rule`` says what ``check`` demands)."""
  if isinstance(default, (dict, list)):
    assert not default, 'a mutable default must be empty'
    kwargs = {'default_factory': type(default)}
  else:
    kwargs = {'default': default}
  return dataclasses.field(**kwargs, metadata={'doc': doc, 'check': check, 'rule': rule})


_positive = (lambda v: v > 0, '> 0')
_non_negative = (lambda v: v >= 0, '>= 0')


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """How long to meta-train and how often to log, checkpoint and plot.

  Attributes:
    seed: seeds every random draw of the run (meta-parameter init, task sampling, perturbations). Two runs with the
      same config and seed produce bitwise-identical meta-parameters on CPU, with or without interruptions.
    meta_steps: number of outer (meta-optimizer) steps.
    log_every: meta-steps between lines of ``metrics.jsonl`` / TensorBoard points (each line averages the steps since
      the previous one).
    checkpoint_every: meta-steps between checkpoints. A run killed at any moment resumes from the latest one.
    keep_checkpoints: how many of the most recent checkpoints are kept on disk (older ones are deleted). At least 2,
      so that a corrupted latest checkpoint can fall back to the previous one.
  """
  seed: int = _field(0, 'PRNG seed of the whole run.')
  meta_steps: int = _field(1000, 'number of meta-steps.', *_positive)
  log_every: int = _field(10, 'meta-steps between metric records.', *_positive)
  checkpoint_every: int = _field(100, 'meta-steps between checkpoints.', *_positive)
  keep_checkpoints: int = _field(3, 'most recent checkpoints kept.', lambda v: v >= 2, '>= 2')


@dataclasses.dataclass(frozen=True)
class LearnedOptimizerConfig:
  """The learned optimizer being meta-trained.

  Attributes:
    architecture: an architecture name from ``lopt.architectures.BUILTIN_ARCHITECTURES`` (for example
      ``'hierarchical_rnn'``, ``'mlp_lopt'``, ``'rnn_mlp_lopt'``), or ``'package.module:ClassName'`` for your own
      :class:`lopt.LearnedOptimizer` subclass.
    hparams: keyword arguments of the architecture's constructor (its hyperparameters); unknown names are errors.
    init_from: optional path of a ``lopt.save`` file whose meta-parameters start the run instead of
      ``architecture.init``; its architecture and hyperparameters must match this section.
  """
  architecture: str = _field('hierarchical_rnn', 'architecture name or module:Class.')
  hparams: dict = _field({}, 'architecture hyperparameters.')
  init_from: str = _field('', 'lopt.save file to start from ("" = fresh init).')


@dataclasses.dataclass(frozen=True)
class TasksConfig:
  """The inner problems the learned optimizer is meta-trained on: named problems, or a family.

  Two ways to choose them. **By name** (how the shipped optimizers' configs do it)::

      [tasks]
      problems = ["quadratic_25", "bowl_1", "mlp_relu_64x64_nf32_bs64"]   # names of tasks.PROBLEMS
      weights = {mlp_relu_64x64_nf32_bs64 = 4}                            # optional; default 1 each
      num_tasks = 4

  or **by family**: ``family`` (with ``kwargs``) names a task family, a problem set such as ``'wichrowska2017'``, or
  your own code. The problems' order matters: structure groups (the problems that compile together, see
  :mod:`meta_train.structure_groups`) are formed in order of first appearance.

  Weights: a problem's weight is its share of the meta-gradient, ``w_p / sum(w)`` (a problem without one weighs 1,
  so no weights means every problem alike, as Wichrowska et al. drew problems uniformly). Problems of one structure
  group share an unroll: the group's weight is the sum of its members' weights, and each of its instances draws its
  problem with probability proportional to the members' weights (``family_weights`` of
  :class:`meta_train.structure_groups.StructureGroups`), so every problem gets its own share whether or not it
  shares a group. Names containing a dot must be quoted as TOML keys (``"quadratic_20_noise0.5" = 2``). A weight
  must be > 0 (to leave a problem out, remove it from ``problems``). ``weights`` also applies to the problems of a
  problem set named by ``family`` (``'wichrowska2017'``); a family without named problems has none to weigh.

  Attributes:
    family: unused when ``problems`` is set (leave it out). Otherwise a task-family class in ``tasks.families`` /
      ``tasks.image_families`` (for example ``'QuadraticFamily'``), a problem set function in
      ``tasks.problem_sets`` (for example ``'wichrowska2017'``), or ``'package.module:attr'`` naming either kind in
      your own code.
    kwargs: keyword arguments of that family constructor / problem-set function.
    problems: names of problems of ``tasks.PROBLEMS`` (``tasks/problem_sets.py``: the Wichrowska 2017 set and the
      networks on generated data of ``tasks.problem_sets.EXTRA_PROBLEMS``), in order; [] = use ``family``. An
      unknown name is an error naming the closest ones.
    weights: problem name -> weight (> 0), for named problems (``problems``, or a problem set's); a problem not
      listed weighs 1. See above for the rule.
    num_tasks: size of the task ensemble: how many inner problems of each structure group are unrolled in parallel
      per meta-step. With several devices it must be a multiple of the device count (the ensemble axis is split
      across devices).
    num_structures: for a distribution over task *structures* (shapes drawn on the host: ``MLPFamily``,
      ``NoisyQuadraticFamily``'s dimension, ``sample_family``), how many fixed-structure families to draw, once,
      from ``run.seed``. Each structure is compiled separately, so keep it small. 0 uses ``family`` as it is.
    problems_prefix: for a problem set or ``problems``, keep only the problems whose name starts with this (""
      keeps all).
  """
  family: str = _field('QuadraticFamily', 'task family, problem set, or module:attr.')
  kwargs: dict = _field({}, 'arguments of the family / problem set.')
  num_tasks: int = _field(8, 'inner problems per structure group per meta-step.', *_positive)
  num_structures: int = _field(0, 'structures drawn from a structure distribution (0 = none).', *_non_negative)
  problems_prefix: str = _field('', 'problem-set name filter.')
  problems: list = _field([], 'names of tasks.PROBLEMS ([] = use family).')
  weights: dict = _field({}, 'problem name -> weight (default 1 each).')


@dataclasses.dataclass(frozen=True)
class ComponentConfig:
  """A component chosen by name with keyword arguments (truncation schedule, meta-objective).

  Attributes:
    name: the component's name (see the section's documentation for the choices) or ``'package.module:attr'``.
    kwargs: keyword arguments of its constructor; unknown names are errors.
  """
  name: str = _field('', 'component name or module:attr.')
  kwargs: dict = _field({}, 'constructor arguments.')


def _truncation_default():
  return ComponentConfig(name='constant', kwargs={})


def _objective_default():
  return ComponentConfig(name='log_normalized_train', kwargs={})


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
  """How the meta-gradient is estimated.

  Attributes:
    name: ``'tbptt'`` (truncated backprop through the unroll), ``'es'`` (antithetic truncated ES), ``'pes'``
      (persistent ES, Vicol et al. 2021), ``'hybrid'`` (Metz et al. 2019: reparameterization and ES gradients
      combined per element by inverse-variance weighting), or ``'package.module:factory'``.
    kwargs: keyword arguments of the estimator (for example ``std`` for the perturbation scale of ES/PES) and of
      the unrolls it runs (:class:`meta_train.structure_groups.StructureGroups`: ``unroll_length``, ``group_mode``,
      ``use_valid_loss``, ``stagger``, ``second_derivatives``); a ``module:factory`` receives them all. Named
      problems are weighted by name in ``tasks.weights``; ``group_weights`` (a list in structure-group order) is
      refused for them and serves only families without named problems (sampled structures).
    truncation: the truncation schedule: ``name`` one of ``'constant'``, ``'log_uniform'``, ``'wichrowska'``,
      ``'linear_increasing'``, with its ``kwargs`` (unroll length, episode length, ...).
    objective: the meta-objective: ``name`` one of ``'log_normalized_train'`` (Wichrowska 2017),
      ``'clipped_outer_valid'`` (Metz 2019), ``'final_loss'``, with its ``kwargs``.
  """
  name: str = _field('pes', 'estimator name or module:factory.')
  kwargs: dict = _field({}, 'estimator arguments.')
  truncation: ComponentConfig = dataclasses.field(default_factory=_truncation_default,
                                                   metadata={'doc': 'truncation schedule.'})
  objective: ComponentConfig = dataclasses.field(default_factory=_objective_default,
                                                  metadata={'doc': 'meta-objective.'})


@dataclasses.dataclass(frozen=True)
class MetaOptimizerConfig:
  """The optimizer that updates the meta-parameters: an optax optimizer, or a learned optimizer with frozen weights.

  The meta-gradient is first clipped (by value, then by global norm, each only if its threshold is > 0), then fed
  to the optimizer, with the meta-loss of the step as ``value=`` (optax's name for the loss; optax optimizers ignore
  it, learned ones may read it). A meta-gradient with any non-finite element skips the step (meta-parameters and
  optimizer state unchanged) and is counted in the logs.

  Two kinds of optimizer, chosen by ``name``:

  * an optax optimizer function: ``optax.<name>(learning_rate, **kwargs)``;
  * a **learned optimizer** (Metz et al. 2020 train learned optimizers with learned optimizers, themselves
    included; docs/algorithms.md §10.6): ``name`` is an architecture, ``'hierarchical_rnn'`` or ``'mlp_lopt'`` for
    the weights shipped with ``lopt`` (what ``lopt.hierarchical_rnn()`` / ``lopt.mlp_lopt()`` run), or any
    architecture (a built-in name or ``'package.module:Class'``) together with ``weights``, a ``lopt.save`` file
    (a run's ``final.npz``, or ``python -m meta_train.run.export`` of a checkpoint). Its weights are frozen: they are
    read when the run is built (again on resume: leave the file unchanged while the run lives) and are not
    meta-trained; its state (per-parameter RNN states, learned step sizes) is the meta-optimizer state,
    checkpointed like Adam's moments. A learned optimizer sets its own step sizes, so ``learning_rate`` must keep
    its default (it is ignored); scale the steps with the architecture's own hyperparameters in ``kwargs``.

  Attributes:
    name: an optax optimizer function that takes ``learning_rate`` (``'adam'``, ``'adamw'``, ``'sgd'``,
      ``'rmsprop'``, ``'lion'``, ...), or a learned optimizer: ``'hierarchical_rnn'`` or ``'mlp_lopt'`` (shipped
      weights), or with ``weights`` set the architecture of that file (a name of ``lopt.BUILTIN_ARCHITECTURES`` or
      ``'package.module:Class'``).
    learning_rate: the meta learning rate of an optax optimizer. A learned optimizer chooses its own step sizes:
      any value other than the default 1e-3 is then an error, rather than silently ignored.
    kwargs: further keyword arguments of that optax function (for example ``b1 = 0.5``); for a learned optimizer,
      overrides of its hyperparameters that keep the weights' shapes (``max_log_lr``, ``lr_init_range`` of the
      hierarchical RNN; ``step_multiplier`` of the MLP optimizer), as ``lopt.hierarchical_rnn(**kwargs)`` takes.
    weights: path of a ``lopt.save`` file holding the learned meta-optimizer's weights (relative paths are relative
      to the working directory); ``name`` must be its architecture. "" = none (an optax optimizer, or shipped
      weights).
    clip_by_value: clip every meta-gradient element to ``[-v, v]`` (Metz 2019 uses 0.1); 0 disables.
    clip_by_global_norm: rescale the meta-gradient to at most this global norm; 0 disables.
  """
  name: str = _field('adam', 'optax optimizer function, or a learned optimizer\'s architecture.')
  learning_rate: float = _field(1e-3, 'meta learning rate (optax optimizers only).', *_positive)
  kwargs: dict = _field({}, 'further optax arguments, or learned-optimizer hyperparameter overrides.')
  weights: str = _field('', 'lopt.save file of a learned meta-optimizer ("" = none).')
  clip_by_value: float = _field(0.0, 'per-element clip (0 = off).', *_non_negative)
  clip_by_global_norm: float = _field(1.0, 'global-norm clip (0 = off).', *_non_negative)


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
  """Periodic evaluation of the current meta-parameters against Adam on fresh instances of the training problems.

  The instances are sampled from the training family (or problem set) with a PRNG stream disjoint from the one
  training uses (not the validation or test suites of docs/evaluation_protocol.md). Each is trained from the same
  initial parameters by the learned optimizer and by ``optax.adam(adam_learning_rate)``; the mean final training
  and test losses of both are recorded in ``evaluation.jsonl``.

  Attributes:
    every: meta-steps between evaluations (also run once at the end); 0 disables evaluation.
    num_tasks: instances per evaluation.
    num_steps: inner training steps per held-out task.
    adam_learning_rate: the learning rate of the Adam baseline.
  """
  every: int = _field(0, 'meta-steps between evaluations (0 = off).', *_non_negative)
  num_tasks: int = _field(4, 'fresh task instances per evaluation.', *_positive)
  num_steps: int = _field(100, 'inner steps per held-out task.', *_positive)
  adam_learning_rate: float = _field(1e-3, 'learning rate of the Adam baseline.', *_positive)


@dataclasses.dataclass(frozen=True)
class Config:
  """A complete meta-training run. See the module docstring for the file layout."""
  run: RunConfig = dataclasses.field(default_factory=RunConfig)
  learned_optimizer: LearnedOptimizerConfig = dataclasses.field(default_factory=LearnedOptimizerConfig)
  tasks: TasksConfig = dataclasses.field(default_factory=TasksConfig)
  estimator: EstimatorConfig = dataclasses.field(default_factory=EstimatorConfig)
  meta_optimizer: MetaOptimizerConfig = dataclasses.field(default_factory=MetaOptimizerConfig)
  evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)


#: Fields that may differ between a run and its resumption: they change how often things are recorded or how long
#: the run goes on, never the values of the meta-parameters at a given step.
RESUMABLE_FIELDS = frozenset({'run.meta_steps', 'run.log_every', 'run.checkpoint_every', 'run.keep_checkpoints',
                              'evaluation.every'})

#: Fields added to the schema after runs were committed, with the default that reproduces what runs did before the
#: field existed. :func:`fingerprint` leaves such a field out while it holds that default, so the fingerprints stored in
#: those runs' ``resume.npz`` stay valid (they can still be resumed); set to anything else, it counts like any field.
#: A field added later with such a default belongs here.
FINGERPRINT_OMITS_AT_DEFAULT: dict[str, Any] = {'meta_optimizer.weights': '', 'tasks.problems': [], 'tasks.weights': {}}


# ----------------------------------------------------------------------------------------------------------------
# Parsing and validation.


def _closest(name: str, valid) -> str:
  matches = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
  hint = f' Did you mean {", ".join(repr(m) for m in matches)}?' if matches else ''
  return f'{hint} Valid names: {", ".join(sorted(valid))}.'


def unknown_key_error(path: str, key: str, valid) -> ConfigError:
  """The error for an unknown key ``key`` under ``path``, naming the closest valid names."""
  where = f'{path}.{key}' if path else key
  return ConfigError(f'unknown config key {where!r}.{_closest(key, valid)}')


def _type_name(tp) -> str:
  return getattr(tp, '__name__', str(tp))


def _coerce(path: str, value: Any, tp) -> Any:
  """Checks ``value`` against the annotated type ``tp`` (TOML's int is accepted where a float is expected)."""
  if tp is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f'config field {path!r} must be a number, got {value!r} ({type(value).__name__}).')
    return float(value)
  if tp is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(f'config field {path!r} must be an integer, got {value!r} ({type(value).__name__}).')
    return value
  if tp in (bool, str, dict, list):
    if not isinstance(value, tp):
      raise ConfigError(f'config field {path!r} must be a {_type_name(tp)}, got {value!r} '
                        f'({type(value).__name__}).')
    return value
  raise AssertionError(f'unsupported schema type {tp} at {path}')


def _from_dict(cls, data: dict, path: str):
  """Builds dataclass ``cls`` from ``data``, recursing into nested dataclasses; strict about keys and types."""
  if not isinstance(data, dict):
    raise ConfigError(f'config section {path!r} must be a table, got {data!r}.')
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  for key in data:
    if key not in fields:
      raise unknown_key_error(path, key, fields)
  values = {}
  for name, field in fields.items():
    sub = f'{path}.{name}' if path else name
    tp = hints[name]
    if name not in data:
      continue
    if dataclasses.is_dataclass(tp):
      values[name] = _from_dict(tp, data[name], sub)
      continue
    value = _coerce(sub, data[name], tp)
    check = field.metadata.get('check')
    if check is not None and not check(value):
      raise ConfigError(f'config field {sub!r} must be {field.metadata["rule"]}, got {value!r}.')
    if isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f'config field {sub!r} must be finite, got {value!r}.')
    values[name] = value
  return cls(**values)


def _check_tasks(tasks: TasksConfig) -> TasksConfig:
  """The rules between the fields of ``[tasks]`` that the schema alone cannot state; weights become floats."""
  for i, name in enumerate(tasks.problems):
    if not isinstance(name, str) or not name:
      raise ConfigError(f'config field tasks.problems must hold problem names (strings), got {name!r} at index {i}.')
  duplicates = sorted({n for n in tasks.problems if tasks.problems.count(n) > 1})
  if duplicates:
    raise ConfigError(f'config field tasks.problems names {", ".join(map(repr, duplicates))} more than once; list '
                      'each problem once and give it a weight in tasks.weights instead.')
  if tasks.problems:
    if tasks.family != TasksConfig.family:
      raise ConfigError(f'config fields tasks.family ({tasks.family!r}) and tasks.problems are two ways to choose the '
                        'problems; set one of them (remove tasks.family to train on the named problems; on the command '
                        f'line, tasks.family={TasksConfig.family}, its default, counts as unset).')
    if tasks.kwargs:
      raise ConfigError('config field tasks.kwargs applies to tasks.family; named problems (tasks.problems) take no '
                        'arguments: remove it.')
    if tasks.num_structures:
      raise ConfigError('config field tasks.num_structures draws structures from a distribution named by '
                        'tasks.family; it does not apply to tasks.problems: set it to 0.')
  weights = {}
  for name, value in tasks.weights.items():
    field = f'tasks.weights.{name}'
    if isinstance(value, dict):
      raise ConfigError(f'config field {field!r} must be a number, got the table {value!r}: a problem name '
                        f'containing a dot must be quoted, as in "{name}.{next(iter(value), "")}" = 2.')
    value = _coerce(field, value, float)
    if not math.isfinite(value) or value <= 0:
      raise ConfigError(f'config field {field!r} must be a finite number > 0, got {value!r} (to leave a problem out, '
                        'remove it from tasks.problems).')
    weights[name] = value
  if tasks.problems:
    unknown = [n for n in weights if n not in tasks.problems]
    if unknown:
      raise ConfigError(f'config field tasks.weights weighs {unknown[0]!r}, which is not in tasks.problems.'
                        f'{_closest(unknown[0], tasks.problems)}')
  return dataclasses.replace(tasks, weights=weights)


def from_dict(data: dict) -> Config:
  """Validates a nested dict (as parsed from TOML) and returns the :class:`Config`. Raises :class:`ConfigError`.

  A ``[tasks]`` section in the spelling of runs made before problems were named (``family =
  "hrnn_training_set_v2"``, a positional ``estimator.kwargs.group_weights``) is read as the named problems it stood
  for (:mod:`meta_train.run.legacy`).
  """
  config = _from_dict(Config, legacy.upgrade(data), '')
  return dataclasses.replace(config, tasks=_check_tasks(config.tasks))


def to_dict(config: Config) -> dict:
  """The config as a nested dict of TOML values (the inverse of :func:`from_dict`)."""
  return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
  """Parses ``'a.b.c=value'`` into ``(['a', 'b', 'c'], value)`` with TOML literal rules for ``value``."""
  if '=' not in text:
    raise ConfigError(f'override {text!r} must look like dotted.key=value (e.g. run.seed=3).')
  key, raw = text.split('=', 1)
  key, raw = key.strip(), raw.strip()
  parts = key.split('.')
  if not key or any(not p for p in parts):
    raise ConfigError(f'override {text!r} has an empty key part; use dotted.key=value.')
  try:
    value = tomllib.loads(f'v = {raw}')['v']
  except tomllib.TOMLDecodeError:
    # A bare word (estimator.name=pes) is the obvious intent; anything else that is not TOML is also a string and
    # the schema's type check reports it against the field if a number was expected.
    value = raw
  return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
  """Returns a copy of ``data`` with dotted ``key=value`` overrides applied (validated later by :func:`from_dict`)."""
  data = copy.deepcopy(data)
  for text in overrides:
    parts, value = parse_override(text)
    node = data
    for i, part in enumerate(parts[:-1]):
      child = node.setdefault(part, {})
      if not isinstance(child, dict):
        raise ConfigError(f'override {text!r}: {".".join(parts[:i + 1])!r} is a value, not a table.')
      node = child
    node[parts[-1]] = value
  return data


def load(path, overrides: list[str] = ()) -> Config:
  """Reads a TOML config file, applies dotted ``key=value`` overrides, validates, and returns the :class:`Config`."""
  try:
    with open(path, 'rb') as f:
      data = tomllib.load(f)
  except FileNotFoundError:
    raise ConfigError(f'config file {str(path)!r} does not exist.') from None
  except tomllib.TOMLDecodeError as e:
    raise ConfigError(f'config file {str(path)!r} is not valid TOML: {e}') from None
  return from_dict(apply_overrides(data, list(overrides)))


def loads(text: str, overrides: list[str] = ()) -> Config:
  """Like :func:`load` for TOML text."""
  try:
    data = tomllib.loads(text)
  except tomllib.TOMLDecodeError as e:
    raise ConfigError(f'config is not valid TOML: {e}') from None
  return from_dict(apply_overrides(data, list(overrides)))


# ----------------------------------------------------------------------------------------------------------------
# Writing (tomllib only reads; tomli_w writes), and comparing two configs for resumption.


def dumps(config: Config) -> str:
  """The config as TOML text (``tomli_w``); ``loads(dumps(c)) == c``. ``tasks.family`` is left out when
  ``tasks.problems`` names the problems (it is unused then, and at its default)."""
  data = to_dict(config)
  if config.tasks.problems:
    del data['tasks']['family']
  return tomli_w.dumps(data)


def _flatten(data: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in data.items():
    key = f'{prefix}.{k}' if prefix else k
    if isinstance(v, dict) and v:
      out.update(_flatten(v, key))
    else:
      out[key] = v
  return out


def fingerprint(config: Config) -> str:
  """A SHA-256 (hex) of every field that determines the meta-parameters, i.e. all but :data:`RESUMABLE_FIELDS`
  (and the fields of :data:`FINGERPRINT_OMITS_AT_DEFAULT` at their default).

  Two configs with the same fingerprint may resume each other's runs; stored in ``resume.npz``. Named problems
  that are exactly those of a run made before problems were named are hashed in that run's spelling
  (:func:`meta_train.run.legacy.downgrade`), so it resumes from a config written either way.
  """
  data = legacy.downgrade(to_dict(config), default_family=TasksConfig.family)
  fields = {k: v for k, v in _flatten(data).items() if k not in RESUMABLE_FIELDS
            and not (k in FINGERPRINT_OMITS_AT_DEFAULT and v == FINGERPRINT_OMITS_AT_DEFAULT[k])}
  return hashlib.sha256(json.dumps(fields, sort_keys=True, default=repr).encode('utf-8')).hexdigest()


def differences(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
  """Dotted field -> (old, new) for every value that differs between two configs."""
  a, b = _flatten(to_dict(old)), _flatten(to_dict(new))
  missing = '<unset>'
  return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
          if a.get(k, missing) != b.get(k, missing)}
