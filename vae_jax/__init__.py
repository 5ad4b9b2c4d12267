"""vae-jax: variational autoencoders as pure JAX functions, with honest estimators of log p(x)."""

from vae_jax.ais import AISRecord, ais_log_marginal, reverse_ais_log_marginal
from vae_jax.config import ModelConfig
from vae_jax.distributions import (
    bernoulli_log_prob,
    diag_normal_log_prob,
    gaussian_log_prob,
    standard_normal_log_prob,
)
from vae_jax.estimators import (
    LogMeanExpStats,
    importance_log_marginal,
    importance_log_marginal_stats,
    naive_log_marginal,
    naive_log_marginal_stats,
)
from vae_jax.models import VAE
from vae_jax.objectives import elbo, elbo_terms, kl_standard_normal
from vae_jax.refinement import refine_posterior
from vae_jax.sampling import reparameterize, standard_normal_stream

__version__ = "0.1.0"

__all__ = [
    "AISRecord",
    "VAE",
    "LogMeanExpStats",
    "ModelConfig",
    "ais_log_marginal",
    "bernoulli_log_prob",
    "diag_normal_log_prob",
    "elbo",
    "elbo_terms",
    "gaussian_log_prob",
    "importance_log_marginal",
    "importance_log_marginal_stats",
    "kl_standard_normal",
    "naive_log_marginal",
    "naive_log_marginal_stats",
    "refine_posterior",
    "reparameterize",
    "reverse_ais_log_marginal",
    "standard_normal_log_prob",
    "standard_normal_stream",
]
