"""Shared fixtures: the real datasets in ../shared/data and a per-session TFDS data_dir."""

import os
import tempfile
from pathlib import Path

import pytest

from tests.compiler_flags import FAST_COMPILE_FLAGS

# Tests check identities at float32 precision: on a GPU, JAX's default lets float32 matrix products use
# TensorFloat32 (10-bit mantissa), which moves results by ~1e-3 relative, and picks kernels that need not
# be bit-reproducible from one process to the next, which the exact-resume tests require. Both settings
# are inherited by the processes tests start; neither changes anything on a CPU.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "float32")
# Two test workers share one accelerator: JAX's default takes 75% of its memory in the first process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The tests' models are small and their data few: most of their time is XLA compiling (on a CPU, LLVM's
# optimizations). Compiling with LLVM at -O0 and without its expensive passes took 213 s where the default took
# 306 s for the same tests (2026-12-02); the programs are the same, only slower to run, which these tests do not
# measure (benchmarks/ does, at the default settings).
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_gpu_deterministic_ops=true",
                                    "--xla_gpu_autotune_level=0", *FAST_COMPILE_FLAGS]).strip()

# One persistent compilation cache for the whole test run, shared by both xdist workers and every vae-jax process
# the tests start (the environment is inherited): the fault and CLI tests train the same small model in many
# processes, each of which would otherwise compile the same training epoch and estimators again. A fresh folder
# per run, so every function is still compiled at least once here.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"vae-jax-tests-{_RUN}" / "jit"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

SHARED_DATA = Path(os.environ.get("VAE_JAX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real dataset files; tests that need it fail in CI and skip elsewhere without it."""
    if not (SHARED_DATA / "binarized_mnist").is_dir():
        message = f"real datasets not found at {SHARED_DATA} (set VAE_JAX_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A TFDS data_dir shared by the session, so each split is prepared once."""
    return tmp_path_factory.mktemp("tfds")


_FIRST = ("tests/test_experiments.py", "tests/test_notebooks.py")


def pytest_collection_modifyitems(items):
    """The slow end-to-end tests run first (the experiments' and notebooks' runs of 1-3 minutes first of all), so
    the workers do not wait at the end of the run for one long test that happened to start last."""
    def rank(item):
        if item.nodeid.startswith(_FIRST):
            return 0
        return 1 if item.get_closest_marker("slow") else 2
    items.sort(key=rank)  # stable: the order within each group is the collection order
