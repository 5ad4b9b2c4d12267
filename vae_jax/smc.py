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

The SMC step is BlackJAX's (``blackjax.smc.tempered.build_kernel``); the schedule is AIS's. Two move kernels:

- ``kernel="hmc"``: HMC moves (``blackjax.hmc``) with AIS's frozen per-temperature step sizes (a pilot run
  toward ``target_acceptance``). Cost per example: T x mcmc_steps x N transitions of (leapfrog_steps + 1)
  likelihood gradients, plus T x N likelihood values for the weights: about AIS's with N chains.
- ``kernel="independent"``: independent Metropolis-Hastings moves (BlackJAX's ``irmh``) whose proposal at
  temperature t is the defensive mixture (1 - d) [g_t + n_t] / 2 + d N(0, I), d = ``defensive``, where g_t is a
  kernel density estimate of a *pilot* SMC's weighted particles at that temperature (``pilot_particles``, its
  own keys), g_t(z) = sum_j w_j N(z; z_j, h^2 C_t) with C_t their weighted covariance and h =
  ``proposal_scale`` x (4 / (ESS (K + 2)))^(1 / (K + 4)) (Silverman's rule), and n_t the Gaussian with g_t's
  mean and covariance (1 + h^2) C_t. The kernel density follows every mode the pilot found, where one Gaussian
  would straddle them; the Gaussian keeps the acceptance up in more dimensions, where a few hundred kernels
  cover the space poorly; with half of each, a point's importance weight f / g under the proposal is at most
  2 / (1 - d) times its weight under either half alone. The pilot's fits are frozen before the counted
  run, so the run's moves leave each tempered distribution invariant and its estimate keeps its
  unbiasedness, as AIS's frozen step sizes do. With a start other than the prior (``prior_pilot``, the
  default), a pilot runs first along the prior's path; the start's pilot then proposes, at each temperature,
  from its own fit pooled with the prior pilot's fit at that temperature and, from q alone (``prior_weight``
  0), that fit's tilt toward q (:func:`_tilted_fit`), each fit drawn with equal probability; the counted run
  uses the start pilot's pooled fits. A mode the start's path reaches only late (far from q, in the prior's
  tail) is in the prior pilot's particles; a region q's path passes through on its way there (between q and the
  posterior, where q^(1 - b) pulls the prior path's mass) is in the tilted fit; so the start's pilot can follow
  its path, and the proposal covers it at every temperature. (From the defensive mixture the region near the
  prior path's mass belongs to its prior part, and there is no tilt to follow.) A proposal that covers the whole
  tempered distribution moves a particle anywhere in one step, between modes included, so the particles
  decorrelate far faster than under local HMC moves; each move costs one likelihood value (no gradient). It suits
  low latent dimensions (the proposal's acceptance falls as K grows). Cost per example: T x (mcmc_steps + 1)
  x (N + P x pilot_particles) likelihood values (mcmc_steps averaged over the temperatures with
  ``accepted_moves``), plus the proposal's density, O(C x pilot_particles K^2) per move, with P = 2 pilots and
  C = 3 pooled fits from q, C = 2 from the defensive mixture, and P = C = 1 from the prior or without
  ``prior_pilot``. On the 2-D model of
  ``experiments/estimators.py`` (one image, 8 runs of 256 particles x 250 temperatures, a proposal of the kernel
  density estimate alone), 5 moves per temperature brought the variance of the estimate over runs down to
  that of perfectly mixing moves (the sum of the per-temperature variances); 2 moves left it 9 times larger.

A start q(z|x) that misses a posterior mode puts almost none of the path's mass there until b is near 1, and the
particles must then find the mode within few temperatures; ``prior_weight`` d starts instead from the defensive
mixture (1 - d) q + d p(z) (:func:`vae_jax.ais.annealing_path`), whose path carries prior mass to every mode from
b = 0. On the 2-D grid of ``experiments/reference_2d.py`` (8 images, 4 of them among those where q misses a mode
by 22-76 nats), the path's thermodynamic length (the integral over b of the standard deviation of its log-ratio
term) was 3.2-6.8 from (0.9 q + 0.1 p(z)), 5.8-6.8 from the prior and up to 19 from q alone; with perfectly mixing
moves the variance of the estimate grows with it. From a narrow q alone the path can also jump: the mass of
f_b moves within a few hundredths of b from q's mode to a mode of f_b between q's mean and the posterior's,
which neither pilot's particles cover (image 72 there: 0.04 of the mass at b = 0.55, 0.98 at b = 0.6), and the
independent kernel's estimate was then off by 0.4 nats or more from run to run. From q alone (``prior_weight``
0, with the prior's pilot) the tilted fit (:func:`_tilted_fit`) puts that mode of image 72 within a Gaussian's
reach (predicted mean (-0.146, -0.737) at b = 0.6, the grid's (-0.182, -0.709)); it does not predict every
such mode (image 87: the mass moves between b = 0.625 and 0.65 to (-0.48, 1.44), 0.17 from the tilt's mean,
and the acceptance there falls to 0.03-0.09). From the defensive mixture the path
contains the prior path's own distributions, which the prior's pilot follows
(``experiments/results/reference_2d_independent_prior/NOTES.md``).

Noise. With moves that mix perfectly the variance of the estimate is about (1/N) sum_t Var_{f_{b_t}}(log f_{b_t+1}
- log f_{b_t}): the schedule and N set it; moves that decorrelate slowly multiply it by roughly the number of
temperatures a particle takes to forget where it was.

Moves. With ``accepted_moves`` A (independent kernel) step t takes ceil(A / a_t) moves instead of
``mcmc_steps``, at least ``mcmc_steps`` and at most ``max_moves``, a_t the acceptance rate the start's pilot measured
at step t with the very proposal step t uses, so that each particle expects about A accepted moves wherever the
proposal suits f_b poorly. The counts are frozen with the fits before the counted run, so the estimate stays
unbiased; a pilot sets its own step t's count from its acceptance rate at step t - 1. Where q's path crosses to a
mode the proposal covers only roughly (image 87 from q alone: acceptance 0.03-0.09 between b = 0.625 and 0.65),
5 moves leave most particles where they were, the resampling copies the few that moved, and the error grows step
by step. On the 2-D model from q alone (4 runs each, 256 particles x 250 adaptive temperatures, mcmc_steps 5),
A = 1.5 took 7.6 (image 87) and 7.4 (image 13) moves per temperature on average; within 0.1 nats of quadrature:
image 87 4 / 4 runs (worst -0.055; with 5 moves 3 / 4, worst +0.452), image 13 3 / 4 (worst -0.106; with 5
moves 2 / 4); 20 moves everywhere, at 4 times the cost, 4 / 4 on both. Over the 100 reference images from q
alone, within 0.1 nats: 98 at A = 1.5 (5.19 moves per temperature) and 99 at A = 3 (7.10; README); on a
second 2-D model trained by the same command, 98 at A = 3 and 100 at A = 3 with 512 particles.

Schedule. ``schedule="sigmoid"`` is AIS's. ``schedule="adaptive"`` (independent kernel) spreads the counted
run's T steps by the path's thermodynamic length: the standard deviation s(b) of the log-ratio term at each
pilot temperature, estimated by self-normalized importance sampling from that temperature's frozen proposal
(``pilot_particles`` draws), gives the length, and :func:`length_schedule` places three quarters of the
weight on equal shares of it and one quarter on the sigmoid's spacing. The schedule is fixed before the counted
run, from the pilots' own draws, so the estimate stays unbiased. It costs (T + 1) x pilot_particles more
likelihood values and proposal densities. On the 2-D model, where q misses part of the posterior, s(b) can
change ten-fold along the path (image 72 from q: about 2 below b = 0.4, about 15 above b = 0.6), and the
sigmoid's spacing leaves the steep stretch with too few steps.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vae_jax import validation
from vae_jax.ais import annealing_path, setup_annealing, start_samples
from vae_jax.distributions import standard_normal_log_prob
from vae_jax.errors import ConfigError
from vae_jax.types import Array, ArrayLike, LogLikelihoodFn, PRNGKey


MAX_MOVES = 50  # the most moves per temperature with accepted_moves, by default


class SMCRecord(NamedTuple):
    """An SMC estimate with its diagnostics (scalars, except ``step_sizes``).

    Attributes:
      log_marginal: sum_t log mean_i w_{t,i}, a stochastic lower bound on log p(x) (its exponential is
        unbiased for p(x)).
      ess_min: the smallest effective sample size of the incremental weights over the T temperatures, as a
        fraction of N, (sum w)^2 / (N sum w^2): near 1 when each step moves the distribution little.
      acceptance: mean HMC acceptance rate over temperatures, moves and particles.
      step_sizes: [T] the frozen HMC step size of each temperature (as AIS's ``step_sizes``); zeros for the
        independent kernel, which takes none.
      moves: the counted run's moves per particle, averaged over the T temperatures: ``mcmc_steps``, or more
        with ``accepted_moves``.
    """

    log_marginal: Array
    ess_min: Array
    acceptance: Array
    step_sizes: Array
    moves: Array


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
    kernel: str = "hmc",
    pilot_particles: int = 256,
    proposal_scale: float = 1.0,
    defensive: float = 0.1,
    prior_weight: float = 0.0,
    prior_pilot: bool = True,
    schedule: str = "sigmoid",
    accepted_moves: float | None = None,
    max_moves: int = MAX_MOVES,
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
        :func:`vae_jax.ais_log_marginal` (``kernel="hmc"``).
      kernel: ``"hmc"`` or ``"independent"`` (see the module docstring).
      pilot_particles: particles of the pilot SMC whose weighted particles, frozen, make the independent
        proposals (``kernel="independent"``).
      proposal_scale: the kernel density estimate's bandwidth over Silverman's.
      defensive: d, the weight of N(0, I) in the proposal, so that its tails are never lighter than the prior's.
      prior_weight: with ``start`` q's, start from (1 - prior_weight) q + prior_weight p(z).
      prior_pilot: with a ``start`` and ``kernel="independent"``, a second pilot along the prior's path adds
        its fit to the proposal (see the module docstring); ignored otherwise.
      schedule: ``"sigmoid"`` (AIS's schedule) or ``"adaptive"`` (``kernel="independent"`` only): the counted
        run's T temperatures spread by the path's thermodynamic length, estimated from the pilots' frozen
        proposals (:func:`length_schedule`, :func:`_log_ratio_sds`).
      accepted_moves: None for ``mcmc_steps`` moves at every temperature; or (``kernel="independent"``) a
        temperature whose moves the pilot accepted at rate a < accepted_moves / mcmc_steps gets
        ceil(accepted_moves / a) moves, at most ``max_moves``, so that each particle expects about
        ``accepted_moves`` accepted moves there (see "Moves" in the module docstring).
      max_moves: the most moves per temperature with ``accepted_moves``.

    Returns:
      :class:`SMCRecord`. jit with ``log_likelihood`` and the counts static; vmap over (key, x[, start]), or, with
      ``accepted_moves``, ``lax.map``: under a vmap each temperature runs the largest of the examples' counts
      (masked, so the values are the same).
    """
    # Imported here: importing blackjax starts JAX's backend, which must wait for jax.distributed.initialize.
    import blackjax
    from blackjax.smc import resampling, tempered

    x = validation.as_float_data("x", x).astype(jnp.float32)
    validation.check_positive_int("num_particles", num_particles)
    validation.check_positive_int("mcmc_steps", mcmc_steps)
    if kernel not in ("hmc", "independent"):
        raise ConfigError(f"kernel must be 'hmc' or 'independent', not {kernel!r}")
    if schedule not in ("sigmoid", "adaptive"):
        raise ConfigError(f"schedule must be 'sigmoid' or 'adaptive', not {schedule!r}")
    if schedule == "adaptive" and kernel != "independent":
        raise ConfigError("schedule='adaptive' needs kernel='independent': the schedule is estimated from the "
                          "independent kernel's pilot proposals")
    num_moves, strategy = (lambda t, previous: mcmc_steps), {}  # BlackJAX's fixed count by default
    if accepted_moves is not None:
        if kernel != "independent":
            raise ConfigError("accepted_moves needs kernel='independent': its move counts come from that kernel's "
                              "pilot acceptance rates")
        if not (isinstance(accepted_moves, (int, float)) and accepted_moves > 0):
            raise ConfigError(f"accepted_moves must be a positive number (e.g. 1.5), not {accepted_moves!r}")
        validation.check_positive_int("max_moves", max_moves)
        if max_moves < mcmc_steps:
            raise ConfigError(f"max_moves ({max_moves}) must be at least mcmc_steps ({mcmc_steps})")
        count = lambda acceptance: jnp.clip(jnp.ceil(accepted_moves / acceptance), mcmc_steps, max_moves).astype(int)
        # A pilot sets step t's count from its own acceptance at step t - 1 (the counted run's come from the pilot).
        num_moves, strategy = (lambda t, previous: count(previous)), {"update_strategy": _take_last(max_moves)}
    pilot_key, start_key, run_key = jax.random.split(key, 3)
    if kernel == "independent" and step_sizes is None:  # no HMC moves: no step sizes to tune
        step_sizes = jnp.zeros(num_temperatures, x.dtype)
    path, betas, step_sizes = setup_annealing(pilot_key, log_likelihood, x, start, latent_dim, num_temperatures,
                                              leapfrog_steps, pilot_chains, target_acceptance, step_sizes,
                                              prior_weight)
    draw = functools.partial(start_samples, path_start=start, latent_dim=latent_dim, dtype=x.dtype,
                             prior_weight=prior_weight)
    if kernel == "hmc":
        hmc = functools.partial(blackjax.hmc.build_kernel(), num_integration_steps=leapfrog_steps)
        smc_step = tempered.build_kernel(path.log_start, path.log_ratio, hmc, blackjax.hmc.init, resampling.systematic)
        # The step to b_t moves the particles at b_{t-1}, whose step size AIS tuned (b_0 takes b_1's).
        move_sizes = jnp.concatenate([step_sizes[:1], step_sizes[:-1]])
        inverse_mass = jnp.ones((1, latent_dim), x.dtype)  # leading 1: shared by every particle
        moves = lambda state, t: {"step_size": move_sizes[t][None], "inverse_mass_matrix": inverse_mass}
    else:
        validation.check_positive_int("pilot_particles", pilot_particles)
        independent = functools.partial(_independent_move, defensive=defensive)
        build = lambda p: tempered.build_kernel(p.log_start, p.log_ratio, independent, blackjax.rmh.init,
                                                resampling.systematic, **strategy)
        smc_step = build(path)
        fit = lambda state, t: _fit_proposal(state.particles, state.weights, proposal_scale)
        pilot_key, run_key = jax.random.split(run_key)
        pilot_draw = lambda i, path_start: draw(jax.random.fold_in(start_key, 1 + i), num_chains=pilot_particles,
                                                path_start=path_start)
        pilots = 1
        if start is not None and prior_pilot:  # the prior's path first: it reaches every mode from b = 0
            prior_fits = _run(build(annealing_path(log_likelihood, x, None)), jax.random.fold_in(pilot_key, 1),
                              pilot_draw(1, None), betas, fit, num_moves)[3]
            shared_fits = [prior_fits]
            if prior_weight == 0.0:  # from q alone: the prior path's fits tilted toward q (see _tilted_fit)
                # Step t's fit is made from the particles at b_t (betas[t]), and so is its tilt.
                shared_fits.append(jax.vmap(_tilted_fit, in_axes=(0, 0, None, None))(
                    prior_fits, betas[:-1], *(jnp.asarray(v, x.dtype) for v in start)))
            # The start's pilot proposes from its own fit pooled with the shared ones, so it follows its path into
            # modes only the prior's pilot found or implies, and its fits describe them as its path weighs them.
            own_fit = fit
            fit = lambda state, t: _pool([own_fit(state, t)] + [jax.tree.map(lambda v: v[t], f) for f in shared_fits])
            pilots = 2
        # The first pilot keeps the one-pilot code's key, so a run from the prior draws as before.
        _, _, pilot_acceptance, fitted, _ = _run(build(path), pilot_key, pilot_draw(0, start), betas, fit, num_moves)
        # fitted: frozen [T, 1, C, ...]; step t's fit, made at b_{t-1}, serves step t, at the acceptance the pilot
        # measured with it (pilot_acceptance [T])
        fit_index = jnp.arange(num_temperatures)
        if schedule == "adaptive":
            length_key = jax.random.fold_in(pilot_key, pilots)  # a stream no pilot used
            pilot_betas = betas
            betas = length_schedule(betas, _log_ratio_sds(length_key, path, betas, fitted, pilot_particles,
                                                          defensive=defensive))
            # Step t's moves target b'_{t-1}: the fit of the last pilot temperature at or below it.
            fit_index = jnp.searchsorted(pilot_betas[:-1], betas[:-1], side="right") - 1
        moves = lambda state, t: {name: value[fit_index[t]] for name, value in fitted.items()}
        if accepted_moves is not None:  # frozen counts too: the pilot's acceptance with the fit step t uses
            num_moves = lambda t, previous: count(pilot_acceptance[fit_index[t]])
    z0 = draw(start_key, num_chains=num_particles)
    increments, ess, acceptance, _, counts = _run(smc_step, run_key, z0, betas, moves, num_moves)
    return SMCRecord(jnp.sum(increments), jnp.min(ess), jnp.mean(acceptance), step_sizes,
                     jnp.sum(counts).astype(x.dtype) / counts.shape[0])


def _run(smc_step, key, z0, betas, moves, num_moves):
    """The tempered SMC from particles z0 [N, K] over ``betas`` [T + 1]; ``moves(state, t)`` gives the move
    kernel's parameters for step t, ``num_moves(t, a)`` its number of moves given step t - 1's acceptance rate a
    (1 before step 0). Returns per-step log mean incremental weights, ESS fractions and acceptance rates [T], the
    parameters used and the numbers of moves [T]."""
    from blackjax.smc import tempered

    n = z0.shape[0]

    def step(carry, inputs):
        state, previous = carry
        k, beta, t = inputs
        parameters, count = moves(state, t), num_moves(t, previous)
        state, info = smc_step(k, state, count, beta, parameters)
        ess = 1.0 / (n * jnp.sum(state.weights**2))
        acceptance = jnp.mean(info.update_info.acceptance_rate)
        return (state, acceptance), (info.log_likelihood_increment, ess, acceptance, parameters,
                                     jnp.asarray(count, jnp.int32))

    state = tempered.TemperedSMCState(z0, jnp.full(n, 1.0 / n, z0.dtype), jnp.zeros((), z0.dtype))
    num_steps = betas.shape[0] - 1
    _, out = lax.scan(step, (state, jnp.ones((), z0.dtype)),
                      (jax.random.split(key, num_steps), betas[1:], jnp.arange(num_steps)))
    return out


class _MovesInfo(NamedTuple):
    acceptance_rate: Array  # a particle's acceptance rate averaged over its moves


def _take_last(max_moves: int):
    """BlackJAX's ``update_and_take_last`` update strategy with a traced number of moves, at most ``max_moves``:
    each particle takes ``num_mcmc_steps`` moves with the keys that strategy gives it (the first of
    split(key, max_moves), which equal split(key, num_mcmc_steps)) and keeps the last; its info is the acceptance
    rate averaged over its moves."""

    def strategy(mcmc_init_fn, logposterior_fn, shared_step, num_mcmc_steps, n_particles, batch_size=0):
        def kernel(key, position, step_parameters):
            keys = jax.random.split(key, max_moves)

            def body(i, carry):
                state, accepted = carry
                state, info = shared_step(keys[i], state, logposterior_fn, **step_parameters)
                return state, accepted + info.acceptance_rate

            start = (mcmc_init_fn(position, logposterior_fn), jnp.zeros((), position.dtype))
            state, accepted = lax.fori_loop(0, num_mcmc_steps, body, start)
            return state.position, _MovesInfo(accepted / num_mcmc_steps)

        return jax.vmap(kernel), n_particles

    return strategy


SIGMOID_SHARE = 0.25  # the adaptive schedule's share of temperatures kept at the sigmoid schedule's spacing


def length_schedule(betas: Array, log_ratio_sd: Array) -> Array:
    """A schedule b'_0 = 0 < ... < b'_T = 1 that spreads T steps by the path's thermodynamic length.

    With moves that mix well, the variance of SMC's estimate is about (1/N) sum_t (b_t - b_{t-1})^2 s(b_t)^2,
    s(b) the standard deviation of the log-ratio term l(z) = log p(z) + log p(x|z) - log p_0(z) under f_b; for a
    given T it is smallest when each step covers an equal share of the length L(b) = int_0^b s(b') db'.
    From s at the temperatures ``betas`` [T + 1] (``log_ratio_sd`` [T + 1]), L by the trapezoid rule, and
    b'_j = u^-1(j / T) with u(b_t) = (1 - a) L(b_t) / L(1) + a t / T, a = ``SIGMOID_SHARE``, u linear between:
    a quarter of the steps keep the spacing of ``betas``, so a stretch whose s the estimate of it misses is never
    left bare. Returns b' [T + 1].
    """
    num_steps = betas.shape[0] - 1
    length = jnp.concatenate([jnp.zeros(1, betas.dtype),
                              jnp.cumsum(0.5 * (log_ratio_sd[1:] + log_ratio_sd[:-1]) * jnp.diff(betas))])
    steps = jnp.arange(num_steps + 1, dtype=betas.dtype) / num_steps
    u = (1.0 - SIGMOID_SHARE) * length / length[-1] + SIGMOID_SHARE * steps
    return jnp.interp(steps, u, betas).at[0].set(0.0).at[-1].set(1.0)


def _log_ratio_sds(key, path, betas, fitted, num_draws, *, defensive):
    """s(b_t) for t = 0..T: the standard deviation of the path's log-ratio term under f_{b_t} (``betas``
    [T + 1]), by self-normalized importance sampling of ``num_draws`` draws from that temperature's frozen
    proposal ``fitted`` [T, 1, C, ...] (:func:`_proposal`, which covers every mode the pilots found; step t's
    fit, made from the particles of b_{t-1} whose moves it serves, serves b_{t-1}, and the last serves b_T
    too). Returns [T + 1]."""

    def one(k, beta, fit):  # fit's fields [1, C, ...]
        draw, log_g = _proposal(**{name: value[0] for name, value in fit.items()}, defensive=defensive)
        z = jax.vmap(draw)(jax.random.split(k, num_draws))
        ratio = jax.vmap(path.log_ratio)(z)
        weights = jax.nn.softmax(jax.vmap(path.log_start)(z) + beta * ratio - jax.vmap(log_g)(z))
        return jnp.sqrt(weights @ (ratio - weights @ ratio) ** 2)

    serving = jax.tree.map(lambda value: jnp.concatenate([value, value[-1:]]), fitted)  # [T + 1, 1, C, ...]
    return lax.map(lambda a: one(*a), (jax.random.split(key, betas.shape[0]), betas, serving))


def _fit_proposal(particles: Array, weights: Array, scale: float) -> dict:
    """One pilot's proposal parameters from its weighted particles [M, K], weights [M] summing to 1, each with
    leading axes [1, 1] (shared by the particles it moves; one component): a kernel density estimate's centres
    [M, K], log-weights [M] and kernel Cholesky factor [K, K] of h^2 C (C the weighted covariance with a small
    ridge, h = scale x Silverman's (4 / (ESS (K + 2)))^(1 / (K + 4))), and the Gaussian with the estimate's own
    mean [K] and covariance (1 + h^2) C (its Cholesky factor [K, K]); each factor's inverse too."""
    k = particles.shape[1]
    mean = weights @ particles
    centred = particles - mean
    cov = (weights[:, None] * centred).T @ centred + 1e-6 * jnp.eye(k, dtype=particles.dtype)
    bandwidth = scale * (4.0 / ((k + 2) / jnp.sum(weights**2))) ** (1.0 / (k + 4))
    chol = jnp.linalg.cholesky(cov)
    # The inverse factor, for the densities: XLA's CPU triangular solve with a matrix right-hand side inside
    # these vmapped scans deadlocked (all threads idle; 2026-12-07, jax 0.9 on 2 cores), where an inverse did not.
    inverse = jnp.linalg.inv(chol)
    fields = {"centres": particles, "log_weights": jnp.log(weights), "chol": bandwidth * chol,
              "chol_inv": inverse / bandwidth, "mean": mean, "wide_chol": jnp.sqrt(1.0 + bandwidth**2) * chol,
              "wide_chol_inv": inverse / jnp.sqrt(1.0 + bandwidth**2)}
    return {name: value[None, None] for name, value in fields.items()}


TILT_WIDTH = 1.5  # the tilted Gaussian's spread over its Gaussian-product covariance (kernel half; twice it wide)


def _tilted_fit(prior_fit: dict, beta: Array, start_mean: Array, start_log_var: Array) -> dict:
    """A Gaussian fit ([1, 1, ...] fields, as :func:`_fit_proposal`'s) of the start's path at temperature b,
    extrapolated from the prior path's fit there.

    The two paths' tempered densities differ by a known factor: with p_0 = q,

        f_b(z) = p(z) p(x|z)^b (q(z) / p(z))^(1 - b),

    the prior path's density times a Gaussian in z when q = N(m_q, diag s_q^2) is narrower than the prior. With
    the prior path's Gaussian n_b = N(m, W) (``prior_fit``'s ``mean`` and wide covariance), the product is
    N(m', P^-1): P = W^-1 + (1 - b) D, D = diag(max(s_q^-2 - 1, 0)), m' = P^-1 (W^-1 m + (1 - b) D_q m_q) with
    D_q = diag(s_q^-2) where s_q < 1 (0 elsewhere). Where q is far from the posterior and narrow, the start's path
    puts its mass there (between q and the posterior) over a short stretch of b, a region neither pilot's
    particles reach (``experiments/results/reference_2d_independent_prior/NOTES.md``). Both halves of the
    returned proposal are N(m', (c L)(c L)^T), L L^T = P^-1, c = ``TILT_WIDTH`` for the kernel half's (one
    centre, repeated to the fit's M) and 2 c for the wide half's. Any proposal keeps the estimate unbiased; this
    one only sends particles where the start's path may have mass.
    """
    mean = prior_fit["mean"][0, 0]  # [K]
    wide_inv = prior_fit["wide_chol_inv"][0, 0]  # W^-1 = wide_inv^T wide_inv
    q_precision = jnp.exp(-start_log_var)
    narrower = q_precision > 1.0
    tilt = (1.0 - beta) * jnp.where(narrower, q_precision - 1.0, 0.0)
    precision = wide_inv.T @ wide_inv + jnp.diag(tilt)
    linear = wide_inv.T @ (wide_inv @ mean) + (1.0 - beta) * jnp.where(narrower, q_precision * start_mean, 0.0)
    cov = jnp.linalg.inv(precision)
    tilted_mean = cov @ linear
    chol = jnp.linalg.cholesky(0.5 * (cov + cov.T))
    inverse = jnp.linalg.inv(chol)  # an inverse, not a triangular solve (see _fit_proposal)
    m = prior_fit["centres"].shape[2]
    fields = {"centres": jnp.broadcast_to(tilted_mean, (m, mean.shape[0])),
              "log_weights": jnp.full(m, -jnp.log(m), mean.dtype), "chol": TILT_WIDTH * chol,
              "chol_inv": inverse / TILT_WIDTH, "mean": tilted_mean, "wide_chol": 2 * TILT_WIDTH * chol,
              "wide_chol_inv": inverse / (2 * TILT_WIDTH)}
    return {name: value[None, None] for name, value in fields.items()}


def _pool(fits: list[dict]) -> dict:
    """C fits of one temperature ([1, 1, ...] each, :func:`_fit_proposal` or :func:`_tilted_fit`) as one proposal
    [1, C, ...] that draws each component with probability 1/C (the log-weights of each kernel density estimate
    shifted by -log C)."""
    pooled = {name: jnp.concatenate([fit[name] for fit in fits], axis=1) for name in fits[0]}
    pooled["log_weights"] = pooled["log_weights"] - jnp.log(len(fits))
    return pooled


def _proposal(centres, log_weights, chol, chol_inv, mean, wide_chol, wide_chol_inv, *, defensive):
    """The independent proposal g = (1 - defensive) (1/C) sum_c [(1/2) sum_j w_cj N(centres_cj, chol_c chol_c^T)
    + (1/2) N(mean_c, wide_chol_c wide_chol_c^T)] + defensive N(0, I) over C pilots' fits (:func:`_pool`):
    centres [C, M, K], log_weights [C, M] = log (w_cj / C), mean [C, K], lower-triangular Cholesky factors and
    their inverses [C, K, K]. Returns (draw: key -> z [K], log_density: z [K] -> log g(z))."""
    from jax.scipy.special import logsumexp

    num_fits, m, k = centres.shape

    def log_normals(z, white_centres, inverse):  # log N(z; c_j, L L^T) [M], given L^-1 = inverse, L^-1 c_j [M, K]
        y = inverse @ z - white_centres  # [M, K]: standardized offsets L^-1 (z - c_j)
        return jax.vmap(standard_normal_log_prob)(y) + jnp.sum(jnp.log(jnp.abs(jnp.diag(inverse))))

    each_fit = jax.vmap(log_normals, in_axes=(None, 0, 0))  # over the C fits
    # The centres standardized once per fit ([C, M, K]; the fit is shared by every particle it moves), so each
    # density costs one K x K product and M K subtractions, not M of them.
    white_centres = jnp.einsum("cjk,cmk->cmj", chol_inv, centres)
    white_means = jnp.einsum("cjk,ck->cj", wide_chol_inv, mean)[:, None]

    def log_density(z):
        kde = logsumexp(log_weights + each_fit(z, white_centres, chol_inv))
        gaussian = logsumexp(each_fit(z, white_means, wide_chol_inv)) - jnp.log(num_fits)
        fitted = jnp.logaddexp(kde, gaussian) - jnp.log(2.0)
        return jnp.logaddexp(jnp.log1p(-defensive) + fitted, jnp.log(defensive) + standard_normal_log_prob(z))

    # The kernels' cumulative weights [C M], once per fit: a draw picks kernel i with probability w_i by one
    # uniform u and the first i whose cumulative weight exceeds u (a categorical draw by Gumbel noise would
    # take C M random numbers per draw, most of a move's time).
    cumulative = jnp.cumsum(jnp.exp(log_weights.reshape(-1) - jnp.max(log_weights)))

    def draw(key):
        pick, which, half, kernel_key, wide_key = jax.random.split(key, 5)
        eps = jax.random.normal(kernel_key, (k,), centres.dtype)
        u = jax.random.uniform(which, (), cumulative.dtype) * cumulative[-1]
        kernel = jnp.minimum(jnp.searchsorted(cumulative, u, side="right"), num_fits * m - 1)
        c, j = jnp.divmod(kernel, m)
        kde = centres[c, j] + chol[c] @ eps
        g = jax.random.randint(jax.random.fold_in(key, 1), (), 0, num_fits)  # its own stream: C = 1 draws as before
        fitted = jnp.where(jax.random.uniform(half) < 0.5, kde, mean[g] + wide_chol[g] @ eps)
        return jnp.where(jax.random.uniform(pick) < defensive, jax.random.normal(wide_key, (k,), centres.dtype),
                         fitted)

    return draw, log_density


def _independent_move(key, state, logdensity_fn, *, defensive, **fit):
    """One independent Metropolis-Hastings move (BlackJAX's ``irmh``) of one particle toward ``logdensity_fn``,
    proposing from :func:`_proposal` with the fitted parameters ``fit``."""
    import blackjax

    draw, log_g = _proposal(**fit, defensive=defensive)
    # irmh's proposal_logdensity_fn(new, prev) is the log density of proposing prev: g(prev) for an independent one.
    return blackjax.irmh.build_kernel()(key, state, logdensity_fn, draw, lambda new, prev: log_g(prev.position))
