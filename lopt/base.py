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

Input rules shared by every architecture (enforced by :func:`check_inputs` and :func:`check_state`, which
:func:`transformation` runs around every architecture's ``init`` and ``update``):

* ``params`` is required: learned optimizers read the parameters as features.
* ``init(params)`` and ``update`` apply the same rules to ``params`` (an integer leaf fails at ``init``, not later).
* ``state`` must be what ``init`` makes for these params: a state made for another parameter tree raises a
  ``ValueError`` saying what it was made for (rather than a broadcasting error deep inside the step).
* ``grads`` and ``params`` must have the same tree structure and leaf shapes.
* Every parameter leaf must be floating point. Integer or bool leaves raise ``TypeError``; exclude them with
  ``optax.masked`` or ``optax.partition``.
* ``None`` leaves (optax-style masking) are empty subtrees: nothing is computed for them and their update is ``None``.
* Zero-size leaves get zero-size updates; scalar leaves are treated as one-element tensors.
* Low-precision parameters (float16, bfloat16) are computed in float32 internally and updates come back in the
  parameter dtype; optimizer state is float32.
* Every architecture has the hyperparameter ``state_dtype`` (``'float32'``, default, or ``'bfloat16'``; dtype objects
  such as ``jnp.bfloat16`` are accepted): the dtype of its **per-parameter** state arrays, the ones whose size grows
  with the number of parameters. bfloat16 halves their memory; the arithmetic stays float32 (state is cast up when
  read and rounded when written), per-tensor and global state and counters keep their dtypes, and the
  meta-parameters' shapes do not change (weights trained with float32 state run with bfloat16 state). bfloat16 keeps
  8 bits of mantissa: an accumulator whose per-step change is below ~2^-9 of its value (a momentum with decay
  0.9999 once it has grown, a slowly moving log learning rate) stops changing, so expect the updates to drift from
  the float32 ones over long runs. float16 is refused: its range (smallest normal 6e-5) cannot hold the mean
  squares of small gradients.
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
  (bool, int, float, str, or tuples of them). Fields annotated ``float`` that do not set shapes may also hold a
  traced JAX scalar (:func:`is_traced`), which is how ``optax.inject_hyperparams`` changes them during training;
  such an architecture is used only to build its transformation (it cannot be hashed or saved). They set the class attribute ``name`` (the string recorded by
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


def is_traced(x) -> bool:
  """Whether ``x`` is a JAX tracer: a float hyperparameter injected by ``optax.inject_hyperparams`` under ``jit``.

  Architectures accept such values in their float fields and validate them only when concrete.
  """
  return isinstance(x, jax.core.Tracer)


STATE_DTYPES = ('float32', 'bfloat16')


def state_dtype_name(value, owner: str) -> str:
  """The canonical name of a ``state_dtype`` hyperparameter (``'float32'`` or ``'bfloat16'``); ``ValueError`` else."""
  try:
    name = jnp.dtype(value).name
  except TypeError:
    name = None
  if name not in STATE_DTYPES:
    raise ValueError(f"{owner}.state_dtype must be 'float32' or 'bfloat16' (or jnp.float32 / jnp.bfloat16), got "
                     f'{value!r}. float16 is not offered: mean squares of small gradients fall below its range.')
  return name


#: Values of the ``step_scale`` hyperparameter of the per-parameter architectures (docs/algorithms.md §2.11).
STEP_SCALES = ('absolute', 'relative')


def is_positive_finite(value) -> bool:
  """A real number (not a bool) in ``(0, inf)``."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def check_step_scale(step_scale, relative_step_floor, owner: str) -> None:
  """``ValueError`` unless ``step_scale`` is in :data:`STEP_SCALES` and ``relative_step_floor`` is finite and > 0."""
  if step_scale not in STEP_SCALES:
    raise ValueError(f"{owner}.step_scale must be 'absolute' (paper) or 'relative' (steps scaled by each tensor's "
                     f'parameter RMS), got {step_scale!r}.')
  if not is_positive_finite(relative_step_floor):
    raise ValueError(f'{owner}.relative_step_floor must be a finite number > 0, got {relative_step_floor!r}.')


def check_positive_finite(name: str, value, owner: str, *, meaning: str, optional: bool = True) -> None:
  """``ValueError`` unless the option ``name`` is a finite number > 0 (or ``None`` when ``optional``); ``meaning``
  says what the value is, for the message."""
  if (value is None and optional) or is_positive_finite(value):
    return
  allowed = 'None or a finite number > 0' if optional else 'a finite number > 0'
  raise ValueError(f'{owner}.{name} must be {allowed} ({meaning}), got {value!r}.')


def check_relative_step_bound(name: str, value, step_scale, owner: str, *, bounds: str, meaning: str,
                              may_be_traced: bool = False) -> None:
  """``ValueError`` unless the option ``name`` is ``None``, or a finite number > 0 (or, with ``may_be_traced``, a
  traced scalar) together with ``step_scale='relative'``: the options that bound relative steps
  (``max_scale_growth`` of both architectures, ``MLPLOpt.max_relative_step``; docs/algorithms.md §2.11, §3.4).
  ``bounds`` says what the option bounds and ``meaning`` what its value is, for the messages."""
  if value is None:
    return
  if step_scale != 'relative':
    raise ValueError(f"{owner}.{name} bounds {bounds}; it needs step_scale='relative' (got step_scale={step_scale!r}): "
                     f"set step_scale='relative' or {name}=None.")
  if not (may_be_traced and is_traced(value)):
    check_positive_finite(name, value, owner, meaning=meaning)


def check_max_scale_growth(max_scale_growth, step_scale, owner: str) -> None:
  """:func:`check_relative_step_bound` for ``max_scale_growth``, the bound on the growth of relative steps (may be
  traced: it is injectable)."""
  check_relative_step_bound('max_scale_growth', max_scale_growth, step_scale, owner,
                            bounds='the scale of relative steps', meaning='a multiple of the initial parameter RMS',
                            may_be_traced=True)


def check_min_gradient_rms(min_gradient_rms, owner: str) -> None:
  """``ValueError`` unless ``min_gradient_rms`` is ``None`` or a finite number > 0 (docs/algorithms.md §2.11)."""
  check_positive_finite('min_gradient_rms', min_gradient_rms, owner,
                        meaning="the gradient RMS below which a tensor's step shrinks in proportion; 1e-8 is typical")


def gradient_gate(gradient_rms: jax.Array, min_gradient_rms: float) -> jax.Array:
  """``min(1, rms_T(g) / epsilon)``: the factor that makes a tensor's step vanish with its gradient (the role of
  Adam's ``eps``; docs/algorithms.md §2.11). Exactly 1 above ``epsilon``, so it changes nothing where the gradients
  carry signal."""
  return jnp.minimum(1.0, gradient_rms / min_gradient_rms)


#: Values of ``attenuation`` (docs/algorithms.md §2.11): which departures of a tensor's gradient from its long-run
#: level shrink its step.
ATTENUATIONS = ('falls', 'rises', 'both')


def check_attenuation(attenuation, decays, owner: str) -> None:
  """``ValueError`` unless ``attenuation`` is ``None`` or in :data:`ATTENUATIONS`, and ``decays`` is a tuple
  ``(fast, slow)`` with ``0 <= fast < slow < 1`` (docs/algorithms.md §2.11)."""
  if attenuation is not None and attenuation not in ATTENUATIONS:
    raise ValueError(f"{owner}.attenuation must be None or one of {ATTENUATIONS} (which departures of a tensor's "
                     f'gradient from its long-run level shrink its step), got {attenuation!r}.')
  if not (isinstance(decays, tuple) and len(decays) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in decays)
          and 0 <= decays[0] < decays[1] < 1):
    raise ValueError(f'{owner}.attenuation_decays must be a tuple (fast, slow) of EMA decays with '
                     f"0 <= fast < slow < 1 (the recent and the long-run average of each tensor's mean squared "
                     f'gradient; (0.5, 0.999) was measured), got {decays!r}.')


def gradient_mean_square_averages(averages: jax.Array, mean_squares: jax.Array,
                                  decays: tuple[float, float]) -> jax.Array:
  """The per-tensor ``[2, T]`` averages ``(fast, slow)`` of ``mean_T(g^2)`` after one more step:
  ``v_k <- d_k v_k + (1 - d_k) mean_T(g^2)`` for ``d = decays`` (zero-initialised; see :func:`attenuation`)."""
  d = jnp.asarray(decays, jnp.float32)[:, None]
  return d * averages + (1.0 - d) * mean_squares[None, :]


def attenuation(averages: jax.Array, count: jax.Array, decays: tuple[float, float], mode: str) -> jax.Array:
  """The factor a tensor's step is multiplied by when its gradient departs from its long-run level
  (docs/algorithms.md §2.11), from ``r = v_fast_hat / v_slow_hat``:

  * ``'falls'``: ``sqrt(min(1, r))``, a gradient whose mean square has fallen to ``r < 1`` times its long-run level
    takes ``sqrt(r)`` of its step (the part of Adam's step size that a direction normalised per tensor loses: Adam's
    ``m / sqrt(v)`` shrinks when the gradient falls below its ``1 / (1 - b2)``-step average);
  * ``'rises'``: ``sqrt(min(1, 1 / r))``, a gradient spike shrinks the step (where it is most likely too large);
  * ``'both'``: ``sqrt(min(r, 1 / r))``.

  ``averages`` are the ``[2, T]`` EMAs of :func:`gradient_mean_square_averages` after ``count`` (>= 1) steps;
  ``v_hat = v / (1 - d^count)`` removes their zero-initialisation bias, as Adam's, so the factor is 1 on the first
  step. Gradients that are all exactly 0 give 0 with ``'falls'`` and ``'both'`` (no step without a gradient), 1 with
  ``'rises'`` (they have not risen).

  The factor is a constant for meta-gradients (``stop_gradient``): its derivative with respect to the mean squares
  is ``v_fast / v_slow^2``, which is 0/0 in float32 once a tensor's gradients vanish (``v_slow^2`` underflows below
  ~1e-19). Meta-gradients still see the factor's value, through the step it multiplies; they ignore only how the
  trajectory changes it.
  """
  count = jnp.asarray(count, jnp.float32)
  d = jnp.asarray(decays, jnp.float32)[:, None]
  fast, slow = jax.lax.stop_gradient(averages) / (1.0 - d ** count)
  ratio = jnp.ones_like(fast)
  if mode in ('falls', 'both'):
    ratio = jnp.minimum(ratio, fast / (slow + 1e-30))
  if mode in ('rises', 'both'):
    ratio = jnp.minimum(ratio, jnp.where(fast > slow, slow / jnp.where(fast > slow, fast, 1.0), 1.0))
  return jnp.sqrt(ratio)


def check_coherence_decay(decay, owner: str) -> None:
  """``ValueError`` unless ``coherence_decay`` is ``None`` or a number in ``(0, 1)`` (docs/algorithms.md §2.11)."""
  if decay is None or (isinstance(decay, (int, float)) and not isinstance(decay, bool) and 0 < decay < 1):
    return
  raise ValueError(f"{owner}.coherence_decay must be None or an EMA decay in (0, 1) (the averages of each gradient "
                   f"element and of its tensor's mean square that measure how coherent the gradient is across "
                   f"steps; 0.9 was measured), got {decay!r}.")


def coherence(momentum_mean_square: jax.Array, mean_square: jax.Array, count: jax.Array,
              decay: float) -> jax.Array:
  """The factor a tensor's step is multiplied by when its gradient is noise rather than signal (docs/algorithms.md
  §2.11): ``sqrt(min(1, mean_T(m_hat^2) / v_hat))``, where ``m`` is a per-element EMA of the gradient and ``v`` an
  EMA of the tensor's ``mean_T(g^2)``, both with ``decay`` ``b`` and bias-corrected (Adam's ``1 - b^t``).

  ``momentum_mean_square`` is ``mean_T(m^2)`` (uncorrected), ``mean_square`` is ``v`` (uncorrected), both ``[T]``
  after ``count`` (>= 1) steps. With ``c = 1 - b^t``, ``m_hat^2 / v_hat = m^2 / (c v)``. ``m`` is a weighted sum of
  past gradients with weights summing to ``c``, so ``m^2 <= c`` times the same weighted sum of ``g^2`` (Cauchy-Schwarz)
  and the ratio is at most 1: 1 for a gradient that keeps its direction, ``(1 - b) / (1 + b)`` in expectation for
  independent noise (0.053 at ``b = 0.9``, a factor of 0.23). This is the size Adam's ``m / sqrt(v)`` gives a step
  (there per element, with ``v``'s slower decay) that a direction normalised to unit RMS per tensor does not have.
  Gradients that are all exactly 0 give 0. A constant for meta-gradients (``stop_gradient``), as
  :func:`attenuation`.
  """
  corrected = (1.0 - jnp.asarray(decay, jnp.float32) ** jnp.asarray(count, jnp.float32)) * mean_square
  ratio = jax.lax.stop_gradient(momentum_mean_square) / (jax.lax.stop_gradient(corrected) + 1e-30)
  return jnp.sqrt(jnp.minimum(ratio, 1.0))


def to_state(x: jax.Array, state_dtype: str) -> jax.Array:
  """Rounds a float32 per-parameter state array to ``state_dtype`` for storage (a no-op for float32)."""
  return jnp.asarray(x, state_dtype)


def from_state(x: jax.Array) -> jax.Array:
  """A stored per-parameter state array as float32, for computing (a no-op for float32)."""
  return jnp.asarray(x, jnp.float32)


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


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


def _signature_key(params) -> tuple:
  leaves, treedef = jax.tree.flatten(params)
  return treedef, tuple((tuple(jnp.shape(x)), str(jnp.result_type(x))) for x in leaves)


def _probe_params(num_params: int, num_tensors: int) -> dict[str, jax.ShapeDtypeStruct]:
  """A tree of ``num_tensors`` float32 vectors with ``num_params`` elements in all (the first holds the surplus)."""
  sizes = [num_params - num_tensors + 1] + [1] * (num_tensors - 1)
  return {f'p{i}': jax.ShapeDtypeStruct((n,), jnp.float32) for i, n in enumerate(sizes)}


def _made_for(init_fn, state) -> tuple[int | None, int | None]:
  """``(parameters, tensors)`` that a flat-layout ``state`` was made for; None for what cannot be read off.

  Flat-layout states (per-parameter arrays over all N elements, per-tensor arrays over the T leaves) have dimensions
  affine in (N, T) whatever the tree's shape: three probe trees give the coefficients, and the state's dimensions
  are solved for N and T (T is unknown when no array is per tensor). Tree-shaped states (``optax.adam``-like, one
  array per leaf) change structure with the tree and give ``(None, None)``.
  """
  probes = [(1, 1), (2, 1), (2, 2)]
  shapes = []
  for n, t in probes:
    probe_state = jax.eval_shape(init_fn, _probe_params(n, t))
    if jax.tree.structure(probe_state) != jax.tree.structure(state):
      return None, None
    shapes.append([tuple(x.shape) for x in jax.tree.leaves(probe_state)])
  got = [tuple(jnp.shape(x)) for x in jax.tree.leaves(state)]
  if any(len(g) != len(s) for g, s in zip(got, shapes[0])):
    return None, None
  n = t = None
  for g, s11, s21, s22 in zip(got, *shapes):
    for d, a, b, c in zip(g, s11, s21, s22):
      per_param, per_tensor = b - a, c - b
      offset = a - per_param - per_tensor
      if per_param and not per_tensor:
        n = (d - offset) // per_param
      elif per_tensor and not per_param:
        t = (d - offset) // per_tensor
  return n, t


def check_state(state, params: Params, init_fn, optimizer_name: str, cache: dict | None = None) -> None:
  """Raises if ``state`` is not shaped like ``init_fn(params)``; the message says what the state was made for.

  Compares tree structure and leaf shapes with ``jax.eval_shape(init_fn, params)`` (no arrays are made; trace time
  only under ``jit``). ``cache`` (a dict kept by the transformation) memoises the expected shapes per parameter
  signature, so eager steps do not re-trace ``init``.
  """
  key = _signature_key(params)
  expected = cache.get(key) if cache is not None else None
  if expected is None:
    expected = jax.eval_shape(init_fn, _abstract(params))
    if cache is not None:
      cache[key] = expected
  fix = 'Call tx.init(params) with these params (one state per parameter tree).'
  if type(state) is not type(expected):
    raise TypeError(f'{optimizer_name}: the state is a {type(state).__name__}, but tx.init makes a '
                    f'{type(expected).__name__}; pass the state that this transformation\'s init returned.')
  leaves = jax.tree.leaves(params)
  num_params, num_tensors = sum(math.prod(jnp.shape(x)) for x in leaves), len(leaves)
  if jax.tree.structure(state) != jax.tree.structure(expected):
    raise ValueError(f'{optimizer_name}: the state was made for another parameter tree (its structure is '
                     f'{jax.tree.structure(state)}, these params need {jax.tree.structure(expected)}). {fix}')
  for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(state)[0], jax.tree.leaves(expected)):
    if tuple(jnp.shape(got)) != tuple(want.shape):
      n, t = _made_for(init_fn, state)
      if n is not None and t is not None:
        raise ValueError(f'{optimizer_name}: the state was made for {n} parameters in {t} tensors but params have '
                         f'{num_params} in {num_tensors}. {fix}')
      if n is not None:
        raise ValueError(f'{optimizer_name}: the state was made for {n} parameters but params have {num_params}. '
                         f'{fix}')
      raise ValueError(f'{optimizer_name}: the state was made for another parameter tree: state leaf '
                       f'{_path_str(path)} has shape {tuple(jnp.shape(got))} but these params ({num_params} '
                       f'parameters in {num_tensors} tensors) need {tuple(want.shape)}. {fix}')


def transformation(optimizer_name: str, init_fn, update_fn) -> optax.GradientTransformationExtraArgs:
  """The architecture's ``(init_fn, update_fn)`` as an optax transformation, with the shared checks of this module.

  ``init`` checks its ``params`` (:func:`check_inputs`); ``update`` checks ``grads`` against ``params`` and the
  ``state`` against what ``init`` makes for ``params`` (:func:`check_state`). The wrapped functions may assume valid
  inputs.
  """
  expected_states: dict = {}

  def checked_init(params):
    check_inputs(params, params, optimizer_name)
    return init_fn(params)

  def checked_update(grads, state, params=None, **extra_args):
    check_inputs(grads, params, optimizer_name)
    check_state(state, params, init_fn, optimizer_name, expected_states)
    return update_fn(grads, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(checked_init, checked_update)


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
