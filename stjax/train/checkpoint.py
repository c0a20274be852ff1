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


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` for a TrainState."""

    def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True):
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
