"""Helpers shared by the experiment scripts: run metadata, result files and claims on shared work."""

import argparse
import contextlib
import os
import platform
import sys
from pathlib import Path

import jax
import numpy as np

import vae_jax
from vae_jax.cli import exit_process
from vae_jax.cli_options import HelpFormatter
from vae_jax.rundir import write_atomic, write_json
from vae_jax.signals import signal_of, stop_signals_raise


def cpu_model() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what ``platform`` knows: XLA's CPU code depends
    on the processor, so the last bits of a result (and a trained model) can differ between two of them."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        info = {key.strip(): value.strip() for key, value in info.items()}
        vector = [f for f in ("avx", "avx2", "fma", "avx512f") if f in info.get("flags", "").split()]
        return f"{info['model name']} ({', '.join(vector)})"
    except (OSError, KeyError):
        return platform.processor() or platform.machine()


def run_meta(settings: dict, seconds: float) -> dict:
    """Settings, wall time, machine and software versions, recorded with every result."""
    return {"settings": settings, "seconds": seconds, "machine": platform.platform(),
            "processor": cpu_model(), "cpu_count": __import__("os").cpu_count(),
            "devices": [str(d) for d in jax.devices()],
            "versions": {"vae_jax": vae_jax.__version__, "jax": jax.__version__, "numpy": np.__version__,
                         "python": platform.python_version()}}


def write_results(out: str | Path, name: str, payload: dict, table: str) -> Path:
    """Writes ``out/name.json`` and ``out/name.md``; returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", payload)  # whole or not at all; NaN written as null
    write_atomic(out / f"{name}.md", table)
    return out


def test_file_lines(images: np.ndarray, manual_dir) -> list[int] | None:
    """0-based line numbers, in ``binarized_mnist_test.amat``, of the test ``images`` [N, 784] as TFDS ordered
    them (TFDS orders examples by a hash of their key, so ``test[:N]`` is not the file's first N lines).
    None when the file is not in ``manual_dir``."""
    from vae_jax.tfds_builders import SPECS, find_local_file, parse_amat, verify_file

    spec = SPECS["binarized_mnist"]
    name = "binarized_mnist_test.amat"
    path = find_local_file(spec, name, [Path(manual_dir)]) if manual_dir else None
    if path is None:
        return None
    rows = parse_amat(verify_file(spec, name, path)).reshape(-1, 784)
    where: dict[bytes, list[int]] = {}
    for line, row in enumerate(rows):
        where.setdefault(row.tobytes(), []).append(line)
    return [where[np.asarray(image, np.uint8).tobytes()].pop(0) for image in images]


def data_args(parser):
    parser.add_argument("--manual-dir", help="folder with the dataset files (see README)")
    parser.add_argument("--data-dir", help="where prepared datasets are cached")


def run_experiment(main):
    """Runs an experiment's ``main()`` as a program: SIGTERM and SIGHUP (a closed terminal) stop it like Ctrl-C,
    a model being trained saves its last completed epoch, and the results (written only at the end, whole) are
    not written. Run the same command again to resume the training from its checkpoints."""
    try:
        with stop_signals_raise():
            main()
    except KeyboardInterrupt as interrupt:
        stop = signal_of(interrupt)
        with contextlib.suppress(OSError):
            print(f"interrupted by {stop.name}: no results were written; the models trained so far are "
                  "checkpointed in --workdir: run the same command again to resume", file=sys.stderr)
        exit_process(128 + stop)


def experiment_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The options every experiment shares: data location, ``--workdir runs/<name>``,
    ``--output experiments/results/<name>`` and ``--quick``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=HelpFormatter)
    data_args(parser)
    parser.add_argument("--workdir", default=f"runs/{name}", help="where the models are trained (resumable)")
    parser.add_argument("--output", default=f"experiments/results/{name}", help="results folder")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test / CI")
    return parser


def claim(path: Path) -> bool:
    """Claims the work that the file ``path`` stands for (it is created holding this process's pid), unless a
    live process holds it; a claim left by a process that died is taken over. Several processes started with
    the same command (one per core) share the work this way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(path.read_text() or 0), 0)
            return False  # held by a live process
        except (ProcessLookupError, ValueError):
            path.unlink(missing_ok=True)  # left by a process that died
            return claim(path)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True
