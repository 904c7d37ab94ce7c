"""Tests of the shipped-weights factory `lopt.hierarchical_rnn()`."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import pretrained

# The loss passed to every update: a shipped optimizer may read it (lopt.loss_brake needs it).
LOSS = jnp.asarray(1.0)


def _updates(opt, params):
  grads = jax.tree.map(lambda p: 0.1 * p + 0.01, params)
  state = opt.init(params)
  updates, _ = opt.update(grads, state, params, value=LOSS)
  return updates


PARAMS = {'w': jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), 'b': jnp.ones(3)}


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
  monkeypatch.setattr(pretrained, 'WEIGHTS_DIR', tmp_path)
  return tmp_path


def test_without_shipped_weights_it_uses_the_initial_weights(weights_dir):
  arch = lopt.HierarchicalRNN()
  expected = _updates(arch.transform(arch.init(jax.random.PRNGKey(0))), PARAMS)
  got = _updates(lopt.hierarchical_rnn(), PARAMS)
  jax.tree.map(np.testing.assert_array_equal, got, expected)


def test_shipped_weights_are_used_by_default_and_explicit_meta_params_win(weights_dir):
  arch = lopt.HierarchicalRNN()
  shipped = jax.tree.map(lambda x: x + 0.05, arch.init(jax.random.PRNGKey(3)))
  lopt.save(weights_dir / 'hierarchical_rnn.npz', arch, shipped)
  jax.tree.map(np.testing.assert_array_equal, _updates(lopt.hierarchical_rnn(), PARAMS),
               _updates(arch.transform(shipped), PARAMS))
  mine = arch.init(jax.random.PRNGKey(9))
  jax.tree.map(np.testing.assert_array_equal, _updates(lopt.hierarchical_rnn(mine), PARAMS),
               _updates(arch.transform(mine), PARAMS))
  loaded_arch, loaded = lopt.load_pretrained('hierarchical_rnn')
  assert loaded_arch == arch
  jax.tree.map(np.testing.assert_array_equal, loaded, shipped)


def _assert_same_updates(a, b, rtol=0.0):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=0.0), a, b)


def test_overrides_that_keep_the_shapes_keep_the_shipped_weights(weights_dir):
  # The shipped config differs from the defaults (lr_init_range), as the real shipped file's does: an override is
  # applied to the shipped config, not to the defaults.
  arch = lopt.HierarchicalRNN(lr_init_range=(1e-4, 1e-2))
  shipped = jax.tree.map(lambda x: x + 0.05, arch.init(jax.random.PRNGKey(3)))
  lopt.save(weights_dir / 'hierarchical_rnn.npz', arch, shipped)
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # no warning either
    same = lopt.hierarchical_rnn(max_log_lr=33.0)  # the shipped value: exactly the shipped optimizer
    clipped = lopt.hierarchical_rnn(max_log_lr=5.0)
  _assert_same_updates(_updates(same, PARAMS), _updates(arch.transform(shipped), PARAMS))
  expected = dataclasses.replace(arch, max_log_lr=5.0).transform(shipped)
  _assert_same_updates(_updates(clipped, PARAMS), _updates(expected, PARAMS))
  # The override takes effect: log learning rates start at ~log(1e-3) and are clipped to [-5, 5].
  assert not np.allclose(_updates(clipped, PARAMS)['w'], _updates(same, PARAMS)['w'])


def test_the_real_shipped_value_override_keeps_the_real_shipped_weights():
  # The reported bug: lopt.hierarchical_rnn(max_log_lr=33.0), the shipped value then, silently ran untrained weights.
  # The value is read from the shipped file, so the test follows the release (releases 7 to 10 have -2.0).
  shipped_arch, _ = lopt.load_pretrained('hierarchical_rnn')
  _assert_same_updates(_updates(lopt.hierarchical_rnn(max_log_lr=shipped_arch.max_log_lr), PARAMS),
                       _updates(lopt.hierarchical_rnn(), PARAMS))


@pytest.mark.parametrize('name', ['hierarchical_rnn', 'mlp_lopt'])
def test_shipped_weights_run_with_bfloat16_state(name):
  shipped_arch, shipped = lopt.load_pretrained(name)
  opt = getattr(lopt, name)(state_dtype=jnp.bfloat16)  # keeps the meta-parameters' shapes: the shipped weights
  expected = dataclasses.replace(shipped_arch, state_dtype='bfloat16').transform(shipped)
  _assert_same_updates(_updates(opt, PARAMS), _updates(expected, PARAMS))
  assert jnp.dtype(jnp.bfloat16) in {x.dtype for x in jax.tree.leaves(opt.init(PARAMS))}


def test_overrides_that_change_the_shapes_raise_naming_the_fields_and_the_explicit_way(weights_dir):
  arch = lopt.HierarchicalRNN()
  lopt.save(weights_dir / 'hierarchical_rnn.npz', arch, arch.init(jax.random.PRNGKey(3)))
  with pytest.raises(ValueError, match=r'use_attention=True changes the shapes of the meta-parameters.*'
                                       r'arch = lopt\.HierarchicalRNN\(use_attention=True, max_log_lr=5\.0\); '
                                       r'tx = arch\.transform\(arch\.init\(jax\.random\.PRNGKey\(0\)\)\)'):
    lopt.hierarchical_rnn(use_attention=True, max_log_lr=5.0)
  with pytest.raises(ValueError, match=r'cell_sizes=\(4, 20, 20\), num_scales=3 changes the shapes'):
    lopt.hierarchical_rnn(cell_sizes=(4, 20, 20), num_scales=3, max_log_lr=5.0)
  # The explicit way gives the untrained architecture, and meta_params= any weights that fit it.
  other = lopt.HierarchicalRNN(use_attention=True)
  mine = other.init(jax.random.PRNGKey(0))
  _assert_same_updates(_updates(lopt.hierarchical_rnn(mine, use_attention=True), PARAMS),
                       _updates(other.transform(mine), PARAMS))


def test_unknown_keyword_raises_listing_the_hyperparameters():
  with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['max_lr'\].*'max_log_lr'"):
    lopt.hierarchical_rnn(max_lr=3.0)


@pytest.mark.parametrize('factory', [lopt.hierarchical_rnn, lopt.mlp_lopt], ids=['hierarchical_rnn', 'mlp_lopt'])
def test_inject_hyperparams_wraps_the_factories(factory):
  injected = optax.inject_hyperparams(factory)()
  _assert_same_updates(_updates(injected, PARAMS), _updates(factory(), PARAMS))


@pytest.mark.parametrize('jit', [False, True], ids=['eager', 'jit'])
def test_inject_hyperparams_numeric_fields_are_injectable(jit):
  # MLPLOpt's update is linear in step_multiplier: changing the injected value mid-training scales the update.
  # Injecting the shipped value gives exactly the shipped optimizer.
  shipped_multiplier = lopt.load_pretrained('mlp_lopt')[0].step_multiplier
  injected = optax.inject_hyperparams(lopt.mlp_lopt)(step_multiplier=shipped_multiplier)
  update = jax.jit(injected.update) if jit else injected.update
  grads = jax.tree.map(lambda p: 0.1 * p + 0.01, PARAMS)
  state = injected.init(PARAMS)
  assert set(state.hyperparams) == {'step_multiplier'}
  first, state = update(grads, state, PARAMS, value=LOSS)
  expected = _updates(lopt.mlp_lopt(), PARAMS)
  _assert_same_updates(first, expected, rtol=1e-6)
  state.hyperparams['step_multiplier'] = jnp.asarray(4e-3)
  second, _ = update(grads, state, PARAMS, value=LOSS)
  reference_tx = lopt.mlp_lopt(step_multiplier=4e-3)
  _, reference_state = reference_tx.update(grads, reference_tx.init(PARAMS), PARAMS, value=LOSS)
  _assert_same_updates(second, reference_tx.update(grads, reference_state, PARAMS, value=LOSS)[0], rtol=1e-6)

  # The HRNN's clip, traced under jit, equals the factory given the same value.
  hrnn = optax.inject_hyperparams(lopt.hierarchical_rnn)(max_log_lr=5.0)
  hrnn_update = jax.jit(hrnn.update) if jit else hrnn.update
  _assert_same_updates(hrnn_update(grads, hrnn.init(PARAMS), PARAMS, value=LOSS)[0],
                       _updates(lopt.hierarchical_rnn(max_log_lr=5.0), PARAMS), rtol=1e-6)


def test_inject_hyperparams_rejects_shape_setting_fields_and_names_the_fix():
  with pytest.raises(TypeError, match=r"num_scales got an array.*static_args=\('num_scales',\)"):
    optax.inject_hyperparams(lopt.hierarchical_rnn)(num_scales=4).init(PARAMS)
  tx = optax.inject_hyperparams(lopt.hierarchical_rnn, static_args=('num_scales',))(num_scales=4)
  _assert_same_updates(_updates(tx, PARAMS), _updates(lopt.hierarchical_rnn(), PARAMS))


def test_load_pretrained_names_what_is_missing(weights_dir):
  with pytest.raises(lopt.LoptFileError, match="no meta-trained weights are shipped for 'mlp_lopt'"):
    lopt.load_pretrained('mlp_lopt')


def test_factory_output_is_an_optax_transformation_that_chains():
  opt = optax.chain(optax.clip_by_global_norm(1.0), lopt.hierarchical_rnn())
  updates = _updates(opt, PARAMS)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def test_factory_names_are_only_the_factories_and_the_modules_live_in_lopt_architectures():
  # One name, one thing: lopt.hierarchical_rnn is the factory function and no module of lopt shares its name (the
  # module is lopt.architectures.hierarchical_rnn), so `import lopt.mlp_lopt` no longer silently yields a function.
  import importlib
  import pkgutil
  top_level = {m.name for m in pkgutil.iter_modules(lopt.__path__)}
  for name in ('hierarchical_rnn', 'mlp_lopt'):
    factory = getattr(lopt, name)
    assert callable(factory) and factory.__module__ == 'lopt.pretrained'
    assert name not in top_level
    assert importlib.import_module(f'lopt.architectures.{name}').__file__.endswith(f'lopt/architectures/{name}.py')
