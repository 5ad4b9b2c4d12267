"""vae-jax's convolution layers (matrix products of strided slices) against XLA's convolutions."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vae_jax import conv

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("h, w, c_in, c_out", [(28, 28, 1, 4), (7, 7, 3, 2), (9, 6, 2, 3), (2, 3, 1, 1)])
def test_layers_equal_xla_convolutions_and_their_gradients(h, w, c_in, c_out):
    """Values and gradients (w.r.t. input and kernel) equal lax's SAME stride-2 convolution and transposed
    convolution, for even, odd and tiny sizes, to float32 rounding of sums of 9 Cin products."""
    x = jax.random.normal(jax.random.key(0), (h, w, c_in))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, c_in, c_out))
    pairs = [(conv.conv_stride2, lambda x, k: lax.conv_general_dilated(x[None], k, (2, 2), "SAME",
                                                                       dimension_numbers=NHWC)[0]),
             (conv.conv_transpose_stride2, lambda x, k: lax.conv_transpose(x[None], k, (2, 2), "SAME",
                                                                           dimension_numbers=NHWC)[0])]
    for ours, xla in pairs:
        np.testing.assert_allclose(ours(x, kernel), xla(x, kernel), rtol=1e-5, atol=1e-5)
        loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
        for a, b in zip(jax.grad(loss(ours), (0, 1))(x, kernel), jax.grad(loss(xla), (0, 1))(x, kernel)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_modules_hold_flax_parameters_and_give_flax_results():
    """The modules draw the same parameters as nn.Conv / nn.ConvTranspose under the same names and key, and
    give the same outputs (an old conv checkpoint loads into them)."""
    x = jax.random.normal(jax.random.key(2), (10, 10, 3))
    for ours, flax_layer in [(conv.Conv(5), nn.Conv(5, (3, 3), strides=(2, 2), padding="SAME")),
                             (conv.ConvTranspose(5, use_bias=False),
                              nn.ConvTranspose(5, (3, 3), strides=(2, 2), padding="SAME", use_bias=False))]:
        params, reference = ours.init(jax.random.key(3), x), flax_layer.init(jax.random.key(3), x)
        assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(reference)
        for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(reference)):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(ours.apply(params, x), flax_layer.apply(params, x), rtol=1e-5, atol=1e-5)
