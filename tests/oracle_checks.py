"""Estimator checks against the exact linear-Gaussian oracle, shared by the float32 and float64 modules.

Each function takes ``rtol``: the relative tolerance of float rounding for the dtype under test.
"""

import functools

import jax
import numpy as np

import vae_jax as vj
from vae_jax.linear_gaussian import LinearGaussian


def model(dtype, data_dim=6, latent_dim=3):
    return LinearGaussian.orthogonal(jax.random.key(0), data_dim, latent_dim, dtype=dtype)


def check_importance_with_exact_posterior_is_exact(dtype, rtol):
    """With q = p(z|x) every weight equals p(x): the estimate is exact for any K, ESS = K."""
    oracle = model(dtype)
    for i, x in enumerate(oracle.sample(jax.random.key(1), 4)):
        mean, log_var = oracle.diagonal_posterior(x)
        exact = oracle.log_marginal(x)
        for k in (1, 7, 100):
            stats = vj.importance_log_marginal_stats(
                jax.random.key(i), oracle.log_likelihood, x, mean, log_var, k, chunk_size=16
            )
            np.testing.assert_allclose(stats.log_marginal, exact, rtol=rtol)
            np.testing.assert_allclose(stats.ess, k, rtol=rtol * 100)
            if k > 1:
                # stderr^2 = (sum w^2 / (sum w)^2 - 1/K) K/(K-1) cancels to rounding for equal
                # weights: it is ~sqrt(rounding error of the log-weights), not ~rounding error.
                assert stats.stderr < np.sqrt(rtol), stats.stderr


def check_naive_converges_in_2d(dtype, num_samples=400_000):
    """The naive estimator for a 2-D latent reaches the exact value within 3 standard errors."""
    oracle = model(dtype, data_dim=4, latent_dim=2)
    for i, x in enumerate(oracle.sample(jax.random.key(2), 3)):
        stats = vj.naive_log_marginal_stats(
            jax.random.key(10 + i), oracle.log_likelihood, x, 2, num_samples, chunk_size=50_000
        )
        exact = oracle.log_marginal(x)
        assert abs(stats.log_marginal - exact) < 3 * stats.stderr, (stats, exact)
        assert stats.stderr < 0.05  # a meaningful check, not a vacuous one


def check_mismatched_q_ordering(dtype):
    """For q != p(z|x): E[ELBO] < E[log IS_K] <= log p(x), averaged over independent keys."""
    oracle, reps, k = model(dtype), 400, 50
    x = oracle.sample(jax.random.key(3), 1)[0]
    mean, log_var = oracle.diagonal_posterior(x)
    mean, log_var = mean + 0.7, log_var + 0.8  # a poor but overlapping proposal
    keys = jax.random.split(jax.random.key(4), reps)
    elbos = jax.vmap(lambda key: vj.elbo(key, oracle.log_likelihood, x, mean, log_var))(keys)
    iwae = jax.vmap(
        lambda key: vj.importance_log_marginal(key, oracle.log_likelihood, x, mean, log_var, k)
    )(keys)
    exact = oracle.log_marginal(x)
    se_elbo, se_iwae = np.std(elbos) / np.sqrt(reps), np.std(iwae) / np.sqrt(reps)
    gap = exact - vj.elbo(keys[0], oracle.log_likelihood, x, mean, log_var, 100_000)
    assert gap > 0.5  # the proposal really is mismatched
    assert np.mean(elbos) + 3 * np.hypot(se_elbo, se_iwae) < np.mean(iwae)
    assert np.mean(iwae) <= exact + 3 * se_iwae
    assert exact - np.mean(iwae) < gap  # importance sampling closes part of the gap


def check_chunk_size_invariance(dtype, rtol):
    oracle = model(dtype)
    x = oracle.sample(jax.random.key(5), 1)[0]
    mean, log_var = oracle.diagonal_posterior(x)
    mean = mean + 0.3
    key = jax.random.key(6)
    iw = functools.partial(vj.importance_log_marginal_stats, key, oracle.log_likelihood, x, mean, log_var, 1000)
    nv = functools.partial(vj.naive_log_marginal_stats, key, oracle.log_likelihood, x, 3, 1000)
    for estimator in (iw, nv):
        reference = estimator(None)
        for chunk in (1, 7, 128, 999, 1000, 5000):
            for got, want in zip(estimator(chunk), reference):
                np.testing.assert_allclose(got, want, rtol=rtol)
