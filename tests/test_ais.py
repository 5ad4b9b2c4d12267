"""AIS and reverse AIS (BDMC) against exact answers: a linear-Gaussian model and 2-D grid quadrature."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax as vj
from vae_jax.errors import ConfigError
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


def test_a_defensive_start_is_the_mixture_of_q_and_the_prior():
    """prior_weight d: p_0 = (1 - d) q + d N(0, I). The path's log p_0 equals the mixture's density written out,
    its ratio term is log p(z) + log p(x|z) - log p_0(z), and 20,000 start draws have the mixture's mean and
    variance per coordinate (each within 5 standard errors)."""
    from jax.scipy.stats import norm
    from vae_jax.ais import annealing_path, start_samples
    mean, log_var, d = jnp.array([2.0, -1.0]), jnp.log(jnp.array([0.04, 0.25])), 0.1
    ll = lambda x, z: -jnp.sum((z - x) ** 2)
    path = annealing_path(ll, jnp.zeros(2), (mean, log_var), d)
    z = jnp.array([0.3, -0.7])
    mixture = np.log((1 - d) * np.prod(norm.pdf(z, mean, jnp.exp(0.5 * log_var))) + d * np.prod(norm.pdf(z)))
    np.testing.assert_allclose(path.log_start(z), mixture, rtol=1e-5)
    np.testing.assert_allclose(path.log_ratio(z), np.sum(norm.logpdf(z)) + ll(jnp.zeros(2), z) - mixture, rtol=1e-5)
    draws = np.asarray(start_samples(jax.random.key(0), (mean, log_var), 20_000, 2, jnp.float32, d))
    m1 = (1 - d) * mean
    var = (1 - d) * (jnp.exp(log_var) + mean**2) + d - m1**2
    np.testing.assert_array_less(np.abs(draws.mean(0) - m1), 5 * np.sqrt(var / 20_000))
    fourth = (1 - d) * (mean**4 + 6 * mean**2 * jnp.exp(log_var) + 3 * jnp.exp(log_var) ** 2) + 3 * d  # E z^4
    np.testing.assert_array_less(np.abs(draws.var(0) - var), 5 * np.sqrt((fourth - (var + m1**2) ** 2) / 20_000)
                                 + 1e-3)
    np.testing.assert_array_equal(start_samples(jax.random.key(0), (mean, log_var), 5, 2, jnp.float32, 0.0),
                                  mean + jnp.exp(0.5 * log_var) * jax.random.normal(jax.random.key(0), (5, 2)))


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "a"])
def test_a_prior_weight_outside_zero_to_one_is_refused(bad):
    with pytest.raises(ConfigError, match="prior_weight must"):
        vj.ais_log_marginal(jax.random.key(0), lambda x, z: -jnp.sum(z**2), jnp.zeros(1), 2, 4, 5,
                            start=(jnp.zeros(2), jnp.zeros(2)), prior_weight=bad)
    if not isinstance(bad, str):  # evaluate's option: the same range, named as on the command line
        from vae_jax.evaluate import EvalConfig
        with pytest.raises(ConfigError, match="start_prior_weight must be in"):
            EvalConfig(start_prior_weight=bad)


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


def _independent_ais(key, log_likelihood, latent_dim, num_chains, betas, num_moves, step):
    """AIS written here from its definition, sharing no code with vae_jax.ais: chains start at z ~ N(0, I), take
    the weight increments (b_t - b_{t-1}) log p(x|z) along p(z) p(x|z)^b, and move by ``num_moves`` random-walk
    Metropolis steps (not HMC) that leave p(z) p(x|z)^(b_t) invariant. Returns (log mean weight, its delta-method
    standard error)."""
    log_target = lambda z, b: -0.5 * jnp.sum(z * z) + b * log_likelihood(z)

    def chain(key):
        start_key, key = jax.random.split(key)
        z = jax.random.normal(start_key, (latent_dim,))

        def temperature(carry, inputs):
            z, log_w = carry
            b_prev, b, key = inputs
            log_w = log_w + (b - b_prev) * log_likelihood(z)

            def move(z, key):
                step_key, accept_key = jax.random.split(key)
                proposal = z + step * jax.random.normal(step_key, z.shape)
                accept = jnp.log(jax.random.uniform(accept_key)) < log_target(proposal, b) - log_target(z, b)
                return jnp.where(accept, proposal, z), None

            z, _ = jax.lax.scan(move, z, jax.random.split(key, num_moves))
            return (z, log_w), None

        (_, log_w), _ = jax.lax.scan(temperature, (z, 0.0), (betas[:-1], betas[1:], jax.random.split(key, len(betas) - 1)))
        return log_w

    log_w = jax.vmap(chain)(jax.random.split(key, num_chains))
    log_mean = jax.nn.logsumexp(log_w) - jnp.log(num_chains)
    w = jnp.exp(log_w - jnp.max(log_w))
    return float(log_mean), float(jnp.std(w, ddof=1) / jnp.mean(w) / jnp.sqrt(num_chains))


def test_ais_agrees_with_an_independent_ais_and_with_quadrature_in_2d():
    """A peer check: the project's AIS (HMC moves, tuned step sizes, sigmoid schedule) and an AIS written in the
    test from the definition (random-walk Metropolis, a geometric schedule) agree on a nonlinear 2-D model with
    each other and with grid quadrature, within 4 of their combined Monte Carlo standard errors plus 0.02 nats
    (the finite schedules bias both low by a little in 2-D)."""
    k1, k2, k3 = jax.random.split(jax.random.key(11), 3)
    w1, b1, w2 = jax.random.normal(k1, (8, 2)), jax.random.normal(k2, (8,)), 2.0 * jax.random.normal(k3, (12, 8))
    x = (jax.random.uniform(jax.random.key(12), (12,)) < 0.5).astype(jnp.float32)

    def log_likelihood(x, z):  # Bernoulli on 12 pixels, logits from a tanh network of z
        logits = w2 @ jnp.tanh(w1 @ z + b1)
        return jnp.sum(x * logits - jnp.logaddexp(0.0, logits))

    exact = float(grid_log_marginal_2d(lambda xs, z: jax.vmap(lambda x_: jax.vmap(lambda z_: log_likelihood(x_, z_))(z))(xs),
                                       x[None], num_points=600, limit=7.0)[0])
    ours = jax.jit(lambda k: vj.ais_log_marginal(k, log_likelihood, x, 2, 256, 500))(jax.random.key(13))
    betas = jnp.concatenate([jnp.zeros(1), jnp.geomspace(1e-4, 1.0, 499)])
    theirs, theirs_se = _independent_ais(jax.random.key(14), lambda z: log_likelihood(x, z), 2, 1024, betas, 3, 0.5)
    ours_mean, ours_se = float(ours.log_marginal), float(ours.stderr)
    assert abs(ours_mean - theirs) < 4 * np.hypot(ours_se, theirs_se) + 0.02, (ours_mean, ours_se, theirs, theirs_se)
    assert abs(ours_mean - exact) < 4 * ours_se + 0.02, (ours_mean, ours_se, exact)
    assert abs(theirs - exact) < 4 * theirs_se + 0.02, (theirs, theirs_se, exact)
