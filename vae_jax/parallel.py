"""Data parallelism with ``jax.sharding``: the batch split over all local devices, parameters replicated.

With one device every function here is the identity, so the same code runs on a laptop CPU, one GPU,
or a TPU slice. jit then partitions the training step itself (GSPMD): gradients are averaged across
devices by the compiler-inserted all-reduce, and results agree with one device up to float rounding.
For several hosts, call ``jax.distributed.initialize()`` before anything else (see README).
"""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(batch_size: int) -> Mesh | None:
    """A 1-D mesh over all devices, or None with one device or a batch they cannot share evenly."""
    devices = jax.devices()
    if len(devices) == 1:
        return None
    if batch_size % len(devices):
        raise ValueError(f"batch size {batch_size} must be divisible by the {len(devices)} devices "
                         "to split it across them; choose a multiple.")
    return Mesh(devices, (DATA_AXIS,))


def shard_batch(array, mesh: Mesh | None, batch_axis: int = 0):
    """Splits ``array`` along ``batch_axis`` across the mesh (identity without a mesh)."""
    if mesh is None:
        return array
    spec = [None] * array.ndim
    spec[batch_axis] = DATA_AXIS
    return jax.device_put(array, NamedSharding(mesh, PartitionSpec(*spec)))


def replicate(tree, mesh: Mesh | None):
    """Places a copy of every leaf of ``tree`` on each device of the mesh (identity without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
