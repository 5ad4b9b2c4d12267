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


LEVELS = 255  # 8-bit data: x = k / 255 for levels k = 0..255
HALF_BIN = 0.5 / LEVELS  # half the width of a level's bin on the [0, 1] scale
LOG_SCALE_RANGE = (-9.0, 3.0)
"""log scales of the discretized logistic are clipped to this range: at -9 (s = 1.2e-4, 1/16 of a bin's half
width) a component puts all but 1e-7 of its mass in one bin, so smaller scales change nothing but would let
exp(-log s) overflow; at 3 (s = 20) it is flat over [0, 1]."""


def _log_one_minus_exp(x: Array) -> Array:
    """log(1 - exp(-x)) for x > 0, accurate for tiny and huge x (Maechler 2012: log(-expm1(-x)) below log 2,
    log1p(-exp(-x)) above)."""
    return jnp.where(x < math.log(2.0), jnp.log(-jnp.expm1(-x)), jnp.log1p(-jnp.exp(-x)))


def discretized_logistic_log_prob_bins(x: ArrayLike, mean: ArrayLike, log_scale: ArrayLike) -> Array:
    """log P(x_d) of each value under the discretized logistic (Kingma et al. 2016; Salimans et al. 2017).

    x_d = k / 255 is an 8-bit level k on [0, 1]; its bin is [x - h, x + h], h = 1 / 510, except that level 0
    takes (-inf, h] and level 255 takes [1 - h, inf). With a = (x + h - mean) / s, b = (x - h - mean) / s and
    s = exp(log_scale), P = sigmoid(a) - sigmoid(b) is computed in log space, exactly rewritten as

        log P = log sigmoid(a) + log sigmoid(-b) + log(1 - exp(-(a - b))),     a - b = 2h / s > 0,

    where level 0 drops the last two terms and level 255 the first and last. Every term is stable, so tiny bin
    probabilities (a mean far from x, a tiny or huge scale) keep their full relative accuracy; no threshold
    switches to a density approximation as PixelCNN++ does.

    Args:
      x: [...] levels / 255.
      mean, log_scale: [...] (broadcast with x) location on the [0, 1] scale and log scale, used as given.

    Returns:
      [...] log probabilities of each value's bin.
    """
    x, mean, log_scale = jnp.asarray(x), jnp.asarray(mean), jnp.asarray(log_scale)
    inv_scale = jnp.exp(-log_scale)
    # The edges (k +- 1/2) / 255 from the level k: neighbouring bins then share their edge to the last bit, so the
    # 256 probabilities telescope to 1 (edges x +- h round differently for neighbours: 1e-5 off at tiny scales).
    level = jnp.round(x * LEVELS)
    a = ((level + 0.5) / LEVELS - mean) * inv_scale
    b = ((level - 0.5) / LEVELS - mean) * inv_scale
    top, bottom = level > LEVELS - 0.5, level < 0.5  # levels 255 and 0
    upper = jnp.where(top, 0.0, jax.nn.log_sigmoid(a))  # log P(below the upper edge)
    lower = jnp.where(bottom, 0.0, jax.nn.log_sigmoid(-b))  # log P(above the lower edge)
    width = jnp.where(top | bottom, 0.0, _log_one_minus_exp(2.0 * HALF_BIN * inv_scale))
    return upper + lower + width


def discretized_logistic_log_prob(x: ArrayLike, params: ArrayLike) -> Array:
    """log P(x) = sum_d log P(x_d) of one 8-bit example under a discretized logistic per value.

    Args:
      x: [D] levels / 255.
      params: [2 D] decoder output, pixel-major ([D, 2]: mean, log scale per value; the log scale is clipped
        to :data:`LOG_SCALE_RANGE`).

    Returns:
      scalar log probability (of the discrete image: <= 0).
    """
    mean, log_scale = _logistic_params(params, jnp.shape(x)[-1])
    return jnp.sum(discretized_logistic_log_prob_bins(x, mean, log_scale))


def _logistic_params(params, dim):
    p = jnp.asarray(params).reshape(dim, 2)
    return p[:, 0], jnp.clip(p[:, 1], *LOG_SCALE_RANGE)


def _mixture_params(params, dim, components):
    p = jnp.asarray(params).reshape(dim, 3, components)
    return jax.nn.log_softmax(p[:, 0], axis=-1), p[:, 1], jnp.clip(p[:, 2], *LOG_SCALE_RANGE)


def discretized_logistic_mixture_log_prob(x: ArrayLike, params: ArrayLike, components: int) -> Array:
    """log P(x) of one 8-bit example under a mixture of ``components`` discretized logistics per value
    (Salimans et al. 2017), channels independent: sum_d logsumexp_m [log pi_dm + log P_m(x_d)].

    Args:
      x: [D] levels / 255.
      params: [3 M D] decoder output, pixel-major ([D, 3, M]: mixture logits, means, log scales).
      components: M.

    Returns:
      scalar log probability.
    """
    x = jnp.asarray(x)
    log_weights, means, log_scales = _mixture_params(params, x.shape[-1], components)
    bins = discretized_logistic_log_prob_bins(x[:, None], means, log_scales)  # [D, M]
    return jnp.sum(jax.nn.logsumexp(log_weights + bins, axis=-1))


def _logistic_mean(mean, log_scale):
    """E[x] [...] of the discretized logistic on the [0, 1] scale: E[k] / 255 with
    E[k] = sum_{k=1..255} P(level >= k) = sum_k sigmoid((mean - (k - 1/2) / 255) / s)."""
    edges = (jnp.arange(1, LEVELS + 1) - 0.5) / LEVELS
    return jnp.sum(jax.nn.sigmoid((mean[..., None] - edges) * jnp.exp(-log_scale)[..., None]), axis=-1) / LEVELS


def _logistic_sample(key, mean, log_scale):
    """Levels / 255 drawn from the discretized logistic: a logistic draw, rounded to a level, clipped."""
    draw = mean + jnp.exp(log_scale) * jax.random.logistic(key, mean.shape, mean.dtype)
    return jnp.clip(jnp.round(draw * LEVELS), 0, LEVELS) / LEVELS


def _pairwise(log_prob, chunk: int = 8):
    """(xs [N, D], params [C, P D]) -> [N, C] of ``log_prob(x, params)``, the decoded outputs taken ``chunk`` at
    a time (``lax.map``), so memory is N x D x chunk, not N x D x C: these likelihoods have no matrix form."""
    def matrix(xs, params, log_sigma):
        del log_sigma
        per_output = lambda p: jax.vmap(log_prob, (0, None))(xs, p)
        return jax.lax.map(per_output, params, batch_size=chunk).T
    return matrix


class Likelihood(NamedTuple):
    """A decoder likelihood p(x|z) given the decoder output g(z) and log sigma [D] (unused but by the Gaussian).

    The decoder outputs ``params_per_value`` numbers per data value, pixel-major: g [P D] is g.reshape(D, P).
    """

    log_prob: Callable  # (x [D], g [P D], log_sigma [D]) -> scalar
    log_prob_matrix: Callable  # (xs [N, D], g [C, P D], log_sigma [D]) -> [N, C]
    mean: Callable  # g [P D] -> E[x|z] [D]
    output_for_mean: Callable  # E[x|z] [D] -> a g [P D] giving it (a mean of 0 or 1 is clipped to [1e-4, 1 - 1e-4])
    sample: Callable  # (key, g [P D], log_sigma [D]) -> x ~ p(x|z) [D]
    params_per_value: int = 1  # P
    discrete: bool = True  # a probability of the data (Bernoulli, discretized), not a density


def _logit(mean: Array, eps: float = 1e-4) -> Array:
    mean = jnp.clip(mean, eps, 1.0 - eps)
    return jnp.log(mean) - jnp.log1p(-mean)


INITIAL_LOG_SCALE = -3.0  # the discretized logistics' log scale at the start of training (s = 0.05)


def _logistic_output(mean: Array) -> Array:
    return jnp.stack([mean, jnp.full_like(mean, INITIAL_LOG_SCALE)], axis=-1).reshape(-1)


def discretized_logistic_mixture(components: int) -> Likelihood:
    """The :class:`Likelihood` of :func:`discretized_logistic_mixture_log_prob` with M = ``components``."""
    pair = lambda x, g: discretized_logistic_mixture_log_prob(x, g, components)
    log_prob = lambda x, g, log_sigma: pair(x, g)

    def mean(g):
        log_weights, means, log_scales = _mixture_params(g, g.shape[-1] // (3 * components), components)
        return jnp.sum(jnp.exp(log_weights) * _logistic_mean(means, log_scales), axis=-1)

    def output_for_mean(m):  # equal weights, every component at the mean
        return jnp.stack([jnp.zeros((m.shape[-1], components)), jnp.repeat(m[:, None], components, 1),
                          jnp.full((m.shape[-1], components), INITIAL_LOG_SCALE)], axis=1).reshape(-1)

    def sample(key, g, log_sigma):
        log_weights, means, log_scales = _mixture_params(g, g.shape[-1] // (3 * components), components)
        pick_key, draw_key = jax.random.split(key)
        m = jax.random.categorical(pick_key, log_weights)[:, None]
        return _logistic_sample(draw_key, jnp.take_along_axis(means, m, 1)[:, 0],
                                jnp.take_along_axis(log_scales, m, 1)[:, 0])

    return Likelihood(log_prob, _pairwise(pair), mean, output_for_mean, sample, 3 * components)


LIKELIHOODS = {
    "bernoulli": Likelihood(lambda x, g, log_sigma: bernoulli_log_prob(x, g),
                            lambda xs, g, log_sigma: bernoulli_log_prob_matrix(xs, g), jax.nn.sigmoid, _logit,
                            lambda key, g, log_sigma: jax.random.bernoulli(key, jax.nn.sigmoid(g)).astype(g.dtype)),
    "gaussian": Likelihood(gaussian_log_prob, gaussian_log_prob_matrix, lambda g: g, lambda mean: mean,
                           lambda key, g, log_sigma: g + jnp.exp(log_sigma) * jax.random.normal(key, g.shape, g.dtype),
                           discrete=False),
    "discretized_logistic": Likelihood(
        lambda x, g, log_sigma: discretized_logistic_log_prob(x, g),
        _pairwise(lambda x, g: discretized_logistic_log_prob(x, g)),
        lambda g: _logistic_mean(*_logistic_params(g, g.shape[-1] // 2)), _logistic_output,
        lambda key, g, log_sigma: _logistic_sample(key, *_logistic_params(g, g.shape[-1] // 2)), 2),
}


def likelihood(name: str, mixture_components: int = 1) -> Likelihood:
    """The :class:`Likelihood` called ``name`` (a key of :data:`LIKELIHOODS`, or
    ``discretized_logistic_mixture`` with ``mixture_components``)."""
    if name == "discretized_logistic_mixture":
        return discretized_logistic_mixture(mixture_components)
    return LIKELIHOODS[name]
