"""3 x 3, stride-2 convolutions of one example as matrix products (the conv architecture's layers).

On a CPU, XLA's convolutions ran at 8 GFLOP/s in the conv VAE's training step, one eighth of PyTorch's
oneDNN; written as a patch matrix times the kernel ("im2col": nine strided slices, whose gradient is nine
pads) and the transposed convolution as one product for all nine taps whose parts are placed by padding
("col2im"), the same step ran at PyTorch's speed (``benchmarks/conv_throughput.py``). The results equal
``lax.conv_general_dilated`` / ``lax.conv_transpose`` with SAME padding (to float rounding; tested), and the
modules hold the parameters of ``nn.Conv`` / ``nn.ConvTranspose`` under the same names.
"""

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from vae_jax.types import Array


def _same_padding(size: int) -> tuple[int, int]:
    """XLA's SAME padding of a 3-wide window at stride 2: out = ceil(size / 2), the total split low-first."""
    total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
    return total // 2, total - total // 2


def conv_stride2(x: Array, kernel: Array) -> Array:
    """x [H, W, Cin] * kernel [3, 3, Cin, Cout], stride 2, SAME -> [ceil(H/2), ceil(W/2), Cout].

    The [h, w, 9 Cin] matrix of patches, (kh, kw, Cin)-ordered, times the kernel as a [9 Cin, Cout] matrix.
    """
    padded = jnp.pad(x, (_same_padding(x.shape[0]), _same_padding(x.shape[1]), (0, 0)))
    out_h, out_w = (padded.shape[0] - 3) // 2 + 1, (padded.shape[1] - 3) // 2 + 1
    patches = jnp.concatenate([padded[i:i + 2 * out_h - 1:2, j:j + 2 * out_w - 1:2]
                               for i in range(3) for j in range(3)], axis=-1)
    return patches @ kernel.reshape(-1, kernel.shape[-1])


def conv_transpose_stride2(x: Array, kernel: Array) -> Array:
    """Transposed convolution x [h, w, Cin], kernel [3, 3, Cin, Cout], stride 2, SAME -> [2h, 2w, Cout], as
    ``lax.conv_transpose(x, kernel, (2, 2), "SAME")`` computes it (its kernel is not flipped).

    One product gives every tap of every pixel, [h, w, 3, 3, Cout]; tap (ki, kj) of pixel (i, j) lands on
    output (2i + 2 - ki, 2j + 2 - kj): interior padding spreads the pixels 2 apart, low padding shifts them,
    and the nine placed parts are summed and cropped to 2h x 2w.
    """
    h, w, c_in = x.shape
    taps = (x @ jnp.transpose(kernel, (2, 0, 1, 3)).reshape(c_in, -1)).reshape(h, w, 3, 3, kernel.shape[-1])
    zero = jnp.zeros((), taps.dtype)
    placed = sum(lax.pad(taps[:, :, ki, kj], zero, ((2 - ki, 1 + ki, 1), (2 - kj, 1 + kj, 1), (0, 0, 0)))
                 for ki in range(3) for kj in range(3))
    return placed[: 2 * h, : 2 * w]


class Conv(nn.Module):
    """``nn.Conv(features, (3, 3), strides=2, padding="SAME")`` of one example [H, W, Cin], by
    :func:`conv_stride2`: parameters ``kernel`` [3, 3, Cin, features] (LeCun normal) and ``bias``."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        return conv_stride2(x, kernel) + self.param("bias", nn.initializers.zeros, (self.features,))


class ConvTranspose(nn.Module):
    """``nn.ConvTranspose(features, (3, 3), strides=2, padding="SAME")`` of one example [h, w, Cin] -> [2h, 2w,
    features], by :func:`conv_transpose_stride2`, with the same parameters (``bias`` when ``use_bias``)."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        out = conv_transpose_stride2(x, kernel)
        return out + self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else out
