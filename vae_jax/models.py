"""The VAE as pure functions of explicit parameters.

Flax modules define the MLPs; :class:`VAE` exposes them as pure functions for ONE example
(batch with ``jax.vmap``):

    params = vae.init(key)
    mean, log_var = vae.encode(params, x)          # x [D] -> [K], [K]
    out = vae.decode(params, z)                    # z [K] -> [D] logits or mean
    vae.log_likelihood(params, x, z)               # log p(x|z), scalar, nats
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import validation
from vae_jax.config import ModelConfig
from vae_jax.distributions import LIKELIHOODS, Likelihood
from vae_jax.types import Array, ArrayLike, Params, PRNGKey
from vae_jax.errors import ConfigError


def _activation(name: str):
    return getattr(jax.nn, name)


class MLP(nn.Module):
    """Dense layers with an activation between them, a linear last layer."""

    features: tuple[int, ...]
    activation: str

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for width in self.features[:-1]:
            x = _activation(self.activation)(nn.Dense(width)(x))
        return nn.Dense(self.features[-1])(x)


class Encoder(nn.Module):
    """x [D] -> (mean [K], log_var [K]) of q(z|x), log_var clipped to a safe range."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        c = self.config
        out = MLP((*c.hidden, 2 * c.latent_dim), c.activation)(x)
        mean, log_var = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_var, c.min_log_var, c.max_log_var)


class Decoder(nn.Module):
    """z [K] -> (g(z) [D], log_sigma [D]); log_sigma is unused by the Bernoulli likelihood."""

    config: ModelConfig

    @nn.compact
    def __call__(self, z: Array) -> tuple[Array, Array]:
        c = self.config
        out = MLP((*reversed(c.hidden), c.data_dim), c.activation)(z)
        if c.learn_sigma:
            init = nn.initializers.constant(math.log(c.sigma))
            log_sigma = jnp.maximum(self.param("log_sigma", init, (c.data_dim,), jnp.float32), math.log(c.min_sigma))
        else:
            log_sigma = jnp.full((c.data_dim,), math.log(c.sigma), out.dtype)
        return out, log_sigma


@dataclasses.dataclass(frozen=True)
class VAE:
    """Encoder, decoder and likelihood of a VAE as pure functions of ``params``.

    ``params`` is ``{"encoder": ..., "decoder": ...}``; the learned Gaussian log-sigma, when present,
    is ``params["decoder"]["params"]["log_sigma"]``.
    """

    config: ModelConfig

    def __post_init__(self):
        if self.config.data_shape is None:
            raise ConfigError("the model's data_shape is not set (None means 'from the training data', which only "
                              "training fills in); give ModelConfig(data_shape=(H, W, C)) or data_dim=D.")

    @property
    def encoder(self) -> Encoder:
        return Encoder(self.config)

    @property
    def decoder(self) -> Decoder:
        return Decoder(self.config)

    @property
    def likelihood(self) -> Likelihood:
        """The decoder's likelihood (log density, its matrix form, the mean image), chosen once here."""
        return LIKELIHOODS[self.config.likelihood]

    def init(self, key: PRNGKey) -> Params:
        """Initial parameters drawn from ``key``."""
        enc_key, dec_key = jax.random.split(key)
        return {
            "encoder": self.encoder.init(enc_key, jnp.zeros((self.config.data_dim,))),
            "decoder": self.decoder.init(dec_key, jnp.zeros((self.config.latent_dim,))),
        }

    def with_output_bias(self, params: Params, data_mean: ArrayLike) -> Params:
        """``params`` with the decoder's output bias set from the data's per-dimension means [D].

        Bernoulli: bias = logit(clip(mean, 1e-4, 1 - 1e-4)), so sigmoid(g(z)) starts near the mean image;
        Gaussian: bias = mean. (Burda et al. 2015 initialise their decoders this way.)
        """
        mean = self._check("data_mean", data_mean, self.config.data_dim, "data_dim").astype(jnp.float32)
        mean = self.likelihood.output_for_mean(mean)
        last = f"Dense_{len(self.config.hidden)}"
        mlp = params["decoder"]["params"]["MLP_0"]
        mlp = {**mlp, last: {**mlp[last], "bias": mean}}
        decoder = {**params["decoder"], "params": {**params["decoder"]["params"], "MLP_0": mlp}}
        return {**params, "decoder": decoder}

    def _check(self, name: str, value: ArrayLike, size: int, what: str) -> Array:
        value = validation.as_float_data(name, value) if name == "x" else jnp.asarray(value)
        if value.ndim != 1 or value.shape[0] != size:
            raise ConfigError(f"{name} must have shape [{size}] ({what} of this model), got {tuple(value.shape)}; "
                             "functions of the model take one example: batch them with jax.vmap.")
        return value

    def check_data(self, xs: ArrayLike, *, binarize: bool = False):
        """Raises :class:`vae_jax.errors.DataError` unless ``xs`` [N, D] suits this model: float (or bool)
        values, finite, and 0/1 for a Bernoulli likelihood (grey levels in [0, 1] with ``binarize``).

        The model's functions and the estimators check shapes and dtypes on every call, for free under jit,
        but not values: a Bernoulli model given grey levels returns numbers that are not log-probabilities.
        This one pass over the data is that check; call it once per data set.
        """
        validation.check_data(xs, self.config.data_dim, self.config.likelihood, name="xs", binarize=binarize)

    def encode(self, params: Params, x: ArrayLike) -> tuple[Array, Array]:
        """x [D] -> (mean [K], log_var [K]) of q(z|x) = N(mean, diag exp(log_var))."""
        x = self._check("x", x, self.config.data_dim, "data_dim")
        return self.encoder.apply(params["encoder"], x.astype(jnp.float32))

    def decode(self, params: Params, z: ArrayLike) -> Array:
        """z [K] -> g(z) [D]: Bernoulli logits, or the Gaussian mean."""
        z = self._check("z", z, self.config.latent_dim, "latent_dim")
        return self.decoder.apply(params["decoder"], z)[0]

    def log_sigma(self, params: Params) -> Array:
        """[D] log standard deviation of the Gaussian decoder (fixed or learned)."""
        return self.decoder.apply(params["decoder"], jnp.zeros((self.config.latent_dim,)))[1]

    def log_likelihood(self, params: Params, x: ArrayLike, z: ArrayLike) -> Array:
        """log p(x|z) in nats for one example x [D] and one latent z [K].

        Bernoulli: sum_d x_d log s(g_d) + (1 - x_d) log s(-g_d).
        Gaussian: -||x - g(z)||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2) (per-dimension when learned).
        """
        x = self._check("x", x, self.config.data_dim, "data_dim")
        z = self._check("z", z, self.config.latent_dim, "latent_dim")
        out, log_sigma = self.decoder.apply(params["decoder"], z)
        return self.likelihood.log_prob(x, out, log_sigma)

    def log_likelihood_matrix(self, params: Params, xs: ArrayLike, z: ArrayLike) -> Array:
        """log p(x_n | z_c) for every pair: xs [N, D], z [C, K] -> [N, C], as matrix products.

        Each z_c is decoded once, not once per example (see
        :func:`vae_jax.distributions.bernoulli_log_prob_matrix` and ``gaussian_log_prob_matrix``).
        """
        xs = validation.as_float_data("xs", xs)
        if xs.ndim != 2 or xs.shape[1] != self.config.data_dim:
            raise ConfigError(f"xs must have shape [N, {self.config.data_dim}], got {tuple(xs.shape)}.")
        out, log_sigma = jax.vmap(lambda z_c: self.decoder.apply(params["decoder"], z_c))(jnp.asarray(z))
        return self.likelihood.log_prob_matrix(xs, out, log_sigma[0])

    def mean_image(self, params: Params, z: ArrayLike) -> Array:
        """E[x|z] [D]: sigmoid(logits) for Bernoulli, g(z) for Gaussian."""
        return self.likelihood.mean(self.decode(params, z))

    def simulate(self, params: Params, key: PRNGKey) -> tuple[Array, Array]:
        """(z [K], x [D]) drawn from the model's joint p(z) p(x|z); z is then an exact sample of p(z|x)."""
        z_key, x_key = jax.random.split(key)
        z = jax.random.normal(z_key, (self.config.latent_dim,))
        out, log_sigma = self.decoder.apply(params["decoder"], z)
        return z, self.likelihood.sample(x_key, out, log_sigma)

    def likelihood_fn(self, params: Params):
        """(x, z) -> log p(x|z) with ``params`` closed over, for the estimators."""
        return lambda x, z: self.log_likelihood(params, x, z)
