"""Log densities against scipy.stats and exact closed forms."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import vae_jax as vj

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("sigma", [1e-3, 0.1, 1.0, 7.0])
def test_gaussian_matches_scipy(sigma):
    x, mean = RNG.normal(size=20), RNG.normal(size=20)
    expected = stats.norm.logpdf(x, mean, sigma).sum()
    got = vj.gaussian_log_prob(x, mean, np.log(sigma))
    # float32: relative rounding of the sum of squares (~1e-7 per term, 20 terms).
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-4)


def test_gaussian_per_dimension_sigma():
    x, mean, log_sigma = RNG.normal(size=10), RNG.normal(size=10), RNG.normal(size=10)
    expected = stats.multivariate_normal.logpdf(x, mean, np.diag(np.exp(2 * log_sigma)))
    np.testing.assert_allclose(vj.gaussian_log_prob(x, mean, log_sigma), expected, rtol=1e-5)


def test_gaussian_reconstruction_term_form():
    """-||x - g||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2), the form stated in the design."""
    x, g, sigma = RNG.normal(size=784), RNG.normal(size=784), 0.3
    expected = -np.sum((x - g) ** 2) / (2 * sigma**2) - 784 / 2 * np.log(2 * np.pi * sigma**2)
    np.testing.assert_allclose(vj.gaussian_log_prob(x, g, np.log(sigma)), expected, rtol=1e-5)


def test_bernoulli_matches_scipy():
    logits = RNG.normal(scale=3, size=50)
    x = (RNG.uniform(size=50) < 0.5).astype(np.float32)
    expected = stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).sum()
    np.testing.assert_allclose(vj.bernoulli_log_prob(x, logits), expected, rtol=1e-5)


def test_bernoulli_extreme_logits_are_finite_and_exact():
    logits = np.array([1e4, -1e4, 1e4, -1e4, 50.0, -50.0], np.float32)
    x = np.array([1, 0, 0, 1, 0, 1], np.float32)
    # log s(l) = -log(1 + exp(-l)), evaluated exactly in float64.
    expected = np.sum(x * -np.logaddexp(0, -logits.astype(float)) + (1 - x) * -np.logaddexp(0, logits.astype(float)))
    got = vj.bernoulli_log_prob(x, logits)
    assert np.isfinite(got)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    right = vj.bernoulli_log_prob(x[:2], logits[:2])
    assert right == 0.0


def test_normal_log_probs_match_scipy():
    z, mean, log_var = RNG.normal(size=6), RNG.normal(size=6), RNG.normal(size=6)
    np.testing.assert_allclose(
        vj.standard_normal_log_prob(z), stats.multivariate_normal.logpdf(z, np.zeros(6)), rtol=1e-6
    )
    expected = stats.multivariate_normal.logpdf(z, mean, np.diag(np.exp(log_var)))
    np.testing.assert_allclose(vj.diag_normal_log_prob(z, mean, log_var), expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian"])
def test_matrix_forms_agree_with_the_per_example_forms(name):
    from vae_jax.distributions import LIKELIHOODS

    likelihood = LIKELIHOODS[name]
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.integers(0, 2, (4, 7)) if name == "bernoulli" else rng.normal(size=(4, 7)), jnp.float32)
    outputs = jnp.asarray(rng.normal(size=(3, 7)) * 3, jnp.float32)
    log_sigma = jnp.asarray(rng.normal(size=7) * 0.3, jnp.float32)
    pairs = jnp.array([[likelihood.log_prob(x, g, log_sigma) for g in outputs] for x in xs])
    # float32 rounding of sums of 7 terms of size ~10-50 (the Gaussian's expanded square: ~1e-5 relative).
    np.testing.assert_allclose(likelihood.log_prob_matrix(xs, outputs, log_sigma), pairs, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(likelihood.output_for_mean(likelihood.mean(outputs[0])), outputs[0], rtol=1e-4)
