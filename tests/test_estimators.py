"""The log p(x) estimators: exact oracle, Monte Carlo error, chunking, jit/vmap and edge cases."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax as vj
from tests import oracle_checks


def test_importance_with_exact_posterior_is_exact():
    oracle_checks.check_importance_with_exact_posterior_is_exact(jnp.float32, rtol=2e-5)


def test_naive_converges_in_2d():
    oracle_checks.check_naive_converges_in_2d(jnp.float32)


def test_mismatched_q_ordering():
    oracle_checks.check_mismatched_q_ordering(jnp.float32)


def test_chunk_size_invariance():
    oracle_checks.check_chunk_size_invariance(jnp.float32, rtol=2e-5)


def test_stderr_matches_spread_over_keys():
    """The delta-method standard error predicts the spread of estimates across independent keys."""
    oracle = oracle_checks.model(jnp.float32)
    x = oracle.sample(jax.random.key(7), 1)[0]
    mean, log_var = oracle.diagonal_posterior(x)
    mean = mean + 0.5 * jnp.exp(0.5 * log_var)  # half a posterior std off: weights of moderate spread
    keys = jax.random.split(jax.random.key(8), 300)
    run = jax.vmap(lambda k: vj.importance_log_marginal_stats(k, oracle.log_likelihood, x, mean, log_var, 2000))
    stats = run(keys)
    ratio = np.std(stats.log_marginal) / np.mean(stats.stderr)
    # The sample std over 300 keys has relative error ~1/sqrt(2 * 300) = 4%; allow 5 of those.
    assert abs(ratio - 1) < 0.2, ratio
    assert np.all((stats.ess >= 1) & (stats.ess <= 2000))
    assert np.all(stats.ess < 2000 * 0.99)  # a mismatched q loses effective samples


def test_naive_effective_sample_size_collapses_in_high_dimension():
    oracle = oracle_checks.model(jnp.float32, data_dim=40, latent_dim=20)
    x = oracle.sample(jax.random.key(9), 1)[0]
    mean, log_var = oracle.diagonal_posterior(x)
    naive = vj.naive_log_marginal_stats(jax.random.key(10), oracle.log_likelihood, x, 20, 10_000)
    iw = vj.importance_log_marginal_stats(jax.random.key(10), oracle.log_likelihood, x, mean, log_var, 100)
    exact = oracle.log_marginal(x)
    assert naive.ess < 10  # a handful of 10,000 prior samples carry all the weight
    assert exact - naive.log_marginal > 5.0  # the naive estimate falls far short ...
    np.testing.assert_allclose(iw.log_marginal, exact, rtol=1e-5)  # ... where 100 IS samples are exact


def test_vmap_over_examples_matches_loop():
    oracle = oracle_checks.model(jnp.float32)
    xs = oracle.sample(jax.random.key(11), 5)
    means, log_vars = jax.vmap(oracle.diagonal_posterior)(xs)
    keys = jax.random.split(jax.random.key(12), 5)
    ll = oracle.log_likelihood
    batched = jax.vmap(lambda k, x, m, v: vj.importance_log_marginal(k, ll, x, m + 0.2, v, 64, 16))(
        keys, xs, means, log_vars
    )
    looped = [vj.importance_log_marginal(k, ll, x, m + 0.2, v, 64, 16) for k, x, m, v in zip(keys, xs, means, log_vars)]
    np.testing.assert_allclose(batched, looped, rtol=1e-5)


def test_jitted_estimators_trace_once():
    oracle = oracle_checks.model(jnp.float32)
    ll = oracle.log_likelihood

    @functools.partial(jax.jit, static_argnames=("num_samples", "chunk_size"))
    @chex.assert_max_traces(n=1)
    def batch_estimates(keys, xs, means, log_vars, num_samples, chunk_size):
        iw = jax.vmap(lambda k, x, m, v: vj.importance_log_marginal(k, ll, x, m, v, num_samples, chunk_size))
        nv = jax.vmap(lambda k, x: vj.naive_log_marginal(k, ll, x, 3, num_samples, chunk_size))
        el = jax.vmap(lambda k, x, m, v: vj.elbo(k, ll, x, m, v))
        return iw(keys, xs, means, log_vars), nv(keys, xs), el(keys, xs, means, log_vars)

    for seed in range(3):
        xs = oracle.sample(jax.random.key(seed), 4)
        means, log_vars = jax.vmap(oracle.diagonal_posterior)(xs)
        keys = jax.random.split(jax.random.key(100 + seed), 4)
        out = batch_estimates(keys, xs, means, log_vars, num_samples=100, chunk_size=30)
        chex.assert_tree_all_finite(out)


def test_importance_gradient_is_finite():
    """-importance_log_marginal is the IWAE loss: gradients flow through the chunked scan."""
    oracle = oracle_checks.model(jnp.float32)
    x = oracle.sample(jax.random.key(13), 1)[0]
    mean, log_var = oracle.diagonal_posterior(x)
    f = lambda m, v, c: vj.importance_log_marginal(jax.random.key(0), oracle.log_likelihood, x, m, v, 40, c)
    g_full, g_chunked = jax.grad(f, (0, 1))(mean + 0.3, log_var, None), jax.grad(f, (0, 1))(mean + 0.3, log_var, 7)
    chex.assert_tree_all_finite(g_full)
    for a, b in zip(g_full, g_chunked):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("value", [-jnp.inf, -1e30, 1e30, 80.0, -2000.0])
def test_log_mean_exp_is_safe_for_extreme_weights(value):
    """Constant log-weights c give exactly c: no overflow, underflow or NaN, even for c = -inf."""
    ll = lambda x, z: jnp.asarray(value, jnp.float32) + 0.0 * jnp.sum(z)
    est = vj.naive_log_marginal(jax.random.key(0), ll, jnp.zeros(3), 2, 100, chunk_size=30)
    assert not np.isnan(est)
    np.testing.assert_allclose(est, value, rtol=1e-6)


def test_contract_errors_are_clear():
    ll = lambda x, z: -jnp.sum((x[:2] - z) ** 2)
    key, x, m = jax.random.key(0), jnp.zeros(4), jnp.zeros(2)
    with pytest.raises(ValueError, match="ONE example.*vmap"):
        vj.importance_log_marginal(key, ll, jnp.zeros((3, 4)), m, m, 10)
    with pytest.raises(ValueError, match="same shape"):
        vj.elbo(key, ll, x, m, jnp.zeros(3))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        vj.naive_log_marginal(key, ll, x, 2, 10, chunk_size=0)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        vj.importance_log_marginal(key, ll, x, m, m, 0)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        vj.naive_log_marginal(key, ll, x, -1, 10)



def test_evaluate_and_bdmc_run_in_float32_whatever_the_default():
    """Estimates are traced with float32 matrix products even where the caller's default is lower (a GPU's
    TF32): the precision in force is recorded as each estimator reports and as bdmc simulates."""
    from vae_jax.evaluate import EvalConfig, bdmc, evaluate

    seen = []

    class RecordingVAE(vj.VAE):
        def simulate(self, params, key):
            seen.append(("simulate", jax.config.jax_default_matmul_precision))
            return super().simulate(params, key)

    vae = RecordingVAE(vj.ModelConfig(data_dim=12, latent_dim=2, hidden=(8,)))
    params = vae.init(jax.random.key(0))
    xs = np.asarray(jax.random.bernoulli(jax.random.key(1), 0.5, (4, 12)), np.float32)
    with jax.default_matmul_precision("bfloat16"):
        evaluate(vae, params, xs, jax.random.key(2), estimators=("elbo", "importance"), num_samples=10,
                 report=lambda name, summary: seen.append((name, jax.config.jax_default_matmul_precision)))
        bdmc(vae, params, jax.random.key(3), 2, EvalConfig(ais_chains=2, ais_temperatures=5, leapfrog_steps=2))
        assert jax.config.jax_default_matmul_precision == "bfloat16"  # the caller's setting is left alone
    assert seen == [("elbo", "float32"), ("importance", "float32"), ("simulate", "float32")]


def test_map_in_batches_in_parts_gives_the_whole():
    """Example i's key and dequantization depend on i alone: mapping images 0..9 whole, in uneven padded batches,
    or as parts with ``first_index`` gives the same values bit for bit (how reference_2d resumes chunk by chunk)."""
    from vae_jax.evaluate import map_in_batches

    images = np.random.default_rng(0).integers(0, 256, size=(10, 6), dtype=np.uint8)
    fn = jax.jit(lambda keys, xs: {"u": jax.vmap(jax.random.uniform)(keys), "x": xs.sum(axis=1)})
    key, dq = jax.random.key(1), jax.random.key(2)
    whole = map_in_batches(fn, key, images, 10, dequantize_key=dq)
    parts = [map_in_batches(fn, key, images[s:e], 3, dequantize_key=dq, first_index=s) for s, e in ((0, 4), (4, 10))]
    for name in ("u", "x"):
        np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]), whole[name])
        np.testing.assert_array_equal(map_in_batches(fn, key, images, 4, dequantize_key=dq)[name], whole[name])
    assert len(set(whole["u"].tolist())) == 10  # distinct keys per example
