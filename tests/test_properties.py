"""Property-based tests (hypothesis) of the likelihoods and estimators."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import vae_jax as vj
from vae_jax.linear_gaussian import LinearGaussian

SETTINGS = settings(max_examples=25, deadline=None)
floats = lambda lo, hi: st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=32)
ORACLE = LinearGaussian.orthogonal(jax.random.key(0), data_dim=4, latent_dim=2)


@SETTINGS
@given(arrays(np.float32, 8, elements=floats(-1e4, 1e4)), arrays(np.int8, 8, elements=st.integers(0, 1)))
def test_bernoulli_is_finite_and_a_log_probability(logits, x):
    value = vj.bernoulli_log_prob(x.astype(np.float32), logits)
    assert np.isfinite(value) and value <= 0.0


@SETTINGS
@given(arrays(np.float32, 8, elements=floats(-10, 10)), arrays(np.float32, 8, elements=floats(-10, 10)),
       st.floats(1e-3, 10.0))
def test_gaussian_is_finite_for_sigma_down_to_1e_3(x, mean, sigma):
    assert np.isfinite(vj.gaussian_log_prob(x, mean, np.log(sigma)))


def _proposal(x, shift, log_var_shift):
    mean, log_var = ORACLE.diagonal_posterior(x)
    return mean + shift, log_var + log_var_shift


@functools.partial(jax.jit, static_argnames="chunk")
def _estimates(key, x, mean, log_var, chunk):
    """(importance stats, naive) with 300 samples in chunks of ``chunk`` (None: all at once), compiled once per
    chunk size (run op by op, each new chunk size cost seconds of tracing)."""
    return (vj.importance_log_marginal_stats(key, ORACLE.log_likelihood, x, mean, log_var, 300, chunk),
            vj.naive_log_marginal(key, ORACLE.log_likelihood, x, 2, 300, chunk))


# Chunk sizes: one sample, divisors of 300 and not, one short of all, all.
CHUNKS = st.sampled_from([1, 2, 7, 13, 64, 100, 150, 299, 300])


@SETTINGS
@given(arrays(np.float32, 4, elements=floats(-3, 3)), floats(-2, 2), floats(-2, 2), CHUNKS,
       st.integers(0, 2**31 - 1))
def test_estimators_finite_and_chunk_invariant(x, shift, log_var_shift, chunk, seed):
    mean, log_var = _proposal(x, shift, log_var_shift)
    key = jax.random.key(seed)
    iw, naive = _estimates(key, x, mean, log_var, chunk)
    iw_all, naive_all = _estimates(key, x, mean, log_var, None)
    assert np.isfinite(iw.log_marginal) and np.isfinite(naive) and 1.0 <= iw.ess <= 300.0
    np.testing.assert_allclose(iw.log_marginal, iw_all.log_marginal, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(naive, naive_all, rtol=1e-5, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(arrays(np.float32, 4, elements=floats(-3, 3)), floats(-1, 1), floats(-1, 1))
def test_importance_estimate_is_above_the_elbo_in_expectation(x, shift, log_var_shift):
    mean, log_var = _proposal(x, shift, log_var_shift)
    keys = jax.random.split(jax.random.key(1), 200)
    iw = jax.vmap(lambda k: vj.importance_log_marginal(k, ORACLE.log_likelihood, x, mean, log_var, 20))(keys)
    el = jax.vmap(lambda k: vj.elbo(k, ORACLE.log_likelihood, x, mean, log_var))(keys)
    exact = ORACLE.log_marginal(x)
    rounding = 1e-6 * abs(float(exact)) * 20  # float32 rounding of sums of ~20 terms of size |log p(x)|
    diff = iw - el  # E[log IS_20] >= E[ELBO]: the mean difference is >= 0 up to its standard error
    assert np.mean(diff) > -3 * np.std(diff) / np.sqrt(len(diff)) - rounding
    assert np.mean(iw) <= exact + 3 * np.std(iw) / np.sqrt(len(iw)) + rounding


@settings(max_examples=10, deadline=None)
@given(arrays(np.float64, 4, elements=st.floats(-3, 3)), st.floats(-1, 1), st.floats(-1, 1))
def test_float32_agrees_with_float64(x, shift, log_var_shift):
    key = jax.random.key(2)
    with jax.enable_x64(True):
        oracle64 = LinearGaussian(ORACLE.weight.astype(jnp.float64), ORACLE.bias.astype(jnp.float64),
                                  ORACLE.noise_std)
        m64, v64 = oracle64.diagonal_posterior(jnp.asarray(x))
        est64 = float(vj.importance_log_marginal(key, oracle64.log_likelihood, jnp.asarray(x), m64 + shift,
                                                 v64 + log_var_shift, 100))
    x32 = x.astype(np.float32)
    m32, v32 = _proposal(x32, np.float32(shift), np.float32(log_var_shift))
    est32 = float(vj.importance_log_marginal(key, ORACLE.log_likelihood, x32, m32, v32, 100))
    # Same key, same samples: only rounding differs (float32, values of size ~10).
    np.testing.assert_allclose(est32, est64, rtol=1e-4, atol=1e-4)
