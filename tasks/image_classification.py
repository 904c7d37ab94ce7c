"""Image classifiers on real data: Flax (linen) MLPs and small ConvNets trained with softmax cross-entropy.

Each task draws i.i.d. minibatches (with replacement) of a split inside ``jit``::

    idx    ~ Uniform{0, ..., n_split - 1}^B          (jax.random.randint(key, (B,), 0, n_split))
    x_b    = pixel_scale * images[idx]               (uint8 gathered, then scaled to [0, 1])
    loss   = -(1/B) sum_b log softmax(f_params(x_b))[y_b]

The networks are written with ``flax.linen`` (not nnx) because ``Module.init`` / ``Module.apply`` are pure
functions over a plain nested dict of float32 arrays, exactly the parameter pytree a learned optimizer updates.
Initialisation has Flax's default distribution (LeCun-normal kernels, zero biases; see
:meth:`ImageClassificationTask.init` for why it bypasses ``Module.init``), so with inputs in [0, 1] the logits start
small and the initial loss is close to log(10).

The models take any activation *callable*; :mod:`tasks.image_families` passes one that selects among several
activations by a traced index, so instances with different activations share one compiled structure.
"""

from __future__ import annotations

import math
import os
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tasks import datasets as datasets_lib
from tasks.base import Task, check_split

#: The activations the tasks and families know by name.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': jax.nn.relu,
    'tanh': jnp.tanh,
    'sigmoid': jax.nn.sigmoid,
    'elu': jax.nn.elu,
    'gelu': jax.nn.gelu,
    'swish': jax.nn.swish,
}


def get_activation(activation: str | Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
  """An activation by name (a key of :data:`ACTIVATIONS`), or the callable itself."""
  if callable(activation):
    return activation
  if activation not in ACTIVATIONS:
    raise ValueError(f'unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)} or pass a callable.')
  return ACTIVATIONS[activation]


# Standard deviation of N(0, 1) truncated to [-2, 2] (Flax's and Keras' variance-scaling constant).
_TRUNCATED_NORMAL_STDDEV = .87962566103423978


class MLP(nn.Module):
  """Flattens every axis after the batch axis (``[batch, height, width]`` images, ``[batch, features]`` tables), then
  ``Dense -> activation`` per hidden size, then a linear head of ``num_classes`` outputs."""
  hidden_sizes: Sequence[int]
  num_classes: int
  activation: Callable[[jax.Array], jax.Array]

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images.reshape(images.shape[0], -1)
    for width in self.hidden_sizes:
      x = self.activation(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


#: How :class:`ConvNet` computes its convolutions (the same function and parameters either way).
CONV_IMPLS = ('lax', 'patches')


class PatchConv(nn.Module):
  """``nn.Conv(features, (k, k), strides=(2, 2), padding='SAME')`` as image patches times the kernel.

  Same parameters (``kernel [k, k, in, features]``, ``bias [features]``) and the same function as the Flax layer, up
  to float rounding: ``y = patches(x) @ reshape(kernel) + bias``, where ``patches`` (:func:`stride2_patches`) gathers
  each output position's ``k x k x in`` receptive field.

  Why: meta-training ``vmap``s a task over instances that each have their own kernel. A vmapped ``lax.conv`` becomes
  one *grouped* convolution (a group per instance), which XLA's CPU backend runs far slower than the same FLOPs as a
  matmul; here the patches depend only on the (batched) input, and the kernel product becomes a batched matmul
  (``benchmarks/vmapped_conv.py`` measures both).
  """
  features: int
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    return stride2_patches(x, k) @ kernel.reshape(-1, self.features) + bias


def stride2_patches(x: jax.Array, k: int) -> jax.Array:
  """``[batch, H, W, C] -> [batch, ceil(H/2), ceil(W/2), k * k * C]``: the ``k x k`` receptive field of each output of
  a stride-2 'SAME' convolution, features ordered (row, column, channel) like a ``[k, k, C, F]`` kernel's rows.

  Built from ``k * k`` strided slices of the padded input (XLA's padding rule for 'SAME': the extra pixel, if any,
  goes after): copies, no arithmetic. ``jax.lax.conv_general_dilated_patches`` computes the same thing as a
  convolution with a one-hot kernel, 10-20x slower on CPU (measured with jax 0.10.2).
  """
  def pads(size):
    out = -(-size // 2)
    total = max((out - 1) * 2 + k - size, 0)
    return (total // 2, total - total // 2), out
  (pad_h, out_h), (pad_w, out_w) = pads(x.shape[1]), pads(x.shape[2])
  padded = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
  slices = [padded[:, i:i + 2 * (out_h - 1) + 1:2, j:j + 2 * (out_w - 1) + 1:2, :] for i in range(k) for j in range(k)]
  return jnp.concatenate(slices, axis=-1)


class ConvNet(nn.Module):
  """3x3 convolutions with stride 2 ('SAME' padding) per channel count, global average pooling, a linear head.

  Stride 2 instead of pooling keeps the net small and fast on CPU: 28x28 -> 14 -> 7 -> 4 over three layers.
  ``conv_impl='patches'`` computes each convolution as :class:`PatchConv` (same parameters, same function): use it
  for tasks that are ``vmap``ped over instances with their own weights, as in meta-training.
  """
  channels: Sequence[int]
  num_classes: int
  activation: Callable[[jax.Array], jax.Array]
  kernel_size: int = 3
  conv_impl: str = 'lax'

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images[..., None]  # [batch, height, width, 1]
    for index, features in enumerate(self.channels):
      if self.conv_impl == 'patches':
        # Named as nn.Conv would be, so both implementations have the same parameter tree.
        x = PatchConv(features, self.kernel_size, name=f'Conv_{index}')(x)
      else:
        x = nn.Conv(features, (self.kernel_size, self.kernel_size), strides=(2, 2), padding='SAME')(x)
      x = self.activation(x)
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class ImageBatch(NamedTuple):
  """A minibatch: ``images`` float32 ``[batch, height, width]`` in [0, 1], ``labels`` int32 ``[batch]``."""
  images: jax.Array
  labels: jax.Array


class EvalResult(NamedTuple):
  """Mean cross-entropy and accuracy over a whole split."""
  loss: jax.Array
  accuracy: jax.Array


class ImageClassificationTask(Task):
  """Softmax cross-entropy of a Flax classifier on minibatches of an :class:`~tasks.datasets.ImageDataset`.

  Args:
    dataset: the data (from :mod:`tasks.datasets`).
    model: a linen module mapping float images ``[batch, height, width]`` to logits ``[batch, num_classes]``.
    batch_size: examples per minibatch (static).
    name: the task's name.
  """

  def __init__(self, dataset: datasets_lib.ImageDataset, model: nn.Module, batch_size: int, name: str):
    if batch_size < 1:
      raise ValueError(f'batch_size must be a positive integer, got {batch_size}.')
    self.dataset = dataset
    self.model = model
    self.batch_size = int(batch_size)
    self.name = name
    self._shapes = None
    # One jitted evaluator per task object; split and chunk size are static.
    self._evaluate_jit = jax.jit(self._evaluate, static_argnames=('split', 'chunk_size'))

  def init(self, key: jax.Array):
    """Kernels LeCun-normal, biases zero (Flax's default distribution)::

        kernel = sqrt(1 / fan_in) / 0.8796 * z,   z ~ N(0, 1) truncated to [-2, 2],   fan_in = prod(shape[:-1])

    (0.8796 is the standard deviation of the truncated normal, so the kernel's variance is exactly 1/fan_in).
    All kernels are cut from ONE vector of truncated normals: every distinct random shape costs a threefry and an
    erfinv of its own in the compiled program (~0.5 s of compilation each on 2 CPU cores), so Flax's per-parameter
    ``Module.init`` compiles in 1.6 s for a 3-layer MLP, one vector in 0.5 s.
    """
    shapes = self._param_shapes()
    paths_and_shapes, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    for path, _ in paths_and_shapes:
      if path[-1].key not in ('kernel', 'bias'):
        raise ValueError(f'{self.name}: no initialiser for parameter {jax.tree_util.keystr(path)}; '
                         "the task initialises only 'kernel' and 'bias' leaves.")
    kernel_sizes = [math.prod(s.shape) for p, s in paths_and_shapes if p[-1].key == 'kernel']
    normals = jax.random.truncated_normal(key, -2., 2., (sum(kernel_sizes),), jnp.float32)
    leaves, offset = [], 0
    for path, shape in paths_and_shapes:
      if path[-1].key == 'bias':
        leaves.append(jnp.zeros(shape.shape, jnp.float32))
        continue
      size = math.prod(shape.shape)
      scale = math.sqrt(1 / math.prod(shape.shape[:-1])) / _TRUNCATED_NORMAL_STDDEV
      leaves.append(scale * normals[offset:offset + size].reshape(shape.shape))
      offset += size
    return jax.tree.unflatten(treedef, leaves)

  def _param_shapes(self):
    # Shapes only (an abstract trace, no compilation); cached because tasks are rebuilt inside every trace.
    if self._shapes is None:
      dummy = jax.ShapeDtypeStruct((1, *self.dataset.image_shape), jnp.float32)
      self._shapes = jax.eval_shape(self.model.init, jax.random.key(0), dummy)['params']
    return self._shapes

  def batch(self, key: jax.Array, split: str = 'train') -> ImageBatch:
    data = self.dataset.splits[check_split(split)]
    index = jax.random.randint(key, (self.batch_size,), 0, data.labels.shape[0])
    images = jnp.take(data.images, index, axis=0)
    return ImageBatch(self.dataset.images_as_float(images), jnp.take(data.labels, index, axis=0))

  def logits(self, params, images: jax.Array) -> jax.Array:
    return self.model.apply({'params': params}, images)

  def loss(self, params, key: jax.Array, batch: ImageBatch) -> jax.Array:
    del key  # Deterministic given the batch.
    logits = self.logits(params, batch.images)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels))

  def normalizer(self, loss: jax.Array) -> jax.Array:
    """``loss / log(num_classes)``: 1 for a uniform prediction, so classifiers of any class count compare."""
    return loss / math.log(self.dataset.num_classes)

  def _evaluate(self, params, split: str, chunk_size: int) -> EvalResult:
    # Chunks are gathered by (clamped) index and masked rather than padding a copy of the split.
    data = self.dataset.splits[split]
    n = data.labels.shape[0]
    chunk_size = min(chunk_size, n)

    def chunk_sums(chunk):
      index = chunk * chunk_size + jnp.arange(chunk_size)
      valid = index < n
      index = jnp.minimum(index, n - 1)
      images = self.dataset.images_as_float(jnp.take(data.images, index, axis=0))
      labels = jnp.take(data.labels, index, axis=0)
      logits = self.logits(params, images)
      cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      correct = jnp.argmax(logits, axis=-1) == labels
      return jnp.sum(jnp.where(valid, cross_entropy, 0.)), jnp.sum(valid & correct)

    loss_sums, correct_counts = jax.lax.map(chunk_sums, jnp.arange(-(-n // chunk_size)))
    return EvalResult(jnp.sum(loss_sums) / n, jnp.sum(correct_counts) / n)

  def evaluate(self, params, split: str = 'test', chunk_size: int = 1000) -> EvalResult:
    """Mean loss and accuracy over *every* example of ``split`` (chunks of ``chunk_size`` bound the memory).

    Jitted once per (split, chunk size); jittable itself (call ``task._evaluate`` inside your own ``jit``/``vmap``).
    """
    return self._evaluate_jit(params, split=check_split(split), chunk_size=int(chunk_size))

  def accuracy(self, params, split: str = 'test', chunk_size: int = 1000) -> float:
    """Fraction of ``split`` classified correctly (argmax of the logits), over the whole split."""
    return float(self.evaluate(params, split, chunk_size).accuracy)


def _activation_name(activation) -> str:
  return activation if isinstance(activation, str) else getattr(activation, '__name__', 'custom')


def mlp_task(dataset: str | datasets_lib.ImageDataset = 'fashion_mnist', hidden_sizes: Sequence[int] = (128,),
             activation: str | Callable = 'relu', batch_size: int = 128,
             data_dir: str | os.PathLike | None = None) -> ImageClassificationTask:
  """An MLP classifier task, e.g. ``mlp_task('digits', (64, 64))``; ``dataset`` is a name or a loaded dataset."""
  data = datasets_lib.load_dataset(dataset, data_dir) if isinstance(dataset, str) else dataset
  hidden_sizes = tuple(int(h) for h in hidden_sizes)
  if any(h < 1 for h in hidden_sizes):
    raise ValueError(f'hidden sizes must be positive, got {hidden_sizes}.')
  model = MLP(hidden_sizes, data.num_classes, get_activation(activation))
  widths = 'x'.join(map(str, hidden_sizes)) or 'linear'
  return ImageClassificationTask(data, model, batch_size,
                                 name=f'{data.name}_mlp_{widths}_{_activation_name(activation)}_bs{batch_size}')


def conv_task(dataset: str | datasets_lib.ImageDataset = 'fashion_mnist', channels: Sequence[int] = (16, 32, 32),
              activation: str | Callable = 'relu', batch_size: int = 128,
              data_dir: str | os.PathLike | None = None, conv_impl: str = 'lax') -> ImageClassificationTask:
  """A small ConvNet classifier task (see :class:`ConvNet`); ``dataset`` is a name or a loaded dataset.

  ``conv_impl='patches'`` for tasks vmapped over instances (meta-training): the same network, computed as a batched
  matmul instead of a grouped convolution (:class:`PatchConv`).
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS} ('patches' for tasks vmapped over instances), got "
                     f'{conv_impl!r}.')
  data = datasets_lib.load_dataset(dataset, data_dir) if isinstance(dataset, str) else dataset
  channels = tuple(int(c) for c in channels)
  if not channels or any(c < 1 for c in channels):
    raise ValueError(f'channels must be a non-empty sequence of positive counts, got {channels}.')
  model = ConvNet(channels, data.num_classes, get_activation(activation), conv_impl=conv_impl)
  return ImageClassificationTask(
      data, model, batch_size,
      name=f'{data.name}_conv_{"x".join(map(str, channels))}_{_activation_name(activation)}_bs{batch_size}')
