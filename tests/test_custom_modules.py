"""A user's own Flax modules, Linen and NNX: VAE.from_modules, fit (run folder, exact resume), load_run(vae=),
and the estimators, checked against the built-in MLP with the same weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vae_jax as vj
from vae_jax.errors import ConfigError, DataError, RunFolderError
from vae_jax.evaluate import evaluate

K = 3
SHAPE = (12, 12, 1)
XS = np.random.default_rng(0).random((200, 12, 12)) < 0.3


class LinenEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):  # x [12, 12, 1]
        h = nn.relu(nn.Conv(4, (3, 3), strides=2, name="conv")(x))
        out = nn.Dense(2 * K, name="head")(h.reshape(-1))
        return out[:K], out[K:]


class LinenDecoder(nn.Module):
    @nn.compact
    def __call__(self, z):  # -> logits [12, 12, 1]
        h = nn.relu(nn.Dense(6 * 6 * 4, name="project")(z)).reshape(6, 6, 4)
        return nn.ConvTranspose(1, (3, 3), strides=(2, 2), name="deconv")(h)


class NNXEncoder(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), strides=2, rngs=rngs)
        self.head = nnx.Linear(6 * 6 * 4, 2 * K, rngs=rngs)

    def __call__(self, x):
        out = self.head(jax.nn.relu(self.conv(x)).reshape(-1))
        return out[:K], out[K:]


class NNXDecoder(nnx.Module):
    def __init__(self, rngs):
        self.project = nnx.Linear(K, 6 * 6 * 4, rngs=rngs)
        self.deconv = nnx.ConvTranspose(4, 1, (3, 3), strides=2, rngs=rngs)

    def __call__(self, z):
        return self.deconv(jax.nn.relu(self.project(z)).reshape(6, 6, 4))


def _pair(kind):
    if kind == "linen":
        return LinenEncoder(), LinenDecoder()
    return NNXEncoder(nnx.Rngs(0)), NNXDecoder(nnx.Rngs(1))


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_fit_resumes_exactly_and_the_estimators_take_the_model(kind, tmp_path):
    vae = vj.VAE.from_modules(*_pair(kind), data_shape=SHAPE, latent_dim=K)
    config = vj.TrainConfig(epochs=2, batch_size=45)
    vj.fit(vae, XS, workdir=tmp_path / "resumed", config=config, progress=False, log=lambda _: None)
    resumed = vj.fit(vae, XS, workdir=tmp_path / "resumed", config=vj.TrainConfig(epochs=3, batch_size=45),
                     progress=False, log=lambda _: None)
    if kind == "nnx":  # the loop is the CLI's, whose exact resume tests/test_train.py checks; here once for NNX
        straight = vj.fit(vae, XS, workdir=tmp_path / "straight", config=vj.TrainConfig(epochs=3, batch_size=45),
                          progress=False, log=lambda _: None)
        for a, b in zip(_leaves(resumed), _leaves(straight), strict=True):  # 180 images: 4 steps an epoch
            np.testing.assert_array_equal(a, b)
    run = vj.load_run(tmp_path / "resumed", vae=vae, log=lambda _: None)
    assert run.step == 12 and run.config.model.architecture == "custom"
    assert run.config.model.modules.startswith("Linen" if kind == "linen" else "NNX")
    for a, b in zip(_leaves(run.params), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    xs = XS[:12].reshape(12, -1).astype(np.float32)
    result = evaluate(vae, run.params, xs, jax.random.key(0), estimators=("elbo", "importance", "ais"),
                      num_samples=100, ais_chains=4, ais_temperatures=100)
    # IS (K = 100) and AIS are both stochastic lower bounds at least as tight as the ELBO on average.
    assert result["importance"]["mean"] >= result["elbo"]["mean"] - 3 * result["elbo"]["stderr"]
    assert np.isfinite(result["ais"]["mean"])
    with pytest.raises(RunFolderError, match="run of your own modules .*load_run\\(workdir, vae="):
        vj.load_run(tmp_path / "resumed")
    other = vj.VAE.from_modules(*_pair(kind), data_shape=SHAPE, latent_dim=K, likelihood="gaussian")
    with pytest.raises(RunFolderError, match="model.likelihood: 'bernoulli' \\(saved\\) != 'gaussian'"):
        vj.load_run(tmp_path / "resumed", vae=other)
    changed = XS.copy()
    changed[0, 0, 0] ^= True
    with pytest.raises(DataError, match="changed since the run was made"):
        vj.fit(vae, changed, workdir=tmp_path / "resumed", config=vj.TrainConfig(epochs=4, batch_size=45),
               progress=False, log=lambda _: None)


class MLPEncoder(nn.Module):
    """The built-in MLP encoder written by a user: the same layers and names, on x [H, W, C]."""

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(16, name="Dense_0")(x.reshape(-1)))
        out = nn.Dense(2 * K, name="Dense_1")(h)
        return out[:K], out[K:]


class MLPDecoder(nn.Module):
    @nn.compact
    def __call__(self, z):
        h = jnp.tanh(nn.Dense(16, name="Dense_0")(z))
        return nn.Dense(144, name="Dense_1")(h).reshape(SHAPE)


@pytest.mark.parametrize("sigma", [None, 0.3, "learned"])
def test_a_custom_copy_of_the_mlp_gives_the_builtin_numbers(sigma):
    """The adapters (reshape, split, log_var clip, flat output, fixed or learned log sigma) against the built-in
    networks with the same weights: every function of the facade agrees."""
    likelihood = "bernoulli" if sigma is None else "gaussian"
    kwargs = {} if sigma is None else {"sigma": sigma}
    custom = vj.VAE.from_modules(MLPEncoder(), MLPDecoder(), data_shape=SHAPE, latent_dim=K, likelihood=likelihood,
                                 **kwargs)
    builtin = vj.VAE(vj.ModelConfig(data_shape=SHAPE, latent_dim=K, hidden=(16,), likelihood=likelihood,
                                    sigma=1.0 if sigma in (None, "learned") else sigma, learn_sigma=sigma == "learned"))
    params = builtin.init(jax.random.key(0))
    decoder = {"inner": params["decoder"]["params"]["MLP_0"]}
    if sigma == "learned":
        params["decoder"]["params"]["log_sigma"] = jnp.linspace(-2.0, 0.5, 144)
        decoder["log_sigma"] = params["decoder"]["params"]["log_sigma"]
    mine = {"encoder": {"params": {"inner": params["encoder"]["params"]["MLP_0"]}}, "decoder": {"params": decoder}}
    assert jax.tree_util.tree_structure(mine) == jax.tree_util.tree_structure(custom.init(jax.random.key(1)))
    x = (XS[0].reshape(-1)).astype(np.float32)
    z = jnp.array([0.3, -1.2, 0.7])
    for a, b in [(custom.encode(mine, x), builtin.encode(params, x)),
                 (custom.decode(mine, z), builtin.decode(params, z)),
                 (custom.log_likelihood(mine, x, z), builtin.log_likelihood(params, x, z)),
                 (custom.log_sigma(mine), builtin.log_sigma(params)),
                 (custom.log_likelihood_matrix(mine, XS[:3].reshape(3, -1).astype(np.float32), z[None]),
                  builtin.log_likelihood_matrix(params, XS[:3].reshape(3, -1).astype(np.float32), z[None]))]:
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(u, v)


class WithBatchNorm(nnx.Module):
    def __init__(self, rngs):
        self.norm = nnx.BatchNorm(144, rngs=rngs)
        self.head = nnx.Linear(144, 2 * K, rngs=rngs)

    def __call__(self, x):
        out = self.head(self.norm(x.reshape(1, -1))[0])
        return out[:K], out[K:]


def test_misuse_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="neither a Flax Linen module .* nor an NNX module"):
        vj.VAE.from_modules(lambda x: x, LinenDecoder(), data_shape=SHAPE, latent_dim=K)
    with pytest.raises(ConfigError, match="state other than parameters"):
        vj.VAE.from_modules(WithBatchNorm(nnx.Rngs(0)), LinenDecoder(), data_shape=SHAPE, latent_dim=K).init(
            jax.random.key(0))
    wrong_k = vj.VAE.from_modules(LinenEncoder(), LinenDecoder(), data_shape=SHAPE, latent_dim=K + 1)
    with pytest.raises(ConfigError, match=r"\(mean \[K\], log_var \[K\]\) with K = latent_dim = 4"):
        wrong_k.init(jax.random.key(0))
    wrong_shape = vj.VAE.from_modules(LinenEncoder(), LinenDecoder(), data_shape=(12, 12, 3), latent_dim=K)
    with pytest.raises(ConfigError, match=r"shaped like the data \(12, 12, 3\); got shape \(12, 12, 1\)"):
        wrong_shape.init(jax.random.key(0))
    vae = vj.VAE.from_modules(LinenEncoder(), LinenDecoder(), data_shape=SHAPE, latent_dim=K)
    with pytest.raises(ConfigError, match="with_output_bias"):
        vae.with_output_bias(vae.init(jax.random.key(0)), np.full(144, 0.5))
    with pytest.raises(ConfigError, match="build the VAE with VAE.from_modules"):
        vj.VAE(vae.config)
    with pytest.raises(DataError, match=r"shape \(10, 10, 1\) but the model was made for \(12, 12, 1\)"):
        vj.fit(vae, XS[:, :10, :10], workdir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_command_line_says_why_it_cannot_evaluate_a_fit_run(tmp_path, capsys):
    """A built-in MLP trained by fit loads (load_run) but its data lives in Python: the CLI says so; a custom
    run cannot even be loaded there."""
    from vae_jax.cli import main

    vae = vj.VAE(vj.ModelConfig(data_shape=SHAPE, latent_dim=K, hidden=(8,)))
    params = vj.fit(vae, XS, workdir=tmp_path / "mlp", config=vj.TrainConfig(epochs=1, batch_size=60),
                    progress=False, log=lambda _: None)
    for a, b in zip(_leaves(vj.load_run(tmp_path / "mlp", log=lambda _: None).params), _leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert main(["evaluate", "--workdir", str(tmp_path / "mlp"), "--estimators", "elbo"]) == 2
    assert "trained by vae_jax.fit on arrays held in Python" in capsys.readouterr().err
    custom = vj.VAE.from_modules(*_pair("linen"), data_shape=SHAPE, latent_dim=K)
    vj.fit(custom, XS, workdir=tmp_path / "custom", config=vj.TrainConfig(epochs=1, batch_size=60), progress=False,
           log=lambda _: None)
    assert main(["sample", "--workdir", str(tmp_path / "custom")]) == 2
    assert "run of your own modules" in capsys.readouterr().err
