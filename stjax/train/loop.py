"""The generic train loop of pretraining and fine-tuning: create or restore the state, step, log, checkpoint.

Framework, backbone and data are all supplied from outside (`stjax.train.setup.Run`); this loop has no
branch for any of them. Input batches come from `run.batches(start_batch, num_shards)`,
an iterator of this process's host batches (NumPy), so the loop itself never
imports TensorFlow.

A SIGTERM (a scheduler's preemption notice) stops the loop at the next step
boundary, on every process at the same step, after a checkpoint: the same
command started again continues from there and ends with the same state as a
run that was never interrupted. One that comes while the loop starts up
(restoring, compiling) stops it before its first step, having written nothing.

Every step is checked for a non-finite loss, gradient norm or state on the
device (`step.guarded_train_step`, which keeps the state from the first such
step on); the host reads the verdict with the metrics it fetches to log or
save, and stops with `NonFiniteLossError` naming that first step and the last
checkpoint saved, which is always of a finite state.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, NamedTuple

import jax

from stjax.data import device as device_lib
from stjax.objectives import Framework
from stjax.train import checkpoint as checkpoint_lib
from stjax.train import mesh as mesh_lib
from stjax.train import preemption as preemption_lib
from stjax.train import metrics as metrics_lib
from stjax.train import step as step_lib
from stjax.train.optimizer import create_optimizer
from stjax.train.setup import Run
from stjax.train.state import StateFactory, TrainState


class NonFiniteLossError(FloatingPointError):
    """The loss, the gradients or the state became NaN or infinite; the message names the first such step and
    the last good checkpoint (one of a finite state)."""


Preempted = preemption_lib.Preempted  # a SIGTERM stopped the run (`python -m stjax.main` exits 0 on it)


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    framework: Framework
    state_factory: StateFactory
    steps: int
    train_seconds: float          # wall time spent stepping, all sessions of this run together
    resumed_from: int | None
    preempted: bool = False       # stopped early on a SIGTERM, after saving a checkpoint at `steps`


PretrainResult = TrainResult  # the name before the loop served fine-tuning too


class LoopState(NamedTuple):
    """What changes from one step to the next, handed explicitly to whatever reads or saves it."""
    state: TrainState
    divergence: dict              # on device: the first non-finite step's record (step 0: none)
    last_good: int | None         # the newest checkpoint of a finite state


def _watching_preemption(train):
    """`train(..., watch=PreemptionWatch)` with the watch from its first line: a SIGTERM while it restores or
    compiles is caught too (and stops it before its first step)."""

    @functools.wraps(train)
    def watched(*args, **kwargs):
        watch = preemption_lib.PreemptionWatch()
        try:
            return train(*args, watch=watch, **kwargs)
        finally:
            watch.close()

    return watched


@_watching_preemption
def train(
    run: Run,
    workdir: str,
    *,
    stop_after: int | None = None,
    evaluate: Callable[[TrainState], dict] | None = None,
    watch: preemption_lib.PreemptionWatch,
) -> TrainResult:
    """Trains `run.framework` for `run.total_steps` on `run.batches`, resuming from WORKDIR/checkpoints.

    Args:
      run: the assembled run (`stjax.train.setup.build`); its config gives seed, batch_size, optimizer,
        log_every, checkpoint_every, keep_checkpoints, eval_every and model.init_from. A resumed run keeps
        the data slices its checkpoint records (`data_shards`), so the data continues as it would have, on
        any number of processes that divides it.
      stop_after: stop (with a checkpoint) after this many steps in this call, e.g. to test resuming;
        None runs to the end.
      evaluate: state -> {name: float}, run every `config.eval_every` steps (if > 0) and written to the
        metrics beside the loss (e.g. a kNN monitor of the backbone).
      watch: given by `_watching_preemption` (not by callers).

    The steps run under `jax.transfer_guard("disallow")`: batches go to the mesh through
    `stjax.data.device.prefetch_to_mesh`, metrics come back through `jax.device_get`, and an implicit
    host<->device copy (in a step or in `evaluate`) raises.

    Raises:
      Preempted: a SIGTERM came before the first step (while starting up; nothing written).
      NonFiniteLossError: a step's loss, gradient norm or state was not finite (or the checkpoint resumed
        from holds non-finite values).
    """
    config, framework, total_steps = run.config, run.framework, run.total_steps
    _stop_if_requested(watch, "before restoring or creating the state")
    mesh = run.mesh or mesh_lib.create_mesh()
    tx, schedule = create_optimizer(config, config.batch_size, total_steps, run.steps_per_epoch)
    factory = StateFactory(framework, tx, run.clips_shape, mesh)
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    # the newest checkpoint that reads back (an unreadable one is set aside, and the step before restored)
    restored = ckpt.restore_latest(factory.abstract)
    start = None if restored is None else restored[0]
    previous_seconds = 0.0
    data_shards = run.data_shards or jax.process_count()
    if start is not None:
        _, state, meta = restored
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
    if start > 0 and not bool(jax.jit(step_lib.all_finite)(state)):
        ckpt.close()
        raise NonFiniteLossError(
            f"the checkpoint of step {start} in {ckpt.directory} holds non-finite values: it was saved after the "
            f"run diverged (by an older stjax, which checked only the logged losses); steps saved: "
            f"{', '.join(map(str, ckpt.manager.all_steps()))}. Move {ckpt.directory}/{start} out of the way to "
            "resume from the one before it")
    replicated = mesh_lib.replicated_sharding(mesh)
    step_fn = step_lib.jit_guarded_train_step(framework, tx, factory.shardings, mesh_lib.batch_sharding(mesh),
                                              replicated, augmentation=run.augmentation)
    # a typed key cannot be device_put onto devices of other processes: its raw uint32 data can
    step_rng = jax.random.wrap_key_data(jax.device_put(jax.random.key_data(step_rng), replicated))
    loop = LoopState(state=state, divergence=jax.device_put(step_lib.no_divergence(), replicated),
                     last_good=start if start > 0 else None)
    end = total_steps if stop_after is None else min(total_steps, start + stop_after)
    writer = None
    started = time.time()

    def check_and_log(step: int, metrics: dict, last_good: int | None) -> None:
        fetched = jax.device_get(metrics)
        _raise_if_diverged(step, fetched, last_good, ckpt.directory)
        values = {k: float(v) for k, v in fetched.items() if k != "divergence"}
        values["learning_rate"] = _learning_rate(schedule, step)
        writer.write(step, values)
        progress.report(step, values)

    def save(loop: LoopState, step: int, metrics: dict) -> LoopState:
        """`loop` after checkpointing its state at `step` (only ever a state finite at every step)."""
        check_and_log(step, metrics, loop.last_good)
        ckpt.save(loop.state, {"train_seconds": previous_seconds + time.time() - started,
                               "data_batches_consumed": step, "data_shards": data_shards}, force=True)
        writer.flush(durable=True)
        return loop._replace(last_good=step)

    preempted = False
    try:
        batches = device_lib.prefetch_to_mesh(run.batches(start, data_shards), mesh_lib.batch_sharding(mesh))
        if start < end:  # compiled before the first step, so that a SIGTERM meanwhile stops before it
            batch = next(batches)
            step_fn = step_fn.lower(loop.state, loop.divergence, batch, step_rng).compile()
        _stop_if_requested(watch, f"before step {start + 1}")
        writer = metrics_lib.MetricWriter(workdir, start_step=start)
        progress = metrics_lib.Progress(total_steps, run.clips_shape[0] * run.clips_shape[1], start_step=start)
        started = time.time()
        pending = None  # (step number after the update, metrics on device): fetched one step late
        eval_every = config.get("eval_every", 0)
        with jax.transfer_guard("disallow"):
            for step in range(start, end):
                if step > start:
                    batch = next(batches)
                state, metrics = step_fn(loop.state, loop.divergence, batch, step_rng)
                loop = loop._replace(state=state, divergence=metrics["divergence"])
                if pending is not None:
                    check_and_log(*pending, loop.last_good)
                    pending = None
                done = step + 1
                if watch.should_stop(done):
                    if loop.last_good != done:
                        loop = save(loop, done, metrics)
                    preempted, end = True, done
                    if jax.process_index() == 0:
                        print(f"stopping at step {done} on {watch.requested_by}: checkpoint saved in "
                              f"{ckpt.directory}; the same command continues the run", flush=True)
                    break
                if done % config.checkpoint_every == 0 or done == end:
                    loop = save(loop, done, metrics)
                elif done % config.log_every == 0:
                    pending = (done, metrics)
                if evaluate is not None and eval_every > 0 and (done % eval_every == 0 or done == end):
                    # not a diverged state's
                    _raise_if_diverged(done, jax.device_get({"divergence": loop.divergence}), loop.last_good,
                                       ckpt.directory)
                    values = evaluate(loop.state)
                    writer.write(done, values)
                    if jax.process_index() == 0:
                        print(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()), flush=True)
            if pending is not None:
                check_and_log(*pending, loop.last_good)
            jax.block_until_ready(loop.state)
    finally:
        ckpt.close()
        if writer is not None:
            writer.close()
    return TrainResult(state=loop.state, framework=framework, state_factory=factory, steps=end,
                       train_seconds=previous_seconds + time.time() - started,
                       resumed_from=start if start else None, preempted=preempted)


def _learning_rate(schedule, step: int) -> float:
    """The learning rate of the update that made `step` (the optax schedule is evaluated with JAX: an
    intended host round trip, allowed explicitly inside the guarded loop)."""
    with jax.transfer_guard("allow"):
        return float(schedule(step - 1))


def _raise_if_diverged(step: int, fetched: dict, last_good: int | None, directory: str) -> None:
    """NonFiniteLossError if a step up to `step` was not finite (`fetched`: its metrics, on the host)."""
    bad = int(fetched["divergence"]["step"])
    if bad == 0:
        return
    loss, grad_norm = float(fetched["divergence"]["loss"]), float(fetched["divergence"]["grad_norm"])
    if not math.isfinite(loss):
        what = f"loss is {loss} at step {bad}"
    elif not math.isfinite(grad_norm):
        what = f"the gradient norm is {grad_norm} at step {bad} (loss {loss:.4g})"
    else:
        what = f"the state is not finite after step {bad} (loss {loss:.4g}, gradient norm {grad_norm:.4g})"
    where = f"step {last_good} in {directory}" if last_good else "none (no checkpoint yet)"
    later = f" (seen at step {step}; the steps after {bad} changed nothing)" if step > bad else ""
    raise NonFiniteLossError(f"{what}; stopping. Last good checkpoint: {where}{later}")


def _stop_if_requested(watch: preemption_lib.PreemptionWatch, where: str) -> None:
    """Preempted (no checkpoint written) if a SIGTERM came while this process was starting up."""
    if watch.requested_by is not None:
        raise Preempted(f"stopped on {watch.requested_by} during start-up, {where}: no step trained, nothing "
                        "saved", checkpoint_saved=False)


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


def random_init_state(result: TrainResult, seed: int) -> TrainState:
    """The state this run started from (same seed), e.g. for a random-init baseline."""
    init_rng, _ = jax.random.split(jax.random.key(seed))
    return result.state_factory.create(init_rng)


def stack_loss_history(workdir: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in metrics_lib.read_metrics(workdir) if "loss" in r]

