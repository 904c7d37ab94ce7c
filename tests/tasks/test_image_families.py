"""Image classifier families: structures drawn from their ranges, jittable sampling, vmap equal to a Python loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import image_classification as ic
from tasks import image_families as fam


def test_structures_come_from_the_stated_ranges_and_are_deterministic():
  mlp, conv = fam.MLPFamily(), fam.ConvNetFamily()
  keys = jax.random.split(jax.random.key(0), 40)
  mlps = [mlp.sample_structure(k) for k in keys]
  convs = [conv.sample_structure(k) for k in keys]
  assert mlps[3] == mlp.sample_structure(keys[3]) and convs[3] == conv.sample_structure(keys[3])
  for s in mlps:
    assert s.architecture == 'mlp' and s.dataset in mlp.datasets and s.batch_size in mlp.batch_sizes
    assert len(s.sizes) in mlp.depths and len(set(s.sizes)) == 1 and s.sizes[0] in mlp.widths
  for s in convs:
    assert s.architecture == 'conv' and s.dataset in conv.datasets and len(s.sizes) in conv.depths
    assert s.sizes[0] in conv.base_channels and all(b == 2 * a for a, b in zip(s.sizes, s.sizes[1:]))
  # 40 draws cover the choices (a choice among k options is missed with probability (1 - 1/k)^40 < 2e-4 for k <= 5).
  assert {s.dataset for s in mlps} == set(mlp.datasets)
  assert {len(s.sizes) for s in mlps} == set(mlp.depths)
  assert {s.sizes[0] for s in mlps} == set(mlp.widths)
  assert {s.batch_size for s in convs} == set(conv.batch_sizes)


def test_fixed_family_is_its_own_structure_key():
  a = fam.FixedImageClassifierFamily('digits', 'mlp', (32,), 64)
  b = fam.FixedImageClassifierFamily('digits', 'mlp', (32,), 64)
  c = fam.FixedImageClassifierFamily('digits', 'mlp', (32,), 128)
  assert a.structure_key == b.structure_key and hash(a) == hash(b)
  assert a.structure_key != c.structure_key
  assert a.name == 'digits_mlp_32_bs64'


def test_sampled_activations_are_uniform():
  family = fam.FixedImageClassifierFamily('digits', 'mlp', (8,), 16)
  n = 6000
  cfgs = jax.jit(jax.vmap(family.sample))(jax.random.split(jax.random.key(0), n))
  counts = np.bincount(np.asarray(cfgs.activation), minlength=len(family.activations))
  # Each count is Binomial(6000, 1/6): mean 1000, sd 28.9; 5 sd = 145 bounds a false failure below 1e-5.
  assert len(counts) == len(family.activations)
  np.testing.assert_allclose(counts, n / len(family.activations), atol=145)


@pytest.mark.parametrize('family', [
    fam.FixedImageClassifierFamily('digits', 'mlp', (16, 16), 32, activations=('relu', 'sigmoid', 'swish')),
    fam.FixedImageClassifierFamily('digits', 'conv', (4, 8), 16, activations=('relu', 'tanh', 'gelu')),
], ids=['mlp', 'conv'])
def test_vmap_over_instances_equals_a_loop_over_plainly_built_tasks(family):
  # One instance per activation (sampling is tested above), so every branch of the traced switch is checked.
  num = len(family.activations)
  cfgs = fam.ImageTaskConfig(jnp.arange(num, dtype=jnp.int32))
  init_keys = jax.random.split(jax.random.key(4), num)
  batch_keys = jax.random.split(jax.random.key(5), num)

  def init_loss_and_grad(cfg, init_key, batch_key):
    task = family.task(cfg)
    params = task.init(init_key)
    return (params,) + jax.value_and_grad(task.loss)(params, batch_key, task.batch(batch_key, 'outer_valid'))

  # To numpy at once: indexing device arrays per instance would compile a slice per leaf shape.
  params, losses, grads = jax.tree.map(np.asarray, jax.jit(jax.vmap(init_loss_and_grad))(cfgs, init_keys, batch_keys))
  make = ic.mlp_task if family.architecture == 'mlp' else ic.conv_task
  # The references name their activation outright: no switch, no vmap, their own compilations. Initialisation does
  # not depend on the activation, so one compiled reference init serves all instances.
  reference_init = jax.jit(make(family.dataset, family.sizes, family.activations[0], family.batch_size).init)
  for i, activation in enumerate(family.activations):
    task = make(family.dataset, family.sizes, activation, family.batch_size)
    reference_params = reference_init(init_keys[i])
    jax.tree.map(lambda p, r: np.testing.assert_array_equal(p[i], r), params, reference_params)
    loss, grad = jax.jit(lambda p, b: jax.value_and_grad(task.loss)(p, b, task.batch(b, 'outer_valid')))(
        reference_params, batch_keys[i])
    np.testing.assert_allclose(losses[i], loss, rtol=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g[i], r, rtol=1e-4, atol=1e-6), grads, grad)
  # Different activations really give different losses (else the equality above would prove little).
  assert len(set(np.asarray(losses).round(5).tolist())) == num


def test_bad_family_arguments_name_the_problem():
  with pytest.raises(ValueError, match="architecture must be 'mlp' or 'conv', got 'rnn'"):
    fam.FixedImageClassifierFamily('digits', 'rnn', (8,), 16)
  with pytest.raises(ValueError, match="unknown activation 'softplus2'"):
    fam.FixedImageClassifierFamily('digits', 'mlp', (8,), 16, activations=('relu', 'softplus2'))
  with pytest.raises(ValueError, match='widths must list at least one option'):
    fam.MLPFamily(widths=())
