"""Estimates of log p(x) over a data set: the ELBO, importance sampling (with the encoder's q or a refined
one) and the naive estimator, each described by one :class:`EstimatorSpec`.

Examples are processed in fixed-size batches (the last one padded, so each estimator compiles
once) and samples in chunks, so memory is bounded for any number of samples. Example ``i`` of an
estimator uses the key ``fold_in(estimator key, i)``: results do not depend on the batch size.
"""

import contextlib
import dataclasses
import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from vae_jax import parallel
from vae_jax.config import SEED_RANGE, option, validate_fields
from vae_jax.ais import ais_log_marginal, reverse_ais_log_marginal
from vae_jax.smc import MAX_MOVES, smc_log_marginal
from vae_jax.diagnostics import KHAT_UNRELIABLE
from vae_jax.errors import ConfigError
from vae_jax.memory import check_fits
from vae_jax import measures
from vae_jax.pixels import dequantize_examples, dequantizes, to_unit_float
from vae_jax.progress import ChunkBar
from vae_jax.estimators import importance_log_marginal_stats
from vae_jax.models import VAE
from vae_jax.objectives import elbo_terms
from vae_jax.refinement import refine_posterior, refine_until_converged
from vae_jax.validation import check_positive_int
from vae_jax.shared_samples import naive_log_marginal_shared
from vae_jax.streams import DEQUANTIZE_STREAM, EVAL_STREAM
from vae_jax.types import Params, PRNGKey

# Matrix products of every estimate run in true float32. JAX's default lets a GPU use TensorFloat32 (10-bit
# mantissa) for float32 products, which shifts log p(x) by a fraction of a nat; on a CPU this changes nothing.
EVAL_MATMUL_PRECISION = "float32"


def _in_eval_precision(fn):
    """``fn``, traced and run with ``EVAL_MATMUL_PRECISION`` matrix products."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.default_matmul_precision(EVAL_MATMUL_PRECISION):
            return fn(*args, **kwargs)

    return wrapper

# fn(params, keys [B], xs [B, D]) -> {"value": [B], ...}; built by a spec from (vae, config, chunk, key).
BatchFn = Callable[[Params, jax.Array, jax.Array], dict]


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
    """Everything ``evaluate`` needs to know about one estimator, in one place.

    Attributes:
      name: as given to ``--estimators``.
      stream: its random stream, ``fold_in(evaluation key, stream)``; fixed forever.
      count: the :class:`EvalConfig` field holding its number of samples.
      batch_size, chunk_size: examples and samples evaluated at once (measured on a 2-core CPU: they keep
        the matrix products large and memory under a few hundred MB).
      build: (vae, eval config, chunk size, estimator key, on_chunk=None) -> a :data:`BatchFn`; ``on_chunk``
        (for a progress bar) is called after each chunk of samples, where the estimator has chunks.
    """

    name: str
    stream: int
    count: str
    batch_size: int
    chunk_size: int
    build: Callable[..., BatchFn]


def _per_example(one):
    """A BatchFn from ``one(params, key, x) -> {name: scalar}``."""
    return jax.vmap(one, in_axes=(None, 0, 0))


def _one_at_a_time(one):
    """A BatchFn that runs ``one(params, key, x) -> {name: scalar}`` on the examples in turn (``lax.map``): where
    ``one`` loops a number of times that depends on the example, a vmap would run every example's loop as many
    times as the batch's longest (the same values, at that cost)."""
    return lambda params, keys, xs: jax.lax.map(lambda kx: one(params, *kx), (keys, xs))


def _build_elbo(vae: VAE, config: "EvalConfig", chunk: int, key, on_chunk=None) -> BatchFn:
    def one(params, key, x):
        mean, log_var = vae.encode(params, x)
        rec, kl = elbo_terms(key, vae.likelihood_fn(params), x, mean, log_var, config.elbo_samples, chunk,
                             on_chunk=on_chunk)
        return {"value": rec - kl, "reconstruction": rec, "kl": kl}

    return _per_example(one)


def _stats(stats) -> dict:
    return {"value": stats.log_marginal, "mc_stderr": stats.stderr, "ess": stats.ess, "khat": stats.khat}


def _build_importance(vae: VAE, config: "EvalConfig", chunk: int, key, on_chunk=None) -> BatchFn:
    def one(params, key, x):
        mean, log_var = vae.encode(params, x)
        return _stats(importance_log_marginal_stats(key, vae.likelihood_fn(params), x, mean, log_var,
                                                    config.num_samples, chunk, on_chunk=on_chunk))

    return _per_example(one)


def _build_importance_refined(vae: VAE, config: "EvalConfig", chunk: int, key, on_chunk=None) -> BatchFn:
    """Importance sampling with q refined for each example (:func:`vae_jax.refine_posterior`), and the
    ELBO of the encoder's q and of the refined q on the same samples (their difference is the
    amortization gap)."""

    def one(params, key, x):
        ll = vae.likelihood_fn(params)
        mean, log_var = vae.encode(params, x)
        refine_key, is_key, elbo_key = (jax.random.fold_in(key, i) for i in range(3))
        if config.refine_patience is None:
            refined = refine_posterior(refine_key, ll, x, mean, log_var, config.refine_steps,
                                       learning_rate=config.refine_learning_rate)
            steps = jnp.asarray(config.refine_steps, jnp.int32)
        else:
            *refined, steps = refine_until_converged(refine_key, ll, x, mean, log_var, config.refine_steps,
                                                     learning_rate=config.refine_learning_rate,
                                                     patience=config.refine_patience)
        elbo_of = lambda q: jnp.subtract(*elbo_terms(elbo_key, ll, x, *q, config.elbo_samples, chunk))
        stats = importance_log_marginal_stats(is_key, ll, x, *refined, config.num_samples, chunk, on_chunk=on_chunk)
        return {**_stats(stats), "amortized_elbo": elbo_of((mean, log_var)), "refined_elbo": elbo_of(refined),
                "refine_steps": steps}

    return _per_example(one)


def _build_naive(vae: VAE, config: "EvalConfig", chunk: int, key, on_chunk=None) -> BatchFn:
    """All examples share the prior samples of the estimator's key, decoded once per chunk
    (:func:`vae_jax.shared_samples.naive_log_marginal_shared`); the per-example keys are unused."""

    def batch(params, keys, xs):
        matrix = functools.partial(vae.log_likelihood_matrix, params)
        return _stats(naive_log_marginal_shared(key, matrix, xs, vae.config.latent_dim, config.naive_samples, chunk,
                                                on_chunk=on_chunk))

    return batch


def _ais_start(vae: VAE, config: "EvalConfig", params, x):
    return vae.encode(params, x) if config.ais_start == "q" else None


def _ais_options(config: "EvalConfig") -> dict:
    return {"leapfrog_steps": config.leapfrog_steps,
            "prior_weight": config.start_prior_weight if config.ais_start == "q" else 0.0}


def _build_ais(vae: VAE, config: "EvalConfig", chunk: int, key, on_chunk=None) -> BatchFn:
    """Forward AIS (:func:`vae_jax.ais_log_marginal`), step sizes tuned per example by a pilot run."""

    def one(params, key, x):
        record = ais_log_marginal(key, vae.likelihood_fn(params), x, vae.config.latent_dim, config.ais_chains,
                                  config.ais_temperatures, start=_ais_start(vae, config, params, x),
                                  **_ais_options(config))
        return {"value": record.log_marginal, "mc_stderr": record.stderr, "ess": record.ess,
                "acceptance": record.acceptance}

    return _per_example(one)


def _build_smc(vae: VAE, config: "EvalConfig", chunk: int, key, on_chunk=None) -> BatchFn:
    """Tempered SMC (:func:`vae_jax.smc_log_marginal`) along AIS's path and schedule, with ``smc_kernel``'s moves."""

    def one(params, key, x):
        record = smc_log_marginal(key, vae.likelihood_fn(params), x, vae.config.latent_dim, config.smc_particles,
                                  config.smc_temperatures, start=_ais_start(vae, config, params, x),
                                  kernel=config.smc_kernel, mcmc_steps=config.smc_moves,
                                  schedule=config.smc_schedule, accepted_moves=config.smc_accepted_moves,
                                  **_ais_options(config))
        return {"value": record.log_marginal, "ess_min": record.ess_min, "acceptance": record.acceptance,
                "moves_per_temperature": record.moves}

    # Accepted moves vary the number of moves from example to example and temperature to temperature.
    return _per_example(one) if config.smc_accepted_moves is None else _one_at_a_time(one)


CERTIFIED_GAP = 0.1
"""BDMC's rule here: AIS settings are *certified* on a model when the mean gap between reverse and forward AIS on
images simulated from it is below this many nats. It certifies the settings on simulated data only (a start that
misses a posterior mode of a real image is not seen), and a mean over few images is itself noisy."""


def certified(gap_mean: float) -> bool:
    """Whether a mean BDMC gap (nats) passes :data:`CERTIFIED_GAP`."""
    return bool(gap_mean < CERTIFIED_GAP)


@_in_eval_precision
def bdmc(vae: VAE, params: Params, key: PRNGKey, num_examples: int, config: "EvalConfig",
         progress: bool = False) -> dict:
    """Bidirectional Monte Carlo on ``num_examples`` examples simulated from the model.

    (z, x) ~ p(z) p(x|z) makes z an exact posterior sample of x; forward AIS from the prior (or q) is a
    stochastic lower bound on log p(x), reverse AIS from z an upper bound, both with ``config``'s AIS
    settings. Their gap bounds the error of forward AIS with those settings on such data.

    Returns:
      ``{"num_examples", "forward": {mean, ...}, "reverse": {mean, ...}, "gap": {mean, stderr, median, quartiles,
      max, per_example} (:func:`summarize`), "certified" (the mean gap below :data:`CERTIFIED_GAP`),
      "certified_below", "settings"}``.
    """
    num_examples = check_positive_int("num_examples", num_examples)
    simulate_key, run_key = jax.random.split(key)
    simulate = jax.jit(lambda k: jax.vmap(lambda k_i: vae.simulate(params, k_i))(jax.random.split(k, num_examples)))
    simulate = simulate.lower(simulate_key).compile()
    check_fits(simulate, f"simulating {num_examples:,} examples", "lower --num-examples")
    z, xs = simulate(simulate_key)

    def one(params, key, x, z_exact):
        ll, start = vae.likelihood_fn(params), _ais_start(vae, config, params, x)
        forward_key, reverse_key = jax.random.split(key)
        forward = ais_log_marginal(forward_key, ll, x, vae.config.latent_dim, config.ais_chains,
                                   config.ais_temperatures, start=start, **_ais_options(config))
        reverse = reverse_ais_log_marginal(reverse_key, ll, x, z_exact[None], config.ais_temperatures, start=start,
                                           step_sizes=forward.step_sizes, **_ais_options(config))
        return {"value": forward.log_marginal, "reverse": reverse.log_marginal, "acceptance": forward.acceptance}

    d = xs.shape[1]  # each row carries x and its z through the batches
    fn = jax.jit(lambda keys, rows: jax.vmap(functools.partial(one, params))(keys, rows[:, :d], rows[:, d:]))
    indexed = np.concatenate([np.asarray(xs), np.asarray(z)], axis=1)
    compile_checked(fn, run_key, indexed, 100, f"forward and reverse AIS with {config.ais_chains} chains",
                    "lower --ais-chains")
    values = map_in_batches(fn, run_key, indexed, 100, progress="bdmc" if progress else None)
    gap = values["reverse"] - values["value"]
    return {"num_examples": num_examples,
            "forward": {"mean": float(np.mean(values["value"])), "acceptance": float(np.mean(values["acceptance"]))},
            "reverse": {"mean": float(np.mean(values["reverse"]))},
            "gap": {**summarize({"value": gap}), "max": float(np.max(gap)), "per_example": gap.tolist()},
            "certified": certified(float(np.mean(gap))), "certified_below": CERTIFIED_GAP,
            "settings": {"ais_chains": config.ais_chains, "ais_temperatures": config.ais_temperatures,
                         "leapfrog_steps": config.leapfrog_steps, "ais_start": config.ais_start}}


SPECS = (
    EstimatorSpec("elbo", 0, "elbo_samples", 500, 50, _build_elbo),
    EstimatorSpec("importance", 1, "num_samples", 64, 250, _build_importance),
    EstimatorSpec("naive", 2, "naive_samples", 500, 2000, _build_naive),
    EstimatorSpec("importance_refined", 3, "num_samples", 64, 250, _build_importance_refined),
    EstimatorSpec("ais", 4, "ais_chains", 100, 0, _build_ais),
    EstimatorSpec("smc", 5, "smc_particles", 100, 0, _build_smc),
)
ESTIMATORS = tuple(spec.name for spec in SPECS)
SPEC = {spec.name: spec for spec in SPECS}
DEFAULT_ESTIMATORS = ("elbo", "importance", "naive")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What ``vae-jax evaluate`` computes; each field is a command-line option."""

    split: str = option("test", "TFDS split to evaluate, e.g. test or test[:1000]")
    estimators: tuple[str, ...] = option(DEFAULT_ESTIMATORS, "comma-separated estimators", choices=ESTIMATORS)
    num_samples: int = option(5000, "K for importance sampling", positive=True)
    naive_samples: int = option(100_000, "M for the naive estimator", positive=True)
    elbo_samples: int = option(10, "z samples per example for the ELBO", positive=True)
    ais_chains: int = option(16, "AIS: independent annealing chains per example", positive=True)
    ais_temperatures: int = option(1000, "AIS: temperatures of the sigmoid schedule (one HMC move each)",
                                   positive=True)
    leapfrog_steps: int = option(10, "AIS and SMC: leapfrog steps per HMC move", positive=True)
    ais_start: str = option("prior", "AIS and SMC: anneal from the prior, or from the encoder's q(z|x)",
                            choices=("prior", "q"))
    start_prior_weight: float = option(0.0, "AIS and SMC with --ais-start q: start from the defensive mixture "
                                       "(1 - d) q(z|x) + d p(z) with this d, so that the path puts mass on "
                                       "posterior modes q misses (e.g. 0.1)", range=(0.0, 1.0))
    smc_particles: int = option(64, "SMC: particles per example", positive=True)
    smc_temperatures: int = option(200, "SMC: temperatures of the sigmoid schedule (resampling and --smc-moves "
                                   "moves at each)", positive=True)
    smc_kernel: str = option("hmc", "SMC: the moves, local HMC, or independent Metropolis-Hastings proposals fitted "
                             "to pilot runs' particles, from the start's path and, with --ais-start q, the "
                             "prior's too (cross between modes; for low latent dimensions)",
                             choices=("hmc", "independent"))
    smc_moves: int = option(1, "SMC: moves per particle at each temperature", positive=True)
    smc_accepted_moves: float | None = option(None, "SMC with --smc-kernel independent: raise a temperature's "
                                              "moves above --smc-moves where the pilot's acceptance rate a is low, "
                                              f"to ceil(this / a), at most {MAX_MOVES}, so that each particle "
                                              "expects this many accepted moves (e.g. 1.5; for a start whose path "
                                              "crosses between modes, e.g. q alone)", positive=True)
    smc_schedule: str = option("sigmoid", "SMC: the counted run's temperatures, AIS's sigmoid schedule, or (with "
                               "--smc-kernel independent) spread by the path's thermodynamic length as the pilots' "
                               "proposals estimate it (for a start whose path changes fast mid-way, e.g. q alone)",
                               choices=("sigmoid", "adaptive"))
    refine_steps: int = option(100, "Adam steps refining each example's q (importance_refined); with "
                               "--refine-patience, the most it may take", positive=True)
    refine_patience: int | None = option(None, "refine each q until the mean -ELBO of a window of 100 Adam steps "
                                         "has not improved on its best for this many windows in a row (Cremer et "
                                         "al.'s rule; e.g. 10 with --refine-steps 100000)", positive=True)
    refine_learning_rate: float = option(1e-2, "Adam step size of the refinement", positive=True)
    chunk_size: int | None = option(None, "samples evaluated at once per example, bounding memory (default: "
                                    + ", ".join(f"{s.chunk_size} {s.name}" for s in SPECS if s.chunk_size) + "). "
                                    "With the 784-200-200 MLP, importance sampling takes about 6.7 KB per sample "
                                    "for each of 64 examples at once (chunk 250: 100 MiB, 1000: 410 MiB); the naive "
                                    "estimator shares its samples between examples (2000: 20 MiB). What the "
                                    "estimators need is checked against the free memory before any work",
                                    positive=True)
    max_examples: int | None = option(None, "evaluate only the first N examples of the split", positive=True)
    seed: int = option(0, "seed of the estimators' randomness", range=SEED_RANGE)

    def __post_init__(self):
        names = tuple(dict.fromkeys(self.estimators))  # in the order given, each once
        object.__setattr__(self, "estimators", names)
        if not names:
            raise ConfigError(f"no estimator given; choose one or more of {','.join(ESTIMATORS)}.")
        validate_fields(self)
        if self.smc_schedule == "adaptive" and self.smc_kernel != "independent":
            raise ConfigError("--smc-schedule adaptive needs --smc-kernel independent: the schedule is estimated "
                              "from that kernel's pilot proposals.")
        if self.smc_accepted_moves is not None and self.smc_kernel != "independent":
            raise ConfigError("--smc-accepted-moves needs --smc-kernel independent: the move counts come from that "
                              "kernel's pilot acceptance rates.")


def evaluation_key(seed: int) -> PRNGKey:
    """The key ``vae-jax evaluate --seed SEED`` uses; pass it to :func:`evaluate` to reproduce its numbers."""
    return jax.random.fold_in(jax.random.key(seed), EVAL_STREAM)


def padded_batch_size(batch_size: int, n: int) -> int:
    """The batch :func:`map_in_batches` runs: at most ``n``, rounded up to a multiple of the devices."""
    devices = jax.device_count()
    return -(-min(batch_size, n) // devices) * devices


def compile_checked(fn, key: PRNGKey, images: np.ndarray, batch_size: int, what: str, advice: str):
    """Compiles ``fn`` for the batches :func:`map_in_batches` will give it (jit caches the result) and
    raises :class:`vae_jax.errors.ResourceError` if it needs more memory than is free."""
    batch = padded_batch_size(batch_size, images.shape[0])
    mesh = parallel.data_mesh(batch)
    keys = parallel.batch_spec((batch,), key.dtype, mesh)
    xs = parallel.batch_spec((batch, *images.shape[1:]), to_unit_float(jnp.asarray(images[:1])).dtype, mesh)
    check_fits(fn.lower(keys, xs).compile(), f"{what} ({batch} examples at once)", advice)


def map_in_batches(fn, key: PRNGKey, images: np.ndarray, batch_size: int, *, progress: str | None = None,
                   dequantize_key: PRNGKey | None = None, first_index: int = 0) -> dict[str, np.ndarray]:
    """Applies ``fn(keys [B], xs [B, D]) -> {name: [B]}`` to ``images`` [N, D] in padded batches.

    ``images`` may be stored as bool, uint8 or float (:mod:`vae_jax.pixels`): each batch is converted to
    inputs in [0, 1] on the device, so a large set is never held as float32. With ``dequantize_key``, 8-bit
    example ``i`` is dequantized with ``fold_in(dequantize_key, i)`` instead (:func:`vae_jax.pixels.dequantize`).

    Example ``i`` gets ``fold_in(key, i)``. With ``first_index`` s, ``images`` are examples s, s + 1, ... of a
    larger set, and each gets the key (and dequantization) it has there: a set mapped in parts gives the values it
    gives mapped whole. With ``progress`` (a label), a bar over the examples shows the rate and the time left.
    Returns ``{name: [N]}`` as NumPy arrays.
    """
    n = images.shape[0]
    batch_size = padded_batch_size(batch_size, n)
    mesh = parallel.data_mesh(batch_size)
    outputs = []
    with tqdm(total=n, desc=progress, unit="ex", disable=progress is None, leave=False) as bar:
        for start in range(0, n, batch_size):
            local = np.minimum(np.arange(start, start + batch_size), n - 1)  # pad the last batch: repeat the last
            xs, index = images[local], first_index + local
            keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.asarray(index))
            if dequantize_key is None:
                xs = to_unit_float(jnp.asarray(xs))  # stored images (bool, uint8, float) -> inputs, on the device
            else:
                xs = dequantize_examples(dequantize_key, jnp.asarray(index), jnp.asarray(xs))
            xs, keys = parallel.shard_batch(xs, mesh), parallel.shard_batch(keys, mesh)
            outputs.append(parallel.to_host(fn(keys, xs)))
            bar.update(min(batch_size, n - start))
    merged = {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}
    return {name: value[:n] for name, value in merged.items()}


def make_estimator_fns(vae: VAE, params: Params, key: PRNGKey, config: "EvalConfig | None" = None, *,
                       chunk_sizes: dict[str, int] | None = None, on_chunk: dict | None = None, **counts) -> dict:
    """Jitted ``(keys [B], xs [B, D]) -> {name: [B]}`` for each estimator, ``params`` bound.

    Args:
      key: the evaluation key; estimator ``name`` draws from ``fold_in(key, SPEC[name].stream)``.
      config: the counts (``elbo_samples``, ``num_samples``, ...); keyword ``counts`` override its fields.
      chunk_sizes: per-estimator samples evaluated at once (default: ``config.chunk_size``, then the spec's).
      on_chunk: per-estimator host callbacks called after each chunk of samples (progress bars).
    """
    config = dataclasses.replace(config or EvalConfig(), **counts)
    fns = {}
    for spec in SPECS:
        chunk = (chunk_sizes or {}).get(spec.name) or config.chunk_size or spec.chunk_size
        # params closed over (constants of the compiled function): they then go wherever the batch goes,
        # one device or a mesh of several.
        build = spec.build(vae, config, chunk, jax.random.fold_in(key, spec.stream), (on_chunk or {}).get(spec.name))
        fns[spec.name] = jax.jit(functools.partial(build, params))
    return fns


def summarize(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over examples, its standard error over examples, median and quartiles, and averaged diagnostics.

    ``mc_stderr`` combines the examples' Monte Carlo errors as if independent; for the naive
    estimator, whose examples share prior samples, it is an approximation. ``khat_above_0.7`` is the
    fraction of examples whose weights have a Pareto k-hat above 0.7: for those, the Monte Carlo
    standard error and the ESS are not valid measures of accuracy (``mc_stderr_reliable`` and
    ``ess_mean_reliable`` leave them out).
    """
    v = values["value"]
    out = {"mean": float(np.mean(v)), "stderr": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"),
           "median": float(np.median(v)), "quartiles": [float(q) for q in np.percentile(v, [25, 75])]}
    if "mc_stderr" in values:
        # Monte Carlo error of the mean over examples, treating the examples' estimates as independent.
        out["mc_stderr"] = float(np.sqrt(np.sum(values["mc_stderr"] ** 2)) / len(v))
        out["ess_mean"] = float(np.mean(values["ess"]))
    if "khat" in values and not np.all(np.isnan(values["khat"])):
        reliable = values["khat"] <= KHAT_UNRELIABLE
        out["khat_median"] = float(np.nanmedian(values["khat"]))
        out["khat_above_0.7"] = float(np.mean(values["khat"] > KHAT_UNRELIABLE))
        if np.any(reliable):
            out["mc_stderr_reliable"] = float(np.sqrt(np.sum(values["mc_stderr"][reliable] ** 2)) / np.sum(reliable))
            out["ess_mean_reliable"] = float(np.mean(values["ess"][reliable]))
    for extra in ("reconstruction", "kl", "acceptance", "ess_min", "refine_steps", "moves_per_temperature"):
        if extra in values:
            out[extra] = float(np.mean(values[extra]))
    return out


@_in_eval_precision
def evaluate(vae: VAE, params: Params, images: np.ndarray, key: PRNGKey, config: "EvalConfig | None" = None, *,
             batch_size: int | None = None, report=None, progress: bool = False, data_kind: str | None = None,
             keep_values: bool = False, **options) -> dict:
    """Runs the chosen estimators over ``images`` [N, D] and summarizes each in nats per example.

    Args:
      key: the evaluation key (``evaluation_key(seed)`` reproduces ``vae-jax evaluate --seed``).
      config: what to compute (:class:`EvalConfig`); keyword ``options`` override its fields
        (``estimators``, ``num_samples``, ``chunk_size``, ...).
      batch_size: examples evaluated at once by the per-example estimators (default: each spec's).
      report: called as ``report(name, summary)`` after each estimator.
      progress: show a progress bar over the examples for each estimator.
      data_kind: what ``images`` hold (:mod:`vae_jax.pixels`); default ``"uint8"`` for images stored as uint8.
        On 8-bit data a Gaussian model is evaluated on one dequantization of each image (the same for every
        estimator), its estimates shifted by -D log 256 to bound log P(x) (:mod:`vae_jax.measures`), and every
        estimator also reports ``bits_per_dim`` (and its ``bits_per_dim_stderr``).
      keep_values: also return each estimator's per-example estimates, ``"per_example"`` [N] (a list).

    Returns:
      ``{"num_examples", "<estimator>": {"num_samples", "mean", "stderr", ...}, "seconds": {...}}`` where
      ``mean`` is the average log p(x) estimate and ``stderr`` its standard error over examples; the
      sampling estimators add ``mc_stderr``, ``ess_mean`` and the k-hat summary; with
      ``importance_refined``, ``"gaps"`` holds the amortization and approximation gaps. ``"measure"`` says
      what the numbers are (a probability, a bound on one, or a density).

    Matrix products run in float32 on every backend (``EVAL_MATMUL_PRECISION``), not a GPU's TensorFloat32.
    """
    config = dataclasses.replace(config or EvalConfig(), **options)
    n = images.shape[0]
    kind = data_kind or ("uint8" if images.dtype == np.uint8 else None)
    likelihood, dim = vae.config.likelihood, vae.config.data_dim
    offset = measures.log_probability_offset(kind, likelihood, dim)
    dequantize_key = jax.random.fold_in(key, DEQUANTIZE_STREAM) if dequantizes(kind, likelihood) else None
    chunks = {spec.name: config.chunk_size or spec.chunk_size for spec in SPECS}
    sizes = {name: batch_size if batch_size and name != "naive" else SPEC[name].batch_size for name in config.estimators}
    counts = {name: getattr(config, SPEC[name].count) for name in config.estimators}
    num_chunks = {name: -(-counts[name] // min(chunks[name], counts[name])) if SPEC[name].chunk_size else 1
                  for name in config.estimators}
    # A split that is one batch shows its progress over the chunks of samples, when it has several.
    chunk_bars = {name: ChunkBar() for name in config.estimators
                  if progress and num_chunks[name] > 1 and padded_batch_size(sizes[name], n) >= n}
    fns = make_estimator_fns(vae, params, key, config, chunk_sizes=chunks,
                             on_chunk={name: bar.tick for name, bar in chunk_bars.items()})
    for name in config.estimators:  # a size that cannot fit fails here, before any estimator runs
        spec = SPEC[name]
        at_once = f"{chunks[name]} samples" if spec.chunk_size else f"{counts[name]} {spec.count.split('_')[1]}"
        compile_checked(fns[name], jax.random.fold_in(key, spec.stream), images, sizes[name],
                        f"{name} with {at_once} per example", "lower --chunk-size" if spec.chunk_size else
                        f"lower --{spec.count.replace('_', '-')}")
    result = {"num_examples": int(n), "measure": measures.describe(kind, likelihood), "seconds": {}}
    per_example = {}
    for name in config.estimators:
        spec, start, size = SPEC[name], time.perf_counter(), sizes[name]
        with chunk_bars[name].open(num_chunks[name], name) if name in chunk_bars else contextlib.nullcontext():
            values = map_in_batches(fns[name], jax.random.fold_in(key, spec.stream), images, size,
                                    progress=name if progress and name not in chunk_bars else None,
                                    dequantize_key=dequantize_key)
        result["seconds"][name] = time.perf_counter() - start
        values = {k: v + offset if k in SHIFTED else v for k, v in values.items()}
        result[name] = {"num_samples": counts[name], **summarize(values)}
        if measures.reports_bits(kind, likelihood):
            result[name].update(bits_per_dim=measures.bits_per_dim(result[name]["mean"], dim),
                                bits_per_dim_stderr=result[name]["stderr"] / (dim * np.log(2.0)))
        if name == "ais":  # num_samples is the number of chains
            result[name].update(num_chains=config.ais_chains, num_temperatures=config.ais_temperatures,
                                leapfrog_steps=config.leapfrog_steps, start=config.ais_start,
                                start_prior_weight=_ais_options(config)["prior_weight"])
        if name == "smc":
            result[name].update(num_particles=config.smc_particles, num_temperatures=config.smc_temperatures,
                                leapfrog_steps=config.leapfrog_steps, start=config.ais_start, kernel=config.smc_kernel,
                                moves=config.smc_moves, accepted_moves=config.smc_accepted_moves,
                                schedule=config.smc_schedule,
                                start_prior_weight=_ais_options(config)["prior_weight"])
        per_example[name] = values
        if keep_values:
            result[name]["per_example"] = np.asarray(values["value"]).tolist()
        if report is not None:
            report(name, result[name])
    if "importance_refined" in per_example:
        result["gaps"] = gaps(per_example)
    return result


SHIFTED = ("value", "reconstruction", "amortized_elbo", "refined_elbo")  # log p(x) terms a dequantization offsets


def gaps(per_example: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Amortization gap (refined ELBO - amortized ELBO) and approximation gap (the best log p(x) estimate
    per example, of those computed, - refined ELBO), in nats (Cremer et al. 2018): averages, and each
    example's in ``per_example``."""
    refined = per_example["importance_refined"]
    best = np.max([v["value"] for name, v in per_example.items() if name != "elbo"], axis=0)
    amortization, approximation = refined["refined_elbo"] - refined["amortized_elbo"], best - refined["refined_elbo"]
    return {"amortization": float(np.mean(amortization)), "approximation": float(np.mean(approximation)),
            "amortized_elbo": float(np.mean(refined["amortized_elbo"])),
            "refined_elbo": float(np.mean(refined["refined_elbo"])),
            "per_example": {"amortization": amortization.tolist(), "approximation": approximation.tolist()}}
