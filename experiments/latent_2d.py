"""A 2-D latent picture: the learned manifold (a decoded grid over z) and test encodings coloured by label.

Trains a 2-D VAE (Bernoulli, dynamic binarization) on the MNIST test split ``test[:8000]`` and encodes
the held-out ``test[8000:]`` images, whose labels colour the scatter plot.

    python experiments/latent_2d.py --manual-dir ../shared/data [--quick]
"""

import time
from pathlib import Path

import jax
import numpy as np
from scipy.stats import norm

from common import experiment_parser, run_experiment, run_meta, write_results
from vae_jax import data as data_lib
from vae_jax import images
from vae_jax.rundir import load_run
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.data import DataOptions
from vae_jax.train_loop import train_and_evaluate


def manifold(vae, params, size: int) -> np.ndarray:
    """[size^2, D] decoded means on a grid of prior quantiles (equal prior mass between lines)."""
    q = norm.ppf(np.linspace(0.5 / size, 1 - 0.5 / size, size))
    z = np.stack(np.meshgrid(q, q[::-1]), -1).reshape(-1, 2)  # rows from top (z2 high) to bottom
    return np.asarray(jax.vmap(vae.mean_image, (None, 0))(params, z.astype(np.float32)))


def scatter(means: np.ndarray, labels: np.ndarray, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    points = ax.scatter(means[:, 0], means[:, 1], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ticks=range(10), label="digit")
    ax.set_xlabel("z1 (posterior mean)")
    ax.set_ylabel("z2 (posterior mean)")
    ax.set_title("held-out MNIST encodings")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = experiment_parser("latent_2d", __doc__)
    p.add_argument("--epochs", type=int, default=50)
    args = p.parse_args(argv)
    epochs = 1 if args.quick else args.epochs
    config = ExperimentConfig(ModelConfig(latent_dim=2, hidden=(500, 500)),
                              TrainConfig(dataset="mnist", train_split="test[:8000]", valid_split="test[8000:]",
                                          binarize=True, epochs=epochs, checkpoint_every=10))
    start = time.perf_counter()
    train_and_evaluate(config, args.workdir, DataOptions(args.data_dir, args.manual_dir), progress=False,
                       log=lambda m: None)
    _, vae, params, step = load_run(args.workdir, "latest")
    held_out = data_lib.load("mnist", "test[8000:]", data_dir=args.data_dir, manual_dir=args.manual_dir)
    xs = np.asarray(data_lib.binarize(jax.random.key(0), held_out.as_float()))
    means, _ = jax.vmap(vae.encode, (None, 0))(params, xs)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    images.save_grid(manifold(vae, params, 20), out / "manifold.png", num_cols=20, scale=2)
    scatter(np.asarray(means), held_out.labels, out / "encodings.png")
    last = (Path(args.workdir) / "metrics.jsonl").read_text().splitlines()[-1]
    write_results(out, "latent_2d", {"meta": run_meta({"epochs": epochs}, time.perf_counter() - start),
                                     "checkpoint_step": step, "final_metrics": __import__("json").loads(last)},
                  "Figures: manifold.png (decoded grid over prior quantiles), encodings.png (held-out encodings).\n")
    print(f"wrote {out}/manifold.png, encodings.png")


if __name__ == "__main__":
    run_experiment(main)
