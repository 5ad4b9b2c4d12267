"""Estimators over many examples that share their latent points: the naive estimator and quadrature.

Prior samples (and quadrature nodes) do not depend on x, so each z is decoded once for a whole
batch of examples and log p(x_n | z_c) is computed for all pairs as a matrix product
(``log_likelihood_matrix(xs [N, D], z [C, K]) -> [N, C]``, e.g. :meth:`vae_jax.VAE.log_likelihood_matrix`).
Each example's estimate is exactly what the per-example function gives with the same key; the
examples' estimates are correlated with each other, since they share samples.
"""

import math
from typing import Callable

import jax.numpy as jnp

from vae_jax import validation
from vae_jax.distributions import LOG_2PI
from vae_jax.estimators import LogMeanExpStats, stream_log_mean_exp
from vae_jax.sampling import standard_normal_stream
from vae_jax.types import Array, ArrayLike, PRNGKey
from vae_jax.errors import ConfigError

LogLikelihoodMatrixFn = Callable[[Array, Array], Array]  # (xs [N, D], z [C, K]) -> [N, C]


def _check_batch(xs: ArrayLike) -> Array:
    xs = validation.as_float_data("xs", xs)
    if xs.ndim != 2:
        raise ConfigError(f"xs must be a batch of examples of shape [N, D], got shape {tuple(xs.shape)}.")
    return xs


def naive_log_marginal_shared(
    key: PRNGKey,
    log_likelihood_matrix: LogLikelihoodMatrixFn,
    xs: ArrayLike,
    latent_dim: int,
    num_samples: int,
    chunk_size: int | None = 1000,
    *,
    on_chunk: Callable[[], None] | None = None,
) -> LogMeanExpStats:
    """log (1/M) sum_m p(x_n | z_m), z_m ~ N(0, I), for every example with the same M prior samples.

    Sample m is ``standard_normal_stream(key, m)``: for each example the result equals
    :func:`vae_jax.naive_log_marginal` with the same key (to float rounding).

    Args:
      key: PRNG key shared by all examples.
      log_likelihood_matrix: (xs [N, D], z [C, K]) -> [N, C] log p(x_n | z_c).
      xs: [N, D] examples.
      latent_dim: K.
      num_samples: M.
      chunk_size: prior samples decoded at once; memory is O(N * chunk_size).
      on_chunk: called on the host after each chunk, for a progress bar.

    Returns:
      :class:`LogMeanExpStats` whose fields are [N].
    """
    xs = _check_batch(xs)
    latent_dim = validation.check_positive_int("latent_dim", latent_dim)

    def log_weights(indices):
        z = standard_normal_stream(key, indices, latent_dim, xs.dtype)
        return log_likelihood_matrix(xs, z).T  # [C, N]

    return stream_log_mean_exp(log_weights, num_samples, chunk_size, on_chunk=on_chunk)


def grid_log_marginal_2d(
    log_likelihood_matrix: LogLikelihoodMatrixFn,
    xs: ArrayLike,
    *,
    limit: float = 6.0,
    num_points: int = 500,
    chunk_size: int | None = 5000,
) -> Array:
    """log p(x) = log integral p(x|z) N(z; 0, I) dz for a 2-D latent, by the midpoint rule.

    The square [-limit, limit]^2 is cut into num_points^2 cells of side h = 2 limit / num_points:

        log p(x) ~= logsumexp_ij [log p(x | z_ij) + log N(z_ij; 0, I)] + 2 log h.

    The prior mass outside the square is below 4 exp(-limit^2 / 2) (2.4e-8 for limit 6). Use
    :func:`grid_error_estimate` for the discretization error.

    Args:
      log_likelihood_matrix: (xs [N, D], z [C, 2]) -> [N, C].
      xs: [N, D] examples.
      limit: half-width of the square.
      num_points: cells per axis.
      chunk_size: grid points decoded at once.

    Returns:
      [N] log p(x) in nats.
    """
    xs = _check_batch(xs)
    num_points = validation.check_positive_int("num_points", num_points)
    h = 2.0 * limit / num_points

    def log_weights(indices):
        centres = -limit + h * (jnp.stack([indices // num_points, indices % num_points], -1) + 0.5)
        centres = centres.astype(xs.dtype)  # [C, 2]
        log_prior = -0.5 * jnp.sum(centres**2, -1) - LOG_2PI  # log N(z; 0, I_2)
        return log_likelihood_matrix(xs, centres).T + log_prior[:, None]

    total = num_points**2
    stats = stream_log_mean_exp(log_weights, total, chunk_size)
    return stats.log_marginal + math.log(total) + 2.0 * math.log(h)


def grid_error_estimate(log_likelihood_matrix: LogLikelihoodMatrixFn, xs: ArrayLike, *,
                        limit: float = 6.0, num_points: int = 500, chunk_size: int | None = 5000):
    """(estimate [N], error bound [N]): the quadrature and the largest change when the grid is
    refined (2 num_points) or widened (limit + 2) - an empirical bound on its error."""
    run = lambda l, n: grid_log_marginal_2d(log_likelihood_matrix, xs, limit=l, num_points=n, chunk_size=chunk_size)
    base = run(limit, num_points)
    error = jnp.maximum(jnp.abs(run(limit, 2 * num_points) - base),
                        jnp.abs(run(limit + 2.0, int(num_points * (limit + 2.0) / limit)) - base))
    return base, error
