"""Quadratic, Bowl, Norm, MatMulAlgorithm and the generated-classification data against independent references."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from tasks import generated_classification as gc
from tasks import matmul_algorithm
from tasks import norm
from tasks import quadratic


def test_quadratic_and_norm_minimum_at_least_squares_solution():
  q = quadratic.QuadraticFamily(8)
  task = q.task(q.sample(jax.random.PRNGKey(0)))
  x = jnp.linalg.solve(task.w, task.y)
  np.testing.assert_allclose(task.loss(x, None, None), 0.0, atol=1e-8)
  x0 = task.init(jax.random.PRNGKey(1))
  np.testing.assert_allclose(task.loss(x0, None, None), 0.5 * np.sum((np.asarray(task.w) @ x0 - task.y)**2), rtol=1e-5)
  n = norm.NormFamily(8, 3.0)
  task = n.task(n.sample(jax.random.PRNGKey(0)))
  # At W⁻¹y every residual is ~0, so f = (n·(1e-6)^p)^{1/p} = n^{1/p}·1e-6 (float32 residuals ~1e-6 allowed).
  np.testing.assert_allclose(task.loss(jnp.linalg.solve(task.w, task.y), None, None), 8**(1 / 3) * 1e-6, atol=2e-5)


def test_bowl_hessian_has_the_condition_number():
  task = quadratic.Bowl(5.0, math.pi / 4)
  hessian = jax.hessian(task.loss)(jnp.zeros(2), None, None)
  np.testing.assert_allclose(np.linalg.eigvalsh(hessian), [1.0, 5.0], rtol=1e-5)
  np.testing.assert_allclose(task.loss(jnp.zeros(2), None, None), 0.0)


def _strassen():
  # Strassen's 7 products, vec order (11, 12, 21, 22): M1 = (A11 + A22)(B11 + B22), M2 = (A21 + A22)B11,
  # M3 = A11(B12 − B22), M4 = A22(B21 − B11), M5 = (A11 + A12)B22, M6 = (A21 − A11)(B11 + B12),
  # M7 = (A12 − A22)(B21 + B22).
  a = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0], [-1, 0, 1, 0], [0, 1, 0, -1]])
  b = np.array([[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, -1], [-1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]])
  return {'theta_a': jnp.asarray(a.T, jnp.float32), 'theta_b': jnp.asarray(b.T, jnp.float32)}


def test_matmul_algorithm_is_zero_for_strassen_and_positive_at_init():
  task = matmul_algorithm.MatMulAlgorithm(2, 7)
  np.testing.assert_allclose(task.loss(_strassen(), None, None), 0.0, atol=1e-4)
  params = task.init(jax.random.PRNGKey(0))
  np.testing.assert_allclose(np.linalg.norm(params['theta_a'], axis=0), 1.0, rtol=1e-5)
  assert task.loss(params, None, None) > 0.1
  # k = 5 < 7: no exact algorithm exists, even at a random point the loss is well above 0.
  assert matmul_algorithm.MatMulAlgorithm(2, 5).loss(matmul_algorithm.MatMulAlgorithm(2, 5).init(
      jax.random.PRNGKey(0)), None, None) > 0.1


def test_informative_clusters_geometry_and_label_noise():
  sep = 2.0
  source = gc.informative_clusters(jax.random.PRNGKey(0), 6, sep)
  centroids = np.asarray(source.centroids)
  np.testing.assert_allclose(np.abs(centroids), sep)             # hypercube vertices ±sep
  assert len({tuple(c) for c in centroids}) == 4                  # distinct
  x, y = source.sample(jax.random.PRNGKey(1), 20000)
  # Classes balanced (2 of 4 clusters each); binomial standard error √(0.25/20000) = 0.0035, allow 5.
  assert abs(float(np.mean(y)) - 0.5) < 5 * 0.0035
  # Each cluster's spread: x − c = z·A with z ~ N(0, I), so E‖x − c‖² = ‖A‖_F². Check via the nearest centroid
  # with a clean, far-apart instance: mean squared distance within 5% of the average ‖A_k‖_F².
  big = gc.informative_clusters(jax.random.PRNGKey(2), 6, 50.0)
  xb, _ = big.sample(jax.random.PRNGKey(3), 4000)
  d2 = ((np.asarray(xb)[:, None, :] - np.asarray(big.centroids)[None])**2).sum(-1).min(1)
  frob = (np.asarray(big.mixing)**2).sum((1, 2)).mean()
  np.testing.assert_allclose(d2.mean(), frob, rtol=0.05)


def test_generated_splits_and_training_reduces_loss():
  family = gc.SoftmaxRegressionFamily(10, batch_size=100, n_samples=1000, class_sep=2.0)
  task = family.task(family.sample(jax.random.PRNGKey(0)))
  x_train = np.asarray(task.x)
  xb, _ = task.batch(jax.random.PRNGKey(1), 'train')
  assert all((x_train == row).all(1).any() for row in np.asarray(xb))       # train batches come from the set
  xv, _ = task.batch(jax.random.PRNGKey(1), 'outer_valid')
  assert not any((x_train == row).all(1).any() for row in np.asarray(xv))   # held-out points are fresh
  params = task.init(jax.random.PRNGKey(2))
  full = (task.x, task.y)

  @jax.jit
  def train(params):
    def step(p, k):
      g = jax.grad(task.loss)(p, k, task.batch(k, 'train'))
      return jax.tree.map(lambda a, b: a - 0.5 * b, p, g), None
    return jax.lax.scan(step, params, jax.random.split(jax.random.PRNGKey(3), 300))[0]

  trained = train(params)
  # sep = 2 in 10 dimensions is nearly linearly separable: 300 SGD steps reach a full-set loss below 0.35
  # and a held-out accuracy above 85% (chance is 50%).
  assert task.loss(trained, None, full) < min(0.35, float(task.loss(params, None, full)))
  xt, yt = task.batch(jax.random.PRNGKey(4), 'test')
  accuracy = np.mean((np.asarray(task.logits(trained, xt)[:, 0]) > 0) == np.asarray(yt))
  assert accuracy > 0.85
