"""A reference that crosses modes: AIS and tempered SMC, each started from the prior and from q(z|x), against
grid quadrature image by image, on the 2-D model of ``experiments/estimators.py`` and its 100 reference images
(binarized MNIST ``test[:100]``).

AIS chains started in one mode of q keep their weights and their mode; SMC resamples its particles along the
same path, so particles that reach another mode are copied there in proportion to its mass. Goal: the
reference within 0.1 nats of quadrature on at least 99 of the 100 images, from either start. Reports per image
the error against quadrature (mean, median, quartiles, worst, count within 0.1 nats) and each method's seconds.
With ``--latent-dims`` above 2 (no quadrature there) it reports where SMC and AIS from each start disagree.

The models are those of ``experiments/estimators.py`` (same configuration and ``--workdir``): trained there
or here, 100 epochs each. Each estimator's per-image results are saved in the model's folder, 20 images at a
time, so an interrupted run resumes where it stopped: run the same command again (same values as an
uninterrupted run; other settings or parameters never reuse them). Two processes started with the same command
(one per core, e.g. ``taskset -c 0`` and ``taskset -c 1``) share the images between them.

    python experiments/reference_2d.py --manual-dir ../shared/data [--quick]
"""

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import jax
import numpy as np

from common import claim, experiment_parser, run_experiment, run_meta, write_results
from estimators import DEFAULT as ESTIMATOR_SETTINGS, QUICK as ESTIMATOR_QUICK, train_model
from vae_jax import data as data_lib, validation
from vae_jax.data import DataOptions
from vae_jax.errors import ConfigError, RunLockedError
from vae_jax.evaluate import EvalConfig, evaluation_key, make_estimator_fns, map_in_batches, SPEC
from vae_jax.rundir import to_json, write_json
from vae_jax.shared_samples import grid_error_estimate
from vae_jax.smc import MAX_MOVES

WITHIN = 0.1  # nats: the goal's tolerance per image
# The truth's grid: on the 2-D model's 100 reference images a 400^2 grid was up to 0.099 nats off the 1600^2 one
# (image 36); on the three images it moved most, 3200^2 and the square [-8, 8]^2 change the 1600^2 values by < 1e-4.
DEFAULT = dict(num_examples=100, ais_chains=16, ais_temperatures=1000, smc_particles=64, smc_temperatures=250,
               grid_points=1600, independent_particles=256, independent_moves=5, prior_weight=0.1,
               independent_schedule="sigmoid", independent_accepted_moves=None)
QUICK = dict(num_examples=8, ais_chains=4, ais_temperatures=50, smc_particles=16, smc_temperatures=20,
             grid_points=100, independent_particles=16, independent_moves=2, prior_weight=0.1,
             independent_schedule="sigmoid", independent_accepted_moves=None)
METHODS = ("ais", "smc", "smc_independent")  # smc: HMC moves; smc_independent: SMC's independent kernel
STARTS = ("prior", "q", "q_defensive")  # q_defensive: (1 - d) q + d p(z), d = prior_weight


CHUNK = 20  # images per saved part of a run: an interrupted run resumes after the last part saved


def params_digest(params) -> str:
    """A digest of the model's parameters, so a cache made with other parameters is never reused."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def cache_folder(cache_dir: Path, name: str, config: EvalConfig, digest: str) -> tuple[Path, dict]:
    """(the folder keeping one estimator's per-image results, the fingerprint they are kept under): its name
    holds a hash of the estimator, its settings and the parameters, so another setting never overwrites them."""
    fingerprint = {"estimator": name, "config": dataclasses.asdict(config), "params_sha256": digest}
    tag = hashlib.sha256(to_json(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"reference_2d_{name}_{tag}", fingerprint


FIELDS = ("value", "moves", "seconds")  # what is kept per image


def load_cache(folder: Path, fingerprint: dict) -> dict:
    """The per-image results saved in ``folder``'s part files (``{field: {image index: number}}``, fields
    :data:`FIELDS`); a file there that is not such a part is refused with what to do."""
    kept = {field: {} for field in FIELDS}
    same = json.loads(to_json(fingerprint))
    for path in sorted(Path(folder).glob("images_*.json")):
        try:
            part = json.loads(path.read_text())
            matches = part["fingerprint"] == same
            for field in FIELDS:
                kept[field].update({int(i): v for i, v in part[field].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"{path} is not a part of reference_2d's results ({type(err).__name__}: {err}); "
                              "move or delete it to compute its images again.") from None
        if not matches:  # the folder name's 16 hex digits collided: never mix two settings
            raise ConfigError(f"{path} holds results of other settings; move or delete it.")
    return kept


def per_image(vae, params, images, name, config, cache_dir: Path | None = None):
    """The estimator's per-image values [N], its seconds (compile included; summed over the runs that computed
    them) and, for SMC, its moves per particle and temperature averaged over the images (None for AIS).

    With ``cache_dir``, images are computed in parts of :data:`CHUNK`, each part's results saved as soon as it
    ends (:func:`cache_folder`), and a later call with the same estimator, settings and parameters computes only
    the parts not saved. Processes started with the same command (one per core) share the parts through claims
    (:func:`common.claim`) and each waits for the others' parts. Image i draws from the same key however the work
    is split, so a resumed or shared run gives the values of an uninterrupted one."""
    fn = make_estimator_fns(vae, params, evaluation_key(0), config)[name]
    key = jax.random.fold_in(evaluation_key(0), SPEC[name].stream)
    folder, fingerprint = (None, None) if cache_dir is None else cache_folder(cache_dir, name, config,
                                                                              params_digest(params))
    n, kept = len(images), {field: {} for field in FIELDS}
    parts = [(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]
    while True:
        if folder is not None:
            kept = load_cache(folder, fingerprint)
        todo = [(a, b) for a, b in parts if any(i not in kept["value"] for i in range(a, b))]
        if not todo:
            break
        part = next((p for p in todo if folder is None or claim(folder / f"images_{p[0]}-{p[1]}.claim")), None)
        if part is None:  # every part left is being computed by another process
            time.sleep(10)
            continue
        start, stop = part
        try:
            t0 = time.perf_counter()
            out = map_in_batches(fn, key, images[start:stop], CHUNK, first_index=start)
            seconds = (time.perf_counter() - t0) / (stop - start)
            done = {"value": {i: float(v) for i, v in zip(range(start, stop), out["value"])},
                    "moves": {i: float(m) for i, m in zip(range(start, stop), out.get("moves_per_temperature", []))},
                    "seconds": {i: seconds for i in range(start, stop)}}
            if folder is None:
                for field in FIELDS:
                    kept[field].update(done[field])
            else:
                write_json(folder / f"images_{start}-{stop}.json", {"fingerprint": fingerprint, **done})
        finally:
            if folder is not None:
                (folder / f"images_{start}-{stop}.claim").unlink(missing_ok=True)
    values = np.array([np.nan if kept["value"][i] is None else kept["value"][i] for i in range(n)])
    moves = float(np.mean([kept["moves"][i] for i in range(n)])) if kept["moves"] else None
    return values, float(sum(kept["seconds"][i] for i in range(n))), moves


def spread(errors: np.ndarray) -> dict:
    """Mean, median, quartiles and worst of per-image errors (estimate - truth), and how many are within WITHIN."""
    return {"mean": float(np.mean(errors)), "median": float(np.median(errors)),
            "quartiles": [float(q) for q in np.percentile(errors, [25, 75])],
            "worst": float(errors[np.argmax(np.abs(errors))]), "worst_image": int(np.argmax(np.abs(errors))),
            f"within_{WITHIN}": int(np.sum(np.abs(errors) < WITHIN)), "num_examples": int(len(errors))}


def markdown(results: list[dict], settings: dict) -> str:
    lines = [f"| latent dim | method | start | cost | seconds | mean log p(x) | error vs truth: mean | median "
             f"(quartiles) | worst | within {WITHIN} nats |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for m in r["methods"]:
            e = m["error"]
            lines.append(f"| {r['latent_dim']} | {m['method']} | {m['start']} | {m['cost']} | {m['seconds']:.0f} | "
                         f"{m['mean']:.3f} | {e['mean']:+.3f} | {e['median']:+.3f} ({e['quartiles'][0]:+.3f}, "
                         f"{e['quartiles'][1]:+.3f}) | {e['worst']:+.2f} (image {e['worst_image']}) | "
                         f"{e[f'within_{WITHIN}']} / {e['num_examples']} |")
    lines += ["", f"Binarized MNIST test[:{settings['num_examples']}]; AIS {settings['ais_chains']} chains x "
              f"{settings['ais_temperatures']} temperatures, SMC {settings['smc_particles']} particles x "
              f"{settings['smc_temperatures']} temperatures, one HMC move of 10 leapfrog steps per temperature; "
              f"smc_independent: {settings['independent_particles']} particles x {settings['smc_temperatures']} "
              f"temperatures ({settings['independent_schedule']} schedule) x {settings['independent_moves']} "
              "independent Metropolis-Hastings moves (one likelihood value each, no gradient)"
              + (f", more where the pilot's acceptance rate a was low (ceil({settings['independent_accepted_moves']:g}"
                 f" / a), at most {MAX_MOVES}; the cost counts the moves taken)"
                 if settings.get("independent_accepted_moves") else "") + ", from pilots' kernel "
              "density estimates (from a q start, the prior's path and the start's); start q_defensive: "
              f"{1 - settings['prior_weight']:g} q + {settings['prior_weight']:g} p(z) "
              "(cost: particle-moves per image). In 2-D the truth is grid quadrature on a "
              f"{settings['grid_points']}^2 grid (its refinement bound in the JSON); above 2-D there is no truth, and "
              "the error is against the highest of the estimates of each image (all are stochastic lower "
              "bounds, so the highest is the closest in expectation). Models: those of experiments/estimators.py."]
    return "\n".join(lines) + "\n"


def method_config(method: str, start: str, settings: dict) -> tuple[str, EvalConfig]:
    """(the estimator's name, its EvalConfig)."""
    independent = method == "smc_independent"
    config = EvalConfig(ais_chains=settings["ais_chains"], ais_temperatures=settings["ais_temperatures"],
                        smc_particles=settings["independent_particles" if independent else "smc_particles"],
                        smc_temperatures=settings["smc_temperatures"], smc_kernel="independent" if independent else "hmc",
                        smc_moves=settings["independent_moves"] if independent else 1,
                        smc_schedule=settings["independent_schedule"] if independent else "sigmoid",
                        smc_accepted_moves=settings["independent_accepted_moves"] if independent else None,
                        ais_start="prior" if start == "prior" else "q",
                        start_prior_weight=settings["prior_weight"] if start == "q_defensive" else 0.0)
    return ("ais" if method == "ais" else "smc"), config


def compare(vae, params, images, settings, methods=METHODS[:2], starts=STARTS[:2], cache_dir: Path | None = None):
    """Each method from each start against the truth, image by image; with ``cache_dir``, resumable
    (:func:`per_image`)."""
    k = vae.config.latent_dim
    runs = []
    for method in methods:
        for start in starts:
            name, config = method_config(method, start, settings)
            values, seconds, moves = per_image(vae, params, images, name, config, cache_dir)
            # Cost in particle-moves per image: AIS's chain-moves, SMC's moves as taken (more than smc_moves with
            # accepted moves).
            cost = (config.ais_chains * config.ais_temperatures if moves is None
                    else round(config.smc_particles * config.smc_temperatures * moves))
            runs.append({"method": method, "start": start, "cost": cost, "seconds": seconds, "values": values})
            print(f"latent {k}: {method} from {start}: {values.mean():.3f} ({seconds:.0f} s)", flush=True)
    out = {"latent_dim": k}
    if k == 2:
        truth, bound = grid_error_estimate(lambda xs, z: vae.log_likelihood_matrix(params, xs, z), images,
                                           num_points=settings["grid_points"])
        truth = np.asarray(truth)
        out["quadrature"] = {"mean": float(truth.mean()), "max_abs_error": float(np.max(bound)),
                             "per_example": truth.tolist()}
    else:
        truth = np.max([r["values"] for r in runs], axis=0)
    out["methods"] = [{"method": r["method"], "start": r["start"], "cost": r["cost"], "seconds": r["seconds"],
                       "mean": float(r["values"].mean()), "error": spread(r["values"] - truth),
                       "per_example": r["values"].tolist()} for r in runs]
    return out


def shared_model(k, model_settings, args, options):
    """:func:`estimators.train_model`, waiting while another process (one started with the same command, on the
    other core) holds the model's folder to train or load it."""
    waiting = False
    while True:
        try:
            return train_model(k, model_settings, args, options)
        except RunLockedError as e:
            if not waiting:
                print(f"waiting: {e}", flush=True)
                waiting = True
            time.sleep(10)


def main(argv=None):
    p = experiment_parser("reference_2d", __doc__)
    p.add_argument("--latent-dims", default="2", help="comma-separated latent dimensions (models of estimators.py)")
    p.add_argument("--num-examples", type=int, help="the first N test images (default: 100; 8 with --quick)")
    p.add_argument("--methods", default="ais,smc", help=f"comma-separated, of {','.join(METHODS)} (smc_independent: "
                   "SMC with independent moves from pilots' kernel density estimates)")
    p.add_argument("--starts", default="prior,q", help=f"comma-separated, of {','.join(STARTS)} (q_defensive: the "
                   "mixture (1 - d) q + d p(z), d = --prior-weight)")
    p.add_argument("--prior-weight", type=float, default=DEFAULT["prior_weight"],
                   help="d, the prior's share of the q_defensive start (0 <= d < 1)")
    p.add_argument("--schedule", choices=("sigmoid", "adaptive"), default=DEFAULT["independent_schedule"],
                   help="smc_independent's temperatures: AIS's sigmoid schedule, or spread by the path's "
                   "thermodynamic length as the pilots' proposals estimate it (evaluate --smc-schedule)")
    p.add_argument("--accepted-moves", type=float, help="smc_independent: more moves where the pilot's acceptance "
                   f"rate a is low, ceil(this / a) up to {MAX_MOVES}, so that each particle expects this many "
                   "accepted moves (evaluate --smc-accepted-moves; default: a fixed number of moves)")
    p.add_argument("--independent-particles", type=int,
                   help=f"smc_independent's particles N (default: {DEFAULT['independent_particles']}; "
                   f"{QUICK['independent_particles']} with --quick)")
    args = p.parse_args(argv)
    methods, starts = tuple(args.methods.split(",")), tuple(args.starts.split(","))
    for given, known, what in ((methods, METHODS, "--methods"), (starts, STARTS, "--starts")):
        if set(given) - set(known):
            p.error(f"unknown {what} {','.join(sorted(set(given) - set(known)))}; choose from {','.join(known)}")
    settings = dict(QUICK if args.quick else DEFAULT)
    if args.num_examples:
        settings["num_examples"] = args.num_examples
    settings["independent_schedule"] = args.schedule
    if args.accepted_moves is not None:
        if not 0 < args.accepted_moves < float("inf"):
            p.error(f"--accepted-moves must be a positive number, not {args.accepted_moves}")
        settings["independent_accepted_moves"] = args.accepted_moves
    try:
        settings["prior_weight"] = validation.check_prior_weight(args.prior_weight)
    except ConfigError as e:
        p.error(f"--prior-weight: {e}")
    if args.independent_particles is not None:
        try:
            settings["independent_particles"] = validation.check_positive_int("--independent-particles",
                                                                              args.independent_particles)
        except ConfigError as e:
            p.error(str(e))
    model_settings = dict(ESTIMATOR_QUICK if args.quick else ESTIMATOR_SETTINGS)
    options = DataOptions(data_dir=args.data_dir, manual_dir=args.manual_dir)
    if args.workdir == "runs/reference_2d":  # the default: share estimators.py's models
        args.workdir = "runs/estimators"
    images = data_lib.load("binarized_mnist", f"test[:{settings['num_examples']}]", data_dir=args.data_dir,
                           manual_dir=args.manual_dir).as_float()
    start, results = time.perf_counter(), []
    for k in (int(v) for v in args.latent_dims.split(",")):
        _, vae, params, _ = shared_model(k, model_settings, args, options)
        try:
            results.append(compare(vae, params, images, settings, methods, starts, Path(args.workdir) / f"latent_{k}"))
        except ConfigError as e:  # a file in the cache's place that is not one
            p.error(str(e))
    write_results(args.output, "reference_2d", {"meta": run_meta(settings, time.perf_counter() - start),
                                                "results": results}, markdown(results, settings))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_experiment(main)
