"""Tests of the shared input checks and helpers in lopt/base.py."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from lopt import base


def test_check_inputs_requires_params():
  with pytest.raises(ValueError, match='needs `params`'):
    base.check_inputs({'w': jnp.ones(2)}, None, 'Opt')


def test_check_inputs_rejects_structure_mismatch():
  with pytest.raises(ValueError, match='different tree structures'):
    base.check_inputs({'w': jnp.ones(2)}, {'v': jnp.ones(2)}, 'Opt')


@pytest.mark.parametrize('dtype', [jnp.int32, jnp.bool_])
def test_check_inputs_rejects_non_float_leaf_and_names_it(dtype):
  params = {'layer': {'w': jnp.ones(2), 'count': jnp.zeros(2, dtype)}}
  with pytest.raises(TypeError, match=r"\['layer'\]\['count'\].*optax.masked"):
    base.check_inputs(params, params, 'Opt')


def test_check_inputs_rejects_shape_mismatch():
  with pytest.raises(ValueError, match=r"gradient \['w'\] has shape \(3,\)"):
    base.check_inputs({'w': jnp.ones(3)}, {'w': jnp.ones(2)}, 'Opt')


def test_check_inputs_accepts_none_leaves_and_low_precision():
  params = {'a': None, 'b': jnp.ones(2, jnp.bfloat16), 'c': jnp.ones((), jnp.float16)}
  base.check_inputs(params, params, 'Opt')


def test_updates_like_restores_structure_shape_and_dtype():
  params = {'a': None, 'b': jnp.ones((2, 3), jnp.bfloat16), 'c': jnp.ones((), jnp.float32)}
  updates = base.updates_like(params, [jnp.arange(6.0), jnp.asarray([7.0])])
  assert updates['a'] is None
  assert updates['b'].dtype == jnp.bfloat16 and updates['b'].shape == (2, 3)
  assert updates['c'].shape == () and float(updates['c']) == 7.0


def test_safe_mean_is_zero_over_empty_and_mean_otherwise():
  assert float(base.safe_mean(jnp.zeros((0, 4)))) == 0.0
  np.testing.assert_allclose(base.safe_mean(jnp.arange(6.0).reshape(2, 3), axis=1), [1.0, 4.0])


@dataclasses.dataclass(frozen=True)
class _Toy(base.LearnedOptimizer):
  name = 'toy'
  sizes: tuple[int, ...] = (1, 2)
  rate: float = 0.5

  def init(self, key):
    return {}

  def transform(self, meta_params):
    raise NotImplementedError


def test_config_round_trip_and_unknown_field_error():
  toy = _Toy(sizes=(3, 4), rate=0.1)
  assert toy.config() == {'sizes': [3, 4], 'rate': 0.1}
  assert _Toy.from_config(toy.config()) == toy
  with pytest.raises(ValueError, match=r"no hyperparameter\(s\) \['ratee'\]"):
    _Toy.from_config({'ratee': 1.0})
