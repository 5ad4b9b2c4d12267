"""The vae-jax command line end to end on a slice of the real binarized MNIST."""

import json
import subprocess
import sys

import matplotlib.image
import pytest

from vae_jax.cli import main
from vae_jax.rundir import RunFolder


@pytest.fixture(scope="module")
def trained(shared_data, data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli") / "run"
    data = ["--manual-dir", str(shared_data), "--data-dir", str(data_dir)]
    code = main(["train", "--workdir", str(workdir), "--train-split", "train[:2000]", "--valid-split",
                 "validation[:200]", "--epochs", "2", "--latent-dim", "5", "--hidden", "64", "--no-progress", *data])
    assert code == 0
    return workdir, data


def test_evaluate_writes_all_three_estimates(trained, capsys):
    workdir, data = trained
    code = main(["evaluate", "--workdir", str(workdir), "--split", "test[:20]", "--num-samples", "300",
                 "--naive-samples", "3000", "--chunk-size", "128", *data])
    assert code == 0
    assert "importance" in capsys.readouterr().out
    result = json.loads(RunFolder(workdir).result_path("test[:20]").read_text())
    assert result["split"] == "test[:20]" and result["num_examples"] == 20 and result["checkpoint_step"] == 40
    for name, count in (("elbo", 10), ("importance", 300), ("naive", 3000)):
        assert result[name]["num_samples"] == count and result[name]["mean"] < 0
        assert set(result["seconds"]) == {"elbo", "importance", "naive"}
    # Importance sampling tightens the bound: its average is above the ELBO's by more than MC error.
    assert result["importance"]["mean"] > result["elbo"]["mean"] + 3 * result["importance"]["mc_stderr"]


def test_sample_and_reconstruct_write_images(trained):
    workdir, data = trained
    assert main(["sample", "--workdir", str(workdir), "--num", "16"]) == 0
    assert main(["reconstruct", "--workdir", str(workdir), "--num", "16", *data]) == 0
    samples = matplotlib.image.imread(workdir / "samples.png")
    recon = matplotlib.image.imread(workdir / "reconstructions.png")
    assert samples.shape[:2] == (2 * 29 * 3 + 3, 8 * 29 * 3 + 3)  # 2 rows of 8, 3x scale, 1-pixel borders
    assert recon.shape[:2] == (4 * 29 * 3 + 3, 8 * 29 * 3 + 3)  # originals and reconstructions
    assert samples[..., 0].std() > 0.05  # not a blank image


def test_best_checkpoint_can_be_evaluated(trained):
    workdir, data = trained
    assert main(["evaluate", "--workdir", str(workdir), "--split", "test[:5]", "--estimators", "elbo",
                 "--checkpoint", "best", *data]) == 0


@pytest.mark.parametrize("argv, message", [
    (["train", "--workdir", "w", "--latent-dim", "0"], "positive integer"),
    (["train", "--workdir", "w", "--hidden", "200,x"], "comma-separated"),
    (["train", "--workdir", "w", "--likelihood", "poisson"], "invalid choice"),
    (["evaluate", "--workdir", "w", "--estimators", "elbo,magic"], "unknown estimator"),
    (["train", "--workdir", "w", "--learning-rate", "-1"], "positive number"),
])
def test_bad_options_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_evaluating_a_folder_without_a_run_says_what_to_do(tmp_path, capsys):
    assert main(["evaluate", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a vae-jax run folder" in err and "vae-jax train" in err and "Traceback" not in err


def test_module_entry_point_help():
    for command in ("train", "evaluate", "sample", "reconstruct"):
        out = subprocess.run([sys.executable, "-m", "vae_jax", command, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "--workdir" in out.stdout
