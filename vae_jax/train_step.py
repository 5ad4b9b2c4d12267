"""The training step: loss, gradient and optax update in one jit region, scanned over an epoch.

Randomness of step ``t`` comes from ``fold_in(train_key, t)``, so a resumed run draws exactly what an
uninterrupted one would.
"""

import dataclasses
import functools
import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax import lax

from vae_jax.config import TrainConfig
from vae_jax.data import binarize
from vae_jax.pixels import dequantize, dequantizes, to_unit_float
from vae_jax.estimators import importance_log_weights
from vae_jax.models import VAE
from vae_jax.objectives import kl_standard_normal, reparameterized_log_likelihoods
from vae_jax.sampling import standard_normal_stream
from vae_jax.types import Array, Params, PRNGKey


class TrainState(flax.struct.PyTreeNode):
    """Immutable training state: a step counter, the parameters and the optimizer state."""

    step: Array  # int32 scalar: optimizer updates applied so far
    params: Params
    opt_state: optax.OptState

    @classmethod
    def create(cls, params: Params, optimizer: optax.GradientTransformation) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


BURDA_STAGES = 8  # Burda et al. (2015), Appendix C: stage i = 0..7 lasts 3^i epochs at lr 10^(-i/7)


def burda_schedule(learning_rate: float, total_steps: int) -> optax.Schedule:
    """Burda et al.'s staged schedule: learning_rate * 10^(-i/7) in stage i = 0..7, where stage i
    takes 3^i / 3280 of ``total_steps`` (3280 = sum of 3^i: the paper's 3280 epochs, rescaled)."""
    total_epochs = (3**BURDA_STAGES - 1) // 2
    scales = {}  # a short run can end several stages on one step: their factors multiply
    for i in range(BURDA_STAGES - 1):
        end = round(total_steps * (3 ** (i + 1) - 1) / 2 / total_epochs)
        scales[end] = scales.get(end, 1.0) * 10 ** (-1 / 7)
    return optax.piecewise_constant_schedule(learning_rate, scales)


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Adam with the configured schedule over ``total_steps``, after optional global-norm clipping."""
    lr, total_steps = config.learning_rate, max(total_steps, 1)
    schedule = {
        "constant": lambda: optax.constant_schedule(lr),
        "cosine": lambda: optax.cosine_decay_schedule(lr, total_steps),
        "exponential": lambda: optax.exponential_decay(lr, total_steps, config.decay_rate),
        "burda": lambda: burda_schedule(lr, total_steps),
    }[config.schedule]()
    clip = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip is not None else []
    return optax.chain(*clip, optax.adam(schedule, eps=config.adam_eps))


def example_loss(vae: VAE, config: TrainConfig, params: Params, eps: Array, x: Array, beta: Array):
    """Loss for one example x [D] with its noise eps [S, K], and its metrics (elbo, reconstruction, kl).

    ``elbo``: -(E_q[log p(x|z)] - beta KL) with S = ``num_samples`` draws.
    ``iwae``: -log (1/S) sum_s p(x, z_s) / q(z_s|x).
    Both, and the metrics, come from one decoding of the S samples z_s = mean + std * eps_s.
    """
    mean, log_var = vae.encode(params, x)
    z, log_lik = reparameterized_log_likelihoods(vae.likelihood_fn(params), x, mean, log_var, eps)
    reconstruction, kl = jnp.mean(log_lik), kl_standard_normal(mean, log_var)
    if config.objective == "elbo":
        loss = -(reconstruction - beta * kl)
    else:
        log_w = importance_log_weights(eps, z, log_lik, log_var)
        loss = -(jax.nn.logsumexp(log_w) - math.log(config.num_samples))
    return loss, {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}


def step_noise(config: TrainConfig, latent_dim: int, dequantized: bool, train_key: PRNGKey, step: Array, xs: Array):
    """The random draws of training step ``step``: (eps [B, S, K], the batch xs [B, D]: as stored, binarized
    inputs in [0, 1] when ``config.binarize``, or ``dequantized`` 8-bit levels (k + u) / 256; the step converts
    stored batches, :func:`vae_jax.pixels.to_unit_float`).

    With ``step_key = fold_in(train_key, step)`` and ``keys = split(fold_in(step_key, 0), B)``, example b's
    samples are the stream of :func:`vae_jax.elbo_terms` and :func:`vae_jax.importance_log_marginal` with
    key ``keys[b]`` (sample s from ``fold_in(keys[b], s)``); dynamic binarization draws from
    ``fold_in(step_key, 1)``, dequantization from ``fold_in(step_key, 2)``. The draws depend only on
    (train_key, step), so a resumed run repeats them.
    """
    step_key = jax.random.fold_in(train_key, step)
    keys = jax.random.split(jax.random.fold_in(step_key, 0), xs.shape[0])
    indices = jnp.arange(config.num_samples)
    dtype = to_unit_float(xs[:0]).dtype
    eps = jax.vmap(lambda key: standard_normal_stream(key, indices, latent_dim, dtype))(keys)
    if config.binarize:
        xs = binarize(jax.random.fold_in(step_key, 1), to_unit_float(xs))
    if dequantized:
        xs = dequantize(jax.random.fold_in(step_key, 2), xs)
    return eps, xs


NOISE_CHUNK_BYTES = 32 * 2**20  # draws made at once, ahead of the steps that use them


def noise_chunk_length(steps: int, bytes_per_step: int, budget: int | None = None) -> int:
    """Steps whose draws are made together: the largest divisor of ``steps`` whose draws fit ``budget``
    bytes (default :data:`NOISE_CHUNK_BYTES`)."""
    budget = NOISE_CHUNK_BYTES if budget is None else budget
    most = max(1, min(steps, budget // max(bytes_per_step, 1)))
    return max(c for c in range(1, most + 1) if steps % c == 0)


def kl_weight(config: TrainConfig, step: Array, steps_per_epoch: int) -> Array:
    """beta, ramped linearly from 0 over ``kl_warmup_epochs`` when a warm-up is set."""
    if config.kl_warmup_epochs == 0:
        return jnp.asarray(config.beta, jnp.float32)
    ramp = (step + 1) / (config.kl_warmup_epochs * steps_per_epoch)
    return config.beta * jnp.minimum(ramp, 1.0).astype(jnp.float32)


def all_finite(tree) -> Array:
    """Whether every floating-point value in ``tree`` is finite (a boolean scalar)."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in leaves], jnp.bool_(True))


def make_train_epoch(vae: VAE, config: TrainConfig, optimizer: optax.GradientTransformation,
                     steps_per_epoch: int, *, skip_with: str | None = None, check_every_step: bool = False):
    """Returns ``train_epoch(state, batches [S, B, D], train_key) -> (state, metrics)``, a :class:`TrainEpoch`.

    One ``lax.scan`` over the epoch's steps. A step whose loss or gradient is not finite is not
    applied; ``metrics["first_bad_step"]`` names the first such step (-1 when all were finite).
    Other metrics are averages over the epoch's examples.

    The epoch runs optimistically, with no per-step check: a non-finite gradient poisons the optimizer
    state for good (NaN and infinity survive every later Adam update), so a finite final state and
    finite losses prove that every step was finite. Otherwise the epoch is run again from its start
    with the check on every step, and only that run's result is returned. Both runs draw the same
    noise, so the result is what a checked run gives (to float rounding: the two runs are compiled
    apart), at the cost of one check per epoch; a per-step check reads the whole gradient once more.
    ``check_every_step=True`` always runs the checked epoch. Each of the two is jitted; the checked one
    is compiled only when first needed.

    ``skip_with`` chooses how the checked run leaves a bad step out, with the same result: ``"cond"``
    runs only the branch taken (cheapest on a CPU, where a select over the whole state cost 15% of a
    step); ``"select"`` computes the update and selects old or new state elementwise, which fuses into
    the optimizer's kernels on a GPU, where a conditional costs a device-to-host round trip every step.
    Default: ``"cond"`` on a CPU backend, ``"select"`` otherwise.
    """
    skip_with = skip_with or ("cond" if jax.default_backend() == "cpu" else "select")
    if skip_with not in ("cond", "select"):
        raise ValueError(f"skip_with must be 'cond' or 'select', not {skip_with!r}")

    def batch_loss(params, eps, xs, beta):
        losses, metrics = jax.vmap(functools.partial(example_loss, vae, config, params), (0, 0, None))(
            eps, xs, beta
        )
        return jnp.mean(losses), jax.tree_util.tree_map(jnp.mean, metrics)

    def apply(grads, state: TrainState) -> TrainState:
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)

    def step(carry, inputs, checked: bool):
        state, first_bad = carry
        xs, eps = inputs
        xs = to_unit_float(xs)  # a stored batch (bool, uint8, float) -> inputs in [0, 1], one step at a time
        beta = kl_weight(config, state.step, steps_per_epoch)
        (loss, metrics), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params, eps, xs, beta)
        if not checked:
            new = apply(grads, state)
        else:
            # Any NaN or infinity in the gradient makes its sum non-finite: one reduction, no comparisons.
            finite = jnp.isfinite(loss + sum(jnp.sum(g) for g in jax.tree_util.tree_leaves(grads)))
            if skip_with == "cond":
                new = lax.cond(finite, functools.partial(apply, grads), lambda state: state, state)
            else:
                new = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), apply(grads, state), state)
            first_bad = jnp.where((first_bad < 0) & ~finite, state.step, first_bad)
        return (new.replace(step=state.step + 1), first_bad), dict(metrics, loss=loss)

    dequantized = dequantizes(config.data_kind, vae.config.likelihood)
    noise = jax.vmap(functools.partial(step_noise, config, vae.config.latent_dim, dequantized), (None, 0, 0))

    def run(state: TrainState, batches: Array, train_key: PRNGKey, checked: bool):  # -> (state, epoch metrics)
        num_steps, batch_size, dim = batches.shape
        itemsize = to_unit_float(batches[:0]).dtype.itemsize  # of the inputs, whatever the storage
        per_step = batch_size * itemsize * (config.num_samples * vae.config.latent_dim
                                            + dim * (config.binarize or dequantized))
        chunk = noise_chunk_length(num_steps, per_step)

        def chunk_of_steps(carry, xs):  # xs [chunk, B, D]: draw the chunk's noise at once, then step
            eps, xs = noise(train_key, carry[0].step + jnp.arange(chunk), xs)
            return lax.scan(functools.partial(step, checked=checked), carry, (xs, eps))

        batches = batches.reshape(num_steps // chunk, chunk, batch_size, dim)
        (state, first_bad), metrics = lax.scan(chunk_of_steps, (state, jnp.int32(-1)), batches)
        metrics = dict(jax.tree_util.tree_map(jnp.mean, metrics), first_bad_step=first_bad)
        return state, metrics

    @jax.jit
    def fast(state: TrainState, batches: Array, train_key: PRNGKey):
        state, metrics = run(state, batches, train_key, checked=False)
        return state, metrics, all_finite((state, metrics["loss"]))  # a non-finite loss makes its mean so

    checked = jax.jit(functools.partial(run, checked=True))
    return TrainEpoch(fast, checked, check_every_step)


@dataclasses.dataclass(frozen=True)
class TrainEpoch:
    """``train_epoch(state, batches [S, B, D], train_key) -> (state, metrics)`` (see :func:`make_train_epoch`).

    ``fast(state, batches, train_key) -> (state, metrics, finite)`` is the optimistic epoch and ``checked``
    the epoch with a check on every step, each jitted; ``checked`` is compiled only when first needed.
    """

    fast: Callable
    checked: Callable
    check_every_step: bool = False

    def __call__(self, state: TrainState, batches: Array, train_key: PRNGKey):
        if not self.check_every_step:
            new, metrics, finite = self.fast(state, batches, train_key)
            if finite:  # waits for the epoch
                return new, metrics
        return self.checked(state, batches, train_key)
