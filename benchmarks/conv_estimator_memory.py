"""Memory each estimator's compiled batch needs for a convolutional VAE on 32 x 32 x 3 images, at the default
chunk sizes and batch sizes of `vae-jax evaluate` (XLA's own accounting: temporaries, arguments, outputs).

The model: `--architecture conv` with the default channels (32, 64), hidden 200, K = 50, a Gaussian decoder;
the numbers do not depend on how many samples are drawn in total (they are drawn a chunk at a time).

    python benchmarks/conv_estimator_memory.py
"""

import jax
import jax.numpy as jnp

from vae_jax import VAE, ModelConfig
from vae_jax.evaluate import SPEC, EvalConfig, make_estimator_fns, padded_batch_size


def main():
    vae = VAE(ModelConfig(data_shape=(32, 32, 3), architecture="conv", likelihood="gaussian", sigma=0.1))
    params = vae.init(jax.random.key(0))
    config = EvalConfig(estimators=("elbo", "importance", "naive", "ais"))
    fns = make_estimator_fns(vae, params, jax.random.key(1), config)
    for name in config.estimators:
        spec = SPEC[name]
        batch = padded_batch_size(spec.batch_size, 10_000)
        keys = jax.ShapeDtypeStruct((batch,), jax.random.key(0).dtype)
        xs = jax.ShapeDtypeStruct((batch, vae.config.data_dim), jnp.float32)
        memory = fns[name].lower(keys, xs).compile().memory_analysis()
        print(f"{name:11s} {batch:5d} examples at once, chunk {spec.chunk_size or '-':>5}: temporaries "
              f"{memory.temp_size_in_bytes / 1e6:7.1f} MB, arguments {memory.argument_size_in_bytes / 1e6:5.1f} MB, "
              f"outputs {memory.output_size_in_bytes / 1e6:5.2f} MB", flush=True)


if __name__ == "__main__":
    main()
