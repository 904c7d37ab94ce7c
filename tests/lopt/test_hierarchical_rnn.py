"""HierarchicalRNN (Wichrowska et al. 2017): agreement with an independent numpy reference of docs/algorithms.md §2,
and behaviour.

The reference (hrnn_numpy_reference.py) runs in float64 per tensor; the library runs in float32 on one flat block.
Tolerances: the features are O(1) values (asinh-scaled momenta, their products, log-ratios of mean squares up to
~|log 1e-16| = 37 in magnitude, log learning rates ~10) produced by a chain of ~10 float32 operations, so the float32
rounding error is ~10 ulp of the largest intermediate: rtol 1e-5 relative to each tensor's largest value (an
absolute 4e-5 for the relative log mean squares, differences of logs of size ~30). The updates go further through
three GRUs, an RMS normalisation and an exp; their relative error is ~1e-5 and we allow rtol 1e-4 relative to the
largest update of the tensor, a margin of ~10x over what we measure. Deliberately breaking the implementation
(e.g. feeding the global GRU the last tensor's state in 'mean' mode) fails these tests.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hrnn_numpy_reference as ref  # tests/lopt is on sys.path (pytest's rootdir-relative import of test modules)
from lopt import gru
from lopt.architectures.hierarchical_rnn import HierarchicalRNN, HierarchicalRNNState

SHAPES = {'b': (5,), 's': (), 'w': (3, 4)}  # jax.tree.leaves order: b, s, w (sorted keys)
NUM_PARAMS = 5 + 1 + 12
GRAD_SCALES = {'b': 1e-3, 's': 10.0, 'w': 1.0}  # very different gradient scales per tensor


def make_params(key=0):
  keys = jax.random.split(jax.random.PRNGKey(key), len(SHAPES))
  return {name: jax.random.normal(k, shape) for k, (name, shape) in zip(keys, sorted(SHAPES.items()))}


def make_grads(step):
  keys = jax.random.split(jax.random.PRNGKey(100 + step), len(SHAPES))
  return {name: GRAD_SCALES[name] * jax.random.normal(k, shape)
          for k, (name, shape) in zip(keys, sorted(SHAPES.items()))}


def perturbed_meta(opt, key=1):
  """Initial meta-parameters plus noise, so that the zero-initialised readouts (log lr) and every path matter."""
  meta = opt.init(jax.random.PRNGKey(0))
  leaves, treedef = jax.tree.flatten(meta)
  keys = jax.random.split(jax.random.PRNGKey(key), len(leaves))
  return jax.tree.unflatten(treedef, [v + 0.1 * jax.random.normal(k, jnp.shape(v)) for k, v in zip(keys, leaves)])


def reference_state(opt, meta, params, state):
  offsets = np.cumsum([0] + [math.prod(s) for _, s in sorted(SHAPES.items())])
  log_lr = np.asarray(state.log_lr, np.float64)
  log_lrs = [log_lr[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
  return ref.init_state(ref.to_numpy(meta), [np.asarray(p) for p in jax.tree.leaves(params)], log_lrs,
                        use_attention=opt.use_attention)


def assert_close_per_tensor(got_flat, expected_per_tensor, rtol, atol=None):
  """Compares a flat [..., N] array with per-tensor [n, ...] reference arrays, each relative to its tensor's scale."""
  start = 0
  for expected in expected_per_tensor:
    expected = np.asarray(expected).reshape(np.asarray(expected).shape[0] if np.ndim(expected) else 1, -1)
    n = expected.shape[0]
    got = np.asarray(got_flat)[..., start:start + n]
    got = got.T if got.ndim == 2 else got[:, None]
    scale_atol = rtol * np.abs(expected).max() + 1e-30
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=scale_atol if atol is None else atol)
    start += n


# ----------------------------------------------------------------------------------------------------------------------
# Configuration and meta-parameters.

@pytest.mark.parametrize('field, value, message', [
    ('cell_sizes', (10, 20), 'cell_sizes'),
    ('cell_sizes', (10, 0, 20), 'cell_sizes'),
    ('num_scales', 0, 'num_scales'),
    ('use_attention', 1, 'use_attention'),
    ('lr_init_range', (1e-2, 1e-6), 'lr_init_range'),
    ('lr_init_range', (0.0, 1e-2), 'lr_init_range'),
    ('max_log_lr', -1.0, 'max_log_lr'),
    ('min_log_lr', float('nan'), 'min_log_lr'),
    ('min_log_lr', 40.0, 'min_log_lr must be below max_log_lr'),
    ('global_input', 'first', 'global_input'),
    ('lr_init_seed', 1.5, 'lr_init_seed'),
    ('mean_square_eps', 0.0, 'mean_square_eps'),
    ('mean_square_eps', -1e-12, 'mean_square_eps'),
    ('mean_square_eps', float('inf'), 'mean_square_eps'),
    ('mean_square_eps', True, 'mean_square_eps'),
    ('relative_mean_square_eps', 0.0, 'relative_mean_square_eps'),
    ('relative_mean_square_eps', float('nan'), 'relative_mean_square_eps'),
])
def test_invalid_config_raises_naming_the_field(field, value, message):
  with pytest.raises(ValueError, match=message):
    HierarchicalRNN(**{field: value})


def test_asymmetric_clip_bounds_the_log_learning_rate_from_above_only():
  # An upper clip below the initial rates: every element of the initial state and every later step sits at the upper
  # bound, and the step equals the one the same optimizer takes with l pinned there; the lower bound is untouched.
  params = {'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), 'b': jnp.zeros((4,))}
  grads = jax.tree.map(lambda x: 0.1 * x + 0.01, params)
  opt = HierarchicalRNN(lr_init_range=(1e-3, 1e-2), max_log_lr=math.log(1e-4), min_log_lr=-33.0)
  assert opt.log_lr_bounds == (-33.0, math.log(1e-4))
  assert HierarchicalRNN(max_log_lr=5.0).log_lr_bounds == (-5.0, 5.0)
  meta = opt.init(jax.random.PRNGKey(0))
  tx = opt.transform(meta)
  state = tx.init(params)
  np.testing.assert_allclose(np.asarray(state.log_lr, np.float32), math.log(1e-4), rtol=1e-6)
  for _ in range(3):
    _, state = tx.update(grads, state, params)
    assert float(jnp.max(state.log_lr)) <= math.log(1e-4) + 1e-5
  # A lower clip above the rates pins them from below instead.
  raised = HierarchicalRNN(lr_init_range=(1e-8, 1e-7), max_log_lr=0.0, min_log_lr=math.log(1e-4))
  np.testing.assert_allclose(np.asarray(raised.transform(meta).init(params).log_lr, np.float32), math.log(1e-4),
                             rtol=1e-6)


def test_fan_in_reference_lowers_the_upper_clip_of_wide_tensors_only():
  # Upper clip log(1e-2) = -4.6 against initial rates of 0.1..1: every element starts at its tensor's clip.
  # The [256, 3] kernel (fan-in 256 = 16 x 16) is lowered by log(16) / 2; the [8, 3] kernel and the vector are not.
  params = {'wide': jnp.ones((256, 3)), 'narrow': jnp.ones((8, 3)), 'bias': jnp.ones((3,))}
  opt = HierarchicalRNN(lr_init_range=(0.1, 1.0), max_log_lr=math.log(1e-2), min_log_lr=-33.0,
                        fan_in_reference=16)
  meta = opt.init(jax.random.PRNGKey(0))
  tx = opt.transform(meta)
  state = tx.init(params)
  sizes = {'bias': 3, 'narrow': 24, 'wide': 768}  # flat layout: leaves in sorted key order
  offsets = np.cumsum([0, sizes['bias'], sizes['narrow'], sizes['wide']])
  expected = {'bias': math.log(1e-2), 'narrow': math.log(1e-2), 'wide': math.log(1e-2) - 0.5 * math.log(16.0)}
  for (name, clip), start, stop in zip(expected.items(), offsets[:-1], offsets[1:]):
    np.testing.assert_allclose(np.asarray(state.log_lr[start:stop], np.float32), clip, rtol=1e-6, err_msg=name)
  grads = jax.tree.map(lambda x: 0.1 * x, params)
  for _ in range(2):
    _, state = tx.update(grads, state, params)
  assert float(jnp.max(state.log_lr[offsets[2]:])) <= expected['wide'] + 1e-5
  with pytest.raises(ValueError, match='fan_in_reference'):
    HierarchicalRNN(fan_in_reference=0)


def test_floor_on_the_log_learning_rate_holds_against_a_readout_that_drives_it_down():
  # A log-lr bias of -50 drives l_step far below the floor at every step; with min_log_lr = -6 every relative step
  # is exactly exp(-6 + o) x the tensor's (floored) RMS, since the direction has unit RMS per tensor. Tolerance: float32
  # rounding of exp and of two RMS reductions (rtol 1e-4).
  params = {'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), 'b': jnp.zeros((4,))}
  grads = jax.tree.map(lambda x: 0.1 * x + 0.01, params)
  opt = HierarchicalRNN(lr_init_range=(1e-3, 1e-2), max_log_lr=-2.0, min_log_lr=-6.0, step_scale='relative')
  meta = opt.init(jax.random.PRNGKey(0))
  meta['log_lr'] = dict(meta['log_lr'], bias=jnp.asarray(-50.0, jnp.float32))
  tx = opt.transform(meta)
  state = tx.init(params)
  rate = math.exp(-6.0 + float(meta['step_size_offset']))
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    assert float(jnp.min(state.log_lr)) >= -6.0 - 1e-5
    for name in ('w', 'b'):
      scale = max(float(jnp.sqrt(jnp.mean(params[name] ** 2))), opt.relative_step_floor)
      np.testing.assert_allclose(float(jnp.sqrt(jnp.mean(updates[name] ** 2))), rate * scale, rtol=1e-4,
                                 err_msg=name)
    params = optax.apply_updates(params, updates)


def test_fan_in_reference_lowers_the_floor_of_wide_tensors_too():
  # Rates driven far below the floor (initial range 1e-8..1e-7) sit at each tensor's lower clip: -5 for the [8, 3]
  # kernel, -5 - log(256 / 16) / 2 for the [256, 3] one. Shifting both clips keeps the window the same width for every
  # tensor, so the floor never crosses a wide layer's lowered cap.
  params = {'wide': jnp.ones((256, 3)), 'narrow': jnp.ones((8, 3))}
  opt = HierarchicalRNN(lr_init_range=(1e-8, 1e-7), max_log_lr=-2.0, min_log_lr=-5.0, fan_in_reference=16)
  tx = opt.transform(opt.init(jax.random.PRNGKey(0)))
  state = tx.init(params)
  grads = jax.tree.map(lambda x: 0.1 * x, params)
  for _ in range(2):
    _, state = tx.update(grads, state, params)
  log_lr = np.asarray(state.log_lr, np.float32)  # flat layout, leaves in sorted key order: narrow (24), wide (768)
  np.testing.assert_allclose(log_lr[:24], -5.0, rtol=1e-6)
  np.testing.assert_allclose(log_lr[24:], -5.0 - 0.5 * math.log(16.0), rtol=1e-6)


def test_config_round_trip_and_defaults():
  opt = HierarchicalRNN()
  assert HierarchicalRNN.from_config(opt.config()) == opt
  asymmetric = HierarchicalRNN(max_log_lr=0.0, min_log_lr=-20.0)
  assert HierarchicalRNN.from_config(asymmetric.config()) == asymmetric
  assert (opt.cell_sizes, opt.num_scales, opt.max_log_lr, opt.global_input, opt.use_attention) == (
      (10, 20, 20), 4, 33.0, 'mean', False)
  assert opt.num_features == 12
  assert opt.mean_square_eps == 1e-12  # the paper's constant; the numpy reference below hard-codes it
  small = HierarchicalRNN(mean_square_eps=1e-20)
  assert HierarchicalRNN.from_config(small.config()) == small


def test_mean_square_eps_keeps_the_features_scale_invariant_down_to_its_square_root():
  # The features a / sqrt(ms) and the relative log mean squares do not change when every gradient is multiplied by
  # the same c, as long as a^2 >> mean_square_eps (per element). Gradients times 1e-6 put tensors 's' and 'w' at
  # RMS 1e-5 and 1e-6: at the default's sqrt(1e-12) = 1e-6 their features fade; mean_square_eps = 1e-20 (sqrt 1e-10)
  # keeps them. ('b', at 1e-9, has elements near sqrt(1e-20) and is left out of the comparison.)
  params = make_params()
  def features(opt, scale):
    tx = opt.transform(opt.init(jax.random.PRNGKey(0)))
    state = tx.init(params)
    for step in range(3):  # from the second step on, the mean squares are decayed averages
      grads = jax.tree.map(lambda g: scale * g, make_grads(step))
      out = opt.input_features(grads, state, params)
      state = tx.update(grads, state, params)[1]
    return out
  columns = slice(5, NUM_PARAMS)  # 's' and 'w' (leaf order b, s, w)
  for eps, invariant in [(1e-20, True), (1e-12, False)]:
    opt = HierarchicalRNN(mean_square_eps=eps)
    unit, small = features(opt, 1.0), features(opt, 1e-6)
    for key in ('scaled', 'relative_log_ms'):
      difference = np.abs(np.asarray(small[key]) - np.asarray(unit[key]))[:, columns].max()
      # Invariant: float32 rounding of the rescaled gradients plus an eps 1e-8 of a^2 or less: measured 3e-5.
      # Faded: 0.016 ('s', relative log ms) to 2.2 ('w', scaled), measured.
      assert (difference < 1e-4) == invariant, (eps, key, difference)


def _features_after_three_steps(opt, grad_scales):
  """``opt.input_features`` at the third step, with each tensor's gradients multiplied by ``grad_scales[name]``."""
  params = make_params()
  tx = opt.transform(opt.init(jax.random.PRNGKey(0)))
  state = tx.init(params)
  for step in range(3):
    grads = {k: grad_scales.get(k, 1.0) * g for k, g in make_grads(step).items()}
    out = opt.input_features(grads, state, params)
    state = tx.update(grads, state, params)[1]
  return out


def test_relative_mean_square_eps_makes_each_tensors_features_invariant_to_its_gradient_scale():
  # With relative_mean_square_eps = k, a tensor whose mean squared momentum is below mean_square_eps / k gets
  # e_T = k mean_T(a^2): rescaling that tensor's gradients rescales e_T with them, so its features do not change.
  # 'w' (gradient RMS 1) at 1e-4 and at 1e-8: both below the cap's RMS sqrt(1e-12 / 1e-6) = 1e-3.
  opt = HierarchicalRNN(relative_mean_square_eps=1e-6)
  w = slice(6, NUM_PARAMS)  # leaf order b, s, w
  small, tiny = (_features_after_three_steps(opt, {'w': c}) for c in (1e-4, 1e-8))
  for key in ('scaled', 'relative_log_ms'):
    # float32 rounding of the rescaled gradients and of log(ms) (~ -37 at 1e-8: ulp 4e-6): measured 2e-7 and 4e-6.
    np.testing.assert_allclose(np.asarray(tiny[key])[:, w], np.asarray(small[key])[:, w], atol=1e-4, err_msg=key)
  # The constant e fades the same tensor at 1e-8 (measured 2.2 apart).
  constant = [_features_after_three_steps(HierarchicalRNN(), {'w': c}) for c in (1e-4, 1e-8)]
  assert np.abs(np.asarray(constant[1]['scaled'])[:, w] - np.asarray(constant[0]['scaled'])[:, w]).max() > 0.5
  # Tensors with larger gradients keep the constant: 's' (RMS 10) is bitwise the default's.
  default = _features_after_three_steps(HierarchicalRNN(), {'w': 1e-8})
  np.testing.assert_array_equal(np.asarray(tiny['scaled'])[:, 5], np.asarray(default['scaled'])[:, 5])


def test_relative_mean_square_eps_keeps_features_finite_at_exactly_zero_gradients():
  out = _features_after_three_steps(HierarchicalRNN(relative_mean_square_eps=1e-6), {'w': 0.0})
  for key in ('scaled', 'relative_log_ms', 'features'):
    assert np.all(np.isfinite(np.asarray(out[key]))), key
  np.testing.assert_array_equal(np.asarray(out['scaled'])[:, 6:], 0.0)


def test_meta_params_are_float32_dicts_with_spec_sizes():
  opt = HierarchicalRNN()
  meta = opt.init(jax.random.PRNGKey(0))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(meta))
  # The TF BiasGRUCell configuration counts 8,349 (docs/algorithms.md §2.9); the flax cell has one more bias vector
  # (b_hn) per GRU: +10+20+20.
  assert sum(v.size for v in jax.tree.leaves(meta)) == 8349 + 50
  np.testing.assert_array_equal(meta['log_lr']['kernel'], 0.0)  # zero_init_lr_weights
  assert float(meta['rms_decay']['bias']) == np.float32(3.2) and float(meta['input_decay']['bias']) == np.float32(2.2)
  assert float(meta['lr_momentum_logit']) == np.float32(3.2) and float(meta['step_size_offset']) == -1.0
  attention_meta = HierarchicalRNN(use_attention=True).init(jax.random.PRNGKey(0))
  np.testing.assert_array_equal(attention_meta['attention_direction'], attention_meta['direction'])


def test_learning_rate_init_is_deterministic_triangular_and_per_tensor():
  opt = HierarchicalRNN()
  meta = opt.init(jax.random.PRNGKey(0))
  params = {'a': jnp.zeros((200, 100)), 'b': jnp.zeros(3)}
  log_lr = np.asarray(opt.init_state(meta, params).log_lr)
  np.testing.assert_array_equal(log_lr, opt.init_state(meta, params).log_lr)  # no key needed, reproducible
  assert log_lr.min() >= math.log(1e-6) and log_lr.max() <= math.log(1e-2)
  # Per-element U(log(1e-6)/2, log(1e-2)/2) has std (log(1e4)/2) / sqrt(12) = 1.33; the per-tensor offset shifts
  # the mean of the 20,000 elements of 'a' away from the midpoint, by the same offset for every element.
  a = log_lr[:20000]
  assert abs(a.std() / (math.log(1e4) / 2 / math.sqrt(12)) - 1) < 0.03
  other_seed = HierarchicalRNN(lr_init_seed=1).init_state(meta, params).log_lr
  assert not np.allclose(other_seed, log_lr)


# ----------------------------------------------------------------------------------------------------------------------
# Agreement with the numpy reference.

def run_both(opt, num_steps, meta=None):
  """Runs library and reference side by side; yields (library features, reference features, updates, states)."""
  meta = perturbed_meta(opt) if meta is None else meta
  meta_np = ref.to_numpy(meta)
  params = make_params()
  tx = opt.transform(meta)
  state = tx.init(params)
  ref_state = reference_state(opt, meta, params, state)
  switches = dict(use_grad_products=opt.use_grad_products, use_relative_log_ms=opt.use_relative_log_ms,
                  use_relative_lr=opt.use_relative_lr)
  for step in range(num_steps):
    grads = make_grads(step)
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    features = opt.input_features(grads, state, params)
    ref_updates, ref_state, ref_features = ref.step(
        meta_np, ref_state, leaves, [np.asarray(p) for p in jax.tree.leaves(params)],
        use_attention=opt.use_attention, global_input=opt.global_input, **switches)
    updates, state = tx.update(grads, state, params)
    yield features, ref_features, updates, ref_updates, state, ref_state
    params = optax.apply_updates(params, updates)


@pytest.mark.slow  # ~20 s on a loaded 2-core machine: the first eager run compiles every primitive once
def test_features_match_reference():
  opt = HierarchicalRNN()
  for features, ref_features, *_ in run_both(opt, num_steps=3):
    for key, ref_key in [('momenta', 'grad_accum'), ('mean_squares', 'ms'), ('scaled', 'x'),
                         ('products', 'products'), ('relative_lr', 'relative_lr'), ('features', 'input')]:
      assert_close_per_tensor(features[key], [f[ref_key] for f in ref_features], rtol=1e-5)
    # Differences of logs ~ -30: float32 resolves them to ~30 * 1.2e-7 = 4e-6; 10 ulp of margin.
    assert_close_per_tensor(features['relative_log_ms'], [f['relative_log_ms'] for f in ref_features], rtol=1e-5,
                            atol=4e-5)
    assert features['features'].shape == (12, NUM_PARAMS)


@pytest.mark.parametrize('config', [
    dict(),
    dict(use_attention=True),
    dict(global_input='last'),
    dict(use_grad_products=False, use_relative_log_ms=False, use_relative_lr=False, num_scales=3),
], ids=['default', 'attention', 'last', 'no_extra_features'])
def test_steps_match_reference(config):
  opt = HierarchicalRNN(**config)
  # With attention the update is (attended point - params), a float32 difference of O(1) parameters (|p| < 4 here):
  # its absolute resolution is a few ulp of 4, ~1e-6, whatever the update's size.
  update_atol = 1e-6 if opt.use_attention else None
  for *_, updates, ref_updates, state, ref_state in run_both(opt, num_steps=4):
    assert_close_per_tensor(jnp.concatenate([u.reshape(-1) for u in jax.tree.leaves(updates)]),
                            [u.reshape(-1) for u in ref_updates], rtol=1e-4, atol=update_atol)
    tensors = ref_state['tensors']
    assert_close_per_tensor(state.param_hidden, [t['h'] for t in tensors], rtol=1e-4)
    assert_close_per_tensor(state.log_lr, [t['log_lr'] for t in tensors], rtol=1e-5)
    assert_close_per_tensor(state.input_decay, [t['inp_decay'] for t in tensors], rtol=1e-4)
    assert_close_per_tensor(state.rms_decay, [t['scl_decay'] for t in tensors], rtol=1e-4)
    np.testing.assert_allclose(state.tensor_hidden, np.stack([t['layer'] for t in tensors]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.global_hidden, ref_state['global'], rtol=1e-4, atol=1e-5)
    if opt.use_attention:
      assert_close_per_tensor(state.true_param, [t['true_param'] for t in tensors], rtol=1e-5)


def test_global_input_mean_versus_last():
  """'mean' feeds the global GRU the mean of the new tensor states; 'last' only the last tensor's (released code)."""
  outputs = {}
  for mode in ('mean', 'last'):
    opt = HierarchicalRNN(global_input=mode)
    meta = perturbed_meta(opt)
    params = make_params()
    tx = opt.transform(meta)
    state0 = tx.init(params)
    _, state1 = tx.update(make_grads(0), state0, params)
    global_in = state1.tensor_hidden.mean(0) if mode == 'mean' else state1.tensor_hidden[-1]
    np.testing.assert_allclose(state1.global_hidden, gru.gru_apply(meta['global_rnn'], state0.global_hidden, global_in),
                               rtol=1e-6, atol=1e-6)
    outputs[mode] = state1.global_hidden
  assert np.abs(outputs['mean'] - outputs['last']).max() > 1e-3


# ----------------------------------------------------------------------------------------------------------------------
# State, transformations, differentiation.

@pytest.mark.parametrize('use_attention, per_param', [(False, 21), (True, 22)])
def test_state_floats_per_parameter(use_attention, per_param):
  opt = HierarchicalRNN(use_attention=use_attention)
  params = {'a': jnp.zeros((30, 40)), 'b': jnp.zeros(7)}
  state = opt.transform(opt.init(jax.random.PRNGKey(0))).init(params)
  assert isinstance(state, HierarchicalRNNState)
  n, t = 1207, 2
  assert opt.state_floats_per_parameter() == per_param
  floats = sum(v.size for v in jax.tree.leaves(state) if v.dtype == jnp.float32)
  assert floats == per_param * n + 21 * t + 20  # per tensor: the tensor GRU's 20 and the initial scale
  assert all(v.dtype in (jnp.float32, jnp.int32) for v in jax.tree.leaves(state))


def test_jit_does_not_retrace_and_matches_eager():
  opt = HierarchicalRNN()
  tx = opt.transform(opt.init(jax.random.PRNGKey(0)))
  params = make_params()
  traces = []

  def update(grads, state, params):
    traces.append(1)
    return tx.update(grads, state, params, value=jnp.float32(1.0), unknown_keyword=3)

  jitted = jax.jit(update)
  state = tx.init(params)
  u1, s1 = jitted(make_grads(0), state, params)
  u2, _ = jitted(make_grads(1), s1, params)
  assert len(traces) == 1
  eager_u1, _ = tx.update(make_grads(0), state, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12), u1, eager_u1)


def test_vmap_over_a_batch_equals_one_by_one():
  opt = HierarchicalRNN(use_attention=True)
  tx = opt.transform(perturbed_meta(opt))
  batch_params = [make_params(k) for k in range(3)]
  batch_grads = [make_grads(k) for k in range(3)]
  states = [tx.init(p) for p in batch_params]
  stack = lambda trees: jax.tree.map(lambda *v: jnp.stack(v), *trees)
  updates, new_states = jax.vmap(tx.update)(stack(batch_grads), stack(states), stack(batch_params))
  # Batched matmuls sum in another order: float32 rounding differences of O(1) states, a few ulp.
  for i in range(3):
    u, s = tx.update(batch_grads[i], states[i], batch_params[i])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6), updates, u)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6), new_states, s)


@pytest.mark.slow  # ~20 s: compiling jax.grad through a lax.scan of five hierarchical-RNN steps
def test_meta_gradient_through_scan_is_finite_and_reaches_every_level():
  opt = HierarchicalRNN()
  target = make_params(5)

  def loss_fn(params):
    return sum(jnp.sum((p - t) ** 2) for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(target)))

  def meta_loss(meta):
    tx = opt.transform(meta)
    params = make_params()

    def body(carry, _):
      params, state = carry
      value, grads = jax.value_and_grad(loss_fn)(params)
      updates, state = tx.update(grads, state, params, value=value)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=5)
    return loss_fn(params)

  meta_grads = jax.jit(jax.grad(meta_loss))(opt.init(jax.random.PRNGKey(0)))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(meta_grads))
  for name in ('param_rnn', 'tensor_rnn', 'global_rnn', 'log_lr', 'step_size_offset', 'gradient_shortcut'):
    assert optax.tree.norm(meta_grads[name]) > 0, name


# ----------------------------------------------------------------------------------------------------------------------
# Bad input (lopt/base.py's rules).

def test_none_zero_size_and_scalar_leaves():
  opt = HierarchicalRNN()
  tx = opt.transform(opt.init(jax.random.PRNGKey(0)))
  params = {'masked': None, 'empty': jnp.zeros((0, 3)), 'scalar': jnp.float32(2.0), 'w': jnp.ones((2, 2))}
  grads = {'masked': None, 'empty': jnp.zeros((0, 3)), 'scalar': jnp.float32(0.5), 'w': jnp.ones((2, 2))}
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
  assert updates['masked'] is None
  assert updates['empty'].shape == (0, 3) and updates['scalar'].shape == ()
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(state))
  assert float(updates['scalar']) < 0 and bool(jnp.all(updates['w'] < 0))  # positive gradient, descent at init


def test_no_parameters_at_all():
  opt = HierarchicalRNN()
  tx = opt.transform(opt.init(jax.random.PRNGKey(0)))
  updates, state = tx.update({}, tx.init({}), {})
  assert updates == {} and bool(jnp.all(jnp.isfinite(state.global_hidden)))


@pytest.mark.parametrize('dtype', [jnp.float16, jnp.bfloat16])
def test_low_precision_params_keep_dtype_with_float32_state(dtype):
  opt = HierarchicalRNN()
  tx = opt.transform(opt.init(jax.random.PRNGKey(0)))
  params = jax.tree.map(lambda p: p.astype(dtype), make_params())
  grads = jax.tree.map(lambda g: g.astype(dtype), make_grads(0))
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
  assert all(v.dtype in (jnp.float32, jnp.int32) for v in jax.tree.leaves(state))
  updates32, _ = tx.update(jax.tree.map(lambda g: g.astype(jnp.float32), grads), tx.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float32), b.astype(dtype).astype(np.float32)),
               updates, updates32)


def test_integer_leaf_and_mismatched_state_raise():
  opt = HierarchicalRNN()
  tx = opt.transform(opt.init(jax.random.PRNGKey(0)))
  with pytest.raises(TypeError, match=r"\['step'\].*optax.masked"):
    tx.init({'w': jnp.ones(3), 'step': jnp.zeros((), jnp.int32)})
  state = tx.init({'w': jnp.ones(3)})
  with pytest.raises(ValueError, match='state was made for 3 parameters'):
    tx.update({'w': jnp.ones(4)}, state, {'w': jnp.ones(4)})
  with pytest.raises(ValueError, match='needs `params`'):
    tx.update({'w': jnp.ones(3)}, state)


def test_nonfinite_gradient_propagates_to_that_tensor():
  opt = HierarchicalRNN()
  tx = opt.transform(opt.init(jax.random.PRNGKey(0)))
  params = make_params()
  grads = make_grads(0)
  grads['b'] = grads['b'].at[0].set(jnp.nan)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert bool(jnp.isnan(updates['b'][0]))


# ----------------------------------------------------------------------------------------------------------------------
# Behaviour at the initial weights.

def quadratic_run(opt, num_steps=500):
  """10-dimensional quadratic 0.5 x^T A x, eigenvalues log-spaced in [1, 100] (condition number 100), fixed seed."""
  rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(10, 10)))
  a = jnp.asarray(rotation @ np.diag(np.logspace(0, 2, 10)) @ rotation.T, jnp.float32)
  loss_fn = lambda p: 0.5 * p['x'] @ a @ p['x']
  params = {'x': jnp.asarray(np.random.default_rng(1).normal(size=10), jnp.float32)}
  tx = opt.transform(opt.init(jax.random.PRNGKey(0)))

  def body(carry, _):
    params, state = carry
    value, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, value=value)
    return (optax.apply_updates(params, updates), state), value

  (params, _), losses = jax.jit(lambda c: jax.lax.scan(body, c, None, length=num_steps))((params, tx.init(params)))
  return np.asarray(losses), float(loss_fn(params))


def test_initial_weights_descend_slowly_on_ill_conditioned_quadratic():
  """Pins what the faithful (not meta-trained) initialisation does: it descends, but far less than 10x in 500 steps.

  At init the step is exp(l + o) * delta with l triangular on [log 1e-6, log 1e-2] (mode log 1e-4) and o = -1, and
  delta has unit RMS, so each coordinate moves by ~4e-5 per step: ~0.02 over 500 steps against |x| ~ 3. The loss
  therefore falls by a few percent (measured 1.9%), not 10x. Meta-training is what makes this optimizer fast; the
  next test shows the same weights with a larger initial learning rate do reduce the loss more than 10x.
  """
  losses, final = quadratic_run(HierarchicalRNN())
  assert 0.95 < final / losses[0] < 0.995
  assert np.all(np.diff(losses) < 0)  # tiny steps along a descent direction: every step lowers the loss


def test_initial_weights_with_larger_initial_learning_rate_reduce_quadratic_tenfold():
  losses, final = quadratic_run(HierarchicalRNN(lr_init_range=(1e-2, 1e-2)))
  assert final < losses[0] / 10


def test_relative_steps_scale_with_the_parameters_rms_and_keep_shapes():
  """step_scale='relative': a step is exp(l + o) delta times its tensor's parameter RMS (floored), so multiplying
  the parameters by c (gradients fixed) multiplies the update by c, and the meta-parameters are those of 'absolute'."""
  absolute = HierarchicalRNN(lr_init_range=(1e-3, 1e-3))
  relative = HierarchicalRNN(lr_init_range=(1e-3, 1e-3), step_scale='relative')
  meta = absolute.init(jax.random.PRNGKey(0))
  assert jax.tree.map(jnp.shape, relative.init(jax.random.PRNGKey(0))) == jax.tree.map(jnp.shape, meta)
  grads = {'w': jnp.array([[0.3, -1.0], [2.0, 0.5]]), 'b': jnp.array([0.1, -0.2])}
  params = {'w': jnp.array([[1.0, -2.0], [0.5, 3.0]]), 'b': jnp.zeros(2)}

  def first_update(arch, params):
    tx = arch.transform(meta)
    return tx.update(grads, tx.init(params), params)[0]

  base_update = first_update(absolute, params)
  rms_w = float(jnp.sqrt(jnp.mean(params['w'] ** 2)))
  for scale in (1.0, 10.0):
    scaled = {'w': scale * params['w'], 'b': params['b']}
    got = first_update(relative, scaled)
    # The parameters enter only through the RMS factor (no feature reads them): exact up to float32 rounding.
    np.testing.assert_allclose(got['w'], scale * rms_w * base_update['w'], rtol=1e-5)
    np.testing.assert_allclose(got['b'], relative.relative_step_floor * base_update['b'], rtol=1e-5)


def test_step_scale_and_floor_are_checked():
  with pytest.raises(ValueError, match="step_scale must be 'absolute'"):
    HierarchicalRNN(step_scale='adaptive')
  with pytest.raises(ValueError, match='relative_step_floor must be a finite number > 0'):
    HierarchicalRNN(step_scale='relative', relative_step_floor=0.0)


def test_max_scale_growth_bounds_the_geometric_growth_of_coherent_relative_steps():
  """A loss whose gradient always points along -theta makes relative steps grow theta geometrically (each step is a
  fixed fraction of it); with max_scale_growth the growth becomes linear. 300 steps at l = log 0.1 (the initial value;
  the untrained rule's learning-rate readout is zero, so l stays there)."""
  def loss(theta):
    return -jnp.sum(theta)  # gradient -1 everywhere: every step pushes theta up by its own relative step

  def final_rms(arch):
    tx = arch.transform(arch.init(jax.random.PRNGKey(0)))
    theta = jnp.full((16,), 0.1)
    state = tx.init(theta)
    for _ in range(300):
      updates, state = tx.update(jax.grad(loss)(theta), state, theta)
      theta = theta + updates
    return float(jnp.sqrt(jnp.mean(theta ** 2)))

  common = dict(lr_init_range=(0.1, 0.1), max_log_lr=-2.0, min_log_lr=-33.0, step_scale='relative')
  uncapped = final_rms(HierarchicalRNN(**common))
  capped = final_rms(HierarchicalRNN(**common, max_scale_growth=2.0))
  # Each step moves theta by exp(l + o) = 0.1 x e^-1 (o = -1 at init), under 4% of its RMS; uncapped that compounds
  # towards (1.037)^300 ~ 5e4 when every step keeps its sign; capped, steps are at most 4% of 2 x 0.1 < 0.01, so theta's
  # RMS can grow by at most 300 x 0.01 = 3 above its start.
  assert capped <= 0.1 + 300 * 0.01 * 1.01
  assert uncapped > 100 * capped
