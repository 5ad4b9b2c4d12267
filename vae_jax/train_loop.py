"""The training loop: data, resume, epochs, validation, metrics and checkpoints in a run folder."""

import contextlib
import dataclasses
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from vae_jax import data as data_lib
from vae_jax import measures, parallel
from vae_jax.checkpoint import Checkpointer
from vae_jax import arrays
from vae_jax.config import ExperimentConfig, TrainConfig
from vae_jax.data import DataOptions
from vae_jax.errors import ConfigError, ConfigMismatchError, NonFiniteError, RunFolderError
from vae_jax.evaluate import SPEC, EvalConfig, map_in_batches
from vae_jax.images import max_images
from vae_jax.memory import check_bytes_fit, check_fits, tree_bytes
from vae_jax.models import VAE
from vae_jax.pixels import dequantize_examples, dequantizes, to_unit_float
from vae_jax.rundir import RunFolder
from vae_jax.signals import signal_of, signals_deferred, stop_signals_raise
from vae_jax.tensorboard_log import TensorBoardLog
from vae_jax.streams import (BINARIZE_STREAM, DATA_STREAM, DEQUANTIZE_STREAM, EVAL_STREAM, INIT_STREAM, SAMPLES_STREAM,
                             TRAIN_STREAM)
from vae_jax.train_step import TrainState, make_optimizer, make_train_epoch
from vae_jax.types import Params


def check_config(saved: ExperimentConfig | None, config: ExperimentConfig, where: str):
    """Raises :class:`ConfigMismatchError` with a field-by-field diff when ``saved`` differs from ``config``."""
    diffs = [] if saved is None else config.differences(saved)
    if not diffs:
        return
    if all(d.startswith("train.epochs:") for d in diffs):
        advice = (f"The {config.train.schedule!r} learning-rate schedule is laid out over the number of epochs, "
                  f"so this run cannot be lengthened or shortened: resume it with --epochs {saved.train.epochs}, "
                  "or start a new --workdir.")
    else:
        advice = ("Run with the saved options to resume it (--epochs may change when the schedule is constant), "
                  "or use a new --workdir. Nothing was changed.")
    raise ConfigMismatchError(f"{where} holds a run with a different configuration:\n  " + "\n  ".join(diffs)
                              + "\n" + advice)


def load_training_data(config: ExperimentConfig, options: DataOptions, folder: RunFolder | None = None, log=print):
    """(config, train, validation, fingerprints): the two splits as :class:`ArrayDataset`, ``config`` completed
    from the data (:func:`vae_jax.data.config_for_data`), and an array file's fingerprints (else ``{}``), after
    checking that the data suit the model and, in a run folder that recorded them, that an array file has not
    changed (:meth:`RunFolder.check_data_unchanged`)."""
    tc = config.train
    default_train, default_valid = data_lib.default_splits(tc.dataset, data_dir=options.data_dir)
    splits = [tc.train_split or default_train, tc.valid_split or default_valid]
    kwargs = dict(data_dir=options.data_dir, manual_dir=options.manual_dir, download=options.download,
                  data_kind=tc.data_kind)
    log(f"loading {tc.dataset} ({splits[0]} to train, {splits[1]} to validate)...")
    fingerprints = {}
    train, valid = data_lib.load_splits(tc.dataset, splits, fingerprints=fingerprints, **kwargs)
    if folder is not None:
        folder.check_data_unchanged(fingerprints, options.allow_changed_data, log)
    config = data_lib.config_for_data(config, train)
    data_lib.check_data_fits_model(train, config)
    if len(train) < tc.batch_size:
        raise ConfigError(f"batch size {tc.batch_size} is larger than the training split ({len(train)} examples).")
    return config, train, valid, fingerprints


def make_validation_elbo(vae: VAE):
    """``(params, images [N, D], key) -> {"elbo", "reconstruction", "kl"}``: one-sample ELBO averages, with
    the ``elbo`` estimator of :mod:`vae_jax.evaluate` compiled once for the run (params are an argument)."""
    spec = SPEC["elbo"]
    fn = jax.jit(spec.build(vae, EvalConfig(elbo_samples=1), spec.chunk_size, None))

    def validation_elbo(params, images, key) -> dict[str, float]:
        values = map_in_batches(functools.partial(fn, params), key, images, spec.batch_size)
        return {"elbo" if name == "value" else name: float(np.mean(v)) for name, v in values.items()}

    return validation_elbo


def resume(ckpt: Checkpointer, template: TrainState, config: ExperimentConfig, where: str, log):
    """(state, base key, completed epochs) of the newest good checkpoint, or None when there is none.

    A checkpoint written for another configuration is never touched: the run is refused with the
    diff. Only a checkpoint that fails to restore (its integrity check) is set aside.
    """
    for step in reversed(ckpt.steps()):
        try:
            meta = ckpt.read_meta(step)
            saved = ExperimentConfig.from_dict(meta["config"])
        except ConfigError as err:
            raise RunFolderError(f"checkpoint {step} in {ckpt.directory} holds a config this version cannot "
                                 f"read ({err}); use a new --workdir.") from None
        except Exception as err:
            _set_aside(ckpt, step, err, log)
            continue
        check_config(saved, config, f"checkpoint {step} in {where}")
        try:
            state, base_key, meta = ckpt.restore(template, step)
        except Exception as err:
            _set_aside(ckpt, step, err, log)
            continue
        return state, base_key, meta["epoch"]
    return None


def _set_aside(ckpt: Checkpointer, step: int, err: Exception, log):
    moved = ckpt.quarantine(step)
    log(f"checkpoint {step} could not be restored ({type(err).__name__}: {str(err)[:200]}); "
        f"moved it to {moved} and trying an older one")


def _as_log_probability(offset: float, bits_dim: int | None, metrics: dict) -> dict[str, float]:
    """Epoch metrics with the ELBO and its reconstruction term shifted by the dequantization ``offset``
    (:mod:`vae_jax.measures`), and ``bits_per_dim`` of the ELBO when ``bits_dim`` (D) is given: 8-bit data."""
    out = {k: float(v) + (offset if k in ("elbo", "reconstruction") else 0.0) for k, v in metrics.items()}
    if bits_dim is not None:
        out["bits_per_dim"] = measures.bits_per_dim(out["elbo"], bits_dim)
    return out


def _check_finite(train_metrics: dict, epoch: int, saved_epoch: int):
    bad = int(train_metrics.pop("first_bad_step"))
    if bad >= 0:
        raise NonFiniteError(
            f"non-finite loss or gradient at step {bad} (epoch {epoch}); the parameters of the last "
            f"checkpoint (epoch {saved_epoch}) are kept. Likely causes: a learning rate too high "
            "(try --learning-rate smaller or --grad-clip), a Gaussian sigma too small, or bad data."
        )


def _completed_like(config: ExperimentConfig, saved: ExperimentConfig | None) -> ExperimentConfig:
    """``config`` with what the data completes (:func:`vae_jax.data.config_for_data`) taken from ``saved``, to
    compare the options with a saved run before the data is read (a mismatch then fails fast)."""
    if saved is None:
        return config
    model, tc = config.model, config.train
    if model.data_shape is None:
        model = model.with_data_shape(saved.model.data_shape)
    if tc.data_kind is None:
        tc = dataclasses.replace(tc, data_kind=saved.train.data_kind)
    if data_lib.dataset_source(tc.dataset) == "arrays" and \
            Path(tc.dataset).expanduser().absolute() == Path(saved.train.dataset):
        tc = dataclasses.replace(tc, dataset=saved.train.dataset)
    return dataclasses.replace(config, model=model, train=tc)


def _check_model_fits(vae: VAE, optimizer):
    """Sizes the parameters and optimizer state before they exist: --hidden 100000,100000 is refused, not a crash."""
    abstract = jax.eval_shape(lambda key: TrainState.create(vae.init(key), optimizer), jax.random.key(0))
    check_bytes_fit(tree_bytes(abstract), f"the model (--hidden {','.join(map(str, vae.config.hidden))}) with its "
                    "optimizer state", "use smaller --hidden widths")


def _initial_state(vae: VAE, config: ExperimentConfig, optimizer, base_key, train) -> TrainState:
    params = vae.init(jax.random.fold_in(base_key, INIT_STREAM))
    if config.train.output_bias_init == "data_mean":
        params = vae.with_output_bias(params, train.mean_image())
    return TrainState.create(params, optimizer)


def train_and_evaluate(config: ExperimentConfig, workdir: str | Path, options: DataOptions = DataOptions(),
                       *, progress: bool = True, log=print, tensorboard_images_every: int | None = 10) -> dict:
    """Trains (or resumes) the run in ``workdir`` to ``config.train.epochs`` epochs.

    Per epoch: train and validation ELBO, KL, reconstruction, seconds and examples/s go to the run's
    ``metrics.jsonl`` and, unless ``tensorboard_images_every`` is None, to TensorBoard event files in its
    ``tensorboard/`` (with a grid of samples every that many epochs, :mod:`vae_jax.tensorboard_log`);
    checkpoints go to its ``checkpoints/``. Everything is checked (options, data, the saved config and the
    checkpoints' configs) before anything is written. SIGTERM and SIGHUP stop it like Ctrl-C, after saving
    the last completed epoch (:mod:`vae_jax.signals`).

    Returns:
      the last epoch's metrics record (``{}`` when the run had nothing left to do and no record).
    """
    folder = RunFolder(workdir)
    folder.check_not_a_file()
    saved = folder.read_config()
    check_config(saved, _completed_like(config, saved), str(folder.path))
    # bad data fails before anything is written
    config, train, valid, fingerprints = load_training_data(config, options, folder, log)
    check_config(saved, config, str(folder.path))
    record, _ = _run(config, folder, VAE(config.model), train, valid, options, fingerprints, progress, log,
                     tensorboard_images_every)
    return record


def fit(vae: VAE, train, *, workdir: str | Path, config: TrainConfig = TrainConfig(), validation=None,
        progress: bool = True, log=print, tensorboard_images_every: int | None = 10) -> Params:
    """Trains ``vae`` (built-in or :meth:`VAE.from_modules`) on arrays with the loop ``vae-jax train`` uses: the
    run folder ``workdir`` (config, metrics, TensorBoard, checkpoints, lock), exact resume when called again,
    progress, and the same handling of non-finite steps and stop signals.

    Args:
      train: images [N, H, W(, C)] (bool, uint8 or floats in [0, 1]; :mod:`vae_jax.arrays` infers the kind,
        ``config.data_kind`` overrides it), or an :class:`ArrayDataset`; they must have ``vae.config.data_shape``.
      config: the training config (``vae_jax.TrainConfig``); its ``dataset`` and split fields are not used.
      validation: images like ``train``; default: the last 10% of ``train`` (``train[90%:]``), the rest trained on.

    Returns:
      the trained parameters (also in ``workdir``: reload them with ``load_run(workdir, vae=vae)``).

    A second call with other arrays is refused (their fingerprints are recorded in the run folder), as is one
    with another model or config.
    """
    folder = RunFolder(workdir)
    folder.check_not_a_file()
    splits = {"train": arrays.as_dataset(train, "train", config.data_kind, data_lib.FIT_DATASET)}
    if validation is None:
        train_split, valid_split = arrays.DEFAULT_VALIDATION
    else:
        splits["validation"] = arrays.as_dataset(validation, "validation", splits["train"].kind,
                                                 data_lib.FIT_DATASET)
        train_split, valid_split = "train", "validation"
    fingerprints = {name: dataset.fingerprint() for name, dataset in splits.items()}
    train_data, valid_data = arrays.select(splits, train_split), arrays.select(splits, valid_split)
    tc = dataclasses.replace(config, dataset=data_lib.FIT_DATASET, train_split=train_split,
                             valid_split=valid_split, data_kind=train_data.kind)
    experiment = ExperimentConfig(vae.config, tc)
    check_config(folder.read_config(), experiment, str(folder.path))
    folder.check_data_unchanged(fingerprints, False, log)
    data_lib.check_data_fits_model(train_data, experiment)
    if len(train_data) < tc.batch_size:
        raise ConfigError(f"batch size {tc.batch_size} is larger than the training split ({len(train_data)} examples).")
    _, state = _run(experiment, folder, vae, train_data, valid_data, DataOptions(), fingerprints, progress, log,
                    tensorboard_images_every)
    return state.params


def _run(config: ExperimentConfig, folder: RunFolder, vae: VAE, train, valid, options: DataOptions, fingerprints,
         progress, log, tensorboard_images_every):
    """Trains ``vae`` in ``folder`` (checked config and data); returns (the last metrics record, the state)."""
    tc = config.train
    steps_per_epoch = len(train) // tc.batch_size
    optimizer = make_optimizer(tc, tc.epochs * steps_per_epoch)
    _check_model_fits(vae, optimizer)
    base_key = jax.random.key(tc.seed)
    primary = parallel.is_primary()
    with (folder.lock() if primary else contextlib.nullcontext()):
        ckpt = folder.checkpointer(tc.keep_checkpoints)
        try:
            fresh = _initial_state(vae, config, optimizer, base_key, train)
            restored = resume(ckpt, fresh, config, str(folder.path), log)
            state, base_key, saved_epoch = restored or (fresh, base_key, 0)
            if saved_epoch > tc.epochs:
                raise RunFolderError(f"{folder.path} is already at epoch {saved_epoch}, past --epochs {tc.epochs}; "
                                     "nothing was changed. Evaluate it, or pass a larger --epochs to train on.")
            if restored:
                log(f"resuming from checkpoint {int(state.step)} (epoch {saved_epoch}) in {folder.path}")
            if primary:
                folder.write_config(config)
                folder.write_data_source(options, tc.dataset, fingerprints)
                folder.keep_metrics_through(saved_epoch, log)
            if saved_epoch == tc.epochs:
                log(f"{folder.path} is already trained to epoch {saved_epoch}; nothing to do")
                return (folder.read_metrics() or [{}])[-1], state
            curves = TensorBoardLog(folder.tensorboard_dir, saved_epoch, tensorboard_images_every) \
                if primary and tensorboard_images_every else None
            try:
                with stop_signals_raise():
                    return _train_epochs(config, folder, ckpt, vae, optimizer, state, base_key, saved_epoch,
                                         train, valid, progress, log, curves)
            finally:
                if curves is not None:
                    curves.close()
        finally:
            ckpt.close()


def _sample_means(vae: VAE, base_key, num: int = 64):
    """``params -> [num, H, W, C]`` mean images E[x|z] of ``num`` fixed z ~ N(0, I), for the sample grids
    (None for vector data, which has no image to draw)."""
    if len(vae.config.data_shape) != 3:
        return None
    num = min(num, max_images(vae.config.data_shape))
    z = jax.random.normal(jax.random.fold_in(base_key, SAMPLES_STREAM), (num, vae.config.latent_dim))
    means = jax.jit(lambda params: jax.vmap(vae.mean_image, (None, 0))(params, z))
    return lambda params: np.asarray(means(params)).reshape(num, *vae.config.data_shape)


def _train_epochs(config, folder, ckpt, vae, optimizer, state, base_key, saved_epoch, train, valid, progress, log,
                  curves):
    tc = config.train
    steps_per_epoch = len(train) // tc.batch_size
    train_images, valid_images = jnp.asarray(train.flat), valid.flat  # as stored: converted a batch at a time
    if tc.binarize:  # validate on one fixed binarization, so epochs are comparable
        valid_images = np.asarray(data_lib.binarize(jax.random.fold_in(base_key, BINARIZE_STREAM),
                                                    to_unit_float(jnp.asarray(valid_images))))
    kind, likelihood, dim = tc.data_kind, vae.config.likelihood, vae.config.data_dim
    if dequantizes(kind, likelihood):  # validate on one fixed dequantization, the training's noise
        valid_images = np.asarray(dequantize_examples(jax.random.fold_in(base_key, DEQUANTIZE_STREAM),
                                                    jnp.arange(len(valid_images)), jnp.asarray(valid_images)))
    in_probability = functools.partial(_as_log_probability, measures.log_probability_offset(kind, likelihood, dim),
                                       dim if measures.reports_bits(kind, likelihood) else None)
    data_key, train_key = (jax.random.fold_in(base_key, s) for s in (DATA_STREAM, TRAIN_STREAM))
    mesh = parallel.data_mesh(tc.batch_size)
    state = parallel.replicate(state, mesh)
    if mesh is not None:
        sharding = jax.tree_util.tree_leaves(state.params)[0].sharding
        log(f"training data-parallel over {mesh.devices.size} devices, parameters replicated: {sharding}")
    batches_of = lambda epoch: parallel.shard_batch(  # [steps, B, D], B split across devices
        data_lib.epoch_batches(jax.random.fold_in(data_key, epoch), train_images, tc.batch_size), mesh, 1)
    log(f"compiling the training epoch ({steps_per_epoch} steps of {tc.batch_size} examples)...")
    compile_start = time.perf_counter()
    upcoming = batches_of(saved_epoch + 1)  # the first epoch's batches, also the shapes to compile for
    train_epoch = make_train_epoch(vae, tc, optimizer, steps_per_epoch)
    compiled = train_epoch.fast.lower(state, upcoming, train_key).compile()  # cached; a checked rerun compiles if needed
    check_fits(compiled, f"a training epoch at batch size {tc.batch_size}", "lower --batch-size or --hidden",
               arguments_resident=True)
    log(f"compiled in {time.perf_counter() - compile_start:.1f} s; training epochs {saved_epoch + 1}-{tc.epochs}")
    validation_elbo = make_validation_elbo(vae)
    sample_means = _sample_means(vae, base_key)
    bar = tqdm(range(saved_epoch + 1, tc.epochs + 1), desc="epochs", disable=not progress,
               initial=saved_epoch, total=tc.epochs)
    record = {}  # ``state`` is always the newest state whose epoch is recorded in metrics.jsonl
    try:
        for epoch in bar:
            start = time.perf_counter()
            batches = upcoming
            if epoch < tc.epochs:  # dispatch is asynchronous: the next epoch is shuffled while this one trains
                upcoming = batches_of(epoch + 1)
            new_state, train_metrics = train_epoch(state, batches, train_key)
            _check_finite(train_metrics, epoch, saved_epoch)
            seconds = time.perf_counter() - start
            valid_metrics = validation_elbo(new_state.params, valid_images, jax.random.fold_in(base_key, EVAL_STREAM))
            record = {"epoch": epoch, "step": int(new_state.step),
                      **{f"train_{k}": v for k, v in in_probability(train_metrics).items()},
                      **{f"valid_{k}": v for k, v in in_probability(valid_metrics).items()},
                      "seconds": seconds, "examples_per_second": steps_per_epoch * tc.batch_size / seconds}
            with signals_deferred():  # the record and its state change together: a stop saves the state logged
                if parallel.is_primary():
                    folder.append_metrics(record)
                state = new_state
            if curves is not None:
                curves.scalars(record)
                if sample_means is not None and curves.wants_images(epoch, tc.epochs):
                    curves.image_grid("samples", sample_means(new_state.params), epoch)
            bar.set_postfix(train_elbo=f"{record['train_elbo']:.2f}", valid_elbo=f"{record['valid_elbo']:.2f}")
            if epoch % tc.checkpoint_every == 0 or epoch == tc.epochs:
                ckpt.save(state, base_key, config.to_dict(), epoch, record)
                saved_epoch = epoch
    except KeyboardInterrupt as interrupt:
        bar.close()
        done = int(state.step) // steps_per_epoch
        if done > 0 and int(state.step) not in ckpt.steps():  # (a save the signal cut short left no step)
            ckpt.save(state, base_key, config.to_dict(), done, record if record.get("epoch") == done else {})
        name = signal_of(interrupt).name
        message = f"interrupted ({name}): the last checkpoint is at epoch {done}; run the same command again to resume"
        folder.append_log(message)  # after a hangup the terminal is gone: the run folder keeps the message
        log(message)
        raise
    finally:
        bar.close()
    return record, state
