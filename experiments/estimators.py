"""Estimator comparison: the ELBO, importance sampling and the naive M-sample estimator of log p(x).

For VAEs with several latent dimensions trained on binarized MNIST, estimates the average log p(x)
of a fixed subset of test images with each estimator and sample count, repeated with independent
keys; importance sampling with refined posteriors (the amortization gap); Pareto k-hat of each
estimator's weights; and a reference: grid quadrature for the 2-D model, annealed importance sampling
in every dimension (on the first ``ais_examples`` images, from the prior and from q(z|x), the higher
taken, each with its BDMC gap on data simulated from the model; ``--reference-only`` recomputes just
this for the models in ``--workdir``). Writes ``<output>/estimators.json``, ``estimators.md``,
``estimators.png`` (estimates), ``gaps.png`` (each estimator's gap to the reference, log scale) and, for
the 2-D model, ``posteriors_2d.png`` (the true posterior against q(z|x) where importance sampling fails
most).

The subset ``test[:N]`` is TFDS's first N test images, which TFDS orders by a hash of the example key
at preparation, not the first N lines of the file: it is a fixed pseudo-random subset, the same on
every machine (its indices in the file are recorded in the JSON).

    python experiments/estimators.py --manual-dir ../shared/data            # default settings
    python experiments/estimators.py --manual-dir ../shared/data --quick    # a 1-minute smoke run
"""

import functools
import json
import time
from pathlib import Path

import jax
import numpy as np

from common import experiment_parser, run_experiment, run_meta, test_file_lines, write_results
from vae_jax import data as data_lib
from vae_jax.rundir import load_run
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.diagnostics import KHAT_UNRELIABLE
from vae_jax.evaluate import (CERTIFIED_GAP, EvalConfig, bdmc, certified, evaluate, evaluation_key,
                              make_estimator_fns, map_in_batches)
from vae_jax.shared_samples import grid_error_estimate
from vae_jax.data import DataOptions
from vae_jax.train_loop import train_and_evaluate

QUICK = dict(latent_dims=(2, 5), epochs=1, train_split="train[:2000]", num_examples=20,
             is_samples=(1, 10, 100), naive_max_exponent=3, naive_max_exponent_low_dim=3, repeats=2,
             grid_points=100, ais_examples=4, ais_chains=4, ais_temperatures=50, bdmc_examples=2, refine_steps=10, ais_start="both")
# The models train 100 epochs each (about 3.5 minutes per model on one core of a 2-core CPU).
DEFAULT = dict(latent_dims=(2, 5, 10, 20, 50), epochs=100, train_split="train", num_examples=1000,
               is_samples=(1, 10, 100, 1000, 5000), naive_max_exponent=6, naive_max_exponent_low_dim=7,
               repeats=3, grid_points=400, ais_examples=100, ais_chains=16, ais_temperatures=1000, bdmc_examples=10,
               refine_steps=100, ais_start="both")


def parse_args(argv=None):
    p = experiment_parser("estimators", __doc__)
    for name, value in DEFAULT.items():
        kind = (lambda s: tuple(int(v) for v in s.split(","))) if isinstance(value, tuple) else type(value)
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help=f"(default: {','.join(map(str, value)) if isinstance(value, tuple) else value})")
    p.add_argument("--reference-only", action="store_true",
                   help="recompute only the AIS reference of the models in --workdir and update the results "
                   "in --output (estimators.json must exist there)")
    args = p.parse_args(argv)
    settings = dict(QUICK if args.quick else DEFAULT)
    settings.update({k: getattr(args, k) for k in DEFAULT if getattr(args, k) is not None})
    if settings["ais_start"] not in ("prior", "q", "both"):
        p.error(f"--ais-start must be prior, q or both, not {settings['ais_start']!r}")
    return args, settings


def train_model(latent_dim, settings, args, options):
    config = ExperimentConfig(
        ModelConfig(latent_dim=latent_dim, hidden=(200, 200), activation="tanh"),
        TrainConfig(epochs=settings["epochs"], train_split=settings["train_split"],
                    valid_split="validation[:2000]", checkpoint_every=5, output_bias_init="data_mean"),
    )
    workdir = Path(args.workdir) / f"latent_{latent_dim}"
    train_and_evaluate(config, workdir, options, progress=False, log=lambda m: None)
    return load_run(workdir, "best")


def repeated(fn, images, repeats, batch_size, per_example: dict, name):
    """Runs ``fn`` over ``images`` with ``repeats`` independent keys; per-repeat means and diagnostics.
    ``per_example[name]`` gets each image's value averaged over the repeats."""
    runs = [map_in_batches(fn(jax.random.key(r)), jax.random.key(1000 + r), images, batch_size)
            for r in range(repeats)]
    means = np.array([run["value"].mean() for run in runs])
    per_example[name] = np.mean([run["value"] for run in runs], axis=0)
    out = {"mean": float(means.mean()), "repeat_means": means.tolist(),
           "stderr": float(means.std(ddof=1) / np.sqrt(repeats)) if repeats > 1 else float("nan")}
    if "ess" in runs[0]:
        out["ess_mean"] = float(np.mean([run["ess"].mean() for run in runs]))
        out["delta_stderr"] = float(np.mean([np.sqrt(np.sum(run["mc_stderr"] ** 2)) / len(images) for run in runs]))
    if "khat" in runs[0]:
        out["khat_above_0.7"] = float(np.mean([np.mean(run["khat"] > KHAT_UNRELIABLE) for run in runs]))
    if "refined_elbo" in runs[0]:
        out["amortization_gap"] = float(np.mean([np.mean(run["refined_elbo"] - run["amortized_elbo"]) for run in runs]))
        out["refined_elbo"] = float(np.mean([np.mean(run["refined_elbo"]) for run in runs]))
    return out


def compare(vae, params, images, settings):
    k, repeats, per_example = vae.config.latent_dim, settings["repeats"], {}
    fns = lambda key, **counts: make_estimator_fns(vae, params, key, elbo_samples=counts.get("elbo", 1),
                                                   num_samples=counts.get("iw", 1), naive_samples=counts.get("naive", 1),
                                                   chunk_size=1000, refine_steps=settings["refine_steps"])
    result = {"latent_dim": k, "elbo": repeated(lambda key: fns(key, elbo=100)["elbo"], images, repeats, 500,
                                                per_example, "elbo")}
    result["importance"] = {n: repeated(lambda key: fns(key, iw=n)["importance"], images, repeats, 16, per_example,
                                        f"importance_{n}") for n in settings["is_samples"]}
    top_k = max(settings["is_samples"])
    result["importance_refined"] = repeated(lambda key: fns(key, iw=top_k)["importance_refined"], images, repeats, 16,
                                            per_example, "importance_refined")
    result["importance_refined"]["num_samples"] = top_k
    top = settings["naive_max_exponent_low_dim"] if k <= 5 else settings["naive_max_exponent"]
    result["naive"] = {10**e: repeated(lambda key: fns(key, naive=10**e)["naive"], images, repeats, 250, per_example,
                                       f"naive_{10**e}") for e in range(1, top + 1)}
    if k == 2:
        matrix = functools.partial(vae.log_likelihood_matrix, params)
        values, errors = [], []
        for start in range(0, len(images), 100):
            v, e = grid_error_estimate(matrix, images[start:start + 100], num_points=settings["grid_points"])
            values.append(np.asarray(v)), errors.append(np.asarray(e))
        per_example["quadrature"] = np.concatenate(values)
        result["quadrature"] = {"mean": float(per_example["quadrature"].mean()),
                                "max_abs_error": float(np.concatenate(errors).max()), "limit": 6.0,
                                "num_points": settings["grid_points"]}
    result["ais"] = reference(vae, params, images[: settings["ais_examples"]], settings, per_example)
    return result, per_example


def reference(vae, params, images, settings, per_example):
    """AIS on ``images`` with its BDMC gap on simulated data, and every estimator's mean on the same images
    (``subset_means``), so that gaps to the reference compare like with like.

    With ``ais_start="both"``, AIS runs from the prior and from q(z|x); both are stochastic lower bounds
    on log p(x), and the reference is the higher of the two means (``start`` names it; ``by_start`` keeps
    both). Starting from q can miss posterior modes that q does not cover (in 2-D it fell 2.2 nats below
    quadrature while its BDMC gap on simulated data was 0.04); starting from the prior costs more
    temperatures in high dimension.
    """
    starts = ("prior", "q") if settings["ais_start"] == "both" else (settings["ais_start"],)
    by_start, n = {}, len(images)
    for start in starts:
        config = EvalConfig(ais_chains=settings["ais_chains"], ais_temperatures=settings["ais_temperatures"],
                            ais_start=start)
        t0 = time.perf_counter()
        ais = evaluate(vae, params, images, evaluation_key(0), config, estimators=("ais",))["ais"]
        certificate = bdmc(vae, params, evaluation_key(1), settings["bdmc_examples"], config)
        by_start[start] = {**ais, "start": start,
                           "bdmc": {"gap_mean": certificate["gap"]["mean"], "gap_max": certificate["gap"]["max"],
                                    "num_examples": certificate["num_examples"],
                                    "forward": certificate["forward"]["mean"],
                                    "reverse": certificate["reverse"]["mean"]},
                           "seconds": time.perf_counter() - t0}
    best = max(by_start.values(), key=lambda a: a["mean"])
    per_example["ais"] = None  # not per image over the whole subset
    return {**best, "num_examples": n, "chains": settings["ais_chains"], "temperatures": settings["ais_temperatures"],
            "leapfrog_steps": EvalConfig().leapfrog_steps, "by_start": by_start,
            "subset_means": {name: float(np.mean(v[:n])) for name, v in per_example.items() if v is not None}}


def _certification(gap_mean: float) -> str:
    return "certified" if certified(gap_mean) else "not certified"


def markdown(results, settings) -> str:
    lines = ["| latent dim | ELBO | best IS (K) | IS, refined q | naive, largest M | AIS (BDMC gap) | quadrature |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        k_best, m_best = max(r["importance"], key=int), max(r["naive"], key=int)
        quad = f"{r['quadrature']['mean']:.2f} (+-{r['quadrature']['max_abs_error']:.1e})" if "quadrature" in r else "-"
        ais = r["ais"]
        lines.append(f"| {r['latent_dim']} | {r['elbo']['mean']:.2f} | {r['importance'][k_best]['mean']:.2f} "
                     f"({k_best}) | {r['importance_refined']['mean']:.2f} | {r['naive'][m_best]['mean']:.2f} "
                     f"(M={m_best}) | {ais['mean']:.2f} from {ais.get('start', 'q')} on {ais['num_examples']} "
                     f"images ({ais['bdmc']['gap_mean']:.3f}, {_certification(ais['bdmc']['gap_mean'])}) | {quad} |")
    lines += ["", f"Average log p(x) estimates in nats per test image (test[:{settings['num_examples']}]); AIS on the "
              f"first {settings['ais_examples']} of them with {settings['ais_chains']} chains x "
              f"{settings['ais_temperatures']} temperatures from the start named (the better of the prior and q), "
              f"in parentheses its BDMC gap on {settings['bdmc_examples']} simulated images and whether it passes "
              f"the rule (certified: mean gap below {CERTIFIED_GAP} nats); +- is the quadrature's refinement bound."]
    lines += ["", "AIS from each start (the reference is the higher mean; both are stochastic lower bounds):", "",
              "| latent dim | start | AIS mean | MC stderr | BDMC gap (mean / max) | certified | seconds |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for start, a in r["ais"].get("by_start", {}).items():
            lines.append(f"| {r['latent_dim']} | {start} | {a['mean']:.2f} | {a['mc_stderr']:.3f} | "
                         f"{a['bdmc']['gap_mean']:.3f} / {a['bdmc']['gap_max']:.3f} | "
                         f"{_certification(a['bdmc']['gap_mean'])} | {a['seconds']:.0f} |")
    lines += ["", "| latent dim | reference | on its images: ELBO | best IS | IS, refined q | naive, largest M | "
              "amortization gap | k-hat > 0.7: IS / refined / naive |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        sub, k_best, m_best = r["ais"]["subset_means"], max(r["importance"], key=int), max(r["naive"], key=int)
        ref_name = "quadrature" if "quadrature" in sub else "AIS"
        ref = sub.get("quadrature", r["ais"]["mean"])
        lines.append(f"| {r['latent_dim']} | {ref_name} {ref:.2f} | {sub['elbo']:.2f} | {sub[f'importance_{k_best}']:.2f} | "
                     f"{sub['importance_refined']:.2f} | {sub[f'naive_{m_best}']:.2f} | "
                     f"{r['importance_refined']['amortization_gap']:.2f} | "
                     f"{r['importance'][k_best]['khat_above_0.7']:.2f} / {r['importance_refined']['khat_above_0.7']:.2f}"
                     f" / {r['naive'][m_best]['khat_above_0.7']:.2f} |")
    lines += ["", "| latent dim | estimator | samples | mean | stderr over repeats | mean ESS | k-hat > 0.7 |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for name in ("importance", "naive"):
            for n, v in r[name].items():
                lines.append(f"| {r['latent_dim']} | {name} | {n} | {v['mean']:.3f} | {v['stderr']:.3f} | "
                             f"{v['ess_mean']:.1f} | {v['khat_above_0.7']:.2f} |")
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


def plot_gaps(results, path):
    """Each estimator's gap to the reference (quadrature in 2-D, else AIS) on the reference's images, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.6), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], results):
        sub = r["ais"]["subset_means"]
        ref = sub.get("quadrature", r["ais"]["mean"])
        for name, color in (("importance", "C0"), ("naive", "C3")):
            n = np.array([int(s) for s in r[name]])
            gap = np.array([ref - sub[f"{name}_{s}"] for s in r[name]])
            ax.plot(n, np.maximum(gap, 1e-3), "o-", color=color, label=name)
        ax.axhline(max(ref - sub["elbo"], 1e-3), color="k", ls="--", label="ELBO")
        ax.axhline(max(ref - sub["importance_refined"], 1e-3), color="C1", ls="-.", label="IS, refined q")
        if "quadrature" in sub:
            ax.axhline(max(ref - r["ais"]["mean"], 1e-3), color="C2", ls=":", label="AIS")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"latent dim {r['latent_dim']} (vs {'quadrature' if 'quadrature' in sub else 'AIS'})")
        ax.set_xlabel("samples (K or M)")
    axes[0][0].set_ylabel("reference - estimate (nats, log scale)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_posteriors_2d(vae, params, images, per_example, path, count=3):
    """True posterior p(z|x) (grid) against q(z|x) on the images where importance sampling falls furthest
    below the quadrature value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k_best = max(int(name.split("_")[1]) for name in per_example if name.split("_")[-1].isdigit() and name.startswith("importance_"))
    shortfall = per_example["quadrature"] - per_example[f"importance_{k_best}"]
    worst = np.argsort(shortfall)[::-1][:count]
    grid = np.linspace(-4, 4, 201)
    zz = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    fig, axes = plt.subplots(1, count, figsize=(4 * count, 4), squeeze=False)
    for ax, i in zip(axes[0], worst):
        x = images[i]
        log_post = np.asarray(vae.log_likelihood_matrix(params, x[None], zz))[0] - 0.5 * np.sum(zz**2, -1)
        ax.contourf(grid, grid, np.exp(log_post - log_post.max()).reshape(201, 201), levels=12, cmap="Blues")
        mean, log_var = (np.asarray(a) for a in vae.encode(params, x))
        for radius in (1, 2, 3):
            t = np.linspace(0, 2 * np.pi, 200)
            ax.plot(mean[0] + radius * np.exp(0.5 * log_var[0]) * np.cos(t),
                    mean[1] + radius * np.exp(0.5 * log_var[1]) * np.sin(t), color="C3", lw=1)
        ax.set_title(f"image {i}: IS {shortfall[i]:.1f} nats below quadrature", fontsize=9)
        ax.set_xlabel("z1")
    axes[0][0].set_ylabel("z2")
    fig.suptitle("true posterior (blue) and q(z|x) 1-3 sd contours (red)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(output, payload, settings):
    out = write_results(output, "estimators", payload, markdown(payload["results"], settings))
    plot(payload["results"], out / "estimators.png")
    plot_gaps(payload["results"], out / "gaps.png")
    print(f"wrote {out}/estimators.json, estimators.md, estimators.png, gaps.png")


def update_reference(args, settings, options, test):
    """Recomputes the AIS reference of each model of an earlier run (``--reference-only``), keeping the
    other estimators' results; the models must be in ``--workdir``."""
    path = Path(args.output) / "estimators.json"
    if not path.exists():
        raise SystemExit(f"--reference-only needs the results of an earlier run at {path}")
    payload, start = json.loads(path.read_text()), time.perf_counter()
    old = payload["meta"]["settings"]
    for key in ("ais_start", "ais_chains", "ais_temperatures", "bdmc_examples"):
        old[key] = settings[key]
    for result in payload["results"]:
        _, vae, params, _ = train_model(result["latent_dim"], dict(old), args, options)
        subset = result["ais"]["subset_means"]
        result["ais"] = reference(vae, params, test[: old["ais_examples"]], old, {})
        result["ais"]["subset_means"] = subset
        print(f"latent {result['latent_dim']}: AIS " + ", ".join(
            f"{s} {a['mean']:.2f} (BDMC gap {a['bdmc']['gap_mean']:.3f})" for s, a in result["ais"]["by_start"].items()),
            flush=True)
    payload["meta"]["reference_seconds"] = time.perf_counter() - start
    write_all(args.output, payload, old)


def main(argv=None):
    args, settings = parse_args(argv)
    options = DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir)
    test = data_lib.load("binarized_mnist", f"test[:{settings['num_examples']}]", data_dir=args.data_dir,
                         manual_dir=args.manual_dir).as_float()
    if args.reference_only:
        return update_reference(args, settings, options, test)
    start, results = time.perf_counter(), []
    for k in settings["latent_dims"]:
        t0 = time.perf_counter()
        _, vae, params, _ = train_model(k, settings, args, options)
        train_seconds = time.perf_counter() - t0
        result, per_example = compare(vae, params, test, settings)
        result["seconds"] = {"train_this_run": train_seconds, "estimators": time.perf_counter() - t0 - train_seconds}
        results.append(result)
        if k == 2:
            Path(args.output).mkdir(parents=True, exist_ok=True)
            plot_posteriors_2d(vae, params, test, per_example, Path(args.output) / "posteriors_2d.png")
        print(f"latent {k}: ELBO {results[-1]['elbo']['mean']:.2f}, "
              f"IS {results[-1]['importance'][max(settings['is_samples'])]['mean']:.2f}, "
              f"naive {list(results[-1]['naive'].values())[-1]['mean']:.2f}  ({time.perf_counter() - start:.0f} s)",
              flush=True)
    lines = test_file_lines(test, args.manual_dir)
    payload = {"meta": run_meta(settings, time.perf_counter() - start),
               "test_subset": {"split": f"test[:{settings['num_examples']}]", "file": "binarized_mnist_test.amat",
                               "line_indices": lines}, "results": results}
    write_all(args.output, payload, settings)


if __name__ == "__main__":
    run_experiment(main)
