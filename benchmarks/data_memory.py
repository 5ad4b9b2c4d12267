"""Peak memory of `vae-jax train` on a 50,000 x 32 x 32 x 3 image set, stored as uint8 vs as float32.

Writes the same 50,000 images (random 8-bit levels) twice into a temporary folder: as `train.npy` uint8
(8-bit kind, 154 MB) and as `train.npy` float32 level / 255 (continuous kind, 614 MB), then runs one training
epoch of each in its own process (alternating, `--repeats` times) and reads each process's peak resident set
size from `wait4`. Prints the medians and their ratio.

    python benchmarks/data_memory.py [--repeats 2] [--epochs 1]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SHAPE = (50_000, 32, 32, 3)


def peak_rss_mb(command: list[str]) -> float:
    """Runs ``command``; returns its peak resident set size in MB (Linux reports ru_maxrss in KiB)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss * 1024 / 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        levels = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
        folders = {"uint8": Path(tmp, "uint8"), "float32": Path(tmp, "float32")}
        for folder in folders.values():
            folder.mkdir()
        np.save(folders["uint8"] / "train.npy", levels)
        np.save(folders["float32"] / "train.npy", (levels / 255.0).astype(np.float32))
        del levels
        peaks = {name: [] for name in folders}
        for repeat in range(args.repeats):
            order = list(folders) if repeat % 2 == 0 else list(reversed(folders))
            for name in order:
                command = [sys.executable, "-m", "vae_jax", "train", "--workdir", str(Path(tmp, f"run_{name}_{repeat}")),
                           "--dataset", str(folders[name]), "--likelihood", "gaussian", "--sigma", "0.1",
                           "--epochs", str(args.epochs), "--no-progress", "--no-tensorboard"]
                peaks[name].append(peak_rss_mb(command))
                print(f"{name:8s} repeat {repeat}: peak RSS {peaks[name][-1]:8.0f} MB", flush=True)
    medians = {name: statistics.median(values) for name, values in peaks.items()}
    data_mb = {"uint8": np.prod(SHAPE) / 1e6, "float32": 4 * np.prod(SHAPE) / 1e6}
    for name, median in medians.items():
        print(f"{name:8s}: data {data_mb[name]:6.0f} MB on disk, peak RSS median {median:6.0f} MB "
              f"(MLP 3072-200-200-50 with a Gaussian decoder, batch 100, {args.epochs} epoch(s))")
    print(f"ratio float32 / uint8 peak RSS: {medians['float32'] / medians['uint8']:.2f}")


if __name__ == "__main__":
    main()
