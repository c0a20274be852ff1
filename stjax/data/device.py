"""From host batches (NumPy, this process's slice) to global `jax.Array`s on a mesh.

Imports JAX but not TensorFlow: the tf.data iterator hands NumPy arrays over.
"""
from __future__ import annotations

import collections
from typing import Any, Iterable, Iterator

import jax
from jax.sharding import NamedSharding


def to_global(batch: Any, sharding: NamedSharding) -> Any:
    """Each leaf [b_local, ...] of this process → a global array [b_local·processes, ...].

    Every process passes its own slice; the result is sharded along the leading
    dimension as `sharding` says (uint8 frames stay uint8 on the device).
    """
    # the one sanctioned host->device copy of a loop under jax.transfer_guard("disallow"): with more than
    # one process JAX counts this assembly as an implicit transfer
    with jax.transfer_guard_host_to_device("allow"):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def prefetch_to_mesh(batches: Iterable[Any], sharding: NamedSharding, size: int = 2) -> Iterator[Any]:
    """Yields global arrays, keeping `size` batches already transferred ahead of use."""
    queue = collections.deque()
    iterator = iter(batches)

    def enqueue(n):
        for batch in iterator:
            queue.append(to_global(batch, sharding))
            if len(queue) >= n:
                return

    enqueue(size)
    while queue:
        yield queue.popleft()
        enqueue(size)
