"""Argument checks that turn misuse into clear messages instead of XLA shape errors.

All checks look only at static information (shapes, Python ints), so they cost nothing under jit.
"""

import jax.numpy as jnp

from vae_jax.types import Array, ArrayLike
from vae_jax.errors import ConfigError


def check_positive_int(name: str, value) -> int:
    """Returns ``value`` if it is a positive Python int; raises ConfigError (a ValueError) otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    return value


def check_chunk_size(chunk_size) -> int | None:
    """``None`` (no chunking) or a positive int."""
    if chunk_size is None:
        return None
    return check_positive_int("chunk_size", chunk_size)


def _as_float_vector(name: str, value: ArrayLike) -> Array:
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.float32)
    if array.ndim != 1:
        raise ConfigError(
            f"{name} must be ONE example of shape [{'D' if name == 'x' else 'K'}], got shape "
            f"{tuple(array.shape)}. The estimators are written for one example: batch them with "
            "jax.vmap (one key per example)."
        )
    return array


def check_example(x: ArrayLike, mean: ArrayLike, log_var: ArrayLike) -> tuple[Array, Array, Array]:
    """Checks one example x [D] with its posterior parameters mean [K], log_var [K]."""
    x = _as_float_vector("x", x)
    mean = _as_float_vector("mean", mean)
    log_var = _as_float_vector("log_var", log_var)
    if mean.shape != log_var.shape:
        raise ConfigError(
            f"mean and log_var must have the same shape [K], got {tuple(mean.shape)} and "
            f"{tuple(log_var.shape)}."
        )
    return x, mean, log_var
