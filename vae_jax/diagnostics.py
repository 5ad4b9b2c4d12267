"""Pareto k-hat: how heavy the tail of importance weights is (Vehtari, Simpson, Gelman, Yao & Gabry,
"Pareto smoothed importance sampling", 2015-2024).

A generalized Pareto distribution is fitted to the largest M = ceil(min(S / 5, 3 sqrt(S))) of S weights
(their excess over the (M+1)-th largest), with the method of Zhang & Stephens (2009) and the weak prior
PSIS uses. Its shape k says how many moments the weights have: below 0.5 the variance is finite and the
central limit theorem holds; from 0.5 to 0.7 the variance is infinite but the estimate is still usable;
above 0.7 the standard error and the effective sample size are meaningless (they are computed from a
sample variance that does not exist) and the estimate can be far off for any affordable S.

The largest weights are kept by a running top-M over chunks (:func:`vae_jax.estimators.stream_log_mean_exp`),
so memory stays bounded for any S.
"""

import math

import jax.numpy as jnp

from vae_jax.types import Array

KHAT_UNRELIABLE = 0.7  # above this the Monte Carlo standard error and ESS cannot be trusted


def pareto_tail_size(num_samples: int) -> int:
    """M = ceil(min(S / 5, 3 sqrt(S))): how many of the largest weights PSIS fits."""
    return int(math.ceil(min(num_samples / 5.0, 3.0 * math.sqrt(num_samples))))


def generalized_pareto_fit(exceedances: Array) -> tuple[Array, Array]:
    """(k, sigma) of a generalized Pareto fitted to ``exceedances`` [n] >= 0, sorted ascending.

    The profile-likelihood estimate of Zhang & Stephens (2009) over a grid of m = 30 + sqrt(n) values of
    b = -k / sigma, then PSIS's weak prior towards k = 0.5 (10 pseudo-observations).
    """
    x = exceedances
    n = x.shape[-1]
    m = 30 + int(math.sqrt(n))
    quartile = x[..., int(n / 4 + 0.5) - 1]
    grid = 1.0 - jnp.sqrt(m / (jnp.arange(1, m + 1, dtype=x.dtype) - 0.5))
    b = 1.0 / x[..., -1:] + grid / (3.0 * quartile[..., None])  # [..., m]
    k = jnp.mean(jnp.log1p(-b[..., :, None] * x[..., None, :]), axis=-1)  # [..., m]
    profile = n * (jnp.log(-b / k) - k - 1.0)
    weights = 1.0 / jnp.sum(jnp.exp(profile[..., None, :] - profile[..., :, None]), axis=-1)
    b_post = jnp.sum(b * weights, axis=-1)
    k_post = jnp.mean(jnp.log1p(-b_post[..., None] * x), axis=-1)
    sigma = -k_post / b_post
    k_post = (n * k_post + 10 * 0.5) / (n + 10)  # PSIS's weakly informative prior
    return k_post, sigma


def pareto_khat(top_log_weights: Array) -> Array:
    """k-hat from the M + 1 largest log-weights [..., M + 1] (any order): the M largest are the tail,
    the (M+1)-th the threshold. NaN when M < 5 (too few samples to fit a tail).

    The excesses over the threshold are formed in log space and scaled to 1 at the tail's lower quartile,
    so float32 holds a tail spanning up to ~80 nats above it; a wider tail is as heavy as tails come and
    gets k-hat = inf. A tail equal to the threshold (constant weights) has none: k-hat = -inf.
    """
    if top_log_weights.shape[-1] < 6:
        return jnp.full(top_log_weights.shape[:-1], jnp.nan)
    lw = jnp.sort(top_log_weights, axis=-1)
    threshold, tail = lw[..., :1], lw[..., 1:]
    # log(exp(tail) - exp(threshold)), exact for any size of the log-weights.
    log_excess = tail + jnp.log1p(-jnp.exp(jnp.minimum(threshold - tail, 0.0)))
    quartile = log_excess[..., int(tail.shape[-1] / 4 + 0.5) - 1:][..., :1]
    top = log_excess[..., -1:]
    scale = jnp.where(jnp.isfinite(quartile), quartile, top)
    span = (top - scale)[..., 0]
    x = jnp.exp(jnp.minimum(log_excess - jnp.where(jnp.isfinite(scale), scale, 0.0), 80.0))
    k, _ = generalized_pareto_fit(x)  # k does not depend on the scale
    k = jnp.where(jnp.isnan(k) | (span > 80.0), jnp.inf, k)
    return jnp.where(jnp.isfinite(top[..., 0]), k, -jnp.inf)
