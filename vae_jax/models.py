"""The VAE as pure functions of explicit parameters.

Flax modules define the MLPs; :class:`VAE` exposes them as pure functions for ONE example
(batch with ``jax.vmap``):

    params = vae.init(key)
    mean, log_var = vae.encode(params, x)          # x [D] -> [K], [K]
    out = vae.decode(params, z)                    # z [K] -> [D] logits or mean
    vae.log_likelihood(params, x, z)               # log p(x|z), scalar, nats
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import conv, validation
from vae_jax.config import ModelConfig
from vae_jax.distributions import Likelihood, likelihood as likelihood_named
from vae_jax.types import Array, ArrayLike, Params, PRNGKey
from vae_jax.errors import ConfigError


def _activation(name: str):
    return getattr(jax.nn, name)


def _replace_at(tree: dict, path: tuple[str, ...], value):
    """A copy of the nested dict ``tree`` with ``value`` at ``path`` (the original is not changed)."""
    if not path:
        return value
    return {**tree, path[0]: _replace_at(tree[path[0]], path[1:], value)}


class MLP(nn.Module):
    """Dense layers ``Dense_0 .. Dense_{L-1}`` with an activation between them, a linear last layer.

    The names are explicit and the ones Flax gave them before they were (``MLP_0/Dense_i`` inside the
    encoder and decoder), so run folders of every version load.
    """

    features: tuple[int, ...]
    activation: str

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i, width in enumerate(self.features[:-1]):
            x = _activation(self.activation)(nn.Dense(width, name=f"Dense_{i}")(x))
        return nn.Dense(self.features[-1], name=f"Dense_{len(self.features) - 1}")(x)


def _split_mean_log_var(out: Array, config: ModelConfig) -> tuple[Array, Array]:
    mean, log_var = jnp.split(out, 2, axis=-1)
    return mean, jnp.clip(log_var, config.min_log_var, config.max_log_var)


class Encoder(nn.Module):
    """x [D] -> (mean [K], log_var [K]) of q(z|x), log_var clipped to a safe range.

    ``mlp``: the MLP ``MLP_0`` over the flat x. ``conv``: x as an [H, W, C] image through ``conv_i`` (3 x 3,
    stride 2, ``channels[i]`` filters, SAME padding, so each halves H and W rounding up), flattened, then
    ``dense`` (``hidden[-1]`` units) and ``out`` (2K).
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        c = self.config
        if c.architecture == "mlp":
            return _split_mean_log_var(MLP((*c.hidden, 2 * c.latent_dim), c.activation, name="MLP_0")(x), c)
        act = _activation(c.activation)
        h = x.reshape(c.data_shape)
        for i, width in enumerate(c.channels):
            h = act(conv.Conv(width, name=f"conv_{i}")(h))
        h = act(nn.Dense(c.hidden[-1], name="dense")(h.reshape(-1)))
        return _split_mean_log_var(nn.Dense(2 * c.latent_dim, name="out")(h), c)


def likelihood_of(config: ModelConfig) -> Likelihood:
    """The decoder likelihood ``config`` names (its mixture components included)."""
    return likelihood_named(config.likelihood, config.mixture_components)


def output_dim(config: ModelConfig) -> int:
    """Length of the decoder's output g(z): P numbers per data value, P D (P = 1 but for the discretized
    logistics: 2 for one, 3 M for a mixture of M), pixel-major (g.reshape(D, P))."""
    return config.data_dim * likelihood_of(config).params_per_value


def conv_grid(config: ModelConfig) -> tuple[int, int]:
    """(h, w) of the decoder's first feature map: ceil(H / 2^L), ceil(W / 2^L) for L strided layers. The
    decoder's L transposed convolutions double it back to (h 2^L, w 2^L) >= (H, W), cropped to (H, W)."""
    scale = 2 ** len(config.channels)
    return -(-config.data_shape[0] // scale), -(-config.data_shape[1] // scale)


class Decoder(nn.Module):
    """z [K] -> (g(z) [P D], log_sigma [D]); log_sigma is used by the Gaussian likelihood only.

    ``mlp``: the MLP ``MLP_0`` (its last layer's bias is the output bias). ``conv``: ``dense`` (``hidden[-1]``
    units), ``project`` to a (h, w, channels[-1]) map (:func:`conv_grid`), ``deconv_i`` transposed convolutions
    (3 x 3, stride 2, the channels in reverse order), ``to_image`` (3 x 3, C P filters, no bias), cropped to
    (H, W), flattened, plus ``output_bias`` [P D], one per output value. P is the likelihood's outputs per
    data value (:func:`output_dim`).
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, z: Array) -> tuple[Array, Array]:
        c = self.config
        if c.architecture == "mlp":
            out = MLP((*reversed(c.hidden), output_dim(c)), c.activation, name="MLP_0")(z)
        else:
            act = _activation(c.activation)
            h, w = conv_grid(c)
            g = act(nn.Dense(c.hidden[-1], name="dense")(z))
            g = act(nn.Dense(h * w * c.channels[-1], name="project")(g)).reshape(h, w, c.channels[-1])
            for i, width in enumerate(reversed(c.channels[:-1])):
                g = act(conv.ConvTranspose(width, name=f"deconv_{i}")(g))
            g = conv.ConvTranspose(output_dim(c) // (c.data_shape[0] * c.data_shape[1]), use_bias=False,
                                   name="to_image")(g)
            bias = self.param("output_bias", nn.initializers.zeros, (output_dim(c),), jnp.float32)
            out = g[: c.data_shape[0], : c.data_shape[1]].reshape(-1) + bias
        learned = self.param("log_sigma", nn.initializers.constant(math.log(c.sigma)), (c.data_dim,),
                             jnp.float32) if c.learn_sigma else None
        return out, decoder_log_sigma(c, learned, out.dtype)


def decoder_log_sigma(config: ModelConfig, learned: Array | None, dtype) -> Array:
    """[D] log sigma of the Gaussian decoder: a ``learned`` parameter floored at log ``min_sigma`` (a pixel that
    is constant in the data would drive it to -infinity), else the fixed log ``sigma``."""
    if learned is not None:
        return jnp.maximum(learned, math.log(config.min_sigma))
    return jnp.full((config.data_dim,), math.log(config.sigma), dtype)


def output_bias_path(config: ModelConfig) -> tuple[str, ...]:
    """Where the decoder's per-output bias [P D] lives in ``params["decoder"]["params"]``."""
    if config.architecture == "mlp":
        return ("MLP_0", f"Dense_{len(config.hidden)}", "bias")
    return ("output_bias",)


@dataclasses.dataclass(frozen=True)
class VAE:
    """Encoder, decoder and likelihood of a VAE as pure functions of ``params``.

    ``params`` is ``{"encoder": ..., "decoder": ...}``; the learned Gaussian log-sigma, when present,
    is ``params["decoder"]["params"]["log_sigma"]``.
    """

    config: ModelConfig
    modules: tuple | None = dataclasses.field(default=None, repr=False)  # a user's (encoder, decoder)

    def __post_init__(self):
        if self.config.data_shape is None:
            raise ConfigError("the model's data_shape is not set (None means 'from the training data', which only "
                              "training fills in); give ModelConfig(data_shape=(H, W, C)) or data_dim=D.")
        if (self.config.architecture == "custom") != (self.modules is not None):
            raise ConfigError(f"this model config is for {self.config.modules or 'custom modules'}: build the VAE "
                              "with VAE.from_modules(encoder, decoder, ...), the modules themselves are not saved"
                              if self.modules is None else
                              "modules are given but the config's architecture is not 'custom'; use VAE.from_modules.")

    @classmethod
    def from_modules(cls, encoder, decoder, *, data_shape, latent_dim: int, likelihood: str = "bernoulli",
                     sigma: float | str = 1.0, **config) -> "VAE":
        """A VAE of a user's own Flax modules, Linen or NNX (:mod:`vae_jax.custom_modules` states the contract):
        ``encoder`` maps one example x [H, W, C] to (mean [K], log_var [K]); ``decoder`` maps z [K] to what the
        likelihood needs, shaped like the data (Bernoulli logits, or the Gaussian mean). ``sigma="learned"``
        learns a per-pixel Gaussian sigma; other ``config`` fields (``min_log_var``, ...) as for
        :class:`ModelConfig`. Every estimator, ``evaluate``, AIS and :func:`vae_jax.fit` take the result."""
        from vae_jax.custom_modules import describe

        learned = sigma == "learned"
        model = ModelConfig(data_shape=tuple(data_shape), latent_dim=latent_dim, likelihood=likelihood,
                            sigma=1.0 if learned else sigma, learn_sigma=learned, architecture="custom",
                            modules=f"{describe(encoder)} / {describe(decoder)}", **config)
        return cls(model, (encoder, decoder))

    @functools.cached_property
    def encoder(self):
        """The encoder as a pure ``init`` / ``apply`` pair (a Flax module, or an adapter of the user's)."""
        if self.modules is not None:
            from vae_jax.custom_modules import adapt

            return adapt(self.modules[0], self.config, "encoder")
        return Encoder(self.config)

    @functools.cached_property
    def decoder(self):
        """The decoder as a pure ``init`` / ``apply`` pair (a Flax module, or an adapter of the user's)."""
        if self.modules is not None:
            from vae_jax.custom_modules import adapt

            return adapt(self.modules[1], self.config, "decoder")
        return Decoder(self.config)

    @property
    def likelihood(self) -> Likelihood:
        """The decoder's likelihood (log density, its matrix form, the mean image), chosen once here."""
        return likelihood_of(self.config)

    def init(self, key: PRNGKey) -> Params:
        """Initial parameters drawn from ``key`` (jitted: op by op, a conv network's initialisation compiled
        ~30 small programs, 15 s on this 2-core CPU)."""
        return self._init(key)

    @functools.cached_property
    def _init(self):
        def init(key):
            enc_key, dec_key = jax.random.split(key)
            return {
                "encoder": self.encoder.init(enc_key, jnp.zeros((self.config.data_dim,))),
                "decoder": self.decoder.init(dec_key, jnp.zeros((self.config.latent_dim,))),
            }

        return jax.jit(init)

    def with_output_bias(self, params: Params, data_mean: ArrayLike) -> Params:
        """``params`` with the decoder's output bias set from the data's per-dimension means [D].

        Bernoulli: bias = logit(clip(mean, 1e-4, 1 - 1e-4)), so sigmoid(g(z)) starts near the mean image;
        Gaussian: bias = mean; discretized logistics: each component's location = mean, log scale -3, equal
        weights. (Burda et al. 2015 initialise their decoders this way.)
        """
        if self.modules is not None:
            raise ConfigError("with_output_bias needs to know where the decoder's output bias is, which vae-jax knows "
                              "for its own networks only; set the bias in your decoder (or train with "
                              "output_bias_init='zero').")
        mean = self._check("data_mean", data_mean, self.config.data_dim, "data_dim").astype(jnp.float32)
        return {**params, "decoder": _replace_at(params["decoder"], ("params", *output_bias_path(self.config)),
                                                 self.likelihood.output_for_mean(mean))}

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
        """z [K] -> g(z) [P D]: Bernoulli logits, the Gaussian mean, or the discretized logistics' parameters
        (pixel-major, :func:`output_dim`)."""
        z = self._check("z", z, self.config.latent_dim, "latent_dim")
        return self.decoder.apply(params["decoder"], z)[0]

    def log_sigma(self, params: Params) -> Array:
        """[D] log standard deviation of the Gaussian decoder (fixed or learned)."""
        return self.decoder.apply(params["decoder"], jnp.zeros((self.config.latent_dim,)))[1]

    def log_likelihood(self, params: Params, x: ArrayLike, z: ArrayLike) -> Array:
        """log p(x|z) in nats for one example x [D] and one latent z [K].

        Bernoulli: sum_d x_d log s(g_d) + (1 - x_d) log s(-g_d).
        Gaussian: -||x - g(z)||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2) (per-dimension when learned).
        Discretized logistic (mixture): sum_d log P(x_d), each 8-bit value's bin probability
        (:func:`vae_jax.distributions.discretized_logistic_log_prob_bins`).
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
        """E[x|z] [D]: sigmoid(logits) for Bernoulli, g(z) for Gaussian, sum_k k/255 P(k) for the discretized."""
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
