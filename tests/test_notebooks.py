"""The notebooks execute top to bottom (quick mode) without errors."""

from pathlib import Path

import nbclient
import nbformat
import pytest

from tests.compiler_flags import default_compiler_env

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, shared_data, monkeypatch):
    monkeypatch.setenv("VAE_JAX_QUICK", "1")
    # The kernel compiles as a user's would: the notebooks run AIS and importance sampling, which at the tests'
    # -O0 (conftest) ran past the cell time limit.
    monkeypatch.setenv("XLA_FLAGS", default_compiler_env()["XLA_FLAGS"])
    monkeypatch.setenv("VAE_JAX_SHARED_DATA", str(shared_data))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, naming the failing cell, on any error
