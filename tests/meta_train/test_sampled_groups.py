"""Sampled structure groups (``group_mode = 'sample'``): drawn on the host, one compiled meta-step per group.

A mixed ensemble's structure groups are host-sampled branches of the estimator (``num_branches``,
``sample_branch(key)``, ``estimate(..., branch=g)``): the trainer draws the group of each meta-step from the state's
PRNG key and compiles the step specialised to that group the first time it is drawn. These tests check that each
group is traced once and only when drawn, that runs stay bitwise reproducible and resumable, that the host draw is
the draw the single-program path makes, and that the draws follow ``group_weights``.

The families are :class:`tasks.QuadraticFamily` of different dimensions (one structure group each) and the learned
optimizer the cheap ``learnable_sgdm``, so everything compiles in seconds.
"""

from __future__ import annotations

import collections
import dataclasses
import types

import jax
import numpy as np
import pytest

import lopt
import quadratic_fixture  # noqa: F401  (the tasks.family hook "quadratic_fixture:quadratics" lives there)
from meta_train.run import build, trainer
from meta_train.run import config as config_lib
from meta_train.estimators.truncated_backprop import TruncatedBackprop
from meta_train.structure_groups import MultiTaskEstimator, StructureGroups, branch_thresholds
from tasks import QuadraticFamily

SAMPLED_CONFIG = """
[run]
seed = 2
meta_steps = 8
log_every = 2
checkpoint_every = 2
keep_checkpoints = 2

[learned_optimizer]
architecture = "learnable_sgdm"
hparams = {}

[tasks]
family = "quadratic_fixture:quadratics"
kwargs = {dims = [2, 3, 4]}
num_tasks = 2

[estimator]
name = "tbptt"
kwargs = {unroll_length = 1, group_mode = "sample", second_derivatives = false}

[estimator.truncation]
name = "constant"
kwargs = {length = 3}

[estimator.objective]
name = "log_normalized_train"
kwargs = {}

[meta_optimizer]
name = "adam"
learning_rate = 1e-2

[evaluation]
every = 0
"""
NUM_GROUPS = 3
#: the groups seed 2 draws at meta-steps 1..8 (checked below): the first two steps draw the same group, and the
#: eight steps draw every group, some several times.
SEED_2_DRAWS = [2, 2, 0, 1, 2, 2, 2, 1]


def _config(*overrides):
  return config_lib.loads(SAMPLED_CONFIG, list(overrides))


def _counting_components(config):
  """The built components, with the estimator's per-group traces counted: ``traces[g]`` is how many times group
  ``g``'s truncation was traced (Python runs ``_estimate_group`` once per trace, never when a compiled step runs)."""
  components = build.build(config)
  estimator = components.estimator
  traces = collections.Counter()
  inner = estimator._estimate_group  # pylint: disable=protected-access

  def counted(unroll, *args):
    traces[estimator.unrolls.index(unroll)] += 1
    return inner(unroll, *args)

  estimator._estimate_group = counted  # pylint: disable=protected-access
  return components, traces


def _draws(components, seed, num_steps):
  """The groups the trainer draws at meta-steps ``1 .. num_steps`` of a run with this seed."""
  key = trainer.init_state(components, jax.random.key(seed)).key
  draws = []
  for _ in range(num_steps):
    draws.append(trainer.draw_branch(components, key))
    key = jax.random.split(key)[0]  # the key meta_step leaves in the state
  return draws


def _bytes(meta_params):
  return {k: np.asarray(v).tobytes() for k, v in meta_params.items()}


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
  """One uninterrupted 8-step run in sample mode, and its trace counts."""
  config = _config()
  components, traces = _counting_components(config)
  result = trainer.train(config, str(tmp_path_factory.mktemp('straight')), components, progress=False)
  assert _draws(components, 2, 8) == SEED_2_DRAWS
  return config, result, traces


def test_the_configured_estimator_has_one_host_sampled_branch_per_group(straight_run):
  config, _, _ = straight_run
  estimator = build.build(config).estimator
  assert estimator.num_branches == NUM_GROUPS == len(estimator.unrolls)
  # 'all' mode keeps one program with every group (no host draw).
  assert build.build(_config('estimator.kwargs.group_mode="all"')).estimator.num_branches == 1


def test_each_drawn_group_is_traced_exactly_once(straight_run):
  _, result, traces = straight_run
  assert result.step == 8
  assert traces == {0: 1, 1: 1, 2: 1}  # 8 meta-steps, 3 groups drawn, 3 traces


def test_same_seed_gives_bitwise_the_same_meta_params(straight_run, tmp_path):
  config, straight, _ = straight_run
  again = trainer.train(config, str(tmp_path), progress=False)
  assert _bytes(again.meta_params) == _bytes(straight.meta_params)


def test_steps_compile_only_the_drawn_group_and_resume_equals_the_uninterrupted_run(straight_run, tmp_path):
  config, straight, _ = straight_run
  components, traces = _counting_components(config)
  two_steps = dataclasses.replace(config, run=dataclasses.replace(config.run, meta_steps=2))
  first = trainer.train(two_steps, str(tmp_path), components, progress=False)
  assert first.step == 2
  # Both meta-steps drew group 2: it was traced (compiled) once, and no other group was.
  assert traces == {2: 1}
  components, traces = _counting_components(config)
  resumed = trainer.train(config, str(tmp_path), components, progress=False)
  assert resumed.resumed_from == 2 and resumed.step == 8
  assert _bytes(resumed.meta_params) == _bytes(straight.meta_params)
  assert traces == {0: 1, 1: 1, 2: 1}  # steps 3..8 draw every group; a new process compiles each once


# ------------------------------------------------------------------------------------------------------------------
# The estimators on their own.

ARCH = lopt.LearnableSGDM()
THETA = ARCH.init(jax.random.key(0))


def _truncated(**kwargs):
  return TruncatedBackprop(StructureGroups(ARCH, [QuadraticFamily(2), QuadraticFamily(3), QuadraticFamily(4)],
                                           num_tasks=2, unroll_length=1, group_mode='sample',
                                           second_derivatives=False, **kwargs))


def _multi():
  parts = [TruncatedBackprop(StructureGroups(ARCH, QuadraticFamily(d), num_tasks=2, unroll_length=1,
                                             second_derivatives=False))
           for d in (2, 3)]
  return MultiTaskEstimator(parts, weights=[1.0, 3.0], mode='sample')


def _sub_states(estimator, state):
  return state.groups if isinstance(estimator, TruncatedBackprop) else state


@pytest.mark.parametrize('make', [_truncated, _multi], ids=['truncated', 'multi_task'])
def test_host_draw_is_the_draw_of_the_single_program_path(make):
  """``estimate(key)`` under jit (every branch traced, lax.switch) advances exactly the branch ``sample_branch(key)``
  names, and ``estimate(key, branch=sample_branch(key))`` returns the same gradient (to 1e-6; bitwise in practice)."""
  estimator = make()
  state = jax.jit(estimator.init)(jax.random.key(1), THETA)
  single_program = jax.jit(estimator.estimate)
  by_branch = {}
  seen = set()
  for i in range(10):
    key = jax.random.key(100 + i)
    branch = estimator.sample_branch(key)
    seen.add(branch)
    grad, new_state, metrics = single_program(THETA, state, key)
    changed = [g for g, (old, new) in enumerate(zip(_sub_states(estimator, state), _sub_states(estimator, new_state)))
               if any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)))]
    assert changed == [branch], f'key {i}'
    if branch not in by_branch:
      by_branch[branch] = jax.jit(lambda t, s, k, b=branch: estimator.estimate(t, s, k, branch=b))
    grad_b, _, metrics_b = by_branch[branch](THETA, state, key)
    for a, b in zip(jax.tree.leaves((grad, metrics)), jax.tree.leaves((grad_b, metrics_b))):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=0)
  assert seen == set(range(estimator.num_branches))


def test_trainer_draw_frequencies_follow_group_weights():
  """Draws along the trainer's key chain, N = 4000, weights (0.1, 0, 0.3, 0.6): the zero-weight group is never
  drawn, and Pearson's chi-square over the other three (2 degrees of freedom) is below 13.8, which a correct sampler
  exceeds with probability 1e-3 (the keys are fixed, so the outcome is deterministic). Sensitivity: moving 0.03 of
  probability between the first and the last group adds about 36 + 6 = 42 to the expected statistic."""
  weights = np.asarray([0.1, 0.0, 0.3, 0.6])
  estimator = TruncatedBackprop(StructureGroups(ARCH, [QuadraticFamily(d) for d in (2, 3, 4, 5)], num_tasks=2,
                                                unroll_length=1, group_mode='sample', group_weights=weights))
  components = types.SimpleNamespace(estimator=estimator)
  n = 4000
  key = jax.random.key(7)
  counts = np.zeros(len(weights))
  for _ in range(n):
    counts[trainer.draw_branch(components, key)] += 1
    key = jax.random.split(key)[0]
  assert counts[1] == 0
  expected = n * weights[[0, 2, 3]]
  chi2 = float(np.sum((counts[[0, 2, 3]] - expected)**2 / expected))
  assert chi2 < 13.8, (counts.tolist(), chi2)


def test_branch_thresholds_split_the_32_bit_integers_by_weight():
  assert branch_thresholds(np.asarray([1.0, 1.0])) == (2**31,)
  assert branch_thresholds(np.asarray([1.0, 1.0, 0.0])) == (2**31,)  # 2^32 is never reached: group 2 never drawn
  assert branch_thresholds(np.asarray([0.0, 1.0])) == (0,)            # every draw is >= 0: group 0 never drawn
  assert branch_thresholds(np.asarray([1.0, 0.0, 1.0])) == (2**31, 2**31)
  assert branch_thresholds(np.asarray([1.0])) == ()


def test_branch_arguments_are_checked():
  estimator = _truncated()
  state = estimator.init(jax.random.key(0), THETA)
  with pytest.raises(ValueError, match='branch must be in'):
    estimator.estimate(THETA, state, jax.random.key(1), branch=3)
  everything = TruncatedBackprop(StructureGroups(ARCH, [QuadraticFamily(2), QuadraticFamily(3)], num_tasks=2,
                                                 unroll_length=1))
  assert everything.num_branches == 1 and everything.sample_branch(jax.random.key(0)) == 0
  with pytest.raises(ValueError, match='one branch'):
    everything.estimate(THETA, everything.init(jax.random.key(0), THETA), jax.random.key(1), branch=1)
  with pytest.raises(TypeError, match='concrete PRNG key'):
    jax.jit(estimator.sample_branch)(jax.random.key(0))
