"""The loop's former home: `pretrain(...)` with its pieces as arguments, for callers written before
`stjax.train.setup.Run` and `stjax.train.loop.train` (the loop itself)."""
from __future__ import annotations

from typing import Callable, Iterator

import jax

from stjax.objectives import Framework
from stjax.train.loop import (LoopState, NonFiniteLossError, Preempted, PretrainResult, TrainResult,
                              random_init_state, stack_loss_history, train)
from stjax.train.setup import Run
from stjax.train.state import TrainState

__all__ = ["LoopState", "NonFiniteLossError", "Preempted", "PretrainResult", "TrainResult", "pretrain",
           "random_init_state", "stack_loss_history", "train"]


def pretrain(
    config,
    workdir: str,
    framework: Framework,
    make_batches: Callable[[int, int], Iterator[dict]],
    clips_shape: tuple,
    total_steps: int,
    steps_per_epoch: float,
    mesh=None,
    stop_after: int | None = None,
    evaluate: Callable[[TrainState], dict] | None = None,
    data_shards: int | None = None,
) -> TrainResult:
    """`stjax.train.loop.train` of a `Run` made of these pieces (`clips_shape`: the global clips shape
    [B, ρ, T, S, S, 3] the state is initialised with; device augmentation as `config.data.augment_on` says)."""
    from stjax.data import augment_config

    on_device = (config.get("data") or {}).get("augment_on") == "device"
    run = Run(config=config, mesh=mesh, framework=framework, batches=make_batches,
              element_spec={"clips": jax.ShapeDtypeStruct(tuple(clips_shape), "uint8")},
              total_steps=total_steps, steps_per_epoch=steps_per_epoch, data_shards=data_shards,
              augmentation=augment_config.from_config(config) if on_device else None)
    return train(run, workdir, stop_after=stop_after, evaluate=evaluate)
