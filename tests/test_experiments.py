"""The experiment scripts run end to end in their quick mode and write what they promise."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from vae_jax.rundir import RunFolder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))


def test_processes_share_work_through_claims(tmp_path):
    """A claim file is held by one live process at a time; a claim left by a dead process is taken over."""
    import subprocess

    import common

    a, b = tmp_path / "a" / "estimators_claim", tmp_path / "b" / "estimators_claim"
    assert common.claim(a) and a.read_text() == str(os.getpid())
    assert not common.claim(a)  # held by this (live) process
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        b.parent.mkdir()
        b.write_text(str(holder.pid))
        assert not common.claim(b)  # held by a live process
    finally:
        holder.kill()
        holder.wait()
    assert common.claim(b)  # its holder is gone
    assert b.read_text() == str(os.getpid())


@pytest.mark.slow
def test_estimator_comparison_quick(shared_data, data_dir, tmp_path, monkeypatch):
    import estimators

    args = ["--quick", "--manual-dir", str(shared_data), "--data-dir", str(data_dir), "--workdir",
            str(tmp_path / "runs"), "--output", str(tmp_path / "out"), "--num-examples", "10", "--latent-dims", "2"]
    estimators.main(args)
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
    # The reference, its certificate, the refined proposal and the tail diagnostics are all reported.
    ais = r["ais"]
    assert ais["num_examples"] == 4 and "gap_mean" in ais["bdmc"] and "quadrature" in ais["subset_means"]
    assert r["importance_refined"]["amortization_gap"] > -0.5 and 0 <= r["naive"]["1000"]["khat_above_0.7"] <= 1
    assert len(result["test_subset"]["line_indices"]) == 10
    for name in ("gaps.png", "posteriors_2d.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000
    # AIS runs from both starts; the reference is the higher of the two lower bounds.
    assert set(ais["by_start"]) == {"prior", "q"}
    assert ais["mean"] == max(a["mean"] for a in ais["by_start"].values())
    assert ais["start"] == max(ais["by_start"].values(), key=lambda a: a["mean"])["start"]
    # Every mean comes with its median and quartiles over the images.
    for summary in (r["elbo"], r["quadrature"], r["importance"]["100"], r["naive"]["1000"], r["importance_refined"]):
        q1, q3 = summary["quartiles"]
        assert q1 <= summary["median"] <= q3
    # Certification applies the rule as stated, with the gap's standard error; the reference is rerun at 10 T.
    for a in ais["by_start"].values():
        assert a["bdmc"]["certified"] == (a["bdmc"]["gap_mean"] < 0.1) and a["bdmc"]["gap_stderr"] > 0
    conv = ais["convergence"]
    assert conv["temperatures"] == [50, 500] and conv["num_examples"] == 2 and conv["start"] == ais["start"]
    assert conv["means"][0] == pytest.approx(np.mean(ais["per_image"]["ais"][:2]), abs=1e-4)
    assert conv["difference"]["mean"] == pytest.approx(conv["means"][1] - conv["means"][0], abs=1e-4)
    # Gaps to the reference (quadrature in 2-D) are per image, and AIS's own gap is among them.
    gaps, per_image = ais["gaps_to_reference"], ais["per_image"]
    assert ais["reference_name"] == "quadrature" and set(gaps) >= {"elbo", "importance_100", "ais"}
    assert all(len(v) == 4 for v in per_image.values())
    assert gaps["elbo"]["mean"] == pytest.approx(np.mean(per_image["quadrature"]) - np.mean(per_image["elbo"]), abs=1e-4)
    assert gaps["elbo"]["quartiles"][0] > 0  # the ELBO is below log p(x) on (almost) every image
    # A second run with the same settings reuses each model's result instead of recomputing it.
    monkeypatch.setattr(estimators, "compare", lambda *a, **k: pytest.fail("the result should have been reused"))
    estimators.main(args)
    assert json.loads((tmp_path / "out" / "estimators.json").read_text())["results"] == result["results"]
    monkeypatch.undo()
    # --reference-only recomputes the reference (here from the prior alone) and keeps everything else.
    estimators.main(["--quick", "--manual-dir", str(shared_data), "--data-dir", str(data_dir), "--reference-only",
                     "--workdir", str(tmp_path / "runs"), "--output", str(tmp_path / "out"), "--ais-start", "prior"])
    again = json.loads((tmp_path / "out" / "estimators.json").read_text())["results"][0]
    assert set(again["ais"]["by_start"]) == {"prior"} and again["ais"]["start"] == "prior"
    assert again["ais"]["by_start"]["prior"]["mean"] == ais["by_start"]["prior"]["mean"]  # same keys, same draws
    assert again["ais"]["subset_means"] == ais["subset_means"] and again["naive"] == r["naive"]
    # The mode-crossing reference (AIS and SMC from both starts) against quadrature, image by image, on the model
    # trained above.
    import reference_2d

    reference_2d.main(["--quick", "--manual-dir", str(shared_data), "--data-dir", str(data_dir), "--num-examples", "6",
                       "--workdir", str(tmp_path / "runs"), "--output", str(tmp_path / "ref")])
    ref = json.loads((tmp_path / "ref" / "reference_2d.json").read_text())["results"][0]
    assert [(m["method"], m["start"]) for m in ref["methods"]] == [("ais", "prior"), ("ais", "q"), ("smc", "prior"),
                                                                    ("smc", "q")]
    for m in ref["methods"]:
        assert len(m["per_example"]) == 6 and m["error"]["num_examples"] == 6  # --num-examples
        assert abs(m["error"]["mean"] - (m["mean"] - ref["quadrature"]["mean"])) < 1e-4
        # The truth is saved image by image, so every summary of the errors can be recomputed from the JSON.
        errors = np.array(m["per_example"]) - np.array(ref["quadrature"]["per_example"])
        assert m["error"]["median"] == pytest.approx(np.median(errors), abs=1e-4)
    assert "| 2 | smc | q |" in (tmp_path / "ref" / "reference_2d.md").read_text()
    # SMC's independent kernel from the defensive start with the adaptive schedule, on the same images, saved in
    # parts of 2 images; an unknown method is refused.
    monkeypatch.setattr(reference_2d, "CHUNK", 2)
    independent_run = ["--quick", "--manual-dir", str(shared_data), "--data-dir", str(data_dir), "--num-examples",
                       "6", "--workdir", str(tmp_path / "runs"), "--methods", "smc_independent", "--starts",
                       "q_defensive", "--prior-weight", "0.2", "--schedule", "adaptive", "--independent-particles",
                       "12", "--accepted-moves", "1.5"]
    reference_2d.main([*independent_run, "--output", str(tmp_path / "ref_independent")])
    written = json.loads((tmp_path / "ref_independent" / "reference_2d.json").read_text())
    independent = written["results"][0]
    assert written["meta"]["settings"]["prior_weight"] == 0.2
    assert written["meta"]["settings"]["independent_schedule"] == "adaptive"
    assert written["meta"]["settings"]["independent_particles"] == 12
    assert written["meta"]["settings"]["independent_accepted_moves"] == 1.5
    assert "ceil(1.5 / a), at most 50" in (tmp_path / "ref_independent" / "reference_2d.md").read_text()
    assert "smc_independent: 12 particles" in (tmp_path / "ref_independent" / "reference_2d.md").read_text()
    assert "(adaptive schedule)" in (tmp_path / "ref_independent" / "reference_2d.md").read_text()
    assert [(m["method"], m["start"]) for m in independent["methods"]] == [("smc_independent", "q_defensive")]
    assert independent["quadrature"] == ref["quadrature"]
    m = independent["methods"][0]
    assert abs(m["error"]["mean"] - (m["mean"] - ref["quadrature"]["mean"])) < 1e-4 and len(m["per_example"]) == 6
    assert 12 * 20 * 2 <= m["cost"] <= 12 * 20 * 50  # the particle-moves taken: 2 to 50 per temperature
    # Resume: a run that finds images 0-3 saved (image 0 marked) computes only images 4-5, with the keys they had,
    # so it gives the uninterrupted run's values; a file in a part's place that is not one is refused.
    [cache] = [f for f in (tmp_path / "runs" / "latent_2").glob("reference_2d_smc_*")
               if json.loads(next(f.glob("images_*.json")).read_text())["fingerprint"]["config"]["smc_kernel"]
               == "independent"]
    assert sorted(f.name for f in cache.iterdir()) == ["images_0-2.json", "images_2-4.json", "images_4-6.json"]
    first = json.loads((cache / "images_0-2.json").read_text())
    first["value"]["0"] = -1.0
    (cache / "images_0-2.json").write_text(json.dumps(first))
    (cache / "images_4-6.json").unlink()
    reference_2d.main([*independent_run, "--output", str(tmp_path / "ref_resumed")])
    resumed = json.loads((tmp_path / "ref_resumed" / "reference_2d.json").read_text())["results"][0]["methods"][0]
    assert resumed["per_example"] == [-1.0, *m["per_example"][1:]]
    assert (cache / "images_4-6.json").exists() and not list(cache.glob("*.claim"))
    (cache / "images_2-4.json").write_text("{not json")
    with pytest.raises(SystemExit):
        reference_2d.main([*independent_run, "--output", str(tmp_path / "ref_corrupt")])
    assert (cache / "images_2-4.json").read_text() == "{not json"  # left for the user to inspect
    for bad in (["--methods", "smc_gibbs"], ["--starts", "q_defensive", "--prior-weight", "1"],
                ["--independent-particles", "0"], ["--accepted-moves", "0"]):
        with pytest.raises(SystemExit):
            reference_2d.main(["--quick", *bad])


@pytest.mark.slow
def test_gaussian_decoder_quick(shared_data, data_dir, tmp_path):
    import gaussian_decoder

    gaussian_decoder.main(["--quick", "--manual-dir", str(shared_data), "--data-dir", str(data_dir),
                           "--workdir", str(tmp_path / "runs"), "--output", str(tmp_path / "out")])
    rows = json.loads((tmp_path / "out" / "gaussian_decoder.json").read_text())["results"]
    assert [r["sigma2"] for r in rows] == [0.01, 1.0]
    # A smaller sigma^2 weights reconstruction more: the posterior moves further from the prior.
    assert rows[0]["elbo"]["kl"] > rows[1]["elbo"]["kl"]
    assert all(r["importance"]["mean"] >= r["elbo"]["mean"] - 0.5 for r in rows)
    assert (tmp_path / "out" / "samples_sigma2_0.01.png").exists()


@pytest.mark.slow
def test_burda_quick(shared_data, data_dir, tmp_path):
    import burda

    burda.main(["--quick", "--manual-dir", str(shared_data), "--data-dir", str(data_dir),
                "--workdir", str(tmp_path / "runs"), "--output", str(tmp_path / "out"), "--ship"])
    rows = json.loads((tmp_path / "out" / "burda.json").read_text())["results"]
    assert [(r["objective"], r["k"]) for r in rows] == [("elbo", 1), ("iwae", 5), ("iwae", 50)]
    assert all(r["test_log_likelihood"]["mean"] > r["test_elbo"]["mean"] for r in rows)
    assert "88.71" in (tmp_path / "out" / "burda.md").read_text()
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 10_000
    # The shipped run folder holds one checkpoint and re-evaluates, from any directory, to the same number.
    from vae_jax.cli import main as vae_jax

    shipped = tmp_path / "out" / "vae"
    assert len(list((shipped / "checkpoints").iterdir())) == 1
    assert vae_jax(["evaluate", "--workdir", str(shipped), "--split", "test[:20]", "--estimators", "importance",
                    "--num-samples", "50", "--data-dir", str(data_dir), "--no-progress"]) == 0  # no --manual-dir
    again = json.loads(RunFolder(shipped).result_path("test[:20]").read_text())["importance"]["mean"]
    assert again == pytest.approx(rows[0]["test_log_likelihood"]["mean"], abs=1e-4)


@pytest.mark.slow
def test_latent_2d_quick(shared_data, data_dir, tmp_path):
    import latent_2d

    latent_2d.main(["--quick", "--manual-dir", str(shared_data), "--data-dir", str(data_dir),
                    "--workdir", str(tmp_path / "runs"), "--output", str(tmp_path / "out")])
    assert (tmp_path / "out" / "manifold.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "encodings.png").stat().st_size > 10_000


@pytest.mark.slow
def test_amortization_quick(shared_data, data_dir, tmp_path):
    """The amortization gap on training and test images of the shipped model, refined to convergence and for 100
    steps: the gaps are the per-image differences of the ELBOs reported, and the rule took at least patience + 1 windows, at most the cap."""
    import amortization

    amortization.main(["--quick", "--manual-dir", str(shared_data), "--data-dir", str(data_dir),
                       "--output", str(tmp_path / "out")])
    rows = json.loads((tmp_path / "out" / "amortization.json").read_text())["results"]
    assert set(rows) == {"train", "test"} and set(rows["train"]) == {"converged", "100 steps"}
    for by in rows.values():
        for name, r in by.items():
            gap = r["amortization_gap"]
            assert gap["mean"] == pytest.approx(r["refined_elbo"] - r["amortized_elbo"], abs=1e-3)
            assert len(r["per_example"]["amortization"]) == 4 and gap["quartiles"][0] <= gap["median"]
        assert by["100 steps"]["refine_steps_mean"] == 100
        assert 300 <= by["converged"]["refine_steps_mean"] <= 400  # patience 2: at least 3 windows of 100
        assert by["converged"]["amortized_elbo"] == by["100 steps"]["amortized_elbo"]  # the same encoder draws
    assert "| train | converged |" in (tmp_path / "out" / "amortization.md").read_text()
