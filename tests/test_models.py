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
