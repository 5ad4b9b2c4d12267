"""Shared fixtures: the real datasets in ../shared/data and a per-session TFDS data_dir."""

import os
from pathlib import Path

import pytest

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
