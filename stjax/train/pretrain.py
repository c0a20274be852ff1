"""The generic pretraining loop: create or restore the state, step, log, checkpoint.

Framework, backbone and data are all supplied from outside; this loop has no
branch for any of them. Input batches come from `make_batches(start_batch, num_shards)`,
an iterator of this process's host batches (NumPy), so the loop itself never
imports TensorFlow.

A SIGTERM (a scheduler's preemption notice) stops the loop at the next step
boundary, on every process at the same step, after a checkpoint: the same
command started again continues from there and ends with the same state as a
run that was never interrupted.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Iterator

import jax

from stjax.data import augment_config
from stjax.data import device as device_lib
from stjax.objectives import Framework
from stjax.train import checkpoint as checkpoint_lib
from stjax.train import mesh as mesh_lib
from stjax.train import preemption as preemption_lib
from stjax.train import metrics as metrics_lib
from stjax.train import step as step_lib
from stjax.train.optimizer import create_optimizer
from stjax.train.state import StateFactory, TrainState


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class Preempted(Exception):
    """A run stopped on a SIGTERM after saving its checkpoint (`python -m stjax.main` exits 0 on it)."""


@dataclasses.dataclass
class PretrainResult:
    state: TrainState
    framework: Framework
    state_factory: StateFactory
    steps: int
    train_seconds: float          # wall time spent stepping, all sessions of this run together
    resumed_from: int | None
    preempted: bool = False       # stopped early on a SIGTERM, after saving a checkpoint at `steps`


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
) -> PretrainResult:
    """Trains `framework` for `total_steps`, resuming from WORKDIR/checkpoints if present.

    Args:
      config: the run config (uses seed, batch_size, optimizer, log_every,
        checkpoint_every, keep_checkpoints).
      make_batches: (start_batch, num_shards) → iterator of this process's host batches
        {'clips': uint8 [b, ρ, T, S, S, 3], ...}, the global stream being defined over
        `num_shards` slices of the data (`stjax.data.config.pretrain_batches`).
      data_shards: the stream's slices for a new run (default: one per process). A resumed run
        keeps the number its checkpoint records, so the data continues as it would have, on
        any number of processes that divides it.
      clips_shape: global clips shape [B, ρ, T, S, S, 3], for initialisation.
      stop_after: stop (with a checkpoint) after this many steps in this call,
        e.g. to test resuming; None runs to the end.
      evaluate: state -> {name: float}, run every `config.eval_every` steps (if > 0) and
        written to the metrics beside the loss (e.g. a kNN monitor of the backbone).
    """
    mesh = mesh or mesh_lib.create_mesh()
    tx, schedule = create_optimizer(config, config.batch_size, total_steps, steps_per_epoch)
    factory = StateFactory(framework, tx, clips_shape, mesh)
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    start = ckpt.latest_step()
    previous_seconds = 0.0
    data_shards = data_shards or jax.process_count()
    if start is not None:
        state, meta = ckpt.restore(factory.abstract)
        previous_seconds = float(meta.get("train_seconds", 0.0))
        data_shards = int(meta.get("data_shards", data_shards))
        if jax.process_index() == 0:
            print(f"resuming from step {start} ({ckpt.directory})", flush=True)
    else:
        state = factory.create(init_rng)
        if config.model.get("init_from"):
            state = _with_imported_backbone(state, framework, config.model.init_from, config.model.backbone,
                                            factory.shardings)
        start = 0
    on_device = (config.get("data") or {}).get("augment_on") == "device"
    augmentation = augment_config.from_config(config) if on_device else None
    step_fn = step_lib.jit_train_step(framework, tx, factory.shardings, mesh_lib.batch_sharding(mesh),
                                      mesh_lib.replicated_sharding(mesh), augmentation=augmentation)
    writer = metrics_lib.MetricWriter(workdir)
    progress = metrics_lib.Progress(total_steps, clips_shape[0] * clips_shape[1], start_step=start)
    batches = device_lib.prefetch_to_mesh(make_batches(start, data_shards), mesh_lib.batch_sharding(mesh))
    end = total_steps if stop_after is None else min(total_steps, start + stop_after)
    last_good = start if start > 0 else None

    def check_and_log(step, metrics):
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(values["loss"]):
            where = f"step {last_good} in {ckpt.directory}" if last_good else "none (no checkpoint yet)"
            raise NonFiniteLossError(
                f"loss is {values['loss']} at step {step}; stopping. Last good checkpoint: {where}"
            )
        values["learning_rate"] = float(schedule(step - 1))
        writer.write(step, values)
        progress.report(step, values)

    def save(step, metrics):
        nonlocal last_good
        check_and_log(step, metrics)  # a checkpoint is only written after a finite loss
        ckpt.save(state, {"train_seconds": previous_seconds + time.time() - started,
                          "data_batches_consumed": step, "data_shards": data_shards}, force=True)
        last_good = step

    started = time.time()
    pending = None  # (step number after the update, metrics on device): fetched one step late
    watch = preemption_lib.PreemptionWatch()
    preempted = False
    try:
        for step in range(start, end):
            state, metrics = step_fn(state, next(batches), step_rng)
            if pending is not None:
                check_and_log(*pending)
                pending = None
            done = step + 1
            if watch.should_stop(done):
                if last_good != done:
                    save(done, metrics)
                preempted, end = True, done
                if jax.process_index() == 0:
                    print(f"stopping at step {done} on {watch.requested_by}: checkpoint saved in {ckpt.directory}; "
                          "the same command continues the run", flush=True)
                break
            if done % config.checkpoint_every == 0 or done == end:
                save(done, metrics)
            elif done % config.log_every == 0:
                pending = (done, metrics)
            eval_every = config.get("eval_every", 0)
            if evaluate is not None and eval_every > 0 and (done % eval_every == 0 or done == end):
                values = evaluate(state)
                writer.write(done, values)
                if jax.process_index() == 0:
                    print(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()), flush=True)
        if pending is not None:
            check_and_log(*pending)
        jax.block_until_ready(state)
    finally:
        watch.close()
        ckpt.close()
        writer.flush()
    return PretrainResult(state=state, framework=framework, state_factory=factory, steps=end,
                          train_seconds=previous_seconds + time.time() - started,
                          resumed_from=start if start else None, preempted=preempted)


def _with_imported_backbone(state: TrainState, framework: Framework, path: str, backbone: str,
                            shardings) -> TrainState:
    """`state` with its backbone (and momentum target's) loaded from an exported or PyTorch checkpoint."""
    from stjax import export

    spec, variables = export.load_backbone(path, backbone=backbone)
    current = framework.backbone_variables(state.params, state.batch_stats)
    export.check_matches(variables, jax.device_get(current), f"model.init_from={path} ({spec['backbone']})")
    params, batch_stats, extra = framework.with_backbone(state.params, state.batch_stats, state.extra, variables)
    state = state.replace(params=params, batch_stats=batch_stats, extra=extra)
    if jax.process_index() == 0:
        print(f"backbone initialised from {path}", flush=True)
    return jax.device_put(state, shardings)


def random_init_state(result: PretrainResult, seed: int) -> TrainState:
    """The state this run started from (same seed), e.g. for a random-init baseline."""
    init_rng, _ = jax.random.split(jax.random.key(seed))
    return result.state_factory.create(init_rng)


def stack_loss_history(workdir: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in metrics_lib.read_metrics(workdir) if "loss" in r]

