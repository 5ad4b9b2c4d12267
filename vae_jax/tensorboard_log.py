"""Training curves and sample grids as TensorBoard event files, beside ``metrics.jsonl``.

Written with tensorboardX, which needs neither TensorFlow nor PyTorch (flax's ``flax.metrics.tensorboard``
and clu's writers import TensorFlow). ``tensorboard --logdir WORKDIR/tensorboard`` shows them.

* Scalars: every number of an epoch's metrics record, at step = the epoch, as ``train/elbo``,
  ``valid/kl``, ``speed/examples_per_second``, ... (the same values as ``metrics.jsonl``).
* Images: a grid of mean images E[x|z] of fixed latent samples z (the same z every time, so the grids
  show the model changing), every ``images_every`` epochs and at the last.
* Resuming: the writer starts with TensorBoard's purge marker at the first epoch trained again, so the
  events a stopped run wrote after its last checkpoint are hidden, not shown twice.
"""

from pathlib import Path

import numpy as np

from vae_jax.images import tile

SPEED_KEYS = ("seconds", "examples_per_second")


def scalar_tag(key: str) -> str | None:
    """The TensorBoard tag of a metrics key: ``train_elbo`` -> ``train/elbo``, ``seconds`` -> ``speed/seconds``;
    None for the keys that index the record (``epoch``, ``step``)."""
    if key in ("epoch", "step"):
        return None
    if key in SPEED_KEYS:
        return f"speed/{key}"
    split, _, name = key.partition("_")
    return f"{split}/{name}" if name else key


class TensorBoardLog:
    """Event files of one run (``logdir``), opened to continue after ``resumed_epoch`` completed epochs."""

    def __init__(self, logdir: str | Path, resumed_epoch: int, images_every: int = 10):
        from tensorboardX import SummaryWriter  # imported here: only training writes curves

        self.images_every = images_every
        # purge_step: TensorBoard discards events at epochs >= it from earlier files of this folder.
        self._writer = SummaryWriter(str(logdir), purge_step=resumed_epoch + 1)

    def wants_images(self, epoch: int, last_epoch: int) -> bool:
        return epoch % self.images_every == 0 or epoch == last_epoch

    def scalars(self, record: dict):
        """Every finite number of an epoch's metrics ``record`` at step ``record["epoch"]``."""
        for key, value in record.items():
            tag = scalar_tag(key)
            if tag is not None and isinstance(value, (int, float)) and np.isfinite(value):
                self._writer.add_scalar(tag, value, record["epoch"])

    def image_grid(self, tag: str, images: np.ndarray, epoch: int, num_cols: int = 8):
        """[N, H, W, C] images in [0, 1] (C = 1 or 3) as one grey or colour grid image."""
        images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
        grid = tile(images[..., 0] if images.shape[-1] == 1 else images, num_cols)
        self._writer.add_image(tag, grid, epoch, dataformats="HW" if grid.ndim == 2 else "HWC")

    def close(self):
        self._writer.close()
