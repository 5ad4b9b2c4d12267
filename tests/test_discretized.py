"""The discretized logistic likelihoods against a float64 reference from the logistic CDF (scipy), and their
pieces (mean image, sampling, matrix form) against exact answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from vae_jax import distributions as d

LEVELS = np.arange(256) / 255
# Means and log scales from ordinary to extreme: a scale of a tiny fraction of a bin (log scale -9, the
# clipping floor) to 20 x the data range (3, the ceiling); means inside, at the edges and far outside [0, 1].
MEANS = [-3.0, -0.2, 0.0, 1 / 510, 0.3, 0.5 + 1 / 510, 0.999, 1.0, 1.7, 40.0]
LOG_SCALES = [-9.0, -7.0, -5.5, -3.0, -1.0, 0.0, 3.0]


def reference_log_prob(level, mean, log_scale):
    """float64 log P(level) = log(F(upper) - F(lower)) of the logistic CDF F (scipy's ``log_expit``), the edge bins
    taking the tails; the difference is taken in log space on the side of the mean where it does not cancel
    (of the CDFs below the mean, of the survival functions above it)."""
    s = np.exp(log_scale)
    hi = (level + 0.5) / 255 if level < 255 else np.inf
    lo = (level - 0.5) / 255 if level > 0 else -np.inf
    a, b = (hi - mean) / s, (lo - mean) / s
    if level == 0:
        return special.log_expit(a)
    if level == 255:
        return special.log_expit(-b)
    if a + b < 0:  # below the mean: F(a) - F(b) = F(a) (1 - F(b) / F(a))
        return special.log_expit(a) + np.log(-np.expm1(special.log_expit(b) - special.log_expit(a)))
    return special.log_expit(-b) + np.log(-np.expm1(special.log_expit(-a) - special.log_expit(-b)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_bin_probabilities_sum_to_one(dtype):
    """For every mean and scale, sum over the 256 levels of P(level) = 1 within 1e-5, in float32 and float64."""
    with jax.enable_x64(dtype == jnp.float64):
        mean, log_scale = np.meshgrid(MEANS, LOG_SCALES)
        levels = jnp.asarray(LEVELS, dtype)[:, None, None]
        log_p = d.discretized_logistic_log_prob_bins(levels, jnp.asarray(mean, dtype), jnp.asarray(log_scale, dtype))
        assert log_p.dtype == dtype and bool(jnp.all(jnp.isfinite(log_p) | (log_p == -jnp.inf)))
        total = np.asarray(jnp.sum(jnp.exp(log_p.astype(jnp.float64) if dtype == jnp.float64 else log_p), axis=0))
        np.testing.assert_allclose(total, 1.0, atol=1e-5)


def test_log_probabilities_match_a_float64_reference():
    """log P(level) equals log(F(upper) - F(lower)) of scipy's logistic in float64 within 1e-4 (absolute, in
    nats), for every level, mean and scale whose reference is finite, tiny bin probabilities included: the
    float32 function keeps relative accuracy where the reference probability is 1e-30."""
    mean, log_scale = np.meshgrid(MEANS, LOG_SCALES)
    got = np.asarray(d.discretized_logistic_log_prob_bins(jnp.asarray(LEVELS, jnp.float32)[:, None, None],
                                                           jnp.asarray(mean, jnp.float32),
                                                           jnp.asarray(log_scale, jnp.float32)))
    with np.errstate(divide="ignore"):
        ref = np.vectorize(reference_log_prob)(np.arange(256)[:, None, None], mean[None], log_scale[None])
    finite = np.isfinite(ref)
    assert finite.mean() > 0.99  # the comparison covers the grid, tails included
    np.testing.assert_allclose(got[finite], ref[finite], atol=1e-4, rtol=1e-5)
    assert np.all(got[~finite] < -80)  # where float64 underflows, the float32 value is tiny too, not NaN


def test_log_scale_is_clipped_and_the_example_sums():
    x = jnp.asarray(LEVELS[[0, 17, 128, 255]], jnp.float32)
    mean, log_scale = jnp.array([0.1, 0.05, 0.5, 0.9]), jnp.array([-50.0, -2.0, 0.5, 60.0])
    params = jnp.stack([mean, log_scale], axis=-1).reshape(-1)  # pixel-major [D, 2]
    expected = d.discretized_logistic_log_prob_bins(x, mean, jnp.clip(log_scale, *d.LOG_SCALE_RANGE)).sum()
    np.testing.assert_allclose(d.discretized_logistic_log_prob(x, params), expected, rtol=1e-6)
    assert np.isfinite(float(d.discretized_logistic_log_prob(x, params)))


def test_mixture_equals_the_weighted_sum_of_components():
    """P(x_d) = sum_m pi_m P_m(x_d), checked in probability space against the single-component function."""
    rng = np.random.default_rng(0)
    dim, m = 6, 3
    x = jnp.asarray(rng.integers(0, 256, dim) / 255, jnp.float32)
    params = jnp.asarray(rng.normal(size=(dim, 3, m)) * np.array([1.0, 0.4, 1.5])[None, :, None] +
                         np.array([0.0, 0.5, -3.0])[None, :, None], jnp.float32)
    weights = special.softmax(np.asarray(params[:, 0], np.float64), axis=-1)
    comp = np.exp(np.asarray(d.discretized_logistic_log_prob_bins(x[:, None], params[:, 1], params[:, 2]), np.float64))
    expected = np.sum(np.log(np.sum(weights * comp, axis=-1)))
    got = d.discretized_logistic_mixture_log_prob(x, params.reshape(-1), m)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    one = d.discretized_logistic_mixture_log_prob(x, params[:, :, :1].reshape(-1), 1)  # M = 1: the plain one
    np.testing.assert_allclose(one, d.discretized_logistic_log_prob(x, params[:, 1:, 0].reshape(-1)), rtol=1e-6)


@pytest.mark.parametrize("name", ["discretized_logistic", "discretized_logistic_mixture"])
def test_mean_sample_and_matrix_form(name):
    """The mean image is sum_k k/255 P(k) computed from the 256 bin probabilities; samples are levels whose
    average matches that mean within 5 standard errors; the matrix form equals log_prob pair by pair."""
    rng = np.random.default_rng(1)
    lik = d.likelihood(name, mixture_components=3)
    dim = 5
    g = jnp.asarray(rng.normal(size=(dim * lik.params_per_value,)) * 0.5, jnp.float32)
    # The exact mean from the bin probabilities of each value, each value's output taken alone.
    per_value = g.reshape(dim, lik.params_per_value)
    levels = jnp.asarray(LEVELS, jnp.float32)[:, None]
    log_p = jax.vmap(lambda gi: jax.vmap(lambda x: lik.log_prob(x, gi, None))(levels))(per_value)  # [D, 256]
    probs = np.exp(np.asarray(log_p, np.float64))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    exact_mean = probs @ LEVELS
    np.testing.assert_allclose(lik.mean(g), exact_mean, atol=1e-5)

    draws = np.asarray(jax.vmap(lambda k: lik.sample(k, g, None))(jax.random.split(jax.random.key(0), 4000)))
    np.testing.assert_allclose(draws * 255, np.round(draws * 255), atol=1e-3)  # levels
    assert draws.min() >= 0 and draws.max() <= 1
    sd = np.sqrt(probs @ LEVELS**2 - exact_mean**2)
    assert np.all(np.abs(draws.mean(0) - exact_mean) < 5 * sd / np.sqrt(4000) + 1e-6)

    xs = jnp.asarray(rng.integers(0, 256, (4, dim)) / 255, jnp.float32)
    gs = jnp.asarray(rng.normal(size=(11, dim * lik.params_per_value)), jnp.float32)
    pairs = jax.vmap(lambda x: jax.vmap(lambda gc: lik.log_prob(x, gc, None))(gs))(xs)
    np.testing.assert_allclose(lik.log_prob_matrix(xs, gs, None), pairs, rtol=1e-6)


@pytest.mark.parametrize("name", ["discretized_logistic", "discretized_logistic_mixture"])
def test_output_for_mean_gives_that_mean(name):
    """Setting the output bias from the data mean starts the decoder's mean image near it (off by the clipping
    of the logistic's tails at 0 and 1 only, s softplus(-distance / s) with s = 0.05: under 0.03 here)."""
    lik = d.likelihood(name, mixture_components=4)
    mean = jnp.array([0.02, 0.3, 0.5, 0.97])
    np.testing.assert_allclose(lik.mean(lik.output_for_mean(mean)), mean, atol=0.03)
