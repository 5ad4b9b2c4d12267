"""The amortization gap as Cremer, Li & Duvenaud (2018) measure it: on training images and on test images, with
each image's q refined to convergence, beside the 100-step refinement ``evaluate`` uses by default.

Model: the shipped Burda VAE (``experiments/results/burda/vae``: 784-200-200-50 tanh, Bernoulli, static
binarized MNIST, trained on the 50,000 training images), the architecture Cremer et al. use on MNIST. For
the first N training images (``train[:N]``) and the first N test images (``test[:N]``):

- L[q]: the encoder's ELBO; L[q*]: the ELBO of each image's q refined by Adam (step 1e-2, 10 samples per step)
  until the mean -ELBO of a 100-step window has not improved on its best for 10 windows in a row (Cremer et
  al.'s rule), at most ``--max-steps``; both ELBOs from 1,000 samples;
- log p(x) >= IS with q* as the proposal, K = 5000 (a stochastic lower bound: the approximation gap computed
  from it, IS(q*) - L[q*], is a lower bound on the true one);
- amortization gap L[q*] - L[q] and approximation gap, per image: mean, median, quartiles; the steps taken;
- the same with 100 refinement steps, and the share of the converged amortization gap they recover.

    python experiments/amortization.py --manual-dir ../shared/data [--quick]
"""

import time
from pathlib import Path

import numpy as np

from common import experiment_parser, run_experiment, run_meta, write_results
from vae_jax import data as data_lib
from vae_jax.evaluate import EvalConfig, evaluate, evaluation_key, summarize
from vae_jax.rundir import load_run

SHIPPED = Path(__file__).resolve().parent / "results" / "burda" / "vae"
DEFAULT = dict(num_examples=200, num_samples=5000, elbo_samples=1000, max_steps=20_000, patience=10,
               learning_rate=1e-2)
QUICK = dict(num_examples=4, num_samples=50, elbo_samples=50, max_steps=400, patience=2, learning_rate=1e-2)


def measure(vae, params, images, settings, patience) -> dict:
    """L[q], L[q*], IS(q*) and the gaps on ``images``, q* refined to convergence (``patience``) or 100 steps."""
    config = EvalConfig(estimators=("importance_refined",), num_samples=settings["num_samples"],
                        elbo_samples=settings["elbo_samples"], refine_learning_rate=settings["learning_rate"],
                        refine_steps=settings["max_steps"] if patience else 100, refine_patience=patience)
    t0 = time.perf_counter()
    result = evaluate(vae, params, images, evaluation_key(0), config)
    gaps, refined = result["gaps"], result["importance_refined"]
    amortization = np.asarray(gaps["per_example"]["amortization"])
    approximation = np.asarray(gaps["per_example"]["approximation"])
    return {"amortized_elbo": gaps["amortized_elbo"], "refined_elbo": gaps["refined_elbo"],
            "importance_refined": {k: refined[k] for k in ("mean", "stderr", "median", "quartiles", "khat_above_0.7")},
            "amortization_gap": summarize({"value": amortization}),
            "approximation_gap_lower_bound": summarize({"value": approximation}),
            "refine_steps_mean": refined["refine_steps"], "seconds": time.perf_counter() - t0,
            "per_example": {"amortization": amortization.tolist(), "approximation": approximation.tolist()}}


def markdown(rows: dict, settings: dict) -> str:
    lines = ["| images | refinement | L[q] | L[q*] | IS K=%d with q* | amortization gap: mean, median (quartiles) "
             "| approximation gap (lower bound): mean, median | steps (mean) |" % settings["num_samples"],
             "|---|---|---|---|---|---|---|---|"]
    for split, by in rows.items():
        for name, r in by.items():
            a, b = r["amortization_gap"], r["approximation_gap_lower_bound"]
            lines.append(f"| {split} | {name} | {r['amortized_elbo']:.2f} | {r['refined_elbo']:.2f} | "
                         f"{r['importance_refined']['mean']:.2f} | {a['mean']:.2f}, {a['median']:.2f} "
                         f"({a['quartiles'][0]:.2f}, {a['quartiles'][1]:.2f}) | {b['mean']:.2f}, {b['median']:.2f} | "
                         f"{r['refine_steps_mean']:.0f} |")
    lines += ["", f"The shipped Burda VAE (784-200-200-50, static binarized MNIST); the first "
              f"{settings['num_examples']} images of each split (a subset); nats per image. q* refined by Adam "
              f"(step {settings['learning_rate']}, 10 samples per step) until 10 windows of 100 steps in a row did "
              f"not improve the window's mean -ELBO (at most {settings['max_steps']:,} steps), or for 100 steps; "
              f"ELBOs from {settings['elbo_samples']:,} samples; IS with q* is a stochastic lower bound on "
              "log p(x), so the approximation gap shown is a lower bound on the true one."]
    for split, by in rows.items():
        if "100 steps" in by and "converged" in by:
            share = by["100 steps"]["amortization_gap"]["mean"] / by["converged"]["amortization_gap"]["mean"]
            lines.append(f"- {split}: 100 steps recover {100 * share:.0f}% of the converged amortization gap.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = experiment_parser("amortization", __doc__)
    p.add_argument("--run", default=str(SHIPPED), help="run folder of the model (default: the shipped Burda VAE)")
    args = p.parse_args(argv)
    settings = dict(QUICK if args.quick else DEFAULT)
    _, vae, params, step = load_run(args.run, "latest", log=lambda m: None)
    start, rows = time.perf_counter(), {}
    for split in ("train", "test"):
        images = data_lib.load("binarized_mnist", f"{split}[:{settings['num_examples']}]", data_dir=args.data_dir,
                               manual_dir=args.manual_dir).as_float()
        rows[split] = {name: measure(vae, params, images, settings, patience)
                       for name, patience in (("converged", settings["patience"]), ("100 steps", None))}
        c = rows[split]["converged"]
        print(f"{split}: amortization gap {c['amortization_gap']['mean']:.2f} (median "
              f"{c['amortization_gap']['median']:.2f}), {c['refine_steps_mean']:.0f} steps", flush=True)
    write_results(args.output, "amortization", {"meta": {**run_meta(settings, time.perf_counter() - start),
                                                         "model": str(args.run), "checkpoint_step": step},
                                                "results": rows}, markdown(rows, settings))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_experiment(main)
