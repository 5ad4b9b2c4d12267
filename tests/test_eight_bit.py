"""8-bit images: every estimator on the discretized likelihoods against the exact log P(x) by quadrature, the
dequantized Gaussian's number against the bound it claims, bits per dimension, and the command line end to end."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from vae_jax.cli import main
from vae_jax.config import ModelConfig
from vae_jax.evaluate import evaluate
from vae_jax.models import VAE
from vae_jax.pixels import dequantize
from vae_jax.streams import DEQUANTIZE_STREAM

from tests.test_own_data import SMALL, _shapes

DIM = 6
GRID = np.linspace(-9.0, 9.0, 3601)  # z grid of the 1-D quadrature: the prior's mass outside is 2e-19


def _model(likelihood: str, **config) -> tuple[VAE, dict]:
    """A 1-D latent model on 6 values."""
    vae = VAE(ModelConfig(data_shape=(DIM,), latent_dim=1, hidden=(16,), likelihood=likelihood, mixture_components=3,
                          **config))
    params = vae.init(jax.random.key(0))
    # A decoder that varies strongly with z (a posterior narrower than the prior), and the encoder as initialised:
    # q(z|x) near N(0, 1) covers the posterior, so importance sampling converges at K = 4000 in one dimension.
    return vae, {**params, "decoder": jax.tree_util.tree_map(lambda p: 2.0 * p, params["decoder"])}


def _quadrature(log_lik_on_grid: np.ndarray) -> np.ndarray:
    """log of the integral of N(z) exp(log_lik(z)) dz over :data:`GRID` (trapezoid, float64): [N, G] -> [N]."""
    log_f = log_lik_on_grid.astype(np.float64) + stats.norm.logpdf(GRID)
    peak = log_f.max(axis=1, keepdims=True)
    return np.log(np.trapezoid(np.exp(log_f - peak), GRID, axis=1)) + peak[:, 0]


def _levels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, DIM)).astype(np.uint8)


@pytest.mark.parametrize("likelihood", ["discretized_logistic", "discretized_logistic_mixture"])
def test_every_estimator_matches_the_exact_probability(likelihood):
    """log P(x) of 8-bit data by quadrature over the 1-D latent; importance sampling, the naive estimator and
    AIS agree with it within their Monte Carlo error (4 standard errors, plus 0.02 nats for AIS, whose
    estimate is biased low by its finite schedule), the ELBO lies below it, and bits/dim is -mean / (D ln 2)."""
    vae, params = _model(likelihood)
    images = _levels(8, 1)
    xs = jnp.asarray(images / 255.0, jnp.float32)
    grid_ll = jax.vmap(lambda x: jax.vmap(lambda z: vae.log_likelihood(params, x, z[None]))(jnp.asarray(GRID)))(xs)
    exact = _quadrature(np.asarray(grid_ll)).mean()
    assert exact < -10  # a probability of 6 levels, not a density
    result = evaluate(vae, params, images, jax.random.key(1), estimators=("elbo", "importance", "naive", "ais"),
                      num_samples=4000, naive_samples=40_000, ais_chains=8, ais_temperatures=300)
    assert result["measure"].startswith("log P(x), the probability of the 8-bit image")
    for name in ("importance", "naive"):
        got = result[name]
        assert abs(got["mean"] - exact) < 4 * got["mc_stderr"] + 1e-3, (name, got, exact)
    assert abs(result["ais"]["mean"] - exact) < 4 * result["ais"]["mc_stderr"] + 0.02, (result["ais"], exact)
    assert result["elbo"]["mean"] < exact
    for name in ("elbo", "importance", "naive", "ais"):
        got = result[name]
        assert got["bits_per_dim"] == pytest.approx(-got["mean"] / (DIM * math.log(2)))
        assert got["bits_per_dim_stderr"] == pytest.approx(got["stderr"] / (DIM * math.log(2)))
        assert got["quartiles"][0] <= got["median"] <= got["quartiles"][1]



@pytest.mark.parametrize("likelihood", ["discretized_logistic", "discretized_logistic_mixture"])
def test_refined_importance_sampling_and_bdmc_on_discretized_likelihoods(likelihood):
    """The refined proposal's importance sampling agrees with quadrature within its Monte Carlo error and
    reports an amortization gap (refined ELBO - ELBO, >= 0 up to the noise of the two ELBO estimates); BDMC on
    images simulated from the model brackets log P(x): its simulated images are 8-bit levels, and forward AIS
    (a stochastic lower bound) sits below reverse AIS (an upper bound) but for Monte Carlo noise, the mean gap
    under 0.2 nats at 300 temperatures in one dimension."""
    from vae_jax.evaluate import EvalConfig, bdmc

    vae, params = _model(likelihood)
    images = _levels(8, 1)
    xs = jnp.asarray(images / 255.0, jnp.float32)
    grid_ll = jax.vmap(lambda x: jax.vmap(lambda z: vae.log_likelihood(params, x, z[None]))(jnp.asarray(GRID)))(xs)
    exact = _quadrature(np.asarray(grid_ll)).mean()
    result = evaluate(vae, params, images, jax.random.key(4), estimators=("elbo", "importance_refined"),
                      num_samples=4000, refine_steps=50)
    refined = result["importance_refined"]
    assert abs(refined["mean"] - exact) < 4 * refined["mc_stderr"] + 1e-3, (refined, exact)
    gaps = result["gaps"]  # refined ELBO - the encoder's ELBO, each on the same bits of log P(x)
    assert gaps["amortization"] > -0.05 and gaps["refined_elbo"] < exact
    assert gaps["approximation"] == pytest.approx(refined["mean"] - gaps["refined_elbo"], abs=1e-3)
    assert refined["bits_per_dim"] == pytest.approx(-refined["mean"] / (DIM * math.log(2)))

    config = EvalConfig(ais_chains=8, ais_temperatures=300)
    simulated = jax.vmap(lambda k: vae.simulate(params, k)[1])(jax.random.split(jax.random.key(5), 16))
    levels = np.asarray(simulated) * 255.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # the likelihood's own samples: 8-bit levels
    assert levels.min() >= 0 and levels.max() <= 255
    certificate = bdmc(vae, params, jax.random.key(6), 16, config)
    gaps = np.asarray(certificate["gap"]["per_example"])
    assert np.all(np.isfinite(gaps)) and certificate["forward"]["mean"] < 0  # log-probabilities of 8-bit images
    # reverse - forward >= 0 in expectation: the mean gap is above -4 standard errors (reverse AIS runs one chain
    # per image, so single gaps are noisy, +-0.2 nats); and these settings bracket log P(x) within 0.2 nats.
    stderr = gaps.std(ddof=1) / np.sqrt(len(gaps))
    assert -4 * stderr < certificate["gap"]["mean"] < 0.2, (certificate["gap"]["mean"], stderr)

def test_dequantized_gaussian_reports_the_bound_on_the_discrete_probability():
    """A Gaussian on uint8 data is evaluated on x' = (k + u) / 256 with u from the evaluation key's dequantization
    stream, and reports log p(x') - D log 256. Checked against quadrature of log p(x') (the same u), and against
    the exact probability of the image under the Gaussian integrated over each bin [k/256, (k+1)/256)^D: the
    reported number is below it (Jensen), as the bound says."""
    vae, params = _model("gaussian", sigma=0.05)
    images, key = _levels(8, 2), jax.random.key(3)
    result = evaluate(vae, params, images, key, estimators=("importance",), num_samples=4000)
    assert result["measure"].startswith("log P(x) of the 8-bit image, a lower bound through uniform dequantization")
    deq_key = jax.random.fold_in(key, DEQUANTIZE_STREAM)
    xs = jax.vmap(lambda i, x: dequantize(jax.random.fold_in(deq_key, i), x))(jnp.arange(8), jnp.asarray(images))
    grid_ll = jax.vmap(lambda x: jax.vmap(lambda z: vae.log_likelihood(params, x, z[None]))(jnp.asarray(GRID)))(xs)
    bound = _quadrature(np.asarray(grid_ll)).mean() - DIM * math.log(256)
    got = result["importance"]
    assert abs(got["mean"] - bound) < 4 * got["mc_stderr"] + 1e-3, (got, bound)

    # The exact log P(k) = log integral N(z) prod_d [Phi((k_d + 1) / 256; g_d, s) - Phi(k_d / 256; g_d, s)] dz.
    means = np.asarray(jax.vmap(lambda z: vae.decode(params, z[None]))(jnp.asarray(GRID)), np.float64)  # [G, D]
    k = images[:, None, :].astype(np.float64)
    hi, lo = ((k + 1) / 256 - means) / 0.05, (k / 256 - means) / 0.05
    # log(Phi(hi) - Phi(lo)) in log space, on the side of the mean where the difference does not cancel.
    with np.errstate(divide="ignore"):  # each form is -inf on the side where the other is used
        below = special.log_ndtr(hi) + np.log(-np.expm1(special.log_ndtr(lo) - special.log_ndtr(hi)))
        above = special.log_ndtr(-lo) + np.log(-np.expm1(special.log_ndtr(-hi) - special.log_ndtr(-lo)))
    exact = _quadrature(np.sum(np.where(hi + lo < 0, below, above), axis=-1)).mean()
    assert got["mean"] < exact + 4 * got["mc_stderr"]
    assert exact - got["mean"] < 5.0  # a useful bound here, not a vacuous one


def test_bits_per_dim_only_for_8bit_data_and_densities_say_so():
    """Binary data with a Bernoulli: a probability, no bits/dim; continuous data with a Gaussian: a density."""
    vae, params = _model("bernoulli")
    result = evaluate(vae, params, _levels(4, 3) > 127, jax.random.key(0), estimators=("elbo",))
    assert "bits_per_dim" not in result["elbo"] and "binary image" in result["measure"]
    vae, params = _model("gaussian", sigma=0.1)
    result = evaluate(vae, params, (_levels(4, 3) / 255).astype(np.float32), jax.random.key(0), estimators=("elbo",))
    assert "bits_per_dim" not in result["elbo"] and "a density, not a probability" in result["measure"]


@pytest.mark.parametrize("likelihood, extra", [
    ("discretized_logistic", []),
    ("discretized_logistic_mixture", ["--mixture-components", "3", "--architecture", "conv", "--channels", "8,16"]),
    ("gaussian", ["--sigma", "learned"]),
])
def test_8bit_rgb_arrays_train_and_evaluate_in_bits_per_dim(likelihood, extra, tmp_path, capsys):
    """Each 8-bit likelihood trains on an RGB uint8 array set from the command line with bits/dim in its
    metrics, evaluates with bits/dim in its result and its printed lines, and draws a sample grid."""
    images = (_shapes(240, 16, 16, 3) * 255).astype(np.uint8)
    np.savez(tmp_path / "rgb.npz", train=images[:200], test=images[200:])
    workdir = tmp_path / "run"
    assert main(["train", "--workdir", str(workdir), "--dataset", str(tmp_path / "rgb.npz"), *SMALL, "--epochs", "2",
                 "--likelihood", likelihood, "--output-bias-init", "data_mean", *extra]) == 0
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    d = 16 * 16 * 3
    for m in metrics:
        for split in ("train", "valid"):
            assert m[f"{split}_bits_per_dim"] == pytest.approx(-m[f"{split}_elbo"] / (d * math.log(2)))
            assert m[f"{split}_bits_per_dim"] > 0  # log P(x) <= 0 for a probability and for a bound on one
    assert metrics[-1]["valid_bits_per_dim"] < metrics[0]["valid_bits_per_dim"] + 0.5
    capsys.readouterr()
    assert main(["evaluate", "--workdir", str(workdir), "--estimators", "elbo,importance", "--num-samples", "50",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("bits/dim") >= 2 and ("lower bound through uniform dequantization" in out) == (likelihood == "gaussian")
    result = json.loads((workdir / "eval_test.json").read_text())
    assert result["importance"]["bits_per_dim"] == pytest.approx(-result["importance"]["mean"] / (d * math.log(2)))
    assert result["importance"]["mean"] >= result["elbo"]["mean"] - 3 * result["elbo"]["stderr"]
    assert main(["sample", "--workdir", str(workdir), "--num", "4"]) == 0
