"""Image grids of samples and reconstructions, written as PNG with matplotlib."""

from pathlib import Path

import numpy as np

from vae_jax.errors import ConfigError

MNIST_SHAPE = (28, 28)  # the shape of every example the models see today (data_dim 784)


def tile(images: np.ndarray, num_cols: int, pad: int = 1) -> np.ndarray:
    """[N, H, W] or [N, H, W, C] images in [0, 1] -> one [rows * (H + pad) + pad, cols * (W + pad) + pad(, C)] grid.

    NaN pixels (blank cells) are drawn in the background colour (white).
    """
    n, h, w = images.shape[:3]
    rows = -(-n // num_cols)
    grid = np.ones((rows * (h + pad) + pad, num_cols * (w + pad) + pad, *images.shape[3:]), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, num_cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = image
    return np.where(np.isnan(grid), 1.0, grid)


def interleave_rows(originals: np.ndarray, reconstructions: np.ndarray, num_cols: int) -> np.ndarray:
    """[N, D] originals and their [N, D] reconstructions -> cells for a ``num_cols``-wide grid whose rows
    alternate: up to ``num_cols`` originals, then their reconstructions (a short last row is padded
    with blank cells). Returns [2 * rows * num_cols, D]."""
    n, d = originals.shape
    rows = -(-n // num_cols)
    padded = lambda a: np.concatenate([a, np.full((rows * num_cols - n, d), np.nan, np.float32)])
    pairs = np.stack([padded(originals).reshape(rows, num_cols, d), padded(reconstructions).reshape(rows, num_cols, d)], 1)
    return pairs.reshape(-1, d)


def check_png_path(path: str | Path) -> Path:
    """``path`` if it names a PNG file in an existing, writable folder; raises otherwise, before any work."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--output {path} must be a .png file.")
    return path


MAX_GRID_PIXELS = 2**22  # a saved grid is at most ~4 Mpixels (48 MB as float32 RGB) whatever the image size


def max_images(image_shape=MNIST_SHAPE) -> int:
    """How many images of ``image_shape`` one grid may hold: at most 1,024, and about what fits in
    ``MAX_GRID_PIXELS`` at one screen pixel per image pixel (992 of 64 x 64, 63 of 256 x 256; the grid's
    border and a short last row add under 1%)."""
    h, w = image_shape[:2]
    return max(1, min(1024, MAX_GRID_PIXELS // ((h + 1) * (w + 1))))


def save_grid(images: np.ndarray, path: str | Path, num_cols: int = 8, image_shape=MNIST_SHAPE,
              scale: int | None = None):
    """Writes images in [0, 1] (NaN for blank cells) as a PNG grid: grey for one channel, colour for three.

    Args:
      images: [N, D] flattened (reshaped to ``image_shape``), or already [N, H, W] / [N, H, W, C].
      image_shape: (H, W) or (H, W, C) of a flattened example.
      scale: screen pixels per image pixel; default the largest of 1-3 that keeps the grid under
        ``MAX_GRID_PIXELS``, so large images never make a huge file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_png_path(path)
    images = np.clip(np.asarray(images, np.float32), 0, 1)
    if images.ndim == 2:
        images = images.reshape(-1, *image_shape)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == 4 and images.shape[-1] != 3:
        raise ConfigError(f"images with {images.shape[-1]} channels cannot be drawn; grids show 1 (grey) or 3 (RGB).")
    grid = tile(images, num_cols)
    if scale is None:
        scale = max(1, min(3, int((MAX_GRID_PIXELS / (grid.shape[0] * grid.shape[1])) ** 0.5)))
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if grid.ndim == 3:
        plt.imsave(path, grid)
    else:
        plt.imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0)
    return path
