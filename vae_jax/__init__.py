"""vae-jax: variational autoencoders as pure JAX functions, with honest estimators of log p(x)."""

from vae_jax.ais import AISRecord, ais_log_marginal, reverse_ais_log_marginal
from vae_jax.config import ModelConfig, TrainConfig
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
from vae_jax.refinement import refine_posterior, refine_until_converged
from vae_jax.sampling import reparameterize, standard_normal_stream
from vae_jax.smc import SMCRecord, smc_log_marginal

__version__ = "0.1.0"

_LAZY = {"fit": "vae_jax.train_loop", "train_and_evaluate": "vae_jax.train_loop", "load_run": "vae_jax.rundir"}


def __getattr__(name):
    """``fit``, ``train_and_evaluate`` and ``load_run`` are imported on first use: they bring Orbax and TFDS,
    which the pure functions above do not need."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vae_jax' has no attribute {name!r}")

__all__ = [
    "AISRecord",
    "VAE",
    "LogMeanExpStats",
    "ModelConfig",
    "SMCRecord",
    "TrainConfig",
    "ais_log_marginal",
    "bernoulli_log_prob",
    "diag_normal_log_prob",
    "elbo",
    "elbo_terms",
    "fit",
    "gaussian_log_prob",
    "importance_log_marginal",
    "importance_log_marginal_stats",
    "kl_standard_normal",
    "load_run",
    "naive_log_marginal",
    "naive_log_marginal_stats",
    "refine_posterior",
    "refine_until_converged",
    "reparameterize",
    "reverse_ais_log_marginal",
    "smc_log_marginal",
    "standard_normal_log_prob",
    "standard_normal_stream",
    "train_and_evaluate",
]
