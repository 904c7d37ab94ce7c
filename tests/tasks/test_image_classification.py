"""Image classification tasks: initial loss, batches drawn from the right split, evaluation, and training on digits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tasks import datasets
from tasks import image_classification as ic


def _init_losses_and_grads(task, num_batches=8):
  """Losses at init on ``num_batches`` training batches, and the gradient on the first; one compilation."""

  @jax.jit
  def run(init_key, keys):
    params = task.init(init_key)
    losses = jax.vmap(lambda k: task.loss(params, k, task.batch(k, 'train')))(keys)
    grads = jax.grad(task.loss)(params, keys[0], task.batch(keys[0], 'train'))
    return params, losses, grads

  return run(jax.random.key(0), jax.random.split(jax.random.key(1), num_batches))


# The heads are LeCun-normal with zero bias, so at init each logit is ~N(0, s^2), s^2 = mean square of the last hidden
# layer (<~ 0.5 for these activations of [0, 1] inputs). Expanding log-sum-exp to second order gives
# loss ~= log 10 + 0.45 s^2, hence a tolerance of 0.25. Broken scaling fails it by far (0..255 inputs give loss >> 10).
INIT_LOSS_TOLERANCE = 0.25


@pytest.mark.parametrize('make', [lambda: ic.mlp_task('digits', (64, 64), 'tanh', batch_size=64),
                                  lambda: ic.conv_task('digits', (8, 16), 'relu', batch_size=64)])
def test_digits_loss_at_init_is_log10(make):
  params, losses, grads = _init_losses_and_grads(make())
  assert abs(float(losses.mean()) - math.log(10)) < INIT_LOSS_TOLERANCE
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
  # Every parameter gets a finite gradient, and no layer is dead (numpy checks: no further compilations).
  assert all(np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(grads))


@pytest.mark.data
@pytest.mark.parametrize('make', [lambda: ic.mlp_task('fashion_mnist', (128,)),
                                  lambda: ic.conv_task('fashion_mnist', (8, 16, 16), batch_size=32)])
def test_fashion_mnist_loss_at_init_is_log10(fashion_mnist_dir, make):
  task = make()
  _, losses, grads = _init_losses_and_grads(task)
  loss = float(losses.mean())
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert abs(loss - math.log(10)) < INIT_LOSS_TOLERANCE
  assert abs(float(task.normalizer(jnp.float32(loss))) - 1) < INIT_LOSS_TOLERANCE / math.log(10)


def test_batches_are_deterministic_and_come_from_their_split():
  task = ic.mlp_task('digits', (16,), batch_size=256)
  digits = task.dataset
  rows = {split: {row.tobytes() for row in np.asarray(digits.splits[split].images)} for split in digits.splits}
  key = jax.random.key(7)
  for split in ('train', 'test'):
    batch = task.batch(key, split)
    assert batch.images.shape == (256, 8, 8) and batch.images.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(batch.images), np.asarray(task.batch(key, split).images))
    raw = np.rint(np.asarray(batch.images) * 16).astype(np.uint8)
    assert all(row.tobytes() in rows[split] for row in raw)
  # Train and test draws differ, and so do draws for different keys.
  assert not np.array_equal(task.batch(key, 'train').labels, task.batch(jax.random.key(8), 'train').labels)
  with pytest.raises(ValueError, match="unknown split 'valid'"):
    task.batch(key, 'valid')


def test_evaluate_equals_a_direct_full_split_computation():
  task = ic.mlp_task('digits', (32,), 'relu')
  params = task.init(jax.random.key(0))
  data = task.dataset.splits['test']
  logits = task.logits(params, task.dataset.images_as_float(data.images))
  expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, data.labels).mean()
  expected_accuracy = jnp.mean(jnp.argmax(logits, -1) == data.labels)
  # 300 test examples in chunks of 128: the last chunk is partial, so the masking is exercised.
  result = task.evaluate(params, 'test', chunk_size=128)
  np.testing.assert_allclose(result.loss, expected_loss, rtol=1e-5)
  assert float(result.accuracy) == pytest.approx(float(expected_accuracy), abs=1e-7)


def test_adam_trains_the_digits_mlp_to_stated_test_accuracy():
  # 300 Adam steps (lr 3e-3, batch 128) are ~32 epochs of the 1197 training digits. Measured over seeds 0..3: test
  # accuracy 0.967..0.983. The bound 0.93 leaves ~11 of the 300 test digits of margin (binomial sd ~3 digits) and
  # still fails any broken loss, batch or init (chance is 0.1, a linear model on raw pixels ~0.9 needs far more steps).
  task = ic.mlp_task('digits', (64,), 'relu', batch_size=128)
  optimizer = optax.adam(3e-3)

  @jax.jit
  def train(key):
    params = task.init(key)

    def step(carry, key):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(task.loss)(params, key, task.batch(key, 'train'))
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, 300))
    return params, losses

  params, losses = train(jax.random.key(0))
  assert float(losses[-20:].mean()) < 0.3
  assert task.accuracy(params, 'test') >= 0.93


def test_bad_arguments_name_the_problem():
  with pytest.raises(ValueError, match="unknown activation 'relu6'.*'gelu'"):
    ic.mlp_task('digits', activation='relu6')
  with pytest.raises(ValueError, match='batch_size must be a positive integer, got 0'):
    ic.mlp_task('digits', batch_size=0)
  with pytest.raises(ValueError, match='channels must be a non-empty'):
    ic.conv_task('digits', channels=())
  with pytest.raises(ValueError, match='hidden sizes must be positive'):
    ic.mlp_task('digits', hidden_sizes=(0,))


def test_tasks_on_one_dataset_share_its_device_arrays():
  a, b = ic.mlp_task('digits'), ic.conv_task('digits')
  assert a.dataset is b.dataset is datasets.load_digits()


def test_init_kernels_are_lecun_normal_and_biases_zero():
  task = ic.mlp_task('digits', (256, 256), 'relu')
  params = jax.tree.map(np.asarray, jax.jit(task.init)(jax.random.key(0)))
  kernels = [params[f'Dense_{i}']['kernel'] for i in range(3)]
  assert [k.shape for k in kernels] == [(64, 256), (256, 256), (256, 10)]
  for layer, kernel in enumerate(kernels):
    bound = 2 / math.sqrt(kernel.shape[0]) / 0.8796256610342398  # Truncation at 2 standard normal deviations.
    assert np.abs(kernel).max() <= bound * (1 + 1e-6)
    # Variance 1/fan_in. The relative standard error of a sample std over n draws is ~1/sqrt(2n): 1.1% for the
    # smallest kernel (2560 draws), so 5% is > 4 standard errors.
    np.testing.assert_allclose(kernel.std(), 1 / math.sqrt(kernel.shape[0]), rtol=0.05)
    np.testing.assert_array_equal(params[f'Dense_{layer}']['bias'], 0)
  # Kernels are different slices of the draw, not copies (the first 10 entries would then coincide).
  assert not np.allclose(kernels[0].ravel()[:10] * 8, kernels[1].ravel()[:10] * 16)
  # Deterministic for a key, different across keys.
  np.testing.assert_array_equal(np.asarray(jax.jit(task.init)(jax.random.key(0))['Dense_0']['kernel']), kernels[0])
  assert not np.array_equal(np.asarray(jax.jit(task.init)(jax.random.key(1))['Dense_0']['kernel']), kernels[0])


# Even, odd (SAME pads one pixel after), and Fashion-MNIST's 28 -> 14 -> 7 -> 4.
@pytest.mark.parametrize('size', [8, 7, 28])
def test_patch_convolution_is_the_flax_convolution(size):
  """conv_impl='patches' computes the same network as nn.Conv from the same parameter tree: logits and gradients
  agree to float32 rounding (the same products, summed in another order: rtol 1e-5 of each tensor's largest value)."""
  images = jax.random.uniform(jax.random.key(0), (5, size, size))
  flax_net = ic.ConvNet((4, 8, 8), 10, jax.nn.relu)
  patch_net = ic.ConvNet((4, 8, 8), 10, jax.nn.relu, conv_impl='patches')
  params = flax_net.init(jax.random.key(1), images)
  assert jax.tree.map(jnp.shape, patch_net.init(jax.random.key(1), images)) == jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(patch_net.apply(params, images), flax_net.apply(params, images), rtol=1e-5, atol=1e-6)

  def grads(net):
    return jax.grad(lambda p: jnp.sum(jnp.sin(net.apply(p, images))))(params)
  for got, want in zip(jax.tree.leaves(grads(patch_net)), jax.tree.leaves(grads(flax_net))):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_conv_task_rejects_an_unknown_conv_impl():
  with pytest.raises(ValueError, match="conv_impl must be one of .*'patches' for tasks vmapped"):
    ic.conv_task('digits', conv_impl='grouped')
