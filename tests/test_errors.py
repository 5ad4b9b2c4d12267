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
    ("--dataset", "cifar10", "invalid choice"), ("--activation", "swishy", "invalid choice"),
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


@pytest.mark.parametrize("images, message", [
    (np.full((4, 784), np.nan, np.float32), "NaN or Inf"),
    (np.zeros((4, 100), np.float32), "data_dim=784"),
    (np.full((4, 784), 0.5, np.float32), "needs 0/1 data"),
])
def test_data_checks(images, message):
    config = ExperimentConfig(ModelConfig(), TrainConfig())
    with pytest.raises(ValueError, match=message):
        check_data_fits_model(ArrayDataset(images, None, "custom", "train"), config)
