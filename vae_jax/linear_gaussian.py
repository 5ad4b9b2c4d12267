"""A linear-Gaussian latent variable model whose log p(x) and posterior are known exactly.

    p(z) = N(0, I_K),   p(x|z) = N(W z + b, s^2 I_D)
    p(x) = N(b, W W^T + s^2 I_D)
    p(z|x) = N(Sigma W^T (x - b) / s^2, Sigma),  Sigma = (I_K + W^T W / s^2)^-1

With orthogonal columns of W the posterior covariance is diagonal, so a diagonal-Gaussian q can be
exact. Used as an oracle for the estimators in tests, notebooks and experiments.
"""

import dataclasses

import jax
import jax.numpy as jnp

from vae_jax.distributions import gaussian_log_prob
from vae_jax.distributions import LOG_2PI
from vae_jax.types import Array, ArrayLike, PRNGKey


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
    """Parameters: weight [D, K], bias [D], noise standard deviation s (scalar)."""

    weight: Array
    bias: Array
    noise_std: float

    @classmethod
    def orthogonal(cls, key: PRNGKey, data_dim: int, latent_dim: int, scale: float = 2.0,
                   noise_std: float = 0.5, dtype=jnp.float32) -> "LinearGaussian":
        """A model whose W has orthogonal columns (so the exact posterior is diagonal)."""
        w_key, s_key, b_key = jax.random.split(key, 3)
        q, _ = jnp.linalg.qr(jax.random.normal(w_key, (data_dim, latent_dim), dtype))
        scales = scale * jax.random.uniform(s_key, (latent_dim,), dtype, 0.5, 1.5)
        bias = jax.random.normal(b_key, (data_dim,), dtype)
        return cls(q * scales, bias, noise_std)

    def log_likelihood(self, x: ArrayLike, z: ArrayLike) -> Array:
        """log N(x; W z + b, s^2 I) for one x [D], z [K]."""
        return gaussian_log_prob(x, self.weight @ z + self.bias, jnp.log(self.noise_std))

    def log_marginal(self, x: ArrayLike) -> Array:
        """Exact log p(x) = log N(x; b, W W^T + s^2 I) for one x [D]."""
        d = self.weight.shape[0]
        cov = self.weight @ self.weight.T + self.noise_std**2 * jnp.eye(d, dtype=self.weight.dtype)
        chol = jnp.linalg.cholesky(cov)
        white = jax.scipy.linalg.solve_triangular(chol, x - self.bias, lower=True)
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
        return -0.5 * (jnp.sum(white**2) + log_det + d * LOG_2PI)

    def posterior(self, x: ArrayLike) -> tuple[Array, Array]:
        """Exact p(z|x) as (mean [K], covariance [K, K])."""
        k = self.weight.shape[1]
        precision = jnp.eye(k, dtype=self.weight.dtype) + self.weight.T @ self.weight / self.noise_std**2
        cov = jnp.linalg.inv(precision)
        return cov @ self.weight.T @ (x - self.bias) / self.noise_std**2, cov

    def diagonal_posterior(self, x: ArrayLike) -> tuple[Array, Array]:
        """(mean [K], log_var [K]): the exact posterior when W has orthogonal columns."""
        mean, cov = self.posterior(x)
        return mean, jnp.log(jnp.diag(cov))

    def sample(self, key: PRNGKey, num: int) -> Array:
        """[num, D] draws of x from p(x)."""
        z_key, n_key = jax.random.split(key)
        z = jax.random.normal(z_key, (num, self.weight.shape[1]), self.weight.dtype)
        noise = jax.random.normal(n_key, (num, self.weight.shape[0]), self.weight.dtype)
        return z @ self.weight.T + self.bias + self.noise_std * noise
