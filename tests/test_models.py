"""The VAE's pure functions: shapes, likelihood formulas, learned sigma and config validation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax as vj


def _setup(**kwargs):
    config = vj.ModelConfig(data_dim=12, latent_dim=3, hidden=(16, 8), **kwargs)
    vae = vj.VAE(config)
    return vae, vae.init(jax.random.key(0)), jax.random.uniform(jax.random.key(1), (12,))


def test_shapes_and_bernoulli_likelihood():
    vae, params, x = _setup()
    x = jnp.round(x)
    mean, log_var = vae.encode(params, x)
    chex.assert_shape((mean, log_var), (3,))
    z = jnp.array([0.1, -0.4, 2.0])
    logits = vae.decode(params, z)
    chex.assert_shape(logits, (12,))
    np.testing.assert_allclose(vae.log_likelihood(params, x, z), vj.bernoulli_log_prob(x, logits), rtol=1e-6)
    np.testing.assert_allclose(vae.mean_image(params, z), jax.nn.sigmoid(logits), rtol=1e-6)


def test_gaussian_fixed_sigma_likelihood():
    vae, params, x = _setup(likelihood="gaussian", sigma=0.2)
    z = jnp.ones(3)
    g = vae.decode(params, z)
    expected = -np.sum((x - g) ** 2) / (2 * 0.04) - 12 / 2 * np.log(2 * np.pi * 0.04)
    np.testing.assert_allclose(vae.log_likelihood(params, x, z), expected, rtol=1e-5)
    assert "log_sigma" not in params["decoder"]["params"]


def test_gaussian_learned_sigma_is_a_parameter_with_gradient():
    vae, params, x = _setup(likelihood="gaussian", sigma=0.5, learn_sigma=True)
    log_sigma = params["decoder"]["params"]["log_sigma"]
    np.testing.assert_allclose(log_sigma, np.log(0.5) * np.ones(12), rtol=1e-6)
    grads = jax.grad(vae.log_likelihood)(params, x, jnp.zeros(3))
    assert np.all(np.abs(grads["decoder"]["params"]["log_sigma"]) > 0)
    np.testing.assert_allclose(vae.log_sigma(params), log_sigma)


def test_learned_sigma_has_a_floor():
    vae, params, x = _setup(likelihood="gaussian", sigma=0.5, learn_sigma=True, min_sigma=0.01)
    params["decoder"]["params"]["log_sigma"] = jnp.full(12, -50.0)
    np.testing.assert_allclose(vae.log_sigma(params), np.log(0.01), rtol=1e-6)
    assert np.isfinite(vae.log_likelihood(params, x, jnp.zeros(3)))


def test_batched_with_vmap_matches_single():
    vae, params, _ = _setup()
    xs = jnp.round(jax.random.uniform(jax.random.key(2), (5, 12)))
    means, _ = jax.vmap(vae.encode, (None, 0))(params, xs)
    # Batched and single matmuls sum in different orders: float32 rounding relative to the size of
    # the summands (~1), not of a result that may cancel to near 0.
    np.testing.assert_allclose(means[3], vae.encode(params, xs[3])[0], rtol=1e-6, atol=1e-6)


def test_log_var_is_clipped_to_safe_range():
    vae, params, _ = _setup(min_log_var=-1.0, max_log_var=1.0)
    big = jax.tree_util.tree_map(lambda p: p * 50, params)
    _, log_var = vae.encode(big, jnp.ones(12))
    assert np.all(log_var >= -1.0) and np.all(log_var <= 1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"latent_dim": 0}, "latent_dim must be a positive integer"),
        ({"hidden": (10, -1)}, "hidden sizes"),
        ({"activation": "sigmoidish"}, "unknown activation"),
        ({"likelihood": "poisson"}, "unknown likelihood"),
        ({"sigma": 0.0}, "sigma must be a positive"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vj.ModelConfig(**kwargs)


def test_config_json_round_trip():
    config = vj.ModelConfig(latent_dim=7, hidden=(30,), likelihood="gaussian", learn_sigma=True)
    import json

    assert vj.ModelConfig.from_dict(json.loads(config.to_json())) == config


def test_shapes_that_disagree_with_the_model_get_clear_errors():
    vae, params, x = _setup()
    with pytest.raises(ValueError, match=r"z must have shape \[3\] \(latent_dim"):
        vae.log_likelihood(params, x, jnp.zeros(5))
    with pytest.raises(ValueError, match=r"x must have shape \[12\] \(data_dim"):
        vae.encode(params, jnp.zeros(10))
    with pytest.raises(ValueError, match="jax.vmap"):
        vae.encode(params, jnp.zeros((4, 12)))
    # The naive estimator with a latent_dim that is not the model's says so, not an XLA error.
    with pytest.raises(ValueError, match="latent_dim"):
        vj.naive_log_marginal(jax.random.key(0), vae.likelihood_fn(params), x, 7, 10)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (9, 13, 2), (4, 4, 1)])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_conv_networks_take_any_image_shape(shape, likelihood):
    """Odd sizes too: the decoder's (h 2^L, w 2^L) grid is cropped to (H, W); the output bias is per pixel."""
    vae = vj.VAE(vj.ModelConfig(data_shape=shape, architecture="conv", latent_dim=3, hidden=(16,), channels=(4, 8),
                                likelihood=likelihood))
    params = vae.init(jax.random.key(0))
    d = int(np.prod(shape))
    x = jnp.round(jax.random.uniform(jax.random.key(1), (d,)))
    mean, log_var = vae.encode(params, x)
    chex.assert_shape((mean, log_var), (3,))
    out = vae.decode(params, mean)
    chex.assert_shape(out, (d,))
    assert np.isfinite(float(vae.log_likelihood(params, x, mean)))
    h, w = vj.models.conv_grid(vae.config)
    assert (h, w) == (-(-shape[0] // 4), -(-shape[1] // 4))
    assert sorted(params["encoder"]["params"]) == ["conv_0", "conv_1", "dense", "out"]
    assert sorted(params["decoder"]["params"]) == ["deconv_0", "dense", "output_bias", "project", "to_image"]
    # Parameter surgery by named path: the data mean becomes the output bias, nothing else changes.
    data_mean = jnp.linspace(0.1, 0.9, d)
    biased = vae.with_output_bias(params, data_mean)
    expected = jnp.log(data_mean / (1 - data_mean)) if likelihood == "bernoulli" else data_mean
    # float32 logits near 0 (means near 0.5) carry absolute, not relative, rounding of ~1e-7
    np.testing.assert_allclose(biased["decoder"]["params"]["output_bias"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vae.decode(biased, mean) - out, expected, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_equal(biased["encoder"], params["encoder"])


def test_conv_encoder_layer_is_a_stride_2_same_convolution():
    """The first encoder layer against a NumPy convolution written out: 3 x 3 kernel, stride 2, SAME padding
    (TensorFlow's rule: pad max((out - 1) 2 + 3 - in, 0) in total, the smaller half before), on a 7 x 6 image."""
    vae = vj.VAE(vj.ModelConfig(data_shape=(7, 6, 2), architecture="conv", latent_dim=2, hidden=(4,), channels=(3,),
                                activation="relu"))
    params = vae.init(jax.random.key(2))
    x = np.asarray(jax.random.uniform(jax.random.key(3), (7 * 6 * 2,)))
    layer = params["encoder"]["params"]["conv_0"]
    kernel, bias = np.asarray(layer["kernel"]), np.asarray(layer["bias"])  # [3, 3, 2, 3], [3]
    image = x.reshape(7, 6, 2)
    out_h, out_w = 4, 3
    pad_h, pad_w = max((out_h - 1) * 2 + 3 - 7, 0), max((out_w - 1) * 2 + 3 - 6, 0)
    padded = np.pad(image, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    expected = np.array([[np.einsum("ijc,ijco->o", padded[2 * r:2 * r + 3, 2 * c:2 * c + 3], kernel) + bias
                          for c in range(out_w)] for r in range(out_h)])
    dense = params["encoder"]["params"]["dense"]
    hidden = np.maximum(np.maximum(expected, 0).reshape(-1) @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"]), 0)
    head = params["encoder"]["params"]["out"]
    mean = (hidden @ np.asarray(head["kernel"]) + np.asarray(head["bias"]))[:2]
    np.testing.assert_allclose(vae.encode(params, x)[0], mean, rtol=1e-5, atol=1e-6)


def test_conv_config_needs_images_large_enough():
    with pytest.raises(ValueError, match="at least 8 x 8 for 3 stride-2 layers"):
        vj.ModelConfig(data_shape=(6, 20, 1), architecture="conv", channels=(8, 16, 32))
    with pytest.raises(ValueError, match="conv architecture needs images"):
        vj.ModelConfig(data_dim=30, architecture="conv")
    with pytest.raises(ValueError, match="channels must list"):
        vj.ModelConfig(architecture="conv", channels=())
