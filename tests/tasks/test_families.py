"""The task-family contract for every synthetic family (small instances), and what the TaskSet families sample."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import families
from tasks import generated_classification as gc
from tasks import matmul_algorithm
from tasks import norm
from tasks import quadratic
from tasks import sampling
from tasks import test_functions
from tasks import wrappers

FAMILIES = {
    'quadratic': quadratic.QuadraticFamily(5),
    'bowl_fixed': quadratic.BowlFamily(5.0, math.pi / 4),
    'test_function': test_functions.TestFunctionFamily('beale'),
    'norm_sampled_power': norm.NormFamily(6, sampling.Uniform(1.0, 3.0)),
    'matmul': matmul_algorithm.MatMulAlgorithmFamily(2, 7),
    'softmax': gc.SoftmaxRegressionFamily(4, batch_size=8, n_samples=32, class_sep=sampling.LogUniform(0.5, 2.0)),
    'mlp': gc.MLPClassifierFamily(3, (4, 3), batch_size=8, n_samples=32),
    'noisy_clusters_mlp': gc.NoisyClustersMLPFamily(3, (4,), batch_size=8, n_samples=32, flip_y=0.4),
    'taskset_quadratic': families.NoisyQuadraticFamily(5),
    'taskset_bowl': families.NoisyBowlFamily(),
    'taskset_test_functions': families.TestFunctionsFamily(),
    'taskset_sparse': families.SparseFamily(quadratic.QuadraticFamily(4)),
    'taskset_rescaled_norm': families.RescaledFamily(norm.NormFamily(4)),
    'log_bowl': wrappers.LogObjectiveFamily(quadratic.BowlFamily(0.1)),
    'sum': wrappers.SumFamily([quadratic.QuadraticFamily(3), test_functions.TestFunctionFamily('booth'),
                               gc.MLPClassifierFamily(2, (3,), batch_size=4, n_samples=16)]),
}

NUM_INSTANCES = 3


def _run(family):
  """One jitted function: sample an instance, init, batch, loss and gradient (compiled once per family)."""
  def run(key):
    cfg_key, init_key, batch_key, loss_key = jax.random.split(key, 4)
    task = family.task(family.sample(cfg_key))
    params = task.init(init_key)
    loss, grads = jax.value_and_grad(task.loss)(params, loss_key, task.batch(batch_key, 'train'))
    return cfg_key, params, loss, grads
  return run


@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_family_contract(name):
  family = FAMILIES[name]
  run = _run(family)
  keys = jax.random.split(jax.random.PRNGKey(0), NUM_INSTANCES)
  single = jax.jit(run)
  looped = [single(k) for k in keys]
  vmapped = jax.jit(jax.vmap(run))(keys)
  for i, (_, params, loss, grads) in enumerate(looped):
    # Finite loss and gradient at init, and >= 0 (Wichrowska's log meta-objective needs it).
    assert np.isfinite(loss) and loss >= 0, (name, loss)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)), name
    # vmap over instances gives what a Python loop gives.
    for a, b in zip(jax.tree.leaves((params, loss, grads)), jax.tree.leaves(jax.tree.map(lambda x: x[i],
                                                                                      vmapped[1:]))):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5, err_msg=name)
  # Deterministic for a key.
  again = single(keys[0])
  for a, b in zip(jax.tree.leaves(looped[0]), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)
  # Instances differ (fresh random problem or fresh init per key).
  assert not np.array_equal(np.asarray(looped[0][2]), np.asarray(looped[1][2])), name
  # The cfg structure never depends on the key.
  assert jax.tree.structure(family.sample(keys[0])) == jax.tree.structure(family.sample(keys[1]))


@pytest.mark.parametrize('split', ['train', 'inner_valid', 'outer_valid', 'test'])
def test_batches_for_every_split(split):
  task = FAMILIES['sum'].task(FAMILIES['sum'].sample(jax.random.PRNGKey(0)))
  _, _, (x, y) = task.batch(jax.random.PRNGKey(1), split)
  assert x.shape == (4, 2) and y.shape == (4,)


def test_unknown_split_is_rejected():
  task = FAMILIES['mlp'].task(FAMILIES['mlp'].sample(jax.random.PRNGKey(0)))
  with pytest.raises(ValueError, match="unknown split 'valid'"):
    task.batch(jax.random.PRNGKey(1), 'valid')


def test_quadratic_sample_structure_is_log_uniform_in_range():
  dims = [quadratic.QuadraticFamily.sample_structure(k).dim for k in jax.random.split(jax.random.PRNGKey(0), 400)]
  assert min(dims) >= 10 and max(dims) <= 1000
  # log-uniform on [10, 1001): P(dim < 100) = log(10)/log(100.1) ≈ 0.4998; binomial standard error over 400 draws
  # is 0.025, allow 5 of them.
  assert abs(np.mean(np.asarray(dims) < 100) - 0.4998) < 5 * 0.025
  assert families.NoisyQuadraticFamily.sample_structure(jax.random.PRNGKey(3)).structure_key == (
      'gradient_noise', ('quadratic', families.NoisyQuadraticFamily.sample_structure(jax.random.PRNGKey(3)).dim))


def test_taskset_distributions():
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  noise = np.asarray(jax.vmap(families.TASKSET_NOISE)(keys))
  nonzero = noise[noise > 0]
  # Zero with probability 1/2: binomial standard error √(0.25/4000) = 0.0079, allow 5.
  assert abs((noise == 0).mean() - 0.5) < 5 * 0.0079
  # The rest log-uniform on [0.01, 10]: log10 uniform on [−2, 1], mean −0.5, std 3/√12; standard error of the mean
  # ≈ 0.866/√2000 = 0.019, allow 5.
  assert nonzero.min() >= 0.01 and nonzero.max() <= 10
  assert abs(np.log10(nonzero).mean() + 0.5) < 5 * 0.866 / math.sqrt(len(nonzero))
  zero_probability = np.asarray(jax.vmap(families.TASKSET_ZERO_PROBABILITY)(keys))
  assert zero_probability.min() >= 0.9 and zero_probability.max() <= 0.99
  scale = np.log10(np.asarray(jax.vmap(families.TASKSET_SCALE)(keys)))
  assert scale.min() >= -3 and scale.max() <= 3 and abs(scale.mean()) < 5 * (6 / math.sqrt(12)) / math.sqrt(4000)


def test_test_functions_family_samples_every_function_with_bounded_offsets():
  family = families.TestFunctionsFamily()
  cfgs = jax.vmap(family.sample)(jax.random.split(jax.random.PRNGKey(0), 900))
  counts = np.bincount(np.asarray(cfgs['function']), minlength=9)
  # 100 expected per function; binomial standard error √(900·(1/9)(8/9)) = 9.4, allow 5.
  assert np.all(np.abs(counts - 100) < 5 * 9.4)
  widths = np.asarray([test_functions.init_width(n) for n in family.functions])[np.asarray(cfgs['function'])]
  assert np.all(np.abs(np.asarray(cfgs['offset'])) <= 0.1 * widths + 1e-6)
  assert np.all((np.asarray(cfgs['scale']) >= 0.1 - 1e-6) & (np.asarray(cfgs['scale']) <= 10 + 1e-5))


def test_shifted_test_function_optimum_moves_with_offset():
  names = family_names = families.TestFunctionsFamily().functions
  index = family_names.index('rosenbrock')
  offset = jnp.array([0.3, -0.2])
  task = families.ShiftedTestFunction(names, jnp.asarray(index), offset, jnp.asarray(2.0))
  np.testing.assert_allclose(task.loss(jnp.array([1.0, 1.0]) + offset, None, None), 0.0, atol=1e-6)
  np.testing.assert_allclose(task.loss(jnp.zeros(2), None, None), 2 * test_functions.rosenbrock(-offset), rtol=1e-6)


def test_sample_family_returns_fixed_structure_families():
  kinds = set()
  for key in jax.random.split(jax.random.PRNGKey(0), 40):
    family = families.sample_family(key, max_dim=50)
    assert family.structure_key == families.sample_family(key, max_dim=50).structure_key  # pure in the key
    kinds.add(family.structure_key[0])
  assert {'gradient_noise', 'sparse_gradients', 'rescale', 'log_objective'} <= kinds


def test_bad_family_arguments_are_rejected():
  with pytest.raises(ValueError, match='positive integer dim'):
    quadratic.QuadraticFamily(0)
  with pytest.raises(ValueError, match='condition_number > 0'):
    quadratic.BowlFamily(-1.0)
  with pytest.raises(ValueError, match='n² <= k <= n³'):
    matmul_algorithm.MatMulAlgorithmFamily(2, 3)
  with pytest.raises(ValueError, match='unknown activation'):
    gc.MLPClassifierFamily(3, (4,), 8, activation='swish')
  with pytest.raises(ValueError, match='n_features >= 2'):
    gc.SoftmaxRegressionFamily(1, 8)
  with pytest.raises(ValueError, match=r'flip_y .* in \[0, 1\]'):
    gc.NoisyClustersMLPFamily(3, (4,), 8, n_samples=32, flip_y=1.5)
  with pytest.raises(ValueError, match='LogUniform needs 0 < low'):
    sampling.LogUniform(0.0, 1.0)
  with pytest.raises(TypeError, match='number or a tasks.sampling.Distribution'):
    quadratic.BowlFamily(1.0, angle='pi').sample(jax.random.PRNGKey(0))


def test_noisy_clusters_training_labels_are_wrong_at_half_the_flip_rate():
  # A label is redrawn with probability flip_y, and a redrawn label is wrong half the time. The same source without
  # flips, sampled with the same key, gives the same points and their clusters' labels. With 20,000 points the
  # wrong fraction's standard deviation is sqrt(0.2 * 0.8 / 20000) ~ 0.003: a tolerance of 0.015 is 5 of them.
  family = gc.NoisyClustersMLPFamily(10, (8,), batch_size=8, n_samples=20_000, flip_y=0.4)
  cfg = family.sample(jax.random.PRNGKey(3))
  clean = cfg['source']._replace(flip_y=jnp.asarray(0.0))
  x_clean, y_clean = clean.sample(jax.random.split(jax.random.PRNGKey(3))[1], family.n_samples)
  np.testing.assert_array_equal(x_clean, cfg['x'])
  assert abs(float(jnp.mean(y_clean != cfg['y'])) - 0.2) < 0.015
  assert family.name == 'mlp_relu_8_clusters_nf10_n20000_flip0.4_bs8'


def test_noisy_clusters_without_l2_is_the_cross_entropy_alone():
  regularised = gc.NoisyClustersMLPFamily(4, (5,), batch_size=8, n_samples=32, flip_y=0.4)
  plain = gc.NoisyClustersMLPFamily(4, (5,), batch_size=8, n_samples=32, flip_y=0.4, l2_reg_scale=0.0)
  assert plain.name == 'mlp_relu_5_clusters_nf4_n32_flip0.4_nol2_bs8'
  assert plain.structure_key != regularised.structure_key  # different losses never share a compiled program
  cfg = regularised.sample(jax.random.PRNGKey(0))
  task_l2, task_plain = regularised.task(cfg), plain.task(cfg)
  params = task_l2.init(jax.random.PRNGKey(1))
  batch = task_l2.batch(jax.random.PRNGKey(2))
  l2 = np.mean([np.sum(np.square(p)) for p in jax.tree.leaves(params)])
  difference = task_l2.loss(params, None, batch) - task_plain.loss(params, None, batch)
  # Two float32 losses of order 1 differ by their rounding, ~1e-7 each: 1e-6 absolute.
  np.testing.assert_allclose(difference, gc.L2_REG_SCALE * l2, rtol=0, atol=1e-6)
