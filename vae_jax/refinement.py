"""Refined posteriors: the amortization gap (Cremer, Li & Duvenaud, "Inference suboptimality in
variational autoencoders", 2018).

The encoder gives q(z|x) = N(mean(x), diag exp(log_var(x))) for every x at once (amortized). Optimizing
one example's (mean, log_var) on its own ELBO, starting from the encoder's output, gives the best
diagonal Gaussian q*(z|x) this family can reach. Then

    amortization gap = ELBO(q*) - ELBO(q)          (what the encoder loses by sharing parameters)
    approximation gap = log p(x) - ELBO(q*)        (what a diagonal Gaussian cannot represent)

and importance sampling with q* as the proposal is an estimator of its own.
"""

import jax
import jax.numpy as jnp
import optax
from jax import lax

from vae_jax import validation
from vae_jax.objectives import elbo
from vae_jax.types import Array, ArrayLike, LogLikelihoodFn, PRNGKey


def _adam_on_elbo(key, log_likelihood, x, learning_rate, num_samples):
    """(optimizer, step): step((q, opt_state), t) -> ((q, opt_state), loss), one Adam step on -ELBO of q =
    (mean, log_var) with ``num_samples`` draws from ``fold_in(key, t)``."""
    optimizer = optax.adam(learning_rate)
    loss = lambda q, k: -elbo(k, log_likelihood, x, q[0], q[1], num_samples)

    def step(carry, t):
        q, opt_state = carry
        value, grads = jax.value_and_grad(loss)(q, jax.random.fold_in(key, t))
        updates, opt_state = optimizer.update(grads, opt_state, q)
        return (optax.apply_updates(q, updates), opt_state), value

    return optimizer, step


def refine_posterior(
    key: PRNGKey,
    log_likelihood: LogLikelihoodFn,
    x: ArrayLike,
    mean: ArrayLike,
    log_var: ArrayLike,
    num_steps: int,
    *,
    learning_rate: float = 1e-2,
    num_samples: int = 10,
) -> tuple[Array, Array]:
    """This example's (mean [K], log_var [K]) after ``num_steps`` Adam steps on its ELBO.

    Step t estimates the ELBO with ``num_samples`` reparameterized draws from ``fold_in(key, t)`` (the
    KL is exact). The encoder's parameters are not touched. jit with ``log_likelihood``, ``num_steps``
    and ``num_samples`` static; vmap over (key, x, mean, log_var).

    Returns:
      the refined (mean, log_var).
    """
    x, mean, log_var = validation.check_example(x, mean, log_var)
    num_steps = validation.check_positive_int("num_steps", num_steps)
    optimizer, step = _adam_on_elbo(key, log_likelihood, x, learning_rate, num_samples)
    q = (mean, log_var)
    (q, _), _ = lax.scan(step, (q, optimizer.init(q)), jnp.arange(num_steps))
    return q


def refine_until_converged(
    key: PRNGKey,
    log_likelihood: LogLikelihoodFn,
    x: ArrayLike,
    mean: ArrayLike,
    log_var: ArrayLike,
    max_steps: int,
    *,
    learning_rate: float = 1e-2,
    num_samples: int = 10,
    patience: int = 10,
    window: int = 100,
) -> tuple[Array, Array, Array]:
    """:func:`refine_posterior`'s Adam steps (the same draws) run until they stop improving the ELBO.

    The rule (Cremer et al.'s): the steps run in windows of ``window``; after each window its mean loss is
    compared with the best window mean so far, and refinement stops once ``patience`` windows in a row have not
    improved on it, or after ``max_steps`` (rounded up to whole windows). jit with ``log_likelihood`` and the
    counts static; under vmap each example stops on its own (the finished ones are carried unchanged).

    Returns:
      the refined (mean [K], log_var [K]) and the number of steps taken (int32 scalar).
    """
    x, mean, log_var = validation.check_example(x, mean, log_var)
    window = validation.check_positive_int("window", window)
    max_windows = -(-validation.check_positive_int("max_steps", max_steps) // window)
    patience = validation.check_positive_int("patience", patience)
    optimizer, step = _adam_on_elbo(key, log_likelihood, x, learning_rate, num_samples)

    def run_window(state):
        q, opt_state, w, best, stale = state
        (q, opt_state), losses = lax.scan(step, (q, opt_state), w * window + jnp.arange(window))
        mean_loss = jnp.mean(losses)
        improved = mean_loss < best
        return q, opt_state, w + 1, jnp.where(improved, mean_loss, best), jnp.where(improved, 0, stale + 1)

    def going(state):
        return (state[2] < max_windows) & (state[4] < patience)

    q = (mean, log_var)
    init = (q, optimizer.init(q), jnp.int32(0), jnp.asarray(jnp.inf, mean.dtype), jnp.int32(0))
    (mean, log_var), _, windows, _, _ = lax.while_loop(going, run_window, init)
    return mean, log_var, windows * window
