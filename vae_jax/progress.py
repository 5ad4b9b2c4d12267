"""Progress from inside compiled estimators: a host callback per chunk of samples, feeding a tqdm bar.

A split of a few images with millions of samples is one batch, so a bar over examples would sit at 0/1
for the whole run; :func:`vae_jax.evaluate.evaluate` then counts chunks instead.
"""

from typing import Callable

import jax
from tqdm import tqdm

from vae_jax.types import Array


def report_chunk(on_chunk: Callable[[], None] | None, start: Array):
    """Calls ``on_chunk()`` on the host when the chunk starting at ``start`` runs (nothing if it is None).
    ``start`` is the same for every example of a vmapped batch, so the call happens once per chunk."""
    if on_chunk is not None:
        jax.debug.callback(lambda _: on_chunk(), start)


class ChunkBar:
    """A tqdm bar over the sample chunks of one batch; :meth:`tick` is the ``on_chunk`` to compile in."""

    def __init__(self):
        self._bar = None

    def tick(self):
        if self._bar is not None and self._bar.n < self._bar.total:  # (several devices may each report)
            self._bar.update(1)

    def open(self, total: int, desc: str) -> tqdm:
        self._bar = tqdm(total=total, desc=desc, unit="chunk", leave=False)
        return self._bar
