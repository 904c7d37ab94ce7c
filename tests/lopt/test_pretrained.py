"""Tests of the shipped-weights factory `lopt.hierarchical_rnn()`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import pretrained


def _updates(opt, params):
  grads = jax.tree.map(lambda p: 0.1 * p + 0.01, params)
  state = opt.init(params)
  updates, _ = opt.update(grads, state, params)
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


def test_a_config_the_shipped_weights_do_not_fit_warns_and_uses_initial_weights(weights_dir):
  arch = lopt.HierarchicalRNN()
  lopt.save(weights_dir / 'hierarchical_rnn.npz', arch, arch.init(jax.random.PRNGKey(3)))
  with pytest.warns(UserWarning, match='untrained initial weights'):
    opt = lopt.hierarchical_rnn(use_attention=True)
  other = lopt.HierarchicalRNN(use_attention=True)
  jax.tree.map(np.testing.assert_array_equal, _updates(opt, PARAMS),
               _updates(other.transform(other.init(jax.random.PRNGKey(0))), PARAMS))


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
