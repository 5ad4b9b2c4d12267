"""The ``examples_per_second`` that ``vae-jax train`` writes, against the plain JAX loop, in one run.

Each round trains one more epoch of the real training loop (``train_and_evaluate``: binarized MNIST,
50,000 images, the 784-200-200-50 model, batch 100, resuming its run folder) and reads that epoch's
``examples_per_second`` from ``metrics.jsonl`` (the epoch's shuffle and training, as the loop times
them), then times a 500-step epoch of the plain JAX + optax loop of ``train_throughput.py``. Medians.

    python benchmarks/train_loop.py --manual-dir ../shared/data [--rounds 7]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from train_throughput import BATCH, plain_jax_runner

from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.data import DataOptions
from vae_jax.train_loop import train_and_evaluate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manual-dir", required=True, help="folder with the binarized MNIST files (../shared/data)")
    p.add_argument("--data-dir", help="prepared TFDS data (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    options = DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir)
    steps = 50_000 // BATCH
    plain = plain_jax_runner(steps)
    loop_rates, plain_rates = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for epoch in range(1, args.rounds + 2):  # the first epoch is a warm-up
            config = ExperimentConfig(ModelConfig(), TrainConfig(epochs=epoch, keep_checkpoints=1))
            train_and_evaluate(config, workdir, options, progress=False, log=lambda *_: None)
            record = json.loads((Path(workdir) / "metrics.jsonl").read_text().splitlines()[-1])
            start = time.perf_counter()
            plain()
            if epoch > 1:
                loop_rates.append(record["examples_per_second"])
                plain_rates.append(steps * BATCH / (time.perf_counter() - start))
    loop, plain_rate = statistics.median(loop_rates), statistics.median(plain_rates)
    print(f"vae-jax train (its metrics.jsonl): {loop:8.0f} examples/s  (epochs: "
          + ", ".join(f"{r:.0f}" for r in loop_rates) + ")")
    print(f"plain JAX loop, 500 steps:         {plain_rate:8.0f} examples/s  (rounds: "
          + ", ".join(f"{r:.0f}" for r in plain_rates) + ")")
    print(f"RATIO vae-jax train / plain-jax examples/s: {loop / plain_rate:.2f}  (target >= 1)")


if __name__ == "__main__":
    main()
