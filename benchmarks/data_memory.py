"""Peak memory of `vae-jax train` on a 50,000 x 32 x 32 x 3 image set, stored as uint8 vs as float32.

Writes the same 50,000 images (random 8-bit levels) twice into a temporary folder: as `train.npy` uint8
(8-bit kind, 154 MB) and as `train.npy` float32 level / 255 (continuous kind, 614 MB), and the first 1,000 as
uint8 (the fixed cost: JAX, the compiled programs), then runs one training epoch of each in its own process
(alternating, `--repeats` times) and reads each process's peak resident set size from `wait4`. Prints the
medians and their ratio. The data is written by a child process: Linux carries a process's peak RSS across
`exec`, so a parent holding the arrays when it starts the runs would inflate every reading (it did, by 0.9 GB).

    python benchmarks/data_memory.py [--repeats 2] [--epochs 1]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPE = (50_000, 32, 32, 3)
SIZE = 50_000 * 32 * 32 * 3
MAKE_DATA = f"""
import sys
from pathlib import Path
import numpy as np
tmp = Path(sys.argv[1])
levels = np.random.default_rng(0).integers(0, 256, {SHAPE}, dtype=np.uint8)
for name, array in (("uint8", levels), ("float32", (levels / 255.0).astype(np.float32)), ("small", levels[:1000])):
    (tmp / name).mkdir()
    np.save(tmp / name / "train.npy", array)
"""


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
        folders = {"uint8": Path(tmp, "uint8"), "float32": Path(tmp, "float32"), "uint8_1000": Path(tmp, "small")}
        subprocess.run([sys.executable, "-c", MAKE_DATA, tmp], check=True)  # keeps this process small
        peaks = {name: [] for name in folders}
        for repeat in range(args.repeats):
            order = list(folders) if repeat % 2 == 0 else list(reversed(folders))
            for name in order:
                command = [sys.executable, "-m", "vae_jax", "train", "--workdir", str(Path(tmp, f"run_{name}_{repeat}")),
                           "--dataset", str(folders[name]), "--likelihood", "gaussian", "--sigma", "0.1",
                           "--epochs", str(args.epochs), "--no-progress", "--no-tensorboard"]
                peaks[name].append(peak_rss_mb(command))
                print(f"{name:10s} repeat {repeat}: peak RSS {peaks[name][-1]:8.0f} MB", flush=True)
    medians = {name: statistics.median(values) for name, values in peaks.items()}
    data_mb = {"uint8": SIZE / 1e6, "float32": 4 * SIZE / 1e6, "uint8_1000": SIZE / 50 / 1e6}
    for name, median in medians.items():
        print(f"{name:10s}: data {data_mb[name]:6.0f} MB on disk, peak RSS median {median:6.0f} MB "
              f"(MLP 3072-200-200-50 with a Gaussian decoder, batch 100, {args.epochs} epoch(s))")
    print(f"ratio float32 / uint8 peak RSS: {medians['float32'] / medians['uint8']:.2f}; above the 1,000-image run: "
          f"uint8 +{medians['uint8'] - medians['uint8_1000']:.0f} MB, float32 "
          f"+{medians['float32'] - medians['uint8_1000']:.0f} MB")


if __name__ == "__main__":
    main()
