"""TFDS builders for MNIST-like datasets that need no TensorFlow.

The stock ``binarized_mnist``, ``mnist`` and ``fashion_mnist`` builders read files with ``tf.io`` and encode
images with TF. These builders reuse the stock download URLs and registered checksums
(``tfds.builder_cls(stock).url_infos``), parse the files with NumPy, yield the same keys as the stock
builders (so example order matches), and are prepared as ``array_record`` for ``tfds.data_source``.

Each stock split is its own builder config (``vaejax_mnist/test``), so a split can be prepared from
its own files alone: the MNIST test set works without the MNIST training files.
"""

import dataclasses
import functools
import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from vae_jax.errors import DataFileError

IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's files come from and how to read them.

    Attributes:
      name: our dataset name (``binarized_mnist``); the builder is ``vaejax_<name>``.
      stock: the stock TFDS builder whose URLs and checksums are reused.
      split_files: split -> file names as TFDS downloads them (images[, labels]).
      file_format: ``"amat"`` (one image a line, 784 values ``0``/``1``) or ``"idx"`` (gzip IDX).
    """

    name: str
    stock: str
    split_files: dict[str, tuple[str, ...]]
    file_format: str

    @property
    def builder_name(self) -> str:
        return f"vaejax_{self.name}"

    @property
    def has_labels(self) -> bool:
        return self.file_format == "idx"

    @functools.cached_property
    def url_infos(self) -> dict:
        """file name -> (url, UrlInfo) from the stock builder's registered checksums."""
        return {info.filename: (url, info) for url, info in tfds.builder_cls(self.stock).url_infos.items()}


_IDX = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
SPECS = {
    "binarized_mnist": DatasetSpec(
        "binarized_mnist", "binarized_mnist",
        {s: (f"binarized_mnist_{f}.amat",) for s, f in [("train", "train"), ("validation", "valid"), ("test", "test")]},
        "amat",
    ),
    "mnist": DatasetSpec("mnist", "mnist", _IDX, "idx"),
    "fashion_mnist": DatasetSpec("fashion_mnist", "fashion_mnist", _IDX, "idx"),
}


def _read_maybe_gzip(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:  # truncated, or damaged bytes
            raise DataFileError(f"{path} is not a complete, undamaged gzip file ({err}). Replace it with a fresh copy.") from err
    return data


def find_local_file(spec: DatasetSpec, filename: str, manual_dirs: list[Path]) -> Path | None:
    """The first of DIR/name, DIR/name.gz, DIR/<dataset>/name, DIR/<dataset>/name.gz that exists."""
    for directory in manual_dirs:
        for folder in (directory, directory / spec.name):
            for candidate in (folder / filename, folder / f"{filename}.gz"):
                if candidate.is_file():
                    return candidate
    return None


def verify_file(spec: DatasetSpec, filename: str, path: Path) -> bytes:
    """Returns the file's content as TFDS downloads it, after checking size and sha256.

    ``name.gz`` standing for ``name`` is decompressed first; a file whose registered name ends in
    ``.gz`` (IDX) is hashed as it is.
    """
    content = path.read_bytes() if path.name == filename else _read_maybe_gzip(path)
    _, info = spec.url_infos[filename]
    digest = hashlib.sha256(content).hexdigest()
    if len(content) != info.size or digest != info.checksum:
        raise DataFileError(
            f"{path} does not match the registered checksum of {filename} "
            f"(expected {info.size} bytes, sha256 {info.checksum}; got {len(content)} bytes, sha256 {digest}). "
            "The file is truncated, corrupt or a different file: replace it with the original."
        )
    return content


def parse_amat(content: bytes) -> np.ndarray:
    """Binarized MNIST ``.amat``: lines of 784 ``0``/``1`` separated by spaces -> uint8 [N, 28, 28, 1]."""
    row_bytes = 784 * 2  # a digit and a separator (space, or the newline at the end)
    if len(content) % row_bytes:
        raise DataFileError(f"amat content of {len(content)} bytes is not a whole number of 784-value lines.")
    raw = np.frombuffer(content, np.uint8).reshape(-1, row_bytes)
    digits = raw[:, 0::2] - ord("0")
    if digits.max(initial=0) > 1 or np.any(raw[:, 1:-1:2] != ord(" ")):
        raise DataFileError("amat content holds values other than single 0/1 digits separated by spaces.")
    return digits.reshape((-1, *IMAGE_SHAPE))


def parse_idx(content: bytes) -> np.ndarray:
    """Gzip IDX (images magic 2051, labels magic 2049) -> uint8 [N, 28, 28, 1] or [N]."""
    data = gzip.decompress(content)
    magic, count = int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big")
    if magic == 2051:
        rows, cols = int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
        return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols, 1)
    if magic == 2049:
        return np.frombuffer(data, np.uint8, offset=8).reshape(count)
    raise DataFileError(f"not an IDX image or label file (magic number {magic}).")


def _make_builder(spec: DatasetSpec):
    class Builder(tfds.core.GeneratorBasedBuilder):
        __doc__ = f"{spec.stock} without TensorFlow (vae-jax); one config per split."
        name = spec.builder_name
        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=split) for split in spec.split_files]
        MANUAL_DOWNLOAD_INSTRUCTIONS = f"Place {sorted({f for fs in spec.split_files.values() for f in fs})} here."

        def _info(self):
            features = {"image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8)}
            if spec.has_labels:
                features["label"] = tfds.features.ClassLabel(num_classes=10)
            return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            split = self.builder_config.name
            contents = []
            for filename in spec.split_files[split]:
                local = find_local_file(spec, filename, [Path(dl_manager.manual_dir)])
                path = local if local is not None else Path(dl_manager.download(spec.url_infos[filename][0]))
                contents.append(verify_file(spec, filename, path))
            return {split: self._generate_examples(contents)}

        def _generate_examples(self, contents):
            if spec.file_format == "amat":
                for index, image in enumerate(parse_amat(contents[0])):
                    yield index, {"image": image}
            else:
                images, labels = parse_idx(contents[0]), parse_idx(contents[1])
                for index, (image, label) in enumerate(zip(images, labels)):
                    yield index, {"image": image, "label": label}

    Builder.__name__ = Builder.__qualname__ = f"VaeJax{spec.name.title().replace('_', '')}"
    return Builder


BUILDERS = {name: _make_builder(spec) for name, spec in SPECS.items()}
