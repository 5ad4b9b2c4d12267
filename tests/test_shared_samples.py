"""Shared-sample estimators: agreement with the per-example path, and quadrature against exact answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax as vj
from vae_jax.linear_gaussian import LinearGaussian
from vae_jax.shared_samples import grid_error_estimate, grid_log_marginal_2d, naive_log_marginal_shared


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_likelihood_matrix_matches_per_pair(likelihood):
    config = vj.ModelConfig(data_dim=10, latent_dim=3, hidden=(16,), likelihood=likelihood, sigma=0.3,
                            learn_sigma=likelihood == "gaussian")
    vae = vj.VAE(config)
    params = vae.init(jax.random.key(0))
    xs = jnp.round(jax.random.uniform(jax.random.key(1), (4, 10)))
    z = jax.random.normal(jax.random.key(2), (6, 3))
    pairs = jax.vmap(lambda x: jax.vmap(lambda zc: vae.log_likelihood(params, x, zc))(z))(xs)
    # Expanded forms round relative to the summands (~D * |g| or ||x||^2 / sigma^2 ~ 1e2): 1e-4 relative.
    np.testing.assert_allclose(vae.log_likelihood_matrix(params, xs, z), pairs, rtol=1e-4, atol=1e-3)


def test_shared_naive_equals_per_example_naive_with_the_same_key():
    vae = vj.VAE(vj.ModelConfig(data_dim=10, latent_dim=3, hidden=(16,)))
    params = vae.init(jax.random.key(0))
    xs = jnp.round(jax.random.uniform(jax.random.key(1), (5, 10)))
    key = jax.random.key(3)
    shared = naive_log_marginal_shared(key, lambda x, z: vae.log_likelihood_matrix(params, x, z), xs, 3, 2000, 300)
    ll = vae.likelihood_fn(params)
    single = jax.vmap(lambda x: vj.naive_log_marginal_stats(key, ll, x, 3, 2000, 300))(xs)
    for a, b in zip(shared[:3], single[:3]):  # estimate, stderr, ESS
        np.testing.assert_allclose(a, b, rtol=2e-5)
    # k-hat is fitted to the largest log-weights, which the two paths round differently (~1e-6); near
    # k = 0 a relative tolerance means nothing, and its statistical error is ~0.1 (M = 135).
    np.testing.assert_allclose(shared.khat, single.khat, atol=1e-4)


def test_grid_quadrature_matches_exact_linear_gaussian():
    model = LinearGaussian.orthogonal(jax.random.key(4), data_dim=5, latent_dim=2, scale=1.5)
    xs = model.sample(jax.random.key(5), 6)
    matrix = lambda x, z: jax.vmap(lambda xn: jax.vmap(lambda zc: model.log_likelihood(xn, zc))(z))(x)
    estimate, error = grid_error_estimate(matrix, xs, limit=6.0, num_points=200)
    exact = jax.vmap(model.log_marginal)(xs)
    np.testing.assert_allclose(estimate, exact, atol=1e-3)
    assert np.all(error < 1e-3)
    coarse = grid_log_marginal_2d(matrix, xs, limit=6.0, num_points=20)
    assert np.max(np.abs(coarse - exact)) > np.max(np.abs(estimate - exact))  # refinement helps
