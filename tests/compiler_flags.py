"""XLA flags of the test run (set in conftest.py, inherited by every process the tests start)."""

import os

FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
"""LLVM at -O0, without its expensive passes: the tests' programs compile faster and run slower (see conftest)."""


def default_compiler_env() -> dict:
    """The environment with XLA's default optimization, for a process whose results must be bit for bit those
    a user gets (a committed number): the optimization level changes the last bits of float sums."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f not in FAST_COMPILE_FLAGS]
    return {**os.environ, "XLA_FLAGS": " ".join(flags)}
