"""What each ``vae-jax`` command does, given its parsed arguments."""

import dataclasses
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data as data_lib
from vae_jax import images, measures, parallel
from vae_jax.cli_options import config_from_args
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.data import DataOptions
from vae_jax.errors import BackendError, ConfigError
from vae_jax.evaluate import EvalConfig, evaluation_key
from vae_jax.evaluate import bdmc as run_bdmc
from vae_jax.evaluate import evaluate as run_estimators
from vae_jax.pixels import to_unit_float
from vae_jax.rundir import RunFolder, load_run, write_json
from vae_jax.streams import BINARIZE_STREAM
from vae_jax.train_loop import train_and_evaluate

AIS_OPTIONS = ("ais_chains", "ais_temperatures", "leapfrog_steps", "ais_start", "seed")  # of EvalConfig
MAX_IMAGES = images.max_images()  # of 28 x 28 images: 1,024, a 32 x 32 grid (larger images: fewer, images.max_images)


def _data_options(args) -> DataOptions:
    return DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir, download=args.download,
                       allow_changed_data=args.allow_changed_data)


def experiment_config(args) -> ExperimentConfig:
    """The run's config from the options; the example shape is left for the training data to fill."""
    model = dataclasses.replace(config_from_args(ModelConfig, args), data_shape=None, data_dim=None)
    return ExperimentConfig(model, config_from_args(TrainConfig, args))


def check_options(args):
    """Builds the command's configs from its options (``args.config``, ``args.eval_config``), checking them
    all before anything is read or written; raises :class:`ConfigError`."""
    if args.command == "train":
        args.config = experiment_config(args)
    elif args.command in ("evaluate", "bdmc"):
        args.eval_config = config_from_args(EvalConfig, args)


def start_backend(args):
    """Joins a multi-process run (which must happen before JAX starts its backend), then starts the backend,
    so that a platform JAX cannot start (``JAX_PLATFORMS=gpu`` on a machine without one) is one clear error."""
    if getattr(args, "coordinator_address", None):
        parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    try:
        jax.devices()
    except Exception as err:  # RuntimeError for an unknown platform; an AssertionError for 'cuda' without CUDA
        asked = os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_PLATFORM_NAME") or ""
        setting = f"JAX_PLATFORMS={asked!r}" if asked else "this machine's JAX installation"
        build = "'jax[tpu]'" if "tpu" in asked else "'jax[cuda13]' (or the build for your CUDA)" \
            if any(p in asked for p in ("cuda", "gpu")) else "the JAX build for that platform"
        detail = str(err).split(" (set")[0] or type(err).__name__
        raise BackendError(f"JAX could not start the platform that {setting} asks for ({detail}). Unset "
                           f"JAX_PLATFORMS to use what this machine has, or install {build}.") from None


def train(args):
    config = args.config
    record = train_and_evaluate(config, args.workdir, _data_options(args), progress=not args.no_progress,
                                tensorboard_images_every=None if args.no_tensorboard else args.tensorboard_images_every)
    folder = RunFolder(args.workdir)
    elbo = record.get("valid_elbo")  # None when undefined (metrics.jsonl writes NaN as null)
    elbo = f"{elbo:.2f}" if isinstance(elbo, (int, float)) else "undefined"
    return (f"trained to epoch {record.get('epoch', '?')} (step {record.get('step', '?')}): valid ELBO "
            f"{elbo} nats; metrics in {folder.metrics_path}, "
            f"checkpoints in {folder.checkpoints_dir}")


def _output_path(args, default: Path | None = None) -> Path:
    """``--output`` (relative paths inside WORKDIR), else ``default`` (a path that already includes
    WORKDIR), checked writable before any work is done."""
    if args.output:
        path = Path(args.output)
        path = path if path.is_absolute() else Path(args.workdir) / path
    else:
        path = default
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder; give a file name.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write {path} ({err.strerror or err}); pass --output with a file in a folder "
                          "you may write to.") from None
    return path


def _load_images(folder: RunFolder, config: ExperimentConfig, split: str, args) -> data_lib.ArrayDataset:
    """``split`` of the run's data, found from the run folder; an array file must be the one the run recorded
    (or ``--allow-changed-data``) and the data must suit the model."""
    options = folder.data_options(_data_options(args))
    fingerprints = {}
    dataset, = data_lib.load_splits(folder.dataset(config), [split], data_dir=options.data_dir,
                                    manual_dir=options.manual_dir, download=options.download,
                                    data_kind=config.train.data_kind, fingerprints=fingerprints)
    folder.check_data_unchanged(fingerprints, options.allow_changed_data)
    data_lib.check_data_fits_model(dataset, config)
    return dataset


def evaluate(args):
    eval_config, folder = args.eval_config, RunFolder(args.workdir)
    folder.require_config()
    out = _output_path(args, folder.result_path(eval_config.split))
    _announce_loading(args, f" and {eval_config.split}")
    config, vae, params, step = load_run(args.workdir, args.checkpoint)
    dataset = _load_images(folder, config, eval_config.split, args)
    xs = dataset.flat[: eval_config.max_examples]  # as stored: converted a batch at a time
    if config.train.binarize:  # evaluate on one fixed binarization of the grey levels
        key = jax.random.fold_in(evaluation_key(eval_config.seed), BINARIZE_STREAM)
        xs = np.asarray(data_lib.binarize(key, to_unit_float(jnp.asarray(xs)))).astype(bool)

    def report(name, summary):
        heavy = summary.get("khat_above_0.7")
        warning = f"; k-hat > 0.7 for {100 * heavy:.1f}% of examples: their MC error and ESS are unreliable" \
            if heavy else ""
        counts = (f"chains={summary['num_chains']}, temperatures={summary['num_temperatures']}" if name == "ais" else
                  f"particles={summary['num_particles']}, temperatures={summary['num_temperatures']}" if name == "smc"
                  else f"samples={summary['num_samples']}")
        stderr = "undefined" if len(xs) < 2 else f"{summary['stderr']:.3f}"  # one example has no spread
        bits = f" = {summary['bits_per_dim']:.4f} bits/dim" if "bits_per_dim" in summary else ""
        print(f"  {name:<11} {summary['mean']:10.3f} +- {stderr} nats{bits} (n={len(xs)}, {counts}{warning})",
              flush=True)

    kind = "binary" if config.train.binarize else dataset.kind
    print(f"evaluating checkpoint {step} on {dataset.name} {eval_config.split} ({len(xs)} examples): "
          f"{measures.describe(kind, config.model.likelihood)}; compiling the estimators first...", flush=True)
    result = run_estimators(vae, params, xs, evaluation_key(eval_config.seed), eval_config, report=report,
                            progress=not args.no_progress, data_kind=kind)
    result = {"split": eval_config.split, "checkpoint_step": int(step), **result}
    write_json(out, result)
    return f"wrote {out}"


def bdmc(args):
    folder = RunFolder(args.workdir)
    folder.require_config()
    out = _output_path(args, folder.path / "bdmc.json")
    _announce_loading(args)
    config, vae, params, step = load_run(args.workdir, args.checkpoint)
    c = args.eval_config
    print(f"BDMC on {args.num_examples} examples simulated from checkpoint {step}: {c.ais_chains} chains, "
          f"{c.ais_temperatures} temperatures, {c.leapfrog_steps} leapfrog steps, from the {c.ais_start}; "
          "compiling first...", flush=True)
    result = run_bdmc(vae, params, evaluation_key(c.seed), args.num_examples, c, progress=not args.no_progress)
    result = {"checkpoint_step": int(step), **result}
    write_json(out, result)
    return (f"forward AIS {result['forward']['mean']:.3f}, reverse AIS {result['reverse']['mean']:.3f} nats: "
            f"BDMC gap {result['gap']['mean']:.3f} +- {result['gap']['stderr']:.3f} on average (largest "
            f"{result['gap']['max']:.3f}): {'' if result['certified'] else 'not '}certified (the rule: a mean gap "
            f"below {result['certified_below']} nats); wrote {out}")


def _announce_loading(args, more: str = ""):
    """The first line of a command that reads a run: what it loads (the wait before the next line)."""
    print(f"loading the {args.checkpoint} checkpoint of {args.workdir}{more}...", flush=True)


def _image_output(args) -> tuple[Path, tuple[int, ...]]:
    """The checked PNG path and the run's example shape, before anything is loaded."""
    shape = RunFolder(args.workdir).require_config().model.data_shape
    if len(shape) != 3:
        raise ConfigError(f"the run models vectors of shape {shape}, not images; there is no grid to draw.")
    most = images.max_images(shape)
    if args.num > most:
        raise ConfigError(f"--num {args.num} is more than the {most} images of {shape[0]} x {shape[1]} a grid holds; "
                          f"ask for at most {most}.")
    path = images.check_png_path(_output_path(args))
    _announce_loading(args)
    return path, shape


def sample(args):
    out, shape = _image_output(args)
    config, vae, params, step = load_run(args.workdir, args.checkpoint)
    z = jax.random.normal(jax.random.key(args.seed), (args.num, config.model.latent_dim))
    means = jax.vmap(vae.mean_image, (None, 0))(params, z)
    path = images.save_grid(np.asarray(means), out, image_shape=shape)
    return f"wrote {args.num} samples (mean images E[x|z], z ~ N(0, I), checkpoint {step}) to {path}"


def reconstruct(args):
    out, shape = _image_output(args)
    folder = RunFolder(args.workdir)
    dataset = _load_images(folder, folder.require_config(), args.split, args)
    config, vae, params, step = load_run(args.workdir, args.checkpoint)
    xs = jnp.asarray(dataset.as_float(args.num))
    means, _ = jax.vmap(vae.encode, (None, 0))(params, xs)
    recon = jax.vmap(vae.mean_image, (None, 0))(params, means)
    num_cols = min(8, len(xs))
    cells = images.interleave_rows(np.asarray(xs), np.asarray(recon), num_cols)
    path = images.save_grid(cells, out, num_cols=num_cols, image_shape=shape)
    return (f"wrote {len(xs)} originals and their reconstructions (decoded posterior means, checkpoint {step}) "
            f"to {path}")
