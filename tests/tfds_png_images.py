"""A TFDS image dataset made by the tests: a ``tfds.features.Image`` feature stored as PNG in ``array_record``
files, the layout of a stock TFDS image dataset (cifar10, omniglot, ...) prepared with ``tfds build``.

TFDS encodes ``Image`` features with TensorFlow, which vae-jax does not install, so this module (and only it)
encodes the PNGs with Pillow; everything vae-jax does with the prepared files is TFDS's own reading path.

    python tests/tfds_png_images.py DATA_DIR     # prepares vae_jax_png_images in DATA_DIR
"""

import io
import sys

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image as PILImage

NAME = "vae_jax_png_images"
SHAPE = (12, 10, 3)
SPLITS = {"train": 60, "test": 20}


def images(split: str) -> np.ndarray:
    """The uint8 [N, 12, 10, 3] images of ``split``: a coloured bar whose position and colour vary; pixel
    (0, 0) holds the example's index, so tests can match examples whatever order TFDS stores them in."""
    n = SPLITS[split]
    rng = np.random.default_rng(n)
    out = np.zeros((n, *SHAPE), np.uint8)
    for i, image in enumerate(out):
        row = rng.integers(1, SHAPE[0] - 3)
        image[row:row + 3, 1:] = rng.integers(60, 256, 3)
        image[0, 0] = i
    return out


def _png(self, example) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.asarray(example, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class VaeJaxPngImages(tfds.core.GeneratorBasedBuilder):
    """Small coloured images with labels, two splits (no validation split)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=SHAPE), "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
        for i, image in enumerate(images(split)):
            yield i, {"image": image, "label": i % 3}


def prepare(data_dir: str):
    tfds.features.Image.encode_example = _png  # Pillow instead of TensorFlow, here only
    VaeJaxPngImages(data_dir=data_dir, file_format="array_record").download_and_prepare(file_format="array_record")


if __name__ == "__main__":
    prepare(sys.argv[1])
