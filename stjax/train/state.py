"""The train state (a pytree) and its creation directly onto the mesh."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from stjax.train import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training. `extra` is the framework's own state."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    extra: Any
    opt_state: Any


class StateFactory:
    """Creates the train state directly on `mesh`, or describes it for a restore.

    `jax.eval_shape` gives the state's structure, from which the shardings are
    derived (data parallelism: every leaf replicated), and the initialisation is
    compiled with those `out_shardings`, so no full copy ever lives on one device.
    """

    def __init__(self, framework, tx: optax.GradientTransformation, clips_shape: tuple, mesh: Mesh):
        def init(rng):
            clips = jnp.zeros(clips_shape, jnp.float32)
            params, batch_stats, extra = framework.init(rng, clips)
            return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                              extra=extra, opt_state=tx.init(params))

        self._init = init
        abstract = jax.eval_shape(init, jax.random.key(0))
        self.shardings = jax.tree.map(lambda _: mesh_lib.replicated_sharding(mesh), abstract)
        self.abstract = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, self.shardings
        )

    def create(self, rng: jax.Array) -> TrainState:
        return jax.jit(self._init, out_shardings=self.shardings)(rng)


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
