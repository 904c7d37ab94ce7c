"""Meta-trained weights shipped inside the package, and the ready-to-use factories built on them.

Shipped weights live in ``lopt/weights/<architecture name>.npz`` in the :func:`lopt.save` format, so they load
without network access. Each has a model card in ``docs/`` giving its meta-training config, seed, compute and
evaluation.

Overriding hyperparameters. ``lopt.hierarchical_rnn(max_log_lr=20.0)`` is the shipped optimizer with that one field
changed: the shipped architecture's config updated with the overrides, run with the shipped weights. That is only
possible while the overrides keep the meta-parameters' shapes (a clip, a step multiplier, ``state_dtype``); an
override that changes them (``use_attention=True``, ``cell_sizes=...``) raises a ``ValueError`` naming the fields,
because the shipped weights cannot run it and silently switching to untrained weights would hide that. An untrained
architecture is asked for explicitly: ``arch = lopt.HierarchicalRNN(use_attention=True)``,
``arch.transform(arch.init(jax.random.PRNGKey(0)))``.

``optax.inject_hyperparams``. The factories' signatures list every field of their architecture as a keyword-only
argument defaulting to None ("the shipped value"), so ``optax.inject_hyperparams(lopt.hierarchical_rnn)()`` works.
inject_hyperparams turns every numeric argument it is given into an array in its state; the architecture's float
fields (``HierarchicalRNN.max_log_lr``, ``MLPLOpt.step_multiplier``, ...) accept them, also as traced values under
``jit``, so they can be changed or scheduled during training. Other fields (sizes, switches, seeds) fix the program's
shapes: pass them through ``static_args``, or a ``TypeError`` says so.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import pathlib
import typing

import jax
import numpy as np
import optax

from lopt import base, serialization
from lopt.architectures.hierarchical_rnn import HierarchicalRNN
from lopt.architectures.mlp_lopt import MLPLOpt

WEIGHTS_DIR = pathlib.Path(__file__).parent / 'weights'


def pretrained_path(name: str) -> pathlib.Path | None:
  """The shipped weights file of architecture ``name``, or None if the package ships none."""
  path = WEIGHTS_DIR / f'{name}.npz'
  return path if path.is_file() else None


def load_pretrained(name: str) -> tuple[base.LearnedOptimizer, base.MetaParams]:
  """Loads the shipped ``(architecture, meta_params)`` of architecture ``name``; raises if none is shipped."""
  path = pretrained_path(name)
  if path is None:
    shipped = sorted(p.stem for p in WEIGHTS_DIR.glob('*.npz'))
    raise serialization.LoptFileNotFoundError(
        f'no meta-trained weights are shipped for {name!r} (looked for {WEIGHTS_DIR / (name + ".npz")}); '
        f'shipped: {shipped or "none"}.')
  return _load_cached(str(path), *_file_version(path))


def _file_version(path: pathlib.Path) -> tuple[int, int]:
  stat = os.stat(path)
  return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> tuple[base.LearnedOptimizer, base.MetaParams]:
  """:func:`lopt.load`, once per file version: ``optax.inject_hyperparams`` calls the factory at every update."""
  del mtime_ns, size  # part of the cache key only
  return serialization.load(path)


def _injectable_fields(cls: type[base.LearnedOptimizer]) -> frozenset[str]:
  """The fields annotated ``float``: they may be (traced) JAX scalars, as ``optax.inject_hyperparams`` passes."""
  hints = typing.get_type_hints(cls)
  return frozenset(f.name for f in dataclasses.fields(cls) if hints.get(f.name) is float)


@functools.lru_cache(maxsize=64)
def meta_signature(architecture: base.LearnedOptimizer):
  """The tree structure, shapes and dtypes of ``architecture``'s meta-parameters: equal signatures mean the same
  meta-parameters fit both."""
  shapes = jax.eval_shape(architecture.init, jax.random.PRNGKey(0))
  return jax.tree.structure(shapes), tuple((s.shape, s.dtype) for s in jax.tree.leaves(shapes))


def _concrete_overrides(cls, factory_name: str, overrides: dict) -> tuple[dict, dict]:
  """Splits the given overrides into ``(static, traced)``; arrays for float fields become floats when concrete."""
  injectable = _injectable_fields(cls)
  static, traced = {}, {}
  for name, value in overrides.items():
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
      if name not in injectable:
        raise TypeError(
            f'lopt.{factory_name}: {name} got an array ({value!r}); optax.inject_hyperparams passes numeric (and '
            f'callable) arguments as arrays, but {name} sets the architecture itself, not a value inside the '
            f'computation. Pass static_args=({name!r},) to optax.inject_hyperparams'
            + (", and give state_dtype as a string such as 'bfloat16'." if name == 'state_dtype' else '.')
            + f' Injectable fields of {cls.__name__}: {sorted(injectable)}.')
      if np.ndim(value) != 0:
        raise ValueError(f'lopt.{factory_name}: {name} must be a scalar, got shape {np.shape(value)}.')
      if isinstance(value, jax.core.Tracer):
        traced[name] = value
        continue
      value = float(value)
    static[name] = value
  return static, traced


def _shipped_or_initial(cls, factory_name: str, meta_params, overrides: dict) -> optax.GradientTransformationExtraArgs:
  valid = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(overrides) - valid)
  if unknown:
    raise TypeError(f'lopt.{factory_name}() got unexpected keyword argument(s) {unknown}; the hyperparameters of '
                    f'{cls.__name__} are {sorted(valid)}.')
  static, traced = _concrete_overrides(cls, factory_name, {k: v for k, v in overrides.items() if v is not None})
  if meta_params is not None:
    return cls(**static, **traced).transform(meta_params)
  path = pretrained_path(cls.name)
  if path is None:
    architecture = cls(**static, **traced)
    return architecture.transform(architecture.init(jax.random.PRNGKey(0)))

  shipped, shipped_meta = load_pretrained(cls.name)
  # Traced values cannot change shapes (shapes are static), so the check uses the static overrides only.
  requested = dataclasses.replace(shipped, **static)
  if meta_signature(requested) != meta_signature(shipped):
    culprits = [k for k in static if meta_signature(dataclasses.replace(shipped, **{k: static[k]}))
                != meta_signature(shipped)] or sorted(static)
    given = ', '.join(f'{k}={static[k]!r}' for k in culprits)
    every = ', '.join(f'{k}={v!r}' for k, v in static.items())
    raise ValueError(
        f'lopt.{factory_name}: {given} changes the shapes of the meta-parameters, so the shipped meta-trained '
        f'weights ({path}) cannot run it. For the untrained architecture, ask for it explicitly: '
        f'arch = lopt.{cls.__name__}({every}); tx = arch.transform(arch.init(jax.random.PRNGKey(0))); or pass '
        f'meta_params= meta-trained for that config. Overrides that keep the shapes keep the shipped weights.')
  architecture = dataclasses.replace(shipped, **static, **traced) if traced else requested
  return architecture.transform(shipped_meta)


def _with_fields_as_keywords(cls):
  """Publishes ``cls``'s fields as the factory's keyword-only parameters (default None: the shipped value).

  ``optax.inject_hyperparams`` binds its arguments to ``inspect.signature(factory)``; a bare ``**config`` would be
  bound as one argument named ``config``.
  """
  def decorate(factory):
    parameters = [inspect.Parameter('meta_params', inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    parameters += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None)
                   for f in dataclasses.fields(cls)]
    factory.__signature__ = inspect.Signature(parameters, return_annotation=optax.GradientTransformationExtraArgs)
    return factory
  return decorate


@_with_fields_as_keywords(HierarchicalRNN)
def hierarchical_rnn(meta_params: base.MetaParams | None = None, **config) -> optax.GradientTransformationExtraArgs:
  """The hierarchical RNN optimizer of Wichrowska et al. (2017), ready to use like ``optax.adam``.

  Args:
    meta_params: the learned optimizer's weights, for the architecture ``HierarchicalRNN(**config)``. None (the
      default) uses the meta-trained weights shipped in the package, or the architecture's initial weights (seed 0)
      when none are shipped.
    **config: hyperparameters of :class:`lopt.HierarchicalRNN` (None: the shipped value). With shipped weights they
      override the shipped config and must keep the meta-parameters' shapes, else ``ValueError`` (module docstring).

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update(grads, state, params, value=loss)`` needs ``params``,
    and ``value``, the loss, where the config has ``loss_brake`` (the shipped weights since release 10:
    docs/model_card_hrnn.md; ``dataclasses.replace(arch, loss_brake=None).transform(meta_params)`` on
    :func:`load_pretrained`'s pair runs them without the brake). Works with ``optax.inject_hyperparams``
    (``max_log_lr`` is injectable).

  Example::

    opt = lopt.hierarchical_rnn()
    state = opt.init(params)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = opt.update(grads, state, params, value=loss)
    params = optax.apply_updates(params, updates)
  """
  return _shipped_or_initial(HierarchicalRNN, 'hierarchical_rnn', meta_params, config)


@_with_fields_as_keywords(MLPLOpt)
def mlp_lopt(meta_params: base.MetaParams | None = None, **config) -> optax.GradientTransformationExtraArgs:
  """The per-parameter MLP optimizer of Metz et al. (2019), ready to use like ``optax.adam``.

  Same rules as :func:`hierarchical_rnn`: with no ``meta_params`` it uses the weights shipped in the package
  (meta-trained on a validation objective, ``docs/model_card_mlp_lopt.md``), with ``config`` overriding the shipped
  config where it keeps the shapes. ``step_multiplier`` and ``magnitude_rate`` are injectable. The shipped weights
  carry the loss brake since MLP release 7 (``loss_brake = 1.0``): ``update(grads, state, params, value=loss)``
  needs the loss, as the HRNN's does.
  """
  return _shipped_or_initial(MLPLOpt, 'mlp_lopt', meta_params, config)
