"""The learned-optimizer contract and the input checks every architecture shares.

A learned optimizer is split in two, the way a Flax module is split from its variables:

* an **architecture** object (a frozen dataclass such as :class:`lopt.HierarchicalRNN`) holds the hyperparameters
  (sizes, feature switches). It is hashable, carries no arrays, and is what :func:`lopt.save` records;
* its **meta-parameters** are a pytree of arrays made by ``architecture.init(key)``. They are what meta-training
  differentiates, so they are never hidden in a closure: ``architecture.transform(meta_params)`` builds an
  ``optax.GradientTransformationExtraArgs`` whose ``update`` is a pure function of
  ``(grads, state, params, meta_params)``, and ``jax.grad`` of a loss computed through ``update`` reaches them.

The transformation follows optax's calling convention::

    updates, state = tx.update(grads, state, params, value=loss)   # value: the training loss, as optax names it
    params = optax.apply_updates(params, updates)

``value`` is optional for every architecture; the architectures that use a validation loss take it as
``valid_value=``. Unknown keyword arguments are ignored, so the transformation composes in ``optax.chain`` with
transformations that need other extra arguments.

Input rules shared by every architecture (enforced by :func:`check_inputs`):

* ``params`` is required: learned optimizers read the parameters as features.
* ``grads`` and ``params`` must have the same tree structure and leaf shapes.
* Every parameter leaf must be floating point. Integer or bool leaves raise ``TypeError``; exclude them with
  ``optax.masked`` or ``optax.partition``.
* ``None`` leaves (optax-style masking) are empty subtrees: nothing is computed for them and their update is ``None``.
* Zero-size leaves get zero-size updates; scalar leaves are treated as one-element tensors.
* Low-precision parameters (float16, bfloat16) are computed in float32 internally and updates come back in the
  parameter dtype; optimizer state is always float32.
* Non-finite gradients propagate into the update (as in ``optax.adam``); wrap the optimizer in
  ``optax.apply_if_finite`` to skip such steps and keep the state finite.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

MetaParams = Any  # a pytree of arrays
Params = Any


class LearnedOptimizer(abc.ABC):
  """Base class of every architecture.

  Subclasses are ``@dataclasses.dataclass(frozen=True)`` whose fields are JSON-serialisable hyperparameters
  (bool, int, float, str, or tuples of them). They set the class attribute ``name`` (the string recorded by
  :func:`lopt.save`) and implement :meth:`init` and :meth:`transform`.
  """

  name: ClassVar[str]

  @abc.abstractmethod
  def init(self, key: jax.Array) -> MetaParams:
    """Returns freshly initialised meta-parameters (a pytree of float32 arrays)."""

  @abc.abstractmethod
  def transform(self, meta_params: MetaParams) -> optax.GradientTransformationExtraArgs:
    """Returns the optax transformation that applies this architecture with ``meta_params``."""

  def config(self) -> dict[str, Any]:
    """The hyperparameters as a JSON-serialisable dict; ``type(self)(**self.config())`` rebuilds ``self``."""
    out = {}
    for field in dataclasses.fields(self):  # type: ignore[arg-type]
      value = getattr(self, field.name)
      out[field.name] = list(value) if isinstance(value, tuple) else value
    return out

  @classmethod
  def from_config(cls, config: dict[str, Any]) -> "LearnedOptimizer":
    """Rebuilds an architecture from :meth:`config`'s output (lists become tuples again)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(config) - names)
    if unknown:
      raise ValueError(f'{cls.__name__} has no hyperparameter(s) {unknown}; valid names: {sorted(names)}.')
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def _path_str(path) -> str:
  return jax.tree_util.keystr(path) or '<root>'


def check_inputs(grads: Params, params: Params | None, optimizer_name: str) -> None:
  """Validates ``grads`` and ``params`` at trace time; raises a ``ValueError``/``TypeError`` that names the leaf.

  Cheap: it reads only shapes, dtypes and tree structure, never array values, so it costs nothing under ``jit``.
  """
  if params is None:
    raise ValueError(
        f'{optimizer_name}.update needs `params`: learned optimizers use the parameters as input features. '
        'Call tx.update(grads, state, params).')
  grads_def = jax.tree.structure(grads)
  params_def = jax.tree.structure(params)
  if grads_def != params_def:
    raise ValueError(
        f'{optimizer_name}: grads and params have different tree structures.\n  grads:  {grads_def}\n'
        f'  params: {params_def}\nPass gradients computed with respect to exactly these params '
        '(None leaves must be None in both).')
  for (path, p), g in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(grads)):
    dtype = jnp.result_type(p)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          f'{optimizer_name}: parameter {_path_str(path)} has dtype {dtype}; learned optimizers update '
          'floating-point arrays only. Exclude it with optax.masked(...) or optax.partition(...).')
    if jnp.shape(g) != jnp.shape(p):
      raise ValueError(
          f'{optimizer_name}: gradient {_path_str(path)} has shape {jnp.shape(g)} but the parameter has shape '
          f'{jnp.shape(p)}.')


def leaves_f32(tree: Params) -> list[jax.Array]:
  """The leaves of ``tree`` as float32 arrays (None leaves are skipped, as ``jax.tree.leaves`` does)."""
  return [jnp.asarray(x, jnp.float32) for x in jax.tree.leaves(tree)]


def updates_like(params: Params, update_leaves: list[jax.Array]) -> Params:
  """Rebuilds ``params``' tree from per-leaf float32 updates, cast to each parameter's dtype and shape."""
  leaves, treedef = jax.tree.flatten(params)
  if len(leaves) != len(update_leaves):
    raise AssertionError(f'{len(update_leaves)} updates for {len(leaves)} parameters')
  cast = [jnp.reshape(u, jnp.shape(p)).astype(jnp.result_type(p)) for u, p in zip(update_leaves, leaves)]
  return jax.tree.unflatten(treedef, cast)


def safe_mean(x: jax.Array, axis=None, keepdims: bool = False) -> jax.Array:
  """``jnp.mean`` that returns 0 instead of NaN over zero elements (zero-size parameters are allowed)."""
  axes = range(x.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis
  n = math.prod(x.shape[a] for a in axes)
  return jnp.sum(x, axis=axis, keepdims=keepdims) / max(n, 1)
