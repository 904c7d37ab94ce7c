"""MLPs on scikit-learn's bundled tabular datasets: small classifiers and regressions with real data.

scikit-learn ships four tabular datasets of useful size with the package (no download):

====================  ====  ========  ==================================  ====================================
name                  rows  features  target                              loss
====================  ====  ========  ==================================  ====================================
``wine``              178   13        3 cultivars                         softmax cross-entropy
``breast_cancer``     569   30        2 (malignant / benign)              softmax cross-entropy
``iris``              150   4         3 species                           softmax cross-entropy
``diabetes``          442   10        disease progression                 squared error, standardised target
``diabetes_binary``   442   10        2 (progression above the training   softmax cross-entropy
                                      split's mean)
``friedman1``         1000  10        Friedman #1 (generated)             squared error, standardised target
====================  ====  ========  ==================================  ====================================

``friedman1`` is the one generated table: Friedman's (1991) regression benchmark
``y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + N(0, 1)`` on ``x ~ U[0, 1]^10`` (five inputs are noise),
drawn once by ``sklearn.datasets.make_friedman1(1000, noise=1.0, random_state=0)``, so it is the same table on
every machine with the same scikit-learn.

Splits: a fixed shuffle (numpy ``RandomState(0)``, frozen by NEP 19) of the rows, then 60% train, 10% inner
validation, 10% outer validation and 20% test, consecutive. Features (and the regression target) are standardised
with the *train* split's mean and standard deviation, the usual preprocessing without which plain gradient descent on
raw features (ranges from 0.1 to 1000 in ``wine``) is a conditioning benchmark rather than a network one.

A batch is ``batch_size`` rows drawn uniformly with replacement from the split, so every split works with any batch
size; a test batch of the same size is one noisy estimate of the test loss, and the harness averages several.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tasks.base import SPLITS, Task, check_split
from tasks.image_classification import MLP, get_activation

#: Fractions of the shuffled rows per split, in order.
SPLIT_FRACTIONS = {'train': 0.6, 'inner_valid': 0.1, 'outer_valid': 0.1, 'test': 0.2}

#: Dataset name -> (scikit-learn loader name, number of classes; 0 for a regression).
DATASETS = {'wine': ('load_wine', 3), 'breast_cancer': ('load_breast_cancer', 2), 'iris': ('load_iris', 3),
            'diabetes': ('load_diabetes', 0), 'diabetes_binary': ('load_diabetes', 2),
            'friedman1': ('make_friedman1', 0)}

#: Classification tables made from a regression target: label 1 where the target is above its training-split mean.
#: ``diabetes_binary`` is a noisy binary problem (the features explain about half of the target's variance), so a
#: wide enough net fits its 265 training rows only by memorising them.
THRESHOLDED = ('diabetes_binary',)

#: Arguments of the generated tables' scikit-learn functions.
_GENERATOR_ARGS = {'make_friedman1': {'n_samples': 1000, 'noise': 1.0, 'random_state': 0}}


class TabularSplit(NamedTuple):
  features: jax.Array  # [rows, features] float32, standardised
  targets: jax.Array   # [rows] int32 class labels, or float32 standardised regression targets


class TabularBatch(NamedTuple):
  features: jax.Array
  targets: jax.Array


@functools.lru_cache(maxsize=None)
def load_tabular(name: str) -> dict[str, TabularSplit]:
  """The four standardised splits of a bundled dataset, on the device (cached per name)."""
  if name not in DATASETS:
    raise ValueError(f'unknown tabular dataset {name!r}; use one of {sorted(DATASETS)}.')
  from sklearn import datasets as sklearn_datasets  # Lazy: only these loaders need scikit-learn.
  loader, num_classes = DATASETS[name]
  if loader in _GENERATOR_ARGS:
    data, target = getattr(sklearn_datasets, loader)(**_GENERATOR_ARGS[loader])
  else:
    bunch = getattr(sklearn_datasets, loader)()
    data, target = bunch.data, bunch.target
  order = np.random.RandomState(0).permutation(len(target))
  features, targets = data[order].astype(np.float64), target[order]
  bounds = np.cumsum([0] + [int(round(f * len(order))) for f in SPLIT_FRACTIONS.values()])
  bounds[-1] = len(order)
  rows = {split: slice(bounds[i], bounds[i + 1]) for i, split in enumerate(SPLITS)}
  train = features[rows['train']]
  mean, std = train.mean(0), train.std(0) + 1e-8
  if name in THRESHOLDED:
    targets = (targets > targets[rows['train']].mean()).astype(np.int32)
  elif num_classes:
    targets = targets.astype(np.int32)
  else:
    t_mean, t_std = targets[rows['train']].mean(), targets[rows['train']].std()
    targets = ((targets - t_mean) / t_std).astype(np.float32)
  with jax.ensure_compile_time_eval():  # A loader may first run inside a trace (see tasks.datasets.to_device).
    return {split: TabularSplit(jax.device_put(((features[r] - mean) / std).astype(np.float32)),
                                jax.device_put(targets[r])) for split, r in rows.items()}


class TabularMLPTask(Task):
  """An MLP classifier (softmax cross-entropy) or regressor (mean squared error) on a bundled tabular dataset.

  Args:
    dataset: a name of :data:`DATASETS`.
    hidden_sizes: widths of the hidden layers.
    activation: a name understood by :func:`tasks.image_classification.get_activation` or a function.
    batch_size: rows per minibatch, drawn with replacement.
  """

  def __init__(self, dataset: str, hidden_sizes: Sequence[int] = (32,), activation: str | Callable = 'relu',
               batch_size: int = 32):
    if dataset not in DATASETS:
      raise ValueError(f'unknown tabular dataset {dataset!r}; use one of {sorted(DATASETS)}.')
    if batch_size < 1:
      raise ValueError(f'batch_size must be a positive integer, got {batch_size}.')
    self.dataset = dataset
    self.num_classes = DATASETS[dataset][1]
    self.batch_size = int(batch_size)
    self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
    self.model = MLP(self.hidden_sizes, max(self.num_classes, 1), get_activation(activation))
    act = activation if isinstance(activation, str) else getattr(activation, '__name__', 'custom')
    widths = 'x'.join(map(str, self.hidden_sizes)) or 'linear'
    self.name = f'{dataset}_mlp_{widths}_{act}_bs{batch_size}'

  @property
  def _data(self) -> dict[str, TabularSplit]:
    return load_tabular(self.dataset)

  def init(self, key: jax.Array):
    """Flax's default initialisation (LeCun-normal kernels, zero biases)."""
    num_features = self._data['train'].features.shape[1]
    return self.model.init(key, jnp.zeros((1, num_features), jnp.float32))['params']

  def batch(self, key: jax.Array, split: str = 'train') -> TabularBatch:
    data = self._data[check_split(split)]
    index = jax.random.randint(key, (self.batch_size,), 0, data.targets.shape[0])
    return TabularBatch(jnp.take(data.features, index, axis=0), jnp.take(data.targets, index, axis=0))

  def loss(self, params, key: jax.Array, batch: TabularBatch) -> jax.Array:
    del key  # Deterministic given the batch.
    outputs = self.model.apply({'params': params}, batch.features)
    if self.num_classes:
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(outputs, batch.targets))
    return jnp.mean((outputs[:, 0] - batch.targets) ** 2)

  def normalizer(self, loss: jax.Array) -> jax.Array:
    """Classification: ``loss / log(classes)`` (1 at a uniform prediction); regression: the loss itself (1 when
    predicting the mean of a standardised target)."""
    return loss / math.log(self.num_classes) if self.num_classes else loss
