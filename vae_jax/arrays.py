"""A user's own images as array files: an ``.npz`` file, or a folder of ``.npy`` files, one array per split.

    splits = load_arrays("my_images.npz")        # {"train": ImageArray, "test": ...}
    splits["train"].images                       # [N, H, W, C] in the stored dtype (uint8 stays uint8)
    splits["train"].kind                         # "binary", "uint8" or "continuous"

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
import zipfile
from pathlib import Path

import numpy as np

from vae_jax.errors import DataError, DataFileError
from vae_jax.validation import is_binary

SPLITS = ("train", "validation", "test")
DATA_KINDS = ("binary", "uint8", "continuous")
_HASH_BLOCK = 1 << 24  # examples are hashed 16 MiB at a time, so a memory-mapped file is never read whole


@dataclasses.dataclass(frozen=True)
class ImageArray:
    """One split of a user's images.

    Attributes:
      images: [N, H, W, C] in the stored dtype (a read-only memory map for ``.npy`` files).
      kind: one of :data:`DATA_KINDS`.
      name: where it came from (``file.npz:train``), for messages.
    """

    images: np.ndarray
    kind: str
    name: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one example."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return self.images.shape[0]

    def fingerprint(self) -> dict:
        """Shape, dtype and the sha256 of the array's bytes: a file that changed is told from the one a run used."""
        digest = hashlib.sha256()
        flat = self.images.reshape(len(self), -1)
        step = max(1, _HASH_BLOCK // max(1, flat[:1].nbytes))
        for start in range(0, len(self), step):
            digest.update(np.ascontiguousarray(flat[start:start + step]).tobytes())
        return {"shape": list(self.images.shape), "dtype": str(self.images.dtype), "sha256": digest.hexdigest()}


def _read(path: Path) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` file or of a folder's ``<split>.npy`` files, never unpickling."""
    try:
        if path.is_dir():
            return {p.stem: np.load(p, mmap_mode="r", allow_pickle=False) for p in sorted(path.glob("*.npy"))
                    if p.stem in SPLITS}
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files if name in SPLITS}
    except ValueError as err:
        if any(sign in str(err) for sign in ("allow_pickle", "Object arrays", "Python objects")):
            raise DataError(f"{path} holds object (pickled) arrays; vae-jax never unpickles data files, since "
                            "unpickling runs code. Save plain numeric arrays: np.savez(path, train=images).") from None
        raise DataFileError(f"{path} is not a readable .npz / .npy file ({err}).") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataFileError(f"cannot read {path} ({type(err).__name__}: {err}); give an .npz file or a folder "
                            "of train.npy [, validation.npy, test.npy].") from None


def _as_nhwc(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype == object or not (array.dtype == np.bool_ or np.issubdtype(array.dtype, np.number)):
        raise DataError(f"{name} has dtype {array.dtype}; images must be bool, integer or float arrays.")
    if array.ndim == 3:
        return array[..., None]
    if array.ndim != 4:
        raise DataError(f"{name} has shape {array.shape}; images must be [N, H, W] or [N, H, W, C].")
    return array


def _infer_kind(name: str, array: np.ndarray, declared: str | None) -> str:
    """The data kind of ``array`` (one pass over its values), checked against ``declared`` when given."""
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


def load_arrays(path: str | Path, *, data_kind: str | None = None) -> dict[str, ImageArray]:
    """The splits of an array dataset (see the module docstring), each checked.

    Args:
      path: an ``.npz`` file, or a folder of ``train.npy`` [, ``validation.npy``, ``test.npy``].
      data_kind: None to infer the kind from the data, or one of :data:`DATA_KINDS`.

    Returns:
      ``{split: ImageArray}`` for the splits present; all share one (H, W, C) and one kind.

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
    splits = {}
    for split in SPLITS:
        if split not in arrays:
            continue
        name = f"{path}:{split}"
        images = _as_nhwc(name, arrays[split])
        if images.shape[0] == 0:
            raise DataError(f"{name} is empty; every split needs at least one image.")
        splits[split] = ImageArray(images, _infer_kind(name, images, data_kind), name)
    train = splits["train"]
    for split in splits.values():
        if split.shape != train.shape:
            raise DataError(f"{split.name} holds {split.shape} images but {train.name} holds {train.shape}; every "
                            "split needs the same height, width and channels.")
        if split.kind != train.kind:
            raise DataError(f"{split.name} is {split.kind} data but {train.name} is {train.kind}; store every split "
                            "the same way, or pass --data-kind.")
    return splits
