"""Estimator comparison: the ELBO, importance sampling and the naive M-sample estimator of log p(x).

For VAEs with several latent dimensions trained on binarized MNIST, estimates the average log p(x)
of a fixed subset of test images with each estimator and sample count, repeated with independent
keys, and, for the 2-D model, a ground truth by grid quadrature. Writes
``<output>/estimators.json``, ``<output>/estimators.md`` and ``<output>/estimators.png``.

    python experiments/estimators.py --manual-dir ../shared/data            # default settings
    python experiments/estimators.py --manual-dir ../shared/data --quick    # a 1-minute smoke run
"""

import functools
import time
from pathlib import Path

import jax
import numpy as np

from common import experiment_parser, run_meta, write_results
from vae_jax import data as data_lib
from vae_jax.rundir import load_run
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.evaluate import make_estimator_fns, map_in_batches
from vae_jax.shared_samples import grid_error_estimate
from vae_jax.data import DataOptions
from vae_jax.train_loop import train_and_evaluate

QUICK = dict(latent_dims=(2, 5), epochs=1, train_split="train[:2000]", num_examples=20,
             is_samples=(1, 10, 100), naive_max_exponent=3, naive_max_exponent_low_dim=3, repeats=2,
             grid_points=100)
# The defaults fit about an hour on an idle 2-core CPU (the committed results); --epochs 30 trains the
# models further in about two hours.
DEFAULT = dict(latent_dims=(2, 5, 10, 20, 50), epochs=10, train_split="train", num_examples=1000,
               is_samples=(1, 10, 100, 1000, 5000), naive_max_exponent=6, naive_max_exponent_low_dim=7,
               repeats=3, grid_points=400)


def parse_args(argv=None):
    p = experiment_parser("estimators", __doc__)
    for name, value in DEFAULT.items():
        kind = (lambda s: tuple(int(v) for v in s.split(","))) if isinstance(value, tuple) else type(value)
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help=f"default {','.join(map(str, value)) if isinstance(value, tuple) else value}")
    args = p.parse_args(argv)
    settings = dict(QUICK if args.quick else DEFAULT)
    settings.update({k: getattr(args, k) for k in DEFAULT if getattr(args, k) is not None})
    return args, settings


def train_model(latent_dim, settings, args, options):
    config = ExperimentConfig(
        ModelConfig(latent_dim=latent_dim, hidden=(200, 200), activation="tanh"),
        TrainConfig(epochs=settings["epochs"], train_split=settings["train_split"],
                    valid_split="validation[:2000]", checkpoint_every=5),
    )
    workdir = Path(args.workdir) / f"latent_{latent_dim}"
    train_and_evaluate(config, workdir, options, progress=False, log=lambda m: None)
    return load_run(workdir, "best")


def repeated(fn, images, repeats, batch_size):
    """Runs ``fn`` over ``images`` with ``repeats`` independent keys; per-repeat means and diagnostics."""
    runs = [map_in_batches(fn(jax.random.key(r)), jax.random.key(1000 + r), images, batch_size)
            for r in range(repeats)]
    means = np.array([run["value"].mean() for run in runs])
    out = {"mean": float(means.mean()), "repeat_means": means.tolist(),
           "stderr": float(means.std(ddof=1) / np.sqrt(repeats)) if repeats > 1 else float("nan")}
    if "ess" in runs[0]:
        out["ess_mean"] = float(np.mean([run["ess"].mean() for run in runs]))
        out["delta_stderr"] = float(np.mean([np.sqrt(np.sum(run["mc_stderr"] ** 2)) / len(images) for run in runs]))
    return out


def compare(vae, params, images, settings):
    k = vae.config.latent_dim
    fns = lambda key, **counts: make_estimator_fns(vae, params, key, elbo_samples=counts.get("elbo", 1),
                                                   num_samples=counts.get("iw", 1), naive_samples=counts.get("naive", 1),
                                                   chunk_size=1000, estimators=("elbo", "importance", "naive"))
    result = {"latent_dim": k, "elbo": repeated(lambda key: fns(key, elbo=100)["elbo"], images, settings["repeats"], 500)}
    result["importance"] = {n: repeated(lambda key: fns(key, iw=n)["importance"], images, settings["repeats"], 16)
                            for n in settings["is_samples"]}
    top = settings["naive_max_exponent_low_dim"] if k <= 5 else settings["naive_max_exponent"]
    result["naive"] = {10**e: repeated(lambda key: fns(key, naive=10**e)["naive"], images, settings["repeats"], 250)
                       for e in range(1, top + 1)}
    if k == 2:
        matrix = functools.partial(vae.log_likelihood_matrix, params)
        values, errors = [], []
        for start in range(0, len(images), 100):
            v, e = grid_error_estimate(matrix, images[start:start + 100], num_points=settings["grid_points"])
            values.append(np.asarray(v)), errors.append(np.asarray(e))
        result["quadrature"] = {"mean": float(np.concatenate(values).mean()),
                                "max_abs_error": float(np.concatenate(errors).max()), "limit": 6.0,
                                "num_points": settings["grid_points"]}
    return result


def markdown(results) -> str:
    lines = ["| latent dim | ELBO | best IS (K) | naive, largest M | quadrature |", "|---|---|---|---|---|"]
    for r in results:
        k_best = max(r["importance"], key=int)
        m_best = max(r["naive"], key=int)
        quad = f"{r['quadrature']['mean']:.2f} (+-{r['quadrature']['max_abs_error']:.1e})" if "quadrature" in r else "-"
        lines.append(f"| {r['latent_dim']} | {r['elbo']['mean']:.2f} | {r['importance'][k_best]['mean']:.2f} "
                     f"({k_best}) | {r['naive'][m_best]['mean']:.2f} (M={m_best}) | {quad} |")
    lines += ["", "Average log p(x) estimates in nats per test image; +- is the quadrature's refinement bound."]
    lines += ["", "| latent dim | estimator | samples | mean | stderr over repeats | mean ESS |", "|---|---|---|---|---|---|"]
    for r in results:
        for name in ("importance", "naive"):
            for n, v in r[name].items():
                lines.append(f"| {r['latent_dim']} | {name} | {n} | {v['mean']:.3f} | {v['stderr']:.3f} | {v['ess_mean']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        for name, color in (("importance", "C0"), ("naive", "C3")):
            n = np.array([int(s) for s in r[name]])
            mean = np.array([v["mean"] for v in r[name].values()])
            err = np.array([v["stderr"] for v in r[name].values()])
            ax.plot(n, mean, "o-", color=color, label=name)
            ax.fill_between(n, mean - 2 * err, mean + 2 * err, color=color, alpha=0.2)
        ax.axhline(r["elbo"]["mean"], color="k", ls="--", label="ELBO")
        if "quadrature" in r:
            ax.axhline(r["quadrature"]["mean"], color="C2", ls=":", label="quadrature")
        ax.set_xscale("log")
        ax.set_title(f"latent dim {r['latent_dim']}")
        ax.set_xlabel("samples (K or M)")
    axes[0][0].set_ylabel("average log p(x) estimate (nats)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args, settings = parse_args(argv)
    options = DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir)
    test = data_lib.load("binarized_mnist", f"test[:{settings['num_examples']}]", data_dir=args.data_dir,
                         manual_dir=args.manual_dir).images
    start, results = time.perf_counter(), []
    for k in settings["latent_dims"]:
        _, vae, params, _ = train_model(k, settings, args, options)
        results.append(compare(vae, params, test, settings))
        print(f"latent {k}: ELBO {results[-1]['elbo']['mean']:.2f}, "
              f"IS {results[-1]['importance'][max(settings['is_samples'])]['mean']:.2f}, "
              f"naive {list(results[-1]['naive'].values())[-1]['mean']:.2f}  ({time.perf_counter() - start:.0f} s)",
              flush=True)
    payload = {"meta": run_meta(settings, time.perf_counter() - start), "results": results}
    out = write_results(args.output, "estimators", payload, markdown(results))
    plot(results, out / "estimators.png")
    print(f"wrote {out}/estimators.json, estimators.md, estimators.png")


if __name__ == "__main__":
    main()
