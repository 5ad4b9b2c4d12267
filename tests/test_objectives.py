"""KL closed form, reparameterization and the ELBO, against exact answers and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np

import vae_jax as vj
from vae_jax.linear_gaussian import LinearGaussian

MEAN = jnp.array([0.3, -1.2, 0.0, 2.0])
LOG_VAR = jnp.array([-0.5, 0.4, -2.0, 0.1])


def test_kl_matches_matrix_form():
    mu, sigma = np.asarray(MEAN, float), np.diag(np.exp(np.asarray(LOG_VAR, float)))
    k = len(mu)
    expected = 0.5 * (np.trace(sigma) + mu @ mu - k - np.log(np.linalg.det(sigma)))
    np.testing.assert_allclose(vj.kl_standard_normal(MEAN, LOG_VAR), expected, rtol=1e-6)


def test_kl_is_zero_at_prior_and_precise_near_it():
    assert vj.kl_standard_normal(jnp.zeros(3), jnp.zeros(3)) == 0.0
    # KL = (exp(v) - 1 - v) / 2 ~ v^2 / 4 for tiny v. In float32, expm1(v) - v is off by at most
    # ~v * 2^-24 = 6e-12 (0.25% of 2.5e-9); exp(v) - 1 - v would be off by 1.2e-7 (a factor of 7).
    v = 1e-4
    exact = 0.5 * (np.expm1(v) - v)
    np.testing.assert_allclose(vj.kl_standard_normal(jnp.zeros(1), jnp.full(1, v)), exact, rtol=3e-3)


def _mc_kl_samples(mean, log_var, eps):
    z = mean + jnp.exp(0.5 * log_var) * eps
    return vj.diag_normal_log_prob(z, mean, log_var) - vj.standard_normal_log_prob(z)


def test_kl_matches_monte_carlo_value_and_gradient():
    n = 200_000
    eps = jax.random.normal(jax.random.key(0), (n, 4))
    samples = jax.vmap(_mc_kl_samples, (None, None, 0))(MEAN, LOG_VAR, eps)
    se = np.std(samples) / np.sqrt(n)
    assert abs(np.mean(samples) - vj.kl_standard_normal(MEAN, LOG_VAR)) < 4 * se

    per_sample_grads = jax.vmap(jax.grad(_mc_kl_samples, argnums=(0, 1)), (None, None, 0))(MEAN, LOG_VAR, eps)
    exact = jax.grad(vj.kl_standard_normal, argnums=(0, 1))(MEAN, LOG_VAR)
    for mc, want in zip(per_sample_grads, exact):
        se = np.std(mc, axis=0) / np.sqrt(n) + 1e-7  # + float32 rounding of the mean
        assert np.all(np.abs(np.mean(mc, axis=0) - want) < 4 * se), (np.mean(mc, axis=0), want, se)


def test_reparameterize_moments_and_gradient():
    keys = jax.random.split(jax.random.key(1), 100_000)
    z = jax.vmap(vj.reparameterize, (0, None, None))(keys, MEAN, LOG_VAR)
    std = np.exp(0.5 * np.asarray(LOG_VAR))
    np.testing.assert_array_less(np.abs(z.mean(0) - MEAN), 4 * std / np.sqrt(len(keys)))
    # The variance estimator's standard error is about sqrt(2 / n) var.
    np.testing.assert_array_less(np.abs(z.var(0) / std**2 - 1), 4 * np.sqrt(2 / len(keys)))
    key = jax.random.key(2)
    eps = (vj.reparameterize(key, MEAN, LOG_VAR) - MEAN) / std
    grad_mean, grad_lv = jax.grad(lambda m, lv: vj.reparameterize(key, m, lv).sum(), (0, 1))(MEAN, LOG_VAR)
    np.testing.assert_allclose(grad_mean, 1.0)
    np.testing.assert_allclose(grad_lv, 0.5 * std * eps, rtol=1e-5, atol=1e-6)  # eps recovered with rounding


def _oracle():
    return LinearGaussian.orthogonal(jax.random.key(3), data_dim=6, latent_dim=3)


def test_elbo_terms_sum_to_elbo_and_kl_is_exact():
    model, key = _oracle(), jax.random.key(4)
    x = model.sample(jax.random.key(5), 1)[0]
    mean, log_var = model.diagonal_posterior(x)
    rec, kl = vj.elbo_terms(key, model.log_likelihood, x, mean, log_var, num_samples=10)
    np.testing.assert_allclose(vj.elbo(key, model.log_likelihood, x, mean, log_var, 10), rec - kl, rtol=1e-6)
    np.testing.assert_allclose(kl, vj.kl_standard_normal(mean, log_var))


def test_elbo_with_exact_posterior_equals_log_marginal():
    """With q = p(z|x), ELBO = log p(x); the estimate differs only by the MC error of E_q[log p(x|z)]."""
    model, s = _oracle(), 20_000
    for i, x in enumerate(model.sample(jax.random.key(6), 5)):
        mean, log_var = model.diagonal_posterior(x)
        key = jax.random.key(100 + i)
        estimate = vj.elbo(key, model.log_likelihood, x, mean, log_var, num_samples=s)
        eps = vj.standard_normal_stream(key, jnp.arange(s), 3)
        ll = jax.vmap(model.log_likelihood, (None, 0))(x, mean + jnp.exp(0.5 * log_var) * eps)
        se = np.std(ll) / np.sqrt(s)
        assert abs(estimate - model.log_marginal(x)) < 4 * se + 1e-4, (estimate, model.log_marginal(x), se)
