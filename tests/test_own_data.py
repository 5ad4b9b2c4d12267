"""A user's own images through the command line: any shape and kind end to end (train, resume, evaluate, sample,
reconstruct from the run folder alone), uint8 storage converted per batch to exactly the float inputs, a changed
file refused, and every bad input an exit code 2 with one message and nothing written."""

import json
import pickle
import re

import jax
import matplotlib.image
import numpy as np
import pytest

from vae_jax import data as data_lib
from vae_jax.arrays import load_arrays, select
from vae_jax.cli import main
from vae_jax.rundir import RunFolder, load_run

from tests.test_arrays import pickled_objects

RNG = np.random.default_rng(0)
SMALL = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "50", "--no-progress", "--no-tensorboard"]


def _shapes(n, h, w, c=None):
    """n images of one bright rectangle each at a random place and size: structure a small model can learn."""
    images = np.zeros((n, h, w) + ((c,) if c else ()), np.float32)
    for image in images:
        top, left = RNG.integers(0, h // 2), RNG.integers(0, w // 2)
        image[top:top + RNG.integers(3, h // 2), left:left + RNG.integers(3, w // 2)] = \
            RNG.uniform(0.5, 1.0, c) if c else RNG.uniform(0.5, 1.0)
    return images


DATASETS = {  # name -> (arrays, options, grid colour)
    "binary": (lambda: _shapes(340, 28, 28) > 0, [], "grey"),
    "continuous": (lambda: _shapes(340, 20, 20), ["--likelihood", "gaussian", "--sigma", "0.2"], "grey"),
    "rgb": (lambda: (_shapes(340, 32, 32, 3) * 255).astype(np.uint8), ["--likelihood", "gaussian", "--sigma", "0.2"],
            "colour"),
}


def _grid(path, shape, count, num_cols=8):
    """The PNG at ``path``: checks its size is that of ``count`` cells of ``shape`` (at 1-3 screen pixels a pixel)
    and returns it as [rows, cols, 3]."""
    grid = matplotlib.image.imread(path)[..., :3]
    h, w = shape[:2]
    rows = -(-count // num_cols)
    unscaled = (rows * (h + 1) + 1, num_cols * (w + 1) + 1)
    scale = grid.shape[0] // unscaled[0]
    assert scale in (1, 2, 3) and grid.shape[:2] == (unscaled[0] * scale, unscaled[1] * scale)
    return grid


@pytest.mark.parametrize("name", list(DATASETS))
def test_own_arrays_end_to_end_from_the_run_folder_alone(name, tmp_path, monkeypatch, capsys):
    make, options, colour = DATASETS[name]
    images = make()
    path = tmp_path / "data" / f"{name}.npz"
    path.parent.mkdir()
    np.savez(path, train=images[:300], test=images[300:])
    workdir = tmp_path / "run"
    train = ["train", "--workdir", str(workdir), "--dataset", str(path), *SMALL, *options]
    assert main([*train, "--epochs", "2"]) == 0
    assert main([*train, "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "train[:90%] to train, train[90%:] to validate" in out and "resuming from checkpoint 10 (epoch 2)" in out
    config = RunFolder(workdir).require_config()
    shape = images.shape[1:] + ((1,) if images.ndim == 3 else ())
    assert config.model.data_shape == shape and config.model.data_dim == int(np.prod(shape))
    assert config.train.data_kind == {"binary": "binary", "continuous": "continuous", "rgb": "uint8"}[name]
    assert config.train.dataset == str(path)  # absolute, so any folder finds it
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and metrics[2]["step"] == 15  # 270 examples: 5 steps an epoch

    monkeypatch.chdir(tmp_path / "data")  # another folder, no data options: the run folder finds the file
    assert main(["evaluate", "--workdir", str(workdir), "--estimators", "elbo,importance", "--num-samples", "20",
                 "--no-progress"]) == 0
    result = json.loads((workdir / "eval_test.json").read_text())
    assert result["num_examples"] == 40 and np.isfinite(result["importance"]["mean"])
    # Importance sampling with K = 20 is a bound at least as tight as the ELBO on average (to MC noise).
    assert result["importance"]["mean"] >= result["elbo"]["mean"] - 3 * result["elbo"]["stderr"]
    assert main(["sample", "--workdir", str(workdir), "--num", "16"]) == 0
    assert main(["reconstruct", "--workdir", str(workdir), "--num", "8"]) == 0
    samples = _grid(workdir / "samples.png", shape, 16)
    reconstructions = _grid(workdir / "reconstructions.png", shape, 16)
    for grid in (samples, reconstructions):
        channels_differ = np.abs(grid[..., 0] - grid[..., 2]).max() > 0.1
        assert channels_differ == (colour == "colour")
    # The reconstruction grid's first row holds the test images as they are: the first cell is test image 0.
    h, w = shape[:2]
    scale = reconstructions.shape[0] // (2 * (h + 1) + 1)
    cell = reconstructions[scale:scale * (1 + h):scale, scale:scale * (1 + w):scale]
    expected = data_lib.load(str(path), "test[:1]").as_float().reshape(h, w, -1)
    np.testing.assert_allclose(cell if colour == "colour" else cell[..., :1], expected, atol=1 / 255 + 1e-6)


def test_uint8_storage_trains_exactly_as_float_inputs(tmp_path):
    """Per-batch conversion on the device: a uint8 file and the same images divided by 255 in a float32 file
    train to bit-identical parameters (dynamically binarized: a Gaussian would see the uint8 levels dequantized)."""
    levels = (_shapes(220, 12, 10, 3) * 255).astype(np.uint8)
    np.savez(tmp_path / "levels.npz", train=levels)
    np.savez(tmp_path / "floats.npz", train=(levels / 255.0).astype(np.float32))
    options = [*SMALL, "--binarize", "--epochs", "1"]
    for name in ("levels", "floats"):
        assert main(["train", "--workdir", str(tmp_path / name), "--dataset", str(tmp_path / f"{name}.npz"),
                     *options]) == 0
    kinds = [RunFolder(tmp_path / n).require_config().train.data_kind for n in ("levels", "floats")]
    assert kinds == ["uint8", "continuous"]
    a, b = (jax.tree_util.tree_leaves(load_run(tmp_path / name, log=print).params) for name in ("levels", "floats"))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_splits_of_arrays_follow_tfds_syntax(tmp_path):
    images = RNG.integers(0, 256, (600, 4, 4, 3)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", train=images, test=images[:50])
    splits = load_arrays(tmp_path / "d.npz")
    assert len(select(splits, "train[:90%]")) == 540 and len(select(splits, "train[90%:]")) == 60
    np.testing.assert_array_equal(select(splits, "train[-5:]").images, images[-5:])
    np.testing.assert_array_equal(select(splits, "train[10:20]+test[:3]").images,
                                  np.concatenate([images[10:20], images[:3]]))
    assert np.shares_memory(select(splits, "train[100:200]").images, splits["train"].images)  # a view
    for bad, message in (("validation", "Unknown split 'validation'"), ("train[5:2]", "selects no examples"),
                         ("train[:700]", "incompatible with 600 examples"), ("train(3)", "Error parsing split")):
        with pytest.raises(ValueError, match=message):
            select(splits, bad)
    assert data_lib.default_splits(str(tmp_path / "d.npz")) == ("train[:90%]", "train[90%:]")
    np.savez(tmp_path / "v.npz", train=images, validation=images[:10])
    assert data_lib.default_splits(str(tmp_path / "v.npz")) == ("train", "validation")


def test_a_changed_file_is_refused_unless_allowed(tmp_path, capsys):
    images = _shapes(120, 8, 8) > 0
    path = tmp_path / "d.npz"
    np.savez(path, train=images[:100], test=images[100:])
    workdir = tmp_path / "run"
    train = ["train", "--workdir", str(workdir), "--dataset", str(path), *SMALL, "--epochs", "1"]
    assert main(train) == 0
    changed = images.copy()
    changed[105, 0, 0] ^= True  # one pixel of the test split
    np.savez(path, train=changed[:100], test=changed[100:])
    before = sorted(p.name for p in workdir.rglob("*"))
    capsys.readouterr()
    assert main(["evaluate", "--workdir", str(workdir), "--estimators", "elbo", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "changed since the run was made (test: (20, 8, 8, 1) bool, sha256" in err and "--allow-changed-data" in err
    assert len(err.strip().splitlines()) == 1
    assert main([*train[:-1], "2"]) == 2  # resuming on other data is refused too
    assert sorted(p.name for p in workdir.rglob("*")) == before  # nothing written
    assert main(["evaluate", "--workdir", str(workdir), "--estimators", "elbo", "--no-progress",
                 "--allow-changed-data"]) == 0
    assert "warning: the data changed" in capsys.readouterr().out
    assert "used with --allow-changed-data" in (workdir / "vae-jax.log").read_text()


def _pickled(tmp_path):
    return {"train": pickled_objects(tmp_path / "pickle_ran")}


Z = np.zeros
BAD_INPUTS = [  # (arrays, extra options, what the message says)
    (lambda t: {"test": Z((30, 4, 4), np.float32)}, [], "no array named 'train'"),
    (lambda t: {"train": Z((30, 4, 4), np.float32), "test": Z((30, 5, 4), np.float32)}, [], "same height, width"),
    (lambda t: {"train": Z((30, 4, 4, 1)), "test": Z((30, 4, 4, 3))}, [], "same height, width and channels"),
    (lambda t: {"train": Z((30,), np.float32)}, [], r"must be \[N, H, W\] or \[N, H, W, C\]"),
    (lambda t: {"train": Z((30, 16), np.float32)}, [], r"must be \[N, H, W\] or \[N, H, W, C\]"),
    (lambda t: {"train": Z((30, 2, 4, 4, 1), np.float32)}, [], r"must be \[N, H, W\] or \[N, H, W, C\]"),
    (lambda t: {"train": np.full((30, 4, 4), np.nan, np.float32)}, [], "NaN or infinite values; clean the data"),
    (lambda t: {"train": np.full((30, 4, 4), np.inf, np.float32)}, [], "NaN or infinite values"),
    (lambda t: {"train": np.full((30, 4, 4), 1.5, np.float32)}, [], r"continuous images must lie in \[0, 1\]"),
    (lambda t: {"train": np.full((30, 4, 4), -3, np.int32)}, [], "Rescale them to 0..255"),
    (lambda t: {"train": np.full((30, 4, 4), 300, np.int32)}, [], "Rescale them to 0..255"),
    (_pickled, [], "never unpickles"),
    (lambda t: pickle.dumps({"train": pickled_objects(t / "pickle_ran")}), [], "never unpickles"),  # a pickle named .npz
    (lambda t: {"train": Z((30, 4, 4), np.float32), "test": Z((0, 4, 4), np.float32)}, [], "test is empty"),
    (lambda t: {"train": np.full((30, 4, 4), 7, np.uint8)}, [],
     "uint8 data, which the bernoulli likelihood cannot model: use --likelihood discretized_logistic or "
     "--likelihood discretized_logistic_mixture or --likelihood gaussian"),
    (lambda t: {"train": Z((30, 4, 4), bool)}, ["--likelihood", "discretized_logistic"],
     "binary data, which the discretized_logistic likelihood cannot model: use --likelihood bernoulli or"),
    (lambda t: {"train": np.full((30, 4, 4), 0.5, np.float32)}, ["--likelihood", "discretized_logistic_mixture"],
     "continuous data, which the discretized_logistic_mixture likelihood cannot model: use --likelihood gaussian"),
    (lambda t: {"train": np.full((30, 4, 4), 0.5, np.float32)}, [],
     "continuous data, which the bernoulli likelihood cannot model"),
    (lambda t: {"train": np.full((30, 4, 4), 0.5, np.float32)}, ["--data-kind", "binary"],
     "is continuous data .*not binary"),
    (lambda t: {"train": Z((30, 4, 4), np.float32)}, ["--train-split", "train[:40]"], "incompatible with 30 examples"),
    (lambda t: {"train": Z((30, 4, 4), np.float32)}, ["--valid-split", "test"], "Unknown split 'test'"),
]


@pytest.mark.parametrize("make, options, message", BAD_INPUTS)
def test_bad_array_input_is_one_message_and_nothing_written(make, options, message, tmp_path, capsys):
    path = tmp_path / "bad.npz"
    arrays = make(tmp_path)
    if isinstance(arrays, bytes):
        path.write_bytes(arrays)
    else:
        np.savez(path, **arrays)
    workdir = tmp_path / "run"
    code = main(["train", "--workdir", str(workdir), "--dataset", str(path), "--batch-size", "10", *options])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(message, err), err
    assert not workdir.exists() and not (tmp_path / "pickle_ran").exists()


def test_a_model_of_another_shape_is_refused_naming_both(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", train=_shapes(60, 8, 8) > 0)
    np.savez(tmp_path / "b.npz", train=_shapes(60, 9, 8) > 0)
    workdir = tmp_path / "run"
    assert main(["train", "--workdir", str(workdir), "--dataset", str(tmp_path / "a.npz"), *SMALL, "--epochs", "1"]) == 0
    config = json.loads((workdir / "config.json").read_text())
    config["train"]["dataset"] = str(tmp_path / "b.npz")  # the run pointed at other data
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "data_source.json").unlink()
    capsys.readouterr()
    assert main(["evaluate", "--workdir", str(workdir), "--estimators", "elbo", "--split", "train"]) == 2
    assert "shape (9, 8, 1) but the model was made for (8, 8, 1)" in capsys.readouterr().err


def test_any_tfds_image_dataset_by_name(tmp_path, capsys):
    """A TFDS dataset with PNG-encoded ``Image`` features, prepared in another process (as on a machine with
    internet), read by name through TFDS's own reading path, then trained, evaluated and sampled."""
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import tfds_png_images as made  # its builder class is not registered here: only its files are used

    data_dir = tmp_path / "tfds"
    subprocess.run([sys.executable, made.__file__, str(data_dir)], check=True, capture_output=True)
    test = data_lib.load(made.NAME, "test", data_dir=data_dir)
    assert test.shape == made.SHAPE and test.images.dtype == np.uint8 and test.kind == "uint8"
    order = np.argsort(test.images[:, 0, 0, 0])  # pixel (0, 0) is the example's index
    np.testing.assert_array_equal(test.images[order], made.images("test"))  # PNG round trip: exact
    np.testing.assert_array_equal(test.labels[order], np.arange(20) % 3)
    assert data_lib.default_splits(made.NAME, data_dir=data_dir) == ("train[:90%]", "train[90%:]")

    workdir = tmp_path / "run"
    assert main(["train", "--workdir", str(workdir), "--dataset", made.NAME, "--data-dir", str(data_dir), *SMALL,
                 "--batch-size", "9", "--likelihood", "gaussian", "--sigma", "0.2", "--epochs", "2"]) == 0
    assert "train[:90%] to train, train[90%:] to validate" in capsys.readouterr().out
    assert RunFolder(workdir).require_config().model.data_shape == made.SHAPE
    assert main(["evaluate", "--workdir", str(workdir), "--estimators", "elbo", "--no-progress"]) == 0  # no --data-dir
    assert json.loads((workdir / "eval_test.json").read_text())["num_examples"] == 20
    assert main(["sample", "--workdir", str(workdir), "--num", "8"]) == 0
    assert _grid(workdir / "samples.png", made.SHAPE, 8).shape[-1] == 3
    # A name that is neither built in, an array file nor a prepared TFDS dataset says what to do.
    with pytest.raises(ValueError, match="no TFDS dataset of that name is prepared"):
        data_lib.load("vae_jax_not_made", "train", data_dir=data_dir)


@pytest.mark.parametrize("dataset", ["binarized_mnist", "rgb"])
def test_conv_architecture_trains_resumes_and_evaluates(dataset, shared_data, data_dir, tmp_path, capsys):
    """--architecture conv on binarized MNIST (a few hundred images) and on an RGB 32 x 32 array file; resuming
    continues the same run, the run folder alone evaluates and draws it."""
    if dataset == "rgb":
        images = DATASETS["rgb"][0]()
        path = tmp_path / "rgb.npz"
        np.savez(path, train=images[:300], test=images[300:])
        source = ["--dataset", str(path), "--likelihood", "gaussian", "--sigma", "0.2"]
        split = "test"
    else:
        source = ["--manual-dir", str(shared_data), "--data-dir", str(data_dir), "--train-split", "train[:300]",
                  "--valid-split", "validation[:50]"]
        split = "test[:40]"
    workdir = tmp_path / "run"
    train = ["train", "--workdir", str(workdir), "--architecture", "conv", "--channels", "8,16", *SMALL, *source]
    assert main([*train, "--epochs", "1"]) == 0
    assert main([*train, "--epochs", "2"]) == 0
    steps = 6 if dataset == "binarized_mnist" else 5  # 300 or 270 (train[:90%]) images in batches of 50
    assert f"resuming from checkpoint {steps} (epoch 1)" in capsys.readouterr().out
    config = RunFolder(workdir).require_config()
    assert config.model.architecture == "conv" and config.model.channels == (8, 16)
    estimators = "elbo,importance" if dataset == "binarized_mnist" else "elbo"  # compiling each takes seconds
    assert main(["evaluate", "--workdir", str(workdir), "--split", split, "--estimators", estimators,
                 "--num-samples", "20", "--no-progress"]) == 0
    result = json.loads(RunFolder(workdir).result_path(split).read_text())
    assert result["num_examples"] == 40 and all(np.isfinite(result[e]["mean"]) for e in estimators.split(","))
    if dataset == "rgb":
        assert main(["sample", "--workdir", str(workdir), "--num", "8"]) == 0
        assert _grid(workdir / "samples.png", config.model.data_shape, 8).shape[-1] == 3
