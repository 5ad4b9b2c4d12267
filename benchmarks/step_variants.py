"""Where vae-jax's training step spends time beyond a plain JAX loop: the real epoch against variants of it
with one feature changed, timed alternating with the plain loop of ``train_throughput.py``.

Variants (each a copy of ``make_train_epoch``'s step with one change):
  vae-jax       the library's epoch as it is
  concat-check  the finiteness check as one sum over all gradient leaves concatenated
  no-check      no finiteness check and no skip (a lower bound: the feature removed)
  batch-eps     one batch-wide normal draw instead of per-example keys (a lower bound: changes the stream)
  no-metrics    the loss alone, no ELBO/reconstruction/KL metrics
  adam-const    ``optax.adam(1e-3)`` instead of ``make_optimizer``'s Adam with a (constant) schedule
  plain-loss    the plain loop's loss (dicts of weights, batch-wide eps) inside vae-jax's step
  key-outside   the epoch's key closed over by the step rather than carried through the scan
  lean-carry    key outside, no first-bad-step carry, step counter as the scanned index (plain's carry)

    python benchmarks/step_variants.py [--rounds 7] [--steps 200] [--batch 100]
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import optax
from train_throughput import BATCH, jax_runner, plain_jax_runner, time_alternating

from vae_jax.config import ModelConfig, TrainConfig
from vae_jax.models import VAE
from vae_jax.objectives import kl_standard_normal
from vae_jax.train_step import TrainState, example_loss, make_optimizer


def variant_runner(name: str, steps: int, batch: int = BATCH):
    config = TrainConfig(batch_size=batch)
    vae = VAE(ModelConfig())
    optimizer = optax.adam(1e-3) if name == "adam-const" else make_optimizer(config, steps)
    params = vae.init(jax.random.key(0))
    if name == "plain-loss":  # the plain loop's parameters and loss
        params = {name: [{"w": jnp.asarray(p["kernel"]), "b": jnp.asarray(p["bias"])} for p in
                         (mlp[f"Dense_{i}"] for i in range(3))]
                  for name, mlp in (("enc", params["encoder"]["params"]["MLP_0"]),
                                    ("dec", params["decoder"]["params"]["MLP_0"]))}
    state = TrainState.create(params, optimizer)
    batches = jax.random.bernoulli(jax.random.key(1), 0.2, (steps, batch, 784)).astype(jnp.float32)
    skip_select = jax.default_backend() != "cpu"

    def mlp(layers, h):
        for layer in layers[:-1]:
            h = jnp.tanh(h @ layer["w"] + layer["b"])
        return h @ layers[-1]["w"] + layers[-1]["b"]

    def batch_loss(params, step_key, xs):
        if name == "plain-loss":
            mean, log_var = jnp.split(mlp(params["enc"], xs), 2, axis=-1)
            z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(step_key, mean.shape)
            logits = mlp(params["dec"], z)
            rec = jnp.sum(xs * logits - jax.nn.softplus(logits), axis=-1)
            kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
            return -jnp.mean(rec - kl), {"elbo": jnp.mean(rec - kl)}
        if name == "batch-eps":
            mean, log_var = jax.vmap(lambda x: vae.encode(params, x))(xs)
            z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(step_key, mean.shape)
            rec = jax.vmap(vae.likelihood_fn(params))(xs, z)
            kl = jax.vmap(kl_standard_normal)(mean, log_var)
            return -jnp.mean(rec - kl), {"elbo": jnp.mean(rec - kl)}
        keys = jax.random.split(step_key, xs.shape[0])
        losses, metrics = jax.vmap(functools.partial(example_loss, vae, config, params), (0, 0, None))(
            keys, xs, jnp.float32(1.0))
        if name == "no-metrics":
            return jnp.mean(losses), {}
        return jnp.mean(losses), jax.tree_util.tree_map(jnp.mean, metrics)

    def step(carry, xs, outer_key=None):
        if name == "lean-carry":
            (state,), (i, xs) = carry, xs
            first_bad, train_key = jnp.int32(-1), outer_key
        elif name == "key-outside":
            (state, first_bad), train_key = carry, outer_key
        else:
            state, first_bad, train_key = carry
        step_key = jax.random.fold_in(train_key, state.step)
        (loss, metrics), grads = jax.value_and_grad(batch_loss, has_aux=True)(
            state.params, jax.random.fold_in(step_key, 0), xs)
        leaves = jax.tree_util.tree_leaves(grads)
        if name == "concat-check":
            finite = jnp.isfinite(loss + jnp.sum(jnp.concatenate([g.ravel() for g in leaves])))
        else:
            finite = jnp.isfinite(loss + sum(jnp.sum(g) for g in leaves))

        def apply(state):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)

        if name == "no-check":
            new = apply(state)
        elif skip_select:
            new = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), apply(state), state)
        else:
            new = jax.lax.cond(finite, apply, lambda s: s, state)
        first_bad = jnp.where((first_bad < 0) & ~finite, state.step, first_bad)
        new = new.replace(step=state.step + 1)
        if name == "lean-carry":
            return (new,), dict(metrics, loss=loss, bad=~finite)
        if name == "key-outside":
            return (new, first_bad), dict(metrics, loss=loss)
        return (new, first_bad, train_key), dict(metrics, loss=loss)

    @jax.jit
    def epoch(state, batches, key):
        if name == "lean-carry":
            (state,), metrics = jax.lax.scan(functools.partial(step, outer_key=key), (state,),
                                             (jnp.arange(len(batches)), batches))
            return state, jax.tree_util.tree_map(jnp.mean, metrics)
        if name == "key-outside":
            (state, first_bad), metrics = jax.lax.scan(functools.partial(step, outer_key=key),
                                                       (state, jnp.int32(-1)), batches)
        else:
            (state, first_bad, _), metrics = jax.lax.scan(step, (state, jnp.int32(-1), key), batches)
        return state, dict(jax.tree_util.tree_map(jnp.mean, metrics), first_bad_step=first_bad)

    holder = {"state": state}

    def run():
        holder["state"], metrics = epoch(holder["state"], batches, jax.random.key(2))
        jax.block_until_ready(metrics)

    run()
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=BATCH)
    args = p.parse_args(argv)
    runners = {"plain-jax": plain_jax_runner(args.steps, args.batch), "vae-jax": jax_runner(args.steps, args.batch)}
    for name in ("concat-check", "no-check", "batch-eps", "no-metrics", "adam-const", "plain-loss", "key-outside",
                 "lean-carry"):
        runners[name] = variant_runner(name, args.steps, args.batch)
    med = time_alternating(runners, args.rounds)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, batch {args.batch}, medians of {args.rounds} rounds")
    for name, t in med.items():
        print(f"{name:>13}: {args.steps / t * args.batch:10.0f} examples/s  {t / args.steps * 1e6:7.1f} us/step  "
              f"{med['plain-jax'] / t:5.2f} of plain-jax")


if __name__ == "__main__":
    main()
