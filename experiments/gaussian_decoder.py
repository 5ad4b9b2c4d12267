"""The Gaussian decoder x ~ N(g(z), sigma^2 I) on grey-level MNIST: how sigma^2 trades reconstruction against KL.

Trains one VAE per sigma^2 (and one with a learned per-pixel sigma) on the MNIST test set split
8,000 / 2,000 (``test[:8000]`` / ``test[8000:]``: TFDS stores examples in a fixed pseudo-random order,
a hash of each example's key, so the slices are a fixed random split). Reports on the 2,000
held-out images the ELBO, its reconstruction and KL terms, and importance-sampled log p(x), and
draws samples and reconstructions.

    python experiments/gaussian_decoder.py --manual-dir ../shared/data [--quick]
"""

import time
from pathlib import Path

import jax
import numpy as np

from common import experiment_parser, run_experiment, run_meta, write_results
from vae_jax import data as data_lib
from vae_jax import images
from vae_jax.rundir import load_run
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.evaluate import evaluate
from vae_jax.data import DataOptions
from vae_jax.train_loop import train_and_evaluate

QUICK = dict(variances=(0.01, 1.0), learned=False, epochs=1, latent_dim=10, num_samples=50, num_examples=50)
DEFAULT = dict(variances=(0.01, 0.05, 0.2, 1.0), learned=True, epochs=40, latent_dim=20, num_samples=1000,
               num_examples=2000)


def train_one(name, model, settings, args, options):
    config = ExperimentConfig(model, TrainConfig(dataset="mnist", train_split="test[:8000]", valid_split="test[8000:]",
                                                 epochs=settings["epochs"], checkpoint_every=10))
    workdir = Path(args.workdir) / name
    train_and_evaluate(config, workdir, options, progress=False, log=lambda m: None)
    return load_run(workdir, "latest")


def overview(out: Path, names: list[str]):
    """One figure with every setting's samples side by side: ``samples_overview.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 2.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.imshow(plt.imread(out / f"samples_{name}.png"))
        ax.set_title(name.replace("sigma2_", "sigma^2 = "))
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "samples_overview.png", dpi=80)
    plt.close(fig)


def main(argv=None):
    p = experiment_parser("gaussian_decoder", __doc__)
    p.add_argument("--epochs", type=int, help="override the epochs")
    args = p.parse_args(argv)
    settings = dict(QUICK if args.quick else DEFAULT)
    if args.epochs:
        settings["epochs"] = args.epochs
    options = DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir)
    held_out = data_lib.load("mnist", "test[8000:]", data_dir=args.data_dir, manual_dir=args.manual_dir)
    xs = held_out.as_float(settings["num_examples"])
    runs = [(f"sigma2_{v}", ModelConfig(latent_dim=settings["latent_dim"], likelihood="gaussian", sigma=float(np.sqrt(v))))
            for v in settings["variances"]]
    if settings["learned"]:
        runs.append(("learned", ModelConfig(latent_dim=settings["latent_dim"], likelihood="gaussian", learn_sigma=True)))
    out = Path(args.output)
    start, rows = time.perf_counter(), []
    for name, model in runs:
        _, vae, params, step = train_one(name, model, settings, args, options)
        result = evaluate(vae, params, xs, jax.random.key(0), estimators=("elbo", "importance"),
                          num_samples=settings["num_samples"], elbo_samples=10)
        sigma = np.exp(np.asarray(vae.log_sigma(params)))
        rows.append({"name": name, "sigma2": None if model.learn_sigma else round(model.sigma**2, 6),
                     "learned_sigma_median": float(np.median(sigma)) if model.learn_sigma else None,
                     "step": step, **{k: result[k] for k in ("elbo", "importance")}})
        z = jax.random.normal(jax.random.key(1), (32, model.latent_dim))
        images.save_grid(np.asarray(jax.vmap(vae.mean_image, (None, 0))(params, z)), out / f"samples_{name}.png")
        means, _ = jax.vmap(vae.encode, (None, 0))(params, xs[:16])
        recon = np.asarray(jax.vmap(vae.mean_image, (None, 0))(params, means))
        images.save_grid(np.concatenate([xs[:8], recon[:8], xs[8:16], recon[8:16]]), out / f"reconstructions_{name}.png")
        print(f"{name}: ELBO {result['elbo']['mean']:.1f} (rec {result['elbo']['reconstruction']:.1f}, "
              f"KL {result['elbo']['kl']:.1f}), IS {result['importance']['mean']:.1f}", flush=True)
    lines = ["| sigma^2 | ELBO | reconstruction | KL | IS log p(x) |", "|---|---|---|---|---|"]
    for r in rows:
        label = r["sigma2"] if r["sigma2"] is not None else f"learned (median sigma {r['learned_sigma_median']:.3f})"
        lines.append(f"| {label} | {r['elbo']['mean']:.1f} | {r['elbo']['reconstruction']:.1f} | {r['elbo']['kl']:.1f} "
                     f"| {r['importance']['mean']:.1f} |")
    lines += ["", f"Nats per image on {len(xs)} held-out MNIST test images (densities of continuous pixels: "
              "they can be positive and grow as sigma shrinks)."]
    overview(out, [name for name, _ in runs])
    write_results(out, "gaussian_decoder", {"meta": run_meta(settings, time.perf_counter() - start), "results": rows},
                  "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    run_experiment(main)
