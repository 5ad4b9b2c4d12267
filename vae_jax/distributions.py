"""Log densities in nats, constants included, for one example.

Every function reduces over the trailing event dimension and returns a scalar for a vector input.
Numerically stable forms only: Bernoulli terms use ``log_sigmoid``, Gaussian terms work with
``log_sigma`` so that tiny scales do not underflow.
"""

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax.types import Array, ArrayLike

LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: ArrayLike) -> Array:
    """log N(z; 0, I) = -1/2 ||z||^2 - K/2 log(2 pi).

    Args:
      z: [K] point.

    Returns:
      scalar log density.
    """
    z = jnp.asarray(z)
    return -0.5 * jnp.sum(z**2) - 0.5 * z.shape[-1] * LOG_2PI


def diag_normal_log_prob(z: ArrayLike, mean: ArrayLike, log_var: ArrayLike) -> Array:
    """log N(z; mean, diag exp(log_var)) = -1/2 sum_k [(z_k - m_k)^2 / v_k + log v_k + log 2 pi].

    Args:
      z: [K] point.
      mean: [K] mean.
      log_var: [K] log variances.

    Returns:
      scalar log density.
    """
    z, mean, log_var = jnp.asarray(z), jnp.asarray(mean), jnp.asarray(log_var)
    return -0.5 * jnp.sum((z - mean) ** 2 * jnp.exp(-log_var) + log_var + LOG_2PI)


def gaussian_log_prob(x: ArrayLike, mean: ArrayLike, log_sigma: ArrayLike) -> Array:
    """log N(x; mean, diag sigma^2) = -sum_d [(x_d - m_d)^2 / (2 sigma_d^2) + log sigma_d + 1/2 log 2 pi].

    With a scalar ``log_sigma`` this is -||x - mean||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2).

    Args:
      x: [D] observation.
      mean: [D] decoder mean g(z).
      log_sigma: scalar or [D] log standard deviation.

    Returns:
      scalar log density.
    """
    x, mean = jnp.asarray(x), jnp.asarray(mean)
    log_sigma = jnp.broadcast_to(jnp.asarray(log_sigma, dtype=mean.dtype), mean.shape)
    scaled = (x - mean) * jnp.exp(-log_sigma)
    return -jnp.sum(0.5 * scaled**2 + log_sigma + 0.5 * LOG_2PI)


def bernoulli_log_prob(x: ArrayLike, logits: ArrayLike) -> Array:
    """log Bernoulli(x; sigmoid(logits)) = sum_d [x_d log s(l_d) + (1 - x_d) log s(-l_d)].

    Computed as sum_d [x_d l_d - softplus(l_d)] (log s(l) = l - softplus(l), log s(-l) = -softplus(l)):
    one stable softplus per pixel, and logits of +-1e4 give the exact finite answer (0 or -1e4).

    Args:
      x: [D] binary observation (0 or 1).
      logits: [D] decoder logits g(z).

    Returns:
      scalar log probability.
    """
    x, logits = jnp.asarray(x), jnp.asarray(logits)
    return jnp.sum(x * logits - jax.nn.softplus(logits))


def bernoulli_log_prob_matrix(xs: ArrayLike, logits: ArrayLike) -> Array:
    """:func:`bernoulli_log_prob` for every pair: xs [N, D], logits [C, D] -> [N, C], as one matrix product
    (x . l - sum softplus(l)), so each decoded z serves all examples."""
    xs, logits = jnp.asarray(xs), jnp.asarray(logits)
    return xs @ logits.T - jnp.sum(jax.nn.softplus(logits), axis=-1)


def gaussian_log_prob_matrix(xs: ArrayLike, means: ArrayLike, log_sigma: ArrayLike) -> Array:
    """:func:`gaussian_log_prob` for every pair: xs [N, D], means [C, D], log_sigma [D] (shared) -> [N, C].

    -1/2 (x^2 . p - 2 x . (m p) + m^2 . p) - sum log sigma - D/2 log 2 pi with p = sigma^-2, as matrix
    products. The expanded form rounds relative to ||x||^2 / sigma^2, not to the residual.
    """
    xs, means = jnp.asarray(xs), jnp.asarray(means)
    log_sigma = jnp.broadcast_to(jnp.asarray(log_sigma, means.dtype), means.shape[-1:])
    precision = jnp.exp(-2.0 * log_sigma)
    quadratic = (xs**2 @ precision)[:, None] - 2.0 * (xs * precision) @ means.T + (means**2 @ precision)[None, :]
    return -0.5 * quadratic - jnp.sum(log_sigma) - 0.5 * xs.shape[-1] * LOG_2PI


class Likelihood(NamedTuple):
    """A decoder likelihood p(x|z) given the decoder output g(z) and log sigma [D] (unused by Bernoulli)."""

    log_prob: Callable  # (x [D], g [D], log_sigma [D]) -> scalar
    log_prob_matrix: Callable  # (xs [N, D], g [C, D], log_sigma [D]) -> [N, C]
    mean: Callable  # g [D] -> E[x|z] [D]
    output_for_mean: Callable  # E[x|z] [D] -> the g giving it (a mean of 0 or 1 is clipped to [1e-4, 1 - 1e-4])
    sample: Callable  # (key, g [D], log_sigma [D]) -> x ~ p(x|z) [D]


def _logit(mean: Array, eps: float = 1e-4) -> Array:
    mean = jnp.clip(mean, eps, 1.0 - eps)
    return jnp.log(mean) - jnp.log1p(-mean)


LIKELIHOODS = {
    "bernoulli": Likelihood(lambda x, g, log_sigma: bernoulli_log_prob(x, g),
                            lambda xs, g, log_sigma: bernoulli_log_prob_matrix(xs, g), jax.nn.sigmoid, _logit,
                            lambda key, g, log_sigma: jax.random.bernoulli(key, jax.nn.sigmoid(g)).astype(g.dtype)),
    "gaussian": Likelihood(gaussian_log_prob, gaussian_log_prob_matrix, lambda g: g, lambda mean: mean,
                           lambda key, g, log_sigma: g + jnp.exp(log_sigma) * jax.random.normal(key, g.shape, g.dtype)),
}
