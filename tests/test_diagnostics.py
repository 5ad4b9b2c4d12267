"""Pareto k-hat: recovers the shape of generalized Pareto weights and flags infinite-variance weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import vae_jax as vj
from vae_jax.diagnostics import pareto_khat, pareto_tail_size
from vae_jax.estimators import stream_log_mean_exp


@pytest.mark.parametrize("shape", [-0.2, 0.3, 0.6, 0.9])
def test_khat_recovers_the_shape_of_generalized_pareto_weights(shape):
    """Weights 1 + X, X ~ GPD(k): the fit over the top M = 949 of 10^5 has a standard error of about
    (1 + k) / sqrt(M) <= 0.062; we allow 3 of them."""
    num_samples = 100_000
    draws = scipy.stats.genpareto.rvs(shape, size=num_samples, random_state=np.random.default_rng(0))
    log_w = jnp.asarray(np.log1p(draws), jnp.float32)
    stats = jax.jit(lambda: stream_log_mean_exp(lambda idx: log_w[idx], num_samples, 1000))()
    assert abs(float(stats.khat) - shape) < 3 * (1 + abs(shape)) / np.sqrt(pareto_tail_size(num_samples))


def test_khat_is_the_same_for_any_chunk_size():
    log_w = jnp.asarray(np.random.default_rng(1).standard_t(2, size=3000), jnp.float32)
    values = [float(stream_log_mean_exp(lambda idx: log_w[idx], 3000, c).khat) for c in (1, 97, 3000)]
    assert values[0] == values[1] == values[2]


@pytest.mark.parametrize("proposal_var, heavy", [(0.2, True), (2.0, False)])
def test_khat_flags_infinite_variance_weights(proposal_var, heavy):
    """Target N(0, I) (a constant likelihood), proposal q = N(0, v I) in 2-D: w = p / q = C exp(a ||z||^2) with
    a = (1/v - 1) / 2 and ||z||^2 = 2 v E, E ~ Exp(1), so for v < 1 the weights are exactly Pareto with shape
    2 a v = 1 - v (infinite variance for v < 1/2); for v = 2 they are bounded."""
    ll = lambda x, z: jnp.zeros(())
    log_var = jnp.full(2, np.log(proposal_var))
    stats = vj.importance_log_marginal_stats(jax.random.key(0), ll, jnp.zeros(1), jnp.zeros(2), log_var, 20_000, 1000)
    if heavy:  # shape 0.8; the fit over M = 425 weights has a standard error of about 1.8 / sqrt(425)
        assert float(stats.khat) > 0.7 and abs(float(stats.khat) - 0.8) < 3 * 1.8 / np.sqrt(425)
    else:
        assert float(stats.khat) < 0.3
    np.testing.assert_allclose(stats.log_marginal, 0.0, atol=0.2 if heavy else 0.02)


def test_khat_needs_enough_samples():
    stats = stream_log_mean_exp(lambda idx: jnp.zeros(idx.shape), 10, None)
    assert np.isnan(stats.khat)
    assert np.isnan(pareto_khat(jnp.zeros(5)))


def test_evaluate_reports_the_fraction_of_heavy_tailed_examples():
    from vae_jax.evaluate import evaluate

    vae = vj.VAE(vj.ModelConfig(data_dim=12, latent_dim=2, hidden=(8,)))
    params = vae.init(jax.random.key(0))
    xs = np.asarray(jax.random.bernoulli(jax.random.key(1), 0.5, (6, 12)), np.float32)
    result = evaluate(vae, params, xs, jax.random.key(2), estimators=("importance", "naive"), num_samples=500,
                      naive_samples=500, keep_values=True)
    for name in ("importance", "naive"):
        summary = result[name]
        assert 0.0 <= summary["khat_above_0.7"] <= 1.0 and np.isfinite(summary["khat_median"])
        if summary["khat_above_0.7"] < 1.0:
            assert summary["mc_stderr_reliable"] > 0
        # keep_values: the per-example estimates the summary was made from.
        values = np.asarray(summary["per_example"])
        assert values.shape == (6,)
        np.testing.assert_allclose([values.mean(), np.median(values)], [summary["mean"], summary["median"]], rtol=1e-6)
    again = evaluate(vae, params, xs, jax.random.key(2), estimators=("importance",), num_samples=500)["importance"]
    assert "per_example" not in again and again["mean"] == result["importance"]["mean"]


@pytest.mark.parametrize("spread", [20.0, 50.0, 100.0, 300.0])
def test_khat_survives_tails_wider_than_float32_range(spread):
    """Log-weights N(0, spread^2): the exponentiated tail spans far more than float32 holds (88 nats);
    k-hat must still say "heavy" (> 0.7), never NaN (which would count as reliable)."""
    num_samples = 5000
    log_w = jnp.asarray(np.random.default_rng(2).normal(0.0, spread, num_samples), jnp.float32)
    khat = float(stream_log_mean_exp(lambda idx: log_w[idx], num_samples, 500).khat)
    assert khat > 0.7 and not np.isnan(khat)


def test_khat_of_constant_weights_is_minus_infinity():
    assert float(stream_log_mean_exp(lambda idx: jnp.full(idx.shape, -3.0), 100, None).khat) == -np.inf


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.9])
def test_khat_equals_arviz_psis_on_the_same_weights(shape):
    """A peer check: ArviZ's PSIS (arviz-stats, ``psislw``, which takes the negated log-weights) fits the same
    generalized Pareto (Zhang & Stephens with the weak prior at 0.5). At S = 3,600 both tail-size rules give M =
    180 (ArviZ's floor(3 sqrt S), ours ceil(min(S / 5, 3 sqrt S))). vae-jax computes in float32 from a running
    top-M over chunks; the difference is float32 rounding, measured at 4e-8 to 1.4e-6 here (1e-15 in
    float64), so 1e-4 is allowed."""
    from arviz_stats.base import array_stats

    num_samples = 3600
    rng = np.random.default_rng(int(shape * 10))
    log_w = np.log1p(scipy.stats.genpareto.rvs(shape, size=num_samples, random_state=rng)) + rng.normal(0, 1, 1) - 50.0
    _, theirs = array_stats.psislw(-log_w.astype(np.float32).astype(np.float64), r_eff=1.0)
    ours = jax.jit(lambda w: stream_log_mean_exp(lambda idx: w[idx], num_samples, 500).khat)(jnp.asarray(log_w, jnp.float32))
    assert pareto_tail_size(num_samples) == np.floor(3 * np.sqrt(num_samples)) == 180
    assert abs(float(ours) - float(theirs)) < 1e-4, (float(ours), float(theirs))
