"""The nine 2-D test functions: value and gradient at their known optima, non-negativity, init boxes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import tasks
from tasks import test_functions as tf

# Known global minima from the optimisation test-function literature (sfu.ca/~ssurjano) or derived by hand below.
_LOGSUMEXP_X = -math.log(2) / 2   # ∂f/∂x = 0 on y = 0: 2e^{x−0.1} = e^{−x−0.1}
KNOWN_OPTIMA = {
    'rosenbrock': ([(1.0, 1.0)], 0.0),
    'beale': ([(3.0, 0.5)], 0.0),
    'booth': ([(1.0, 3.0)], 0.0),
    'matyas': ([(0.0, 0.0)], 0.0),
    'branin': ([(-math.pi, 12.275), (math.pi, 2.275), (3 * math.pi, 2.475)], 0.397887),
    'ackley': ([(0.0, 0.0)], 0.0),
    'logsumexp': ([(_LOGSUMEXP_X, 0.0)], math.log(2 * math.sqrt(2) * math.exp(-0.1) + 1)),
}


def _value_and_grad(name, point):
  return jax.value_and_grad(tf.TEST_FUNCTIONS[name][0])(jnp.asarray(point, jnp.float32))


@pytest.mark.parametrize('name', sorted(KNOWN_OPTIMA))
def test_value_and_gradient_at_known_optimum(name):
  points, value = KNOWN_OPTIMA[name]
  for point in points:
    f, g = _value_and_grad(name, point)
    # Branin's literature value has 6 digits; its minimisers 3-4 digits (gradient ~1e-3 there).
    np.testing.assert_allclose(f, value, atol=1e-5)
    np.testing.assert_allclose(g, 0.0, atol=2e-3 if name == 'branin' else 1e-4)


def test_styblinski_tang_optimum_from_the_roots_of_its_derivative():
  # d/dv (v⁴ − 16v² + 5v) = 4v³ − 32v + 5; the global minimiser is the most negative real root.
  v = min(r.real for r in np.roots([4.0, 0.0, -32.0, 5.0]) if abs(r.imag) < 1e-12)
  expected = 0.5 * 2 * (v**4 - 16 * v**2 + 5 * v) + 80
  f, g = _value_and_grad('styblinski_tang', (v, v))
  np.testing.assert_allclose(f, expected, atol=1e-4)  # float32: 80 − 78.33 loses ~5 digits
  np.testing.assert_allclose(f, 80 - 2 * 39.16617, atol=1e-3)  # literature: −39.16617 per dimension
  np.testing.assert_allclose(g, 0.0, atol=1e-3)


def test_michalewicz_against_literature_and_an_independent_minimiser():
  # The literature value (−1.8013 at (2.20, 1.57), sfu.ca) is for steepness m = 10; Wichrowska's problem uses m = 5.
  np.testing.assert_allclose(tf.michalewicz(jnp.array([2.20, 1.57]), m=10), 2 - 1.8013, atol=2e-4)

  # m = 5: y* = π/2 exactly (both sin factors equal 1 there); refine x* with an independent NumPy implementation.
  def numpy_michalewicz(p):
    x, y = p
    return 2 - (np.sin(x) * np.sin(x**2 / np.pi)**10 + np.sin(y) * np.sin(2 * y**2 / np.pi)**10)
  result = scipy.optimize.minimize(numpy_michalewicz, [2.2, 1.57], method='Nelder-Mead',
                                   options={'xatol': 1e-10, 'fatol': 1e-12})
  np.testing.assert_allclose(result.x[1], math.pi / 2, atol=1e-6)
  f, g = _value_and_grad('michalewicz', result.x)
  np.testing.assert_allclose(f, result.fun, atol=1e-5)
  np.testing.assert_allclose(g, 0.0, atol=1e-2)  # float32 gradient of sin^10 on a steep ridge


def test_functions_are_non_negative_and_finite_on_their_init_boxes():
  # Wichrowska's log meta-objective needs f >= 0; check 4096 points spread over (twice) each init box.
  for name, (function, box) in tf.TEST_FUNCTIONS.items():
    points = 2 * jax.vmap(lambda k: tf.sample_init(name, k))(jax.random.split(jax.random.PRNGKey(0), 4096))
    values, grads = jax.vmap(jax.value_and_grad(function))(points)
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads)), name
    assert float(values.min()) >= 0.0, name


def test_init_boxes():
  for name, (_, box) in tf.TEST_FUNCTIONS.items():
    points = np.asarray(jax.vmap(lambda k: tf.sample_init(name, k))(jax.random.split(jax.random.PRNGKey(1), 2000)))
    if box.low is None:
      # N(0, 1): sample std 1 within 5 standard errors (se of a std from n draws ≈ 1/√(2n) = 0.016).
      np.testing.assert_allclose(points.std(axis=0), 1.0, atol=5 * 0.016)
    else:
      assert np.all(points >= np.asarray(box.low)) and np.all(points <= np.asarray(box.high)), name
      # Uniform: the sample mean sits at the centre within 5 standard errors (se = width/√(12n)).
      width = np.asarray(box.high) - np.asarray(box.low)
      np.testing.assert_allclose(points.mean(axis=0), (np.asarray(box.low) + box.high) / 2,
                                 atol=5 * float(width.max()) / math.sqrt(12 * 2000))


def test_task_shift_and_scale_move_the_optimum():
  task = tf.TestFunction('booth', offset=jnp.array([0.5, -2.0]), scale=3.0)
  f, g = jax.value_and_grad(task.loss)(jnp.array([1.5, 1.0]), None, None)  # (1, 3) + offset
  np.testing.assert_allclose(f, 0.0, atol=1e-5)
  np.testing.assert_allclose(g, 0.0, atol=1e-4)
  np.testing.assert_allclose(task.loss(jnp.zeros(2), None, None), 3 * tf.booth(-jnp.array([0.5, -2.0])), rtol=1e-6)


def test_unknown_function_name_is_rejected():
  with pytest.raises(ValueError, match='unknown test function .*rosenbrock'):
    tf.TestFunction('rosenbrok')


def test_rosenbrock_nd_minimum_gradient_and_chained_form():
  task = tasks.RosenbrockND(10)
  ones = jnp.ones(10)
  assert float(task.loss(ones, None, None)) == 0.0
  np.testing.assert_array_equal(jax.grad(task.loss)(ones, None, None), np.zeros(10))
  # In two dimensions it is the classic Rosenbrock function of the Wichrowska set.
  x = jnp.asarray([-1.2, 1.0])
  assert float(tasks.RosenbrockND(2).loss(x, None, None)) == pytest.approx(float(tf.rosenbrock(x)))
  x0 = task.init(jax.random.key(0))
  assert x0.shape == (10,) and float(jnp.min(x0)) >= -2.0 and float(jnp.max(x0)) <= 2.0
  with pytest.raises(ValueError, match='dim >= 2'):
    tasks.RosenbrockND(1)
