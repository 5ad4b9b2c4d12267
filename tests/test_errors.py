"""Bad input ends in a clear message, exit code 2, no traceback, and nothing written."""

import numpy as np
import pytest

from vae_jax.cli import main
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.data import ArrayDataset
from vae_jax.data import check_data_fits_model


@pytest.mark.parametrize("option, value, message", [
    ("--epochs", "0", "positive integer"), ("--batch-size", "-5", "positive integer"),
    ("--num-samples", "0", "positive integer"), ("--sigma", "0", "positive number"),
    ("--sigma", "nan", "positive number"), ("--learning-rate", "abc", "positive number"),
    ("--data-kind", "rgb", "invalid choice"), ("--activation", "swishy", "invalid choice"),
    ("--objective", "vimco", "invalid choice"), ("--hidden", "", "comma-separated"),
])
def test_bad_train_options(option, value, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--workdir", str(tmp_path / "w"), option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_grey_levels_with_bernoulli_are_refused_before_writing(shared_data, data_dir, tmp_path, capsys):
    code, err = _run(["train", "--workdir", str(tmp_path / "w"), "--dataset", "mnist", "--train-split", "test[:100]",
                      "--valid-split", "test[100:200]", "--manual-dir", str(shared_data), "--data-dir", str(data_dir)],
                     capsys)
    assert code == 2 and "--binarize" in err and "Bernoulli" in err
    assert not (tmp_path / "w").exists()


def test_missing_dataset_files_exit_2_and_write_nothing(tmp_path, capsys):
    code, err = _run(["train", "--workdir", str(tmp_path / "w"), "--manual-dir", str(tmp_path / "nowhere"),
                      "--data-dir", str(tmp_path / "tfds")], capsys)
    assert code == 2 and "binarized_mnist_train.amat" in err and "--download" in err
    assert not (tmp_path / "w").exists()


def test_unwritable_workdir_is_reported(shared_data, data_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, err = _run(["train", "--workdir", str(blocker / "run"), "--train-split", "train[:200]", "--valid-split",
                      "validation[:100]", "--epochs", "1", "--manual-dir", str(shared_data), "--data-dir",
                      str(data_dir), "--no-progress"], capsys)
    assert code == 2 and str(blocker) in err


def test_evaluating_a_run_without_checkpoints(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(ExperimentConfig(ModelConfig(), TrainConfig()).to_json())
    code, err = _run(["evaluate", "--workdir", str(workdir)], capsys)
    assert code == 2 and "no checkpoint yet" in err


@pytest.mark.parametrize("shape, kind, likelihood, binarize, message", [
    ((20, 20, 1), "binary", "bernoulli", False, r"shape \(20, 20, 1\) but the model was made for \(28, 28, 1\)"),
    ((28, 28, 3), "binary", "bernoulli", False, r"shape \(28, 28, 3\)"),
    ((28, 28, 1), "uint8", "bernoulli", False, "uint8 data, which the bernoulli likelihood cannot model: use "
     "--likelihood discretized_logistic or --likelihood discretized_logistic_mixture or --likelihood gaussian, "
     "or --binarize"),
    ((28, 28, 1), "binary", "discretized_logistic", False, "binary data, which the discretized_logistic likelihood "
     "cannot model: use --likelihood bernoulli or --likelihood gaussian"),
    ((28, 28, 1), "uint8", "discretized_logistic_mixture", False, None),
    ((28, 28, 1), "continuous", "bernoulli", False, "continuous data, which the bernoulli likelihood cannot model"),
    ((28, 28, 1), "uint8", "bernoulli", True, None),  # binarized grey levels
    ((28, 28, 1), "continuous", "gaussian", False, None),
    ((28, 28, 1), "binary", "gaussian", False, None),
])
def test_data_checks(shape, kind, likelihood, binarize, message):
    """The data a run reads must have the model's shape and a kind its likelihood models (values are checked
    when the data is loaded: tests/test_arrays.py)."""
    config = ExperimentConfig(ModelConfig(likelihood=likelihood), TrainConfig(binarize=binarize))
    dataset = ArrayDataset(np.zeros((4, *shape), bool if kind == "binary" else np.uint8 if kind == "uint8" else
                                    np.float32), None, "custom", "train", kind)
    if message is None:
        check_data_fits_model(dataset, config)
        return
    with pytest.raises(ValueError, match=message):
        check_data_fits_model(dataset, config)
