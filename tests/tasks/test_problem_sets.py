"""The Wichrowska et al. 2017 problem set: its families and counts (docs/algorithms.md §11.5), the mapping API, every
member runs."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import problem_sets
from tasks import wrappers

PROBLEMS = problem_sets.wichrowska2017()

# The groups of docs/algorithms.md §11.5, by name pattern -> count.
EXPECTED_GROUPS = {
    'quadratic_': 7,        # noisy quadratics (4, one clean) + large quadratics (3)
    'bowl_': 8,             # 4 bowls x {clean, noise 0.1}
    'softmax_': 8,          # 4 + 4 noisy
    'mlp_sigmoid_': 12,
    'matmul_': 10,          # n = 2, k = 5..8 and n = 3, k = 19..24
    'log_': 6,
    'rescale': 9,
    'norm_': 6,
    'sum_': 8,
    'sparse_': 9,
}
TEST_FUNCTIONS = ['ackley', 'beale', 'booth', 'branin', 'logsumexp', 'matyas', 'michalewicz', 'rosenbrock',
                  'styblinski_tang']


def test_counts_and_groups_match_spec():
  assert len(PROBLEMS) == 101
  for prefix, count in EXPECTED_GROUPS.items():
    assert len(PROBLEMS.filter(prefix=prefix)) == count, prefix
  for name in TEST_FUNCTIONS:
    assert name in PROBLEMS and f'{name}_noise1' in PROBLEMS
  assert sum(EXPECTED_GROUPS.values()) + 2 * len(TEST_FUNCTIONS) == 101


def test_noise_levels_and_wrappers_are_as_in_spec():
  def stdev(name):
    family = PROBLEMS[name]
    # The fixed setting each sample copies into cfg['stdev'] (sampling the data families eagerly is slow).
    return family.value if isinstance(family, wrappers.GradientNoiseFamily) else 0.0
  assert [stdev(f'quadratic_{n}' + s) for n, s in [(20, '_noise0.5'), (25, ''), (50, '_noise1'), (100, '_noise2')]
          ] == [0.5, 0.0, 1.0, 2.0]
  assert stdev('bowl_5_angle0.785398_noise0.1') == pytest.approx(0.1)
  assert stdev('rosenbrock_noise1') == 1.0
  assert [stdev(n) for n in ['softmax_10_bs100_sep2_noise0.5', 'softmax_100_bs50_sep1_noise0.1',
                             'softmax_200_bs20_sep1.5_noise0.1', 'softmax_256_bs100_sep1.5_noise0.5']] == pytest.approx(
                                 [0.5, 0.1, 0.1, 0.5])
  sparse = PROBLEMS['sparse_quadratic_20']
  assert float(sparse.sample(jax.random.PRNGKey(0))['zero_probability']) == pytest.approx(0.99)
  rescale = PROBLEMS['rescale1000_norm_18_p1'].sample(jax.random.PRNGKey(0))
  assert float(rescale['scale']) == 1000.0 and float(rescale['inner']['norm_power']) == 1.0
  assert len(PROBLEMS['sum_9testfunctions_2quadratics'].families) == 11
  assert len(PROBLEMS['sum_7quadratics_noise0.1'].families) == 7


def test_mapping_api():
  assert PROBLEMS.names() == sorted(PROBLEMS) and len(set(PROBLEMS.names())) == 101
  assert isinstance(PROBLEMS, collections.abc.Mapping)
  with pytest.raises(TypeError):
    PROBLEMS['x'] = PROBLEMS['booth']  # immutable
  with pytest.raises(KeyError, match=r"no problem 'rosenbrok'.*Did you mean \['rosenbrock'"):
    PROBLEMS['rosenbrok']
  selected = PROBLEMS.filter(lambda name, family: name.endswith('_noise1'), prefix='r')
  assert selected.names() == ['rosenbrock_noise1']
  with pytest.raises(ValueError, match='matches no problem'):
    PROBLEMS.filter(prefix='resnet')
  with pytest.raises(ValueError, match='duplicate names'):
    problem_sets.ProblemSet('dup', [('a', PROBLEMS['booth']), ('a', PROBLEMS['beale'])])


def test_sampling_is_pure_and_uniform():
  keys = jax.random.split(jax.random.PRNGKey(0), 10100)
  assert PROBLEMS.sample_name(keys[0]) == PROBLEMS.sample_name(keys[0])
  assert PROBLEMS.sample_name(keys[0]) == PROBLEMS.names()[int(jax.jit(PROBLEMS.sample_index)(keys[0]))]
  counts = np.bincount(np.asarray(jax.vmap(PROBLEMS.sample_index)(keys)), minlength=101)
  # 100 expected per name; Pearson chi-square with 100 degrees of freedom has mean 100 and std √200 = 14.1;
  # reject beyond mean + 5 std.
  chi_square = float(((counts - 100.0)**2 / 100.0).sum())
  assert counts.min() > 0 and chi_square < 100 + 5 * 14.1


def test_structure_groups_collect_families_that_compile_together():
  groups = {tuple(v) for v in PROBLEMS.structure_groups().values()}
  assert ('bowl_0.1', 'bowl_1', 'bowl_5', 'bowl_5_angle0.785398') in groups
  assert tuple(sorted(n for n in PROBLEMS if n.startswith('rescale') and 'norm_18' in n)) in groups
  # Members of a group really stack: their cfgs have identical tree structure and shapes.
  cfgs = [PROBLEMS[n].sample(jax.random.PRNGKey(0)) for n in PROBLEMS.filter(prefix='sparse_bowl')]
  assert len({jax.tree.structure(c) for c in cfgs}) == 1
  assert len({tuple(x.shape for x in jax.tree.leaves(c)) for c in cfgs}) == 1


def _evaluate(family, key):
  cfg_key, init_key, batch_key, loss_key = jax.random.split(key, 4)
  task = family.task(family.sample(cfg_key))
  params = task.init(init_key)
  loss, grads = jax.value_and_grad(task.loss)(params, loss_key, task.batch(batch_key, 'train'))
  grad_ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  return loss, grad_ok


def test_every_member_traces_to_a_scalar_loss():
  # Abstract evaluation: no compilation, so this checks all 101 cheaply; the slow test below runs them.
  for name in PROBLEMS:
    loss, grad_ok = jax.eval_shape(lambda k: _evaluate(PROBLEMS[name], k), jax.random.PRNGKey(0))
    assert loss.shape == () and loss.dtype == jnp.float32, name


@pytest.mark.slow
def test_every_member_initialises_and_evaluates_finite_non_negative():
  # One small jit per problem (~100 compilations, the bulk of this test's time). A single jit over all 101
  # problems compiles far slower (minutes) than the sum of the parts, and evaluating eagerly is slower still. Each
  # program runs once, so XLA's backend optimisations (LLVM passes) cost more than they save: compiling at level 0
  # halves this test's time on CPU, and what it checks (a finite, non-negative loss and finite gradients) does not
  # depend on how the backend schedules the same operations.
  for name, key in zip(PROBLEMS.names(), jax.random.split(jax.random.PRNGKey(0), len(PROBLEMS))):
    program = jax.jit(lambda k: _evaluate(PROBLEMS[name], k)).lower(key)
    loss, grad_ok = program.compile(compiler_options={'xla_backend_optimization_level': 0})(key)
    assert np.isfinite(loss) and loss >= 0 and grad_ok, (name, loss, grad_ok)


# --- every named problem: tasks.PROBLEMS -------------------------------------------------------------------------


def test_the_registry_holds_the_wichrowska_set_then_the_extra_problems():
  import tasks
  assert list(problem_sets.PROBLEMS) == list(PROBLEMS) + list(problem_sets.EXTRA_PROBLEMS)
  assert tasks.PROBLEMS is problem_sets.PROBLEMS and len(tasks.PROBLEMS) == 101 + len(problem_sets.EXTRA_PROBLEMS)
  # A looked-up family is built once and kept; a Wichrowska one is the set's problem.
  assert tasks.problem('booth') is tasks.problem('booth')
  assert type(tasks.problem('quadratic_20_noise0.5')) is type(PROBLEMS['quadratic_20_noise0.5'])
  with pytest.raises(KeyError, match=r"no problem 'bowl_11'.*Did you mean \['bowl_1'"):
    tasks.problem('bowl_11')


def test_problem_set_keeps_the_given_order_and_refuses_duplicates_and_strings():
  import tasks
  names = ['mlp_relu_64x64_nf32_bs64', 'booth', 'quadratic_25']
  chosen = tasks.problem_set(names, name='mine')
  assert list(chosen) == names and chosen.name == 'mine' and chosen['booth'] is tasks.problem('booth')
  with pytest.raises(ValueError, match='duplicate names'):
    tasks.problem_set(['booth', 'booth'])
  with pytest.raises(TypeError, match='not the string'):
    tasks.problem_set('booth')
  with pytest.raises(KeyError, match="no problem 'boot'"):
    tasks.problem_set(['boot'])


def test_the_library_exports_building_blocks_not_the_sets_of_past_runs():
  import tasks
  assert {'PROBLEMS', 'problem', 'problem_set', 'wichrowska2017', 'ProblemSet'} <= set(tasks.__all__)
  assert not [n for n in dir(tasks) + dir(problem_sets) if 'training_set' in n or 'TRAINING_PROBLEMS' in n]


@pytest.mark.parametrize('name', list(problem_sets.EXTRA_PROBLEMS))
def test_every_extra_problem_traces_to_a_scalar_loss_on_generated_data(name):
  family = problem_sets.PROBLEMS[name]
  loss, _ = jax.eval_shape(lambda k: _evaluate(family, k), jax.random.PRNGKey(0))
  assert loss.shape == () and loss.dtype == jnp.float32
  dataset = getattr(family.task(family.sample(jax.random.PRNGKey(0))), 'dataset', None)
  assert dataset is None or dataset.name.startswith('synthetic_images'), (name, dataset)
  assert family.name == name  # the name says what the family builds (naming scheme of EXTRA_PROBLEMS)
