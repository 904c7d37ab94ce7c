"""RNNMLPLOpt (Metz et al. 2020, SPEC 4): features against numpy, the clipper, loss keywords, meta-gradients."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import features
from lopt.architectures import rnn_mlp_lopt
from lopt.architectures.rnn_mlp_lopt import RNNMLPLOpt

PARAMS = {'w': jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4),
          'b': jnp.linspace(0.5, -0.25, 4, dtype=jnp.float32), 's': jnp.asarray(0.75, jnp.float32)}
OPTIMIZER = RNNMLPLOpt()


def _tx():
  return OPTIMIZER.transform(OPTIMIZER.init(jax.random.key(0)))


def _grads(scale=1.0, seed=1):
  leaves, treedef = jax.tree.flatten(PARAMS)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [scale * jax.random.normal(k, jnp.shape(x)) for k, x in zip(keys, leaves)])


def _tree_allclose(a, b, **kwargs):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kwargs)


def _tree_differs(a, b, min_relative=1e-3):
  return any(float(jnp.max(jnp.abs(x - y))) > min_relative * float(jnp.max(jnp.abs(y))) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --------------------------------------------------------------------------------------------- features vs numpy


def test_loss_features_match_numpy_emas():
  losses = [3.0, 2.5, 2.7, 1.9, 2.0, 1.6]
  valid = {1: 2.9, 4: 2.4}  # validation losses arrive only at some steps
  state = _tx().init(PARAMS)
  mean = var = valid_mean = 0.0
  n = n_valid = 0
  for t, loss in enumerate(losses):
    # Reference (float64): EMAs with bias correction; the variance EMA uses the previous corrected mean.
    previous = mean / (1 - 0.9 ** n) if n else loss
    mean, var, n = 0.9 * mean + 0.1 * loss, 0.9 * var + 0.1 * (loss - previous) ** 2, n + 1
    mu, s = mean / (1 - 0.9 ** n), var / (1 - 0.9 ** n)
    want_train = np.clip((loss - mu) / math.sqrt(s + 1e-8), -5, 5)
    if t in valid:
      valid_mean, n_valid = 0.95 * valid_mean + 0.05 * valid[t], n_valid + 1
    want_valid = np.clip((valid_mean / (1 - 0.95 ** n_valid) - mu) / math.sqrt(s + 1e-8), -5, 5) if n_valid else 0.0

    train_feat, valid_feat, stats = rnn_mlp_lopt.loss_features(state, jnp.float32(loss), valid.get(t), 0.9, 0.95)
    state = state._replace(train_loss_mean=stats[0], train_loss_var=stats[1], train_loss_count=stats[2],
                           valid_loss_mean=stats[3], valid_loss_count=stats[4])
    # float32 EMAs of O(1) losses, divided by a standard deviation >= 0.05: errors ~1e-6 relative, ~1e-5 absolute.
    np.testing.assert_allclose(float(train_feat), want_train, rtol=1e-5, atol=1e-5, err_msg=f'step {t}')
    np.testing.assert_allclose(float(valid_feat), want_valid, rtol=1e-5, atol=1e-5, err_msg=f'step {t}')


def test_tensor_and_parameter_features_match_numpy():
  rng = np.random.default_rng(0)
  shapes = [(3, 4), (4,), ()]
  sizes = (12, 4, 1)
  g, w = rng.normal(size=17), rng.normal(size=17)
  m, v = 0.3 * rng.normal(size=(5, 17)), rng.uniform(0.01, 2.0, size=(5, 17))
  got = np.asarray(rnn_mlp_lopt.tensor_features(*map(jnp.asarray, (g, w, m, v)), sizes, shapes, jnp.float32(0.5),
                                                jnp.float32(-2.0)))
  got_params = np.asarray(rnn_mlp_lopt.parameter_features(*map(jnp.asarray, (g, w, m, v)), sizes))
  cl = lambda x: np.clip(np.log(1e-8 + abs(x)), -5, 5)
  start = 0
  for i, (shape, n) in enumerate(zip(shapes, sizes)):
    sl = slice(start, start + n)
    start += n
    dims = list(shape) + [1] * (4 - len(shape))
    want = [cl(m[:, sl].mean()), np.sign(m[:, sl].mean()), cl(m[:, sl].var()),
            cl(v[:, sl].mean()), np.sign(v[:, sl].mean()), cl(v[:, sl].var()),
            cl(w[sl].mean()), np.sign(w[sl].mean()), cl(w[sl].var()),
            cl(np.linalg.norm(w[sl])), cl(np.linalg.norm(g[sl])),
            1.0 if shape == () else -1.0, *[math.log(d) - 1 for d in dims], 0.5, -2.0]
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6, err_msg=f'tensor {shape}')  # float32 round-off

    rsqrt = 1 / np.sqrt(v[:, sl] + 1e-6)
    x = np.concatenate([g[None, sl], w[None, sl], np.log(np.abs(w[None, sl]) + 1e-8), m[:, sl], m[:, sl] * rsqrt,
                        v[:, sl], rsqrt])
    x = x / np.sqrt(1e-5 + np.mean(x * x, axis=1, keepdims=True))
    np.testing.assert_allclose(got_params[:, sl], x, rtol=1e-5, atol=1e-6, err_msg=f'tensor {shape}')


def test_dynamic_gradient_clipper():
  g1 = jnp.asarray([0.3, -0.4, 1.2, 0.0], jnp.float32)
  # First step: no history, no clipping; the RMS EMA becomes 0.01 * rms(g1).
  clipped, ema = rnn_mlp_lopt.clip_gradients(g1, jnp.float32(0.0), jnp.int32(0), 0.99, 10.0)
  rms1 = math.sqrt(np.mean(np.square(np.asarray(g1, np.float64))))
  np.testing.assert_array_equal(clipped, g1)
  np.testing.assert_allclose(float(ema), 0.01 * rms1, rtol=1e-6)
  # Second step: the bias-corrected EMA is rms(g1), so elements are clipped to +-10 rms(g1); inf is not clipped.
  g2 = jnp.asarray([1e3, -1e3, 0.5, jnp.inf], jnp.float32)
  clipped, _ = rnn_mlp_lopt.clip_gradients(g2, ema, jnp.int32(1), 0.99, 10.0)
  np.testing.assert_allclose(np.asarray(clipped[:3]), [10 * rms1, -10 * rms1, 0.5], rtol=1e-6)
  assert np.isposinf(float(clipped[3]))


# --------------------------------------------------------------------------------------------- loss keywords


def test_loss_keywords_absent_present_and_unknown():
  tx = _tx()
  update = jax.jit(lambda g, s, **kw: tx.update(g, s, PARAMS, **kw))
  state0 = tx.init(PARAMS)
  g1, g2 = _grads(seed=1), _grads(seed=2)

  # First step: one loss gives a training feature of 0 (the loss equals its own mean), so the update is the one of
  # a step without loss; but only the step that saw the loss records it.
  u_none, s_none = update(g1, state0)
  u_loss, s_loss = update(g1, state0, value=jnp.float32(2.0))
  _tree_allclose(u_loss, u_none, rtol=1e-6, atol=1e-12)
  assert int(s_none.train_loss_count) == 0 and float(s_none.train_loss_mean) == 0.0
  assert int(s_loss.train_loss_count) == 1

  # A validation loss changes the update (valid feature = (3 - 2) / sqrt(0 + 1e-8), clipped to 5); unknown keywords
  # change nothing.
  u_valid, s_valid = update(g1, state0, value=jnp.float32(2.0), valid_value=jnp.float32(3.0))
  assert _tree_differs(u_valid, u_loss)
  u_foo, s_foo = update(g1, state0, value=jnp.float32(2.0), valid_value=jnp.float32(3.0), foo=jnp.float32(7.0))
  _tree_allclose(u_foo, u_valid, rtol=0, atol=0)
  _tree_allclose(s_foo, s_valid, rtol=0, atol=0)

  # Second step: a training loss away from its history changes the update compared with no loss.
  u2_loss, _ = update(g2, s_valid, value=jnp.float32(1.0))
  u2_none, s2_none = update(g2, s_valid)
  assert _tree_differs(u2_loss, u2_none)
  assert float(s2_none.train_loss_mean) == float(s_valid.train_loss_mean)  # EMA untouched without value

  # Without valid_value the last validation EMA keeps feeding the feature: the same update as repeating the
  # validation loss 3.0 (whose bias-corrected EMA stays 3.0), up to float rounding of that EMA.
  u2_repeat, s2_repeat = update(g2, s_valid, value=jnp.float32(1.0), valid_value=jnp.float32(3.0))
  _tree_allclose(u2_loss, u2_repeat, rtol=1e-5, atol=1e-10)
  assert int(s2_repeat.valid_loss_count) == 2


# --------------------------------------------------------------------------------------------- sizes, gradients


def test_meta_parameter_count_and_input_widths():
  assert OPTIMIZER.num_lstm_inputs == 52 and OPTIMIZER.num_mlp_inputs == 54
  lstm = 4 * (52 * 64 + 64 * 64 + 64)
  mixing = (64 * 17 + 17) + (64 * 18 + 18)
  mlp = (54 * 32 + 32) + (32 * 32 + 32) + (32 * 18 + 18)
  meta_params = OPTIMIZER.init(jax.random.key(0))
  assert sum(x.size for x in jax.tree.leaves(meta_params)) == lstm + mixing + mlp == 35637
  state = _tx().init(PARAMS)
  assert state.momentum.shape == state.second_moment.shape == (5, 17)  # 10 floats per parameter
  assert state.lstm_hidden.shape == (3, 64) and state.mlp_to_lstm.shape == (3, 16)


def test_meta_gradient_through_scan_reaches_every_component():
  # Over 4 steps every component influences the final loss: the MLP directly, the LSTM through lstm_to_mlp, and
  # lstm_to_lstm / the MLP's extra outputs through the next step's LSTM input. A zero-initialised bias (zero norm)
  # and a zero-size leaf must not turn the meta-gradient into NaN.
  loss_fn = lambda p: sum(jnp.sum(jnp.square(x - 0.1)) for x in jax.tree.leaves(p))
  params0 = {**PARAMS, 'zero_bias': jnp.zeros(3), 'empty': jnp.zeros((0, 2))}

  def meta_loss(meta_params):
    tx = OPTIMIZER.transform(meta_params)

    def step(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, state = tx.update(grads, state, params, value=loss, valid_value=1.1 * loss)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params0, tx.init(params0)), length=4)
    return loss_fn(params)

  grads = jax.jit(jax.grad(meta_loss))(OPTIMIZER.init(jax.random.key(0)))
  for part in ('lstm', 'lstm_to_mlp', 'lstm_to_lstm', 'mlp'):
    leaves = jax.tree.leaves(grads[part])
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves), part
    assert any(bool(jnp.any(x != 0)) for x in leaves), f'no meta-gradient reaches {part}'


@pytest.mark.parametrize('field, value', [('lstm_hidden_size', 0), ('mlp_hidden_sizes', (32, -1)),
                                          ('decays', ()), ('clip_decay', 1.0), ('valid_loss_decay', 0.0),
                                          ('clip_mult', 0.0)])
def test_invalid_hyperparameter_raises_naming_it(field, value):
  with pytest.raises(ValueError, match=field):
    RNNMLPLOpt(**{field: value})


def test_flat_layout_helpers_handle_empty_segments():
  x = jnp.arange(10.0).reshape(2, 5)
  sizes = (2, 0, 3)
  means = features.segment_mean(x, sizes)
  np.testing.assert_allclose(means, [[0.5, 0.0, 3.0], [5.5, 0.0, 8.0]])
  np.testing.assert_allclose(features.segment_broadcast(means, sizes), [[0.5, 0.5, 3, 3, 3], [5.5, 5.5, 8, 8, 8]])
