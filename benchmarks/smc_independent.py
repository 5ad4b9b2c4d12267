"""Seconds per image of tempered SMC with the independent kernel, as ``experiments/reference_2d.py`` runs it.

Model: the 784-200-200-K tanh Bernoulli VAE of ``experiments/estimators.py`` (random weights: the time does not
depend on training). Per setting, one image is compiled and run once, then ``--rounds`` timed runs of the same
jitted function (fresh keys); prints the median seconds and, for comparing two versions of the code, one JSON
line. To compare two checkouts, alternate them in one loop, e.g.

    for i in 1 2 3; do for tree in old new; do PYTHONPATH=$tree python benchmarks/smc_independent.py; done; done

    python benchmarks/smc_independent.py [--latent-dims 2,10] [--rounds 3] [--particles 256] [--temperatures 250]
"""

import argparse
import json
import statistics
import time


def seconds(latent_dim: int, particles: int, temperatures: int, moves: int, rounds: int) -> list[float]:
    import jax
    import numpy as np

    import vae_jax as vj

    vae = vj.VAE(vj.ModelConfig(latent_dim=latent_dim, hidden=(200, 200), activation="tanh"))
    params = vae.init(jax.random.key(0))
    x = np.asarray(jax.random.bernoulli(jax.random.key(1), 0.15, (784,)), np.float32)
    start = vae.encode(params, x)
    # From q alone, the adaptive schedule: three fits per temperature (q's pilot, the prior's, its tilt toward q).
    run = jax.jit(lambda key: vj.smc_log_marginal(key, vae.likelihood_fn(params), x, latent_dim, particles,
                                                  temperatures, start=start, kernel="independent",
                                                  mcmc_steps=moves, schedule="adaptive").log_marginal)
    jax.block_until_ready(run(jax.random.key(2)))  # compile
    times = []
    for i in range(rounds):
        begin = time.perf_counter()
        jax.block_until_ready(run(jax.random.key(10 + i)))
        times.append(time.perf_counter() - begin)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent-dims", default="2,10")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--particles", type=int, default=256)
    parser.add_argument("--temperatures", type=int, default=250)
    parser.add_argument("--moves", type=int, default=5)
    args = parser.parse_args()
    for k in (int(v) for v in args.latent_dims.split(",")):
        times = seconds(k, args.particles, args.temperatures, args.moves, args.rounds)
        print(json.dumps({"latent_dim": k, "particles": args.particles, "temperatures": args.temperatures,
                          "moves": args.moves, "median_s": round(statistics.median(times), 3),
                          "times_s": [round(t, 3) for t in times]}), flush=True)


if __name__ == "__main__":
    main()
