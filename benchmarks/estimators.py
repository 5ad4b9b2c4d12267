"""Speed and peak memory of the test-set estimators: importance sampling (K = 5000), the naive estimator and
annealed importance sampling (16 chains x 1000 temperatures x 10 leapfrog steps on 100 images).

Each measurement runs in its own process so its peak resident memory (RSS) is its own. Model: the
784-200-200-50 tanh Bernoulli VAE (random weights: speed does not depend on training). Prints seconds,
peak RSS, achieved GFLOP/s (decoder matmuls) and, for the naive estimator, the speed-up of the shared-sample
path over the per-example path (measured on a subset, per example-sample pair).

    python benchmarks/estimators.py [--examples 10000] [--num-samples 5000] [--naive-samples 1000000]
        [--ais-examples 100] [--ais 16,1000,10] [--only ais]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

DECODER_FLOPS = 2 * (50 * 200 + 200 * 200 + 200 * 784)  # one decoded z


def measure(part: str, examples: int, samples: int) -> dict:
    import jax
    import numpy as np

    from vae_jax import VAE, ModelConfig
    from vae_jax.evaluate import evaluate

    vae = VAE(ModelConfig())
    params = vae.init(jax.random.key(0))
    xs = np.asarray(jax.random.bernoulli(jax.random.key(1), 0.15, (examples, 784)), np.float32)
    if part == "ais":
        chains, temperatures, leapfrog = samples
        kwargs = dict(ais_chains=chains, ais_temperatures=temperatures, leapfrog_steps=leapfrog)
        evaluate(vae, params, xs[:4], jax.random.key(3), estimators=("ais",), **kwargs)  # compile
        start = time.perf_counter()
        evaluate(vae, params, xs, jax.random.key(3), estimators=("ais",), **kwargs)
        seconds = time.perf_counter() - start
        # Counted run: per temperature and chain one value-and-gradient and `leapfrog` gradient steps (a
        # gradient with respect to z ~ 2 decoder passes); the pilot (8 chains, <= 100 temperatures) too.
        passes = 2 * (leapfrog + 1) * (chains * temperatures + 8 * min(temperatures, 100))
        flops = examples * passes * DECODER_FLOPS
        samples = chains * temperatures
    elif part == "naive_per_example":
        import jax.numpy as jnp

        import vae_jax as vj

        ll = vae.likelihood_fn(params)
        fn = jax.jit(jax.vmap(lambda k, x: vj.naive_log_marginal(k, ll, x, 50, samples, 1000)))
        keys = jax.random.split(jax.random.key(2), examples)
        fn(keys, jnp.asarray(xs)).block_until_ready()  # compile
        start = time.perf_counter()
        fn(keys, jnp.asarray(xs)).block_until_ready()
        seconds = time.perf_counter() - start
        flops = examples * samples * DECODER_FLOPS
    else:
        estimator = "importance" if part == "importance" else "naive"
        kwargs = {"num_samples": samples} if estimator == "importance" else {"naive_samples": samples}
        evaluate(vae, params, xs[:16], jax.random.key(3), estimators=(estimator,), **kwargs)  # compile
        start = time.perf_counter()
        evaluate(vae, params, xs, jax.random.key(3), estimators=(estimator,), **kwargs)
        seconds = time.perf_counter() - start
        flops = examples * samples * DECODER_FLOPS if estimator == "importance" else \
            samples * DECODER_FLOPS + examples * samples * 2 * 784
    return {"part": part, "examples": examples, "samples": samples, "seconds": seconds,
            "gflops_per_s": flops / seconds / 1e9, "pairs_per_s": examples * samples / seconds,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def run_child(part, examples, samples):
    out = subprocess.run([sys.executable, __file__, "--child", part, str(examples), str(samples)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=10_000)
    p.add_argument("--num-samples", type=int, default=5000, help="K of importance sampling")
    p.add_argument("--naive-samples", type=int, default=1_000_000, help="M of the naive estimator")
    p.add_argument("--per-example-subset", type=int, default=20, help="examples for the per-example naive path")
    p.add_argument("--ais-examples", type=int, default=100)
    p.add_argument("--ais", default="16,1000,10", help="AIS chains,temperatures,leapfrog steps")
    p.add_argument("--only", help="run one part only: importance, naive or ais")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        samples = [int(v) for v in args.child[2].split(",")] if "," in args.child[2] else int(args.child[2])
        print(json.dumps(measure(args.child[0], int(args.child[1]), samples)))
        return
    parts = {"importance": ("importance", args.examples, args.num_samples),
             "naive": ("naive", args.examples, args.naive_samples),
             "naive_per_example": ("naive_per_example", args.per_example_subset, min(args.naive_samples, 100_000)),
             "ais": ("ais", args.ais_examples, args.ais)}
    names = [args.only] if args.only else list(parts)
    results = [run_child(*parts[name]) for name in names]
    for r in results:
        print(f"{r['part']:>18}: {r['examples']:>6} examples x {r['samples']:>8} samples  {r['seconds']:8.1f} s  "
              f"{r['gflops_per_s']:6.1f} GFLOP/s  {r['pairs_per_s']:.3g} pairs/s  peak RSS {r['peak_rss_gb']:.2f} GB")
    by_part = {r["part"]: r for r in results}
    if "naive" in by_part and "naive_per_example" in by_part:
        speedup = by_part["naive"]["pairs_per_s"] / by_part["naive_per_example"]["pairs_per_s"]
        print(f"RATIO naive shared-sample / per-example path (pairs/s): {speedup:.1f}")
    if "ais" in by_part:
        print(f"AIS: {by_part['ais']['seconds']:.0f} s for {args.ais_examples} images (target <= 240 s)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
