"""A learned optimizer as the meta-optimizer (``[meta_optimizer] name = "hierarchical_rnn"`` / ``weights = ...``).

Metz et al. 2020 ("Tasks, stability, architecture, and compute: training more effective learned optimizers, and
using them to train themselves") meta-train learned optimizers with learned optimizers. Here the shipped hierarchical
RNN, as shipped (no tuning), meta-trains the one meta-parameter of the fixture's learnable SGD on a quadratic whose best
learning rate is known; the config errors name their field; and a run whose meta-optimizer state is the HRNN's state
resumes bitwise (quadratic_fixture.py holds the task, the learnable SGD and the estimator).
"""

import dataclasses
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import quadratic_fixture
from meta_train.run import build, resume_state, trainer
from meta_train.run import config as config_lib
from meta_train.run.checkpoint import CheckpointManager
from meta_train.run.config import ConfigError

# TINY_CONFIG gives Adam a learning rate of 0.1; a learned meta-optimizer takes none, so it goes back to the default.
HRNN = ['meta_optimizer.name="hierarchical_rnn"', 'meta_optimizer.learning_rate=1e-3']


def _config(*overrides):
  return config_lib.loads(quadratic_fixture.TINY_CONFIG, list(overrides))


def _train(config, out_dir):
  return trainer.train(config, str(out_dir), progress=False)


def _records(out_dir):
  with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _same_bits(a, b):
  """Whether two pytrees have the same structure and bitwise-equal leaves."""
  if jax.tree.structure(a) != jax.tree.structure(b):
    return False
  return all(np.asarray(x).tobytes() == np.asarray(y).tobytes()
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# --- meta-training with a learned meta-optimizer -------------------------------------------------------------------

CURVATURE = 4.0  # f(x) = 0.5 * 4 * |x|^2: gradient descent with lr = 1/4 reaches the minimum in one step


def test_shipped_hrnn_meta_optimizer_finds_the_best_learning_rate(tmp_path):
  """On the isotropic quadratic of curvature h, x <- (1 - lr h) x, so every truncation's log-loss is lowest at
  lr = 1/h: the optimum of log_lr is -log(4) = -1.386. The learnable SGD starts at log_lr = -4 (lr 14x too small).
  (The fixture's one-parameter learnable SGD rather than lopt.LearnableSGDM: the latter's learned momentum would make
  the optimum a joint one, no longer 1/h alone.)

  Tolerance 0.01 in log_lr (1% in the rate). The meta-objective (mean of log(loss + 1e-8)) has a sharp minimum at
  1/h: it becomes flat only where the loss after one step, loss_0 (1 - lr h)^2 with loss_0 ~ 8, is below the 1e-8
  inside the log, i.e. |log(lr h)| < ~4e-5, so the meta-gradient keeps pulling the rate towards 1/h. The HRNN's steps
  scatter log_lr by about +-0.02 around the optimum at step 40 and by less than 2e-4 at step 100 (seeds 0-5, on CPU);
  0.01 leaves that margin. 3-5 s on one core (mostly compiling the HRNN into the meta-step).
  """
  config = _config(*HRNN, 'run.meta_steps=100', 'run.log_every=10', 'run.checkpoint_every=100',
                   'learned_optimizer.hparams.init_log_lr=-4.0',
                   f'tasks.kwargs={{dim = 4, min_curvature = {CURVATURE}, max_curvature = {CURVATURE}}}')
  result = _train(config, tmp_path)
  records = _records(tmp_path)
  assert records[-1]['nonfinite_meta_grads_total'] == 0
  # From about 0 (lr far too small: the loss barely moves) to about -17 (the loss hits the 1e-8 floor after a step).
  assert records[0]['meta_loss'] > -3.0 and records[-1]['meta_loss'] < -15.0
  assert abs(float(result.meta_params['log_lr']) - math.log(1 / CURVATURE)) < 0.01
  # The meta-optimizer state is the HRNN's own state (per-parameter RNN state, learned step sizes), checkpointed;
  # the shipped HRNN's loss brake (release 10 on) wraps it.
  state = CheckpointManager(str(tmp_path / 'checkpoints'), keep=2).restore_latest(_state_shapes(config)).tree
  hrnn_state = lopt.brakes.unwrap(state.meta_opt_state[-1])
  assert type(hrnn_state).__name__ == 'HierarchicalRNNState' and int(hrnn_state.count) == 100


def _state_shapes(config):
  return jax.eval_shape(lambda k: trainer.init_state(build.build(config), k), jax.random.key(0))


# --- how the meta-optimizer is built ---------------------------------------------------------------------------------


def _meta_params():
  return {'log_lr': jnp.asarray(-3.0), 'w': jnp.asarray([0.5, -1.0, 2.0])}


def _grads():
  return {'log_lr': jnp.asarray(3.0), 'w': jnp.asarray([-4.0, 0.5, 2.0])}  # global norm 5.3: clipped to 1


def _two_steps(tx):
  params, grads = _meta_params(), _grads()
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(grads, state, params, value=jnp.asarray(0.7))
    params = optax.apply_updates(params, updates)
  return params


def test_shipped_and_saved_weights_run_after_the_clipping(tmp_path):
  """``name`` alone runs the shipped weights, as lopt.hierarchical_rnn() does; ``weights`` runs a lopt.save file;
  both see the clipped meta-gradient (clip_by_global_norm = 1 by default)."""
  expected = _two_steps(optax.chain(optax.clip_by_global_norm(1.0), lopt.hierarchical_rnn()))
  shipped = build.build_meta_optimizer(_config(*HRNN).meta_optimizer)
  assert _same_bits(_two_steps(shipped), expected)

  architecture, meta_params = lopt.load_pretrained('hierarchical_rnn')
  path = tmp_path / 'meta_opt.npz'
  lopt.save(path, architecture, meta_params)
  saved = build.build_meta_optimizer(_config(*HRNN, f'meta_optimizer.weights="{path}"').meta_optimizer)
  assert _same_bits(_two_steps(saved), expected)

  # Hyperparameter overrides that keep the weights' shapes are applied, as lopt.hierarchical_rnn(**kwargs) does.
  override = build.build_meta_optimizer(_config(*HRNN, 'meta_optimizer.kwargs={max_log_lr = 5.0}').meta_optimizer)
  assert _same_bits(_two_steps(override),
                    _two_steps(optax.chain(optax.clip_by_global_norm(1.0), lopt.hierarchical_rnn(max_log_lr=5.0))))


def test_meta_step_passes_the_meta_loss_as_value():
  """The update receives ``value=`` the step's meta-loss (a learned optimizer may read it); a plain optax
  GradientTransformation without extra-argument support still works."""

  def init(params):
    del params
    return jnp.asarray(jnp.nan, jnp.float32)

  def update(grads, state, params=None, *, value=None, **extra):
    del state, params, extra
    return jax.tree.map(jnp.zeros_like, grads), jnp.asarray(value, jnp.float32)

  components = build.build(_config())
  spy = components._replace(meta_optimizer=optax.GradientTransformationExtraArgs(init, update))
  state, metrics = jax.jit(lambda s: trainer.meta_step(spy, s))(trainer.init_state(spy, jax.random.key(0)))
  assert np.isfinite(state.meta_opt_state) and state.meta_opt_state == metrics['meta_loss']

  def plain_update(grads, state, params=None):  # takes no extra arguments: value= would be a TypeError
    del params
    return jax.tree.map(lambda g: -0.1 * g, grads), state

  plain = components._replace(meta_optimizer=optax.GradientTransformation(lambda p: optax.EmptyState(), plain_update))
  trainer.meta_step(plain, trainer.init_state(plain, jax.random.key(0)))


# --- config errors: named fields, raised when the run is built ------------------------------------------------------


def _not_a_lopt_file(tmp_path):
  path = tmp_path / 'plain.npz'
  np.savez(path, w=np.zeros(3))  # a .npz, but not written by lopt.save
  return path


def _text_file(tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('not an optimizer')
  return path


def _mlp_lopt_file(tmp_path):
  path = tmp_path / 'mlp.npz'
  lopt.save(path, *lopt.load_pretrained('mlp_lopt'))
  return path


@pytest.mark.parametrize('overrides, message', [
    (lambda p: ['meta_optimizer.name="hierarchical_rn"'],
     r"meta_optimizer.name: 'hierarchical_rn' is neither an optax optimizer.*Did you mean 'hierarchical_rnn'"),
    (lambda p: ['meta_optimizer.name="learnable_adam"'],
     r"meta_optimizer.name: no meta-trained weights are shipped for 'learnable_adam'.*set meta_optimizer.weights"),
    (lambda p: HRNN + [f'meta_optimizer.weights="{p / "missing.npz"}"'],
     r"meta_optimizer.weights: lopt.load: no such file .*missing.npz.*written by lopt.save"),
    (lambda p: HRNN + [f'meta_optimizer.weights="{_not_a_lopt_file(p)}"'],
     r"meta_optimizer.weights: .*plain.npz' is not a lopt file.*written by lopt.save"),
    (lambda p: HRNN + [f'meta_optimizer.weights="{_text_file(p)}"'],
     r"meta_optimizer.weights: .*notes.txt' is not a lopt file"),
    (lambda p: HRNN + [f'meta_optimizer.weights="{_mlp_lopt_file(p)}"'],
     r"meta_optimizer.name: .*holds a 'mlp_lopt' optimizer, but meta_optimizer.name is 'hierarchical_rnn'; set "
     r'meta_optimizer.name = "mlp_lopt"'),
    (lambda p: [f'meta_optimizer.weights="{_mlp_lopt_file(p)}"', 'meta_optimizer.learning_rate=1e-3'],  # "adam"
     r"meta_optimizer.name: .*holds a 'mlp_lopt' optimizer, but meta_optimizer.name is 'adam'"),
    (lambda p: HRNN + ['meta_optimizer.learning_rate=3e-4'],
     r"meta_optimizer.learning_rate = 0.0003 does not apply to a learned meta-optimizer"),
    (lambda p: HRNN + ['meta_optimizer.kwargs={max_log_l = 3.0}'],
     r"unknown config key 'meta_optimizer.kwargs.max_log_l'. Did you mean 'max_log_lr'"),
    (lambda p: HRNN + ['meta_optimizer.kwargs={num_scales = 3}'],
     r"meta_optimizer.kwargs: .*changes the shapes of the meta-parameters of HierarchicalRNN"),
    (lambda p: ['meta_optimizer.name="quadratic_fixture:make_estimator"', 'meta_optimizer.learning_rate=1e-3'],
     r"meta_optimizer.name: 'quadratic_fixture:make_estimator' is not a lopt.LearnedOptimizer subclass"),
], ids=['unknown_name', 'no_shipped_weights', 'missing_file', 'npz_not_from_lopt_save', 'text_file',
        'file_of_another_architecture', 'weights_without_name', 'learning_rate', 'unknown_hyperparameter',
        'shape_changing_hyperparameter', 'hook_not_an_architecture'])
def test_config_errors_name_the_field_before_anything_runs(tmp_path, overrides, message):
  config = _config(*overrides(tmp_path))
  with pytest.raises(ConfigError, match=message):
    _train(config, tmp_path / 'run')
  assert not os.path.exists(tmp_path / 'run' / 'config.toml')  # refused while building, before the run started


def test_a_custom_architecture_runs_from_its_file(tmp_path):
  """``name = "package.module:Class"`` with ``weights``: the file is loaded with that class."""
  path = tmp_path / 'sgd.npz'
  architecture = quadratic_fixture.LearnedSGD(init_log_lr=math.log(0.5))
  lopt.save(path, architecture, architecture.init(None))
  tx = build.build_meta_optimizer(_config('meta_optimizer.name="quadratic_fixture:LearnedSGD"',
                                          'meta_optimizer.learning_rate=1e-3', f'meta_optimizer.weights="{path}"',
                                          'meta_optimizer.clip_by_global_norm=0').meta_optimizer)
  params = {'x': jnp.asarray([1.0, 2.0])}
  updates, _ = tx.update({'x': jnp.asarray([2.0, -4.0])}, tx.init(params), params)
  np.testing.assert_allclose(updates['x'], [-1.0, 2.0], rtol=1e-6)


# --- non-finite skips and resumption ---------------------------------------------------------------------------------


def test_non_finite_meta_gradients_leave_the_learned_meta_optimizer_state_unchanged(tmp_path):
  config = _config(*HRNN, 'estimator.kwargs.nan_grad_every=3', 'run.meta_steps=6', 'run.log_every=1',
                   'run.checkpoint_every=1')
  _train(config, tmp_path)
  assert [r['nonfinite_meta_grads_total'] for r in _records(tmp_path)] == [0, 0, 1, 1, 1, 2]
  manager = CheckpointManager(str(tmp_path / 'checkpoints'), keep=2)
  shapes = _state_shapes(config)
  state5, state6 = manager.restore(5, shapes).tree, manager.restore(6, shapes).tree
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state6.meta_opt_state))
  assert _same_bits(state6.meta_params, state5.meta_params)
  assert _same_bits(state6.meta_opt_state, state5.meta_opt_state)  # HRNN state, step count included


def test_a_run_with_a_learned_meta_optimizer_resumes_bitwise(tmp_path):
  """Interrupted at step 7 and resumed to 12: the meta-parameters and the HRNN's state are bitwise those of the
  uninterrupted run; resume.npz holds that state too (the compact resumption of runs/ in git)."""
  config = _config(*HRNN)
  straight = _train(config, tmp_path / 'straight')
  _train(dataclasses.replace(config, run=dataclasses.replace(config.run, meta_steps=7)), tmp_path / 'split')
  shapes = _state_shapes(config)
  full7 = CheckpointManager(str(tmp_path / 'split' / 'checkpoints'), keep=2).restore_latest(shapes).tree
  compact7 = resume_state.load(str(tmp_path / 'split' / resume_state.RESUME_FILE), shapes, config)
  assert int(compact7.step) == 7 and _same_bits(compact7.meta_opt_state, full7.meta_opt_state)

  resumed = _train(config, tmp_path / 'split')
  assert resumed.resumed_from == 7 and resumed.step == 12
  assert _same_bits(resumed.meta_params, straight.meta_params)
  final = [CheckpointManager(str(tmp_path / d / 'checkpoints'), keep=2).restore_latest(shapes).tree
           for d in ('straight', 'split')]
  assert _same_bits(final[0].meta_opt_state, final[1].meta_opt_state)

  # Without the full checkpoints, resume.npz restores the HRNN state and the run goes on from it.
  shutil.rmtree(tmp_path / 'split' / 'checkpoints')
  longer = _train(dataclasses.replace(config, run=dataclasses.replace(config.run, meta_steps=13)), tmp_path / 'split')
  assert longer.resumed_from == 12 and longer.step == 13
