"""Where a training step's time goes: the full step against variants with parts removed.

    python benchmarks/step_breakdown.py
"""
import time
from train_throughput import matmul_rate, model_flops_per_step
import jax, jax.numpy as jnp, optax, numpy as np
import vae_jax as vj
from vae_jax.config import ModelConfig, TrainConfig
from vae_jax.train_step import TrainState, make_train_epoch

steps = 200
vae = vj.VAE(ModelConfig())
xs = jax.random.bernoulli(jax.random.key(1), 0.2, (steps, 100, 784)).astype(jnp.float32)

def timeit(fn, *args):
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(5):
        t = time.perf_counter(); jax.block_until_ready(fn(*args)); ts.append(time.perf_counter() - t)
    return np.median(ts) / steps * 1e3

def epoch_fn(optimizer):
    cfg = TrainConfig()
    state = TrainState.create(vae.init(jax.random.key(0)), optimizer)
    ep = make_train_epoch(vae, cfg, optimizer, steps)
    return lambda: ep(state, xs, jax.random.key(2))

full = timeit(epoch_fn(optax.adam(1e-3)))
sgd = timeit(epoch_fn(optax.sgd(1e-3)))
params = vae.init(jax.random.key(0))
def loss_no_rng(p, x):  # deterministic z = mean: no sampling, same matmuls
    def one(x):
        m, lv = vae.encode(p, x)
        return -vae.log_likelihood(p, x, m) + vj.kl_standard_normal(m, lv)
    return jnp.mean(jax.vmap(one)(x))
@jax.jit
def grads_only(p, xs):
    def body(c, x):
        return c, jax.grad(loss_no_rng)(p, x)
    return jax.lax.scan(body, 0, xs)[1]
g = timeit(grads_only, params, xs)
print(f"ms/step: full Adam step {full:.3f}; with SGD {sgd:.3f} (Adam costs {full - sgd:.3f}); "
      f"gradient only, no sampling/update {g:.3f}; matmuls alone {model_flops_per_step() / matmul_rate() * 1e3:.3f}")
