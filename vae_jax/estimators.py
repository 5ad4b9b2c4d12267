"""Estimators of log p(x) for one example, as higher-order functions of ``log_likelihood(x, z)``.

Both estimators are a log-mean-exp of M log-weights,

    log p(x) ~= log (1/M) sum_m w_m,

streamed over chunks of samples with a running logsumexp, so memory holds one chunk, not M samples.
Sample ``m`` is drawn from ``fold_in(key, m)`` (see :mod:`vae_jax.sampling`): for a given key the
estimate is the same for every ``chunk_size``, up to float rounding.

To jit, mark ``log_likelihood``, ``num_samples``, ``chunk_size`` (and ``latent_dim``) static; to batch,
``jax.vmap`` over (key, x, mean, log_var) with one key per example.
"""

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vae_jax import validation
from vae_jax.distributions import LOG_2PI, standard_normal_log_prob
from vae_jax.sampling import standard_normal_stream
from vae_jax.types import Array, ArrayLike, LogLikelihoodFn, PRNGKey


class LogMeanExpStats(NamedTuple):
    """A log-mean-exp estimate with its diagnostics, all scalars.

    Attributes:
      log_marginal: log (1/M) sum_m w_m, the estimate of log p(x) in nats.
      stderr: delta-method standard error of ``log_marginal``:
        sd(w) / (sqrt(M) mean(w)) = sqrt((sum w^2 / (sum w)^2 - 1/M) M / (M - 1)); NaN for M = 1.
      ess: effective sample size of the weights, (sum w)^2 / sum w^2, between 1 and M.
    """

    log_marginal: Array
    stderr: Array
    ess: Array


def stream_log_mean_exp(
    log_weights: Callable[[Array], Array], num_samples: int, chunk_size: int | None
) -> LogMeanExpStats:
    """Runs ``log_weights`` over sample indices 0..M-1 in chunks and reduces them stably.

    Args:
      log_weights: [C] int32 sample indices -> [C, ...] log-weights log w_m (trailing axes, e.g. one
        per example, are reduced independently).
      num_samples: M.
      chunk_size: C, samples evaluated at once; None evaluates all M at once.

    Returns:
      the estimate of log p(x) with its standard error and effective sample size, each [...].
    """
    num_samples = validation.check_positive_int("num_samples", num_samples)
    chunk = min(validation.check_chunk_size(chunk_size) or num_samples, num_samples)
    num_chunks = -(-num_samples // chunk)

    def chunk_sums(start):
        indices = start + jnp.arange(chunk, dtype=jnp.int32)
        log_w = log_weights(indices)
        valid = (indices < num_samples).reshape((chunk,) + (1,) * (log_w.ndim - 1))
        log_w = jnp.where(valid, log_w, -jnp.inf)  # pad the last chunk
        # log sum w and log sum w^2 from one exp per weight: w^2 / M^2 = (w / M)^2 with M the largest w.
        top = lax.stop_gradient(jnp.max(log_w, axis=0))
        top = jnp.where(jnp.isfinite(top), top, 0.0)  # all -inf (or an inf): no shift needed
        scaled = jnp.exp(log_w - top)
        return jnp.log(jnp.sum(scaled, axis=0)) + top, jnp.log(jnp.sum(scaled * scaled, axis=0)) + 2.0 * top

    sums = chunk_sums(0)
    if num_chunks > 1:

        def body(carry, start):
            new = chunk_sums(start)
            return (jnp.logaddexp(carry[0], new[0]), jnp.logaddexp(carry[1], new[1])), None

        starts = jnp.arange(1, num_chunks, dtype=jnp.int32) * chunk
        sums, _ = lax.scan(body, sums, starts)
    log_sum_w, log_sum_w2 = sums
    relative_var = jnp.maximum(jnp.exp(log_sum_w2 - 2.0 * log_sum_w) - 1.0 / num_samples, 0.0)
    bessel = num_samples / (num_samples - 1) if num_samples > 1 else jnp.nan
    return LogMeanExpStats(
        log_marginal=log_sum_w - math.log(num_samples),
        stderr=jnp.sqrt(relative_var * bessel),
        ess=jnp.clip(jnp.exp(2.0 * log_sum_w - log_sum_w2), 1.0, num_samples),  # in [1, M] but for rounding
    )


def importance_log_marginal_stats(
    key: PRNGKey,
    log_likelihood: LogLikelihoodFn,
    x: ArrayLike,
    mean: ArrayLike,
    log_var: ArrayLike,
    num_samples: int,
    chunk_size: int | None = None,
) -> LogMeanExpStats:
    """Importance sampling with q(z|x) as proposal, with diagnostics.

    log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x) = N(mean, diag exp(log_var)).

    Its expectation is the IWAE bound L_K <= log p(x), which increases to log p(x) as K grows; it is
    exact for every K when q is the true posterior. z_k = mean + exp(log_var / 2) eps_k, so
    log q(z_k|x) = -1/2 sum(eps_k^2 + log_var + log 2 pi) is computed from eps_k directly.

    Args:
      key: PRNG key for this example.
      log_likelihood: (x [D], z [K]) -> log p(x|z).
      x: [D] example.
      mean: [K] mean of q(z|x).
      log_var: [K] log variance of q(z|x).
      num_samples: K, importance samples.
      chunk_size: samples evaluated at once (bounds memory); None for all at once.

    Returns:
      :class:`LogMeanExpStats` (estimate, standard error, effective sample size).
    """
    x, mean, log_var = validation.check_example(x, mean, log_var)
    std = jnp.exp(0.5 * log_var)
    log_q_const = -0.5 * jnp.sum(log_var + LOG_2PI)

    def log_weights(indices):
        eps = standard_normal_stream(key, indices, mean.shape[-1], mean.dtype)  # [C, K]
        z = mean + std * eps
        log_q = log_q_const - 0.5 * jnp.sum(eps**2, axis=-1)
        log_joint = jax.vmap(lambda z_k: log_likelihood(x, z_k) + standard_normal_log_prob(z_k))(z)
        return log_joint - log_q

    return stream_log_mean_exp(log_weights, num_samples, chunk_size)


def importance_log_marginal(
    key: PRNGKey,
    log_likelihood: LogLikelihoodFn,
    x: ArrayLike,
    mean: ArrayLike,
    log_var: ArrayLike,
    num_samples: int,
    chunk_size: int | None = None,
) -> Array:
    """log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x): the importance-sampled log p(x).

    The scalar of :func:`importance_log_marginal_stats`; see it for the arguments. Differentiable, so
    its negative is the IWAE training loss.
    """
    args = (key, log_likelihood, x, mean, log_var, num_samples, chunk_size)
    return importance_log_marginal_stats(*args).log_marginal


def naive_log_marginal_stats(
    key: PRNGKey,
    log_likelihood: LogLikelihoodFn,
    x: ArrayLike,
    latent_dim: int,
    num_samples: int,
    chunk_size: int | None = None,
) -> LogMeanExpStats:
    """The naive Monte Carlo estimator with the prior as proposal, with diagnostics.

    log p(x) ~= log (1/M) sum_m p(x|z_m),  z_m ~ p(z) = N(0, I_K).

    Unbiased for p(x) but, since p(x|z) is large only in a region of z of tiny prior mass, its
    variance grows roughly exponentially with the latent dimension: in high dimension it needs an
    enormous M and, on the log scale, underestimates log p(x) for any affordable M.

    Args:
      key: PRNG key for this example.
      log_likelihood: (x [D], z [K]) -> log p(x|z).
      x: [D] example.
      latent_dim: K.
      num_samples: M, prior samples.
      chunk_size: samples evaluated at once (bounds memory); None for all at once.

    Returns:
      :class:`LogMeanExpStats` (estimate, standard error, effective sample size).
    """
    latent_dim = validation.check_positive_int("latent_dim", latent_dim)
    x, _, _ = validation.check_example(x, jnp.zeros(latent_dim), jnp.zeros(latent_dim))

    def log_weights(indices):
        z = standard_normal_stream(key, indices, latent_dim, x.dtype)  # [C, K]
        return jax.vmap(log_likelihood, in_axes=(None, 0))(x, z)

    return stream_log_mean_exp(log_weights, num_samples, chunk_size)


def naive_log_marginal(
    key: PRNGKey,
    log_likelihood: LogLikelihoodFn,
    x: ArrayLike,
    latent_dim: int,
    num_samples: int,
    chunk_size: int | None = None,
) -> Array:
    """log (1/M) sum_m p(x|z_m), z_m ~ N(0, I): the naive M-sample estimate of log p(x).

    The scalar of :func:`naive_log_marginal_stats`; see it for the arguments.
    """
    args = (key, log_likelihood, x, latent_dim, num_samples, chunk_size)
    return naive_log_marginal_stats(*args).log_marginal
