"""Device mesh and the shardings of batches.

One mesh axis, `data`, over all devices of all processes; room for more axes
later. A global batch is split along its leading dimension over `data`.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def create_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (default: all, process by process), axis `data`."""
    # Each process's devices side by side, so that its host batch is one contiguous block of the global one.
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"num_devices must be in 1..{len(devices)}, got {num_devices}")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over `data`, everything else replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh, field: str = "batch_size") -> int:
    """Per-process batch size for `global_batch_size`; a clear error if it does not divide."""
    devices = mesh.devices.size
    if global_batch_size < 1 or global_batch_size % devices:
        raise ValueError(
            f"{field}={global_batch_size} must be a positive multiple of the number of devices "
            f"({devices}); valid values: {devices}, {2 * devices}, {4 * devices}, ..."
        )
    return global_batch_size // jax.process_count()
