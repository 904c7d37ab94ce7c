"""The learned-optimizer contract (lopt/base.py, DESIGN.md), checked for every architecture in BUILTIN_ARCHITECTURES.

One suite, parameterised over the architectures' default constructors, as optax tests its optimizers: the calling
convention, pytree state, jit / vmap / grad / scan, composition with optax's wrappers and flax.nnx.Optimizer, and the
bad-input rules of lopt/base.py's docstring. A new architecture added to the mapping is covered automatically.

Compile budget: most tests run eagerly (op-by-op, whose per-primitive compiles are cached across tests) and the
jitted tests share one compiled step per architecture (``_shared_step``); only ``jax.grad`` through ``lax.scan`` and
the wrappers built on ``lax.cond`` (MultiSteps, apply_if_finite; jitted so that they compile once, not per call)
compile dedicated programs.
"""

from __future__ import annotations

import dataclasses
import functools
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lopt
import lopt.architectures
from lopt.architectures import BUILTIN_ARCHITECTURES, get_architecture

ARCHITECTURES = [cls() for _, cls in sorted(BUILTIN_ARCHITECTURES.items())]
IDS = [opt.name for opt in ARCHITECTURES]
parametrize_architectures = pytest.mark.parametrize('optimizer', ARCHITECTURES, ids=IDS)

# A small tree with the three ranks the architectures treat differently: a matrix, a vector and a scalar.
PARAMS = {
    'w': jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4),
    'b': jnp.linspace(0.5, -0.25, 4, dtype=jnp.float32),
    's': jnp.asarray(0.75, jnp.float32),
}
_CURVATURE = {'w': 1.0, 'b': 4.0, 's': 0.25}


def quadratic(params):
  """An ill-conditioned quadratic over PARAMS' tree (leaf-wise curvatures 0.25..4, minimum at 0.1)."""
  return sum(0.5 * _CURVATURE[k] * jnp.sum(jnp.square(params[k] - 0.1)) for k in _CURVATURE)


quadratic_value_and_grad = jax.jit(jax.value_and_grad(quadratic))


@functools.lru_cache(maxsize=None)
def meta_params_of(optimizer):
  return optimizer.init(jax.random.key(0))


def tx_of(optimizer):
  return optimizer.transform(meta_params_of(optimizer))


class _SharedStep:
  """One jitted update per architecture, reused by every test that steps PARAMS-shaped inputs; counts its traces."""

  def __init__(self, optimizer):
    self.traces = 0

    def step(meta_params, grads, state, params, loss):
      self.traces += 1  # a Python side effect: runs only while tracing
      return optimizer.transform(meta_params).update(grads, state, params, value=loss)

    self._jitted = jax.jit(step)
    self._optimizer = optimizer

  def __call__(self, grads, state, params, loss):
    return self._jitted(meta_params_of(self._optimizer), grads, state, params, jnp.asarray(loss, jnp.float32))


@functools.lru_cache(maxsize=None)
def _shared_step(optimizer):
  return _SharedStep(optimizer)


def _run(optimizer, num_steps):
  """``num_steps`` jitted steps on the quadratic; returns the list of (updates, state) after each step."""
  step = _shared_step(optimizer)
  params = PARAMS
  state = tx_of(optimizer).init(params)
  out = [(None, state)]
  for _ in range(num_steps):
    loss, grads = quadratic_value_and_grad(params)
    updates, state = step(grads, state, params, loss)
    params = optax.apply_updates(params, updates)
    out.append((updates, state))
  return out


def _signature(tree):
  return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x), getattr(x, 'weak_type', False)), tree)


def _assert_tree_allclose(actual, expected, rtol=1e-6, atol=1e-7):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert jnp.shape(a) == jnp.shape(e) and jnp.result_type(a) == jnp.result_type(e)
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(e, np.float32), rtol=rtol, atol=atol)


def _assert_tree_close_at_scale(actual, expected, rtol=1e-5, scale_atol=1e-6):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    atol = scale_atol * float(jnp.max(jnp.abs(e), initial=0.0))
    _assert_tree_allclose(a, e, rtol=rtol, atol=atol)


def _assert_tree_equal(actual, expected):
  _assert_tree_allclose(actual, expected, rtol=0, atol=0)


def _all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


# --------------------------------------------------------------------------------------------- the update contract


def test_builtin_architectures_is_an_immutable_mapping_by_name():
  # One module per architecture, named after it: the mapping is exactly the package's public modules (no count to
  # edit when one is added), and it still holds the six of the first release.
  modules = {m.name for m in pkgutil.iter_modules(lopt.architectures.__path__) if not m.name.startswith('_')}
  assert set(BUILTIN_ARCHITECTURES) == modules
  assert {'hierarchical_rnn', 'mlp_lopt', 'rnn_mlp_lopt', 'coordinatewise_lstm', 'learnable_adam',
          'learnable_sgdm'} <= modules
  for name, cls in BUILTIN_ARCHITECTURES.items():
    assert cls.name == name and get_architecture(name) is cls
    assert cls.__module__ == f'lopt.architectures.{name}'
    assert getattr(lopt, cls.__name__, None) is cls and cls.__name__ in lopt.__all__, (
        f'export it: add `from lopt.architectures.{name} import {cls.__name__}` to lopt/__init__.py')
  with pytest.raises(TypeError):
    BUILTIN_ARCHITECTURES['mine'] = object  # type: ignore[index]
  with pytest.raises(ValueError, match=r"Unknown architecture 'hrnn'; valid names: \['coordinatewise_lstm', "):
    get_architecture('hrnn')


@parametrize_architectures
def test_updates_have_params_structure_shape_dtype_and_are_finite(optimizer):
  for updates, _ in _run(optimizer, 3)[1:]:
    assert jax.tree.structure(updates) == jax.tree.structure(PARAMS)
    assert _signature(updates) == _signature(PARAMS)
    assert _all_finite(updates)
  assert any(bool(jnp.any(u != 0)) for u in jax.tree.leaves(updates)), 'the optimizer never moves the parameters'


@parametrize_architectures
def test_state_is_a_pytree_of_arrays_with_stable_shapes_and_dtypes(optimizer):
  states = [state for _, state in _run(optimizer, 3)]
  for state in states:
    for leaf in jax.tree.leaves(state):
      assert isinstance(leaf, (jax.Array, np.ndarray)), f'state leaf of type {type(leaf).__name__}, not an array'
    assert jax.tree.structure(state) == jax.tree.structure(states[0])
    assert _signature(state) == _signature(states[0])
    assert _all_finite(state)
  # lopt/base.py: "optimizer state is always float32" (integer step counters are allowed).
  for leaf in jax.tree.leaves(states[0]):
    assert not jnp.issubdtype(leaf.dtype, jnp.floating) or leaf.dtype == jnp.float32


def _aliased_leaves(tree):
  by_buffer = {}
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(x, jax.Array) and x.size:
      by_buffer.setdefault(x.unsafe_buffer_pointer(), []).append(jax.tree_util.keystr(path))
  return [paths for paths in by_buffer.values() if len(paths) > 1]


@parametrize_architectures
def test_state_can_be_donated_to_a_jitted_step(optimizer):
  # Training loops donate the optimizer state (jax.jit(step, donate_argnums=...)); XLA refuses a donation in which two
  # leaves are one buffer ("Attempt to donate the same buffer twice"), so init/update must not return one array
  # under several names.
  tx = tx_of(optimizer)
  touch = jax.jit(lambda state: jax.tree.map(lambda x: x + 1, state), donate_argnums=0)
  loss, grads = quadratic_value_and_grad(PARAMS)
  for state in (tx.init(PARAMS), tx.update(grads, tx.init(PARAMS), PARAMS, value=loss)[1]):
    assert not _aliased_leaves(state), f'state leaves share a buffer: {_aliased_leaves(state)}'
    touch(state)


@parametrize_architectures
def test_jit_does_not_retrace_on_later_calls(optimizer):
  step = _shared_step(optimizer)
  _run(optimizer, 3)  # three calls with new grads, state, params and loss
  # Exactly one trace over the whole session: every test feeding PARAMS-shaped inputs shares this step.
  assert step.traces == 1


@parametrize_architectures
def test_value_is_optional_and_unknown_keywords_are_ignored(optimizer):
  tx = tx_of(optimizer)
  state = tx.init(PARAMS)
  loss, grads = quadratic_value_and_grad(PARAMS)
  for kwargs in ({}, {'value': loss}, {'value': loss, 'valid_value': 2 * loss}):
    updates, new_state = tx.update(grads, state, PARAMS, **kwargs)
    assert _signature(updates) == _signature(PARAMS) and _all_finite(updates)
    updates_foo, new_state_foo = tx.update(grads, state, PARAMS, **kwargs, foo=1)
    _assert_tree_equal(updates_foo, updates)
    _assert_tree_equal(new_state_foo, new_state)


# --------------------------------------------------------------------------------------------- JAX transformations


@parametrize_architectures
def test_vmap_over_grads_state_params_equals_a_loop(optimizer):
  tx = tx_of(optimizer)
  scales = [1.0, -0.5, 2.0]
  batch_params = [jax.tree.map(lambda x, s=s: s * x + 0.05, PARAMS) for s in scales]
  # One loop step first, so the vmapped step starts from non-trivial, distinct states.
  states, grads, losses = [], [], []
  for params in batch_params:
    loss, g = quadratic_value_and_grad(params)
    _, state = tx.update(g, tx.init(params), params, value=loss)
    states.append(state)
    grads.append(jax.tree.map(lambda x: 0.5 * x, g))
    losses.append(loss)
  loop = [tx.update(g, s, p, value=v) for g, s, p, v in zip(grads, states, batch_params, losses)]

  stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
  vmapped_updates, vmapped_states = jax.vmap(lambda g, s, p, v: tx.update(g, s, p, value=v))(
      stack(grads), stack(states), stack(batch_params), jnp.stack(losses))
  # Same float32 arithmetic on each slice, but batched kernels may reassociate sums: errors of a few float32 ulps of
  # the summands, i.e. ~1e-7 of each array's largest entry (entries that cancel to near zero have large *relative*
  # error). Tolerance: 1e-5 relative plus 1e-6 of the array's largest magnitude.
  _assert_tree_close_at_scale(vmapped_updates, stack([u for u, _ in loop]))
  _assert_tree_close_at_scale(vmapped_states, stack([s for _, s in loop]))


@parametrize_architectures
def test_grad_wrt_meta_params_through_scan_of_updates(optimizer):
  def meta_loss(meta_params):
    tx = optimizer.transform(meta_params)

    def inner_step(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(quadratic)(params)
      updates, state = tx.update(grads, state, params, value=loss, valid_value=loss)
      return (optax.apply_updates(params, updates), state), loss

    (params, _), _ = jax.lax.scan(inner_step, (PARAMS, tx.init(PARAMS)), length=5)
    return quadratic(params)

  meta_grads = jax.jit(jax.grad(meta_loss))(meta_params_of(optimizer))
  assert jax.tree.structure(meta_grads) == jax.tree.structure(meta_params_of(optimizer))
  assert _all_finite(meta_grads)
  assert any(bool(jnp.any(g != 0)) for g in jax.tree.leaves(meta_grads)), 'meta-gradient is identically zero'


# --------------------------------------------------------------------------------------------- optax composition


@parametrize_architectures
def test_inside_optax_chain_with_clip_and_scale(optimizer):
  lopt_tx = tx_of(optimizer)
  chained = optax.chain(optax.clip_by_global_norm(0.5), lopt_tx, optax.scale(0.3))
  loss, grads = quadratic_value_and_grad(PARAMS)
  updates, _ = chained.update(grads, chained.init(PARAMS), PARAMS, value=loss)

  norm = optax.tree.norm(grads)
  clipped = jax.tree.map(lambda g: g * (0.5 / norm), grads)  # the norm here is > 0.5
  assert float(norm) > 0.5
  expected, _ = lopt_tx.update(clipped, lopt_tx.init(PARAMS), PARAMS, value=loss)
  _assert_tree_allclose(updates, jax.tree.map(lambda u: 0.3 * u, expected), rtol=1e-5, atol=1e-7)


@parametrize_architectures
def test_inside_multisteps_first_call_is_zero_second_uses_mean_gradient(optimizer):
  lopt_tx = tx_of(optimizer)
  multi = optax.MultiSteps(lopt_tx, every_k_schedule=2)
  multi_update = jax.jit(multi.update)  # its lax.cond would compile the optimizer at every eager call
  state = multi.init(PARAMS)
  loss, grads = quadratic_value_and_grad(PARAMS)
  other_grads = jax.tree.map(lambda g: -0.5 * g + 0.25, grads)

  first, state = multi_update(grads, state, PARAMS, value=loss)
  assert _signature(first) == _signature(PARAMS)
  assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(first))
  second, state = multi_update(other_grads, state, PARAMS, value=loss)
  mean_grads = jax.tree.map(lambda a, b: (a + b) / 2, grads, other_grads)
  expected, _ = lopt_tx.update(mean_grads, lopt_tx.init(PARAMS), PARAMS, value=loss)
  _assert_tree_allclose(second, expected, rtol=1e-5, atol=1e-7)


@parametrize_architectures
def test_apply_if_finite_skips_non_finite_steps_and_keeps_state_finite(optimizer):
  lopt_tx = tx_of(optimizer)
  guarded = optax.apply_if_finite(lopt_tx, max_consecutive_errors=3)
  guarded_update = jax.jit(guarded.update)  # its lax.cond would compile the optimizer at every eager call
  state = guarded.init(PARAMS)
  loss, grads = quadratic_value_and_grad(PARAMS)
  finite_updates, state = guarded_update(grads, state, PARAMS, value=loss)
  expected, expected_state = lopt_tx.update(grads, lopt_tx.init(PARAMS), PARAMS, value=loss)
  _assert_tree_allclose(finite_updates, expected, rtol=1e-5, atol=1e-7)  # compiled differently: ulps apart

  for count, bad in enumerate([np.nan, np.inf], start=1):
    bad_grads = {**grads, 'w': grads['w'].at[1, 2].set(bad)}
    skipped, new_state = guarded_update(bad_grads, state, PARAMS, value=loss)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(skipped)), f'step with {bad} was not skipped'
    assert int(new_state.notfinite_count) == count
    _assert_tree_equal(new_state.inner_state, state.inner_state)
    assert _all_finite(new_state.inner_state)
    state = new_state

  # The next finite step proceeds from the last good state, as if the bad steps never happened.
  resumed, state = guarded_update(grads, state, PARAMS, value=loss)
  expected, _ = lopt_tx.update(grads, expected_state, PARAMS, value=loss)
  assert int(state.notfinite_count) == 0
  _assert_tree_allclose(resumed, expected, rtol=1e-5, atol=1e-7)


@parametrize_architectures
@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_unwrapped_non_finite_gradient_propagates_into_the_update(optimizer, bad):
  # Documented in lopt/base.py: non-finite gradients propagate (as in optax.adam); apply_if_finite is the guard.
  tx = tx_of(optimizer)
  loss, grads = quadratic_value_and_grad(PARAMS)
  bad_grads = {**grads, 'w': grads['w'].at[1, 2].set(bad)}
  updates, _ = tx.update(bad_grads, tx.init(PARAMS), PARAMS, value=loss)
  assert not bool(jnp.all(jnp.isfinite(updates['w'])))


@parametrize_architectures
def test_inside_optax_masked(optimizer):
  lopt_tx = tx_of(optimizer)
  masked = optax.masked(lopt_tx, {'w': True, 'b': False, 's': True})
  loss, grads = quadratic_value_and_grad(PARAMS)
  updates, _ = masked.update(grads, masked.init(PARAMS), PARAMS, value=loss)
  np.testing.assert_array_equal(updates['b'], grads['b'])  # masked-out leaves pass through unchanged
  sub_params = {'w': PARAMS['w'], 's': PARAMS['s']}
  expected, _ = lopt_tx.update({'w': grads['w'], 's': grads['s']}, lopt_tx.init(sub_params), sub_params, value=loss)
  _assert_tree_allclose({'w': updates['w'], 's': updates['s']}, expected, rtol=1e-6, atol=1e-7)


@parametrize_architectures
def test_inside_inject_hyperparams(optimizer):
  lopt_tx = tx_of(optimizer)
  factory = lambda learning_rate: optax.chain(lopt_tx, optax.scale(learning_rate))
  injected = optax.inject_hyperparams(factory)(learning_rate=0.5)
  state = injected.init(PARAMS)
  loss, grads = quadratic_value_and_grad(PARAMS)
  expected, _ = lopt_tx.update(grads, lopt_tx.init(PARAMS), PARAMS, value=loss)

  updates, _ = injected.update(grads, state, PARAMS, value=loss)
  _assert_tree_allclose(updates, jax.tree.map(lambda u: 0.5 * u, expected), rtol=1e-6, atol=1e-7)
  state.hyperparams['learning_rate'] = jnp.asarray(0.25)
  updates, _ = injected.update(grads, state, PARAMS, value=loss)
  _assert_tree_allclose(updates, jax.tree.map(lambda u: 0.25 * u, expected), rtol=1e-6, atol=1e-7)


@parametrize_architectures
def test_flax_nnx_optimizer(optimizer):
  lopt_tx = tx_of(optimizer)
  # Kernel (3, 4) and bias (4,) have PARAMS' shapes, so most eagerly compiled per-leaf kernels are reused.
  model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
  nnx_optimizer = nnx.Optimizer(model, lopt_tx, wrt=nnx.Param)
  x = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
  y = jnp.linspace(0.0, 1.0, 20).reshape(5, 4)
  loss_fn = lambda m: jnp.mean(jnp.square(m(x) - y))

  params = nnx.as_pure(nnx.state(model, nnx.Param))
  ref_state = lopt_tx.init(params)
  for _ in range(2):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    updates = nnx_optimizer.update(model, grads, value=loss)
    expected, ref_state = lopt_tx.update(nnx.as_pure(nnx.state(grads, nnx.Param)), ref_state, params, value=loss)
    _assert_tree_allclose(nnx.as_pure(updates), expected, rtol=1e-6, atol=1e-7)
    params = optax.apply_updates(params, expected)
    _assert_tree_allclose(nnx.as_pure(nnx.state(model, nnx.Param)), params, rtol=1e-6, atol=1e-7)
  assert int(nnx_optimizer.step[...]) == 2


# Same tensors as PARAMS, each twice as large: state leaves that grow with it are per-parameter.
_DOUBLED = {k: jnp.concatenate([jnp.ravel(v), jnp.ravel(v)]) for k, v in PARAMS.items()}


@parametrize_architectures
def test_bfloat16_state_dtype_stores_per_parameter_state_in_bfloat16_and_stays_close(optimizer):
  bf16 = dataclasses.replace(optimizer, state_dtype=jnp.bfloat16)
  assert bf16.state_dtype == 'bfloat16' and type(bf16).from_config(bf16.config()) == bf16
  # Same meta-parameter shapes, so weights trained with float32 state (the shipped ones) run with bfloat16 state.
  assert _signature(jax.eval_shape(bf16.init, jax.random.key(0))) == _signature(
      jax.eval_shape(optimizer.init, jax.random.key(0)))
  tx32, tx16 = tx_of(optimizer), bf16.transform(meta_params_of(optimizer))

  per_parameter = [jnp.size(a) != jnp.size(b) for a, b in zip(jax.tree.leaves(tx32.init(PARAMS)),
                                                              jax.tree.leaves(tx32.init(_DOUBLED)))]
  assert any(per_parameter)
  params32 = params16 = PARAMS
  state32, state16 = tx32.init(PARAMS), tx16.init(PARAMS)
  for _ in range(3):
    loss32, grads32 = quadratic_value_and_grad(params32)
    loss16, grads16 = quadratic_value_and_grad(params16)
    updates32, state32 = tx32.update(grads32, state32, params32, value=loss32)
    updates16, state16 = tx16.update(grads16, state16, params16, value=loss16)
    params32, params16 = optax.apply_updates(params32, updates32), optax.apply_updates(params16, updates16)
    for leaf32, leaf16, grows in zip(jax.tree.leaves(state32), jax.tree.leaves(state16), per_parameter):
      assert leaf16.dtype == (jnp.bfloat16 if grows else leaf32.dtype)
    assert _signature(updates16) == _signature(PARAMS) and _all_finite(updates16)
    # Tolerance, relative to each update leaf's largest entry. bfloat16 keeps 8 significant bits: each stored value is
    # off by up to 2^-9 (0.2%) relative, and a few such roundings reach the update in 3 steps: 1%. The hierarchical
    # RNN stores its log learning rate l ~ -9 (|l| in [8, 16), where bfloat16 values are 2^-4 apart), so l is off by
    # up to 2^-5 and the step exp(l) by up to 3.2%: 5% for it.
    tolerance = 0.05 if optimizer.name == 'hierarchical_rnn' else 0.01
    _assert_tree_close_at_scale(updates16, updates32, rtol=0.0, scale_atol=tolerance)


@parametrize_architectures
def test_state_dtype_refuses_float16_and_names_the_choices(optimizer):
  with pytest.raises(ValueError, match=r"state_dtype must be 'float32' or 'bfloat16'"):
    dataclasses.replace(optimizer, state_dtype=jnp.float16)


# --------------------------------------------------------------------------------------------- bad input (base.py)


@parametrize_architectures
@pytest.mark.parametrize('dtype', [jnp.int32, jnp.bool_])
def test_integer_or_bool_param_leaf_raises_type_error_naming_it(optimizer, dtype):
  tx = tx_of(optimizer)
  params = {'layer': {'w': PARAMS['w'], 'count': jnp.zeros(3, dtype)}}
  with pytest.raises(TypeError, match=r"\['layer'\]\['count'\]"):
    tx.update(params, tx.init(params), params)


@parametrize_architectures
@pytest.mark.parametrize('dtype', [jnp.int32, jnp.bool_])
def test_init_rejects_integer_or_bool_param_leaf_naming_it(optimizer, dtype):
  # One rule for init and update, for every architecture: the leaf is named at init, not at the first update.
  tx = tx_of(optimizer)
  with pytest.raises(TypeError, match=r"\['layer'\]\['count'\].*optax.masked"):
    tx.init({'layer': {'w': PARAMS['w'], 'count': jnp.zeros(3, dtype)}})


@parametrize_architectures
def test_state_made_for_another_tree_raises_saying_what_it_was_made_for(optimizer):
  # lopt/base.py's check_state, shared by every architecture: never a broadcasting error from inside the step.
  tx = tx_of(optimizer)
  small = {'w': jnp.ones(3)}
  state = tx.init(small)
  bigger = {'w': jnp.ones(4)}
  with pytest.raises(ValueError, match=r'state was made for (3 parameters|another parameter tree).*'
                                       r'Call tx\.init\(params\) with these params'):
    tx.update(bigger, state, bigger)
  two_tensors = {'a': jnp.ones(1), 'b': jnp.ones(2)}
  with pytest.raises(ValueError, match=r'state was made for'):
    tx.update(two_tensors, tx.init({'a': jnp.ones(4), 'b': jnp.ones(2), 'c': jnp.ones(1)}), two_tensors)


@parametrize_architectures
def test_state_of_another_architecture_raises_type_error(optimizer):
  other = next(o for o in ARCHITECTURES if type(o) is not type(optimizer))
  state = tx_of(other).init(PARAMS)
  with pytest.raises(TypeError, match=rf'the state is a {type(state).__name__}, but tx.init makes'):
    tx_of(optimizer).update(PARAMS, state, PARAMS)


@parametrize_architectures
def test_grads_params_structure_mismatch_raises_value_error(optimizer):
  tx = tx_of(optimizer)
  state = tx.init(PARAMS)
  grads = {'w': PARAMS['w'], 'b': PARAMS['b']}
  with pytest.raises(ValueError, match='tree structure'):
    tx.update(grads, state, PARAMS)


@parametrize_architectures
def test_params_none_raises(optimizer):
  tx = tx_of(optimizer)
  with pytest.raises(ValueError, match='params'):
    tx.update(PARAMS, tx.init(PARAMS), None)


# Edge cases in one tree, so that they cost one set of compiles per architecture: a None leaf (optax-style masking),
# a zero-size leaf, and a scalar with a vector (PARAMS, used by every other test, also holds a scalar).
EDGE_PARAMS = {'b': jnp.linspace(-0.5, 0.5, 4), 'empty': jnp.zeros((0, 3)), 'frozen': None, 's': jnp.asarray(0.3)}
EDGE_GRADS = {'b': jnp.linspace(0.2, -0.4, 4), 'empty': jnp.zeros((0, 3)), 'frozen': None, 's': jnp.asarray(-0.7)}


@functools.lru_cache(maxsize=None)
def _edge_steps(optimizer):
  """Two updates on EDGE_PARAMS: [(updates, state), (updates, state)]."""
  tx = tx_of(optimizer)
  state = tx.init(EDGE_PARAMS)
  out = []
  for loss in (1.0, 0.8):
    updates, state = tx.update(EDGE_GRADS, state, EDGE_PARAMS, value=jnp.asarray(loss))
    out.append((updates, state))
  return out


@parametrize_architectures
def test_none_leaves_get_none_updates(optimizer):
  for updates, _ in _edge_steps(optimizer):
    assert updates['frozen'] is None
    assert jax.tree.structure(updates) == jax.tree.structure(EDGE_PARAMS)


@parametrize_architectures
def test_zero_size_leaves_get_zero_size_updates_and_do_not_poison_the_others(optimizer):
  for updates, state in _edge_steps(optimizer):
    assert updates['empty'].shape == (0, 3) and updates['empty'].dtype == jnp.float32
    # Means over an empty leaf must not turn shared (per-tensor / global) features into NaN.
    assert _all_finite(updates) and _all_finite(state)


@parametrize_architectures
def test_scalar_and_vector_leaves_get_finite_updates_of_their_shape(optimizer):
  for updates, _ in _edge_steps(optimizer):
    assert updates['s'].shape == () and updates['b'].shape == (4,)
    assert bool(updates['s'] != 0) and bool(jnp.any(updates['b'] != 0))


@parametrize_architectures
@pytest.mark.parametrize('dtype', [jnp.float16, jnp.bfloat16], ids=['float16', 'bfloat16'])
def test_low_precision_params_get_updates_in_their_dtype(optimizer, dtype):
  tx = tx_of(optimizer)
  params = jax.tree.map(lambda x: x.astype(dtype), PARAMS)
  loss, grads = quadratic_value_and_grad(PARAMS)
  grads = jax.tree.map(lambda x: x.astype(dtype), grads)
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(grads, state, params, value=loss)
  assert _signature(updates) == _signature(params)
  assert _all_finite(updates) and _all_finite(state)
  for leaf in jax.tree.leaves(state):  # "optimizer state is always float32"
    assert not jnp.issubdtype(leaf.dtype, jnp.floating) or leaf.dtype == jnp.float32
  # Internal arithmetic is float32: the low-precision update is the float32 one rounded (one rounding, 2 ulps slack).
  f32_params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
  f32_grads = jax.tree.map(lambda x: x.astype(jnp.float32), grads)
  f32_state = tx.init(f32_params)
  for _ in range(2):
    f32_updates, f32_state = tx.update(f32_grads, f32_state, f32_params, value=loss)
  eps = float(jnp.finfo(dtype).eps)
  _assert_tree_allclose(jax.tree.map(lambda x: x.astype(jnp.float32), updates),
                        jax.tree.map(lambda x: x.astype(dtype).astype(jnp.float32), f32_updates),
                        rtol=2 * eps, atol=float(jnp.finfo(dtype).tiny))
