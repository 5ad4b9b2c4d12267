"""Annealed importance sampling (Neal 2001) and bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015;
Wu, Burda, Salakhutdinov & Grosse 2017) for log p(x), as functions of ``log_likelihood(x, z)`` for ONE example.

Geometric path from a start distribution p_0 (the prior, q(z|x), or the defensive mixture (1 - d) q(z|x) + d p(z)
with ``prior_weight`` d) to the posterior:

    log f_b(z) = log p_0(z) + b [log p(z) + log p(x|z) - log p_0(z)],   b = b_0 = 0 < b_1 < ... < b_T = 1,

with a sigmoid schedule of T = ``num_temperatures`` steps. Each chain starts at z ~ p_0 and, for t = 1..T,
adds log f_{b_t}(z) - log f_{b_{t-1}}(z) to its log-weight, then moves z by one HMC transition that leaves
f_{b_t} invariant. E[w] = p(x) exactly, so log mean_c w_c is a stochastic lower bound on log p(x).

Run the other way (from exact posterior samples, the schedule reversed), the same algorithm estimates
p_0's normalizer over p(x, .)'s, i.e. 1 / p(x): its negated log-mean-exp is a stochastic upper bound. With
data simulated from the model, (z, x) ~ p(z, x) gives an exact posterior sample z for free, and the gap
between the two bounds certifies the AIS settings (BDMC).

HMC transitions come from BlackJAX (``blackjax.hmc.build_kernel``: leapfrog, Metropolis correction). Step
sizes are tuned by a pilot run, one shared step size per temperature driven toward ``target_acceptance``,
and then frozen: the counted run must use transitions that leave each f_b invariant, which adapting inside
it would break (and bias both bounds).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vae_jax import validation
from vae_jax.errors import ConfigError
from vae_jax.distributions import diag_normal_log_prob, standard_normal_log_prob
from vae_jax.types import Array, ArrayLike, LogLikelihoodFn, PRNGKey


class AISRecord(NamedTuple):
    """An AIS estimate with its diagnostics (scalars, except ``step_sizes``).

    Attributes:
      log_marginal: log (1/C) sum_c w_c for forward AIS (a lower bound in expectation); for reverse AIS
        the negated log-mean-exp of the reverse weights (an upper bound in expectation).
      stderr: delta-method standard error of ``log_marginal`` over the C chains.
      ess: effective sample size of the chain weights, (sum w)^2 / sum w^2.
      acceptance: mean HMC acceptance rate over temperatures and chains.
      step_sizes: [T] the frozen HMC step size of each temperature.
    """

    log_marginal: Array
    stderr: Array
    ess: Array
    acceptance: Array
    step_sizes: Array


def sigmoid_schedule(num_temperatures: int, delta: float = 4.0) -> Array:
    """b_0 = 0 < ... < b_T = 1, dense at both ends: (s(delta (2t/T - 1)) - s(-delta)) / (s(delta) - s(-delta))."""
    t = jnp.linspace(-delta, delta, num_temperatures + 1)
    s = jax.nn.sigmoid(t)
    return (s - s[0]) / (s[-1] - s[0])


class AnnealingPath(NamedTuple):
    """The geometric path's two terms for one example: log f_b(z) = log_start(z) + b log_ratio(z)."""

    log_start: callable  # z [K] -> log p_0(z)
    log_ratio: callable  # z [K] -> log p(z) + log p(x|z) - log p_0(z)


def annealing_path(log_likelihood, x, start, prior_weight: float = 0.0) -> AnnealingPath:
    """The path from p_0 to the posterior of x [D]; p_0 is the prior (``start`` None), q = N(mean,
    exp(log_var)) (``start`` = (mean [K], log_var [K])), or with ``prior_weight`` d > 0 the defensive mixture
    (1 - d) q + d p(z), which puts prior mass on posterior modes that q misses."""
    if start is None:  # the prior: the ratio is the likelihood alone
        return AnnealingPath(standard_normal_log_prob, lambda z: log_likelihood(x, z))
    mean, log_var = start
    if prior_weight > 0:
        log_start = lambda z: jnp.logaddexp(jnp.log1p(-prior_weight) + diag_normal_log_prob(z, mean, log_var),
                                            jnp.log(prior_weight) + standard_normal_log_prob(z))
    else:
        log_start = lambda z: diag_normal_log_prob(z, mean, log_var)
    return AnnealingPath(log_start, lambda z: standard_normal_log_prob(z) + log_likelihood(x, z) - log_start(z))


def _anneal(key, path: AnnealingPath, z0: Array, betas: Array, step_sizes: Array, leapfrog_steps: int, adapt: bool,
            target_acceptance: float):
    """Runs chains z0 [C, K] through ``betas`` [T + 1]. Returns (log-weights [C], mean acceptance, step sizes [T])."""
    # Imported here: importing blackjax starts JAX's backend, which must wait for jax.distributed.initialize.
    import blackjax
    from blackjax.mcmc.hmc import HMCState

    kernel = blackjax.hmc.build_kernel()
    inverse_mass = jnp.ones(z0.shape[-1], z0.dtype)

    def log_f(beta):
        return lambda z: path.log_start(z) + beta * path.log_ratio(z)

    def step(carry, inputs):
        z, log_w, step_size = carry
        t, beta_prev, beta = inputs
        target = log_f(beta)
        size = step_size if adapt else step_sizes[t]

        def move(k, z_c):
            # One value and gradient of each term at z serves the weight and the HMC state at b.
            (start, d_start), (ratio, d_ratio) = (jax.value_and_grad(f)(z_c) for f in path)
            state = HMCState(z_c, start + beta * ratio, d_start + beta * d_ratio)
            new, info = kernel(k, state, target, size, inverse_mass, leapfrog_steps)
            return new.position, info.acceptance_rate, ratio

        keys = jax.random.split(jax.random.fold_in(key, t), z.shape[0])
        z, acceptance, ratio = jax.vmap(move)(keys, z)
        log_w = log_w + (beta - beta_prev) * ratio  # log f_b(z) - log f_b'(z), z before the move
        accept = jnp.mean(acceptance)
        # Pilot: the next temperature's step size, driven toward the target acceptance rate.
        next_size = jnp.clip(size * jnp.exp(accept - target_acceptance), 1e-4, 10.0) if adapt else size
        return (z, log_w, next_size), (accept, size)

    inputs = (jnp.arange(betas.shape[0] - 1), betas[:-1], betas[1:])
    init = (z0, jnp.zeros(z0.shape[0], z0.dtype), step_sizes[0])
    (_, log_w, _), (accept, sizes) = lax.scan(step, init, inputs)
    return log_w, jnp.mean(accept), sizes


def _summary(log_w: Array, acceptance: Array, step_sizes: Array, sign: float) -> AISRecord:
    """Log-mean-exp of the chain weights with its delta-method error and ESS."""
    c = log_w.shape[0]
    log_mean = jax.nn.logsumexp(log_w) - jnp.log(c)
    normalized = jnp.exp(log_w - jax.nn.logsumexp(log_w))
    sum_sq = jnp.sum(normalized**2)
    relative_var = jnp.maximum(sum_sq - 1.0 / c, 0.0) * c / max(c - 1, 1)
    return AISRecord(sign * log_mean, jnp.sqrt(relative_var) if c > 1 else jnp.nan, 1.0 / sum_sq, acceptance,
                     step_sizes)


PILOT_TEMPERATURES = 100  # the pilot anneals over at most this many; step sizes are interpolated in b


def tune_step_sizes(key, path: AnnealingPath, z0: Array, betas: Array, leapfrog_steps: int, target_acceptance: float,
                    initial_step_size: float = 0.1) -> Array:
    """[T] step sizes from a pilot run that adapts one shared step size per temperature (then frozen).

    The pilot anneals over a sigmoid schedule of min(T, 100) temperatures; the step size at each of the
    T temperatures ``betas[1:]`` is interpolated (in log) from the pilot's at the same b.
    """
    pilot_betas = sigmoid_schedule(min(betas.shape[0] - 1, PILOT_TEMPERATURES)).astype(z0.dtype)
    sizes = jnp.full(pilot_betas.shape[0] - 1, initial_step_size, z0.dtype)
    _, _, used = _anneal(key, path, z0, pilot_betas, sizes, leapfrog_steps, True, target_acceptance)
    return jnp.exp(jnp.interp(betas[1:], pilot_betas[1:], jnp.log(used)))


def start_samples(key, path_start, num_chains: int, latent_dim: int, dtype, prior_weight: float = 0.0):
    """[num_chains, K] draws from p_0 (:func:`annealing_path`): the prior, q when ``path_start`` = (mean,
    log_var), or (1 - prior_weight) q + prior_weight p(z)."""
    eps = jax.random.normal(key, (num_chains, latent_dim), dtype)
    if path_start is None:
        return eps
    mean, log_var = path_start
    z = mean + jnp.exp(0.5 * log_var) * eps
    if prior_weight > 0:  # each draw from the prior with probability d
        pick_key, prior_key = jax.random.split(jax.random.fold_in(key, 1))
        from_prior = jax.random.uniform(pick_key, (num_chains, 1)) < prior_weight
        z = jnp.where(from_prior, jax.random.normal(prior_key, z.shape, dtype), z)
    return z


def setup_annealing(key, log_likelihood, x, start, latent_dim, num_temperatures, leapfrog_steps, pilot_chains,
                    target_acceptance, step_sizes, prior_weight=0.0):
    """(path, betas [T + 1], frozen step sizes [T]): checks the counts, then tunes the step sizes by a pilot
    run unless they are given."""
    for name, value in (("latent_dim", latent_dim), ("num_temperatures", num_temperatures),
                        ("leapfrog_steps", leapfrog_steps), ("pilot_chains", pilot_chains)):
        validation.check_positive_int(name, value)
    start = validation.check_start(start, latent_dim)
    prior_weight = validation.check_prior_weight(prior_weight)
    path = annealing_path(log_likelihood, x, start, prior_weight)
    betas = sigmoid_schedule(num_temperatures).astype(x.dtype)
    if step_sizes is None:
        z_pilot = start_samples(jax.random.fold_in(key, 0), start, pilot_chains, latent_dim, x.dtype, prior_weight)
        step_sizes = tune_step_sizes(jax.random.fold_in(key, 1), path, z_pilot, betas, leapfrog_steps,
                                     target_acceptance)
    return path, betas, jnp.asarray(step_sizes, x.dtype)


def ais_log_marginal(
    key: PRNGKey,
    log_likelihood: LogLikelihoodFn,
    x: ArrayLike,
    latent_dim: int,
    num_chains: int,
    num_temperatures: int,
    *,
    leapfrog_steps: int = 10,
    start: tuple[ArrayLike, ArrayLike] | None = None,
    pilot_chains: int = 8,
    target_acceptance: float = 0.65,
    step_sizes: ArrayLike | None = None,
    prior_weight: float = 0.0,
) -> AISRecord:
    """Forward AIS: a stochastic lower bound on log p(x) for one example x [D].

    Args:
      key: PRNG key for this example.
      log_likelihood: (x [D], z [K]) -> log p(x|z).
      x: [D] example.
      latent_dim: K.
      num_chains: C, independent annealing chains.
      num_temperatures: T, steps of the sigmoid schedule (one HMC transition each).
      leapfrog_steps: leapfrog steps per HMC transition.
      start: None to start from the prior, or (mean [K], log_var [K]) of q(z|x) to start from q.
      pilot_chains: chains of the pilot run that tunes the step sizes (before the counted run, over at most
        100 temperatures).
      target_acceptance: the pilot's target acceptance rate.
      step_sizes: [T] frozen step sizes to use instead of a pilot run (e.g. a record's ``step_sizes``).
      prior_weight: d in [0, 1): with ``start`` q's, start from (1 - d) q + d p(z) (:func:`annealing_path`).

    Returns:
      :class:`AISRecord`. jit with ``log_likelihood`` and the counts static; vmap over (key, x[, start]).
    """
    x = validation.as_float_data("x", x).astype(jnp.float32)
    validation.check_positive_int("num_chains", num_chains)
    pilot_key, start_key, run_key = jax.random.split(key, 3)
    path, betas, step_sizes = setup_annealing(pilot_key, log_likelihood, x, start, latent_dim, num_temperatures,
                                              leapfrog_steps, pilot_chains, target_acceptance, step_sizes,
                                              prior_weight)
    z0 = start_samples(start_key, start, num_chains, latent_dim, x.dtype, prior_weight)
    log_w, acceptance, sizes = _anneal(run_key, path, z0, betas, step_sizes, leapfrog_steps, False,
                                       target_acceptance)
    return _summary(log_w, acceptance, sizes, 1.0)


def reverse_ais_log_marginal(
    key: PRNGKey,
    log_likelihood: LogLikelihoodFn,
    x: ArrayLike,
    z_exact: ArrayLike,
    num_temperatures: int,
    *,
    leapfrog_steps: int = 10,
    start: tuple[ArrayLike, ArrayLike] | None = None,
    pilot_chains: int = 8,
    target_acceptance: float = 0.65,
    step_sizes: ArrayLike | None = None,
    prior_weight: float = 0.0,
) -> AISRecord:
    """Reverse AIS from exact posterior samples ``z_exact`` [C, K] (one chain each): a stochastic upper
    bound on log p(x). The path of :func:`ais_log_marginal` run from b = 1 to b = 0; the step sizes are
    tuned by a forward pilot (or given) and used at the same temperatures. Other arguments as there."""
    x = validation.as_float_data("x", x).astype(jnp.float32)
    z_exact = jnp.asarray(z_exact, x.dtype)
    if z_exact.ndim != 2:
        raise ConfigError(f"z_exact must be [chains, K] exact posterior samples, got shape {z_exact.shape}.")
    pilot_key, run_key = jax.random.split(key)
    path, betas, step_sizes = setup_annealing(pilot_key, log_likelihood, x, start, z_exact.shape[-1], num_temperatures,
                                              leapfrog_steps, pilot_chains, target_acceptance, step_sizes,
                                              prior_weight)
    # Reversed, each transition leaves the temperature it moves to invariant: b_{T-1}, ..., b_0, whose
    # forward step sizes are step_sizes[T-2], ..., and for b_0 the first one.
    reversed_sizes = jnp.concatenate([step_sizes[-2::-1], step_sizes[:1]])
    log_w, acceptance, _ = _anneal(run_key, path, z_exact, betas[::-1], reversed_sizes, leapfrog_steps, False,
                                   target_acceptance)
    # log_w estimates log (Z_0 / p(x)) with Z_0 = 1: negate for an upper bound on log p(x).
    return _summary(log_w, acceptance, step_sizes, -1.0)
