"""The ``vae-jax`` command line: train, evaluate, bdmc, sample, reconstruct.

The options of ``train`` and ``evaluate`` are built from the config dataclasses (their fields, defaults
and help), so each is defined once (:mod:`vae_jax.config`, :class:`vae_jax.evaluate.EvalConfig`).
Mistakes the user can fix end with a one-line message on stderr and exit code 2, never a traceback.
"""

import argparse
import contextlib
import json
import os
import sys

from vae_jax import commands
from vae_jax.cli_options import HelpFormatter, add_config_options, parse_int
from vae_jax.config import ModelConfig, TrainConfig
from vae_jax.errors import UserError
from vae_jax.evaluate import EvalConfig
from vae_jax.signals import signal_of, stop_signals_raise


def _data_args(p: argparse.ArgumentParser, recorded: bool):
    run = "the one the run was trained with, else " if recorded else ""
    p.add_argument("--manual-dir", help="folder holding the dataset files as TFDS downloads them (plain or .gz) "
                   f"(default: {run}$TFDS_DATA_DIR/downloads/manual)")
    p.add_argument("--data-dir", help=f"where prepared datasets are stored (default: {run}$TFDS_DATA_DIR or "
                   "~/tensorflow_datasets)")
    p.add_argument("--download", action="store_true", help="download missing dataset files (checksum-verified), or "
                   "download and prepare a TFDS dataset")
    p.add_argument("--allow-changed-data", action="store_true", help="use an array file that changed since the run "
                   "was made (with a warning) instead of refusing it")


def _checkpoint_arg(p: argparse.ArgumentParser):
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest",
                   help="which checkpoint: the latest, or the best by validation ELBO")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vae-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    parser.subcommands = {}  # name -> its parser, whose usage line an error after parsing prints

    def command(name, help):
        parser.subcommands[name] = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
        return parser.subcommands[name]

    t = command("train", "train a VAE (resumes if WORKDIR holds a checkpoint)")
    t.add_argument("--workdir", required=True, help="run folder: config.json, metrics.jsonl, checkpoints/")
    add_config_options(t, ModelConfig, choices={"architecture": ("mlp", "conv")})
    add_config_options(t, TrainConfig)
    _data_args(t, recorded=False)
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files in WORKDIR/tensorboard")
    t.add_argument("--tensorboard-images-every", type=lambda s: parse_int(s, True), default=10, metavar="N",
                   help="TensorBoard: a grid of samples every N epochs (and at the last)")
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
    command_parser = parser.subcommands[args.command]
    try:
        commands.check_options(args)
    except UserError as err:
        command_parser.error(str(err))  # exit 2 with the command's usage, before anything is read or written
    try:
        with stop_signals_raise():
            commands.start_backend(args)
            result = getattr(commands, args.command)(args)
    except (UserError, OSError) as err:
        # OSError: missing paths, no write permission, a file where a folder should be, a full disk.
        hint = " (check the path, and that you may write there and the disk has room)" if isinstance(err, OSError) else ""
        print(f"vae-jax {args.command}: error: {err}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or Interrupted by SIGTERM / SIGHUP
        stop = signal_of(interrupt)
        done = "" if args.command == "train" else "; nothing was written"
        with contextlib.suppress(OSError):  # after a hangup there may be no terminal to tell
            print(f"vae-jax {args.command}: interrupted by {stop.name}{done}", file=sys.stderr)
        return 128 + stop
    if result is not None:
        print(json.dumps(result, indent=2) if isinstance(result, dict) else result)
    return 0


def exit_process(code: int):
    """Ends the program with ``code``. After a stop signal (codes above 128) it skips the interpreter's
    teardown: the signal may have cut JAX short in the middle of compiling or running, and tearing down
    XLA's threads under that work can crash the process (a segfault instead of the promised exit code).
    After an error (code 2) too: a save that failed (a full disk) can leave Orbax's background threads to
    report, during teardown, that their event loop is closed, a traceback after the one-line message.
    Everything vae-jax writes is complete by then (results whole, checkpoints saved, logs closed)."""
    if code > 128 or code == 2:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def run():
    """The ``vae-jax`` program (the console script and ``python -m vae_jax``)."""
    exit_process(main())


if __name__ == "__main__":
    run()
