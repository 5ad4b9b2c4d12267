"""Datasets through TFDS without TensorFlow: real files, checksums, missing files, mock data."""

import gzip
import shutil

import jax
import numpy as np
import pytest

from vae_jax import data
from vae_jax.errors import DataFileError
from vae_jax.tfds_builders import parse_amat


def _amat_line(values):
    return " ".join(str(v) for v in values) + "\n"


def test_parse_amat_reads_lines_of_784_bits():
    rows = np.random.default_rng(0).integers(0, 2, (3, 784))
    content = "".join(_amat_line(r) for r in rows).encode()
    np.testing.assert_array_equal(parse_amat(content).reshape(3, 784), rows)
    with pytest.raises(DataFileError, match="whole number"):
        parse_amat(content[:-10])
    with pytest.raises(DataFileError, match="0/1"):
        parse_amat(content.replace(b"1 ", b"2 ", 1))


def test_binarized_mnist_real_files_match_direct_parse(shared_data, data_dir):
    test = data.load("binarized_mnist", "test", data_dir=data_dir, manual_dir=shared_data)
    # Stored as bool with its shape (1 byte a pixel); model inputs are float32 [N, 784] of 0.0 and 1.0.
    assert test.images.shape == (10_000, 28, 28, 1) and test.images.dtype == np.bool_ and test.shape == (28, 28, 1)
    assert test.is_binary and test.kind == "binary" and test.labels is None
    inputs = test.as_float()
    assert inputs.shape == (10_000, 784) and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs, test.images.reshape(10_000, 784).astype(np.float32))
    direct = parse_amat(gzip.decompress((shared_data / "binarized_mnist" / "binarized_mnist_test.amat.gz").read_bytes()))
    # Keys are the line numbers, as in the stock builder, and TFDS orders examples by a hash of the
    # key: the split holds exactly the file's images, in TFDS's (stock) order.
    as_sorted = lambda a: a[np.lexsort(a.T)]
    np.testing.assert_array_equal(as_sorted(inputs), as_sorted(direct.reshape(10_000, 784).astype(np.float32)))
    assert not np.array_equal(inputs, direct.reshape(10_000, 784))
    sliced = data.load("binarized_mnist", "test[100:110]", data_dir=data_dir, manual_dir=shared_data)
    np.testing.assert_array_equal(sliced.images, test.images[100:110])


def test_split_sizes(shared_data, data_dir):
    for split, size in (("train", 50_000), ("validation", 10_000)):
        assert len(data.load("binarized_mnist", split, data_dir=data_dir, manual_dir=shared_data)) == size


def test_mnist_test_set_without_train_files(shared_data, data_dir):
    mnist = data.load("mnist", "test", data_dir=data_dir, manual_dir=shared_data)
    assert mnist.images.shape == (10_000, 28, 28, 1) and mnist.images.dtype == np.uint8 and mnist.kind == "uint8"
    assert mnist.images.max() == 255 and not mnist.is_binary
    inputs = mnist.as_float()  # level / 255, exactly as NumPy divides
    np.testing.assert_array_equal(inputs, (mnist.images.reshape(10_000, 784) / 255.0).astype(np.float32))
    assert 0.0 == inputs.min() and inputs.max() == 1.0
    assert mnist.labels.shape == (10_000,) and set(np.unique(mnist.labels)) == set(range(10))
    # The published class counts of the MNIST test set.
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    np.testing.assert_array_equal(np.bincount(mnist.labels), counts)


def test_missing_files_fail_fast_with_instructions(tmp_path):
    with pytest.raises(DataFileError) as err:
        data.load("binarized_mnist", "train", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "empty")
    message = str(err.value)
    assert "binarized_mnist_train.amat" in message and str(tmp_path / "empty") in message
    assert "--manual-dir" in message and "--download" in message


def test_checksum_mismatch_is_rejected_by_name(shared_data, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    content = bytearray(gzip.decompress((shared_data / "binarized_mnist" / "binarized_mnist_test.amat.gz").read_bytes()))
    content[0] = ord("1") if content[0] == ord("0") else ord("0")  # flip one pixel: same size, other hash
    (manual / "binarized_mnist_test.amat").write_bytes(bytes(content))
    with pytest.raises(Exception, match="binarized_mnist_test.amat.*checksum"):
        data.load("binarized_mnist", "test", data_dir=tmp_path / "tfds", manual_dir=manual)


def test_truncated_gzip_is_rejected(shared_data, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    raw = (shared_data / "binarized_mnist" / "binarized_mnist_valid.amat.gz").read_bytes()
    (manual / "binarized_mnist_valid.amat.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(Exception, match="gzip"):
        data.load("binarized_mnist", "validation", data_dir=tmp_path / "tfds", manual_dir=manual)


def test_plain_files_work_too(shared_data, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with gzip.open(shared_data / "binarized_mnist" / "binarized_mnist_valid.amat.gz") as src:
        with open(manual / "binarized_mnist_valid.amat", "wb") as dst:
            shutil.copyfileobj(src, dst)
    valid = data.load("binarized_mnist", "validation[:5]", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert valid.images.shape == (5, 28, 28, 1) and valid.as_float().shape == (5, 784)


def test_unknown_dataset_and_split_and_empty_split(shared_data, data_dir, tmp_path):
    empty = tmp_path / "tfds"
    with pytest.raises(ValueError, match="'cifar' is not one of the built-in .* no TFDS dataset of that name is "
                       "prepared in .*tfds .*tfds build cifar --file_format=array_record"):
        data.load("cifar", "train", data_dir=empty)
    with pytest.raises(DataFileError, match="TFDS dataset 'cifar10' is not prepared in .*--download"):
        data.load("cifar10", "train", data_dir=empty)  # a stock TFDS dataset, not prepared here
    assert not empty.exists()  # nothing written
    with pytest.raises(ValueError, match="unknown split"):
        data.load("mnist", "validation")
    with pytest.raises(ValueError, match="empty"):
        data.load("binarized_mnist", "test[5:5]", data_dir=data_dir, manual_dir=shared_data)


def test_mock_data_fashion_mnist(tmp_path):
    """The loading path on TFDS mock data (no files at all), for a dataset we have no files of."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=20, data_dir=str(tmp_path)):
        # download=True: mock_data replaces preparation, so nothing is fetched.
        fashion = data.load("fashion_mnist", "test", data_dir=tmp_path, download=True)
    assert fashion.images.shape == (20, 28, 28, 1) and fashion.labels.shape == (20,)
    assert fashion.as_float().shape == (20, 784) and 0.0 <= fashion.as_float().min() <= fashion.as_float().max() <= 1.0


def test_epoch_batches_are_permutations_seeded_by_key():
    images = jax.numpy.arange(10 * 3, dtype=jax.numpy.float32).reshape(10, 3)
    key = jax.random.key(0)
    batches = data.epoch_batches(key, images, 4)
    assert batches.shape == (2, 4, 3)  # the remainder of 2 is dropped
    rows = {tuple(r) for r in np.asarray(batches).reshape(-1, 3)}
    assert len(rows) == 8 and rows <= {tuple(r) for r in np.asarray(images)}
    np.testing.assert_array_equal(batches, data.epoch_batches(key, images, 4))
    assert not np.array_equal(batches, data.epoch_batches(jax.random.fold_in(key, 1), images, 4))


def test_dynamic_binarization_is_unbiased():
    pixels = jax.numpy.full((20_000,), 0.3)
    bits = data.binarize(jax.random.key(0), pixels)
    assert set(np.unique(bits)) == {0.0, 1.0}
    assert abs(float(bits.mean()) - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 20_000)


def test_processes_started_together_prepare_a_dataset_once(shared_data, tmp_path):
    """Two processes loading an unprepared split into one data folder at the same moment both get it
    (before the lock, the second failed renaming TFDS's folder into place: FileExistsError)."""
    import subprocess
    import sys

    code = ("import sys; from vae_jax import data; "
            "d = data.load('binarized_mnist', 'validation[:3]', data_dir=sys.argv[1], manual_dir=sys.argv[2]); "
            "print(d.images.shape)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "tfds"), str(shared_data)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "(3, 28, 28, 1)"
