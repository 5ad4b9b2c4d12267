"""Data-parallel training and evaluation on 4 CPU devices agree with one device to float rounding."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import json, sys
import jax
import numpy as np
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.evaluate import evaluate
from vae_jax.data import DataOptions
from vae_jax.train_loop import train_and_evaluate
from vae_jax.rundir import load_run
from vae_jax.models import VAE
from vae_jax import data
workdir, manual, data_dir = sys.argv[1:4]
config = ExperimentConfig(ModelConfig(latent_dim=5, hidden=(64,)),
                          TrainConfig(train_split="train[:2000]", valid_split="validation[:200]", epochs=2))
messages = []
train_and_evaluate(config, workdir, DataOptions(data_dir=data_dir, manual_dir=manual), progress=False,
                   log=messages.append)
params = load_run(workdir)[2]
sharding = " ".join(m for m in messages if "data-parallel" in m)  # the trained state's sharding, logged
xs = data.load("binarized_mnist", "test[:10]", data_dir=data_dir, manual_dir=manual).as_float()
result = evaluate(VAE(config.model), params, xs, jax.random.key(0), num_samples=100, naive_samples=1000,
                  chunk_size=64)
leaves = [np.asarray(l).ravel().tolist() for l in jax.tree_util.tree_leaves(params)]
print(json.dumps({"devices": jax.device_count(), "sharding": sharding,
                  "params": leaves, "eval": {k: result[k]["mean"] for k in ("elbo", "importance", "naive")}}))
"""


def _run(tmp_path, name, shared_data, data_dir, devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"  # simulated devices are host devices, also where a GPU is present
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / name), str(shared_data), str(data_dir)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_four_devices_agree_with_one(shared_data, data_dir, tmp_path):
    one = _run(tmp_path, "one", shared_data, data_dir, 1)
    four = _run(tmp_path, "four", shared_data, data_dir, 4)
    assert one["devices"] == 1 and four["devices"] == 4
    assert "data" not in one["sharding"] and "NamedSharding" in four["sharding"]  # replicated over the mesh
    for a, b in zip(one["params"], four["params"]):
        # The all-reduced gradient sums in another order: float32 rounding only (1.2e-7 seen after 40 steps).
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for name in ("elbo", "importance", "naive"):
        np.testing.assert_allclose(one["eval"][name], four["eval"][name], rtol=1e-6)


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_on_localhost_agree_with_one(shared_data, data_dir, tmp_path):
    """jax.distributed over two local processes (gloo CPU collectives), 2 devices each: same parameters."""
    from vae_jax.rundir import load_run

    common = ["--train-split", "train[:2000]", "--valid-split", "validation[:200]", "--epochs", "2",
              "--latent-dim", "5", "--hidden", "64", "--no-progress", "--manual-dir", str(shared_data),
              "--data-dir", str(data_dir)]
    subprocess.run([sys.executable, "-m", "vae_jax", "train", "--workdir", str(tmp_path / "single"), *common],
                   check=True, capture_output=True)
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "vae_jax", "train", "--workdir", str(tmp_path / "multi"), *common,
                               "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2",
                               "--process-id", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    single, multi = load_run(tmp_path / "single"), load_run(tmp_path / "multi")
    assert single[3] == multi[3]
    for a, b in zip(jax_leaves(single[2]), jax_leaves(multi[2])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    lines = (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]  # written once, by process 0


def jax_leaves(tree):
    import jax

    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def test_importing_vae_jax_leaves_the_backend_alone():
    """jax.distributed.initialize must run before the backend starts: importing the library and the CLI
    (blackjax included) must not start it."""
    code = ("from jax._src import xla_bridge as xb\nimport vae_jax, vae_jax.cli, vae_jax.evaluate\n"
            "print(bool(xb._backends))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
