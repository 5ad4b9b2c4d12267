"""Reparameterized sampling with explicit keys.

Sample number ``m`` of a stream is drawn from ``jax.random.fold_in(key, m)``, so it depends only on
``(key, m)``: estimators give the same answer however they chunk the stream, and a resumed loop draws
the same numbers as an uninterrupted one.
"""

import jax
import jax.numpy as jnp

from vae_jax.types import Array, ArrayLike, PRNGKey


def standard_normal_stream(key: PRNGKey, indices: Array, dim: int, dtype=jnp.float32) -> Array:
    """eps_m ~ N(0, I_dim) for each index m, eps_m drawn from ``fold_in(key, m)``.

    Args:
      key: base key of the stream.
      indices: [S] integer sample indices.
      dim: dimension of each draw.

    Returns:
      [S, dim] standard normal draws, drawn in float32 and cast to ``dtype``, so the same key gives the
      same samples in float32 and float64 (and results differ only by rounding).
    """
    draw = lambda m: jax.random.normal(jax.random.fold_in(key, m), (dim,), jnp.float32)
    return jax.vmap(draw)(indices).astype(dtype)


def reparameterize(key: PRNGKey, mean: ArrayLike, log_var: ArrayLike) -> Array:
    """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I) drawn from ``key``.

    Args:
      key: PRNG key.
      mean: [K] mean of q(z|x).
      log_var: [K] log variance of q(z|x).

    Returns:
      [K] sample whose gradient flows to ``mean`` and ``log_var``.
    """
    mean, log_var = jnp.asarray(mean), jnp.asarray(log_var)
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * log_var) * eps
