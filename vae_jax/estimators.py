"""Estimators of log p(x) for one example, as higher-order functions of ``log_likelihood(x, z)``.

Both estimators are a log-mean-exp of M log-weights,

    log p(x) ~= log (1/M) sum_m w_m,

streamed over chunks of samples with a running maximum and linear-space sums (as streaming softmax
does), so memory holds one chunk, not M samples.
Sample ``m`` is drawn from ``fold_in(key, m)`` (see :mod:`vae_jax.sampling`): for a given key the
estimate is the same for every ``chunk_size``, up to float rounding.

To jit, mark ``log_likelihood``, ``num_samples``, ``chunk_size`` (and ``latent_dim``) static; to batch,
``jax.vmap`` over (key, x, mean, log_var) with one key per example.

What is checked, and what is the caller's job: every call checks, at trace time and for free, that x is
ONE float example [D] (integer images are refused: convert them explicitly), that mean and log_var match,
and that the counts are Python ints within the 32-bit sample indices (a traced count is refused with a
note to mark it static). The *values* of x are not checked: given data outside the likelihood's support
(grey levels or 0..255 to a Bernoulli model), ``log_likelihood`` returns numbers that are not
log-probabilities, and so do the estimators. Check a data set once with ``VAE.check_data(xs)``
(:func:`vae_jax.validation.check_data`) before estimating.
"""

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vae_jax import validation
from vae_jax.diagnostics import pareto_khat, pareto_tail_size
from vae_jax.distributions import LOG_2PI, standard_normal_log_prob
from vae_jax.objectives import sample_log_likelihoods
from vae_jax.progress import report_chunk
from vae_jax.sampling import standard_normal_stream
from vae_jax.types import Array, ArrayLike, LogLikelihoodFn, PRNGKey


class LogMeanExpStats(NamedTuple):
    """A log-mean-exp estimate with its diagnostics, all scalars.

    Attributes:
      log_marginal: log (1/M) sum_m w_m, the estimate of log p(x) in nats.
      stderr: delta-method standard error of ``log_marginal``:
        sd(w) / (sqrt(M) mean(w)) = sqrt((sum w^2 / (sum w)^2 - 1/M) M / (M - 1)); NaN for M = 1.
      ess: effective sample size of the weights, (sum w)^2 / sum w^2, between 1 and M.
      khat: Pareto shape k-hat of the largest weights (:mod:`vae_jax.diagnostics`); above 0.7 ``stderr``
        and ``ess`` are not valid measures of accuracy. NaN when M < 25 (too few for a tail fit).
    """

    log_marginal: Array
    stderr: Array
    ess: Array
    khat: Array


class _Sums(NamedTuple):
    """Running sums of w and w^2 in linear space relative to a shift: sum w = (s1 + c1) exp(shift),
    sum w^2 = (s2 + c2) exp(2 shift); c1, c2 are Neumaier compensation terms."""

    shift: Array
    s1: Array
    c1: Array
    s2: Array
    c2: Array


def _neumaier_add(total: Array, compensation: Array, value: Array) -> tuple[Array, Array]:
    """total + value with the rounding error kept in ``compensation`` (Neumaier's compensated sum)."""
    new = total + value
    lost = jnp.where(jnp.abs(total) >= jnp.abs(value), (total - new) + value, (value - new) + total)
    return new, compensation + lost


def _chunk_sums(log_w: Array) -> _Sums:
    """Sums of one chunk [C, ...] of log-weights, shifted by their maximum (one exp per weight)."""
    top = lax.stop_gradient(jnp.max(log_w, axis=0))
    scaled = jnp.exp(log_w - jnp.where(jnp.isfinite(top), top, 0.0))
    # An empty chunk (all -inf) has shift -inf, so it never lowers the precision of the others.
    shift = jnp.where(jnp.isfinite(top), top, jnp.where(top > 0, 0.0, -jnp.inf))
    zero = jnp.zeros_like(top)
    return _Sums(shift, jnp.sum(scaled, axis=0), zero, jnp.sum(scaled * scaled, axis=0), zero)


def _merge(a: _Sums, b: _Sums) -> _Sums:
    """The sums of a and b together, rescaled to the larger shift (as streaming softmax does)."""
    shift = jnp.maximum(a.shift, b.shift)
    base = jnp.where(jnp.isfinite(shift), shift, 0.0)
    fa, fb = jnp.exp(a.shift - base), jnp.exp(b.shift - base)
    s1, c1 = _neumaier_add(a.s1 * fa, a.c1 * fa, b.s1 * fb)
    s2, c2 = _neumaier_add(a.s2 * fa * fa, a.c2 * fa * fa, b.s2 * fb * fb)
    return _Sums(shift, s1, c1, s2, c2)


def stream_log_mean_exp(
    log_weights: Callable[[Array], Array], num_samples: int, chunk_size: int | None, *,
    on_chunk: Callable[[], None] | None = None,
) -> LogMeanExpStats:
    """Runs ``log_weights`` over sample indices 0..M-1 in chunks and reduces them stably.

    The running sums of w and w^2 are carried in linear space relative to a running maximum of log w,
    with compensated addition, so their precision does not depend on the size of log w (a log-space
    running sum at log w ~ -260 nats would drop, in float32, every term below half an ulp of 260) and
    the estimate does not depend on ``chunk_size`` beyond float rounding.

    Args:
      log_weights: [C] int32 sample indices -> [C, ...] log-weights log w_m (trailing axes, e.g. one
        per example, are reduced independently).
      num_samples: M.
      chunk_size: C, samples evaluated at once; None evaluates all M at once.
      on_chunk: called on the host as each chunk is evaluated (``jax.debug.callback``), for a progress bar;
        once per chunk however the computation is vmapped.

    Returns:
      the estimate of log p(x) with its standard error and effective sample size, each [...].
    """
    num_samples = validation.check_positive_int("num_samples", num_samples)
    chunk = min(validation.check_chunk_size(chunk_size) or num_samples, num_samples)
    validation.check_num_chunks(num_samples, chunk)
    num_chunks = -(-num_samples // chunk)
    tail = pareto_tail_size(num_samples) + 1 if num_samples >= 25 else 0  # the M largest and the threshold

    def chunk_sums(start, top):
        indices = start + jnp.arange(chunk, dtype=jnp.int32)
        log_w = log_weights(indices)
        report_chunk(on_chunk, start)
        valid = (indices < num_samples).reshape((chunk,) + (1,) * (log_w.ndim - 1))
        log_w = jnp.where(valid, log_w, -jnp.inf)  # pad the last chunk
        if tail:  # running top-(M+1), examples first: [..., M + 1]
            merged = jnp.concatenate([top, jnp.moveaxis(lax.stop_gradient(log_w), 0, -1)], axis=-1)
            top = lax.top_k(merged, tail)[0]
        return _chunk_sums(log_w), top

    if tail:
        trailing = jax.eval_shape(log_weights, jax.ShapeDtypeStruct((1,), jnp.int32)).shape[1:]
        first_top = jnp.full((*trailing, tail), -jnp.inf)
    else:
        first_top = None
    sums, top = chunk_sums(0, first_top)
    if num_chunks > 1:

        def body(carry, start):
            sums, top = carry
            new, top = chunk_sums(start, top)
            return (_merge(sums, new), top), None

        starts = jnp.arange(1, num_chunks, dtype=jnp.int32) * chunk
        (sums, top), _ = lax.scan(body, (sums, top), starts)
    base = jnp.where(jnp.isfinite(sums.shift), sums.shift, 0.0)
    log_sum_w = jnp.log(sums.s1 + sums.c1) + base
    log_sum_w2 = jnp.log(sums.s2 + sums.c2) + 2.0 * base
    relative_var = jnp.maximum(jnp.exp(log_sum_w2 - 2.0 * log_sum_w) - 1.0 / num_samples, 0.0)
    bessel = num_samples / (num_samples - 1) if num_samples > 1 else jnp.nan
    return LogMeanExpStats(
        log_marginal=log_sum_w - math.log(num_samples),
        stderr=jnp.sqrt(relative_var * bessel),
        ess=jnp.clip(jnp.exp(2.0 * log_sum_w - log_sum_w2), 1.0, num_samples),  # in [1, M] but for rounding
        khat=pareto_khat(top) if tail else jnp.full(log_sum_w.shape, jnp.nan),
    )


def importance_log_marginal_stats(
    key: PRNGKey,
    log_likelihood: LogLikelihoodFn,
    x: ArrayLike,
    mean: ArrayLike,
    log_var: ArrayLike,
    num_samples: int,
    chunk_size: int | None = None,
    *,
    on_chunk: Callable[[], None] | None = None,
) -> LogMeanExpStats:
    """Importance sampling with q(z|x) as proposal, with diagnostics.

    log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x) = N(mean, diag exp(log_var)).

    Its expectation is the IWAE bound L_K <= log p(x), which increases to log p(x) as K grows; it is
    exact for every K when q is the true posterior. z_k = mean + exp(log_var / 2) eps_k, so
    log q(z_k|x) = -1/2 sum(eps_k^2 + log_var + log 2 pi) is computed from eps_k directly.

    Args:
      key: PRNG key for this example.
      log_likelihood: (x [D], z [K]) -> log p(x|z).
      x: [D] float example; its values must suit ``log_likelihood`` (the caller's job, see above).
      mean: [K] mean of q(z|x).
      log_var: [K] log variance of q(z|x).
      num_samples: K, importance samples.
      chunk_size: samples evaluated at once (bounds memory); None for all at once.
      on_chunk: called on the host after each chunk (see :func:`stream_log_mean_exp`).

    Returns:
      :class:`LogMeanExpStats` (estimate, standard error, effective sample size).
    """
    x, mean, log_var = validation.check_example(x, mean, log_var)

    def log_weights(indices):
        eps, z, log_lik = sample_log_likelihoods(key, log_likelihood, x, mean, log_var, indices)
        return importance_log_weights(eps, z, log_lik, log_var)

    return stream_log_mean_exp(log_weights, num_samples, chunk_size, on_chunk=on_chunk)


def importance_log_weights(eps: Array, z: Array, log_lik: Array, log_var: Array) -> Array:
    """log w = log p(x|z) + log p(z) - log q(z|x) [C] for reparameterized samples z = mean + std * eps.

    log q(z|x) = -1/2 sum(eps^2 + log_var + log 2 pi) is computed from eps [C, K] directly.
    """
    log_q = -0.5 * jnp.sum(eps**2 + log_var + LOG_2PI, axis=-1)
    return log_lik + jax.vmap(standard_normal_log_prob)(z) - log_q


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
      x: [D] float example; its values must suit ``log_likelihood`` (the caller's job, see above).
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
