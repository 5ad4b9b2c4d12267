"""Datasets as in-memory arrays: TFDS datasets (no TensorFlow) and a user's own array files.

    train = load("binarized_mnist", "train", manual_dir="../shared/data")
    train.images      # bool [N, 28, 28, 1]: stored by kind (vae_jax.pixels), shape kept
    train.as_float()  # float32 [N, 784] model inputs in [0, 1]
    own = load("my_images.npz", "train[:5000]")   # an .npz file or a folder of .npy files (vae_jax.arrays)

A dataset name is one of the built-in ``binarized_mnist``, ``mnist``, ``fashion_mnist``; a path to arrays
(ends in ``.npz``, starts with ``/``, ``.`` or ``~``, or exists); or any other TFDS dataset with an ``image``
feature, prepared in ``data_dir`` (``tfds build NAME --file_format=array_record``, or ``download=True``).
The built-in datasets are prepared once into ``data_dir`` (``array_record``) from files in ``manual_dir``
(or ``$TFDS_DATA_DIR/downloads/manual``), plain or gzip-compressed, verified by sha256; with
``download=True`` missing files are fetched from the stock TFDS URLs.
"""

import contextlib
import dataclasses
import functools
import io
import logging
import os
import re
from pathlib import Path

import jax
import numpy as np

from vae_jax import arrays
from vae_jax.arrays import ArrayDataset
from vae_jax.config import ExperimentConfig
from vae_jax.errors import ConfigError, DataError, DataFileError
from vae_jax.pixels import as_stored, check_likelihood_fits
from vae_jax.tfds_builders import BUILDERS, SPECS, find_local_file
from vae_jax.types import Array, PRNGKey

DATASETS = tuple(SPECS)  # built in; any other TFDS image dataset, or array files, work too
DEFAULT_SPLITS = {  # (train, validation) splits used by training
    "binarized_mnist": ("train", "validation"),
    "mnist": ("train[:54000]", "train[54000:]"),
    "fashion_mnist": ("train[:54000]", "train[54000:]"),
}
_SPLIT = re.compile(r"^(?P<base>[a-z]+)(\[[^\]]*\])?$")


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """Where the data comes from (not part of a run's identity; a run folder records it)."""

    data_dir: str | None = None
    manual_dir: str | None = None
    download: bool = False
    allow_changed_data: bool = False  # an array file that changed since the run was made: warn, do not refuse

    def absolute(self) -> "DataOptions":
        """The same options with absolute paths, valid from any working directory."""
        absolute = lambda p: None if p is None else str(Path(p).expanduser().absolute())
        return dataclasses.replace(self, data_dir=absolute(self.data_dir), manual_dir=absolute(self.manual_dir))

    def merged_over(self, recorded: "DataOptions | None") -> "DataOptions":
        """These options where given (not None), the ``recorded`` ones elsewhere."""
        if recorded is None:
            return self
        pick = lambda mine, theirs: mine if mine is not None else theirs
        return dataclasses.replace(self, data_dir=pick(self.data_dir, recorded.data_dir),
                                   manual_dir=pick(self.manual_dir, recorded.manual_dir),
                                   download=self.download or recorded.download)


def default_data_dir() -> Path:
    """``$TFDS_DATA_DIR`` when set and not empty, else ``~/tensorflow_datasets``."""
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")


def _manual_dirs(manual_dir, data_dir: Path) -> list[Path]:
    return [Path(manual_dir)] if manual_dir is not None else [data_dir / "downloads" / "manual"]


def _missing_files_message(name: str, split: str, missing: list[str], dirs: list[Path]) -> str:
    spec = SPECS[name]
    urls = ", ".join(spec.url_infos[f][0] for f in missing)
    where = " or ".join(str(d) for d in dirs)
    return (
        f"dataset {name!r} split {split!r} needs {', '.join(missing)} (plain or .gz), not found in {where} "
        f"(nor in a {name}/ folder inside it). Put the files there, pass --manual-dir DIR (manual_dir=) "
        f"pointing at them, or pass --download (download=True) to fetch them from {urls}; every file is "
        "checked against the registered sha256."
    )


def _prepare(name: str, base_split: str, data_dir: Path, manual_dir, download: bool):
    import tensorflow_datasets as tfds

    builder = tfds.builder(f"{BUILDERS[name].name}/{base_split}", data_dir=str(data_dir),
                           file_format="array_record")
    if builder.is_prepared():
        return builder
    dirs = _manual_dirs(manual_dir, data_dir)
    missing = [f for f in SPECS[name].split_files[base_split] if find_local_file(SPECS[name], f, dirs) is None]
    if missing and not download:
        raise DataFileError(_missing_files_message(name, base_split, missing, dirs))
    config = tfds.download.DownloadConfig(manual_dir=str(dirs[0]), force_checksums_validation=True)
    with _preparing(Path(data_dir), f"{name}_{base_split}"):
        if builder.is_prepared():  # another process prepared it while this one waited: read what it wrote
            return tfds.builder(f"{BUILDERS[name].name}/{base_split}", data_dir=str(data_dir),
                                file_format="array_record")
        builder.download_and_prepare(file_format="array_record", download_config=config)
    return builder


@contextlib.contextmanager
def _preparing(data_dir: Path, what: str):
    """Holds an exclusive lock (``data_dir/.<what>.lock``) while a dataset is prepared: processes started
    together on one data folder prepare it once, the others waiting, instead of racing to rename TFDS's
    folder into place (a FileExistsError). Without ``fcntl`` (Windows) it holds no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / f".{what}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_tfds():
    """TFDS prints progress bars, notices and absl warnings; keep the user's terminal clean."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def dataset_source(name: str) -> str:
    """``"builtin"`` (one of :data:`DATASETS`), ``"arrays"`` (a path: ends in .npz, starts with /, . or ~, or
    exists) or ``"tfds"`` (any other name: a TFDS dataset)."""
    if name in SPECS:
        return "builtin"
    if name.endswith(".npz") or name.startswith(("/", ".", "~")) or Path(name).expanduser().exists():
        return "arrays"
    return "tfds"


def default_splits(name: str, *, data_dir=None) -> tuple[str, str]:
    """The (train, validation) splits training uses when none are given: the dataset's own validation split,
    else the last 10% of ``train`` held out (``train[:90%]``, ``train[90%:]``; MNIST's 54,000 / 6,000)."""
    if name in DEFAULT_SPLITS:
        return DEFAULT_SPLITS[name]
    names = split_names(name, data_dir=data_dir)
    return ("train", "validation") if "validation" in names else arrays.DEFAULT_VALIDATION


def split_names(name: str, *, data_dir=None) -> list[str]:
    """The splits a dataset has (for arrays: the arrays in the file; for TFDS: the prepared splits)."""
    source = dataset_source(name)
    if source == "builtin":
        return list(SPECS[name].split_files)
    if source == "arrays":
        return list(arrays.split_names(Path(name).expanduser()))
    with _quiet_tfds():
        return list(_tfds_builder(name, _data_dir(data_dir), download=False).info.splits)


def load(name: str, split: str, *, data_dir=None, manual_dir=None, download: bool = False,
         data_kind: str | None = None) -> ArrayDataset:
    """Loads one split (TFDS split syntax, e.g. ``"train[:1000]"``) into memory.

    Args:
      name: a built-in dataset (:data:`DATASETS`), a path to an ``.npz`` file or a folder of ``.npy`` files
        (:mod:`vae_jax.arrays`), or the name of any TFDS dataset with an ``image`` feature.
      split: ``train``, ``validation`` or ``test`` (those the dataset has), optionally sliced.
      data_dir: where prepared TFDS datasets live; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      manual_dir: folder holding a built-in dataset's files; default ``<data_dir>/downloads/manual``.
      download: fetch missing files (built-in datasets) or download and prepare a TFDS dataset.
      data_kind: None to infer the kind (:mod:`vae_jax.pixels`) from the data, or the kind to take.

    Returns:
      the split as an :class:`ArrayDataset`: images [N, H, W, C] stored by kind (bool, uint8 or float).

    Raises:
      ConfigError: unknown dataset, or a split that is unknown, malformed or empty.
      DataError: values that are no images (NaN, out of range, pickled objects), a ``data_kind`` they are not.
      DataFileError: files missing, truncated or failing their checksum; a damaged prepared dataset.
    """
    return load_splits(name, [split], data_dir=data_dir, manual_dir=manual_dir, download=download,
                       data_kind=data_kind)[0]


FIT_DATASET = "arrays given to vae_jax.fit"  # TrainConfig.dataset of a run made by vae_jax.fit


def load_splits(name: str, splits: list[str], *, data_dir=None, manual_dir=None, download: bool = False,
                data_kind: str | None = None, fingerprints: dict | None = None) -> list[ArrayDataset]:
    """:func:`load` for several splits, reading an array file once. For an array file, a ``fingerprints`` dict
    receives ``{split: ArrayDataset.fingerprint()}`` of each whole split array in the file."""
    if name == FIT_DATASET:
        raise ConfigError("this run was trained by vae_jax.fit on arrays held in Python, which the run folder does "
                          "not store; evaluate it from Python (vae_jax.evaluate.evaluate with load_run(workdir, "
                          "vae=...)), or train on an array file with --dataset PATH.")
    source = dataset_source(name)
    if source == "arrays":
        stored = arrays.load_arrays(Path(name).expanduser(), data_kind=data_kind)
        if fingerprints is not None:
            fingerprints.update({split: dataset.fingerprint() for split, dataset in stored.items()})
        return [arrays.select(stored, split) for split in splits]
    data_dir = _data_dir(data_dir)
    return [_load_tfds(name, source, split, data_dir, manual_dir, download, data_kind) for split in splits]


def config_for_data(config: ExperimentConfig, train: ArrayDataset) -> ExperimentConfig:
    """``config`` completed from its training data: an array file's path made absolute (so later commands find
    it from any folder), the data's kind, and the data's shape where ``data_shape`` is None."""
    tc, model = config.train, config.model
    dataset = str(Path(tc.dataset).expanduser().absolute()) if dataset_source(tc.dataset) == "arrays" else tc.dataset
    if model.data_shape is None:
        model = model.with_data_shape(train.shape)
    return dataclasses.replace(config, model=model,
                               train=dataclasses.replace(tc, dataset=dataset, data_kind=train.kind))


def _data_dir(data_dir) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir()


def _load_tfds(name, source, split, data_dir, manual_dir, download, data_kind) -> ArrayDataset:
    match = _SPLIT.match(split)
    with _quiet_tfds():
        if source == "builtin":
            if match is None or match["base"] not in SPECS[name].split_files:
                raise ConfigError(
                    f"unknown split {split!r} for {name}; use one of {list(SPECS[name].split_files)}, "
                    "optionally sliced as in TFDS (e.g. 'train[:1000]', 'test[80%:]')."
                )
            builder = _prepare(name, match["base"], data_dir, manual_dir, download)
        else:
            builder = _tfds_builder(name, data_dir, download)
            _check_image_feature(builder, name)
        _check_split_size(builder, name, split)
        try:
            records = _read_all(builder.as_data_source(split=split))
        except (RuntimeError, OSError, ValueError) as err:
            raise DataFileError(
                f"the prepared dataset in {builder.data_dir} is damaged ({str(err)[:200]}); delete that folder "
                "and run again: it is prepared anew from the dataset files."
            ) from None
    images = np.stack([r["image"] for r in records])
    images = images[..., None] if images.ndim == 3 else images
    labels = np.array([r["label"] for r in records], np.int32) if "label" in records[0] else None
    where = f"{name} {split}"
    kind = arrays.infer_kind(where, images, data_kind)
    return ArrayDataset(as_stored(images, kind), labels, name, split, kind)


def _tfds_builder(name: str, data_dir: Path, download: bool):
    """The TFDS builder of ``name``, prepared in ``data_dir`` (as ``array_record``), or prepared now with
    ``download``; raises :class:`DataFileError` saying how to prepare it."""
    import tensorflow_datasets as tfds

    how = (f"prepare it on a machine with internet and TensorFlow ('tfds build {name} --file_format=array_record "
           f"--data_dir DIR', or 'vae-jax train --dataset {name} --download --data-dir DIR'), copy DIR here and "
           f"pass --data-dir DIR; or give an array file (see README, 'Your own data').")
    try:
        builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
    except Exception as err:  # DatasetNotFoundError and its relatives: not registered and not prepared here
        raise ConfigError(f"dataset {name!r} is not one of the built-in {', '.join(DATASETS)}, not an array "
                          f"file, and no TFDS dataset of that name is prepared in {data_dir} "
                          f"({str(err).splitlines()[0][:160]}). To use a TFDS dataset, {how}") from None
    if builder.is_prepared():
        return builder
    if not download:
        raise DataFileError(f"TFDS dataset {name!r} is not prepared in {data_dir}; {how}")
    try:
        builder.download_and_prepare(file_format="array_record")
    except Exception as err:  # no network, no TensorFlow (TFDS encodes images with it), a failing download
        raise DataFileError(f"could not download and prepare {name!r} into {data_dir} ({type(err).__name__}: "
                            f"{str(err)[:200]}); {how}") from None
    return builder


def _check_image_feature(builder, name: str):
    features = builder.info.features
    if "image" not in features:
        raise ConfigError(f"TFDS dataset {name!r} has no 'image' feature (its features: {', '.join(features)}); "
                          "vae-jax models images. Convert it to arrays (see README, 'Your own data').")
    shape = tuple(features["image"].shape)
    if len(shape) not in (2, 3) or None in shape:
        raise ConfigError(f"TFDS dataset {name!r} has images of shape {shape}; vae-jax needs one fixed "
                          "(H, W, C) for all images. Resize them to one shape and save them as arrays.")


def _check_split_size(builder, name: str, split: str):
    splits = builder.info.splits  # empty under tfds.testing.mock_data
    if not splits:
        return
    try:
        count = splits[split].num_examples
    except (ValueError, KeyError) as err:  # TFDS: a slice beyond the split, an unknown split, one it cannot parse
        first_line = str(err).splitlines()[0]
        raise ConfigError(f"split {split!r} of {name}: {first_line} Slices look like 'test[:1000]', "
                          "'test[1000:2000]' or 'test[80%:]'.") from None
    if count <= 0:
        raise ConfigError(f"split {split!r} of {name} selects no examples (the slice is empty or reversed); "
                          "choose a non-empty slice such as 'test[:1000]'.")


def _read_all(source) -> list[dict]:
    """All records of a data source; bulk ``__getitems__`` is ~6x faster than reading one by one."""
    indices = list(range(len(source)))
    try:
        return source.__getitems__(indices)
    except TypeError:  # tfds.testing.mock_data's source has no bulk read
        return [source[i] for i in indices]


@functools.partial(jax.jit, static_argnames="batch_size")
def epoch_batches(key: PRNGKey, images: Array, batch_size: int) -> Array:
    """Shuffles ``images`` [N, D] (any dtype: they stay as stored) with ``key`` and cuts [N // B, B, D] batches
    (the remainder is dropped).

    Jitted: op by op, the permutation and the gather took 270 ms for binarized MNIST, 13% of an epoch."""
    num_batches = images.shape[0] // batch_size
    order = jax.random.permutation(key, images.shape[0])[: num_batches * batch_size]
    return images[order].reshape(num_batches, batch_size, images.shape[-1])


def check_data_fits_model(dataset: ArrayDataset, config: ExperimentConfig):
    """Raises :class:`DataError` when ``dataset`` cannot be modelled as configured: examples of another shape
    than the model's, or a kind its likelihood cannot model (:func:`vae_jax.pixels.check_likelihood_fits`).
    The values themselves were checked when the data was loaded."""
    where = f"{dataset.name} {dataset.split}"
    model = config.model
    if dataset.shape != model.data_shape and not (len(model.data_shape) == 1 and dataset.data_dim == model.data_dim):
        raise DataError(f"{where} holds examples of shape {dataset.shape} but the model was made for "
                        f"{model.data_shape}; use the data the model was made for, or a model for this shape "
                        "(the command line takes it from the training data, as does ModelConfig(data_shape=None)).")
    check_likelihood_fits(dataset.kind, model.likelihood, config.train.binarize, where)


def binarize(key: PRNGKey, images: Array) -> Array:
    """Dynamic binarization: x_bin ~ Bernoulli(x), drawn from ``key``."""
    return jax.random.bernoulli(key, images).astype(images.dtype)
