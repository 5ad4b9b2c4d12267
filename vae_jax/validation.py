"""Argument checks that turn misuse into clear messages instead of XLA shape errors or silent nonsense.

Two kinds, by cost:

* **Static checks** (shapes, dtypes, Python counts) run at trace time on every call and cost nothing
  under jit: one example where one is expected, integer images (which no likelihood here models as
  given: convert them explicitly), sample counts that are not Python ints or do not fit the 32-bit
  sample indices.
* **Value checks** (NaN, values outside the likelihood's support, such as grey levels given to a
  Bernoulli model) need a pass over the data, so the estimators leave them to the caller: call
  :func:`check_data` (``VAE.check_data``) once on a data set before estimating.
"""

import operator

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.config import MAX_COUNT
from vae_jax.errors import ConfigError, DataError
from vae_jax.types import Array, ArrayLike


def check_positive_int(name: str, value) -> int:
    """Returns ``value`` as a Python int if it is a positive integer (NumPy integers included) that fits the
    32-bit indices; raises ConfigError (a ValueError) otherwise."""
    if isinstance(value, jax.core.Tracer):
        raise ConfigError(f"{name} is a traced value; sample counts fix the shapes of the computation, so "
                          f"mark {name} static (jax.jit(..., static_argnames=({name!r},))) or close over it.")
    try:
        count = None if isinstance(value, (bool, np.bool_)) else operator.index(value)
    except TypeError:
        count = None
    if count is None or count <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if count > MAX_COUNT:
        raise ConfigError(f"{name} must be at most {MAX_COUNT:,} (indices are 32-bit), got {count:,}.")
    return count


def check_chunk_size(chunk_size) -> int | None:
    """``None`` (no chunking) or a positive int."""
    if chunk_size is None:
        return None
    return check_positive_int("chunk_size", chunk_size)


def check_num_chunks(num_samples: int, chunk: int):
    """The padded last chunk must still index within int32: ceil(M / C) C <= MAX_COUNT."""
    if -(-num_samples // chunk) * chunk > MAX_COUNT:
        raise ConfigError(f"{num_samples:,} samples in chunks of {chunk:,} reach index "
                          f"{-(-num_samples // chunk) * chunk:,}, past the 32-bit limit {MAX_COUNT:,}; use fewer "
                          "samples or a chunk size that divides them.")


def as_float_data(name: str, value: ArrayLike) -> Array:
    """``value`` as a float array: bool becomes float32 (0/1); integer images are refused, since their scale
    (0/1, 0..255) is the caller's to state."""
    array = jnp.asarray(value)
    if array.dtype == jnp.bool_:
        return array.astype(jnp.float32)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ConfigError(
            f"{name} has dtype {array.dtype}; the model takes float data. Convert it explicitly: "
            f"{name}.astype(jnp.float32) for 0/1 values, or {name} / 255.0 for 8-bit grey levels (then binarize "
            "them for a Bernoulli likelihood).")
    return array


def _as_float_vector(name: str, value: ArrayLike) -> Array:
    array = as_float_data(name, value) if name == "x" else jnp.asarray(value)
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
    """Checks one example x [D] with its posterior parameters mean [K], log_var [K] (static checks only:
    the values of x are the caller's job, see :func:`check_data`)."""
    x = _as_float_vector("x", x)
    mean = _as_float_vector("mean", mean)
    log_var = _as_float_vector("log_var", log_var)
    if mean.shape != log_var.shape:
        raise ConfigError(
            f"mean and log_var must have the same shape [K], got {tuple(mean.shape)} and "
            f"{tuple(log_var.shape)}."
        )
    return x, mean, log_var


def check_start(start, latent_dim: int):
    """An AIS ``start``: None (the prior) or (mean [K], log_var [K])."""
    if start is None:
        return None
    try:
        mean, log_var = start
    except (TypeError, ValueError):
        raise ConfigError("start must be None (anneal from the prior) or a pair (mean [K], log_var [K]) of "
                          "q(z|x).") from None
    mean, log_var = jnp.asarray(mean), jnp.asarray(log_var)
    if mean.shape != (latent_dim,) or log_var.shape != (latent_dim,):
        raise ConfigError(f"start must be (mean [K], log_var [K]) with K = latent_dim = {latent_dim}, got shapes "
                          f"{tuple(mean.shape)} and {tuple(log_var.shape)}; for a batch, vmap over examples.")
    return mean, log_var


def check_prior_weight(prior_weight) -> float:
    """A defensive start's prior weight d: a number in [0, 1) (d = 1 would be the prior start itself)."""
    try:
        d = float(prior_weight)
    except (TypeError, ValueError):
        raise ConfigError(f"prior_weight must be a number in [0, 1), got {prior_weight!r}.") from None
    if not 0.0 <= d < 1.0:
        raise ConfigError(f"prior_weight must be in [0, 1) (the prior's share of the start (1 - d) q + d p(z)), "
                          f"got {d}; to start from the prior itself, give no start.")
    return d


def is_binary(images) -> bool:
    """Whether every value is exactly 0 or 1 (one pass over the data)."""
    images = np.asarray(images)
    return bool(np.all((images == 0) | (images == 1)))


def check_data(images, data_dim: int, likelihood: str, *, name: str = "data", binarize: bool = False):
    """Raises :class:`DataError` when ``images`` [N, D] cannot be modelled: a shape other than [N, data_dim],
    integer dtype, NaN or infinity, values other than 0/1 for a Bernoulli likelihood (unless they are grey
    levels in [0, 1] to be ``binarize``d), or other than levels k / 255 for a discretized one. One pass over the data, on the host."""
    images = np.asarray(images)
    if images.ndim != 2 or images.shape[1] != data_dim:
        raise DataError(f"{name} has shape {images.shape} but the model expects data_dim={data_dim}: flattened "
                        f"examples of shape [N, {data_dim}].")
    if images.dtype != np.bool_ and not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{name} has dtype {images.dtype}; convert it to float explicitly (astype(float32) for "
                        "0/1 values, / 255 for 8-bit grey levels).")
    if not np.all(np.isfinite(images)):
        raise DataError(f"{name} contains NaN or Inf values; clean the data first.")
    if likelihood == "bernoulli":
        if binarize:
            if images.min(initial=0.0) < 0 or images.max(initial=0.0) > 1:
                raise DataError(f"{name} has values outside [0, 1]; binarization needs grey levels in [0, 1] "
                                "(divide 8-bit levels by 255).")
        elif not is_binary(images):
            raise DataError(f"{name} holds values other than 0 and 1 (grey levels?) but the Bernoulli likelihood needs "
                            "0/1 data: binarize it (vae-jax train --binarize, or vae_jax.data.binarize) or use a "
                            "Gaussian likelihood (--likelihood gaussian).")
    if likelihood.startswith("discretized"):
        levels = images.astype(np.float64) * 255
        if images.min(initial=0.0) < 0 or images.max(initial=0.0) > 1 or np.max(
                np.abs(levels - np.round(levels)), initial=0.0) > 1e-3:
            raise DataError(f"{name} holds values that are not 8-bit levels k / 255, which the {likelihood} likelihood "
                            "models; give uint8 images (or levels / 255), or use --likelihood gaussian for "
                            "continuous data.")
