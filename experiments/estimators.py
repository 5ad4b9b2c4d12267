"""Estimator comparison: the ELBO, importance sampling and the naive M-sample estimator of log p(x).

For VAEs with several latent dimensions trained on binarized MNIST, estimates the average log p(x)
of a fixed subset of test images with each estimator and sample count, repeated with independent
keys; importance sampling with refined posteriors (the amortization gap); Pareto k-hat of each
estimator's weights; and a reference: grid quadrature for the 2-D model, annealed importance sampling
in every dimension (on the first ``ais_examples`` images, from the prior and from q(z|x), the higher
taken, each with its BDMC gap on ``bdmc_examples`` images simulated from the model and whether it passes the
certification rule, and the reference rerun at 10 times its temperatures on the first
``convergence_examples`` images; ``--reference-only`` recomputes just this for the models in ``--workdir``).
Every mean over images comes with its median and quartiles, and on the reference's images each
estimator's gap to the reference is given image by image (mean, median, quartiles). Writes ``<output>/estimators.json``, ``estimators.md``,
``estimators.png`` (estimates), ``gaps.png`` (each estimator's gap to the reference, log scale) and, for
the 2-D model, ``posteriors_2d.png`` (the true posterior against q(z|x) where importance sampling fails
most).

The subset ``test[:N]`` is TFDS's first N test images, which TFDS orders by a hash of the example key
at preparation, not the first N lines of the file: it is a fixed pseudo-random subset, the same on
every machine (its indices in the file are recorded in the JSON).

    python experiments/estimators.py --manual-dir ../shared/data            # default settings
    python experiments/estimators.py --manual-dir ../shared/data --quick    # a 1-minute smoke run

Each model's result is kept in its run folder, so an interrupted run resumes model by model; the same
command started twice (say, one per core, ``taskset -c 0`` and ``taskset -c 1``) shares the models
between the two processes, and each writes the tables once every model is done.
"""

import functools
import json
import time
from pathlib import Path

import jax
import numpy as np

from common import claim, experiment_parser, run_experiment, run_meta, test_file_lines, write_results
from vae_jax import data as data_lib
from vae_jax.rundir import load_run, write_json
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.diagnostics import KHAT_UNRELIABLE
from vae_jax.evaluate import (CERTIFIED_GAP, EvalConfig, bdmc, certified, evaluate, evaluation_key,
                              make_estimator_fns, map_in_batches, summarize)
from vae_jax.shared_samples import grid_error_estimate
from vae_jax.data import DataOptions
from vae_jax.train_loop import train_and_evaluate

QUICK = dict(latent_dims=(2, 5), epochs=1, train_split="train[:2000]", num_examples=20,
             is_samples=(1, 10, 100), naive_max_exponent=3, naive_max_exponent_low_dim=3, repeats=2,
             grid_points=100, ais_examples=4, ais_chains=4, ais_temperatures=50, bdmc_examples=2, refine_steps=10, ais_start="both",
             convergence_examples=2)
# The models train 100 epochs each (about 3.5 minutes per model on one core of a 2-core CPU).
DEFAULT = dict(latent_dims=(2, 5, 10, 20, 50), epochs=100, train_split="train", num_examples=1000,
               is_samples=(1, 10, 100, 1000, 5000), naive_max_exponent=6, naive_max_exponent_low_dim=7,
               repeats=3, grid_points=400, ais_examples=100, ais_chains=16, ais_temperatures=1000, bdmc_examples=50,
               refine_steps=100, ais_start="both", convergence_examples=20)
CONVERGENCE_FACTOR = 10  # the reference is rerun at this many times its temperatures on convergence_examples images


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


def spread(values) -> dict:
    """Median and quartiles over images of per-image values [N] (for a mean that a few images can dominate)."""
    summary = summarize({"value": np.asarray(values)})
    return {"median": summary["median"], "quartiles": summary["quartiles"]}


def repeated(fn, images, repeats, batch_size, per_example: dict, name):
    """Runs ``fn`` over ``images`` with ``repeats`` independent keys; per-repeat means and diagnostics.
    ``per_example[name]`` gets each image's value averaged over the repeats."""
    runs = [map_in_batches(fn(jax.random.key(r)), jax.random.key(1000 + r), images, batch_size)
            for r in range(repeats)]
    means = np.array([run["value"].mean() for run in runs])
    per_example[name] = np.mean([run["value"] for run in runs], axis=0)
    out = {"mean": float(means.mean()), "repeat_means": means.tolist(),
           "stderr": float(means.std(ddof=1) / np.sqrt(repeats)) if repeats > 1 else float("nan"),
           **spread(per_example[name])}
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
        result["quadrature"] = {"mean": float(per_example["quadrature"].mean()), **spread(per_example["quadrature"]),
                                "max_abs_error": float(np.concatenate(errors).max()), "limit": 6.0,
                                "num_points": settings["grid_points"]}
    result["ais"] = reference(vae, params, images[: settings["ais_examples"]], settings, per_example)
    return result, per_example


def reference(vae, params, images, settings, per_example):
    """AIS on ``images`` with its BDMC certificate on simulated data, its convergence in the number of
    temperatures (:func:`convergence`), and every estimator's values on the same images with their per-image
    gaps to the reference (quadrature in 2-D, else AIS), so that gaps compare like with like.

    With ``ais_start="both"``, AIS runs from the prior and from q(z|x); both are stochastic lower bounds
    on log p(x), and the reference is the higher of the two means (``start`` names it; ``by_start`` keeps
    both). Starting from q can miss posterior modes that q does not cover (in 2-D it fell 2.2 nats below
    quadrature while its BDMC gap on simulated data was 0.04); starting from the prior costs more
    temperatures in high dimension. Each start's BDMC gap is reported with its standard error, median and
    quartiles over ``bdmc_examples`` simulated images, and ``certified`` applies the rule as stated (mean gap
    below ``CERTIFIED_GAP`` nats).
    """
    starts = ("prior", "q") if settings["ais_start"] == "both" else (settings["ais_start"],)
    by_start, values, n = {}, {}, len(images)
    for start in starts:
        config = EvalConfig(ais_chains=settings["ais_chains"], ais_temperatures=settings["ais_temperatures"],
                            ais_start=start)
        t0 = time.perf_counter()
        ais = evaluate(vae, params, images, evaluation_key(0), config, estimators=("ais",), keep_values=True)["ais"]
        values[start] = ais.pop("per_example")
        certificate = bdmc(vae, params, evaluation_key(1), settings["bdmc_examples"], config)
        gap = certificate["gap"]
        by_start[start] = {**ais, "start": start,
                           "bdmc": {"gap_mean": gap["mean"], "gap_stderr": gap["stderr"], "gap_median": gap["median"],
                                    "gap_quartiles": gap["quartiles"], "gap_max": gap["max"],
                                    "certified": certificate["certified"], "num_examples": certificate["num_examples"],
                                    "forward": certificate["forward"]["mean"],
                                    "reverse": certificate["reverse"]["mean"]},
                           "seconds": time.perf_counter() - t0}
    best = max(by_start.values(), key=lambda a: a["mean"])
    per_image = {name: np.asarray(v[:n]).tolist() for name, v in per_example.items()}
    per_image["ais"] = values[best["start"]]
    return {**best, "num_examples": n, "chains": settings["ais_chains"], "temperatures": settings["ais_temperatures"],
            "leapfrog_steps": EvalConfig().leapfrog_steps, "by_start": by_start,
            "convergence": convergence(vae, params, images, settings, best["start"], values[best["start"]]),
            **on_reference_images(per_image)}


def convergence(vae, params, images, settings, start, values):
    """The reference rerun at ``CONVERGENCE_FACTOR`` times its temperatures on the first
    ``convergence_examples`` images, against its values ``values`` at T on the same images: how far the
    schedule is from converged. ``difference`` summarizes (10 T - T) per image; its ``stderr`` is over images
    and includes the Monte Carlo noise of both runs. None when ``convergence_examples`` is 0."""
    m = min(settings["convergence_examples"], len(images))
    if m == 0:
        return None
    temperatures = settings["ais_temperatures"] * CONVERGENCE_FACTOR
    config = EvalConfig(ais_chains=settings["ais_chains"], ais_temperatures=temperatures, ais_start=start)
    t0 = time.perf_counter()
    long = np.asarray(evaluate(vae, params, images[:m], evaluation_key(0), config, estimators=("ais",),
                               keep_values=True)["ais"]["per_example"])
    short = np.asarray(values[:m])
    difference = summarize({"value": long - short})
    return {"num_examples": m, "start": start, "temperatures": [settings["ais_temperatures"], temperatures],
            "means": [float(short.mean()), float(long.mean())],
            "difference": {key: difference[key] for key in ("mean", "stderr", "median", "quartiles")},
            "seconds": time.perf_counter() - t0}


def on_reference_images(per_image: dict) -> dict:
    """Each estimator's per-image values on the reference's images (``per_image``), their means
    (``subset_means``, the reference's own left out) and each estimator's gap to the reference, image by
    image: ``gaps_to_reference[name]`` = mean, median and quartiles of (reference - estimate). The reference is
    quadrature where there is one (2-D), else AIS."""
    ref_name = "quadrature" if "quadrature" in per_image else "ais"
    ref = np.asarray(per_image[ref_name])
    gaps = {}
    for name, v in per_image.items():
        if name != ref_name:
            gap = ref - np.asarray(v)
            gaps[name] = {"mean": float(gap.mean()), **spread(gap)}
    return {"per_image": per_image, "reference_name": ref_name,
            "subset_means": {name: float(np.mean(v)) for name, v in per_image.items() if name != "ais"},
            "gaps_to_reference": gaps}


def _certification(bdmc_result: dict) -> str:
    return "certified" if certified(bdmc_result["gap_mean"]) else "not certified"


def _spread(v: dict) -> str:
    """'mean (median; quartiles)' of a summary with those keys."""
    return f"{v['mean']:.2f} ({v['median']:.2f}; {v['quartiles'][0]:.2f}, {v['quartiles'][1]:.2f})"


def markdown(results, settings) -> str:
    lines = ["| latent dim | ELBO | best IS (K) | IS, refined q | naive, largest M | quadrature | AIS reference |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        k_best, m_best, ais = max(r["importance"], key=int), max(r["naive"], key=int), r["ais"]
        quad = f"{_spread(r['quadrature'])} +-{r['quadrature']['max_abs_error']:.1e}" if "quadrature" in r else "-"
        lines.append(f"| {r['latent_dim']} | {_spread(r['elbo'])} | {_spread(r['importance'][k_best])} (K={k_best}) | "
                     f"{_spread(r['importance_refined'])} | {_spread(r['naive'][m_best])} (M={m_best}) | {quad} | "
                     f"{ais['mean']:.2f} from {ais['start']} on {ais['num_examples']} images: "
                     f"{_certification(ais['bdmc'])} |")
    lines += ["", f"Average log p(x) estimates in nats per test image on test[:{settings['num_examples']}], each as "
              "mean (median; quartiles) over the images; the mean is also averaged over "
              f"{settings['repeats']} independent keys. +- is the quadrature's refinement bound. The AIS reference "
              f"({settings['ais_chains']} chains x {settings['ais_temperatures']} temperatures, the better of its "
              f"starts) covers only the first {settings['ais_examples']} images; it is certified when the mean BDMC "
              f"gap on {settings['bdmc_examples']} simulated images is below {CERTIFIED_GAP} nats (the rule, applied "
              "as stated)."]
    lines += ["", "AIS from each start (the reference is the higher mean; both are stochastic lower bounds). BDMC gap: "
              "reverse minus forward AIS on images simulated from the model, mean +- standard error (median; "
              "quartiles), largest. T -> 10 T: the reference rerun at ten times the temperatures on the first "
              "images, mean change per image +- standard error (median; quartiles).", "",
              "| latent dim | start | AIS: mean (median; quartiles) | MC stderr | BDMC gap | largest | certified | "
              "T -> 10 T | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        conv = r["ais"].get("convergence")
        for start, a in r["ais"].get("by_start", {}).items():
            b = a["bdmc"]
            bdmc_cell = (f"{b['gap_mean']:.3f} +- {b['gap_stderr']:.3f} ({b['gap_median']:.3f}; "
                         f"{b['gap_quartiles'][0]:.3f}, {b['gap_quartiles'][1]:.3f}) on {b['num_examples']}")
            conv_cell = "-"
            if conv and conv["start"] == start:
                d = conv["difference"]
                conv_cell = (f"{d['mean']:+.3f} +- {d['stderr']:.3f} ({d['median']:+.3f}; {d['quartiles'][0]:+.3f}, "
                             f"{d['quartiles'][1]:+.3f}) on {conv['num_examples']}")
            lines.append(f"| {r['latent_dim']} | {start}{' (reference)' if start == r['ais']['start'] else ''} | "
                         f"{_spread(a)} | {a['mc_stderr']:.3f} | {bdmc_cell} | {b['gap_max']:.3f} | "
                         f"{_certification(b)} | {conv_cell} | {a['seconds']:.0f} |")
    lines += ["", "On the reference's images: each estimator's gap to the reference (reference - estimate, nats), mean "
              "(median; quartiles) over the images. The reference is quadrature in 2-D, else AIS (certified or not as "
              "above).", "",
              "| latent dim | reference | ELBO | best IS | IS, refined q | naive, largest M | AIS | amortization gap | "
              "k-hat > 0.7: IS / refined / naive |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ais, k_best, m_best = r["ais"], max(r["importance"], key=int), max(r["naive"], key=int)
        gaps = ais["gaps_to_reference"]
        ref = np.asarray(ais["per_image"][ais["reference_name"]])
        ref_cell = (f"quadrature {ref.mean():.2f}" if ais["reference_name"] == "quadrature" else
                    f"AIS {ref.mean():.2f} ({_certification(ais['bdmc'])})")
        cell = lambda name: _spread(gaps[name]) if name in gaps else "-"
        lines.append(f"| {r['latent_dim']} | {ref_cell} | {cell('elbo')} | {cell(f'importance_{k_best}')} | "
                     f"{cell('importance_refined')} | {cell(f'naive_{m_best}')} | {cell('ais')} | "
                     f"{r['importance_refined']['amortization_gap']:.2f} | "
                     f"{r['importance'][k_best]['khat_above_0.7']:.2f} / {r['importance_refined']['khat_above_0.7']:.2f}"
                     f" / {r['naive'][m_best]['khat_above_0.7']:.2f} |")
    lines += ["", f"The amortization gap (refined ELBO - amortized ELBO, {settings['refine_steps']} Adam steps) is over "
              f"all of test[:{settings['num_examples']}].", "",
              "| latent dim | estimator | samples | mean | stderr over repeats | median | quartiles | mean ESS | "
              "k-hat > 0.7 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name in ("importance", "naive"):
            for n, v in r[name].items():
                lines.append(f"| {r['latent_dim']} | {name} | {n} | {v['mean']:.3f} | {v['stderr']:.3f} | "
                             f"{v['median']:.3f} | {v['quartiles'][0]:.3f}, {v['quartiles'][1]:.3f} | "
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
    for key in ("ais_start", "ais_chains", "ais_temperatures", "bdmc_examples", "convergence_examples"):
        old[key] = settings[key]
    for result in payload["results"]:
        if "per_image" not in result["ais"]:
            raise SystemExit(f"{path} predates per-image results: rerun the whole comparison (without "
                             "--reference-only)")
        _, vae, params, _ = train_model(result["latent_dim"], dict(old), args, options)
        per_image = {name: np.asarray(v) for name, v in result["ais"]["per_image"].items() if name != "ais"}
        result["ais"] = reference(vae, params, test[: old["ais_examples"]], old, per_image)
        print(f"latent {result['latent_dim']}: AIS " + ", ".join(
            f"{s} {a['mean']:.2f} (BDMC gap {a['bdmc']['gap_mean']:.3f})" for s, a in result["ais"]["by_start"].items()),
            flush=True)
    payload["meta"]["reference_seconds"] = time.perf_counter() - start
    write_all(args.output, payload, old)


def _per_model(settings) -> dict:
    """The settings one model's result depends on (all but the list of latent dimensions)."""
    return {key: value for key, value in settings.items() if key != "latent_dims"}


def _cache(k, args) -> Path:
    return Path(args.workdir) / f"latent_{k}" / "estimators_result.json"


def load_cached(k, settings, args) -> dict | None:
    """The K-dimensional model's result from an earlier run with the same settings, or None."""
    same = json.loads(json.dumps(_per_model(settings)))
    if _cache(k, args).exists():
        cached = json.loads(_cache(k, args).read_text())
        if cached["settings"] == same:
            return cached["result"]
    return None


def model_result(k, settings, args, options, test) -> dict:
    """Trains (or resumes) the K-dimensional model and compares the estimators on it. The result is kept in
    the model's run folder (``estimators_result.json``, with the settings it was made with) and reused by a
    later run with the same settings (:func:`load_cached`), so an interrupted comparison resumes model by
    model, and two processes started with the same command (one per core) share the models (:func:`common.claim`)."""
    t0 = time.perf_counter()
    _, vae, params, _ = train_model(k, settings, args, options)
    train_seconds = time.perf_counter() - t0
    result, per_example = compare(vae, params, test, settings)
    result["seconds"] = {"train_this_run": train_seconds, "estimators": time.perf_counter() - t0 - train_seconds}
    if k == 2:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        plot_posteriors_2d(vae, params, test, per_example, Path(args.output) / "posteriors_2d.png")
    write_json(_cache(k, args), {"settings": _per_model(settings), "result": result})
    return load_cached(k, settings, args)  # as JSON holds it: the same whether computed or reused


def main(argv=None):
    args, settings = parse_args(argv)
    options = DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir)
    test = data_lib.load("binarized_mnist", f"test[:{settings['num_examples']}]", data_dir=args.data_dir,
                         manual_dir=args.manual_dir).as_float()
    if args.reference_only:
        return update_reference(args, settings, options, test)
    start, results, pending = time.perf_counter(), {}, list(settings["latent_dims"])
    while pending:
        k = next((k for k in pending if claim(Path(args.workdir) / f"latent_{k}" / "estimators_claim")), None)
        if k is None:  # every model left is being compared by another process: wait for its result
            time.sleep(30)
            done = {k: r for k in pending if (r := load_cached(k, settings, args))}
            results.update(done)
            pending = [k for k in pending if k not in done]
            continue
        pending.remove(k)
        try:
            results[k] = r = load_cached(k, settings, args) or model_result(k, settings, args, options, test)
        finally:
            (Path(args.workdir) / f"latent_{k}" / "estimators_claim").unlink(missing_ok=True)
        print(f"latent {k}: ELBO {r['elbo']['mean']:.2f}, IS {r['importance'][str(max(settings['is_samples']))]['mean']:.2f}"
              f", naive {list(r['naive'].values())[-1]['mean']:.2f}, AIS {r['ais']['mean']:.2f} "
              f"({_certification(r['ais']['bdmc'])})  ({time.perf_counter() - start:.0f} s)", flush=True)
    results = [results[k] for k in settings["latent_dims"]]
    lines = test_file_lines(test, args.manual_dir)
    meta = run_meta(settings, time.perf_counter() - start)
    meta["seconds_per_model"] = {r["latent_dim"]: r["seconds"] for r in results}  # when made, if reused
    payload = {"meta": meta,
               "test_subset": {"split": f"test[:{settings['num_examples']}]", "file": "binarized_mnist_test.amat",
                               "line_indices": lines}, "results": results}
    write_all(args.output, payload, settings)


if __name__ == "__main__":
    run_experiment(main)
