"""What the stored values of an image mean, and how they become model inputs.

A data set's **kind** says what its values are:

* ``binary``: 0/1 values, stored as ``bool`` (one byte a value);
* ``uint8``: 8-bit levels 0..255, stored as ``uint8``;
* ``continuous``: floats in [0, 1], stored as float32 (or float64).

Images stay in this storage in memory (a 50,000 x 32 x 32 x 3 ``uint8`` set is 154 MB, as float32 614 MB)
and become model inputs x in [0, 1] one batch at a time, on the device, with :func:`to_unit_float`:
bool -> 0.0/1.0, uint8 -> level / 255, floats unchanged. The storage dtype alone decides the conversion,
so a batch needs no other label.
"""

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.errors import DataError

STORAGE = {"binary": np.bool_, "uint8": np.uint8}  # continuous data keeps its float dtype
DISCRETIZED = ("discretized_logistic", "discretized_logistic_mixture")
FITTING_LIKELIHOODS = {"binary": ("bernoulli", "gaussian"), "uint8": (*DISCRETIZED, "gaussian"),
                       "continuous": ("gaussian",)}
"""Likelihoods that model each kind as stored; Bernoulli also fits grey levels that are ``binarize``d. A
Gaussian on 8-bit data models the dequantized values (:func:`dequantize`)."""


def as_stored(images: np.ndarray, kind: str) -> np.ndarray:
    """``images`` in the storage of ``kind`` (see the module docstring), without copying where the dtype is
    already right (uint8 0/1 becomes bool by a view)."""
    if kind == "continuous":
        return images if np.issubdtype(images.dtype, np.floating) else images.astype(np.float32)
    dtype = STORAGE[kind]
    if images.dtype == dtype:
        return images
    if kind == "binary" and images.dtype == np.uint8:
        return images.view(np.bool_)  # the same bytes: 0 and 1 are False and True
    return images.astype(dtype)


_LEVELS = np.arange(256, dtype=np.float64) / 255  # level / 255, correctly rounded, looked up in float32 or float64


def to_unit_float(xs, dtype=np.float32):
    """Stored images -> model inputs in [0, 1]: bool -> 0/1, uint8 -> level / 255, floats unchanged.

    Takes NumPy or JAX arrays and returns the same kind; works inside ``jit`` (the dtype is static). Levels
    are looked up in a table of the correctly rounded quotients, so NumPy on the host and XLA on a device
    (which divides by multiplying with 1/255, 1 ulp off for some levels) give the same bits.
    """
    if xs.dtype == np.bool_:
        return xs.astype(dtype)
    if xs.dtype == np.uint8:
        table = _LEVELS.astype(dtype)
        return table[xs] if isinstance(xs, np.ndarray) else jnp.asarray(table)[xs]
    if jnp.issubdtype(xs.dtype, jnp.floating):
        return xs
    raise DataError(f"images stored as {xs.dtype}; vae-jax stores bool (binary), uint8 (8-bit levels) or float "
                    "(continuous in [0, 1]) images.")


def dequantizes(kind: str, likelihood: str) -> bool:
    """Whether a model of ``likelihood`` sees ``kind`` data dequantized: a continuous density (the Gaussian) on
    8-bit levels, whose density at the levels themselves is no probability of the image (Theis et al. 2016)."""
    return kind == "uint8" and likelihood == "gaussian"


def dequantize(key, levels):
    """Uniform dequantization: x' = (k + u) / 256, u ~ U[0, 1)^D from ``key``, for levels k stored as uint8 [..., D]
    (or k / 255 as floats). x' fills [0, 1) and the bins [k/256, (k+1)/256) tile it, so for any density p on
    [0, 1]^D, log P(k) >= E_u[log p(x')] - D log 256 (Jensen): a bound on the probability of the 8-bit image."""
    k = levels.astype(jnp.float32) if levels.dtype == np.uint8 else jnp.round(levels * 255)
    return (k + jax.random.uniform(key, levels.shape, jnp.float32)) / 256


@jax.jit
def dequantize_examples(key, index, levels):
    """:func:`dequantize` of examples levels [B, D] with their indices [B]: example i draws from
    ``fold_in(key, i)``, so its u does not depend on the batch it is in."""
    return jax.vmap(lambda i, x: dequantize(jax.random.fold_in(key, i), x))(index, levels)


def check_likelihood_fits(kind: str, likelihood: str, binarize: bool, name: str):
    """Raises :class:`DataError` when ``likelihood`` cannot model ``kind`` data, naming the ones that can."""
    if likelihood in FITTING_LIKELIHOODS[kind] or (likelihood == "bernoulli" and binarize):
        return
    fitting = " or ".join(f"--likelihood {lik}" for lik in FITTING_LIKELIHOODS[kind])
    raise DataError(f"{name} is {kind} data, which the {likelihood} likelihood cannot model: use {fitting}, or "
                    "--binarize to train a Bernoulli model on binarized grey levels.")
