"""Training throughput of vae-jax against a plain PyTorch loop and against the matmul rate.

The 784-200-200-50 tanh Bernoulli VAE, batch 100, float32, Adam, one-sample ELBO. Each round times one
epoch of ``--steps`` steps of vae-jax (its jitted, scanned epoch), the same steps of a plain JAX + optax
loop of the same model (no vae-jax code), and of a straightforward PyTorch implementation, alternating,
after compilation and warm-up. The matmul rate is measured at the
model's own shapes (the 18 matrix products of a forward and backward pass, jitted). Prints examples/s,
achieved FLOP rates and the ratios (medians over rounds).

    pip install -e ".[bench]"   # adds the CPU build of torch 2.13.0
    python benchmarks/train_throughput.py [--rounds 5] [--steps 200]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.config import ModelConfig, TrainConfig
from vae_jax.models import VAE
from vae_jax import train_step

LAYERS = [(784, 200), (200, 200), (200, 100), (50, 200), (200, 200), (200, 784)]  # encoder, decoder
BATCH = 100


def model_flops_per_step(batch: int = BATCH, samples: int = 1) -> float:
    """Matmul FLOPs of one step: forward 2*B*in*out per layer, backward twice that; the decoder's
    layers run once per sample."""
    return 3 * sum(2 * batch * i * o * (samples if n >= 3 else 1) for n, (i, o) in enumerate(LAYERS))


def matmul_rate(repeats: int = 2000, batch: int = BATCH) -> float:
    """FLOP/s of the step's matrix products alone: forward, input-gradient and weight-gradient shapes."""
    rng = np.random.default_rng(0)
    mats = [(jnp.asarray(rng.normal(size=(batch, i)), jnp.float32), jnp.asarray(rng.normal(size=(i, o)), jnp.float32),
             jnp.asarray(rng.normal(size=(batch, o)), jnp.float32)) for i, o in LAYERS]

    @jax.jit
    def products(mats):  # every product is returned whole, so none can be simplified away
        return [(x @ w, g @ w.T, x.T @ g) for x, w, g in mats]

    jax.block_until_ready(products(mats))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(products(mats))
    return repeats * model_flops_per_step(batch) / (time.perf_counter() - start)


def jax_runner(steps: int, batch: int = BATCH, objective: str = "elbo", samples: int = 1, module=train_step,
               **epoch_kwargs):
    """A call that runs one epoch of ``module.make_train_epoch`` (vae-jax's, or an earlier version of it),
    compiled and warmed up first; ``epoch_kwargs`` go to ``make_train_epoch``."""
    config = TrainConfig(batch_size=batch, objective=objective, num_samples=samples)
    vae = VAE(ModelConfig())
    optimizer = module.make_optimizer(config, steps)
    state = module.TrainState.create(vae.init(jax.random.key(0)), optimizer)
    batches = bernoulli_batches(steps, batch)
    epoch = module.make_train_epoch(vae, config, optimizer, steps, **epoch_kwargs)
    key = jax.random.key(2)
    holder = {"state": state}

    def run():
        holder["state"], metrics = epoch(holder["state"], batches, key)
        jax.block_until_ready(metrics)

    run()  # compile and warm up
    return run


def plain_jax_runner(steps: int, batch: int = BATCH):
    """The same model and step written directly in JAX + optax, no vae-jax code: dicts of weights,
    one-sample ELBO with batch-drawn eps, Adam, one jitted ``lax.scan`` per epoch."""
    sizes = {"enc": [(784, 200), (200, 200), (200, 100)], "dec": [(50, 200), (200, 200), (200, 784)]}
    keys = iter(jax.random.split(jax.random.key(0), 6))
    init = lambda i, o: {"w": jax.random.normal(next(keys), (i, o)) / np.sqrt(i), "b": jnp.zeros(o)}
    params = {name: [init(i, o) for i, o in layers] for name, layers in sizes.items()}

    def mlp(layers, h):
        for layer in layers[:-1]:
            h = jnp.tanh(h @ layer["w"] + layer["b"])
        return h @ layers[-1]["w"] + layers[-1]["b"]

    def loss(params, x, key):
        mean, log_var = jnp.split(mlp(params["enc"], x), 2, axis=-1)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
        logits = mlp(params["dec"], z)
        rec = jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
        return -jnp.mean(rec - kl)

    return plain_epoch_runner(loss, params, bernoulli_batches(steps, batch))


def bernoulli_batches(steps: int, batch: int, dim: int = 784) -> jax.Array:
    return jax.random.bernoulli(jax.random.key(1), 0.2, (steps, batch, dim)).astype(jnp.float32)


def plain_epoch_runner(loss, params, batches):
    """A call that runs one epoch of ``loss(params, x, key)`` with optax's Adam over ``batches`` [S, B, D]: one
    jitted ``lax.scan``, the key of step i ``fold_in(key, i)`` (compiled and warmed up first)."""
    import optax

    optimizer = optax.adam(1e-3)

    @jax.jit
    def epoch(params, opt_state, batches, key):
        def step(carry, inputs):
            params, opt_state = carry
            i, x = inputs
            value, grads = jax.value_and_grad(loss)(params, x, jax.random.fold_in(key, i))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value
        (params, opt_state), values = jax.lax.scan(step, (params, opt_state), (jnp.arange(len(batches)), batches))
        return params, opt_state, jnp.mean(values)

    holder = {"state": (params, optimizer.init(params))}

    def run():
        params, opt_state, value = epoch(*holder["state"], batches, jax.random.key(2))
        holder["state"] = (params, opt_state)
        jax.block_until_ready(value)

    run()
    return run


def torch_runner(steps: int, batch: int = BATCH):
    import torch
    from torch import nn

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # beside JAX's GPU when there is one
    torch.set_float32_matmul_precision("high")  # TF32 on a GPU, as JAX's default; no effect on a CPU
    enc = nn.Sequential(nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 100)).to(device)
    dec = nn.Sequential(nn.Linear(50, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 784)).to(device)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    data = (torch.rand(steps, batch, 784) < 0.2).float().to(device)

    return torch_epoch_runner(enc, dec, opt, data, device)


def torch_epoch_runner(encode, decode, opt, data, device: str = "cpu"):
    """A call that runs one epoch of the one-sample Bernoulli ELBO step in PyTorch over ``data`` [S, B, ...]:
    ``encode(x)`` -> [B, 2K], ``decode(z)`` -> logits [B, D] (warmed up first)."""
    import torch
    from torch import nn

    def step(x):
        mean, log_var = encode(x).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        logits = decode(z)
        rec = -nn.functional.binary_cross_entropy_with_logits(logits, x.reshape(len(x), -1), reduction="none").sum(-1)
        kl = 0.5 * (torch.exp(log_var) + mean**2 - 1 - log_var).sum(-1)
        loss = -(rec - kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def run():
        for i in range(len(data)):
            step(data[i])
        if device == "cuda":
            torch.cuda.synchronize()

    run()
    return run


def time_alternating(runners: dict, rounds: int) -> dict:
    """Median seconds per call of each runner, calling them in turn so drift and load hit all alike."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=200, help="steps per timed epoch")
    p.add_argument("--batch-sizes", default="", help="also time the three loops at these batch sizes, "
                   "e.g. 20,50,100,200,500,1000 (each with steps * 100 / batch steps)")
    p.add_argument("--iwae", default="", help="also time vae-jax's IWAE objective with these k, e.g. 1,5,50")
    p.add_argument("--check-every-step", action="store_true", help="time vae-jax's epoch with the finiteness "
                   "check on every step (its fallback), not the optimistic epoch")
    p.add_argument("--skip-with", choices=("cond", "select"), help="how a checked epoch skips a non-finite step "
                   "(default: cond on a CPU, select on a GPU)")
    args = p.parse_args(argv)
    import torch

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} on "
          + (torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"))
    checks = dict(skip_with=args.skip_with, check_every_step=args.check_every_step)
    runners = {"vae-jax": jax_runner(args.steps, **checks), "plain-jax": plain_jax_runner(args.steps),
               "pytorch": torch_runner(args.steps)}
    rate = matmul_rate()
    med = time_alternating(runners, args.rounds)
    flops = model_flops_per_step()
    for name, t in med.items():
        print(f"{name:>9}: {args.steps * BATCH / t:10.0f} examples/s   {args.steps * flops / t / 1e9:6.1f} GFLOP/s (model matmuls)")
    print(f"  matmul rate at the model's shapes: {rate / 1e9:.1f} GFLOP/s")
    print(f"RATIO vae-jax / plain-jax examples/s: {med['plain-jax'] / med['vae-jax']:.2f}  (target >= 1)")
    print(f"RATIO vae-jax / pytorch examples/s: {med['pytorch'] / med['vae-jax']:.2f}  (target >= 2)")
    print(f"RATIO vae-jax achieved / matmul rate: {args.steps * flops / med['vae-jax'] / rate:.2f}  (target >= 0.60)")
    for batch in [int(b) for b in args.batch_sizes.split(",") if b]:
        steps = max(args.steps * BATCH // batch, 5)
        med = time_alternating({"vae-jax": jax_runner(steps, batch, **checks), "plain-jax": plain_jax_runner(steps, batch),
                                "pytorch": torch_runner(steps, batch)}, args.rounds)
        rates = {name: steps * batch / t for name, t in med.items()}
        print(f"batch {batch:5d}: " + "  ".join(f"{n} {r:8.0f}" for n, r in rates.items())
              + f"  examples/s; vae-jax / pytorch {rates['vae-jax'] / rates['pytorch']:.2f}")
    for k in [int(k) for k in args.iwae.split(",") if k]:
        steps = max(args.steps // k, 5)
        t = time_alternating({"iwae": jax_runner(steps, objective="iwae", samples=k)}, args.rounds)["iwae"]
        print(f"iwae k={k:3d}: {steps * BATCH / t:8.0f} examples/s  "
              f"{steps * model_flops_per_step(samples=k) / t / 1e9:6.1f} GFLOP/s (model matmuls)")


if __name__ == "__main__":
    main()
