"""Two-class classifiers on generated data (Wichrowska et al. 2017: SoftmaxRegression and FullyConnected on
``datasets.random`` / ``datasets.random_mlp``), with the data generated in JAX from the family's key.

Models and loss, as in problem_generator.SoftmaxClassifier:

* softmax regression: ``logits = x·W + b``, W ∈ R^{f×2}; sigmoid MLP: ``logits = MLP_σ(x)`` with the given hidden
  sizes, a sigmoid after every hidden layer and 2 linear outputs;
* every tensor (weights and biases) starts ``N(0, 1)·1.2/√shape[0]``;
* ``loss = mean_batch sigmoid_xent(logits[:, 0], label) + 1e-3·mean_over_tensors(Σ p²)``. Only logit column 0
  enters the data term (the original's 2-class special case); column 1 is pulled to 0 by the L2 term alone. The loss
  is ≥ 0.

Data, drawn fresh for every sampled instance:

* **informative clusters** (sklearn ``make_classification(n_features=f, n_informative=f, n_redundant=0,
  n_classes=2, class_sep=sep)``): 2 clusters per class centred on distinct vertices of the hypercube
  {−sep, +sep}^f; a point is ``z·A_k + c_k`` with z ~ N(0, I), ``A_k ~ U(−1, 1)^{f×f}`` the cluster's mixing matrix;
  1% of labels are replaced by a uniformly random class (flip_y = 0.01); features are permuted at random.
  Simplifications vs sklearn, made so that generation is one jittable function: (1) each point's cluster is drawn
  uniformly instead of splitting ``n_samples`` into exactly equal clusters; (2) the 4 vertices are made distinct
  by giving two randomly chosen coordinates the 4 distinct sign patterns in random order and drawing the other
  coordinates uniformly (sklearn draws 4 distinct vertices uniformly; for f = 2 the two coincide).
* **random ReLU teacher** (``datasets.random_mlp``): x ~ N(0, I); 6 bias-free layers of width 20, each weight
  ``N(0, 1)·√2/√f`` (the original scales every layer by the input dimension f, not its own fan-in) and each
  followed by a ReLU; label = ``out[:, 0] > 0``.

Splits: ``train`` batches are drawn (uniformly with replacement) from the instance's fixed training set of
``n_samples`` points (1000 in every Wichrowska spec), so a model can overfit it. ``inner_valid``, ``outer_valid``
and ``test`` batches are fresh points from the same generating distribution, i.e. unbounded held-out data.
Deviation: the original softmax specs reuse one dataset (seed 123) for every build; here every instance has its own.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from tasks import base
from tasks import sampling

#: problem_generator's l2_reg_scale flag.
L2_REG_SCALE = 1e-3
#: sklearn make_classification's default label noise.
FLIP_Y = 0.01

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'sigmoid': jax.nn.sigmoid, 'relu': jax.nn.relu, 'tanh': jnp.tanh, 'elu': jax.nn.elu,
}


class InformativeClusters(NamedTuple):
  """The generating distribution of make_classification-style data (see the module docstring)."""
  centroids: jax.Array      # [4, f]: clusters 0, 2 are class 0; clusters 1, 3 are class 1
  mixing: jax.Array         # [4, f, f]
  flip_y: jax.Array         # scalar

  def sample(self, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
    cluster_key, z_key, flip_key, label_key = jax.random.split(key, 4)
    cluster = jax.random.randint(cluster_key, (num,), 0, self.centroids.shape[0])
    z = jax.random.normal(z_key, (num, self.centroids.shape[1]), jnp.float32)
    # Transform by every cluster's matrix and pick, rather than gathering a [num, f, f] stack of matrices.
    per_cluster = jnp.einsum('nf,kfg->kng', z, self.mixing) + self.centroids[:, None, :]
    x = jnp.take_along_axis(per_cluster, cluster[None, :, None], axis=0)[0]
    flip = jax.random.uniform(flip_key, (num,)) < self.flip_y
    labels = jnp.where(flip, jax.random.randint(label_key, (num,), 0, 2), cluster % 2)
    return x, labels.astype(jnp.int32)


def informative_clusters(key: jax.Array, n_features: int, class_sep, flip_y: float = FLIP_Y) -> InformativeClusters:
  """Draws a make_classification-style distribution: 2 classes × 2 clusters on hypercube vertices ±class_sep."""
  if n_features < 2:
    raise ValueError(f'informative-cluster data needs n_features >= 2 (4 distinct hypercube vertices), '
                     f'got {n_features}.')
  code_key, bits_key, mix_key, perm_key = jax.random.split(key, 4)
  codes = jax.random.permutation(code_key, 4)
  distinct = jnp.stack([codes % 2, codes // 2], axis=1)                       # 4 distinct patterns in 2 coords
  rest = jax.random.bernoulli(bits_key, 0.5, (4, n_features - 2)).astype(jnp.int32)
  bits = jnp.concatenate([distinct, rest], axis=1).astype(jnp.float32)
  centroids = (2 * bits - 1) * class_sep
  mixing = jax.random.uniform(mix_key, (4, n_features, n_features), jnp.float32, -1.0, 1.0)
  # A random feature order, so the two "distinct" coordinates are not always the first two.
  order = jax.random.permutation(perm_key, n_features)
  return InformativeClusters(centroids[:, order], mixing[:, :, order], jnp.asarray(flip_y, jnp.float32))


class ReLUTeacher(NamedTuple):
  """Labels from a random bias-free ReLU network (``datasets.random_mlp``)."""
  weights: tuple[jax.Array, ...]

  def sample(self, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(key, (num, self.weights[0].shape[0]), jnp.float32)
    h = x
    for w in self.weights:
      h = jax.nn.relu(h @ w)
    return x, (h[:, 0] > 0).astype(jnp.int32)


def relu_teacher(key: jax.Array, n_features: int, num_layers: int = 6, width: int = 20) -> ReLUTeacher:
  scale = jnp.sqrt(2.0) / jnp.sqrt(float(n_features))
  sizes = [n_features] + [width] * num_layers
  keys = jax.random.split(key, num_layers)
  return ReLUTeacher(tuple(jax.random.normal(k, (m, n), jnp.float32) * scale
                           for k, m, n in zip(keys, sizes[:-1], sizes[1:])))


def init_layers(key: jax.Array, sizes: Sequence[int]) -> tuple[dict, ...]:
  """Dense layers ``{'w': [m, n], 'b': [n]}``, every tensor ``N(0, 1)·1.2/√shape[0]``."""
  layers = []
  for k, m, n in zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:]):
    w_key, b_key = jax.random.split(k)
    layers.append({'w': jax.random.normal(w_key, (m, n), jnp.float32) * 1.2 / jnp.sqrt(float(m)),
                   'b': jax.random.normal(b_key, (n,), jnp.float32) * 1.2 / jnp.sqrt(float(n))})
  return tuple(layers)


class GeneratedClassification(base.Task):
  """A dense classifier on a generated two-class dataset (see the module docstring for model, loss and splits).

  Args:
    x, y: the training set, [n_samples, f] floats and [n_samples] int labels.
    source: the generating distribution (has ``sample(key, num) -> (x, y)``), for the held-out splits.
    hidden_sizes: () for softmax regression.
    batch_size: examples per batch, every split.
    activation: name in :data:`ACTIVATIONS`, applied after each hidden layer.
    l2_reg_scale: weight of the L2 term (Wichrowska's 1e-3 by default; 0 for none).
  """

  def __init__(self, x, y, source, hidden_sizes: Sequence[int], batch_size: int, activation: str = 'sigmoid',
               name: str = 'classifier', l2_reg_scale: float = L2_REG_SCALE):
    self.x, self.y, self.source = x, y, source
    self.sizes = (x.shape[1],) + tuple(hidden_sizes) + (2,)
    self.batch_size, self.activation, self.name = batch_size, ACTIVATIONS[activation], name
    self.l2_reg_scale = l2_reg_scale

  def init(self, key):
    return init_layers(key, self.sizes)

  def batch(self, key, split='train'):
    key = jax.random.fold_in(key, base.SPLITS.index(base.check_split(split)))
    if split == 'train':
      index = jax.random.randint(key, (self.batch_size,), 0, self.x.shape[0])
      return self.x[index], self.y[index]
    return self.source.sample(key, self.batch_size)

  def logits(self, params, x):
    h = x
    for layer in params[:-1]:
      h = self.activation(h @ layer['w'] + layer['b'])
    return h @ params[-1]['w'] + params[-1]['b']

  def loss(self, params, key, batch):
    del key
    x, labels = batch
    z = self.logits(params, x)[:, 0]
    # Sigmoid cross-entropy softplus(z) − y·z, stable for large |z|.
    cross_entropy = jnp.mean(jax.nn.softplus(z) - labels.astype(z.dtype) * z)
    if not self.l2_reg_scale:
      return cross_entropy
    l2 = jnp.mean(jnp.stack([jnp.sum(p**2) for p in jax.tree.leaves(params)]))
    return cross_entropy + self.l2_reg_scale * l2


def _check_sizes(n_features, batch_size, n_samples, hidden_sizes=()):
  for label, value in [('n_features', n_features), ('batch_size', batch_size), ('n_samples', n_samples)] + [
      ('hidden size', h) for h in hidden_sizes]:
    if int(value) != value or value < 1:
      raise ValueError(f'{label} must be a positive integer, got {value!r}.')


class SoftmaxRegressionFamily(base.TaskFamily):
  """Softmax regression on informative-cluster data; each sample draws a new distribution and training set.

  ``class_sep`` (cluster separation; larger is easier) may be a number or a :mod:`tasks.sampling` distribution.
  """

  def __init__(self, n_features: int, batch_size: int, n_samples: int = 1000,
               class_sep: sampling.Hyperparameter = 1.0):
    _check_sizes(n_features, batch_size, n_samples)
    if n_features < 2:
      raise ValueError(f'SoftmaxRegressionFamily needs n_features >= 2, got {n_features}.')
    self.n_features, self.batch_size, self.n_samples, self.class_sep = n_features, batch_size, n_samples, class_sep
    self.name = f'softmax_{n_features}_bs{batch_size}'

  def sample(self, key):
    sep_key, dist_key, data_key = jax.random.split(key, 3)
    source = informative_clusters(dist_key, self.n_features, sampling.draw(self.class_sep, sep_key))
    x, y = source.sample(data_key, self.n_samples)
    return {'x': x, 'y': y, 'source': source}

  def task(self, cfg):
    return GeneratedClassification(cfg['x'], cfg['y'], cfg['source'], (), self.batch_size, name=self.name)

  @property
  def structure_key(self):
    return ('softmax_regression', self.n_features, self.batch_size, self.n_samples)

  def __repr__(self):
    return (f'SoftmaxRegressionFamily(n_features={self.n_features}, batch_size={self.batch_size}, '
            f'n_samples={self.n_samples}, class_sep={self.class_sep!r})')


class MLPClassifierFamily(base.TaskFamily):
  """An MLP classifier (sigmoid by default, as Wichrowska's FullyConnected) on random-ReLU-teacher labels."""

  def __init__(self, n_features: int, hidden_sizes: Sequence[int], batch_size: int, n_samples: int = 1000,
               activation: str = 'sigmoid'):
    hidden_sizes = tuple(hidden_sizes)
    _check_sizes(n_features, batch_size, n_samples, hidden_sizes)
    if activation not in ACTIVATIONS:
      raise ValueError(f'unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}.')
    self.n_features, self.hidden_sizes, self.batch_size = n_features, hidden_sizes, batch_size
    self.n_samples, self.activation = n_samples, activation
    self.name = f'mlp_{activation}_{"x".join(map(str, hidden_sizes))}_nf{n_features}_bs{batch_size}'

  def sample(self, key):
    teacher_key, data_key = jax.random.split(key)
    teacher = relu_teacher(teacher_key, self.n_features)
    x, y = teacher.sample(data_key, self.n_samples)
    return {'x': x, 'y': y, 'source': teacher}

  def task(self, cfg):
    return GeneratedClassification(cfg['x'], cfg['y'], cfg['source'], self.hidden_sizes, self.batch_size,
                                   self.activation, name=self.name)

  @property
  def structure_key(self):
    return ('mlp_classifier', self.n_features, self.hidden_sizes, self.batch_size, self.n_samples, self.activation)

  def __repr__(self):
    return (f'MLPClassifierFamily(n_features={self.n_features}, hidden_sizes={self.hidden_sizes}, '
            f'batch_size={self.batch_size}, n_samples={self.n_samples}, activation={self.activation!r})')


class NoisyClustersMLPFamily(base.TaskFamily):
  """An MLP that can only fit its small training set by memorising wrong labels (informative-cluster data).

  Each instance draws an informative-cluster distribution (:func:`informative_clusters`, ``class_sep`` as given) in
  which a fraction ``flip_y`` of labels is replaced by a uniformly random class, so about ``flip_y / 2`` of the
  ``n_samples`` training labels are wrong. A net wider than the data (``n_samples`` a few hundred) first fits the
  clusters, then drives the training loss down by memorising the wrong labels: a regime of small, erratic gradients
  late in training, as in small tabular classifiers (for example ``diabetes_binary``, whose features explain about
  half of the target's variance). Model, loss and splits as :class:`GeneratedClassification`; with
  ``l2_reg_scale=0`` nothing holds the training loss up, and memorisation drives it towards 0 as it does for an
  unregularised net (the name then ends ``_nol2``; another non-default scale ``_l2{scale}``).
  """

  def __init__(self, n_features: int, hidden_sizes: Sequence[int], batch_size: int, n_samples: int,
               flip_y: float, class_sep: float = 1.0, activation: str = 'relu', l2_reg_scale: float = L2_REG_SCALE):
    hidden_sizes = tuple(hidden_sizes)
    _check_sizes(n_features, batch_size, n_samples, hidden_sizes)
    if n_features < 2:
      raise ValueError(f'NoisyClustersMLPFamily needs n_features >= 2, got {n_features}.')
    if not 0.0 <= flip_y <= 1.0:
      raise ValueError(f'flip_y is the fraction of labels replaced by a random class, in [0, 1]; got {flip_y!r}.')
    if activation not in ACTIVATIONS:
      raise ValueError(f'unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}.')
    if l2_reg_scale < 0:
      raise ValueError(f'l2_reg_scale must be >= 0, got {l2_reg_scale!r}.')
    self.n_features, self.hidden_sizes, self.batch_size = n_features, hidden_sizes, batch_size
    self.n_samples, self.flip_y, self.class_sep, self.activation = n_samples, float(flip_y), class_sep, activation
    self.l2_reg_scale = float(l2_reg_scale)
    l2 = '' if self.l2_reg_scale == L2_REG_SCALE else '_nol2' if self.l2_reg_scale == 0 else f'_l2{self.l2_reg_scale:g}'
    self.name = (f'mlp_{activation}_{"x".join(map(str, hidden_sizes))}_clusters_nf{n_features}_n{n_samples}'
                 f'_flip{self.flip_y:g}{l2}_bs{batch_size}')

  def sample(self, key):
    dist_key, data_key = jax.random.split(key)
    source = informative_clusters(dist_key, self.n_features, self.class_sep, self.flip_y)
    x, y = source.sample(data_key, self.n_samples)
    return {'x': x, 'y': y, 'source': source}

  def task(self, cfg):
    return GeneratedClassification(cfg['x'], cfg['y'], cfg['source'], self.hidden_sizes, self.batch_size,
                                   self.activation, name=self.name, l2_reg_scale=self.l2_reg_scale)

  @property
  def structure_key(self):
    return ('noisy_clusters_mlp', self.n_features, self.hidden_sizes, self.batch_size, self.n_samples,
            self.activation, self.l2_reg_scale)

  def __repr__(self):
    return (f'NoisyClustersMLPFamily(n_features={self.n_features}, hidden_sizes={self.hidden_sizes}, '
            f'batch_size={self.batch_size}, n_samples={self.n_samples}, flip_y={self.flip_y!r}, '
            f'class_sep={self.class_sep!r}, activation={self.activation!r}, l2_reg_scale={self.l2_reg_scale!r})')
