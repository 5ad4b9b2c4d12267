"""Inputs the code cannot serve are refused before any work, with the limit and what to change named:
library misuse (integer images, counts that are not static ints, a wrong AIS start), counts past the 32-bit
indices, sizes past the free memory, a platform JAX cannot start, and files that cannot be written."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax as vj
from vae_jax import memory
from vae_jax.cli import main
from vae_jax.config import MAX_COUNT, ModelConfig
from vae_jax.errors import ConfigError, DataError, ResourceError
from vae_jax.rundir import RunFolder, to_json, write_atomic


@pytest.fixture(scope="module")
def model():
    vae = vj.VAE(ModelConfig(latent_dim=3, hidden=(16,)))
    return vae, vae.init(jax.random.key(0))


@pytest.fixture(scope="module")
def run(shared_data, data_dir, tmp_path_factory):
    """A one-epoch run folder (a small model on 500 images) and the data options."""
    workdir = tmp_path_factory.mktemp("limits") / "run"
    data = ["--manual-dir", str(shared_data), "--data-dir", str(data_dir)]
    assert main(["train", "--workdir", str(workdir), "--train-split", "train[:500]", "--valid-split",
                 "validation[:100]", "--epochs", "1", "--latent-dim", "3", "--hidden", "16", "--no-progress",
                 *data]) == 0
    return workdir, data


def _exit_code(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# --- the library: static checks at trace time -----------------------------------------------------------

def test_integer_images_are_refused_not_misread(model):
    """A Bernoulli model given 0..255 once returned +2456 nats; integer images now need an explicit conversion."""
    vae, params = model
    x = np.arange(784) % 256
    mean, log_var = jnp.zeros(3), jnp.zeros(3)
    for dtype in (np.uint8, np.int32):
        with pytest.raises(ConfigError, match="x / 255.0"):
            vj.importance_log_marginal(jax.random.key(0), vae.likelihood_fn(params), x.astype(dtype), mean,
                                       log_var, 10)
        with pytest.raises(ConfigError, match="dtype"):
            vae.encode(params, x.astype(dtype))
        with pytest.raises(ConfigError, match="dtype"):
            vj.ais_log_marginal(jax.random.key(0), vae.likelihood_fn(params), x.astype(dtype), 3, 2, 5)
    binary = (x > 127)
    # bool is unambiguous (0/1): converted, and equal to the float32 result
    np.testing.assert_array_equal(vae.log_likelihood(params, binary, jnp.ones(3)),
                                  vae.log_likelihood(params, binary.astype(np.float32), jnp.ones(3)))


def test_check_data_finds_values_outside_the_likelihood(model):
    vae, _ = model
    vae.check_data(np.random.default_rng(0).integers(0, 2, (5, 784)).astype(np.float32))  # 0/1: fine
    with pytest.raises(DataError, match="other than 0 and 1"):
        vae.check_data(np.full((5, 784), 0.5, np.float32))
    vae.check_data(np.full((5, 784), 0.5, np.float32), binarize=True)
    with pytest.raises(DataError, match="outside"):
        vae.check_data(np.full((5, 784), 255.0, np.float32), binarize=True)
    with pytest.raises(DataError, match="NaN"):
        vae.check_data(np.full((5, 784), np.nan, np.float32))
    with pytest.raises(DataError, match="dtype uint8"):
        vae.check_data(np.zeros((5, 784), np.uint8))
    with pytest.raises(DataError, match="data_dim=784"):
        vae.check_data(np.zeros((5, 28, 28), np.float32))


def test_counts_numpy_ints_traced_and_too_large(model):
    vae, params = model
    ll, x, zeros = vae.likelihood_fn(params), jnp.zeros(784), jnp.zeros(3)
    by_int = vj.importance_log_marginal(jax.random.key(0), ll, x, zeros, zeros, 10)
    by_numpy = vj.importance_log_marginal(jax.random.key(0), ll, x, zeros, zeros, np.int64(10))
    assert by_int == by_numpy
    traced = jax.jit(lambda k: vj.importance_log_marginal(jax.random.key(0), ll, x, zeros, zeros, k))
    with pytest.raises(ConfigError, match="static_argnames"):
        traced(10)
    for bad in (2**31, 10.0, True, 0):
        with pytest.raises(ConfigError, match="num_samples"):
            vj.importance_log_marginal(jax.random.key(0), ll, x, zeros, zeros, bad)
    # the last chunk is padded: ceil(M / C) * C must stay within the int32 indices too
    with pytest.raises(ConfigError, match="32-bit"):
        vj.importance_log_marginal(jax.random.key(0), ll, x, zeros, zeros, MAX_COUNT, chunk_size=2**30)


def test_ais_start_of_the_wrong_shape_is_named(model):
    vae, params = model
    ll, x = vae.likelihood_fn(params), jnp.zeros(784)
    for start in ((jnp.zeros(4), jnp.zeros(4)), (jnp.zeros((2, 3)), jnp.zeros((2, 3))), jnp.zeros(3)):
        with pytest.raises(ConfigError, match="start must be"):
            vj.ais_log_marginal(jax.random.key(0), ll, x, 3, 2, 5, start=start)


def test_memory_check_refuses_what_cannot_fit():
    big = jax.jit(lambda x: jnp.outer(x, x)).lower(jax.ShapeDtypeStruct((2**20,), jnp.float32)).compile()
    assert memory.required_bytes(big) >= 2**42  # a 4 TiB result, never allocated by compiling
    with pytest.raises(ResourceError, match="4,096.0 GiB.*lower --the-option"):
        memory.check_fits(big, "the outer product", "lower --the-option")
    small = jax.jit(lambda x: x + 1).lower(jax.ShapeDtypeStruct((10,), jnp.float32)).compile()
    memory.check_fits(small, "a sum", "nothing")


# --- the command line ------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--num-samples", "--chunk-size", "--naive-samples", "--ais-chains"])
def test_counts_past_int32_are_refused_at_parsing(option, run, capsys):
    workdir, data = run
    code, err = _exit_code(["evaluate", "--workdir", str(workdir), option, str(2**31)], capsys)
    assert code == 2 and "2,147,483,647" in err and option in err


def test_errors_found_after_parsing_show_the_commands_usage(capsys, tmp_path):
    code, err = _exit_code(["evaluate", "--workdir", str(tmp_path), "--estimators", ","], capsys)
    assert code == 2 and "no estimator given" in err
    assert "usage: vae-jax evaluate" in err  # the command's usage line, not the top level's


@pytest.mark.parametrize("argv, what", [
    (["--num-samples", "100000000", "--chunk-size", "100000000"], "importance"),
    (["--estimators", "naive", "--naive-samples", "100000000", "--chunk-size", "50000000"], "naive"),
])
def test_chunks_that_cannot_fit_are_refused_before_any_work(argv, what, run, capsys):
    workdir, data = run
    code, err = _exit_code(["evaluate", "--workdir", str(workdir), "--split", "test[:100]", "--no-progress",
                            *argv, *data], capsys)
    assert code == 2 and what in err and "GiB free" in err and "--chunk-size" in err
    assert not list(workdir.glob("eval_*.json"))


def test_bdmc_with_more_examples_than_memory_is_refused(run, capsys):
    workdir, _ = run
    code, err = _exit_code(["bdmc", "--workdir", str(workdir), "--num-examples", "1000000000", "--no-progress"],
                           capsys)
    assert code == 2 and "--num-examples" in err and "GiB" in err
    assert not (workdir / "bdmc.json").exists()


@pytest.mark.parametrize("platform", ["no_such_platform", "cuda"])  # JAX raises RuntimeError, AssertionError
def test_a_platform_jax_cannot_start_is_one_line(run, platform):
    workdir, _ = run
    env = {**os.environ, "JAX_PLATFORMS": platform}
    proc = subprocess.run([sys.executable, "-m", "vae_jax", "sample", "--workdir", str(workdir)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"JAX_PLATFORMS='{platform}'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_every_file_the_cli_writes_is_strict_json(run, capsys):
    """One image: an undefined standard error, written as null (bare NaN is not JSON)."""
    workdir, data = run
    assert main(["evaluate", "--workdir", str(workdir), "--split", "test[:1]", "--num-samples", "30",
                 "--naive-samples", "100", "--no-progress", *data]) == 0
    assert main(["bdmc", "--workdir", str(workdir), "--num-examples", "1", "--ais-chains", "2",
                 "--ais-temperatures", "5", "--no-progress"]) == 0
    assert "+- undefined nats (n=1" in capsys.readouterr().out

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))

    written = [p for p in workdir.iterdir() if p.suffix in (".json", ".jsonl")]
    assert {p.name for p in written} >= {"config.json", "data_source.json", "metrics.jsonl", "eval_test_to1.json",
                                          "bdmc.json"}
    for path in written:
        for line in (path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]):
            strict(line)
    assert strict((workdir / "eval_test_to1.json").read_text())["elbo"]["stderr"] is None
    assert to_json({"a": [float("nan"), float("inf"), 1.5]}) == '{"a": [null, null, 1.5]}'


def test_fixed_sigma_below_the_learned_floor_is_accepted():
    assert ModelConfig(likelihood="gaussian", sigma=1e-6).sigma == 1e-6
    with pytest.raises(ConfigError, match="floor"):
        ModelConfig(likelihood="gaussian", sigma=1e-6, learn_sigma=True)


# --- files -------------------------------------------------------------------------------------------------

def test_a_failed_write_names_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    (tmp_path / ".result.json.tmp").symlink_to("/dev/full")  # every write there fails: ENOSPC, a full disk
    with pytest.raises(OSError, match="could not write .*result.json: No space left on device"):
        write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_file_as_workdir_and_an_unwritable_output(run, tmp_path, capsys):
    workdir, data = run
    not_a_folder = tmp_path / "README.md"
    not_a_folder.write_text("# notes")
    code, err = _exit_code(["train", "--workdir", str(not_a_folder), "--epochs", "1", *data], capsys)
    assert code == 2 and "is a file, not a run folder" in err and "Errno" not in err
    code, err = _exit_code(["sample", "--workdir", str(workdir), "--output", str(not_a_folder / "x.png")], capsys)
    assert code == 2 and "--output" in err and ".probe" not in err


def test_a_damaged_data_source_is_reported(run, capsys):
    workdir, _ = run
    folder = RunFolder(workdir)
    saved = folder.data_source_path.read_text()
    recorded = json.loads(saved)
    assert os.path.isabs(recorded["manual_dir"]) and not os.path.isabs(recorded["relative_to_run_folder"]["manual_dir"])
    try:
        folder.data_source_path.write_text("{not json")
        messages = []
        assert folder.read_data_source(log=messages.append) is None
        assert "data_source.json" in messages[0] and "--manual-dir" in messages[0]
    finally:
        folder.data_source_path.write_text(saved)


def test_the_recorded_data_source_survives_moving_the_tree(run, tmp_path):
    """Absolute and relative-to-the-run-folder paths are both kept: the first that exists is used."""
    workdir, _ = run
    folder = RunFolder(workdir)
    recorded = json.loads(folder.data_source_path.read_text())
    assert folder.read_data_source().manual_dir == recorded["manual_dir"]
    moved = RunFolder(tmp_path / "elsewhere" / "run")
    moved.path.mkdir(parents=True)
    relative = os.path.relpath(recorded["manual_dir"], moved.path)  # as if the data had moved with the tree
    moved.data_source_path.write_text(json.dumps({"data_dir": None, "manual_dir": "/no/longer/here",
                                                  "relative_to_run_folder": {"manual_dir": relative}}))
    assert os.path.samefile(moved.read_data_source().manual_dir, recorded["manual_dir"])


# --- feedback ----------------------------------------------------------------------------------------------

def test_progress_counts_sample_chunks_once_per_chunk(model):
    """One image with many samples is one batch: progress comes from inside the compiled estimator, once per
    chunk of samples however many examples the batch holds."""
    from vae_jax.evaluate import EvalConfig, make_estimator_fns

    vae, params = model
    ticks = {"importance": [], "naive": [], "elbo": []}
    fns = make_estimator_fns(vae, params, jax.random.key(0), EvalConfig(num_samples=1000, naive_samples=900,
                                                                         elbo_samples=20),
                             chunk_sizes={"importance": 300, "naive": 100, "elbo": 7},
                             on_chunk={name: functools.partial(calls.append, 1) for name, calls in ticks.items()})
    xs = jnp.asarray(np.random.default_rng(0).integers(0, 2, (3, 784)), jnp.float32)
    for name in ticks:
        jax.block_until_ready(fns[name](jax.random.split(jax.random.key(1), 3), xs))
    assert {name: len(calls) for name, calls in ticks.items()} == {"importance": 4, "naive": 9, "elbo": 3}


def test_one_image_evaluation_shows_chunk_progress(run, capsys):
    workdir, data = run
    assert main(["evaluate", "--workdir", str(workdir), "--split", "test[:1]", "--estimators", "importance",
                 "--num-samples", "20000", "--chunk-size", "500", *data]) == 0
    err = capsys.readouterr().err
    assert "chunk" in err and "/40" in err  # 40 chunks of 500 samples, not "0/1" examples


def test_a_model_too_large_for_memory_is_refused_before_it_exists(shared_data, data_dir, tmp_path, capsys):
    """--hidden 200000,200000 asks for 40e9 weights (160 GB, three times over with Adam's moments)."""
    code, err = _exit_code(["train", "--workdir", str(tmp_path / "w"), "--hidden", "200000,200000", "--epochs", "1",
                            "--train-split", "train[:200]", "--valid-split", "validation[:100]", "--no-progress",
                            "--manual-dir", str(shared_data), "--data-dir", str(data_dir)], capsys)
    assert code == 2 and "--hidden" in err and "GiB free" in err
    assert not (tmp_path / "w").exists()
