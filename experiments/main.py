"""The main job: a short train-and-evaluate run on binarized MNIST, end to end.

Trains the 784-200-200-50 tanh Bernoulli VAE for a few epochs, evaluates the ELBO, importance
sampling and the naive estimator on part of the test set, and draws sample and reconstruction
images. Every step is a ``vae-jax`` command, printed before it runs, so it can be repeated by hand.

    python experiments/main.py --manual-dir ../shared/data [--workdir runs/main] [--epochs 5]
"""

import argparse
import shlex
import time
from pathlib import Path

from vae_jax.cli import exit_process
from vae_jax.cli import main as vae_jax
from vae_jax.rundir import RunFolder


def run(argv: list[str]):
    print(f"\n$ vae-jax {shlex.join(argv)}", flush=True)
    code = vae_jax(argv)
    if code != 0:
        exit_process(code)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workdir", default="runs/main", help="run folder")
    parser.add_argument("--manual-dir", help="folder with the binarized MNIST files (see README)")
    parser.add_argument("--data-dir", help="where prepared datasets are cached")
    parser.add_argument("--download", action="store_true", help="download the dataset files")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--test-examples", type=int, default=500, help="test examples to evaluate")
    parser.add_argument("--num-samples", type=int, default=1000, help="K for importance sampling")
    parser.add_argument("--naive-samples", type=int, default=10_000, help="M for the naive estimator")
    args = parser.parse_args(argv)
    data = (["--manual-dir", args.manual_dir] if args.manual_dir else []) + \
           (["--data-dir", args.data_dir] if args.data_dir else []) + (["--download"] if args.download else [])
    start = time.perf_counter()
    run(["train", "--workdir", args.workdir, "--epochs", str(args.epochs), *data])
    split = f"test[:{args.test_examples}]"
    run(["evaluate", "--workdir", args.workdir, "--split", split,
         "--num-samples", str(args.num_samples), "--naive-samples", str(args.naive_samples), *data])
    run(["sample", "--workdir", args.workdir])
    run(["reconstruct", "--workdir", args.workdir, *data])
    workdir = Path(args.workdir)
    print(f"\ndone in {time.perf_counter() - start:.0f} s. Results in {workdir}/:")
    folder = RunFolder(workdir)
    for path in (folder.config_path, folder.metrics_path, folder.result_path(split), workdir / "samples.png",
                 workdir / "reconstructions.png", folder.checkpoints_dir):
        print(f"  {path}")


if __name__ == "__main__":
    main()
