"""Tempered SMC against exact answers: a linear-Gaussian model, a two-mode posterior in closed form, and 2-D grid
quadrature; and its place in ``evaluate``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax as vj
from vae_jax.errors import ConfigError
from vae_jax.evaluate import EvalConfig, evaluate
from vae_jax.linear_gaussian import LinearGaussian
from vae_jax.shared_samples import grid_log_marginal_2d


def _repeated(fn, n):
    """fn(key) for n independent keys: the estimates [n] and the record of the first."""
    records = jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(100), n))
    return np.asarray(records.log_marginal), records


def _within_monte_carlo_error(estimates, exact, bias=0.02):
    """The mean of n independent estimates within 4 standard errors of the exact value, plus ``bias`` for
    the log of an unbiased estimate (E log Z_hat = log Z - Var/2 to first order: 0.02 for a spread of 0.2)."""
    stderr = np.std(estimates, ddof=1) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - exact) < 4 * stderr + bias, (np.mean(estimates), exact, stderr)


def test_smc_matches_the_exact_log_marginal_of_a_linear_gaussian_model():
    """10-D latent, 20-D data: 16 runs of 64 particles x 100 temperatures average to log p(x)."""
    model = LinearGaussian.orthogonal(jax.random.key(0), 20, 10, noise_std=0.3)
    x = model.sample(jax.random.key(1), 1)[0]
    estimates, records = _repeated(lambda k: vj.smc_log_marginal(k, model.log_likelihood, x, 10, 64, 100), 16)
    _within_monte_carlo_error(estimates, float(model.log_marginal(x)))
    assert np.all((records.acceptance > 0.5) & (records.acceptance < 0.85))  # pilot-tuned toward 0.65
    assert np.all((records.ess_min > 0) & (records.ess_min <= 1.0 + 1e-6))


def _two_modes(mass_right=0.8, separation=2.0, width=0.3):
    """p(x|z) = a mixture of two Gaussian bumps in z (weights m and 1 - m, at +-(separation, 0), width s): the
    posterior has two modes, and p(x) = sum_j m_j (2 pi s^2)^{K/2} N(a_j; 0, (1 + s^2) I) in closed form."""
    a = jnp.array([separation, 0.0])
    log_m = jnp.log(jnp.array([mass_right, 1.0 - mass_right]))

    def log_likelihood(x, z):
        return jax.nn.logsumexp(log_m - jnp.stack([jnp.sum((z - a) ** 2), jnp.sum((z + a) ** 2)]) / (2 * width**2))

    log_bump = np.log(2 * np.pi * width**2) - np.log(2 * np.pi * (1 + width**2)) - separation**2 / (2 * (1 + width**2))
    return log_likelihood, float(log_bump), (a, jnp.log(jnp.full(2, 0.05)))


def test_smc_from_the_prior_finds_both_modes_of_a_two_mode_posterior():
    log_likelihood, exact, _ = _two_modes()
    estimates, _ = _repeated(lambda k: vj.smc_log_marginal(k, log_likelihood, jnp.zeros(1), 2, 64, 100), 16)
    _within_monte_carlo_error(estimates, exact)


def test_smc_from_a_start_that_misses_a_mode_loses_that_modes_mass():
    """A documented limit, measured: started from a narrow q on the right mode (mass 0.8), with modes four widths
    of q^(1-b) apart at every b, local moves never cross; SMC then estimates the right mode's share alone,
    log p(x) + log 0.8, as AIS does. Resampling cannot copy a particle that no move takes there."""
    log_likelihood, exact, start = _two_modes()
    estimates, _ = _repeated(lambda k: vj.smc_log_marginal(k, log_likelihood, jnp.zeros(1), 2, 64, 100,
                                                           start=start), 16)
    _within_monte_carlo_error(estimates, exact + np.log(0.8))


def test_smc_matches_grid_quadrature_in_2d():
    """A random nonlinear decoder with a 2-D latent (as AIS's test): SMC from the prior and from the encoder's q,
    64 particles x 200 temperatures, each within 0.05 nats of the 500 x 500 midpoint-rule quadrature."""
    vae = vj.VAE(vj.ModelConfig(data_dim=20, latent_dim=2, hidden=(16,)))
    params = vae.init(jax.random.key(0))
    x = jnp.asarray(jax.random.bernoulli(jax.random.key(1), 0.4, (20,)), jnp.float32)
    truth = float(grid_log_marginal_2d(lambda xs, z: vae.log_likelihood_matrix(params, xs, z), x[None])[0])
    for start in (None, vae.encode(params, x)):
        record = jax.jit(lambda k: vj.smc_log_marginal(k, vae.likelihood_fn(params), x, 2, 64, 200, start=start))(
            jax.random.key(2))
        assert abs(float(record.log_marginal) - truth) < 0.05


@pytest.mark.parametrize("kernel, moves, prior_weight, schedule, accepted", [("hmc", 1, 0.0, "sigmoid", None),
                                                                             ("independent", 2, 0.2, "adaptive", 0.5)])
def test_evaluate_runs_smc_per_example_with_its_own_stream(kernel, moves, prior_weight, schedule, accepted):
    """``evaluate(..., estimators=("smc",))``: example i uses fold_in(fold_in(key, 5), i), so the result is the
    same per-example function jitted and vmapped here (an eager call rounds differently, and a rounding
    difference can flip a resampling index: 3e-3 nats seen), whatever the batch size; the summary names its settings."""
    vae = vj.VAE(vj.ModelConfig(data_dim=12, latent_dim=3, hidden=(8,)))
    params = vae.init(jax.random.key(0))
    xs = np.asarray(jax.random.bernoulli(jax.random.key(1), 0.5, (5, 12)), np.float32)
    config = EvalConfig(estimators=("smc",), smc_particles=8, smc_temperatures=20, ais_start="q", smc_kernel=kernel,
                        smc_moves=moves, start_prior_weight=prior_weight, smc_schedule=schedule,
                        smc_accepted_moves=accepted)
    key = jax.random.key(3)
    result = evaluate(vae, params, xs, key, config, batch_size=2)["smc"]
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, 5), i))(jnp.arange(5))
    one = lambda k, x: vj.smc_log_marginal(k, vae.likelihood_fn(params), x, 3, 8, 20, start=vae.encode(params, x),
                                           kernel=kernel, mcmc_steps=moves, prior_weight=prior_weight,
                                           schedule=schedule, accepted_moves=accepted)
    # With accepted moves evaluate runs the examples in turn (their counts differ), otherwise vmapped.
    batched = jax.vmap(one) if accepted is None else lambda ks, xs: jax.lax.map(lambda kx: one(*kx), (ks, xs))
    direct = jax.jit(batched)(keys, xs)
    np.testing.assert_allclose(result["mean"], np.mean(direct.log_marginal), rtol=0, atol=1e-5)
    np.testing.assert_allclose(result["moves_per_temperature"], np.mean(direct.moves), rtol=1e-6)
    assert result["accepted_moves"] == accepted
    assert (result["num_particles"], result["num_temperatures"], result["start"]) == (8, 20, "q")
    assert (result["kernel"], result["moves"], result["start_prior_weight"]) == (kernel, moves, prior_weight)
    assert result["schedule"] == schedule
    assert 0 < result["ess_min"] <= 1 and 0 < result["acceptance"] < 1


@pytest.mark.parametrize("bad", [dict(num_particles=0), dict(mcmc_steps=0)])
def test_smc_refuses_bad_counts(bad):
    model = LinearGaussian.orthogonal(jax.random.key(0), 4, 2)
    args = dict(num_particles=8, mcmc_steps=1) | bad
    with pytest.raises(ConfigError, match=next(iter(bad))):
        vj.smc_log_marginal(jax.random.key(0), model.log_likelihood, jnp.zeros(4), 2, args["num_particles"], 10,
                            mcmc_steps=args["mcmc_steps"])


def test_independent_moves_match_the_exact_log_marginal_of_a_linear_gaussian_model():
    """kernel="independent": every tempered distribution of a linear-Gaussian model is Gaussian, so the pilot's
    fitted proposals suit it; 16 runs of 64 particles x 100 temperatures in 10-D average to log p(x)."""
    model = LinearGaussian.orthogonal(jax.random.key(0), 20, 10, noise_std=0.3)
    x = model.sample(jax.random.key(1), 1)[0]
    estimates, records = _repeated(lambda k: vj.smc_log_marginal(k, model.log_likelihood, x, 10, 64, 100,
                                                                 kernel="independent"), 16)
    _within_monte_carlo_error(estimates, float(model.log_marginal(x)), bias=0.05)  # spread about 0.25 here
    # The Gaussian half of the proposal keeps the acceptance up in 10-D: the kernel density estimate alone
    # accepted 0.12-0.16 in these 16 runs, the mixture 0.19-0.24 (measured when the kernels were added).
    assert np.all(records.acceptance > 0.17)


@pytest.mark.parametrize("prior_pilot", [False, True])
def test_independent_moves_recover_the_mode_a_start_misses(prior_pilot):
    """Where local HMC moves from a q on one mode lose the other mode's mass (log 0.8 low, the test above),
    independent moves whose proposal mixes the start's pilot's fit with N(0, I) jump between the modes: SMC from
    the same start then averages to the exact log p(x), without the prior's pilot; and with it (the default),
    whose proposals from q alone add the prior pilot's fit and its tilt toward q, frozen before the counted run
    as every fit is. 256 particles, pilots of 64, 2 moves per temperature."""
    log_likelihood, exact, start = _two_modes()
    estimates, _ = _repeated(lambda k: vj.smc_log_marginal(k, log_likelihood, jnp.zeros(1), 2, 256, 100, start=start,
                                                           kernel="independent", mcmc_steps=2,
                                                           prior_pilot=prior_pilot, pilot_particles=64), 16)
    _within_monte_carlo_error(estimates, exact)
    assert abs(np.mean(estimates) - (exact + np.log(0.8))) > 0.15  # not the one-mode answer


def test_a_prior_pilot_finds_a_mode_in_the_priors_tail():
    """The major mode (mass 0.8) at (-4, 0), in the prior's tail, and a q on the minor one at (4, 0), started
    from the defensive mixture 0.9 q + 0.1 p(z) (64 particles x 50 temperatures x 5 independent moves, pilots
    of 64): the start's pilot rarely reaches the far mode, and the estimate is off by up to log 0.2 when the
    run misses it too (these 16 runs: mean error -1.11, standard deviation 0.51); a second pilot along the
    prior's path (the default) puts the mode in the proposal, and the estimate averages to the exact log p(x)
    (-0.013 +- 0.023, standard deviation 0.093; measured with the kernel drawn by inverse CDF, 2026-12-07)."""
    log_likelihood, exact, (a, log_var) = _two_modes(mass_right=0.2, separation=4.0)

    def run(prior_pilot):
        return _repeated(lambda k: vj.smc_log_marginal(k, log_likelihood, jnp.zeros(1), 2, 64, 50,
                                                       start=(a, log_var), kernel="independent", mcmc_steps=5,
                                                       prior_weight=0.1, prior_pilot=prior_pilot,
                                                       pilot_particles=64), 16)[0]

    with_prior, start_only = run(True), run(False)
    _within_monte_carlo_error(with_prior, exact)
    assert np.std(with_prior) < 0.15
    assert np.std(start_only) > 3 * np.std(with_prior)


def test_the_pooled_proposal_density_is_the_density_of_its_draws():
    """Two pilots' fits (clusters at (3, 0) and (-3, 1), one with uneven weights) pooled into one proposal g:
    for a normalized density f, E_g[f / g] = 1, and E_g[z] = (1 - d) times the mean of the fits' means. 40,000
    draws, each mean within 5 standard errors, for f = N(0, I) (where the defensive part dominates) and for
    f = N((3, 0), 0.3^2 I) (where the first kernel density estimate does); a density that mis-weighed the fits
    would miss the second by a factor near 2."""
    from vae_jax.distributions import diag_normal_log_prob
    from vae_jax.smc import _fit_proposal, _pool, _proposal

    keys = jax.random.split(jax.random.key(7), 3)
    first = jnp.array([3.0, 0.0]) + 0.3 * jax.random.normal(keys[0], (64, 2))
    second = jnp.array([-3.0, 1.0]) + 0.5 * jax.random.normal(keys[1], (64, 2))
    uneven = jax.nn.softmax(jnp.linspace(0.0, 2.0, 64))
    fits = [_fit_proposal(z, w, 1.0) for z, w in ((first, jnp.full(64, 1 / 64)), (second, uneven))]
    pooled = {name: value[0] for name, value in _pool(fits).items()}
    draw, log_g = _proposal(**pooled, defensive=0.1)
    z = jax.vmap(draw)(jax.random.split(keys[2], 40_000))
    log_gz = jax.vmap(log_g)(z)

    def check(values, expected):
        values = np.asarray(values)
        stderr = values.std(axis=0, ddof=1) / np.sqrt(len(values))
        np.testing.assert_array_less(np.abs(values.mean(axis=0) - expected), 5 * stderr)

    for f_mean, f_log_var in ((jnp.zeros(2), jnp.zeros(2)), (jnp.array([3.0, 0.0]), jnp.log(jnp.full(2, 0.09)))):
        check(jnp.exp(jax.vmap(lambda z: diag_normal_log_prob(z, f_mean, f_log_var))(z) - log_gz), 1.0)
    check(z, 0.9 * np.mean([first.mean(0), uneven @ second], axis=0))


def test_the_proposal_picks_each_kernel_with_its_weight():
    """Kernels far apart (centres 100, 200, 300, 400 on the first axis, width 1e-3) with weights 0.5, 0.3, 0.2, 0
    over two fits, the Gaussian halves at -1000: a draw lands at kernel i with probability (1 - d) w_i / 2, so
    each count of 100,000 draws is within 5 binomial standard errors of that, and the kernel of weight 0 is
    never drawn."""
    from vae_jax.smc import _proposal

    weights = jnp.array([[0.5, 0.3], [0.2, 0.0]])  # [C = 2 fits, M = 2 kernels], summing to 1 over both
    centres = jnp.stack([jnp.arange(1.0, 5.0) * 100, jnp.zeros(4)], axis=-1).reshape(2, 2, 2)
    tiny, wide = 1e-3 * jnp.eye(2), jnp.eye(2)
    fit = dict(centres=centres, log_weights=jnp.log(weights), chol=jnp.stack([tiny] * 2),
               chol_inv=jnp.stack([jnp.linalg.inv(tiny)] * 2), mean=jnp.full((2, 2), -1000.0),
               wide_chol=jnp.stack([wide] * 2), wide_chol_inv=jnp.stack([wide] * 2))
    draw, _ = _proposal(**fit, defensive=0.1)
    n = 100_000
    z = np.asarray(jax.vmap(draw)(jax.random.split(jax.random.key(11), n)))
    counts = np.array([np.sum(np.abs(z[:, 0] - c) < 1) for c in (100, 200, 300, 400)])
    p = 0.9 * np.array([0.5, 0.3, 0.2, 0.0]) / 2
    np.testing.assert_array_less(np.abs(counts - n * p), 5 * np.sqrt(n * p * (1 - p)) + 1e-9)
    assert counts[3] == 0


def test_the_independent_kernel_tunes_no_step_sizes_and_from_the_prior_runs_one_pilot():
    """No HMC step sizes; and ``prior_pilot``, which adds the prior's path to a start other than the prior,
    changes nothing from the prior."""
    log_likelihood, _, _ = _two_modes()
    run = lambda prior_pilot: vj.smc_log_marginal(jax.random.key(0), log_likelihood, jnp.zeros(1), 2, 16, 10,
                                                  kernel="independent", prior_pilot=prior_pilot)
    record = run(True)
    np.testing.assert_array_equal(record.step_sizes, np.zeros(10))
    assert float(record.log_marginal) == float(run(False).log_marginal)


def test_unknown_kernel_is_refused():
    with pytest.raises(ConfigError, match="kernel must be 'hmc' or 'independent'"):
        vj.smc_log_marginal(jax.random.key(0), lambda x, z: -jnp.sum(z**2), jnp.zeros(1), 2, 8, 10, kernel="gibbs")


def test_the_adaptive_schedule_gives_each_step_an_equal_share_of_the_blended_length():
    """length_schedule from a standard deviation s(b) of 1 below b = 0.5 and 9 above, on a fine grid: each new
    step covers 1/T of u = (1 - a) L / L(1) + a t / T (checked with numpy's interpolation of u's inverse), and
    the share of steps above b = 0.5 is (1 - a) 0.9 + a 0.5 = 0.8 (the grid's own spacing is uniform here)."""
    from vae_jax.smc import SIGMOID_SHARE, length_schedule

    grid = np.linspace(0.0, 1.0, 2001)
    sd = np.where(grid < 0.5, 1.0, 9.0)
    adapted = np.asarray(length_schedule(jnp.asarray(grid, jnp.float32), jnp.asarray(sd, jnp.float32)))
    length = np.concatenate([[0.0], np.cumsum(0.5 * (sd[1:] + sd[:-1]) * np.diff(grid))])
    u = (1 - SIGMOID_SHARE) * length / length[-1] + SIGMOID_SHARE * grid
    np.testing.assert_allclose(np.interp(adapted, grid, u), np.linspace(0.0, 1.0, 2001), atol=2e-5)
    assert adapted[0] == 0.0 and adapted[-1] == 1.0 and np.all(np.diff(adapted) > 0)
    expected_share = (1 - SIGMOID_SHARE) * 0.9 + SIGMOID_SHARE * 0.5
    assert abs(np.mean(adapted[1:] > 0.5) - expected_share) < 1e-3


def test_the_log_ratio_sd_matches_its_closed_form():
    """From the prior with p(x|z) = N(x; z, sigma^2 I) in 2-D, f_b = N(m_b, v_b I) with v_b = 1 / (1 + b /
    sigma^2), m_b = v_b b x / sigma^2, and l(z) = log N(x; z, sigma^2 I) has variance sum_k [2 v_b^2 + 4 v_b
    (x_k - m_bk)^2] / (4 sigma^4). Proposals fitted to 512 exact draws of each f_b, 4,096 importance draws
    each: the estimated s(b) within 5% of the closed form (the relative standard error of a standard deviation
    from n near-exact draws is about 1 / sqrt(2 n) = 1.1%)."""
    from vae_jax.ais import annealing_path
    from vae_jax.distributions import diag_normal_log_prob
    from vae_jax.smc import _fit_proposal, _log_ratio_sds

    sigma, x = 0.5, jnp.array([1.5, -0.5])
    log_likelihood = lambda x, z: diag_normal_log_prob(x, z, jnp.full(2, 2 * np.log(sigma)))
    betas = jnp.array([0.0, 0.05, 0.2, 0.5, 1.0])
    v = 1.0 / (1.0 + betas / sigma**2)
    m = (v * betas / sigma**2)[:, None] * x
    exact_draws = m[1:, None] + jnp.sqrt(v[1:, None, None]) * jax.random.normal(jax.random.key(3), (4, 512, 2))
    fitted = jax.vmap(lambda z: _fit_proposal(z, jnp.full(512, 1 / 512), 1.0))(exact_draws)
    sd = _log_ratio_sds(jax.random.key(4), annealing_path(log_likelihood, x, None), betas, fitted, 4096,
                        defensive=0.1)
    exact = np.sqrt(np.sum(2 * v[:, None] ** 2 + 4 * v[:, None] * (x - m) ** 2, axis=1) / (4 * sigma**4))
    np.testing.assert_allclose(np.asarray(sd), exact, rtol=0.05)


def test_the_adaptive_schedule_needs_the_independent_kernel():
    for bad, message in ((dict(schedule="linear"), "schedule must be"), (dict(schedule="adaptive"), "needs kernel")):
        with pytest.raises(ConfigError, match=message):
            vj.smc_log_marginal(jax.random.key(0), lambda x, z: -jnp.sum(z**2), jnp.zeros(1), 2, 8, 10, **bad)
    with pytest.raises(ConfigError, match="needs --smc-kernel independent"):
        EvalConfig(estimators=("smc",), smc_schedule="adaptive")


def test_the_tilted_fit_is_the_start_paths_density_when_the_prior_paths_is_gaussian():
    """With p(x|z) = N(x; z, sigma^2 I) the prior's path is Gaussian at every b, N(m_b, v_b I), v_b = 1 / (1 +
    b / sigma^2), m_b = v_b b x / sigma^2; the path from q = N(m_q, diag s_q^2) then has, by completing the square
    of (1 - b) log q + b log p(z) + b log p(x|z), precision (1 - b) / s_q^2 + b (1 + 1 / sigma^2) and linear term
    (1 - b) m_q / s_q^2 + b x / sigma^2. _tilted_fit, given the prior path's exact Gaussian, returns that
    Gaussian (its covariance spread by TILT_WIDTH) to float32 precision. A q wider than the prior in a direction
    is not tilted there: the fit keeps the prior path's mean and variance in it."""
    from vae_jax.smc import TILT_WIDTH, _tilted_fit

    sigma, x, m = 0.5, jnp.array([1.5, -0.5]), 16
    q_mean, q_log_var = jnp.array([-1.0, 2.0]), jnp.log(jnp.array([0.01, 0.04]))

    def prior_fit(beta):
        v = 1.0 / (1.0 + beta / sigma**2)
        mean = v * beta / sigma**2 * x
        return {"mean": mean[None, None], "wide_chol_inv": (jnp.eye(2) / jnp.sqrt(v))[None, None],
                "centres": jnp.zeros((1, 1, m, 2))}

    for beta in (0.0, 0.3, 0.9):
        fit = {name: value[0, 0] for name, value in _tilted_fit(prior_fit(beta), beta, q_mean, q_log_var).items()}
        precision = (1 - beta) / jnp.exp(q_log_var) + beta * (1 + 1 / sigma**2)
        mean = ((1 - beta) * q_mean / jnp.exp(q_log_var) + beta * x / sigma**2) / precision
        np.testing.assert_allclose(fit["mean"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fit["centres"], np.broadcast_to(mean, (m, 2)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fit["chol"] @ fit["chol"].T / TILT_WIDTH**2, np.diag(1 / precision), rtol=1e-5)
        np.testing.assert_allclose(fit["wide_chol"] @ fit["wide_chol_inv"], np.eye(2), atol=1e-5)
        np.testing.assert_allclose(np.exp(fit["log_weights"]).sum(), 1.0, rtol=1e-6)

    wide_q = jnp.log(jnp.array([0.01, 4.0]))  # wider than the prior along the second axis
    fit = {name: value[0, 0] for name, value in _tilted_fit(prior_fit(0.3), 0.3, q_mean, wide_q).items()}
    v = 1.0 / (1.0 + 0.3 / sigma**2)
    assert abs(float(fit["mean"][1]) - float(v * 0.3 / sigma**2 * x[1])) < 1e-6
    assert abs(float((fit["chol"] @ fit["chol"].T)[1, 1]) / TILT_WIDTH**2 - v) < 1e-6


def test_a_traced_number_of_moves_takes_blackjaxs_moves():
    """_take_last(max_moves) with a traced count m moves each particle exactly as BlackJAX's update_and_take_last
    with the static count m (the same keys, the same kernel), and reports the acceptance rate averaged over the m
    moves."""
    import blackjax
    from blackjax.smc.base import update_and_take_last

    from vae_jax.smc import _take_last

    log_density = lambda z: -0.5 * jnp.sum((z - 1.0) ** 2 / 0.3)
    step = lambda key, state, logdensity_fn: blackjax.rmh.build_kernel()(
        key, state, logdensity_fn, blackjax.mcmc.random_walk.normal(jnp.full(2, 0.8)))
    keys = jax.random.split(jax.random.key(0), 6)
    positions = jax.random.normal(jax.random.key(1), (6, 2))
    for m in (1, 3, 7):
        fixed, _ = update_and_take_last(blackjax.rmh.init, log_density, step, m, 6)
        traced, _ = _take_last(9)(blackjax.rmh.init, log_density, step, jnp.asarray(m), 6)
        expected, expected_info = fixed(keys, positions, {})
        got, info = jax.jit(traced)(keys, positions, {})
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_allclose(info.acceptance_rate, jnp.mean(expected_info.acceptance_rate, axis=1), rtol=1e-6)


def test_accepted_moves_counts_are_clipped_between_mcmc_steps_and_max_moves():
    """Exact counts at both ends: a target of accepted moves every acceptance rate meets gives mcmc_steps moves
    everywhere, and the same estimate bit for bit as the fixed count; a target none meets gives max_moves
    everywhere. (Between them each count is ceil(accepted_moves / a), a the pilot's acceptance rate.)"""
    log_likelihood, _, _ = _two_modes()
    run = jax.jit(lambda **kw: vj.smc_log_marginal(jax.random.key(0), log_likelihood, jnp.zeros(1), 2, 16, 12,
                                                   kernel="independent", mcmc_steps=2, pilot_particles=16, **kw),
                  static_argnames=("accepted_moves", "max_moves"))
    fixed, low, high = run(), run(accepted_moves=1e-6), run(accepted_moves=1e6, max_moves=7)
    assert float(fixed.moves) == 2.0 and float(low.moves) == 2.0 and float(high.moves) == 7.0
    assert float(low.log_marginal) == float(fixed.log_marginal)
    assert float(high.log_marginal) != float(fixed.log_marginal)


def test_accepted_moves_keep_the_estimate_unbiased():
    """Counts raised where the pilot accepted few moves, frozen before the counted run: from a q on one mode of
    the two-mode posterior (as the recovery test above, with 128 particles, one move per temperature and a target
    of 0.5 accepted moves), 16 runs still average to the exact log p(x), and the counts did rise."""
    log_likelihood, exact, start = _two_modes()
    estimates, records = _repeated(lambda k: vj.smc_log_marginal(k, log_likelihood, jnp.zeros(1), 2, 128, 100,
                                                                 start=start, kernel="independent", mcmc_steps=1,
                                                                 pilot_particles=64, accepted_moves=0.5,
                                                                 max_moves=10), 16)
    _within_monte_carlo_error(estimates, exact)
    assert np.all((records.moves > 1.2) & (records.moves <= 10))
    assert abs(np.mean(estimates) - (exact + np.log(0.8))) > 0.15  # not the one-mode answer


@pytest.mark.parametrize("bad, message", [(dict(accepted_moves=1.0), "needs kernel='independent'"),
                                          (dict(accepted_moves=0.0, kernel="independent"), "positive number"),
                                          (dict(accepted_moves=float("nan"), kernel="independent"), "positive number"),
                                          (dict(accepted_moves=1.0, kernel="independent", mcmc_steps=3, max_moves=2),
                                           "at least mcmc_steps"),
                                          (dict(accepted_moves=1.0, kernel="independent", max_moves=0), "max_moves")])
def test_bad_accepted_moves_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        vj.smc_log_marginal(jax.random.key(0), lambda x, z: -jnp.sum(z**2), jnp.zeros(1), 2, 8, 10, **bad)
    if bad.get("kernel") is None:
        with pytest.raises(ConfigError, match="needs --smc-kernel independent"):
            EvalConfig(estimators=("smc",), smc_accepted_moves=1.0)
