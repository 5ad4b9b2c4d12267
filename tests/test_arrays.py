"""A user's own array files: kinds and shapes inferred, memory-mapped .npy, and every bad input refused, with
pickled content never unpickled."""

import pickle

import numpy as np
import pytest

from vae_jax.arrays import load_arrays
from vae_jax.errors import DataError, DataFileError

RNG = np.random.default_rng(0)


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("train, kind, shape", [
    (RNG.integers(0, 2, (6, 28, 28)).astype(bool), "binary", (28, 28, 1)),
    (RNG.integers(0, 2, (6, 28, 28)).astype(np.int64), "binary", (28, 28, 1)),
    (RNG.integers(0, 256, (6, 32, 32, 3)).astype(np.uint8), "uint8", (32, 32, 3)),
    (RNG.uniform(0, 1, (6, 20, 20)).astype(np.float32), "continuous", (20, 20, 1)),
    (RNG.integers(0, 2, (6, 8, 9, 2)).astype(np.float32), "binary", (8, 9, 2)),
])
def test_kind_and_shape_follow_from_the_arrays(tmp_path, train, kind, shape):
    splits = load_arrays(_npz(tmp_path, train=train, test=train[:2]))
    assert set(splits) == {"train", "test"}
    assert splits["train"].kind == kind and splits["train"].shape == shape and len(splits["test"]) == 2
    # Stored by kind: bool, uint8 (1 byte a value, never float32 in memory) or the float dtype as given.
    stored = {"binary": np.bool_, "uint8": np.uint8, "continuous": train.dtype}[kind]
    assert splits["train"].images.dtype == stored and splits["train"].images.shape == (6, *shape)
    np.testing.assert_array_equal(splits["train"].images.reshape(train.shape), train.astype(stored))


def test_data_kind_overrides_only_where_the_dtype_leaves_a_choice(tmp_path):
    ones_and_zeros = RNG.integers(0, 2, (4, 5, 5)).astype(np.float32)
    assert load_arrays(_npz(tmp_path, train=ones_and_zeros), data_kind="continuous")["train"].kind == "continuous"
    grey = RNG.uniform(0, 1, (4, 5, 5)).astype(np.float32)
    with pytest.raises(DataError, match="continuous data .* not binary"):
        load_arrays(_npz(tmp_path, train=grey), data_kind="binary")
    with pytest.raises(DataError, match="unknown data kind"):
        load_arrays(_npz(tmp_path, train=grey), data_kind="rgb")


def test_a_folder_of_npy_files_is_memory_mapped(tmp_path):
    images = RNG.integers(0, 256, (10, 16, 16, 3)).astype(np.uint8)
    np.save(tmp_path / "train.npy", images)
    np.save(tmp_path / "validation.npy", images[:3])
    np.save(tmp_path / "notes.npy", np.zeros(3))  # not a split name: ignored
    splits = load_arrays(tmp_path)
    assert set(splits) == {"train", "validation"} and isinstance(splits["train"].images, np.memmap)
    np.testing.assert_array_equal(splits["train"].images, images)
    # The fingerprint is the data's, not the file's: the same arrays as .npz give the same one; a changed pixel not.
    other = tmp_path / "other"
    other.mkdir()
    npz = load_arrays(_npz(other, train=images))["train"]
    assert npz.fingerprint() == splits["train"].fingerprint()
    changed = images.copy()
    changed[5, 3, 3, 1] ^= 1
    assert load_arrays(_npz(other, train=changed))["train"].fingerprint()["sha256"] != npz.fingerprint()["sha256"]


class _CreatesAFile:
    """Unpickling this object creates a file: the proof that a loader ran code from a data file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def pickled_objects(evidence) -> np.ndarray:
    """An object array whose unpickling creates the file ``evidence``."""
    objects = np.empty(2, dtype=object)
    objects[:] = [_CreatesAFile(evidence), _CreatesAFile(evidence)]
    return objects


def test_pickled_content_is_refused_and_never_unpickled(tmp_path):
    evidence = tmp_path / "pickle_ran"
    objects = pickled_objects(evidence)
    np.savez(tmp_path / "objects.npz", train=objects)  # an object array inside an npz (pickled)
    with pytest.raises(DataError, match="never unpickles"):
        load_arrays(tmp_path / "objects.npz")
    (tmp_path / "plain.npz").write_bytes(pickle.dumps({"train": _CreatesAFile(evidence)}))  # a pickle named .npz
    with pytest.raises(DataError, match="never unpickles"):
        load_arrays(tmp_path / "plain.npz")
    np.save(tmp_path / "train.npy", objects, allow_pickle=True)
    with pytest.raises(DataError, match="never unpickles"):
        load_arrays(tmp_path)
    assert not evidence.exists()


@pytest.mark.parametrize("arrays, message", [
    ({"test": np.zeros((3, 4, 4), np.float32)}, "no array named 'train'"),
    ({"train": np.zeros((3, 4, 4), np.float32), "test": np.zeros((3, 5, 4), np.float32)}, "same height, width"),
    ({"train": np.zeros((3, 16), np.float32)}, r"\[N, H, W\] or \[N, H, W, C\]"),
    ({"train": np.zeros((3,), np.float32)}, r"\[N, H, W\] or \[N, H, W, C\]"),
    ({"train": np.zeros((3, 2, 4, 4, 1), np.float32)}, r"\[N, H, W\] or \[N, H, W, C\]"),
    ({"train": np.full((3, 4, 4), np.nan, np.float32)}, "NaN"),
    ({"train": np.full((3, 4, 4), np.inf, np.float32)}, "NaN or infinite"),
    ({"train": np.full((3, 4, 4), 2.0, np.float32)}, r"in \[0, 1\]"),
    ({"train": np.full((3, 4, 4), -1, np.int16)}, "rescale|Rescale"),
    ({"train": np.full((3, 4, 4), 256, np.int16)}, "0..255"),
    ({"train": np.zeros((0, 4, 4), np.float32)}, "is empty"),
    ({"train": np.zeros((3, 4, 4), np.uint8) + 7, "test": np.zeros((3, 4, 4), np.float32)},
     "test is binary data but .*train is uint8"),
    ({"train": np.array([["a"]] * 3)}, "bool, integer or float"),
])
def test_bad_arrays_are_refused_with_what_to_do(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        load_arrays(_npz(tmp_path, **arrays))


def test_missing_and_damaged_files(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        load_arrays(tmp_path / "nothing.npz")
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(_npz(tmp_path, train=np.zeros((3, 4, 4), np.float32)).read_bytes()[:100])
    with pytest.raises(DataFileError, match="damaged.npz"):
        load_arrays(damaged)


def test_grids_draw_any_image_shape_in_grey_or_colour(tmp_path):
    import matplotlib.image

    from vae_jax.images import MAX_GRID_PIXELS, max_images, save_grid

    rgb = np.zeros((5, 12, 20, 3), np.float32)
    rgb[..., 0] = 1.0  # pure red images
    drawn = matplotlib.image.imread(save_grid(rgb, tmp_path / "rgb.png", num_cols=4))
    assert drawn.shape == (3 * (2 * 13 + 1), 3 * (4 * 21 + 1), 4)  # 2 rows, 4 columns, scale 3, RGBA
    cell = drawn[3 * 1 + 1, 3 * 1 + 1]  # inside the first image
    np.testing.assert_allclose(cell[:3], [1.0, 0.0, 0.0])
    grey = matplotlib.image.imread(save_grid(np.full((3, 20 * 20), 0.5, np.float32), tmp_path / "grey.png",
                                             num_cols=3, image_shape=(20, 20, 1)))
    assert grey.shape[:2] == (3 * 21 + 3, 3 * (3 * 21 + 1))
    np.testing.assert_allclose(grey[4, 4, :3], [0.5, 0.5, 0.5], atol=0.01)
    # Large images: the number a grid may hold and the scale keep it within MAX_GRID_PIXELS.
    assert max_images((28, 28)) == 1024 and max_images((64, 64, 3)) == 992 and max_images((256, 256)) == 63
    big = matplotlib.image.imread(save_grid(np.zeros((992, 64, 64, 3), np.float32), tmp_path / "big.png",
                                            num_cols=32))
    assert big.shape[1] == 32 * 65 + 1 and big.shape[0] * big.shape[1] <= 1.01 * MAX_GRID_PIXELS  # scale 1
