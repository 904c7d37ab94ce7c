"""Named problems and collections of them: :data:`PROBLEMS`, every named problem; :func:`wichrowska2017`, the
meta-training set of Wichrowska et al. 2017.

:data:`PROBLEMS` holds the 101 problems of the Wichrowska set and the ones of :data:`EXTRA_PROBLEMS` (ReLU, tanh
and autoencoder networks on generated data). A meta-training config names the problems it trains on, and their
weights, as data (``[tasks] problems = ["quadratic_25", ...]``, see :class:`meta_train.run.config.TasksConfig`);
from Python, :func:`problem` gives one family and :func:`problem_set` a set of them, in the given order::

    tasks.problem('booth')                                        # a TaskFamily
    tasks.problem_set(['quadratic_25', 'mlp_relu_64x64_nf32_bs64'])  # a ProblemSet of two

A :class:`ProblemSet` is an immutable ``Mapping[str, TaskFamily]``::

    problems = wichrowska2017()
    len(problems)                                  # 101
    problems['quadratic_20_noise0.5']              # a TaskFamily; every sample is a fresh random instance
    problems.names()                               # sorted names
    problems.filter(prefix='sparse_')              # a smaller ProblemSet
    problems.filter(lambda name, family: ...)      # by predicate
    problems.sample_name(key)                      # uniform over names, a pure function of the key (host side)
    problems.sample_index(key)                     # the same draw as an int32 array, usable inside jit
    problems.structure_groups()                    # structure_key -> names that vmap/compile together

Naming scheme of the Wichrowska set (every number printed with ``%g``):

=============================================  ==============================================================
``quadratic_{n}[_noise{σ}]``                   ½‖Wx − y‖², n×n; σ: additive gradient-noise stdev
``bowl_{κ}[_angle{α}][_noise{σ}]``             2-D bowl, condition number κ, rotation α in radians (π/4 → 0.785398)
``softmax_{f}_bs{b}_sep{s}[_noise{σ}]``        softmax regression, f features, batch b, class separation s
``{name}`` of a test function [``_noise{σ}``]  rosenbrock, beale, booth, matyas, branin, ackley, logsumexp,
                                               styblinski_tang, michalewicz
``mlp_sigmoid_{h1}x{h2}..._nf{f}_bs{b}``       sigmoid MLP with hidden sizes h on random-ReLU-teacher labels
``matmul_{n}_k{k}``                            matrix-multiplication algorithm search
``norm_{n}_p{p}[_noise{σ}]``                   p-norm regression
``log_{name}``                                 LogObjective of the problem ``name``
``rescale{s}_{name}``                          Rescale of ``name`` by s
``sparse_{name}``                              gradients of ``name`` zeroed with probability 0.99
``sum_{description}[_noise]``                  sums (see :func:`wichrowska2017`'s source for each list)
=============================================  ==============================================================

Wrappers are prefixes, so ``filter(prefix='quadratic_')`` selects plain (possibly noisy) quadratics only and
``filter(prefix='sparse_')`` every sparse problem.
"""

from __future__ import annotations

import collections
import difflib
import math
from typing import Callable, Hashable, Iterator, Mapping

import jax

from tasks import base
from tasks import generated_classification as gc
from tasks import matmul_algorithm
from tasks import norm
from tasks import quadratic
from tasks import test_functions
from tasks import wrappers

__all__ = ['EXTRA_PROBLEMS', 'PROBLEMS', 'ProblemRegistry', 'ProblemSet', 'problem', 'problem_set', 'wichrowska2017']


class ProblemSet(Mapping[str, base.TaskFamily]):
  """An immutable, ordered mapping from problem names to task families."""

  def __init__(self, name: str, families: Mapping[str, base.TaskFamily] | list[tuple[str, base.TaskFamily]]):
    items = list(families.items()) if isinstance(families, Mapping) else list(families)
    counts = collections.Counter(n for n, _ in items)
    duplicates = sorted(n for n, c in counts.items() if c > 1)
    if duplicates:
      raise ValueError(f'problem set {name!r} has duplicate names: {duplicates}.')
    for n, family in items:
      if not isinstance(family, base.TaskFamily):
        raise TypeError(f'problem {n!r} of set {name!r} is a {type(family).__name__}, not a TaskFamily.')
    self.name = name
    self._families = dict(items)

  def __getitem__(self, name: str) -> base.TaskFamily:
    try:
      return self._families[name]
    except KeyError:
      close = difflib.get_close_matches(name, list(self._families), n=3)
      hint = f' Did you mean {close}?' if close else ''
      raise KeyError(f'no problem {name!r} in problem set {self.name!r}.{hint} '
                     f'List them with .names().') from None

  def __iter__(self) -> Iterator[str]:
    return iter(self._families)

  def __len__(self) -> int:
    return len(self._families)

  def __repr__(self) -> str:
    return f'{type(self).__name__}({self.name!r}, {len(self)} problems)'

  def names(self) -> list[str]:
    """All names, sorted."""
    return sorted(self._families)

  def filter(self, predicate: Callable[[str, base.TaskFamily], bool] | None = None, *,
             prefix: str | None = None) -> 'ProblemSet':
    """The problems whose name starts with ``prefix`` and for which ``predicate(name, family)`` holds.

    Raises ``ValueError`` if nothing matches (an empty set cannot be sampled from).
    """
    kept = []
    for n in self._families:
      if prefix is None or n.startswith(prefix):
        f = self._families[n]  # looked up only once the name matches (a registry builds families on lookup)
        if predicate is None or predicate(n, f):
          kept.append((n, f))
    if not kept:
      raise ValueError(f'filter(prefix={prefix!r}, predicate={predicate!r}) matches no problem of {self.name!r}.')
    return ProblemSet(f'{self.name}[filtered]', kept)

  def sample_index(self, key: jax.Array) -> jax.Array:
    """A uniform index into :meth:`names` (int32 array; jittable). Sampling is with replacement, as in the paper."""
    return jax.random.randint(key, (), 0, len(self))

  def sample_name(self, key: jax.Array) -> str:
    """A uniformly drawn name (host side): ``names()[sample_index(key)]``."""
    return self.names()[int(self.sample_index(key))]

  def structure_groups(self) -> dict[Hashable, list[str]]:
    """Groups names by their family's ``structure_key``: the members of a group vmap and compile together."""
    groups: dict[Hashable, list[str]] = {}
    for n in self.names():
      groups.setdefault(self._families[n].structure_key, []).append(n)
    return groups


def _g(value: float) -> str:
  return f'{value:g}'


def wichrowska2017() -> ProblemSet:
  """The default meta-training set of Wichrowska et al. 2017 (metarun's flags → problem_sets.py): 101 problems.

  Groups (counts): noisy quadratics (4), large quadratics (3), bowls (4) and noisy bowls (4), softmax regression (4)
  and noisy (4), test functions (9) and noisy (9), sigmoid MLPs (12), MatMulAlgorithm (4 + 6), LogObjective (6),
  Rescale (9), Norm (3) and noisy (3), sums (6) and noisy sums (2), sparse-gradient problems (6 + 3).
  """
  problems: list[tuple[str, base.TaskFamily]] = []

  def add(family: base.TaskFamily, name: str):
    problems.append((name, family))

  def noisy(family, name, stdev):
    if stdev:
      return wrappers.GradientNoiseFamily(family, stdev), f'{name}_noise{_g(stdev)}'
    return family, name

  # Quadratics: the "noisy" group includes one clean problem, as in the original.
  for n, stdev in [(20, 0.5), (25, 0.0), (50, 1.0), (100, 2.0)]:
    add(*noisy(quadratic.QuadraticFamily(n), f'quadratic_{n}', stdev))
  for n in (784, 1024, 2048):
    add(quadratic.QuadraticFamily(n), f'quadratic_{n}')

  bowls = [(0.1, 0.0), (1.0, 0.0), (5.0, 0.0), (5.0, math.pi / 4)]

  def bowl(kappa, angle):
    return quadratic.BowlFamily(kappa, angle), f'bowl_{_g(kappa)}' + (f'_angle{angle:.6g}' if angle else '')

  for stdev in (0.0, 0.1):
    for kappa, angle in bowls:
      add(*noisy(*bowl(kappa, angle), stdev))

  softmax = [(10, 100, 2.0), (100, 50, 1.0), (200, 20, 1.5), (256, 100, 1.5)]
  for (f, bs, sep), stdev in zip(softmax + softmax, [0.0] * 4 + [0.5, 0.1, 0.1, 0.5]):
    family = gc.SoftmaxRegressionFamily(f, bs, n_samples=1000, class_sep=sep)
    add(*noisy(family, f'softmax_{f}_bs{bs}_sep{_g(sep)}', stdev))

  for stdev in (0.0, 1.0):
    for name in test_functions.TEST_FUNCTIONS:
      add(*noisy(test_functions.TestFunctionFamily(name), name, stdev))

  mlps = [((8, 5), 8, 10), ((8, 5, 3), 12, 200), ((4, 4, 4, 4), 5, 100), ((4, 5, 6), 11, 64), ((8,), 9, 128),
          ((8, 5), 7, 16), ((32, 64), 8, 10), ((16, 8, 3), 12, 200), ((8, 8, 8, 8), 5, 100), ((10, 12, 12), 11, 64),
          ((32,), 9, 128), ((32, 64), 7, 16)]

  def mlp(hidden, f, bs):
    family = gc.MLPClassifierFamily(f, hidden, bs, n_samples=1000, activation='sigmoid')
    return family, family.name

  for spec in mlps:
    add(*mlp(*spec))

  for n, ks in [(2, range(5, 9)), (3, range(19, 25))]:
    for k in ks:
      family = matmul_algorithm.MatMulAlgorithmFamily(n, k)
      add(family, family.name)

  for family, name in [(quadratic.QuadraticFamily(n), f'quadratic_{n}') for n in (20, 50, 100)] + [
      bowl(kappa, 0.0) for kappa in (0.1, 1.0, 5.0)]:
    add(wrappers.LogObjectiveFamily(family), f'log_{name}')

  for p, scale in [(2.5, 0.123), (1.5, 8.0), (2.0, 50.0), (3.0, 200.0), (1.0, 1000.0)]:
    add(wrappers.RescaleFamily(norm.NormFamily(18, p), scale), f'rescale{_g(scale)}_norm_18_p{_g(p)}')
  for n, scale in [(20, 0.1), (25, 10.0), (50, 350.0), (100, 132.0)]:
    add(wrappers.RescaleFamily(quadratic.QuadraticFamily(n), scale), f'rescale{_g(scale)}_quadratic_{n}')

  for n, p, stdev in [(27, 1.0, 0.0), (25, 2.0, 0.0), (22, 3.0, 0.0), (19, 1.0, 0.1), (26, 2.0, 0.1),
                      (23, 3.0, 0.1)]:
    add(*noisy(norm.NormFamily(n, p), f'norm_{n}_p{_g(p)}', stdev))

  def quad(n, stdev=0.0):
    return noisy(quadratic.QuadraticFamily(n), f'quadratic_{n}', stdev)[0]

  def fn(name):
    return test_functions.TestFunctionFamily(name)

  # The order of the original lists (problem_sets.sum_problems), which differs from TEST_FUNCTIONS' order.
  all_nine = ['rosenbrock', 'logsumexp', 'ackley', 'beale', 'booth', 'styblinski_tang', 'matyas', 'branin',
              'michalewicz']
  sums = [
      ('sum_7quadratics', [quad(n) for n in (11, 3, 9, 7, 5, 13, 12)]),
      ('sum_norm18p3_quadratic25_rosenbrock', [norm.NormFamily(18, 3.0), quad(25), fn('rosenbrock')]),
      ('sum_9testfunctions', [fn(n) for n in all_nine]),
      ('sum_9testfunctions_2quadratics', [fn(n) for n in all_nine] + [quad(5), quad(13)]),
      ('sum_2quadratics', [quad(11), quad(3)]),
      ('sum_rosenbrock_logsumexp_ackley', [fn(n) for n in all_nine[:3]]),
      ('sum_7quadratics_noise0.1', [quad(n, 0.1) for n in (11, 3, 9, 7, 5, 13, 12)]),
      ('sum_9testfunctions_2quadratics_noise0.5', [fn(n) for n in all_nine] + [quad(5), quad(13, 0.5)]),
  ]
  for name, parts in sums:
    add(wrappers.SumFamily(parts, name=name), name)

  for family, name in [(quadratic.QuadraticFamily(n), f'quadratic_{n}') for n in (20, 50, 100)] + [
      bowl(kappa, 0.0) for kappa in (0.1, 1.0, 5.0)] + [mlp(*spec) for spec in mlps[:3]]:
    add(wrappers.SparseGradientsFamily(family, 0.99), f'sparse_{name}')

  return ProblemSet('wichrowska2017', problems)


def _synthetic_images_mlp(size: int, hidden: tuple[int, ...], activation: str, batch_size: int) -> base.TaskFamily:
  """An MLP classifier on the generated ``size`` x ``size`` images of :mod:`tasks.synthetic_images` (one fixed task)."""
  from tasks import image_classification as ic  # pylint: disable=import-outside-toplevel  (pulls in flax)
  from tasks import datasets  # pylint: disable=import-outside-toplevel  (pulls in jax device arrays)
  return base.SingleTaskFamily(ic.mlp_task(datasets.load_synthetic_images(size=size), hidden, activation,
                                           batch_size=batch_size))


def _synthetic_images_conv(size: int, channels: tuple[int, ...], activation: str, batch_size: int) -> base.TaskFamily:
  """A ConvNet classifier on the generated ``size`` x ``size`` images (one fixed task), with the patch convolution
  (``conv_impl='patches'``): meta-training vmaps it over instances, where Flax's convolution becomes a grouped one."""
  from tasks import image_classification as ic  # pylint: disable=import-outside-toplevel  (pulls in flax)
  from tasks import datasets  # pylint: disable=import-outside-toplevel  (pulls in jax device arrays)
  return base.SingleTaskFamily(ic.conv_task(datasets.load_synthetic_images(size=size), channels, activation,
                                            batch_size=batch_size, conv_impl='patches'))


def _synthetic_images_autoencoder(hidden: tuple[int, ...], activation: str, batch_size: int) -> base.TaskFamily:
  """An MLP autoencoder of the generated 16x16 images of :mod:`tasks.synthetic_images` (one fixed task)."""
  from tasks import autoencoder  # pylint: disable=import-outside-toplevel  (pulls in flax)
  from tasks import datasets  # pylint: disable=import-outside-toplevel
  return base.SingleTaskFamily(autoencoder.AutoencoderTask(datasets.load_synthetic_images(), hidden, activation,
                                                           batch_size))


#: The named problems beyond the Wichrowska set, as zero-argument functions building each :class:`tasks.TaskFamily`
#: (built when first looked up in :data:`PROBLEMS`: the image problems generate their data). All train on generated
#: data only (:mod:`tasks.synthetic_images`, ReLU-teacher labels), none on a dataset of the validation or test
#: suites. Adding a problem is one line here; a config then names it in ``[tasks] problems``.
#:
#: ``synthetic_images[_{s}px]_mlp_{h1}x{h2}..._{activation}_bs{b}`` is an MLP classifier on the s x s generated
#: images (16 when absent), batch b; ``mlp_relu_..._nf{f}_bs{b}`` a ReLU MLP on ReLU-teacher labels of f features
#: (:class:`tasks.MLPClassifierFamily`); ``mlp_relu_..._clusters_nf{f}_n{n}_flip{p}_bs{b}`` a ReLU MLP memorising n
#: informative-cluster points of f features, a fraction p of labels redrawn at random
#: (:class:`tasks.NoisyClustersMLPFamily`); ``synthetic_images_autoencoder_...`` an MLP autoencoder of the 16x16 images;
#: ``synthetic_images_conv_{c1}x{c2}..._{activation}_bs{b}`` a stride-2 ConvNet on the 16x16 images, its convolutions
#: computed as patches times kernels (``conv_impl='patches'``: vmapped over instances, Flax's convolution becomes a
#: grouped convolution, 3-4x slower on CPU; ``benchmarks/vmapped_conv.py``). ``quadratic_200`` and ``quadratic_250``
#: are clean Wichrowska quadratics wider than the set's 20..100 (on some of their instances HRNN candidate 22's loss
#: climbs back 2-200x from its minimum over 5,000 steps; on none of 4 instances of 25 or of 100 dimensions); the test
#: suite's quadratics (5, 500 and 2,048 dimensions) stay outside every trained dimension. Two-layer tanh nets:
#: ``synthetic_images_mlp_128x128_tanh_bs128``, on which HRNN candidate 23 ends at 0.025 after 5,000 steps against
#: Adam 3e-3's 9e-4 (on the one-layer ``synthetic_images_mlp_64_tanh_bs64`` its learned rates fall 9-55x per tensor
#: between steps 100 and 1,000 and it ends at 0.20 against Adam 1e-2's 0.047), and ``mlp_tanh_64x64_nf32_bs64``, the
#: same kind of net on ReLU-teacher data, so that the tanh signal is not one dataset's.
EXTRA_PROBLEMS: dict[str, Callable[[], base.TaskFamily]] = {
    'synthetic_images_mlp_32_relu_bs64': lambda: _synthetic_images_mlp(16, (32,), 'relu', 64),
    'synthetic_images_mlp_32x32_relu_bs32': lambda: _synthetic_images_mlp(16, (32, 32), 'relu', 32),
    'mlp_relu_64x64_nf32_bs64': lambda: gc.MLPClassifierFamily(32, (64, 64), 64, activation='relu'),
    'synthetic_images_28px_mlp_32_relu_bs64': lambda: _synthetic_images_mlp(28, (32,), 'relu', 64),
    'synthetic_images_28px_mlp_128x128_relu_bs64': lambda: _synthetic_images_mlp(28, (128, 128), 'relu', 64),
    'synthetic_images_mlp_256x256_relu_bs64': lambda: _synthetic_images_mlp(16, (256, 256), 'relu', 64),
    'synthetic_images_mlp_64_tanh_bs64': lambda: _synthetic_images_mlp(16, (64,), 'tanh', 64),
    'synthetic_images_mlp_128x128_tanh_bs128': lambda: _synthetic_images_mlp(16, (128, 128), 'tanh', 128),
    'mlp_tanh_64x64_nf32_bs64': lambda: gc.MLPClassifierFamily(32, (64, 64), 64, activation='tanh'),
    'synthetic_images_autoencoder_64x16x64_relu_bs64': lambda: _synthetic_images_autoencoder((64, 16, 64), 'relu', 64),
    'synthetic_images_conv_16x32x32_relu_bs32': lambda: _synthetic_images_conv(16, (16, 32, 32), 'relu', 32),
    'mlp_relu_64x64_clusters_nf10_n320_flip0.4_bs32':
        lambda: gc.NoisyClustersMLPFamily(10, (64, 64), 32, n_samples=320, flip_y=0.4),
    'mlp_relu_64x64_clusters_nf10_n320_flip0.4_nol2_bs32':
        lambda: gc.NoisyClustersMLPFamily(10, (64, 64), 32, n_samples=320, flip_y=0.4, l2_reg_scale=0.0),
    'quadratic_200': lambda: quadratic.QuadraticFamily(200),
    'quadratic_250': lambda: quadratic.QuadraticFamily(250),
}


class ProblemRegistry(ProblemSet):
  """A :class:`ProblemSet` whose families are built the first time each is looked up, then kept (see
  :data:`PROBLEMS`). ``structure_groups()`` builds every family."""

  def __init__(self, name: str, factories: Mapping[str, Callable[[], base.TaskFamily]]):  # pylint: disable=super-init-not-called
    # ProblemSet.__init__ would build every family to check it; the keys of a dict are unique already.
    self.name = name
    self._factories = dict(factories)
    self._built: dict[str, base.TaskFamily] = {}
    self._families = _LazyFamilies(self)

  def _build(self, name: str) -> base.TaskFamily:
    if name not in self._built:
      family = self._factories[name]()
      if not isinstance(family, base.TaskFamily):
        raise TypeError(f'problem {name!r} of {self.name!r} is a {type(family).__name__}, not a TaskFamily.')
      self._built[name] = family
    return self._built[name]


class _LazyFamilies(Mapping[str, base.TaskFamily]):
  """The ``name -> family`` mapping behind a :class:`ProblemRegistry`: keys at once, families on first access."""

  def __init__(self, registry: ProblemRegistry):
    self._registry = registry

  def __getitem__(self, name: str) -> base.TaskFamily:
    if name not in self._registry._factories:  # pylint: disable=protected-access
      raise KeyError(name)
    return self._registry._build(name)  # pylint: disable=protected-access

  def __iter__(self) -> Iterator[str]:
    return iter(self._registry._factories)  # pylint: disable=protected-access

  def __len__(self) -> int:
    return len(self._registry._factories)  # pylint: disable=protected-access


def _wichrowska_factory(name: str) -> Callable[[], base.TaskFamily]:
  return lambda: wichrowska2017()[name]


def _registry() -> ProblemRegistry:
  factories = {name: _wichrowska_factory(name) for name in wichrowska2017()}
  clashes = sorted(set(factories) & set(EXTRA_PROBLEMS))
  if clashes:
    raise ValueError(f'EXTRA_PROBLEMS reuses names of the Wichrowska set: {clashes}.')
  return ProblemRegistry('problems', {**factories, **EXTRA_PROBLEMS})


#: Every named problem: the 101 of :func:`wichrowska2017` (in its order), then :data:`EXTRA_PROBLEMS`. A
#: :class:`ProblemSet` (``PROBLEMS['booth']``, ``.names()``, ``.filter(prefix=...)``) whose families are built when
#: first looked up. A config's ``[tasks] problems`` draws its names from here; :func:`problem_set` makes a set of some.
PROBLEMS: ProblemRegistry = _registry()


def problem(name: str) -> base.TaskFamily:
  """The family of the problem ``name`` of :data:`PROBLEMS`; a ``KeyError`` with the closest names if there is none."""
  return PROBLEMS[name]


def problem_set(names, name: str = 'problems') -> ProblemSet:
  """The problems ``names`` of :data:`PROBLEMS`, in that order, as a :class:`ProblemSet` called ``name``.

  The order matters to a meta-training run: structure groups are formed in order of first appearance.
  """
  if isinstance(names, str):
    raise TypeError(f'problem_set takes a sequence of names, not the string {names!r}.')
  return ProblemSet(name, [(n, PROBLEMS[n]) for n in names])
