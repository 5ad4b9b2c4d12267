"""The oracle checks again in float64, at tolerances near float64 rounding.

x64 is switched on only inside this module (``jax.enable_x64``), so other modules stay float32.
"""

import jax
import jax.numpy as jnp
import pytest

from tests import oracle_checks


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_importance_with_exact_posterior_is_exact():
    oracle_checks.check_importance_with_exact_posterior_is_exact(jnp.float64, rtol=1e-12)


def test_naive_converges_in_2d():
    oracle_checks.check_naive_converges_in_2d(jnp.float64)


def test_mismatched_q_ordering():
    oracle_checks.check_mismatched_q_ordering(jnp.float64)


def test_chunk_size_invariance():
    oracle_checks.check_chunk_size_invariance(jnp.float64, rtol=1e-12)


def test_dtype_is_float64():
    model = oracle_checks.model(jnp.float64)
    assert model.weight.dtype == jnp.float64
