"""AIS and reverse AIS (BDMC) against exact answers: a linear-Gaussian model and 2-D grid quadrature."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax as vj
from vae_jax.linear_gaussian import LinearGaussian
from vae_jax.shared_samples import grid_log_marginal_2d


def _oracle(latent_dim, data_dim):
    model = LinearGaussian.orthogonal(jax.random.key(0), data_dim, latent_dim, noise_std=0.3)
    x = model.sample(jax.random.key(1), 1)[0]
    mean, cov = model.posterior(x)
    exact_posterior = lambda key, n: mean + jax.random.normal(key, (n, latent_dim)) @ jnp.linalg.cholesky(cov).T
    return model, x, float(model.log_marginal(x)), exact_posterior


@pytest.mark.parametrize("latent_dim, data_dim", [(2, 5), (10, 20)])
def test_forward_and_reverse_ais_bracket_the_exact_log_marginal(latent_dim, data_dim):
    """128 chains, 300 temperatures: each bound within 4 of its delta-method standard errors (plus 0.02
    for the bias of the log of a mean) of the exact value; the naive estimator is far off in 10-D."""
    model, x, exact, posterior = _oracle(latent_dim, data_dim)
    forward = jax.jit(lambda k: vj.ais_log_marginal(k, model.log_likelihood, x, latent_dim, 128, 300))(
        jax.random.key(2))
    reverse = jax.jit(lambda k, z: vj.reverse_ais_log_marginal(k, model.log_likelihood, x, z, 300))(
        jax.random.key(3), posterior(jax.random.key(4), 128))
    for record in (forward, reverse):
        assert abs(float(record.log_marginal) - exact) < 4 * float(record.stderr) + 0.02
        assert 0.5 < float(record.acceptance) < 0.8  # the pilot tuned the steps toward 0.65
    if latent_dim == 10:
        naive = vj.naive_log_marginal(jax.random.key(5), model.log_likelihood, x, latent_dim, 10_000, 2000)
        assert float(naive) < exact - 3.0


def test_bounds_tighten_as_temperatures_grow():
    model, x, exact, posterior = _oracle(10, 20)
    run = lambda t: (
        jax.jit(lambda k: vj.ais_log_marginal(k, model.log_likelihood, x, 10, 32, t))(jax.random.key(6)),
        jax.jit(lambda k, z: vj.reverse_ais_log_marginal(k, model.log_likelihood, x, z, t))(
            jax.random.key(7), posterior(jax.random.key(8), 32)))
    (f_short, r_short), (f_long, r_long) = run(5), run(500)
    gap_short = float(r_short.log_marginal - f_short.log_marginal)
    gap_long = float(r_long.log_marginal - f_long.log_marginal)
    assert gap_short > 3.0 and gap_long < 1.0 and gap_long < gap_short / 3


def test_ais_from_q_matches_grid_quadrature_in_2d():
    """A random nonlinear decoder with a 2-D latent: AIS (64 chains, 500 temperatures, started from a
    broad q) within 0.05 nats of the midpoint-rule quadrature on a 500 x 500 grid."""
    vae = vj.VAE(vj.ModelConfig(data_dim=20, latent_dim=2, hidden=(16,)))
    params = vae.init(jax.random.key(0))
    x = jnp.asarray(jax.random.bernoulli(jax.random.key(1), 0.4, (20,)), jnp.float32)
    truth = float(grid_log_marginal_2d(lambda xs, z: vae.log_likelihood_matrix(params, xs, z), x[None])[0])
    mean, log_var = vae.encode(params, x)
    record = jax.jit(lambda k: vj.ais_log_marginal(k, vae.likelihood_fn(params), x, 2, 64, 500,
                                                   start=(mean, log_var + 1.0)))(jax.random.key(2))
    assert abs(float(record.log_marginal) - truth) < 0.05


def test_ais_vmaps_over_examples_and_traces_once():
    model = LinearGaussian.orthogonal(jax.random.key(0), 6, 3)
    xs = model.sample(jax.random.key(1), 4)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batch(keys, xs):
        return jax.vmap(lambda k, x: vj.ais_log_marginal(k, model.log_likelihood, x, 3, 8, 20))(keys, xs)

    first = batch(jax.random.split(jax.random.key(2), 4), xs)
    second = batch(jax.random.split(jax.random.key(3), 4), xs + 0.1)
    assert first.log_marginal.shape == (4,) and first.step_sizes.shape == (4, 20)
    assert np.all(np.isfinite(second.log_marginal))
