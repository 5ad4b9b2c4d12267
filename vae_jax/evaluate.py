"""Estimates of log p(x) over a data set: the ELBO, importance sampling and the naive estimator.

Examples are processed in fixed-size batches (the last one padded, so each estimator compiles
once) and samples in chunks, so memory is bounded for any number of samples. Example ``i`` uses the
key ``fold_in(key, i)``: results do not depend on the batch size.
"""

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from vae_jax import parallel
from vae_jax.config import SEED_RANGE, option, validate_fields
from vae_jax.diagnostics import KHAT_UNRELIABLE
from vae_jax.errors import ConfigError
from vae_jax.estimators import importance_log_marginal_stats
from vae_jax.models import VAE
from vae_jax.objectives import elbo_terms
from vae_jax.shared_samples import naive_log_marginal_shared
from vae_jax.streams import ESTIMATOR_STREAMS, EVAL_STREAM
from vae_jax.types import Params, PRNGKey

ESTIMATORS = tuple(ESTIMATOR_STREAMS)
# Measured on a 2-core CPU: these keep the matrix products large and memory under a few hundred MB.
BATCH_SIZES = {"elbo": 500, "importance": 64, "naive": 500}  # examples evaluated at once
CHUNK_SIZES = {"elbo": 50, "importance": 250, "naive": 2000}  # samples evaluated at once


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What ``vae-jax evaluate`` computes; each field is a command-line option."""

    split: str = option("test", "TFDS split to evaluate, e.g. test or test[:1000]")
    estimators: tuple[str, ...] = option(ESTIMATORS, "comma-separated estimators", choices=ESTIMATORS)
    num_samples: int = option(5000, "K for importance sampling", positive=True)
    naive_samples: int = option(100_000, "M for the naive estimator", positive=True)
    elbo_samples: int = option(10, "z samples per example for the ELBO", positive=True)
    chunk_size: int | None = option(None, "samples evaluated at once, bounding memory (default: "
                                    + ", ".join(f"{v} {k}" for k, v in CHUNK_SIZES.items()) + ")", positive=True)
    max_examples: int | None = option(None, "evaluate only the first N examples of the split", positive=True)
    seed: int = option(0, "seed of the estimators' randomness", range=SEED_RANGE)

    def __post_init__(self):
        names = tuple(dict.fromkeys(self.estimators))  # in the order given, each once
        object.__setattr__(self, "estimators", names)
        if not names:
            raise ConfigError(f"no estimator given; choose one or more of {','.join(ESTIMATORS)}.")
        validate_fields(self)

    def counts(self) -> dict[str, int]:
        return {"elbo": self.elbo_samples, "importance": self.num_samples, "naive": self.naive_samples}


def evaluation_key(seed: int) -> PRNGKey:
    """The key ``vae-jax evaluate --seed SEED`` uses; pass it to :func:`evaluate` to reproduce its numbers."""
    return jax.random.fold_in(jax.random.key(seed), EVAL_STREAM)


def map_in_batches(fn, key: PRNGKey, images: np.ndarray, batch_size: int, *,
                   progress: str | None = None) -> dict[str, np.ndarray]:
    """Applies ``fn(keys [B], xs [B, D]) -> {name: [B]}`` to ``images`` [N, D] in padded batches.

    Example ``i`` gets ``fold_in(key, i)``. With ``progress`` (a label), a bar over the examples shows
    the rate and the time left. Returns ``{name: [N]}`` as NumPy arrays.
    """
    n = images.shape[0]
    devices = jax.device_count()
    batch_size = -(-min(batch_size, n) // devices) * devices  # a multiple of the devices
    mesh = parallel.data_mesh(batch_size)
    outputs = []
    with tqdm(total=n, desc=progress, unit="ex", disable=progress is None, leave=False) as bar:
        for start in range(0, n, batch_size):
            index = np.arange(start, start + batch_size)
            xs = images[np.minimum(index, n - 1)]  # pad the last batch by repeating the last example
            keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.asarray(index))
            xs, keys = parallel.shard_batch(jnp.asarray(xs), mesh), parallel.shard_batch(keys, mesh)
            outputs.append(parallel.to_host(fn(keys, xs)))
            bar.update(min(batch_size, n - start))
    merged = {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}
    return {name: value[:n] for name, value in merged.items()}


def make_estimator_fns(vae: VAE, params: Params, naive_key: PRNGKey, *, elbo_samples: int, num_samples: int,
                       naive_samples: int, chunk_size: int | None = None,
                       naive_chunk_size: int | None = None, elbo_chunk_size: int | None = None) -> dict:
    """Jitted ``(keys [B], xs [B, D]) -> {name: [B]}`` for each estimator, params closed over.

    ``chunk_size`` bounds the importance samples evaluated at once, ``naive_chunk_size`` the shared
    prior samples and ``elbo_chunk_size`` the ELBO's samples (each defaults to ``chunk_size``, then
    to ``CHUNK_SIZES``).

    The naive estimator ignores the per-example keys: all examples share the prior samples of
    ``naive_key``, decoded once per chunk (:func:`vae_jax.shared_samples.naive_log_marginal_shared`).
    """
    ll = vae.likelihood_fn(params)
    chunks = {name: given or chunk_size or CHUNK_SIZES[name] for name, given in
              (("elbo", elbo_chunk_size), ("importance", None), ("naive", naive_chunk_size))}

    def elbo_one(key, x):
        mean, log_var = vae.encode(params, x)
        rec, kl = elbo_terms(key, ll, x, mean, log_var, elbo_samples, chunks["elbo"])
        return {"value": rec - kl, "reconstruction": rec, "kl": kl}

    def importance_one(key, x):
        mean, log_var = vae.encode(params, x)
        stats = importance_log_marginal_stats(key, ll, x, mean, log_var, num_samples, chunks["importance"])
        return {"value": stats.log_marginal, "mc_stderr": stats.stderr, "ess": stats.ess, "khat": stats.khat}

    def naive_batch(keys, xs):
        matrix = functools.partial(vae.log_likelihood_matrix, params)
        stats = naive_log_marginal_shared(naive_key, matrix, xs, vae.config.latent_dim, naive_samples,
                                          chunks["naive"])
        return {"value": stats.log_marginal, "mc_stderr": stats.stderr, "ess": stats.ess, "khat": stats.khat}

    return {"elbo": jax.jit(jax.vmap(elbo_one)), "importance": jax.jit(jax.vmap(importance_one)),
            "naive": jax.jit(naive_batch)}


def summarize(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over examples, its standard error over examples, and averaged diagnostics.

    ``mc_stderr`` combines the examples' Monte Carlo errors as if independent; for the naive
    estimator, whose examples share prior samples, it is an approximation. ``khat_above_0.7`` is the
    fraction of examples whose weights have a Pareto k-hat above 0.7: for those, the Monte Carlo
    standard error and the ESS are not valid measures of accuracy (``mc_stderr_reliable`` and
    ``ess_mean_reliable`` leave them out).
    """
    v = values["value"]
    out = {"mean": float(np.mean(v)), "stderr": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")}
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
    for extra in ("reconstruction", "kl"):
        if extra in values:
            out[extra] = float(np.mean(values[extra]))
    return out


def evaluate(vae: VAE, params: Params, images: np.ndarray, key: PRNGKey, *,
             estimators=EvalConfig.estimators, elbo_samples: int = EvalConfig.elbo_samples,
             num_samples: int = EvalConfig.num_samples, naive_samples: int = EvalConfig.naive_samples,
             chunk_size: int | None = None, batch_size: int | None = None, report=None,
             progress: bool = False) -> dict:
    """Runs the chosen estimators over ``images`` [N, D] and summarizes each in nats per example.

    Args:
      chunk_size: samples evaluated at once by every estimator (default ``CHUNK_SIZES``).
      batch_size: examples evaluated at once by the importance estimator (default ``BATCH_SIZES``).
      report: called as ``report(name, summary)`` after each estimator.
      progress: show a progress bar over the examples for each estimator.

    Returns:
      ``{"num_examples", "elbo": {...}, "importance": {"num_samples", ...}, "naive": {...}, "seconds": {...}}``
      where each estimator has ``mean`` (average log p(x) estimate) and ``stderr`` (over examples),
      and the sampling estimators also ``mc_stderr`` and ``ess_mean``.
    """
    config = EvalConfig(estimators=tuple(estimators), elbo_samples=elbo_samples, num_samples=num_samples,
                        naive_samples=naive_samples, chunk_size=chunk_size)
    keys = {name: jax.random.fold_in(key, stream) for name, stream in ESTIMATOR_STREAMS.items()}
    fns = make_estimator_fns(vae, params, keys["naive"], elbo_samples=elbo_samples, num_samples=num_samples,
                             naive_samples=naive_samples, chunk_size=chunk_size)
    batch_sizes = dict(BATCH_SIZES, **({"importance": batch_size} if batch_size else {}))
    result = {"num_examples": int(images.shape[0]), "seconds": {}}
    for name in config.estimators:
        start = time.perf_counter()
        values = map_in_batches(fns[name], keys[name], images, batch_sizes[name], progress=name if progress else None)
        result["seconds"][name] = time.perf_counter() - start
        result[name] = {"num_samples": config.counts()[name], **summarize(values)}
        if report is not None:
            report(name, result[name])
    return result
