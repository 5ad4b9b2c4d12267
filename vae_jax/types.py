"""Type aliases shared by the library.

Shapes are given in docstrings and comments: ``D`` is the data dimension, ``K`` the latent dimension,
``B`` a batch of examples and ``S`` a number of Monte Carlo samples.
"""

from typing import Any, Callable

import jax

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
PRNGKey = jax.Array  # a typed key from ``jax.random.key``
Params = Any  # a pytree of arrays
# log p(x | z) for ONE example: (x [D], z [K]) -> scalar.
LogLikelihoodFn = Callable[[Array, Array], Array]
