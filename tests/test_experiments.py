"""The experiment scripts run end to end in their quick mode and write what they promise."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))


@pytest.mark.slow
def test_estimator_comparison_quick(shared_data, data_dir, tmp_path):
    import estimators

    estimators.main(["--quick", "--manual-dir", str(shared_data), "--data-dir", str(data_dir),
                     "--workdir", str(tmp_path / "runs"), "--output", str(tmp_path / "out"),
                     "--num-examples", "10", "--latent-dims", "2"])
    result = json.loads((tmp_path / "out" / "estimators.json").read_text())
    r = result["results"][0]
    assert r["latent_dim"] == 2 and set(r["naive"]) == {"10", "100", "1000"}
    quadrature = r["quadrature"]
    assert quadrature["max_abs_error"] < 0.01
    # In 2-D both sampling estimators approach the quadrature value; the ELBO stays below it.
    assert r["elbo"]["mean"] < quadrature["mean"]
    assert abs(r["naive"]["1000"]["mean"] - quadrature["mean"]) < 0.5
    assert r["importance"]["100"]["mean"] <= quadrature["mean"] + 0.05
    assert (tmp_path / "out" / "estimators.png").stat().st_size > 10_000
    assert "| 2 |" in (tmp_path / "out" / "estimators.md").read_text()
