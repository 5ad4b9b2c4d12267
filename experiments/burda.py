"""Literature reproduction: the 1-stochastic-layer VAE and IWAE of Burda et al. (2015) on static binarized MNIST.

784-200-200-50, tanh, Bernoulli, trained with the ELBO (k = 1) and with the IWAE objective (k = 5 and 50);
test log-likelihood by importance sampling with K = 5000, beside the values Burda et al. report for fixed
binarization (Appendix D). Burda et al. trained for 3,280 epochs with a decaying learning rate; the epochs
here are set by the CPU budget and recorded with the results.

    python experiments/burda.py --manual-dir ../shared/data [--quick] [--epochs 20,4,1]
"""

import time
from pathlib import Path

import jax

from common import experiment_parser, run_meta, write_results
from vae_jax import data as data_lib
from vae_jax.rundir import load_run
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.evaluate import evaluate
from vae_jax.data import DataOptions
from vae_jax.train_loop import train_and_evaluate

PAPER = {"vae": 88.71, "iwae_k5": 87.63, "iwae_k50": 87.10}  # -log p(x), nats, Burda et al. 2015, App. D
MODELS = (("vae", "elbo", 1), ("iwae_k5", "iwae", 5), ("iwae_k50", "iwae", 50))


def main(argv=None):
    p = experiment_parser("burda", __doc__)
    p.add_argument("--epochs", default="20,4,1",
                   help="epochs for vae, iwae_k5, iwae_k50 (the default fits ~40 minutes on a 2-core CPU)")
    p.add_argument("--num-samples", type=int, default=5000, help="K of the test estimate")
    p.add_argument("--test-split", default="test", help="test examples")
    args = p.parse_args(argv)
    epochs = [1, 1, 1] if args.quick else [int(e) for e in args.epochs.split(",")]
    num_samples = 50 if args.quick else args.num_samples
    test_split = "test[:20]" if args.quick else args.test_split
    train_split = "train[:1000]" if args.quick else "train"
    options = DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir)
    test = data_lib.load("binarized_mnist", test_split, data_dir=args.data_dir, manual_dir=args.manual_dir).images
    rows, start = [], time.perf_counter()
    for (name, objective, k), n_epochs in zip(MODELS, epochs):
        config = ExperimentConfig(ModelConfig(latent_dim=50, hidden=(200, 200), activation="tanh"),
                                  TrainConfig(objective=objective, num_samples=k, epochs=n_epochs,
                                              train_split=train_split, checkpoint_every=5))
        workdir = Path(args.workdir) / name
        t0 = time.perf_counter()
        train_and_evaluate(config, workdir, options, progress=False, log=lambda m: None)
        train_seconds = time.perf_counter() - t0
        _, vae, params, step = load_run(workdir, "best")
        result = evaluate(vae, params, test, jax.random.key(0), estimators=("elbo", "importance"),
                          num_samples=num_samples, elbo_samples=10)
        rows.append({"model": name, "objective": objective, "k": k, "epochs": n_epochs, "checkpoint_step": step,
                     "train_seconds_this_run": train_seconds, "test_elbo": result["elbo"],
                     "test_log_likelihood": result["importance"], "paper_nll": PAPER[name]})
        print(f"{name}: {n_epochs} epochs, test ELBO {result['elbo']['mean']:.2f}, "
              f"log p(x) (IS K={num_samples}) {result['importance']['mean']:.2f} (paper -{PAPER[name]})", flush=True)
    lines = [f"| model | epochs | test ELBO | test log p(x), IS K={num_samples} | Burda et al. (3,280 epochs) |",
             "|---|---|---|---|---|"]
    for r in rows:
        ll = r["test_log_likelihood"]
        lines.append(f"| {r['model']} | {r['epochs']} | {r['test_elbo']['mean']:.2f} | {ll['mean']:.2f} +- "
                     f"{ll['stderr']:.2f} | -{r['paper_nll']:.2f} |")
    lines += ["", f"Nats per image on binarized MNIST {test_split} ({len(test)} images); +- is the standard error "
              "over test images."]
    out = write_results(args.output, "burda", {"meta": run_meta({"epochs": epochs, "num_samples": num_samples,
                                                                 "test_split": test_split, "train_split": train_split},
                                                                time.perf_counter() - start), "results": rows},
                        "\n".join(lines) + "\n")
    print(f"wrote {out}/burda.json, burda.md")


if __name__ == "__main__":
    main()
