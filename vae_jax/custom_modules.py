"""A user's own encoder and decoder (Flax Linen or NNX modules) as the pure ``init`` / ``apply`` pair the
:class:`vae_jax.VAE` facade uses for its built-in networks.

Contract (one example; the facade batches with ``jax.vmap``):

* ``encoder(x)``: x [H, W, C] (or [D] for vector data) -> (mean [K], log_var [K]);
* ``decoder(z)``: z [K] -> what the likelihood needs, shaped like the data (Bernoulli logits or the Gaussian
  mean, [H, W, C]; for the discretized logistics P numbers per value, [H, W, C, P]: location and log scale,
  or M mixture logits, M locations, M log scales).

The adapters reshape x from the flat [D] the rest of vae-jax passes, flatten the decoder's output, clip
log_var to the config's range and add the Gaussian log sigma (fixed, or a learned per-pixel ``log_sigma``
parameter), so everything above the facade stays a function of ``log_likelihood(x, z)``.

Linen modules are initialised from the key as usual. An NNX module arrives already built, with its parameters
drawn from the ``rngs`` it was constructed with: ``init`` returns those (the key is not used), as a plain
nested dict (``nnx.to_pure_dict``), and ``apply`` rebuilds the module with ``nnx.merge`` inside the
traced function, so the parameters are an ordinary pytree for optax, Orbax and ``jit``.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from vae_jax.config import ModelConfig
from vae_jax.errors import ConfigError
from vae_jax.models import decoder_log_sigma, output_dim


def describe(module) -> str:
    """``Linen MyEncoder`` / ``NNX MyEncoder``: what config.json records of a module."""
    return f"{flavour(module)} {type(module).__module__}.{type(module).__qualname__}"


def flavour(module) -> str:
    if isinstance(module, nn.Module):
        return "Linen"
    if isinstance(module, nnx.Module):
        return "NNX"
    raise ConfigError(f"{type(module).__name__} is neither a Flax Linen module (flax.linen.Module) nor an NNX "
                      "module (flax.nnx.Module); wrap your network in one of them.")


def _log_var_clipped(config: ModelConfig, mean, log_var):
    if mean.shape != (config.latent_dim,) or log_var.shape != (config.latent_dim,):
        raise ConfigError(f"the encoder must return (mean [K], log_var [K]) with K = latent_dim = {config.latent_dim}, "
                          f"got shapes {tuple(mean.shape)} and {tuple(log_var.shape)}.")
    return mean, jnp.clip(log_var, config.min_log_var, config.max_log_var)


def _flat_output(config: ModelConfig, out):
    size = output_dim(config)
    if out.size != size:
        per_value = size // config.data_dim
        raise ConfigError(f"the decoder must return {per_value} value{'s' * (per_value > 1)} per data value for the "
                          f"{config.likelihood} likelihood, shaped like the data {config.data_shape}"
                          + (f" with a last axis of {per_value} ([..., C, {per_value}], pixel-major)" if per_value > 1
                             else "") + f"; got shape {tuple(out.shape)}.")
    return out.reshape(size)


class LinenEncoder(nn.Module):
    """A user's Linen encoder (submodule ``inner``) on x reshaped to the data's shape."""

    inner: nn.Module
    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        mean, log_var = self.inner(x.reshape(self.config.data_shape))
        return _log_var_clipped(self.config, mean, log_var)


class LinenDecoder(nn.Module):
    """A user's Linen decoder (submodule ``inner``), its output flattened, with the Gaussian log sigma."""

    inner: nn.Module
    config: ModelConfig

    @nn.compact
    def __call__(self, z):
        c = self.config
        out = _flat_output(c, self.inner(z))
        learned = self.param("log_sigma", nn.initializers.constant(math.log(c.sigma)), (c.data_dim,),
                             jnp.float32) if c.learn_sigma else None
        return out, decoder_log_sigma(c, learned, out.dtype)


class NNXModule:
    """An NNX module as ``init(key, example) -> params`` and ``apply(params, input) -> outputs``.

    ``params`` is ``{"module": <its nnx.Param values as a nested dict>}`` plus ``{"log_sigma": [D]}`` for a
    decoder with a learned sigma. Only ``nnx.Param`` variables are parameters; a module with other state
    (batch statistics, RNG counters) is refused, since the facade's functions are pure.
    """

    def __init__(self, module, config: ModelConfig, role: str):
        self.graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        if jax.tree_util.tree_leaves(rest):
            raise ConfigError(f"the NNX {role} holds state other than parameters ({type(module).__name__}: "
                              "BatchNorm statistics, Dropout RNGs, ...); vae-jax needs pure functions. Remove it, "
                              "or use a Linen module.")
        self.template, self.config, self.role = params, config, role

    def init(self, key, example):
        del key, example  # an NNX module's parameters were drawn when it was built
        params = {"module": nnx.to_pure_dict(self.template)}
        if self.role == "decoder" and self.config.learn_sigma:
            params["log_sigma"] = jnp.full((self.config.data_dim,), math.log(self.config.sigma), jnp.float32)
        return params

    def apply(self, params, value):
        state = jax.tree_util.tree_map(lambda leaf: leaf, self.template)  # a copy to fill, per call
        nnx.replace_by_pure_dict(state, params["module"])
        module = nnx.merge(self.graphdef, state)
        if self.role == "encoder":
            return _log_var_clipped(self.config, *module(value.reshape(self.config.data_shape)))
        out = _flat_output(self.config, module(value))
        return out, decoder_log_sigma(self.config, params.get("log_sigma"), out.dtype)


def adapt(module, config: ModelConfig, role: str):
    """The facade's pure ``init`` / ``apply`` object for a user's Linen or NNX ``module`` (``role``:
    ``"encoder"`` or ``"decoder"``)."""
    if flavour(module) == "Linen":
        return (LinenEncoder if role == "encoder" else LinenDecoder)(module, config)
    return NNXModule(module, config, role)
