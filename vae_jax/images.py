"""Image grids of samples and reconstructions, written as PNG with matplotlib."""

from pathlib import Path

import numpy as np

from vae_jax.errors import ConfigError

MNIST_SHAPE = (28, 28)  # the shape of every example the models see today (data_dim 784)


def tile(images: np.ndarray, num_cols: int, pad: int = 1) -> np.ndarray:
    """[N, H, W] images in [0, 1] -> one [rows * (H + pad) + pad, cols * (W + pad) + pad] grid.

    NaN pixels (blank cells) are drawn in the background colour.
    """
    n, h, w = images.shape
    rows = -(-n // num_cols)
    grid = np.ones((rows * (h + pad) + pad, num_cols * (w + pad) + pad), np.float32)
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


def save_grid(images: np.ndarray, path: str | Path, num_cols: int = 8, image_shape=MNIST_SHAPE, scale: int = 3):
    """Writes [N, D] images (D = H * W, values in [0, 1], NaN for blank) as a grey PNG grid,
    ``scale`` pixels per pixel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_png_path(path)
    grid = tile(np.clip(np.asarray(images, np.float32), 0, 1).reshape(-1, *image_shape), num_cols)
    grid = np.kron(grid, np.ones((scale, scale), np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0)
    return path
