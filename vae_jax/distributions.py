"""Log densities in nats, constants included, for one example.

Every function reduces over the trailing event dimension and returns a scalar for a vector input.
Numerically stable forms only: Bernoulli terms use ``log_sigmoid``, Gaussian terms work with
``log_sigma`` so that tiny scales do not underflow.
"""

import math

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
