"""A user's own images as array files: an ``.npz`` file, or a folder of ``.npy`` files, one array per split.

    splits = load_arrays("my_images.npz")        # {"train": ArrayDataset, "test": ...}
    splits["train"].images                       # [N, H, W, C], stored by kind (uint8 stays uint8)
    splits["train"].kind                         # "binary", "uint8" or "continuous"
    select(splits, "train[:5000]")               # a TFDS-style split expression

Arrays are named ``train`` (required), ``validation`` and ``test``, each [N, H, W] (one channel) or
[N, H, W, C]. The data's **kind** follows from its dtype and values:

* ``binary``: bool, or integers / floats that are all 0 or 1 (models: Bernoulli);
* ``uint8``: 8-bit levels 0..255, stored as uint8 (or as other integers within 0..255);
* ``continuous``: floats in [0, 1].

``data_kind=`` overrides the inference where the dtype leaves a choice (floats that happen to be all 0/1
can be declared ``continuous``). Files are opened with ``allow_pickle=False``, always: an array file from
elsewhere never runs code, and an object array is refused, never unpickled. ``.npy`` files are memory-mapped,
so a split larger than the memory is read only where it is used.

Every check runs before anything is written, and each failure is a :class:`vae_jax.errors.DataError` (or
:class:`~vae_jax.errors.DataFileError` for a file that cannot be read) saying what to do.
"""

import dataclasses
import hashlib
import types
import zipfile
from pathlib import Path

import numpy as np

from vae_jax.errors import ConfigError, DataError, DataFileError
from vae_jax.config import DATA_KINDS
from vae_jax.pixels import as_stored, to_unit_float
from vae_jax.validation import is_binary

SPLITS = ("train", "validation", "test")
DEFAULT_VALIDATION = ("train[:90%]", "train[90%:]")  # (train, validation) when a data set has no validation split
_BLOCK = 1 << 24  # examples are hashed and summed 16 MiB at a time, so a memory-mapped file is never read whole


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """A split of images held in memory (or memory-mapped), in the storage of its kind (:mod:`vae_jax.pixels`).

    Attributes:
      images: [N, H, W, C]: bool (binary), uint8 (8-bit levels) or float (continuous in [0, 1]).
      labels: int32 [N] class labels, or None when the data set has none.
      name: the data set (a TFDS name or an array file), for messages.
      split: the split expression it holds (``train[:90%]``).
      kind: ``binary``, ``uint8`` or ``continuous``.
    """

    images: np.ndarray
    labels: np.ndarray | None
    name: str
    split: str
    kind: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """(H, W, C) of one example."""
        return tuple(self.images.shape[1:])

    @property
    def data_dim(self) -> int:
        """D = H W C, the length of a flattened example."""
        return int(np.prod(self.shape))

    @property
    def is_binary(self) -> bool:
        return self.kind == "binary"

    @property
    def flat(self) -> np.ndarray:
        """The images as stored, flattened to [N, D] (a view, no copy)."""
        return self.images.reshape(len(self), -1)

    def as_float(self, count: int | None = None) -> np.ndarray:
        """The first ``count`` (default all) examples as float32 [n, D] model inputs in [0, 1]
        (:func:`vae_jax.pixels.to_unit_float`). This copy is 4 bytes a value: for large sets prefer
        batches of :attr:`flat`."""
        return to_unit_float(self.flat[:count]).astype(np.float32, copy=False)

    def _blocks(self):
        """The flat examples, ~16 MiB of them at a time, so a memory-mapped file is never read whole."""
        flat = self.flat
        step = max(1, _BLOCK // max(1, flat[:1].nbytes))
        for start in range(0, len(self), step):
            yield flat[start:start + step]

    def mean_image(self) -> np.ndarray:
        """float32 [D]: the mean model input, summed in float64 a block at a time (no float copy of the data)."""
        total = sum((to_unit_float(block, np.float64).sum(axis=0) for block in self._blocks()), np.zeros(self.data_dim))
        return (total / len(self)).astype(np.float32)

    def fingerprint(self) -> dict:
        """Shape, dtype and the sha256 of the images' bytes: a file that changed is told from the one a run used."""
        digest = hashlib.sha256()
        for block in self._blocks():
            digest.update(np.ascontiguousarray(block).tobytes())
        return {"shape": list(self.images.shape), "dtype": str(self.images.dtype), "sha256": digest.hexdigest()}


def _read(path: Path, *, names_only: bool = False) -> dict[str, np.ndarray | None]:
    """The named split arrays of an ``.npz`` file or of a folder's ``<split>.npy`` files, never unpickling
    (with ``names_only``, their names mapped to None, without reading them)."""
    try:
        if path.is_dir():
            files = [p for p in sorted(path.glob("*.npy")) if p.stem in SPLITS]
            return {p.stem: None if names_only else np.load(p, mmap_mode="r", allow_pickle=False) for p in files}
        with np.load(path, allow_pickle=False) as archive:
            return {name: None if names_only else archive[name] for name in archive.files if name in SPLITS}
    except ValueError as err:
        if any(sign in str(err) for sign in ("allow_pickle", "Object arrays", "Python objects")):
            raise DataError(f"{path} holds object (pickled) arrays; vae-jax never unpickles data files, since "
                            "unpickling runs code. Save plain numeric arrays: np.savez(path, train=images).") from None
        raise DataFileError(f"{path} is not a readable .npz / .npy file ({err}).") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataFileError(f"cannot read {path} ({type(err).__name__}: {err}); give an .npz file or a folder "
                            "of train.npy [, validation.npy, test.npy].") from None


def split_names(path: Path) -> list[str]:
    """The split arrays an array dataset holds, without reading them."""
    if not path.exists():
        raise DataFileError(f"{path} does not exist; give an .npz file or a folder of .npy files.")
    return list(_read(path, names_only=True))


def _as_nhwc(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype == object or not (array.dtype == np.bool_ or np.issubdtype(array.dtype, np.number)):
        raise DataError(f"{name} has dtype {array.dtype}; images must be bool, integer or float arrays.")
    if array.ndim == 3:
        return array[..., None]
    if array.ndim != 4:
        raise DataError(f"{name} has shape {array.shape}; images must be [N, H, W] or [N, H, W, C].")
    return array


def infer_kind(name: str, array: np.ndarray, declared: str | None) -> str:
    """The data kind of ``array`` (one pass over its values), checked against ``declared`` when given; raises
    :class:`DataError` for values that are no image (NaN, out of range)."""
    if array.dtype == np.bool_:
        kind = "binary"
    elif np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise DataError(f"{name} holds integers from {low} to {high}; 8-bit images hold 0..255. Rescale "
                            "them to 0..255 (uint8), or to floats in [0, 1].")
        kind = "binary" if high <= 1 else "uint8"
    else:
        if not np.all(np.isfinite(array)):
            raise DataError(f"{name} contains NaN or infinite values; clean the data first.")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise DataError(f"{name} holds floats from {low:g} to {high:g}; continuous images must lie in [0, 1] "
                            "(divide 8-bit levels by 255, or store them as uint8).")
        kind = "binary" if is_binary(array) else "continuous"
    if declared is None or declared == kind:
        return kind
    if declared == "continuous" and kind == "binary" and np.issubdtype(array.dtype, np.floating):
        return declared  # floats that happen to be all 0/1
    if declared == "uint8" and kind == "binary" and np.issubdtype(array.dtype, np.integer):
        return declared  # 8-bit levels that happen to be all 0/1
    raise DataError(f"{name} is {kind} data ({array.dtype}), not {declared}; leave out --data-kind, or convert the "
                    "array.")


def load_arrays(path: str | Path, *, data_kind: str | None = None) -> dict[str, ArrayDataset]:
    """The splits of an array dataset (see the module docstring), each checked.

    Args:
      path: an ``.npz`` file, or a folder of ``train.npy`` [, ``validation.npy``, ``test.npy``].
      data_kind: None to infer the kind from the data, or one of :data:`vae_jax.config.DATA_KINDS`.

    Returns:
      ``{split: ArrayDataset}`` for the splits present, each stored as its kind (:func:`vae_jax.pixels.as_stored`:
      bool, uint8 or float); all share one (H, W, C) and one kind.

    Raises:
      DataError: no ``train`` array, a split that is empty, of another shape or kind than ``train``, not
        [N, H, W(, C)], non-numeric or pickled, NaN, or values outside the kind's range.
      DataFileError: a missing or unreadable file.
    """
    path = Path(path)
    if data_kind is not None and data_kind not in DATA_KINDS:
        raise DataError(f"unknown data kind {data_kind!r}; choose one of {', '.join(DATA_KINDS)}.")
    if not path.exists():
        raise DataFileError(f"{path} does not exist; give an .npz file or a folder of .npy files.")
    arrays = _read(path)
    if "train" not in arrays:
        raise DataError(f"{path} has no array named 'train' (found: {sorted(arrays) or 'none'}); save one, e.g. "
                        "np.savez(path, train=images, test=test_images).")
    splits = {split: as_dataset(arrays[split], split, data_kind, str(path)) for split in SPLITS if split in arrays}
    train = splits["train"]
    for split in splits.values():
        if split.shape != train.shape:
            raise DataError(f"{path}:{split.split} holds {split.shape} images but {path}:train holds {train.shape}; "
                            "every split needs the same height, width and channels.")
        if split.kind != train.kind:
            raise DataError(f"{path}:{split.split} is {split.kind} data but {path}:train is {train.kind}; store every "
                            "split the same way, or pass --data-kind.")
    return splits


def as_dataset(images, split: str, data_kind: str | None = None, name: str = "images") -> ArrayDataset:
    """``images`` [N, H, W(, C)] as a checked :class:`ArrayDataset` of split ``split``, stored by kind (an
    ArrayDataset is returned as it is, after checking ``data_kind``); raises :class:`DataError` as
    :func:`load_arrays` does."""
    if isinstance(images, ArrayDataset):
        if data_kind is not None and images.kind != data_kind:
            raise DataError(f"{name}:{split} is {images.kind} data, not {data_kind}.")
        return images
    where = f"{name}:{split}"
    images = _as_nhwc(where, np.asarray(images) if not isinstance(images, np.ndarray) else images)
    if images.shape[0] == 0:
        raise DataError(f"{where} is empty; every split needs at least one image.")
    kind = infer_kind(where, images, data_kind)
    return ArrayDataset(as_stored(images, kind), None, name, split, kind)


def select(splits: dict[str, ArrayDataset], expression: str) -> ArrayDataset:
    """The examples a TFDS split expression names (``train``, ``train[:5000]``, ``test[80%:]``,
    ``train[:10]+test[:10]``), read by TFDS's own parser so the slices mean what they mean for TFDS datasets
    (percentages round to the closest example). A single slice of one split is a view, not a copy.

    Raises:
      ConfigError: an unknown split, a malformed expression, or one that selects no example.
    """
    import tensorflow_datasets as tfds

    first = next(iter(splits.values()))
    sizes = {name: types.SimpleNamespace(num_examples=len(s), shard_lengths=[len(s)]) for name, s in splits.items()}
    try:
        parts = tfds.core.ReadInstruction.from_spec(expression).to_absolute(sizes)
    except (ValueError, AssertionError) as err:
        raise ConfigError(f"split {expression!r} of {first.name}: {str(err).splitlines()[0]} The splits here are "
                          f"{', '.join(splits)}; slices look like 'train[:5000]', 'test[1000:2000]' or 'train[90%:]'."
                          ) from None
    pieces = [splits[p.splitname].images[p.from_:p.to] for p in parts]
    images = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    if len(images) == 0:
        raise ConfigError(f"split {expression!r} of {first.name} selects no examples (the slice is empty or "
                          "reversed); choose a non-empty slice such as 'train[:1000]'.")
    return ArrayDataset(images, None, first.name, expression, first.kind)
