"""What each ``vae-jax`` command does, given its parsed arguments; also usable from Python."""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data as data_lib
from vae_jax import images, parallel
from vae_jax.checkpoint import Checkpointer, CheckpointError
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.evaluate import evaluate as run_estimators
from vae_jax.models import VAE
from vae_jax.train_loop import EVAL_STREAM, DataOptions, check_data_fits_model, train_and_evaluate
from vae_jax.train_step import TrainState, make_optimizer


def _data_options(args) -> DataOptions:
    return DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir, download=args.download)


def config_from_args(args) -> ExperimentConfig:
    learned = args.sigma == "learned"
    model = ModelConfig(latent_dim=args.latent_dim, hidden=args.hidden, activation=args.activation,
                        likelihood=args.likelihood, sigma=1.0 if learned else args.sigma, learn_sigma=learned)
    train = TrainConfig(
        dataset=args.dataset, train_split=args.train_split, valid_split=args.valid_split, binarize=args.binarize,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, schedule=args.schedule,
        decay_rate=args.decay_rate, adam_eps=args.adam_eps,
        output_bias_init=args.output_bias_init, grad_clip=args.grad_clip, objective=args.objective, num_samples=args.num_samples,
        beta=args.beta, kl_warmup_epochs=args.kl_warmup_epochs, seed=args.seed,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
    )
    return ExperimentConfig(model, train)


def train(args):
    if args.coordinator_address:
        parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    config = config_from_args(args)
    state = train_and_evaluate(config, args.workdir, _data_options(args), progress=not args.no_progress)
    lines = Path(args.workdir, "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return (f"trained to step {int(state.step)}: valid ELBO {last.get('valid_elbo', float('nan')):.2f} nats; "
            f"metrics in {Path(args.workdir, 'metrics.jsonl')}, checkpoints in {Path(args.workdir, 'checkpoints')}")


def load_run(workdir, which: str = "latest"):
    """(config, vae, params, checkpoint step) of a trained run folder."""
    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{workdir} is not a vae-jax run folder (no config.json); train one with "
                              f"'vae-jax train --workdir {workdir}'.")
    config = ExperimentConfig.from_json(config_path.read_text())
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
    try:
        step = ckpt.best_step() if which == "best" else (ckpt.steps() or [None])[-1]
        if step is None:
            raise CheckpointError(f"{workdir} has no checkpoint yet; run 'vae-jax train --workdir {workdir}' first.")
        vae = VAE(config.model)
        template = TrainState.create(vae.init(jax.random.key(0)), make_optimizer(config.train, 1))
        state, _, _ = ckpt.restore(template, step)
    finally:
        ckpt.close()
    return config, vae, state.params, step


def evaluate(args):
    config, vae, params, step = load_run(args.workdir, args.checkpoint)
    dataset = data_lib.load(config.train.dataset, args.split, data_dir=args.data_dir,
                            manual_dir=args.manual_dir, download=args.download)
    check_data_fits_model(dataset, config)
    xs = dataset.images[: args.max_examples]
    if config.train.binarize:  # evaluate on one fixed binarization of the grey levels
        xs = np.asarray(data_lib.binarize(jax.random.key(args.seed + 1), jnp.asarray(xs)))

    def report(name, summary):
        print(f"  {name:<11} {summary['mean']:10.3f} +- {summary['stderr']:.3f} nats "
              f"(n={len(xs)}, samples={summary['num_samples']})", flush=True)

    print(f"evaluating checkpoint {step} on {config.train.dataset} {args.split} ({len(xs)} examples):", flush=True)
    result = run_estimators(vae, params, xs, jax.random.fold_in(jax.random.key(args.seed), EVAL_STREAM),
                            estimators=args.estimators, elbo_samples=args.elbo_samples,
                            num_samples=args.num_samples, naive_samples=args.naive_samples,
                            chunk_size=args.chunk_size, progress=report)
    result = {"split": args.split, "checkpoint_step": int(step), **result}
    out = Path(args.workdir, f"eval_{_safe(args.split)}.json")
    out.write_text(json.dumps(result, indent=2))
    return f"wrote {out}"


def _safe(split: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", split).strip("_")


def _output_path(args) -> Path:
    path = Path(args.output)
    return path if path.is_absolute() else Path(args.workdir) / path


def sample(args):
    config, vae, params, step = load_run(args.workdir, args.checkpoint)
    z = jax.random.normal(jax.random.key(args.seed), (args.num, config.model.latent_dim))
    means = jax.vmap(vae.mean_image, (None, 0))(params, z)
    path = images.save_grid(np.asarray(means), _output_path(args))
    return f"wrote {args.num} samples (mean images E[x|z], z ~ N(0, I), checkpoint {step}) to {path}"


def reconstruct(args):
    config, vae, params, step = load_run(args.workdir, args.checkpoint)
    dataset = data_lib.load(config.train.dataset, args.split, data_dir=args.data_dir,
                            manual_dir=args.manual_dir, download=args.download)
    xs = jnp.asarray(dataset.images[: args.num])
    means, _ = jax.vmap(vae.encode, (None, 0))(params, xs)
    recon = jax.vmap(vae.mean_image, (None, 0))(params, means)
    # Rows alternate: 8 originals, then their 8 reconstructions.
    n = (len(xs) // 8) * 8 or len(xs)
    pairs = np.concatenate([np.asarray(xs[:n]).reshape(-1, 8, xs.shape[1]),
                            np.asarray(recon[:n]).reshape(-1, 8, xs.shape[1])], axis=1)
    path = images.save_grid(pairs.reshape(-1, xs.shape[1]), _output_path(args), num_cols=8)
    return f"wrote {n} originals and their reconstructions (decoded posterior means, checkpoint {step}) to {path}"
