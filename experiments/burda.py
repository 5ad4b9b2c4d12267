"""Literature reproduction: the 1-stochastic-layer VAE and IWAE of Burda et al. (2015) on static binarized MNIST.

784-200-200-50, tanh, Bernoulli, trained with the ELBO (k = 1) and with the IWAE objective (k = 5 and 50) on
the 50,000 training images; test log-likelihood by importance sampling with K = 5000 on all 10,000 test
images, from the checkpoint with the best validation ELBO, beside the values Burda et al. report for fixed
binarization (Appendix D). Their protocol: 3,280 epochs in 8 stages (stage i: 3^i epochs at learning rate
1e-3 * 10^(-i/7)), batch 20, Adam with epsilon 1e-4, decoder output bias at the logit of the pixel means;
``--schedule burda`` lays the same stages over any ``--epochs``.

Each model trains in its own resumable run folder (``--workdir``/<model>); running the command again
resumes unfinished runs and re-evaluates finished ones. ``--ship`` copies a model's run folder with only
its best checkpoint to ``--output``/<model>, so that ``vae-jax evaluate --workdir`` on it reproduces the number.

    python experiments/burda.py --manual-dir ../shared/data --models vae --epochs 2400 [--quick]
"""

import json
import os
import shutil
import time
from pathlib import Path

import jax
from common import experiment_parser, run_experiment, run_meta, write_results
from vae_jax import data as data_lib
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.data import DataOptions
from vae_jax.evaluate import evaluate, evaluation_key
from vae_jax.rundir import RunFolder, load_run
from vae_jax.train_loop import train_and_evaluate

PAPER = {"vae": 88.71, "iwae_k5": 87.63, "iwae_k50": 87.10}  # -log p(x), nats, Burda et al. 2015, App. D
MODELS = {"vae": ("elbo", 1), "iwae_k5": ("iwae", 5), "iwae_k50": ("iwae", 50)}


def model_config(name: str, args, quick: bool) -> ExperimentConfig:
    objective, k = MODELS[name]
    train = TrainConfig(objective=objective, num_samples=k, epochs=1 if quick else args.epochs,
                        batch_size=args.batch_size, schedule=args.schedule, adam_eps=args.adam_eps,
                        output_bias_init=args.output_bias_init, train_split="train[:1000]" if quick else None,
                        checkpoint_every=25, keep_checkpoints=2)
    return ExperimentConfig(ModelConfig(latent_dim=50, hidden=(200, 200), activation="tanh"), train)


def ship(workdir: Path, target: Path, step: int, manual_dir: str | None):
    """Copies config, metrics and the one checkpoint ``step`` to ``target`` (a run folder of its own)."""
    if target.resolve() == workdir.resolve():
        raise SystemExit(f"--ship would replace the training run {workdir} itself: use an --output other than --workdir.")
    if target.exists():
        shutil.rmtree(target)
    folder, shipped = RunFolder(workdir), RunFolder(target)
    (target / "checkpoints").mkdir(parents=True)
    for path in (folder.config_path, folder.metrics_path):
        shutil.copy2(path, target / path.name)
    shutil.copytree(folder.checkpoints_dir / str(step), shipped.checkpoints_dir / str(step))
    if manual_dir:  # also recorded relative to the shipped folder, so it holds wherever the repository is cloned
        shipped.write_data_source(DataOptions(manual_dir=manual_dir))


def device_name() -> str:
    """What trained the model: the accelerator's name, or "CPU (N cores)"."""
    device = jax.devices()[0]
    return f"CPU ({os.cpu_count()} cores)" if device.platform == "cpu" else device.device_kind


def learning_curves(metrics: dict[str, list[dict]], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, records in metrics.items():
        epochs = [r["epoch"] for r in records]
        line, = ax.plot(epochs, [r["train_elbo"] for r in records], lw=1, label=f"{name} train ELBO")
        ax.plot(epochs, [r["valid_elbo"] for r in records], lw=1, ls="--", color=line.get_color(),
                label=f"{name} validation ELBO")
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per image)")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], -130))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: list[dict], num_samples: int, test_split: str, num_test: int) -> str:
    lines = [f"| model | epochs (best) | protocol | trained on | test ELBO | test log p(x), IS K={num_samples} "
             "| k-hat > 0.7 | Burda et al. |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ll, proto = r["test_log_likelihood"], r.get("protocol")
        how = f"batch {proto['batch_size']}, {proto['schedule']} schedule" if proto else \
            "an earlier short run (constant rate): undertrained"
        khat = f"{100 * ll['khat_above_0.7']:.1f}%" if "khat_above_0.7" in ll else "-"
        lines.append(f"| {r['model']} | {r['epochs']} ({r.get('best_epoch', '?')}) | {how} | {r.get('device', 'CPU')} "
                     f"| {r['test_elbo']['mean']:.2f} | {ll['mean']:.2f} +- {ll['stderr']:.2f} | {khat} "
                     f"| -{r['paper_nll']:.2f} |")
    lines += ["", f"Nats per image on binarized MNIST {test_split} ({num_test} images), from the checkpoint with the "
              "best validation ELBO; +- is the standard error over test images (the spread between images over "
              "the square root of their number), not the uncertainty of the comparison with Burda et al., which "
              "also holds the training seed-to-seed variation (not measured here) and the bias of importance "
              "sampling at K = 5000 (below log p(x); k-hat > 0.7 on most images). Burda et al. trained 3,280 "
              "epochs at batch 20."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = experiment_parser("burda", __doc__)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--epochs", type=int, default=2400, help="training epochs of each model")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--schedule", default="burda", help="learning-rate schedule (see vae-jax train --help)")
    p.add_argument("--adam-eps", type=float, default=1e-4)
    p.add_argument("--output-bias-init", default="data_mean")
    p.add_argument("--num-samples", type=int, default=5000, help="K of the test estimate")
    p.add_argument("--test-split", default="test", help="test examples")
    p.add_argument("--ship", action="store_true", help="copy each run folder, best checkpoint only, to --output")
    args = p.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    num_samples = 50 if args.quick else args.num_samples
    test_split = "test[:20]" if args.quick else args.test_split
    options = DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir)
    test = data_lib.load("binarized_mnist", test_split, data_dir=args.data_dir, manual_dir=args.manual_dir).as_float()
    out = Path(args.output)
    previous = json.loads((out / "burda.json").read_text())["results"] if (out / "burda.json").exists() else []
    rows, curves, start = {r["model"]: r for r in previous}, {}, time.perf_counter()
    for name in names:
        config, workdir = model_config(name, args, args.quick), Path(args.workdir) / name
        train_and_evaluate(config, workdir, options, progress=False, log=lambda m: None)
        records = RunFolder(workdir).read_metrics()
        curves[name] = records
        _, vae, params, step = load_run(workdir, "best")
        t0 = time.perf_counter()
        result = evaluate(vae, params, test, evaluation_key(0), estimators=("elbo", "importance"),
                          num_samples=num_samples, elbo_samples=10)
        objective, k = MODELS[name]
        tc = config.train
        rows[name] = {"model": name, "objective": objective, "k": k, "epochs": tc.epochs,
                      "protocol": {"batch_size": tc.batch_size, "schedule": tc.schedule, "adam_eps": tc.adam_eps,
                                   "output_bias_init": tc.output_bias_init, "learning_rate": tc.learning_rate},
                      "checkpoint_step": step, "best_epoch": next(r["epoch"] for r in records if r["step"] == step),
                      "train_seconds": sum(r["seconds"] for r in records), "eval_seconds": time.perf_counter() - t0,
                      "device": device_name(),
                      "test_elbo": result["elbo"], "test_log_likelihood": result["importance"],
                      "paper_nll": PAPER[name]}
        print(f"{name}: {tc.epochs} epochs (best {rows[name]['best_epoch']}), test ELBO {result['elbo']['mean']:.2f}, "
              f"log p(x) (IS K={num_samples}) {result['importance']['mean']:.2f} (paper -{PAPER[name]})", flush=True)
        if args.ship:
            ship(workdir, out / name, step, args.manual_dir)
    learning_curves(curves, out / "learning_curves.png")
    table = markdown(list(rows.values()), num_samples, test_split, len(test))
    settings = {"models": names, "epochs": args.epochs, "batch_size": args.batch_size, "schedule": args.schedule,
                "num_samples": num_samples, "test_split": test_split}
    out = write_results(args.output, "burda", {"meta": run_meta(settings, time.perf_counter() - start),
                                               "results": list(rows.values())}, table)
    print(f"wrote {out}/burda.json, burda.md, learning_curves.png")


if __name__ == "__main__":
    run_experiment(main)
