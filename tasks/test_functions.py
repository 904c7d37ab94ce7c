"""The nine 2-D optimisation test functions of Wichrowska et al. 2017 (docs/algorithms.md §11.2), with their init
boxes.

With ``(x, y)`` the two parameters (https://www.sfu.ca/~ssurjano/optimization.html):

=================  ===============================================================  ====================  ==========
name               f(x, y)                                                           init                  minimum
=================  ===============================================================  ====================  ==========
rosenbrock         (1 − x)² + 100(y − x²)²                                          U(−5, 10)²            0 at (1, 1)
beale              (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²         U(−4.5, 4.5)²         0 at (3, ½)
booth              (x + 2y − 7)² + (2x + y − 5)²                                    U(−10, 10)²           0 at (1, 3)
matyas             0.26(x² + y²) − 0.48xy                                           U(−10, 10)²           0 at (0, 0)
branin             a(y − bx² + cx − r)² + s(1 − t)cos x + s                         x~U(−5,10), y~U(0,15)  0.397887
ackley             −20exp(−0.2√(½(x² + y²))) − exp(½(cos 2πx + cos 2πy)) + e + 20   U(−32.768, 32.768)²   0 at (0, 0)
logsumexp          log(e^{x+3y−0.1} + e^{x−3y−0.1} + e^{−x−0.1} + 1)                N(0, 1)²              log(2√2e^{−0.1}+1)
styblinski_tang    ½Σ(v⁴ − 16v² + 5v) + 80                                          U(−5, 5)²             ≈ 1.668
michalewicz        2 − [sin x·sin¹⁰(x²/π) + sin y·sin¹⁰(2y²/π)]                     U(0, π)²              ≈ 0.19338
=================  ===============================================================  ====================  ==========

Branin's constants: a = 1, b = 5.1/(4π²), c = 5/π, r = 6, s = 10, t = 1/(8π). Every function is ≥ 0 (the constants
80 and 2 in Styblinski-Tang and Michalewicz are the original code's offsets that make them so).

Deviation: Ackley's ``√(½(x² + y²))`` has an infinite derivative at the origin, which would make the gradient NaN
exactly at the optimum; we use a square root whose gradient is 0 there (a valid subgradient of the cone).

:class:`TestFunction` optionally shifts and scales a function, ``s·f(x − δ)``, for the TaskSet-style families of
:mod:`tasks.families`; the shift moves the init box with it, so ``δ`` only changes where the optimum sits.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from tasks import base


def _safe_sqrt(v):
  """``√v`` with gradient 0 (instead of ∞·0 = NaN) at ``v = 0``."""
  positive = v > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, v, 1.0)), 0.0)


def rosenbrock(p):
  x, y = p[0], p[1]
  return (1 - x)**2 + 100 * (y - x**2)**2


def beale(p):
  x, y = p[0], p[1]
  return (1.5 - x + x * y)**2 + (2.25 - x + x * y**2)**2 + (2.625 - x + x * y**3)**2


def booth(p):
  x, y = p[0], p[1]
  return (x + 2 * y - 7)**2 + (2 * x + y - 5)**2


def matyas(p):
  x, y = p[0], p[1]
  return 0.26 * (x**2 + y**2) - 0.48 * x * y


def branin(p):
  x, y = p[0], p[1]
  a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
  return a * (y - b * x**2 + c * x - r)**2 + s * (1 - t) * jnp.cos(x) + s


def ackley(p):
  x, y = p[0], p[1]
  radius = _safe_sqrt(0.5 * (x**2 + y**2))
  return (-20 * jnp.exp(-0.2 * radius) - jnp.exp(0.5 * (jnp.cos(2 * math.pi * x) + jnp.cos(2 * math.pi * y)))
          + math.e + 20)


def logsumexp(p):
  x, y = p[0], p[1]
  # log(Σ e^{z_i}) with the constant term 1 = e^0, computed stably.
  return jax.nn.logsumexp(jnp.stack([x + 3 * y - 0.1, x - 3 * y - 0.1, -x - 0.1, jnp.zeros_like(x)]))


def styblinski_tang(p):
  return 0.5 * jnp.sum(p**4 - 16 * p**2 + 5 * p) + 80


def michalewicz(p, m: int = 5):
  x, y = p[0], p[1]
  return 2 - (jnp.sin(x) * jnp.sin(x**2 / math.pi)**(2 * m) + jnp.sin(y) * jnp.sin(2 * y**2 / math.pi)**(2 * m))


class InitBox(NamedTuple):
  """Per-coordinate uniform init ``U(low, high)``; ``None`` means N(0, 1) (LogSumExp)."""
  low: tuple[float, float] | None
  high: tuple[float, float] | None


#: name -> (function of a [2] array, init box), in the order of the original problem_sets.optimization_test_problems.
TEST_FUNCTIONS: dict[str, tuple[Callable[[jax.Array], jax.Array], InitBox]] = {
    'ackley': (ackley, InitBox((-32.768, -32.768), (32.768, 32.768))),
    'beale': (beale, InitBox((-4.5, -4.5), (4.5, 4.5))),
    'booth': (booth, InitBox((-10.0, -10.0), (10.0, 10.0))),
    'branin': (branin, InitBox((-5.0, 0.0), (10.0, 15.0))),
    'logsumexp': (logsumexp, InitBox(None, None)),
    'matyas': (matyas, InitBox((-10.0, -10.0), (10.0, 10.0))),
    'michalewicz': (michalewicz, InitBox((0.0, 0.0), (math.pi, math.pi))),
    'rosenbrock': (rosenbrock, InitBox((-5.0, -5.0), (10.0, 10.0))),
    'styblinski_tang': (styblinski_tang, InitBox((-5.0, -5.0), (5.0, 5.0))),
}

#: The spread of each init distribution, used to size the TaskSet-style offsets (std 1 for the normal init).
def init_width(name: str) -> tuple[float, float]:
  box = TEST_FUNCTIONS[name][1]
  if box.low is None:
    return (1.0, 1.0)
  return tuple(h - l for l, h in zip(box.low, box.high))


def check_name(name: str) -> str:
  if name not in TEST_FUNCTIONS:
    raise ValueError(f'unknown test function {name!r}; use one of {sorted(TEST_FUNCTIONS)}.')
  return name


def sample_init(name: str, key: jax.Array) -> jax.Array:
  """A draw from ``name``'s init distribution, shape [2]."""
  box = TEST_FUNCTIONS[name][1]
  if box.low is None:
    return jax.random.normal(key, (2,), jnp.float32)
  return jax.random.uniform(key, (2,), jnp.float32, jnp.asarray(box.low), jnp.asarray(box.high))


class TestFunction(base.Task):
  """``s·f(x − δ)`` for one named 2-D test function ``f``; init is ``f``'s init box shifted by ``δ``.

  With the defaults ``δ = 0, s = 1`` this is exactly the Wichrowska problem. ``offset`` ([2]) and ``scale``
  (scalar) may be traced arrays (TaskSet-style families sample them).
  """

  __test__ = False  # not a pytest class, despite the name

  def __init__(self, function: str, offset=None, scale=1.0):
    self.function = check_name(function)
    self.offset = jnp.zeros((2,), jnp.float32) if offset is None else jnp.asarray(offset, jnp.float32)
    self.scale = jnp.asarray(scale, jnp.float32)
    self.name = function

  def init(self, key):
    return sample_init(self.function, key) + self.offset

  def loss(self, params, key, batch):
    del key, batch
    return self.scale * TEST_FUNCTIONS[self.function][0](params - self.offset)


class TestFunctionFamily(base.TaskFamily):
  """One named test function with no random instance data (only its init is random): Wichrowska's spec."""

  __test__ = False

  def __init__(self, function: str):
    self.function = check_name(function)
    self.name = function

  def sample(self, key):
    del key
    return jnp.zeros((0,), jnp.float32)

  def task(self, cfg):
    del cfg
    return TestFunction(self.function)

  @property
  def structure_key(self):
    return ('test_function', self.function)

  def __repr__(self):
    return f'TestFunctionFamily({self.function!r})'


class RosenbrockND(base.Task):
  """The n-dimensional Rosenbrock function ``Σ_{i<n} 100 (x_{i+1} − x_i²)² + (1 − x_i)²`` (Rosenbrock 1960, in
  the chained form of Shang & Qiu 2006); minimum 0 at ``x = 1``, a narrow curved valley that punishes both too
  large and too timid steps. Init: uniform on ``[−2, 2]^n``.
  """

  def __init__(self, dim: int = 10):
    if dim < 2:
      raise ValueError(f'RosenbrockND needs dim >= 2, got {dim}.')
    self.dim = dim
    self.name = f'rosenbrock_{dim}d'

  def init(self, key):
    return jax.random.uniform(key, (self.dim,), jnp.float32, -2.0, 2.0)

  def loss(self, params, key, batch):
    del key, batch
    x, x_next = params[:-1], params[1:]
    return jnp.sum(100.0 * (x_next - x * x) ** 2 + (1.0 - x) ** 2)
