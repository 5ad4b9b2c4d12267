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
    optimizer = optax.adam(learning_rate)
    loss = lambda q, k: -elbo(k, log_likelihood, x, q[0], q[1], num_samples)

    def step(carry, t):
        q, opt_state = carry
        grads = jax.grad(loss)(q, jax.random.fold_in(key, t))
        updates, opt_state = optimizer.update(grads, opt_state, q)
        return (optax.apply_updates(q, updates), opt_state), None

    q = (mean, log_var)
    (q, _), _ = lax.scan(step, (q, optimizer.init(q)), jnp.arange(num_steps))
    return q
