"""Image classification datasets read from local files, split four ways, held in device memory once per process.

Three datasets read from files, none of which is ever downloaded, and one generated (``synthetic_images``,
:mod:`tasks.synthetic_images`):

* **Fashion-MNIST** (Xiao et al. 2017; 28x28 grey, 10 classes) from the IDX files of the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), from ``$LOPT_FASHION_MNIST_DIR``, or from the
  ``data_dir`` argument.
* **MNIST** (LeCun et al. 1998; 28x28 grey, 10 classes) from its IDX files, from ``$LOPT_MNIST_DIR`` or ``data_dir``
  (no distribution packages it, so a user brings the four files).
* **digits**, scikit-learn's bundled 8x8 digits (the UCI optical-recognition test set; 1797 images, values 0..16,
  10 classes), always available.

Splits (fixed sizes, deterministic, never overlapping; the 3000-example validation splits follow TaskSet,
Metz et al. 2020)::

    (Fashion-)MNIST   train = train file [0, 54000)   inner_valid = [54000, 57000)
                      outer_valid = [57000, 60000)   test = t10k file (10000)
    digits            a fixed shuffle (numpy RandomState(0), whose stream numpy freezes) of the 1797 rows, then
                      train = 1197, inner_valid = 150, outer_valid = 150, test = 300 consecutive shuffled rows

The (Fashion-)MNIST training files are already in random order, so contiguous slices are i.i.d. samples; the
digits rows are in writer order, hence the shuffle.

**Device memory and compile time.** Images stay ``uint8`` on the device and are scaled to [0, 1] per batch
(``images * pixel_scale`` after the gather). A task's ``batch`` closes over these arrays, and ``jax.jit`` embeds
closed-over arrays as constants in the compiled program, so the storage type matters: a ``uint8`` split is a quarter
of the ``float32`` constant and compiles faster, yet every compilation of a Fashion-MNIST task still takes measurably
longer and its executable holds a copy of the train split (timings and sizes in docs/benchmarks.md,
``tasks/datasets.py``). So compile once per structure (pass learning rates and keys as arguments, not closures) rather
than once per hyperparameter. The digits arrays are small enough not to matter.

Loaders are cached (``functools.lru_cache`` keyed on the resolved directory), so the files are read, checked and
copied to the device once per process and every task on a dataset shares one set of device arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tasks import idx, image_patches, synthetic_images
from tasks.base import SPLITS, check_split

FASHION_MNIST_ENV = 'LOPT_FASHION_MNIST_DIR'
FASHION_MNIST_SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'
MNIST_ENV = 'LOPT_MNIST_DIR'

#: Examples in the (Fashion-)MNIST train and t10k files; other counts are rejected.
MNIST_SOURCE_SIZES = (60000, 10000)
#: Examples per split. ``train``, ``inner_valid`` and ``outer_valid`` are carved from the source training file.
MNIST_SPLIT_SIZES = {'train': 54000, 'inner_valid': 3000, 'outer_valid': 3000, 'test': 10000}
DIGITS_SPLIT_SIZES = {'train': 1197, 'inner_valid': 150, 'outer_valid': 150, 'test': 300}
DIGITS_SHUFFLE_SEED = 0

# Each IDX file under the names it is distributed with: the canonical one (gzipped or not) and the dotted variant
# that some MNIST mirrors use.
_IDX_STEMS = {
    'train_images': 'train-images-idx3-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
}


class DatasetNotFoundError(FileNotFoundError):
  """A dataset's files are not in any of the places searched. The message lists them and how to install."""


class SplitData(NamedTuple):
  """One split on the device: ``images`` uint8 ``[n, height, width]``, ``labels`` int32 ``[n]``."""
  images: jax.Array
  labels: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
  """A classification dataset split four ways (see :data:`tasks.base.SPLITS`), held in device arrays.

  Attributes:
    name: ``'fashion_mnist'``, ``'mnist'``, ``'digits'`` or ``'synthetic_images'``.
    splits: split name -> :class:`SplitData` (uint8 images, int32 labels).
    source_indices: split name -> index of each example in the source pool (the training file's examples first,
      then the test file's), a numpy int array; tells exactly where every example came from.
    num_classes: number of labels (10 for all four).
    pixel_scale: multiply the uint8 images by this to get values in [0, 1].
    source: where the data came from (a directory, ``'sklearn.datasets.load_digits'`` or the generator call).
  """
  name: str
  splits: Mapping[str, SplitData]
  source_indices: Mapping[str, np.ndarray]
  num_classes: int
  pixel_scale: float
  source: str

  @property
  def image_shape(self) -> tuple[int, int]:
    """``(height, width)`` of one image."""
    return tuple(self.splits['train'].images.shape[1:])

  def size(self, split: str) -> int:
    """Number of examples in ``split``."""
    return int(self.splits[check_split(split)].labels.shape[0])

  def images_as_float(self, images: jax.Array) -> jax.Array:
    """Maps gathered uint8 images to float32 in [0, 1]; jittable."""
    return images.astype(jnp.float32) * jnp.float32(self.pixel_scale)


def _split_source(num_source_train: int, sizes: Mapping[str, int],
                  num_source_test: int | None) -> dict[str, np.ndarray]:
  """Source indices of each split: consecutive slices of the training pool, then the test file (if any)."""
  indices, start = {}, 0
  carved = ('train', 'inner_valid', 'outer_valid') if num_source_test is not None else SPLITS
  for split in carved:
    indices[split] = np.arange(start, start + sizes[split])
    start += sizes[split]
  if start > num_source_train:
    raise ValueError(f'the splits need {start} training examples but the source has {num_source_train}.')
  if num_source_test is not None:
    if num_source_test != sizes['test']:
      raise ValueError(f'expected a test file of {sizes["test"]} examples, got {num_source_test}.')
    indices['test'] = num_source_train + np.arange(num_source_test)
  return indices


def to_device(name: str, images: np.ndarray, labels: np.ndarray, indices: Mapping[str, np.ndarray],
              num_classes: int, pixel_scale: float, source: str) -> ImageDataset:
  # A loader may first run while a task is being built inside `jit` (a family's `task(cfg)`); without
  # `ensure_compile_time_eval` the device_put would be staged into that trace and the cache would keep a tracer.
  with jax.ensure_compile_time_eval():
    splits = {
        split: SplitData(jax.device_put(np.ascontiguousarray(images[ix], dtype=np.uint8)),
                         jax.device_put(np.asarray(labels[ix], dtype=np.int32)))
        for split, ix in indices.items()
    }
  return ImageDataset(name=name, splits=splits, source_indices=dict(indices), num_classes=num_classes,
                      pixel_scale=pixel_scale, source=source)


def _find_idx_file(directory: str, stem: str) -> str | None:
  for name in (stem + '.gz', stem, stem.replace('-idx', '.idx') + '.gz', stem.replace('-idx', '.idx')):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  return None


def _locate(dataset: str, data_dir: str | os.PathLike | None, env_var: str,
            system_dirs: Sequence[str], install_hint: str) -> str:
  """The first directory holding all four IDX files: ``data_dir`` if given, else ``$env_var``, else system dirs."""
  if data_dir is not None:
    candidates = [(os.fspath(data_dir), 'data_dir argument')]
  else:
    candidates = []
    if os.environ.get(env_var):
      candidates.append((os.environ[env_var], f'${env_var}'))
    candidates += [(d, 'system location') for d in system_dirs]
  looked = []
  for directory, origin in candidates:
    missing = [stem for stem in _IDX_STEMS.values() if _find_idx_file(directory, stem) is None]
    if not missing:
      return directory
    looked.append(f'  {directory} ({origin}): missing {", ".join(s + "[.gz]" for s in missing)}')
  if data_dir is None and not os.environ.get(env_var):
    looked.append(f'  ${env_var}: not set')
  raise DatasetNotFoundError(f'{dataset} IDX files not found. Looked in:\n' + '\n'.join(looked) +
                             f'\n{install_hint}')


def _read_idx_pair(directory: str, split: str, image_shape: tuple[int, int],
                   num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """Reads and cross-checks one images/labels file pair; errors name the file."""
  images_path = _find_idx_file(directory, _IDX_STEMS[f'{split}_images'])
  labels_path = _find_idx_file(directory, _IDX_STEMS[f'{split}_labels'])
  images, labels = idx.read_idx(images_path), idx.read_idx(labels_path)
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != image_shape:
    raise idx.IdxFormatError(f'{images_path}: expected uint8 images of shape [n, {image_shape[0]}, '
                             f'{image_shape[1]}], got {images.dtype.name} {images.shape}.')
  if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
    raise idx.IdxFormatError(f'{labels_path}: expected {images.shape[0]} labels (one per image in '
                             f'{images_path}), got shape {labels.shape}.')
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise idx.IdxFormatError(f'{labels_path}: labels must lie in 0..{num_classes - 1}, found '
                             f'{labels.min()}..{labels.max()}.')
  return images, labels


@functools.lru_cache(maxsize=None)
def _load_mnist_like(name: str, directory: str) -> ImageDataset:
  train_images, train_labels = _read_idx_pair(directory, 'train', (28, 28), 10)
  test_images, test_labels = _read_idx_pair(directory, 'test', (28, 28), 10)
  for split, count, expected in (('train', len(train_labels), MNIST_SOURCE_SIZES[0]),
                                 ('test', len(test_labels), MNIST_SOURCE_SIZES[1])):
    if count != expected:
      path = _find_idx_file(directory, _IDX_STEMS[f'{split}_images'])
      raise idx.IdxFormatError(f'{path}: holds {count} images; the {name} {split} file has {expected}. '
                               'Is it a subset or a different dataset?')
  indices = _split_source(len(train_labels), MNIST_SPLIT_SIZES, len(test_labels))
  images = np.concatenate([train_images, test_images])
  labels = np.concatenate([train_labels, test_labels])
  return to_device(name, images, labels, indices, num_classes=10, pixel_scale=1 / 255, source=directory)


_FASHION_MNIST_HINT = ('Install the Debian package (`apt-get install dataset-fashion-mnist`), or pass data_dir= or '
                       f'set ${FASHION_MNIST_ENV} to a directory holding train-images-idx3-ubyte.gz, '
                       'train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.')
_MNIST_HINT = ('MNIST is not packaged by a distribution: obtain its four IDX files (train-images-idx3-ubyte[.gz], '
               'train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) and pass '
               f'data_dir= or set ${MNIST_ENV} to their directory.')


def locate_fashion_mnist(data_dir: str | os.PathLike | None = None) -> str:
  """The directory :func:`load_fashion_mnist` would read; raises :class:`DatasetNotFoundError` if there is none."""
  return _locate('Fashion-MNIST', data_dir, FASHION_MNIST_ENV, (FASHION_MNIST_SYSTEM_DIR,), _FASHION_MNIST_HINT)


def locate_mnist(data_dir: str | os.PathLike | None = None) -> str:
  """The directory :func:`load_mnist` would read; raises :class:`DatasetNotFoundError` if there is none."""
  return _locate('MNIST', data_dir, MNIST_ENV, (), _MNIST_HINT)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> ImageDataset:
  """Fashion-MNIST from ``data_dir``, else ``$LOPT_FASHION_MNIST_DIR``, else ``/usr/share/datasets/fashion-mnist``.

  Split sizes: :data:`MNIST_SPLIT_SIZES`. Cached per directory: the files are read once per process.

  Raises:
    DatasetNotFoundError: no searched directory holds the four IDX files; the message lists every directory and
      what it lacked, and how to install the data.
    tasks.idx.IdxFormatError: a file is truncated or corrupted, or holds the wrong shapes or labels.
  """
  return _load_mnist_like('fashion_mnist', os.path.realpath(locate_fashion_mnist(data_dir)))


def load_mnist(data_dir: str | os.PathLike | None = None) -> ImageDataset:
  """MNIST from ``data_dir``, else ``$LOPT_MNIST_DIR``. Same splits and checks as :func:`load_fashion_mnist`."""
  return _load_mnist_like('mnist', os.path.realpath(locate_mnist(data_dir)))


@functools.lru_cache(maxsize=None)
def load_digits() -> ImageDataset:
  """scikit-learn's bundled 8x8 digits (no download), split by :data:`DIGITS_SPLIT_SIZES`; values 0..16."""
  from sklearn import datasets as sklearn_datasets  # Imported lazily: only this loader needs scikit-learn.
  digits = sklearn_datasets.load_digits()
  images = digits.images.astype(np.uint8)  # Exact: the features are integer counts 0..16.
  # The rows come in writer order, so contiguous slices would give a test split of unseen writers that is much
  # harder than the validation splits (measured: 0.89 vs 0.96 accuracy for an MLP); a fixed shuffle makes the four
  # splits identically distributed. RandomState's stream is frozen by numpy's policy (NEP 19): same split forever.
  order = np.random.RandomState(DIGITS_SHUFFLE_SEED).permutation(len(images))
  indices = {split: order[ix] for split, ix in
             _split_source(len(images), DIGITS_SPLIT_SIZES, num_source_test=None).items()}
  return to_device('digits', images, digits.target, indices, num_classes=10, pixel_scale=1 / 16,
                   source='sklearn.datasets.load_digits')


@functools.lru_cache(maxsize=None)
def load_synthetic_images(seed: int = 0, size: int = 16, num_classes: int = 10) -> ImageDataset:
  """The procedurally generated dataset of :func:`tasks.synthetic_images.generate` on the device, cached per
  ``(seed, size, num_classes)``; nothing is read from disk. Its name is ``'synthetic_images'`` at the default
  16x16, else ``'synthetic_images_<size>px'``."""
  images, labels = synthetic_images.generate(seed, size, num_classes)
  splits = list(images)
  offsets = np.cumsum([0] + [len(labels[s]) for s in splits])
  indices = {s: np.arange(offsets[i], offsets[i + 1]) for i, s in enumerate(splits)}
  name = 'synthetic_images' if size == 16 else f'synthetic_images_{size}px'
  return to_device(name, np.concatenate([images[s] for s in splits]), np.concatenate([labels[s] for s in splits]),
                   indices, num_classes=num_classes, pixel_scale=1 / 255,
                   source=f'tasks.synthetic_images.generate(seed={seed}, size={size})')


@functools.lru_cache(maxsize=None)
def load_image_patches(seed: int = 0, size: int = 16) -> ImageDataset:
  """Grey ``size x size`` patches of scikit-learn's two sample photographs (:func:`tasks.image_patches.generate`)
  on the device, cached per ``(seed, size)``; named ``'image_patches<size>'``, 8 classes."""
  images, labels, indices = image_patches.generate(seed, size)
  return to_device(f'image_patches{size}', images, labels, indices, num_classes=image_patches.NUM_CLASSES,
                   pixel_scale=1 / 255, source=f'sklearn.datasets.load_sample_images, seed {seed}')


@functools.lru_cache(maxsize=None)
def load_photograph_patches(seed: int = 0, size: int = 8) -> ImageDataset:
  """Textured ``size x size`` patches labelled by photograph (:func:`tasks.image_patches.photograph_patches`) on the
  device, cached per ``(seed, size)``; named ``'image_patches<size>_photograph'``, 2 classes."""
  images, labels, indices = image_patches.photograph_patches(seed, size)
  return to_device(f'image_patches{size}_photograph', images, labels, indices, num_classes=2, pixel_scale=1 / 255,
                   source=f'sklearn.datasets.load_sample_images, textured crops, seed {seed}')


#: Loader of each dataset by name; ``load_dataset`` dispatches through it.
LOADERS = {'fashion_mnist': load_fashion_mnist, 'mnist': load_mnist, 'digits': load_digits,
           'synthetic_images': load_synthetic_images}

#: Datasets that need no files (and so take no ``data_dir``).
NO_FILES = ('digits', 'synthetic_images')


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> ImageDataset:
  """Loads a dataset by name (``'fashion_mnist'``, ``'mnist'``, ``'digits'`` or ``'synthetic_images'``);
  ``data_dir`` for the IDX ones."""
  if name not in LOADERS:
    raise ValueError(f'unknown dataset {name!r}; use one of {sorted(LOADERS)}.')
  if name in NO_FILES:
    if data_dir is not None:
      raise ValueError(f'{name} needs no files and takes no data_dir (got {data_dir!r}).')
    return LOADERS[name]()
  return LOADERS[name](data_dir)
