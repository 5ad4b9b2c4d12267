"""What a log p(x) number measures, and bits per dimension.

The same estimator means different things for different data and likelihoods:

* a Bernoulli model of binary images, or a discretized logistic (mixture) of 8-bit images, gives the log
  **probability** of the discrete image, log P(x) <= 0, comparable with published numbers;
* a Gaussian on 8-bit images sees them dequantized, x' = (k + u) / 256 with u ~ U[0, 1)^D
  (:func:`vae_jax.pixels.dequantize`); its density p(x') becomes a lower bound on the probability of the
  image, log P(x) >= E_u[log p(x')] - D log 256 (Theis et al. 2016). vae-jax reports that bound: every
  estimate of log p(x') is shifted by :func:`log_probability_offset`;
* a Gaussian on binary or continuous data gives a log **density** on [0, 1]^D, which can be positive and is not
  comparable with any probability.

For 8-bit data every estimate is also given in bits per dimension, -log2 P(x) / D.
"""

import math

from vae_jax.pixels import dequantizes

LEVELS = 256


def log_probability_offset(kind: str | None, likelihood: str, data_dim: int) -> float:
    """What to add to an estimate of log p(x') for it to bound log P(x) of the 8-bit image: -D log 256 for a
    dequantized model, else 0."""
    return -data_dim * math.log(LEVELS) if dequantizes(kind, likelihood) else 0.0


def bits_per_dim(log_p: float, data_dim: int) -> float:
    """-log2 P(x) / D for log P(x) in nats."""
    return -log_p / (data_dim * math.log(2.0))


def describe(kind: str | None, likelihood: str) -> str:
    """One line saying what the log p(x) numbers of such a model are."""
    if dequantizes(kind, likelihood):
        return ("log P(x) of the 8-bit image, a lower bound through uniform dequantization: the Gaussian density "
                "of (x + u) / 256, minus D log 256 (nats)")
    if likelihood == "gaussian":
        return "log density of x in [0, 1]^D (nats): a density, not a probability of the image"
    what = "8-bit" if kind == "uint8" else "binary" if likelihood == "bernoulli" else "discrete"
    return f"log P(x), the probability of the {what} image (nats)"


def reports_bits(kind: str | None, likelihood: str) -> bool:
    """Whether numbers are probabilities of 8-bit images (exact or bounded), so bits/dim mean something."""
    return kind == "uint8" and (likelihood != "bernoulli")
