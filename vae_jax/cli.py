"""The ``vae-jax`` command line: train, evaluate, sample, reconstruct.

Errors in the user's input end with a one-line message on stderr and exit code 2, never a traceback.
"""

import argparse
import json
import sys

from vae_jax import commands
from vae_jax.checkpoint import CheckpointError
from vae_jax.config import ACTIVATIONS, LIKELIHOODS, OBJECTIVES, OUTPUT_BIAS_INITS, SCHEDULES
from vae_jax.data import DATASETS
from vae_jax.evaluate import ESTIMATORS
from vae_jax.tfds_builders import DataFileError
from vae_jax.train_loop import ConfigMismatchError, NonFiniteError

# OSError covers missing paths, no write permission, a file where a folder should be, and a full disk.
USER_ERRORS = (ValueError, DataFileError, ConfigMismatchError, CheckpointError, NonFiniteError, OSError)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _hidden(text: str) -> tuple[int, ...]:
    try:
        return tuple(_positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive widths such as 200,200, got {text!r}") from None


def _sigma(text: str):
    return "learned" if text == "learned" else _positive_float(text)


def _estimators(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown estimator(s) {unknown}; choose from {','.join(ESTIMATORS)}")
    return names


def _data_args(p: argparse.ArgumentParser):
    p.add_argument("--manual-dir", help="folder holding the dataset files as TFDS downloads them "
                   "(plain or .gz); default $TFDS_DATA_DIR/downloads/manual")
    p.add_argument("--data-dir", help="where prepared datasets are stored; default $TFDS_DATA_DIR or ~/tensorflow_datasets")
    p.add_argument("--download", action="store_true", help="download missing dataset files (checksum-verified)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vae-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE (resumes if WORKDIR holds a checkpoint)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--workdir", required=True, help="run folder: config.json, metrics.jsonl, checkpoints/")
    t.add_argument("--dataset", default="binarized_mnist", choices=DATASETS, help="training data")
    t.add_argument("--train-split", help="TFDS split to train on (default: the dataset's own)")
    t.add_argument("--valid-split", help="TFDS split for validation (default: the dataset's own)")
    t.add_argument("--binarize", action="store_true", help="dynamic binarization of grey levels, redrawn every step")
    _data_args(t)
    t.add_argument("--epochs", type=_positive_int, default=10, help="epochs to train in total")
    t.add_argument("--latent-dim", type=_positive_int, default=50, help="dimension K of z")
    t.add_argument("--hidden", type=_hidden, default=(200, 200), help="hidden widths, comma-separated")
    t.add_argument("--activation", choices=ACTIVATIONS, default="tanh", help="hidden activation")
    t.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli", help="decoder p(x|z)")
    t.add_argument("--sigma", type=_sigma, default=1.0,
                   help="Gaussian decoder std (a number), or 'learned' for a learned per-pixel sigma")
    t.add_argument("--objective", choices=OBJECTIVES, default="elbo", help="training objective")
    t.add_argument("--num-samples", type=_positive_int, default=1, help="z samples per example (k for iwae)")
    t.add_argument("--beta", type=float, default=1.0, help="KL weight of the elbo objective")
    t.add_argument("--kl-warmup-epochs", type=int, default=0, help="ramp beta linearly from 0 over these epochs")
    t.add_argument("--batch-size", type=_positive_int, default=100, help="examples per step")
    t.add_argument("--learning-rate", type=_positive_float, default=1e-3, help="Adam step size")
    t.add_argument("--schedule", choices=SCHEDULES, default="constant", help="learning-rate schedule")
    t.add_argument("--decay-rate", type=_positive_float, default=0.1, help="final factor of the exponential schedule")
    t.add_argument("--adam-eps", type=_positive_float, default=1e-8, help="epsilon of Adam (Burda et al.: 1e-4)")
    t.add_argument("--output-bias-init", choices=OUTPUT_BIAS_INITS, default="zero",
                   help="decoder output bias: zero, or the logit of the training pixel means")
    t.add_argument("--grad-clip", type=_positive_float, default=None, help="clip gradients to this global norm")
    t.add_argument("--checkpoint-every", type=_positive_int, default=1, help="save every N epochs (and at the end)")
    t.add_argument("--keep-checkpoints", type=_positive_int, default=3, help="latest checkpoints kept (plus the best)")
    t.add_argument("--seed", type=int, default=0, help="base random seed")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--coordinator-address", help="multi-process run: HOST:PORT of process 0 "
                   "(jax.distributed.initialize); every process runs the same command")
    t.add_argument("--num-processes", type=_positive_int, default=1, help="multi-process run: number of processes")
    t.add_argument("--process-id", type=int, default=0, help="multi-process run: this process's index")

    e = sub.add_parser("evaluate", help="estimate log p(x) with the ELBO, importance sampling and the naive estimator",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--workdir", required=True, help="a trained run folder")
    e.add_argument("--split", default="test", help="TFDS split to evaluate, e.g. test or test[:1000]")
    e.add_argument("--estimators", type=_estimators, default=ESTIMATORS, help="comma-separated subset of "
                   + ",".join(ESTIMATORS))
    e.add_argument("--num-samples", type=_positive_int, default=5000, help="K for importance sampling")
    e.add_argument("--naive-samples", type=_positive_int, default=100_000, help="M for the naive estimator")
    e.add_argument("--elbo-samples", type=_positive_int, default=10, help="z samples per example for the ELBO")
    e.add_argument("--chunk-size", type=_positive_int, default=None,
                   help="samples evaluated at once, bounding memory (default: 250 importance, 2000 naive)")
    e.add_argument("--max-examples", type=_positive_int, help="evaluate only the first N examples of the split")
    e.add_argument("--checkpoint", choices=("latest", "best"), default="latest", help="which checkpoint")
    e.add_argument("--seed", type=int, default=0, help="seed of the estimators' randomness")
    _data_args(e)

    for name, what, default in (("sample", "draw x ~ p(x|z), z ~ N(0, I), and save a grid", "samples.png"),
                                ("reconstruct", "encode and decode test images, save originals beside reconstructions",
                                 "reconstructions.png")):
        s = sub.add_parser(name, help=what, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        s.add_argument("--workdir", required=True, help="a trained run folder")
        s.add_argument("--num", type=_positive_int, default=64 if name == "sample" else 32, help="images")
        s.add_argument("--output", default=default, help="PNG path (relative paths go inside WORKDIR)")
        s.add_argument("--checkpoint", choices=("latest", "best"), default="latest", help="which checkpoint")
        s.add_argument("--seed", type=int, default=0, help="random seed")
        if name == "reconstruct":
            s.add_argument("--split", default="test", help="TFDS split the images come from")
            _data_args(s)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = getattr(commands, args.command)(args)
    except USER_ERRORS as err:
        hint = " (check the path, and that you may write there and the disk has room)" if isinstance(err, OSError) else ""
        print(f"vae-jax {args.command}: error: {err}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vae-jax {args.command}: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2) if isinstance(result, dict) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
