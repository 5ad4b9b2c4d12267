"""The training loop: data, resume, epochs, validation, metrics.jsonl and checkpoints."""

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from vae_jax import data as data_lib
from vae_jax import parallel
from vae_jax.checkpoint import Checkpointer
from vae_jax.config import ExperimentConfig
from vae_jax.evaluate import map_in_batches
from vae_jax.models import VAE
from vae_jax.train_step import TrainState, make_eval_elbo, make_optimizer, make_train_epoch

# Streams derived from the base key with fold_in; fixed forever so runs stay reproducible.
INIT_STREAM, DATA_STREAM, TRAIN_STREAM, EVAL_STREAM, BINARIZE_STREAM = 0, 1, 2, 3, 4


class ConfigMismatchError(Exception):
    """A workdir holds a run whose config differs from the one asked for."""


class NonFiniteError(Exception):
    """Training produced a non-finite loss or gradient."""


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """Where the data comes from (not part of the run's identity)."""

    data_dir: str | None = None
    manual_dir: str | None = None
    download: bool = False


def check_workdir_config(workdir: Path, config: ExperimentConfig, write: bool = True):
    """Refuses a workdir whose saved config disagrees with ``config``; then writes ``config.json``."""
    path = workdir / "config.json"
    if path.exists():
        saved = ExperimentConfig.from_json(path.read_text())
        diffs = config.differences(saved)
        if diffs:
            raise ConfigMismatchError(
                f"{workdir} holds a run with a different configuration:\n  " + "\n  ".join(diffs)
                + "\nRun with the saved options to resume it (only --epochs may change), or use a new --workdir."
            )
    if not write:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(config.to_json())
    tmp.replace(path)


def load_training_data(config: ExperimentConfig, options: DataOptions):
    """(train, validation) :class:`ArrayDataset` after checking they suit the model."""
    tc = config.train
    default_train, default_valid = data_lib.DEFAULT_SPLITS[tc.dataset]
    kwargs = dataclasses.asdict(options)
    train = data_lib.load(tc.dataset, tc.train_split or default_train, **kwargs)
    valid = data_lib.load(tc.dataset, tc.valid_split or default_valid, **kwargs)
    check_data_fits_model(train, config)
    return train, valid


def check_data_fits_model(dataset: data_lib.ArrayDataset, config: ExperimentConfig):
    images = dataset.images
    if images.shape[1] != config.model.data_dim:
        raise ValueError(f"{dataset.name} examples have {images.shape[1]} values but the model expects "
                         f"data_dim={config.model.data_dim}.")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{dataset.name} {dataset.split} contains NaN or Inf values; clean the data first.")
    if config.model.likelihood == "bernoulli" and not config.train.binarize and not dataset.is_binary:
        raise ValueError(f"{dataset.name} holds grey levels but the Bernoulli likelihood needs 0/1 data: "
                         "pass --binarize (dynamic binarization) or use --likelihood gaussian.")


def _restore_latest_good(ckpt: Checkpointer, template: TrainState, log):
    """The newest checkpoint that restores; corrupt ones are reported and skipped."""
    for step in reversed(ckpt.steps()):
        try:
            return ckpt.restore(template, step)
        except Exception as err:  # a damaged checkpoint: set it aside and fall back to the previous one
            moved = ckpt.quarantine(step)
            log(f"checkpoint {step} could not be restored ({type(err).__name__}: {str(err)[:200]}); "
                f"moved it to {moved} and trying an older one")
    return None


def _rewrite_metrics(path: Path, last_epoch: int):
    """Drops metrics.jsonl lines of epochs after ``last_epoch`` (their work is being redone)."""
    if path.exists():
        lines = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["epoch"] <= last_epoch]
        path.write_text("".join(l + "\n" for l in lines))


def validation_elbo(eval_elbo, params, images, key) -> dict[str, float]:
    """Average ELBO, reconstruction and KL over ``images`` with ``eval_elbo`` from ``make_eval_elbo``."""
    values = map_in_batches(lambda k, x: eval_elbo(params, k, x), key, images, 500)
    return {name: float(np.mean(v)) for name, v in values.items()}


def _resume(ckpt: Checkpointer, state: TrainState, base_key, workdir: Path, log):
    """(state, base key, completed epochs) from the newest good checkpoint, or the fresh ones."""
    restored = _restore_latest_good(ckpt, state, log)
    if restored is None:
        return state, base_key, 0
    state, base_key, meta = restored
    log(f"resuming from checkpoint {int(state.step)} (epoch {meta['epoch']}) in {workdir}")
    return state, base_key, meta["epoch"]


def _check_finite(train_metrics: dict, epoch: int, saved_epoch: int):
    bad = int(train_metrics.pop("first_bad_step"))
    if bad >= 0:
        raise NonFiniteError(
            f"non-finite loss or gradient at step {bad} (epoch {epoch}); the parameters of the last "
            f"checkpoint (epoch {saved_epoch}) are kept. Likely causes: a learning rate too high "
            "(try --learning-rate smaller or --grad-clip), a Gaussian sigma too small, or bad data."
        )


def train_and_evaluate(config: ExperimentConfig, workdir: str | Path, options: DataOptions = DataOptions(),
                       *, progress: bool = True, log=print) -> TrainState:
    """Trains (or resumes) the run in ``workdir`` to ``config.train.epochs`` epochs.

    Per epoch: train and validation ELBO, KL, reconstruction, seconds and examples/s go to
    ``workdir/metrics.jsonl``; checkpoints go to ``workdir/checkpoints``.
    """
    workdir, tc = Path(workdir), config.train
    check_workdir_config(workdir, config, write=False)
    train, valid = load_training_data(config, options)  # bad data fails before anything is written
    steps_per_epoch = len(train) // tc.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {tc.batch_size} is larger than the training split ({len(train)} examples).")
    if parallel.is_primary():
        check_workdir_config(workdir, config)
    vae = VAE(config.model)
    optimizer = make_optimizer(tc, tc.epochs * steps_per_epoch)
    base_key = jax.random.key(tc.seed)
    params = vae.init(jax.random.fold_in(base_key, INIT_STREAM))
    if tc.output_bias_init == "data_mean":
        params = vae.with_output_bias(params, train.images.mean(axis=0))
    fresh = TrainState.create(params, optimizer)
    ckpt = Checkpointer(workdir / "checkpoints", keep=tc.keep_checkpoints)
    state, base_key, saved_epoch = _resume(ckpt, fresh, base_key, workdir, log)
    metrics_path = workdir / "metrics.jsonl"
    if parallel.is_primary():
        _rewrite_metrics(metrics_path, saved_epoch)

    images, valid_images = jnp.asarray(train.images), valid.images
    if tc.binarize:  # validate on one fixed binarization, so epochs are comparable
        valid_images = np.asarray(data_lib.binarize(jax.random.fold_in(base_key, BINARIZE_STREAM), valid_images))
    data_key, train_key = (jax.random.fold_in(base_key, s) for s in (DATA_STREAM, TRAIN_STREAM))
    mesh = parallel.data_mesh(tc.batch_size)
    state = parallel.replicate(state, mesh)
    batches_of = lambda epoch: parallel.shard_batch(  # [steps, B, D], B split across devices
        data_lib.epoch_batches(jax.random.fold_in(data_key, epoch), images, tc.batch_size), mesh, 1)
    compile_start = time.perf_counter()
    train_epoch = make_train_epoch(vae, tc, optimizer, steps_per_epoch).lower(state, batches_of(0), train_key).compile()
    log(f"compiled the training epoch in {time.perf_counter() - compile_start:.1f} s "
        f"({steps_per_epoch} steps of {tc.batch_size} examples)")
    eval_elbo = make_eval_elbo(vae)
    bar = tqdm(range(saved_epoch + 1, tc.epochs + 1), desc="epochs", disable=not progress,
               initial=saved_epoch, total=tc.epochs)
    try:
        for epoch in bar:
            start = time.perf_counter()
            new_state, train_metrics = train_epoch(state, batches_of(epoch), train_key)
            _check_finite(train_metrics, epoch, saved_epoch)
            state, seconds = new_state, time.perf_counter() - start
            valid_metrics = validation_elbo(eval_elbo, state.params, valid_images,
                                            jax.random.fold_in(base_key, EVAL_STREAM))
            record = {"epoch": epoch, "step": int(state.step),
                      **{f"train_{k}": float(v) for k, v in train_metrics.items()},
                      **{f"valid_{k}": v for k, v in valid_metrics.items()},
                      "seconds": seconds, "examples_per_second": steps_per_epoch * tc.batch_size / seconds}
            if parallel.is_primary():
                with metrics_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix(train_elbo=f"{record['train_elbo']:.2f}", valid_elbo=f"{record['valid_elbo']:.2f}")
            if epoch % tc.checkpoint_every == 0 or epoch == tc.epochs:
                ckpt.save(state, base_key, config.to_dict(), epoch, record)
                saved_epoch = epoch
    except KeyboardInterrupt:
        done = _last_epoch(state, steps_per_epoch)
        if saved_epoch < done:
            ckpt.save(state, base_key, config.to_dict(), done, {})
            log(f"interrupted: saved a checkpoint at epoch {done}; run again to resume")
        raise
    finally:
        bar.close()
        ckpt.close()
    return state


def _last_epoch(state: TrainState, steps_per_epoch: int) -> int:
    return int(state.step) // steps_per_epoch
