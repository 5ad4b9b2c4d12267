"""8-bit MNIST in bits per dimension: MLP and convolutional VAEs with the discretized logistic, its mixture and
the dequantized Gaussian, on the 10,000 grey-level MNIST test images (the only grey-level MNIST here).

Split (TFDS orders the examples by a hash of their key, so slices are a fixed pseudo-random split):
``test[:8000]`` to train, ``test[8000:9000]`` to validate (9,000 images for training and model selection), and
``test[9000:]``, 1,000 images never seen in training, to report. A small training set: the published numbers
train on 60,000 images, so these are not comparable with them as equals (see the results file).

Every model: the epochs of the settings, Adam at 1e-3, batch 100, the decoder's output bias from the data
mean, the latest checkpoint. Reported on the 1,000 held-out images: the ELBO and importance sampling (IS K =
1000) in nats and bits/dim (-log2 P(x) / 784), and AIS on the first 100 of them for the model with the best
IS. Sample grids (mean images E[x|z]) for every model.

    python experiments/eight_bit.py --manual-dir ../shared/data [--quick]
"""

import json
import time
from pathlib import Path

import jax
import numpy as np

from common import experiment_parser, run_experiment, run_meta, write_results
from vae_jax import data as data_lib
from vae_jax import images
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.data import DataOptions
from vae_jax.evaluate import evaluate
from vae_jax.rundir import load_run
from vae_jax.train_loop import train_and_evaluate

LIKELIHOODS = {"discretized_logistic": {}, "discretized_logistic_mixture": {"mixture_components": 5},
               "gaussian": {"learn_sigma": True}}
ARCHITECTURES = {"mlp": {"hidden": (500, 500)}, "conv": {"channels": (32, 64), "hidden": (500,)}}
QUICK = dict(epochs={"mlp": 1, "conv": 1}, latent_dim=8, num_samples=20, num_test=20, ais_examples=4,
             ais_chains=2, ais_temperatures=20, train_split="test[:400]", valid_split="test[400:500]")
DEFAULT = dict(epochs={"mlp": 100, "conv": 30}, latent_dim=32, num_samples=1000, num_test=1000, ais_examples=100,
               ais_chains=8, ais_temperatures=500, train_split="test[:8000]", valid_split="test[8000:9000]")
TEST_SPLIT = "test[9000:]"


def train_one(name: str, architecture: str, likelihood: str, settings: dict, args, options):
    model = ModelConfig(architecture=architecture, latent_dim=settings["latent_dim"], likelihood=likelihood,
                        data_shape=None, **ARCHITECTURES[architecture], **LIKELIHOODS[likelihood])
    train = TrainConfig(dataset="mnist", train_split=settings["train_split"], valid_split=settings["valid_split"],
                        epochs=settings["epochs"][architecture], output_bias_init="data_mean", checkpoint_every=5)
    workdir = Path(args.workdir) / name
    train_and_evaluate(ExperimentConfig(model, train), workdir, options, progress=False, log=lambda m: None)
    # The epochs' own times, summed over every session that trained them (a resumed run trains only the rest).
    seconds = sum(json.loads(line)["seconds"] for line in (workdir / "metrics.jsonl").read_text().splitlines())
    return load_run(workdir, "latest", log=lambda m: None), seconds


def markdown(rows: list[dict], ais: dict, settings: dict) -> str:
    lines = ["| model | likelihood | epochs | ELBO (nats) | IS K=%d (nats) | IS bits/dim | median, quartiles (nats) |"
             % settings["num_samples"], "|---|---|---|---|---|---|---|"]
    for r in rows:
        e, i = r["elbo"], r["importance"]
        lines.append(f"| {r['architecture']} | {r['likelihood']} | {r['epochs']} | {e['mean']:.1f} +- {e['stderr']:.1f} "
                     f"| {i['mean']:.1f} +- {i['stderr']:.1f} | **{i['bits_per_dim']:.3f}** +- "
                     f"{i['bits_per_dim_stderr']:.3f} | {i['median']:.1f} ({i['quartiles'][0]:.1f}, "
                     f"{i['quartiles'][1]:.1f}) |")
    lines += ["", f"AIS ({ais['num_chains']} chains, {ais['num_temperatures']} temperatures, from the prior) on the "
              f"first {ais['num_examples']} held-out images, model {ais['model']}: {ais['mean']:.1f} +- "
              f"{ais['stderr']:.1f} nats = {ais['bits_per_dim']:.3f} bits/dim; IS K={settings['num_samples']} on the "
              f"same images {ais['importance_same_images']:.1f} nats.",
              "", f"Trained on {settings['train_split']} (validation {settings['valid_split']}) of the 10,000 "
              f"grey-level MNIST test images, reported on the {settings['num_test']} images of {TEST_SPLIT}: a "
              "small training set. Every number is a lower bound on log P(x) of the 8-bit image (the ELBO, "
              "IS and AIS are stochastic lower bounds; the Gaussian's adds the dequantization bound, log P(x) >= "
              "E_u log p((x + u) / 256) - 784 log 256); bits/dim = -log2 P(x) / 784, so lower is better and the "
              "bits/dim are upper bounds. +- is the standard error over images."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = experiment_parser("eight_bit", __doc__)
    args = p.parse_args(argv)
    settings = dict(QUICK if args.quick else DEFAULT)
    options = DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir)
    test = data_lib.load("mnist", TEST_SPLIT, data_dir=args.data_dir, manual_dir=args.manual_dir)
    xs = test.flat[: settings["num_test"]]  # uint8: the Gaussian is evaluated dequantized
    out = Path(args.output)
    start, rows, best = time.perf_counter(), [], None
    for architecture in ARCHITECTURES:
        for likelihood in LIKELIHOODS:
            name = f"{architecture}_{likelihood}"
            (config, vae, params, step), seconds = train_one(name, architecture, likelihood, settings, args, options)
            result = evaluate(vae, params, xs, jax.random.key(0), estimators=("elbo", "importance"),
                              num_samples=settings["num_samples"])
            row = {"name": name, "architecture": architecture, "likelihood": likelihood, "step": step,
                   "epochs": config.train.epochs, "train_seconds": seconds, "measure": result["measure"],
                   **{k: result[k] for k in ("elbo", "importance")}}
            rows.append(row)
            if best is None or row["importance"]["mean"] > best[0]["importance"]["mean"]:
                best = (row, vae, params)
            z = jax.random.normal(jax.random.key(1), (32, config.model.latent_dim))
            grid = np.asarray(jax.vmap(vae.mean_image, (None, 0))(params, z))
            images.save_grid(grid, out / f"samples_{name}.png", image_shape=config.model.data_shape)
            print(f"{name}: ELBO {result['elbo']['bits_per_dim']:.3f}, IS {result['importance']['bits_per_dim']:.3f} "
                  f"bits/dim ({seconds:.0f} s to train)", flush=True)
    row, vae, params = best
    few = xs[: settings["ais_examples"]]
    ais = evaluate(vae, params, few, jax.random.key(0), estimators=("importance", "ais"),
                   num_samples=settings["num_samples"], ais_chains=settings["ais_chains"],
                   ais_temperatures=settings["ais_temperatures"])
    ais_row = {"model": row["name"], "num_examples": len(few), "num_chains": settings["ais_chains"],
               "num_temperatures": settings["ais_temperatures"], **ais["ais"],
               "importance_same_images": ais["importance"]["mean"]}
    print(f"AIS on {len(few)} images of {row['name']}: {ais_row['bits_per_dim']:.3f} bits/dim", flush=True)
    write_results(out, "eight_bit", {"meta": run_meta(settings, time.perf_counter() - start), "results": rows,
                                     "ais": ais_row}, markdown(rows, ais_row, settings))
    print(f"wrote {out}")


if __name__ == "__main__":
    run_experiment(main)
