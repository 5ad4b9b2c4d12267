"""The README's library example runs and prints what it says."""

import re
from pathlib import Path

import numpy as np


def test_readme_python_example_runs(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "ELBO" in out and "importance" in out and "naive" in out
    for name in ("elbo", "importance", "naive"):
        assert namespace[name].shape == (8,) and np.all(np.isfinite(namespace[name]))
    assert np.mean(namespace["importance"]) > np.mean(namespace["elbo"])
