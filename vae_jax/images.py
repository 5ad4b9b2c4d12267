"""Image grids of samples and reconstructions, written as PNG with matplotlib."""

from pathlib import Path

import numpy as np


def tile(images: np.ndarray, num_cols: int, pad: int = 1) -> np.ndarray:
    """[N, H, W] images in [0, 1] -> one [rows * (H + pad) + pad, cols * (W + pad) + pad] grid."""
    n, h, w = images.shape
    rows = -(-n // num_cols)
    grid = np.ones((rows * (h + pad) + pad, num_cols * (w + pad) + pad), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, num_cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = image
    return grid


def save_grid(images: np.ndarray, path: str | Path, num_cols: int = 8, image_shape=(28, 28), scale: int = 3):
    """Writes [N, D] images (D = H * W, values in [0, 1]) as a grey PNG grid, ``scale`` pixels per pixel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = tile(np.clip(np.asarray(images, np.float32), 0, 1).reshape(-1, *image_shape), num_cols)
    grid = np.kron(grid, np.ones((scale, scale), np.float32))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0)
    return path
