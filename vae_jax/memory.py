"""What a compiled computation will ask of memory, checked before it runs.

XLA knows, once a function is compiled, how much memory its arguments, outputs and temporaries take
(``compiled.memory_analysis()``). Compiling costs no memory and the compiled function is cached, so the
commands compile what they will run, compare its needs with the memory the device has free, and refuse
with the option to change before any work, instead of failing (or aborting in C++) minutes later.
"""

import os

import jax

from vae_jax.errors import ResourceError

GIB = 2**30
USABLE_FRACTION = 0.9  # of the free memory, leaving room for what runs beside the computation


def _host_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (free memory plus reclaimable caches), else free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes(device=None) -> int | None:
    """Free memory of ``device`` (default: the first device) in bytes, or None where it cannot be read.

    An accelerator reports its own (``memory_stats``: limit - in use); CPU devices share the host's RAM.
    """
    device = device or jax.local_devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # not every backend implements it
        pass
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return _host_available_bytes()


def required_bytes(compiled, *, arguments: bool = True) -> int | None:
    """Outputs + temporaries (+ arguments, unless they already sit in memory) of a compiled computation, per
    device; None if XLA does not say."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes * arguments + m.output_size_in_bytes + m.temp_size_in_bytes)
    except Exception:
        return None


def tree_bytes(tree) -> int:
    """Bytes of the arrays (or abstract ``jax.ShapeDtypeStruct`` values) of a pytree."""
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree))


def check_bytes_fit(need: int, what: str, advice: str):
    """Raises :class:`ResourceError` when ``need`` bytes exceed the usable free memory."""
    free = available_bytes()
    if free is not None and need > USABLE_FRACTION * free:
        raise ResourceError(f"{what} needs {need / GIB:,.1f} GiB of memory at once, more than the "
                            f"{free / GIB:,.1f} GiB free; {advice}.")


def check_fits(compiled, what: str, advice: str, *, arguments_resident: bool = False):
    """Raises :class:`ResourceError` when ``compiled`` needs more than the usable free memory.

    Args:
      compiled: a ``jax.stages.Compiled`` (``jax.jit(f).lower(...).compile()``).
      what: what the computation is, for the message (``"importance sampling, 64 examples x 250 samples"``).
      advice: what to change (``"lower --chunk-size"``).
      arguments_resident: the arguments already exist (and so are not part of the free memory).
    """
    need = required_bytes(compiled, arguments=not arguments_resident)
    if need is None:
        return
    if jax.local_devices()[0].platform == "cpu":
        need *= jax.local_device_count()  # simulated CPU devices share the host's memory
    check_bytes_fit(need, what, advice)
