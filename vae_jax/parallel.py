"""Data parallelism with ``jax.sharding``: the batch split over all local devices, parameters replicated.

With one device every function here is the identity, so the same code runs on a laptop CPU, one GPU,
or a TPU slice. jit then partitions the training step itself (GSPMD): gradients are averaged across
devices by the compiler-inserted all-reduce, and results agree with one device up to float rounding.
For several hosts, call ``jax.distributed.initialize()`` before anything else (see README).
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from vae_jax.errors import ConfigError

DATA_AXIS = "data"


def data_mesh(batch_size: int) -> Mesh | None:
    """A 1-D mesh over all devices, or None with one device or a batch they cannot share evenly."""
    devices = jax.devices()
    if len(devices) == 1:
        return None
    if batch_size % len(devices):
        raise ConfigError(f"batch size {batch_size} must be divisible by the {len(devices)} devices "
                         "to split it across them; choose a multiple.")
    return Mesh(devices, (DATA_AXIS,))


def _put(array, sharding):
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)
    # Several processes: each holds the same full array (same data, same keys) and gives its own
    # devices their slices of it.
    if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):
        data = _put(np.asarray(jax.random.key_data(array)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(array))
    host = np.asarray(array)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_batch(array, mesh: Mesh | None, batch_axis: int = 0):
    """Splits ``array`` along ``batch_axis`` across the mesh (identity without a mesh)."""
    if mesh is None:
        return array
    spec = [None] * array.ndim
    spec[batch_axis] = DATA_AXIS
    return _put(array, NamedSharding(mesh, PartitionSpec(*spec)))


def batch_spec(shape: tuple[int, ...], dtype, mesh: Mesh | None) -> jax.ShapeDtypeStruct:
    """The abstract value of a batch [B, ...] as :func:`shard_batch` places it, for ahead-of-time compiling."""
    if mesh is None:
        return jax.ShapeDtypeStruct(shape, dtype)
    spec = PartitionSpec(DATA_AXIS, *([None] * (len(shape) - 1)))
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


def replicate(tree, mesh: Mesh | None):
    """Places a copy of every leaf of ``tree`` on each device of the mesh (identity without a mesh)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda leaf: _put(leaf, sharding), tree)


def to_host(tree):
    """NumPy copies of ``tree``'s leaves, gathered from every process when several take part."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int):
    """Joins a multi-process run (``jax.distributed.initialize``); on CPU collectives go through gloo."""
    # Must run before anything touches a device. The setting only concerns CPU devices.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def is_primary() -> bool:
    """True in the process that writes logs and metrics (process 0)."""
    return jax.process_index() == 0
