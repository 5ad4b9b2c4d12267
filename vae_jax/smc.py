"""Tempered sequential Monte Carlo (Del Moral, Doucet & Jasra 2006) for log p(x), as a function of
``log_likelihood(x, z)`` for ONE example.

The same geometric path as AIS (:mod:`vae_jax.ais`), from p_0 (the prior, or q(z|x)) to the posterior,

    log f_b(z) = log p_0(z) + b [log p(z) + log p(x|z) - log p_0(z)],   b_0 = 0 < b_1 < ... < b_T = 1,

with N particles instead of independent chains. At each temperature t = 1..T the particles are resampled
(systematic resampling) in proportion to their weights, moved by HMC transitions that leave f_{b_{t-1}}
invariant, and reweighted by the incremental weights w_i = f_{b_t}(z_i) / f_{b_{t-1}}(z_i). The product over t
of the mean incremental weight is an unbiased estimate of p(x), so

    log p(x) ~= sum_t log (1/N) sum_i w_{t,i}

is a stochastic lower bound on log p(x), like AIS's. What resampling adds: particles that reach a region the
path puts mass on (a second posterior mode) are copied there, in proportion to that mass, instead of each chain
carrying its own weight; AIS chains started in one mode of q keep their weights and their mode.

The SMC step is BlackJAX's (``blackjax.smc.tempered.build_kernel``, HMC moves from ``blackjax.hmc``); the schedule
and the frozen per-temperature step sizes (a pilot run toward ``target_acceptance``) are AIS's.

Cost per example: T x mcmc_steps x N HMC transitions of (leapfrog_steps + 1) likelihood gradients, plus T x N
likelihood values for the weights: about what AIS with N chains and the same T costs.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vae_jax import validation
from vae_jax.ais import setup_annealing, start_samples
from vae_jax.types import Array, ArrayLike, LogLikelihoodFn, PRNGKey


class SMCRecord(NamedTuple):
    """An SMC estimate with its diagnostics (scalars, except ``step_sizes``).

    Attributes:
      log_marginal: sum_t log mean_i w_{t,i}, a stochastic lower bound on log p(x) (its exponential is
        unbiased for p(x)).
      ess_min: the smallest effective sample size of the incremental weights over the T temperatures, as a
        fraction of N, (sum w)^2 / (N sum w^2): near 1 when each step moves the distribution little.
      acceptance: mean HMC acceptance rate over temperatures, moves and particles.
      step_sizes: [T] the frozen HMC step size of each temperature (as AIS's ``step_sizes``).
    """

    log_marginal: Array
    ess_min: Array
    acceptance: Array
    step_sizes: Array


def smc_log_marginal(
    key: PRNGKey,
    log_likelihood: LogLikelihoodFn,
    x: ArrayLike,
    latent_dim: int,
    num_particles: int,
    num_temperatures: int,
    *,
    leapfrog_steps: int = 10,
    mcmc_steps: int = 1,
    start: tuple[ArrayLike, ArrayLike] | None = None,
    pilot_chains: int = 8,
    target_acceptance: float = 0.65,
    step_sizes: ArrayLike | None = None,
) -> SMCRecord:
    """Tempered SMC: a stochastic lower bound on log p(x) for one example x [D].

    Args:
      key: PRNG key for this example.
      log_likelihood: (x [D], z [K]) -> log p(x|z).
      x: [D] example.
      latent_dim: K.
      num_particles: N.
      num_temperatures: T, steps of AIS's sigmoid schedule.
      leapfrog_steps: leapfrog steps per HMC transition.
      mcmc_steps: HMC transitions per temperature.
      start: None to start from the prior, or (mean [K], log_var [K]) of q(z|x) to start from q.
      pilot_chains, target_acceptance, step_sizes: the step sizes' pilot run, as for
        :func:`vae_jax.ais_log_marginal`.

    Returns:
      :class:`SMCRecord`. jit with ``log_likelihood`` and the counts static; vmap over (key, x[, start]).
    """
    # Imported here: importing blackjax starts JAX's backend, which must wait for jax.distributed.initialize.
    import blackjax
    from blackjax.smc import resampling, tempered

    x = validation.as_float_data("x", x).astype(jnp.float32)
    validation.check_positive_int("num_particles", num_particles)
    validation.check_positive_int("mcmc_steps", mcmc_steps)
    pilot_key, start_key, run_key = jax.random.split(key, 3)
    path, betas, step_sizes = setup_annealing(pilot_key, log_likelihood, x, start, latent_dim, num_temperatures,
                                              leapfrog_steps, pilot_chains, target_acceptance, step_sizes)
    hmc = functools.partial(blackjax.hmc.build_kernel(), num_integration_steps=leapfrog_steps)
    kernel = tempered.build_kernel(path.log_start, path.log_ratio, hmc, blackjax.hmc.init, resampling.systematic)
    # The step to b_t moves the particles at b_{t-1}, whose step size AIS tuned (b_0 takes b_1's).
    move_sizes = jnp.concatenate([step_sizes[:1], step_sizes[:-1]])
    inverse_mass = jnp.ones((1, latent_dim), x.dtype)  # leading 1: shared by every particle

    def step(state, inputs):
        k, beta, size = inputs
        state, info = kernel(k, state, mcmc_steps, beta, {"step_size": size[None], "inverse_mass_matrix": inverse_mass})
        ess = 1.0 / (num_particles * jnp.sum(state.weights**2))
        return state, (info.log_likelihood_increment, ess, jnp.mean(info.update_info.acceptance_rate))

    z0 = start_samples(start_key, start, num_particles, latent_dim, x.dtype)
    state = tempered.TemperedSMCState(z0, jnp.full(num_particles, 1.0 / num_particles, x.dtype), jnp.zeros((), x.dtype))
    keys = jax.random.split(run_key, num_temperatures)
    _, (increments, ess, acceptance) = lax.scan(step, state, (keys, betas[1:], move_sizes))
    return SMCRecord(jnp.sum(increments), jnp.min(ess), jnp.mean(acceptance), step_sizes)
