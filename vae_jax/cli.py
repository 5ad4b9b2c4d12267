"""The ``vae-jax`` command line: train, evaluate, bdmc, sample, reconstruct.

The options of ``train`` and ``evaluate`` are built from the config dataclasses (their fields, defaults
and help), so each is defined once (:mod:`vae_jax.config`, :class:`vae_jax.evaluate.EvalConfig`).
Mistakes the user can fix end with a one-line message on stderr and exit code 2, never a traceback.
"""

import argparse
import json
import sys

from vae_jax import commands
from vae_jax.cli_options import HelpFormatter, add_config_options, parse_int
from vae_jax.config import ModelConfig, TrainConfig
from vae_jax.data import DATASETS
from vae_jax.errors import Interrupted, UserError
from vae_jax.evaluate import EvalConfig


def _data_args(p: argparse.ArgumentParser, recorded: bool):
    run = "the one the run was trained with, else " if recorded else ""
    p.add_argument("--manual-dir", help="folder holding the dataset files as TFDS downloads them (plain or .gz) "
                   f"(default: {run}$TFDS_DATA_DIR/downloads/manual)")
    p.add_argument("--data-dir", help=f"where prepared datasets are stored (default: {run}$TFDS_DATA_DIR or "
                   "~/tensorflow_datasets)")
    p.add_argument("--download", action="store_true", help="download missing dataset files (checksum-verified)")


def _checkpoint_arg(p: argparse.ArgumentParser):
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest",
                   help="which checkpoint: the latest, or the best by validation ELBO")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vae-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    command = lambda name, help: sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    t = command("train", "train a VAE (resumes if WORKDIR holds a checkpoint)")
    t.add_argument("--workdir", required=True, help="run folder: config.json, metrics.jsonl, checkpoints/")
    add_config_options(t, ModelConfig)
    add_config_options(t, TrainConfig, choices={"dataset": DATASETS})
    _data_args(t, recorded=False)
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--coordinator-address", help="multi-process run: HOST:PORT of process 0 "
                   "(jax.distributed.initialize); every process runs the same command")
    t.add_argument("--num-processes", type=lambda s: parse_int(s, True), default=1,
                   help="multi-process run: number of processes")
    t.add_argument("--process-id", type=lambda s: parse_int(s, False), default=0,
                   help="multi-process run: this process's index")

    e = command("evaluate", "estimate log p(x) with the ELBO, importance sampling and the naive estimator")
    e.add_argument("--workdir", required=True, help="a trained run folder")
    add_config_options(e, EvalConfig)
    _checkpoint_arg(e)
    e.add_argument("--output", help="result JSON (default: WORKDIR/eval_<split>.json; relative paths go inside "
                   "WORKDIR)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    _data_args(e, recorded=True)

    b = command("bdmc", "bidirectional Monte Carlo: forward and reverse AIS on data simulated from the model; "
                        "the gap certifies the AIS settings")
    b.add_argument("--workdir", required=True, help="a trained run folder")
    b.add_argument("--num-examples", type=lambda t: parse_int(t, True), default=100,
                   help="examples simulated from the model")
    add_config_options(b, EvalConfig, only=commands.AIS_OPTIONS)
    _checkpoint_arg(b)
    b.add_argument("--output", help="result JSON (default: WORKDIR/bdmc.json; relative paths go inside WORKDIR)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")

    for name, what, default, num in (
            ("sample", "draw z ~ N(0, I) and save a grid of the mean images E[x|z]", "samples.png", 64),
            ("reconstruct", "encode and decode images, save originals beside reconstructions",
             "reconstructions.png", 32)):
        s = command(name, what)
        s.add_argument("--workdir", required=True, help="a trained run folder")
        s.add_argument("--num", type=lambda t: parse_int(t, True), default=num,
                       help=f"images (at most {commands.MAX_IMAGES})")
        s.add_argument("--output", default=default, help="PNG path (relative paths go inside WORKDIR)")
        _checkpoint_arg(s)
        s.add_argument("--seed", type=lambda t: parse_int(t, False), default=0, help="random seed")
        if name == "reconstruct":
            s.add_argument("--split", default="test", help="TFDS split the images come from")
            _data_args(s, recorded=True)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        commands.check_options(args)
    except UserError as err:
        parser.error(f"{args.command}: {err}")  # exit 2 before anything is read or written
    try:
        result = getattr(commands, args.command)(args)
    except (UserError, OSError) as err:
        # OSError: missing paths, no write permission, a file where a folder should be, a full disk.
        hint = " (check the path, and that you may write there and the disk has room)" if isinstance(err, OSError) else ""
        print(f"vae-jax {args.command}: error: {err}{hint}", file=sys.stderr)
        return 2
    except Interrupted as interrupt:
        print(f"vae-jax {args.command}: stopped by a signal", file=sys.stderr)
        return interrupt.exit_code
    except KeyboardInterrupt:
        print(f"vae-jax {args.command}: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2) if isinstance(result, dict) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
