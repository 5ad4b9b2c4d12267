"""The training epoch of this tree against the epoch of earlier commits and the plain JAX loop.

Each ``--against REF`` loads ``vae_jax/train_step.py`` as it was at git commit REF (the rest of vae-jax
is this tree's) and times its epoch beside this tree's, the same epoch with the check on every step
(``check_every_step=True``), and the plain JAX + optax loop of ``train_throughput.py``, alternating
rounds; medians, and each loop as a fraction of the plain loop. The commits of issue 11 that changed the
epoch, oldest first:

    54edb93  per-step noise, finiteness check and ``lax.cond`` every step
    25a9da1  noise drawn a chunk of steps at a time, ahead of the steps
    8784971  optimistic epoch, rerun checked only when its end state is not finite
    32d24f6  updates scaled by a probe so that XLA updates the weights in place (no 1 MB copy a step);
             within noise of 8784971 (+3% and -3% in two pinned runs), so this tree does not keep it

For steadier numbers on a loaded or virtual machine, pin one core and one XLA thread (at batch 20 the
second core adds noise, not speed):

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" taskset -c 1 \\
        python benchmarks/step_variants.py --batch 20 --against 54edb93 --against 25a9da1 --against 8784971
"""

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
from train_throughput import jax_runner, plain_jax_runner, time_alternating


ROOT = Path(__file__).resolve().parent.parent


def train_step_at(ref: str):
    """``vae_jax/train_step.py`` as it was at commit ``ref``, imported as a module of its own."""
    source = subprocess.run(["git", "show", f"{ref}:vae_jax/train_step.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"train_step_{ref}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--steps", type=int, default=0, help="steps per timed epoch (default: 20,000 examples)")
    p.add_argument("--against", action="append", default=[], metavar="REF", help="a git commit to compare")
    args = p.parse_args(argv)
    steps = args.steps or max(20_000 // args.batch, 5)
    runners = {"plain-jax": plain_jax_runner(steps, args.batch),
               "vae-jax": jax_runner(steps, args.batch),
               "vae-jax checked": jax_runner(steps, args.batch, check_every_step=True)}
    for ref in args.against:
        runners[ref] = jax_runner(steps, args.batch, module=train_step_at(ref))
    med = time_alternating(runners, args.rounds)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, batch {args.batch}, {steps} steps, "
          f"medians of {args.rounds} rounds")
    for name, t in med.items():
        print(f"{name:>16}: {steps * args.batch / t:9.0f} examples/s  {t / steps * 1e6:7.1f} us/step  "
              f"{med['plain-jax'] / t:5.3f} of plain-jax")


if __name__ == "__main__":
    sys.exit(main())
