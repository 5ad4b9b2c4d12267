"""Training throughput of vae-jax's convolutional VAE against PyTorch running the same network.

The network is vae-jax's ``--architecture conv`` on 28 x 28 x 1 Bernoulli data with its defaults:
encoder conv 3x3/2 (32) -> conv 3x3/2 (64) -> dense 200 -> 2K; decoder dense 200 -> dense 7*7*64 ->
transposed conv 3x3/2 (32) -> transposed conv 3x3/2 (1, no bias) + per-pixel bias; tanh, K = 50, batch 100,
float32, Adam, one-sample ELBO. Every round times one epoch of ``--steps`` steps of each contender,
alternating, after compilation and warm-up, and the script prints medians over rounds:

- ``vae-jax``: the library's jitted, scanned epoch (``train_step.make_train_epoch``), the CLI's loop, with its
  conv layers (:mod:`vae_jax.conv`);
- ``plain-jax``: the same network written directly in JAX + optax (batched NHWC convolutions, no Flax, no
  vae-jax code), to separate the library's overhead from XLA's convolutions;
- ``plain-jax-patches``: the same, each convolution written as a patch matrix (``conv_general_dilated_patches``)
  times a weight matrix, and each transposed convolution as the patches of the stride-dilated input (the
  patches come from a convolution with a one-hot kernel, as slow as the convolution itself);
- ``plain-jax-slices``: the same with vae-jax's layers (:mod:`vae_jax.conv`): patches as nine strided slices
  ("im2col"), the transposed convolution as one product for all taps placed by padding ("col2im");
- ``pytorch``: the same network in PyTorch (NCHW, oneDNN convolutions), and ``pytorch-channels-last`` (NHWC).

PyTorch pads a stride-2 convolution symmetrically (1, 1) where XLA's SAME pads (0, 1): the shapes, the
FLOPs and the parameters are the same, the pixel alignment differs by one.

    pip install -e ".[bench]"   # adds the CPU build of torch 2.13.0
    python benchmarks/conv_throughput.py [--rounds 7] [--steps 100]
    taskset -c 0 python benchmarks/conv_throughput.py    # one core, the low-noise setting
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from train_throughput import bernoulli_batches, plain_epoch_runner, time_alternating, torch_epoch_runner
from vae_jax import train_step
from vae_jax.conv import conv_stride2, conv_transpose_stride2
from vae_jax.config import ModelConfig, TrainConfig
from vae_jax.models import VAE

BATCH, LATENT, CHANNELS, HIDDEN = 100, 50, (32, 64), 200
NHWC = ("NHWC", "HWIO", "NHWC")


def conv_flops_per_step(batch: int = BATCH) -> float:
    """Multiply-add FLOPs of one step's convolutions and dense layers: forward 2 * MACs, backward twice that."""
    c1, c2 = CHANNELS
    macs = (14 * 14 * 9 * 1 * c1 + 7 * 7 * 9 * c1 * c2 + 7 * 7 * c2 * HIDDEN + HIDDEN * 2 * LATENT  # encoder
            + LATENT * HIDDEN + HIDDEN * 7 * 7 * c2 + 14 * 14 * 9 * c2 * c1 + 28 * 28 * 9 * c1 * 1)  # decoder
    return 3 * 2 * macs * batch


def vae_jax_runner(steps: int, batch: int = BATCH):
    """One call runs one epoch of vae-jax's training step for the conv architecture (compiled first)."""
    config = TrainConfig(batch_size=batch)
    vae = VAE(ModelConfig(architecture="conv", channels=CHANNELS, hidden=(HIDDEN,), latent_dim=LATENT))
    optimizer = train_step.make_optimizer(config, steps)
    holder = {"state": train_step.TrainState.create(vae.init(jax.random.key(0)), optimizer)}
    epoch = train_step.make_train_epoch(vae, config, optimizer, steps)
    batches = bernoulli_batches(steps, batch)

    def run():
        holder["state"], metrics = epoch(holder["state"], batches, jax.random.key(2))
        jax.block_until_ready(metrics)

    run()
    return run


def _conv(x, w, formulation):
    """3x3 stride-2 SAME convolution of x [B, H, W, Cin] with w [3, 3, Cin, Cout]."""
    if formulation == "xla":
        return lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC)
    if formulation == "slices":  # vae-jax's layers: nine strided slices times the kernel ("im2col")
        return jax.vmap(conv_stride2, (0, None))(x, w)
    patches = lax.conv_general_dilated_patches(x, (3, 3), (2, 2), "SAME", dimension_numbers=NHWC)
    return patches @ _patch_matrix(w)  # [B, H', W', Cin * 9] @ [Cin * 9, Cout]


def _conv_transpose(x, w, formulation):
    """3x3 stride-2 SAME transposed convolution (H -> 2H) of x [B, H, W, Cin] with w [3, 3, Cin, Cout], as
    ``lax.conv_transpose`` computes it: a stride-1 convolution of the input dilated by 2, padded (2, 1)."""
    if formulation == "xla":
        return lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=NHWC)
    if formulation == "slices":  # vae-jax's layers: one product for the nine taps, placed by padding ("col2im")
        return jax.vmap(conv_transpose_stride2, (0, None))(x, w)
    patches = lax.conv_general_dilated_patches(x, (3, 3), (1, 1), ((2, 1), (2, 1)), lhs_dilation=(2, 2),
                                               dimension_numbers=NHWC)
    return patches @ _patch_matrix(w)


def _patch_matrix(w):
    """w [3, 3, Cin, Cout] as the [Cin * 9, Cout] matrix that multiplies ``conv_general_dilated_patches``'
    features, which are ordered (Cin, kh, kw)."""
    return jnp.transpose(w, (2, 0, 1, 3)).reshape(-1, w.shape[-1])


def plain_jax_runner(steps: int, batch: int = BATCH, formulation: str = "xla"):
    """The network and step in plain JAX + optax: batched NHWC, one jitted ``lax.scan`` per epoch."""
    c1, c2 = CHANNELS
    shapes = {"c1": (3, 3, 1, c1), "c2": (3, 3, c1, c2), "e1": (7 * 7 * c2, HIDDEN), "e2": (HIDDEN, 2 * LATENT),
              "d1": (LATENT, HIDDEN), "d2": (HIDDEN, 7 * 7 * c2), "t1": (3, 3, c2, c1), "t2": (3, 3, c1, 1)}
    keys = dict(zip(shapes, jax.random.split(jax.random.key(0), len(shapes))))
    params = {n: jax.random.normal(keys[n], s) / np.sqrt(np.prod(s[:-1])) for n, s in shapes.items()}
    params.update({f"{n}_b": jnp.zeros(s[-1]) for n, s in shapes.items() if n != "t2"}, out_b=jnp.zeros(784))
    def loss(p, x, key):
        h = jnp.tanh(_conv(x.reshape(-1, 28, 28, 1), p["c1"], formulation) + p["c1_b"])
        h = jnp.tanh(_conv(h, p["c2"], formulation) + p["c2_b"])
        h = jnp.tanh(h.reshape(len(x), -1) @ p["e1"] + p["e1_b"])
        mean, log_var = jnp.split(h @ p["e2"] + p["e2_b"], 2, axis=-1)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
        g = jnp.tanh(z @ p["d1"] + p["d1_b"])
        g = jnp.tanh(g @ p["d2"] + p["d2_b"]).reshape(-1, 7, 7, c2)
        g = jnp.tanh(_conv_transpose(g, p["t1"], formulation) + p["t1_b"])
        logits = _conv_transpose(g, p["t2"], formulation).reshape(len(x), -1) + p["out_b"]
        rec = jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
        return -jnp.mean(rec - kl)

    return plain_epoch_runner(loss, params, bernoulli_batches(steps, batch))


def torch_runner(steps: int, batch: int = BATCH, channels_last: bool = False):
    import torch
    from torch import nn

    torch.manual_seed(0)
    c1, c2 = CHANNELS
    enc = nn.Sequential(nn.Conv2d(1, c1, 3, 2, 1), nn.Tanh(), nn.Conv2d(c1, c2, 3, 2, 1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(7 * 7 * c2, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2 * LATENT))
    dec = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 7 * 7 * c2), nn.Tanh(),
                        nn.Unflatten(1, (c2, 7, 7)), nn.ConvTranspose2d(c2, c1, 3, 2, 1, output_padding=1), nn.Tanh(),
                        nn.ConvTranspose2d(c1, 1, 3, 2, 1, output_padding=1, bias=False), nn.Flatten())
    out_bias = nn.Parameter(torch.zeros(784))
    if channels_last:
        enc, dec = enc.to(memory_format=torch.channels_last), dec.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), out_bias], lr=1e-3)
    data = (torch.rand(steps, batch, 1, 28, 28) < 0.2).float()
    if channels_last:
        data = torch.stack([d.contiguous(memory_format=torch.channels_last) for d in data])

    return torch_epoch_runner(enc, lambda z: dec(z) + out_bias, opt, data)


def check_formulations_agree():
    """The patch-matrix convolutions equal XLA's (to float32 rounding), so the variants time the same math."""
    x = jax.random.normal(jax.random.key(3), (4, 14, 14, 8))
    w = jax.random.normal(jax.random.key(4), (3, 3, 8, 5))
    for fn in (_conv, _conv_transpose):
        for formulation in ("patches", "slices"):
            a, b = fn(x, w, "xla"), fn(x, w, formulation)
            assert a.shape == b.shape and float(jnp.max(jnp.abs(a - b))) < 1e-4, (fn.__name__, formulation, a.shape)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=100, help="steps per timed epoch")
    p.add_argument("--only", default="", help="comma-separated contenders to run (default: all)")
    args = p.parse_args(argv)
    import torch

    check_formulations_agree()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} on CPU, "
          f"{torch.get_num_threads()} threads")
    makers = {"vae-jax": vae_jax_runner, "plain-jax": plain_jax_runner,
              "plain-jax-patches": functools.partial(plain_jax_runner, formulation="patches"),
              "plain-jax-slices": functools.partial(plain_jax_runner, formulation="slices"),
              "pytorch": torch_runner, "pytorch-channels-last": functools.partial(torch_runner, channels_last=True)}
    names = [n for n in args.only.split(",") if n] or list(makers)
    start = time.perf_counter()
    runners = {name: makers[name](args.steps) for name in names}
    print(f"compiled and warmed up in {time.perf_counter() - start:.0f} s")
    med = time_alternating(runners, args.rounds)
    flops = conv_flops_per_step()
    for name, t in med.items():
        print(f"{name:>22}: {args.steps * BATCH / t:8.0f} examples/s  {args.steps * flops / t / 1e9:6.1f} GFLOP/s  "
              f"(median of {args.rounds} epochs of {args.steps} steps, {t:.2f} s)")
    if "pytorch" in med:
        for name in med:
            if name.startswith(("vae-jax", "plain-jax")):
                print(f"RATIO {name} / pytorch examples/s: {med['pytorch'] / med[name]:.2f}"
                      + ("  (target >= 1.0)" if name == "vae-jax" else ""))


if __name__ == "__main__":
    main()
