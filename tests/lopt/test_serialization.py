"""Tests of lopt.save / lopt.load: exact round trips for every architecture, and one distinct error per bad file."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import base
from lopt import serialization
from lopt.architectures import BUILTIN_ARCHITECTURES


class _ScaledSGDState(NamedTuple):
  momentum: optax.Updates


@dataclasses.dataclass(frozen=True)
class ScaledSGD(base.LearnedOptimizer):
  """Test-only architecture: momentum SGD with a learnable log learning rate and per-feature weights.

  ``u = -exp(log_lr) * (w_0 * m + w_1 * sign(g) + ...)`` over the features ``(m, sign(g), g, ...)`` truncated to
  ``num_features``; ``num_features`` changes a leaf's shape, which the config-mismatch tests rely on.
  """
  name = 'scaled_sgd'
  num_features: int = 2
  decay: float = 0.9
  dtype: str = 'float32'

  def init(self, key):
    return {
        'log_lr': jnp.asarray(np.log(0.1), self.dtype),
        'head': {'feature_weights': jax.random.uniform(key, (self.num_features,), self.dtype, 0.5, 1.5)},
    }

  def transform(self, meta_params):
    def init_fn(params):
      return _ScaledSGDState(jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params))

    def update_fn(grads, state, params=None, **extra_args):
      del extra_args
      base.check_inputs(grads, params, 'ScaledSGD')
      momentum = jax.tree.map(lambda m, g: self.decay * m + jnp.asarray(g, jnp.float32), state.momentum, grads)
      weights = meta_params['head']['feature_weights'].astype(jnp.float32)
      lr = jnp.exp(meta_params['log_lr'].astype(jnp.float32))

      def leaf_update(m, g, p):
        g = jnp.asarray(g, jnp.float32)
        features = jnp.stack([m, jnp.sign(g), g, g * g][:self.num_features])
        return (-lr * jnp.tensordot(weights, features, axes=1)).astype(jnp.result_type(p))

      return jax.tree.map(leaf_update, momentum, grads, params), _ScaledSGDState(momentum)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


TOY = {ScaledSGD.name: ScaledSGD}


def _perturbed_meta_params(optimizer, seed=0):
  """Meta-parameters away from init, so that a loader that silently re-initialised would fail the round trip."""
  meta_params = optimizer.init(jax.random.key(seed))
  leaves, treedef = jax.tree.flatten(meta_params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(treedef, [
      (x + 0.01 * jax.random.normal(k, jnp.shape(x))).astype(jnp.result_type(x)) for x, k in zip(leaves, keys)])


_PARAMS = {'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), 'b': jnp.linspace(0.5, -0.5, 4), 's': jnp.asarray(0.3)}


@jax.jit
def _quadratic_grads(params):
  return jax.grad(lambda p: sum(jnp.sum(jnp.square(x - 0.1)) for x in jax.tree.leaves(p)))(params)


def _run_steps(optimizer, meta_params, num_steps=3):
  """Updates from ``num_steps`` steps on a quadratic; one compile per (architecture, config) shared by both calls."""
  step = _jitted_step(optimizer)
  tx = optimizer.transform(meta_params)
  params, state, all_updates = _PARAMS, tx.init(_PARAMS), []
  for i in range(num_steps):
    updates, state = step(meta_params, _quadratic_grads(params), state, params, jnp.asarray(1.0 / (i + 1)))
    params = optax.apply_updates(params, updates)
    all_updates.append(updates)
  return all_updates


_STEP_CACHE = {}


def _jitted_step(optimizer):
  if optimizer not in _STEP_CACHE:
    _STEP_CACHE[optimizer] = jax.jit(
        lambda mp, g, s, p, loss: optimizer.transform(mp).update(g, s, p, value=loss, valid_value=loss))
  return _STEP_CACHE[optimizer]


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


# ---------------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize('name', sorted(BUILTIN_ARCHITECTURES))
def test_round_trip_gives_identical_updates_for_every_architecture(tmp_path, name):
  optimizer = BUILTIN_ARCHITECTURES[name]()
  meta_params = _perturbed_meta_params(optimizer)
  path = tmp_path / f'{name}.npz'
  serialization.save(path, optimizer, meta_params)
  loaded_optimizer, loaded_meta_params = serialization.load(path)
  assert loaded_optimizer == optimizer and type(loaded_optimizer) is type(optimizer)
  _assert_trees_equal(loaded_meta_params, meta_params)
  _assert_trees_equal(_run_steps(loaded_optimizer, loaded_meta_params), _run_steps(optimizer, meta_params))


@pytest.mark.parametrize('optimizer', [ScaledSGD(), ScaledSGD(num_features=4, decay=0.5), ScaledSGD(dtype='bfloat16')],
                         ids=['default', 'config', 'bfloat16'])
def test_round_trip_of_toy_keeps_config_and_dtype(tmp_path, optimizer):
  meta_params = _perturbed_meta_params(optimizer)
  serialization.save(tmp_path / 'toy.npz', optimizer, meta_params)
  loaded_optimizer, loaded_meta_params = serialization.load(tmp_path / 'toy.npz', architectures=TOY)
  assert loaded_optimizer == optimizer
  _assert_trees_equal(loaded_meta_params, meta_params)
  _assert_trees_equal(_run_steps(loaded_optimizer, loaded_meta_params), _run_steps(optimizer, meta_params))


def test_file_is_plain_npz_with_path_keys_and_json_header(tmp_path):
  optimizer = ScaledSGD(num_features=3)
  meta_params = _perturbed_meta_params(optimizer)
  serialization.save(tmp_path / 'toy.npz', optimizer, meta_params)
  with np.load(tmp_path / 'toy.npz', allow_pickle=False) as npz:
    assert sorted(npz.files) == sorted([serialization.HEADER_KEY, "['head']['feature_weights']", "['log_lr']"])
    np.testing.assert_array_equal(npz["['head']['feature_weights']"], meta_params['head']['feature_weights'])
    header = json.loads(npz[serialization.HEADER_KEY].tobytes())
  assert header['architecture'] == 'scaled_sgd'
  assert header['config'] == {'num_features': 3, 'decay': 0.9, 'dtype': 'float32'}
  assert header['format_version'] == serialization.FORMAT_VERSION
  assert header['leaves'] == [{'path': "['head']['feature_weights']", 'shape': [3], 'dtype': 'float32'},
                              {'path': "['log_lr']", 'shape': [], 'dtype': 'float32'}]


def test_save_overwrites_atomically_and_leaves_no_temporary_file(tmp_path, monkeypatch):
  path = tmp_path / 'toy.npz'
  first = _perturbed_meta_params(ScaledSGD(), seed=0)
  serialization.save(path, ScaledSGD(), first)
  serialization.save(path, ScaledSGD(), _perturbed_meta_params(ScaledSGD(), seed=5))  # plain overwrite works
  serialization.save(path, ScaledSGD(), first)

  def failing_savez(file, **members):
    file.write(b'PK\x03\x04 half a file')
    raise OSError('disk full')

  monkeypatch.setattr(np, 'savez', failing_savez)
  with pytest.raises(OSError, match='disk full'):
    serialization.save(path, ScaledSGD(), _perturbed_meta_params(ScaledSGD(), seed=7))
  monkeypatch.undo()
  assert os.listdir(tmp_path) == ['toy.npz']
  _assert_trees_equal(serialization.load(path, architectures=TOY)[1], first)


@pytest.mark.parametrize('umask', [0o022, 0o077, 0o002])
def test_saved_file_gets_the_permissions_of_any_new_file(tmp_path, umask):
  # 0o666 less the umask, as open() gives; mkstemp's 0o600 made saved optimizers unreadable to the group.
  previous = os.umask(umask)
  try:
    serialization.save(tmp_path / 'toy.npz', ScaledSGD(), ScaledSGD().init(jax.random.key(0)))
  finally:
    os.umask(previous)
  assert (tmp_path / 'toy.npz').stat().st_mode & 0o777 == 0o666 & ~umask
  assert os.listdir(tmp_path) == ['toy.npz']


# ------------------------------------------------------------------------------------------------ errors on save


def test_save_rejects_meta_params_of_another_shape_naming_the_leaf(tmp_path):
  meta_params = ScaledSGD(num_features=3).init(jax.random.key(0))
  with pytest.raises(ValueError, match=r"\['head'\]\['feature_weights'\] has shape \(3,\).*\(2,\)"):
    serialization.save(tmp_path / 'toy.npz', ScaledSGD(), meta_params)
  assert not os.listdir(tmp_path)


def test_save_rejects_non_architecture(tmp_path):
  with pytest.raises(TypeError, match='must be a lopt.LearnedOptimizer'):
    serialization.save(tmp_path / 'x.npz', optax.adam(1e-3), {})


# ------------------------------------------------------------------------------------------------ errors on load


@pytest.fixture
def saved(tmp_path):
  """A valid file of ScaledSGD(num_features=2) and its meta-parameters."""
  path = tmp_path / 'toy.npz'
  meta_params = _perturbed_meta_params(ScaledSGD())
  serialization.save(path, ScaledSGD(), meta_params)
  return path, meta_params


def _rewrite(path, edit_header=None, edit_members=None):
  """Rewrites a saved file through numpy, bypassing lopt.save's checks, to fabricate bad files."""
  with np.load(path, allow_pickle=False) as npz:
    members = {k: npz[k] for k in npz.files}
  header = json.loads(members[serialization.HEADER_KEY].tobytes())
  if edit_header:
    edit_header(header)
  members[serialization.HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), np.uint8)
  if edit_members:
    edit_members(members)
  with open(path, 'wb') as f:
    np.savez(f, **members)


def test_missing_file(tmp_path):
  path = tmp_path / 'nope.npz'
  with pytest.raises(serialization.LoptFileNotFoundError, match=r"no such file .*nope\.npz"):
    serialization.load(path, architectures=TOY)
  with pytest.raises(FileNotFoundError):  # also catchable as the built-in exception
    serialization.load(path, architectures=TOY)


@pytest.mark.parametrize('keep_fraction', [0.5, 0.95])
def test_truncated_file(saved, keep_fraction):
  path, _ = saved
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * keep_fraction)])
  with pytest.raises(serialization.LoptFileError, match=r"toy\.npz' is truncated"):
    serialization.load(path, architectures=TOY)


def test_empty_file(saved):
  path, _ = saved
  path.write_bytes(b'')
  with pytest.raises(serialization.LoptFileError, match=r"toy\.npz' is empty"):
    serialization.load(path, architectures=TOY)


def test_flipped_byte_in_a_leaf_fails_the_crc(saved):
  path, meta_params = saved
  data = bytearray(path.read_bytes())
  offset = data.find(np.asarray(meta_params['head']['feature_weights']).tobytes())
  assert offset > 0
  data[offset + 1] ^= 0x10
  path.write_bytes(bytes(data))
  with pytest.raises(serialization.LoptFileError,
                     match=r"toy\.npz' is corrupted: member \"\['head'\]\['feature_weights'\]\" .*CRC"):
    serialization.load(path, architectures=TOY)


def test_leaf_edited_without_header_fails_the_checksum(saved):
  path, _ = saved
  _rewrite(path, edit_members=lambda m: m.update({"['log_lr']": m["['log_lr']"] + 1.0}))
  with pytest.raises(serialization.LoptFileError, match=r"toy\.npz' is corrupted: the SHA-256"):
    serialization.load(path, architectures=TOY)


def test_header_and_archive_disagree(saved):
  path, _ = saved
  _rewrite(path, edit_members=lambda m: m.pop("['log_lr']"))
  with pytest.raises(serialization.LoptFileError, match=r"corrupted: the header lists leaf \['log_lr'\]"):
    serialization.load(path, architectures=TOY)
  _rewrite(path, edit_members=lambda m: m.update({"['log_lr']": np.zeros((), np.float64)}))
  with pytest.raises(serialization.LoptFileError, match=r"corrupted: leaf \['log_lr'\] has dtype float64 but the "
                     'header says float32'):
    serialization.load(path, architectures=TOY)
  _rewrite(path, edit_members=lambda m: m.update({"['log_lr']": np.zeros((), np.float32), 'stray': np.zeros(2)}))
  with pytest.raises(serialization.LoptFileError, match=r"corrupted: the archive has member\(s\) \['stray'\]"):
    serialization.load(path, architectures=TOY)


def test_not_a_lopt_file(tmp_path):
  text = tmp_path / 'notes.txt'
  text.write_text('hello')
  with pytest.raises(serialization.LoptFileError, match=r"notes\.txt' is not a lopt file \(not a .npz"):
    serialization.load(text, architectures=TOY)
  plain = tmp_path / 'plain.npz'
  np.savez(plain, w=np.ones(3))
  with pytest.raises(serialization.LoptFileError, match=r"plain\.npz' is not a lopt file: it is a .npz without"):
    serialization.load(plain, architectures=TOY)


def test_header_of_another_format(saved):
  path, _ = saved
  _rewrite(path, edit_header=lambda h: h.update(format='something-else'))
  with pytest.raises(serialization.LoptFileError, match=r"toy\.npz' is not a lopt file: its header"):
    serialization.load(path, architectures=TOY)


def test_unsupported_format_version(saved):
  path, _ = saved
  _rewrite(path, edit_header=lambda h: h.update(format_version=99))
  with pytest.raises(serialization.LoptFileError, match=r"toy\.npz' has format version 99, but this lopt reads "
                     f'version {serialization.FORMAT_VERSION} only'):
    serialization.load(path, architectures=TOY)


def test_unknown_architecture_lists_known_ones(saved):
  path, _ = saved
  with pytest.raises(serialization.LoptFileError,
                     match=r"architecture 'scaled_sgd', which is not known. Known architectures: \['other'\]"):
    serialization.load(path, architectures={'other': ScaledSGD})


def test_default_mapping_is_the_builtin_one(saved):
  path, _ = saved
  with pytest.raises(serialization.LoptFileError, match=rf'Known architectures: {sorted(BUILTIN_ARCHITECTURES)}'
                     .replace('[', r'\[').replace(']', r'\]')):
    serialization.load(path)


def test_config_field_the_architecture_no_longer_has(saved):
  path, _ = saved
  _rewrite(path, edit_header=lambda h: h['config'].update(removed_switch=True))
  with pytest.raises(serialization.LoptFileError,
                     match=r"config that ScaledSGD no longer accepts: .*\['removed_switch'\]"):
    serialization.load(path, architectures=TOY)


def test_config_written_before_a_field_existed_loads_with_its_default(saved):
  # Fields added later (the HRNN's min_gradient_rms, mean_square_eps) default to the behaviour files had before, so
  # a file without them still loads and behaves as it did.
  path, _ = saved
  _rewrite(path, edit_header=lambda h: h['config'].pop('decay'))
  optimizer, _ = serialization.load(path, architectures=TOY)
  assert optimizer == ScaledSGD()


def test_config_whose_leaf_shape_no_longer_matches(saved):
  path, _ = saved
  _rewrite(path, edit_header=lambda h: h['config'].update(num_features=3))
  with pytest.raises(serialization.LoptFileError,
                     match=r"does not match ScaledSGD\(num_features=3.*leaf \['head'\]\['feature_weights'\] has "
                     r'shape \(2,\) dtype float32 but the architecture makes shape \(3,\)'):
    serialization.load(path, architectures=TOY)


@dataclasses.dataclass(frozen=True)
class _ScaledSGDWithBias(ScaledSGD):
  """A later version of ScaledSGD (same name) that grew a leaf."""

  def init(self, key):
    return {**super().init(key), 'bias': jnp.zeros(())}


@dataclasses.dataclass(frozen=True)
class _ScaledSGDWithoutHead(ScaledSGD):
  """A later version of ScaledSGD (same name) that dropped a subtree."""

  def init(self, key):
    return {'log_lr': super().init(key)['log_lr']}


def test_leaf_missing_from_file(saved):
  path, _ = saved
  with pytest.raises(serialization.LoptFileError, match=r"leaf \['bias'\] is missing"):
    serialization.load(path, architectures={'scaled_sgd': _ScaledSGDWithBias})


def test_leaf_extra_in_file(saved):
  path, _ = saved
  with pytest.raises(serialization.LoptFileError, match=r"leaf \['head'\]\['feature_weights'\] is unexpected"):
    serialization.load(path, architectures={'scaled_sgd': _ScaledSGDWithoutHead})
