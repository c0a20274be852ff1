"""Orbax checkpoints of the train state, plus the data position, in `WORKDIR/checkpoints/`.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and
renames it when complete, so a save interrupted even by SIGKILL is never picked
up; its leftovers are removed when the next run opens the directory), the last
`max_to_keep` are kept. With several processes Orbax writes one checkpoint
together (each process its shards, process 0 the metadata and the rename). The data position is the number of batches consumed,
which equals the step: the pipeline is deterministic and resumes from it.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def use_replica_parallel_saving(enabled: bool) -> None:
    """Sets whether Orbax splits the writing of a replicated array among its replicas (its default off on GPUs,
    when JAX_PLATFORMS names them, and on elsewhere).

    Splitting takes a slice of every replica's copy with an eager jax op, and each (shape, replica) compiles
    its own small program on the first save of a process: with an r3d_micro ρBYOL state replicated on 8 CPU
    devices that first save blocked the training loop for ~11 s (2-core VM) of a ~37 s run. Writing each array
    from one replica should matter little at this project's checkpoint sizes (a Slow R-50 train state is
    ~0.5 GB; not measured on several hosts). The on-disk format does not change, so checkpoints written either
    way restore either way. Orbax reads the setting from its global registry of type handlers; this replaces
    its `jax.Array` handler, carrying over the handler's array metadata store.
    """
    current = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(current, "_use_replica_parallel", None) == enabled:
        return
    # the array metadata store is the one setting Orbax's default handler gives that the constructor's default lacks
    store = getattr(current, "_array_metadata_store", None)
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=enabled, array_metadata_store=store),
        override=True)


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` for a TrainState.

    Replicated arrays are written from one replica except on TPUs (`use_replica_parallel_saving`)."""

    def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True):
        use_replica_parallel_saving(jax.default_backend() == "tpu")
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,  # what a killed save left behind
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state, meta: dict | None = None, force: bool = False) -> bool:
        step = int(jax.device_get(state.step))
        return self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})),
            force=force,
        )

    def restore(self, abstract_state, step: int | None = None):
        """(state placed with the shardings in `abstract_state`, meta dict) of `step` (default latest)."""
        step = self.latest_step() if step is None else step
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
        )
        return restored["state"], restored["meta"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
