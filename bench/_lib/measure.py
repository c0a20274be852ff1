"""The measurements of the stjax step, each run in a child process: compile and time the step
(`measure_stjax`), its own allocator peak in a fresh process that loads it from the compilation cache
(`measure_step_memory`), and its FLOPs from XLA:CPU's cost analysis (`count_flops`)."""
from __future__ import annotations

import statistics
import time

from .profile import PROFILED_STEPS, kernel_time
from .specs import _pretrain_config


def _flops(analysis) -> float | None:
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else None
    if not analysis:
        return None
    value = analysis.get("flops")
    return float(value) if value is not None and value > 0 else None


def _stjax_setup(spec: dict):
    """(compiled-step maker, mesh, batch) for `spec`; the maker compiles for a given config."""
    import jax
    import jax.numpy as jnp

    from stjax.objectives import create_framework
    from stjax.train import mesh as mesh_lib
    from stjax.train import step as step_lib
    from stjax.train.optimizer import create_optimizer
    from stjax.train.state import StateFactory

    mesh = mesh_lib.create_mesh()
    devices = mesh.devices.size
    spec = dict(spec, batch=spec["batch_per_device"] * devices)
    shape = (spec["batch"], spec["rho"], spec["frames"], spec["crop"], spec["crop"], 3)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    replicated = mesh_lib.replicated_sharding(mesh)

    def build(remat: bool):
        config = _pretrain_config(dict(spec, remat=remat))
        framework = create_framework(config, total_steps=10_000, steps_per_epoch=100)
        tx, _ = create_optimizer(config, spec["batch"], 10_000, 100)
        factory = StateFactory(framework, tx, shape, mesh)
        step = step_lib.jit_train_step(framework, tx, factory.shardings, batch_sharding, replicated)
        return factory, step

    clips = jax.jit(lambda key: jax.random.randint(key, shape, 0, 256, jnp.int32).astype(jnp.uint8),
                    out_shardings=batch_sharding)(jax.random.key(1))
    return build, mesh, {"clips": clips}, spec


def _use_compilation_cache(directory: str | None) -> None:
    """Every compiled program of this process goes to (and comes from) the cache in `directory`."""
    if directory:
        import jax

        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _peak_bytes() -> int | None:
    import jax

    return (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")


CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _compiled_step(spec: dict):
    """(compiled step, state, batch, rng, mesh, spec, figures): figures are the compile seconds, whether
    the step came from the compilation cache, and the allocator's peak before any step."""
    import jax

    _use_compilation_cache(spec.get("compilation_cache"))
    build, mesh, batch, spec = _stjax_setup(spec)
    rng = jax.random.key(0)
    factory, step = build(spec["remat"])
    state = factory.create(jax.random.key(0))
    hits = []

    def count_hit(event, **_):
        if event == CACHE_HIT_EVENT:
            hits.append(event)

    jax.monitoring.register_event_listener(count_hit)
    started = time.perf_counter()
    compiled = step.lower(state, batch, rng).compile()
    figures = dict(compile_s=time.perf_counter() - started, step_from_cache=bool(hits),
                   peak_bytes_before_steps=_peak_bytes())
    jax.monitoring.unregister_event_listener(count_hit)
    return compiled, state, batch, rng, mesh, spec, figures


def step_peak_bytes(result: dict) -> int | None:
    """The allocator peak of `result` when a step reached it: None when the peak was already reached
    before the first step (by compiling: autotuning convolutions allocates scratch memory), which
    then hides the step's own peak."""
    peak, before = result.get("peak_bytes"), result.get("peak_bytes_before_steps")
    return peak if peak is not None and before is not None and peak > before else None


def measure_stjax(spec: dict) -> dict:
    """Compiles and times the train step for `spec`; returns the figures (see bench/train_step.py's docstring)."""
    import jax

    compiled, state, batch, rng, mesh, spec, figures = _compiled_step(spec)
    memory = compiled.memory_analysis()
    estimate = None
    if memory is not None:
        estimate = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
                    + memory.temp_size_in_bytes)
    for _ in range(spec["warmup"]):
        state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(spec["rounds"]):
        started = time.perf_counter()
        for _ in range(spec["steps"]):
            state, metrics = compiled(state, batch, rng)
        jax.block_until_ready((state, metrics))
        times.append((time.perf_counter() - started) / spec["steps"])
    loss = float(metrics["loss"])
    profiled = None
    if spec.get("profile"):
        jax.profiler.start_trace(spec["profile"])
        for _ in range(PROFILED_STEPS):
            state, metrics = compiled(state, batch, rng)
        jax.block_until_ready((state, metrics))
        jax.profiler.stop_trace()
        profiled = kernel_time(spec["profile"], PROFILED_STEPS)
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    return dict(
        spec, devices=mesh.devices.size, device_kind=device.device_kind, platform=device.platform,
        **figures, step_s=statistics.median(times), step_s_all=times, loss=loss, kernel_time=profiled,
        peak_bytes=stats.get("peak_bytes_in_use"), memory_limit=stats.get("bytes_limit"), compiled_bytes=estimate,
        parameters=sum(x.size for x in jax.tree.leaves(state.params["backbone"])),
    )


def measure_step_memory(spec: dict) -> dict:
    """The step's own allocator peak, in a fresh process that loads the compiled programs from the
    compilation cache (`spec["compilation_cache"]`) which the timing process filled: nothing is
    autotuned here, so the peak that 2 steps reach is theirs."""
    import jax

    compiled, state, batch, rng, _, spec, figures = _compiled_step(spec)
    for _ in range(2):
        state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state, metrics))
    return dict(figures, peak_bytes=_peak_bytes())


def count_flops(spec: dict) -> dict:
    """FLOPs of one device's step for `spec`, with and without remat (see bench/train_step.py's docstring).

    Runs on one CPU device (the parent starts it with JAX_PLATFORMS=cpu) with `batch_per_device`
    videos; nothing is compiled or executed, XLA analyses the lowered program."""
    import jax

    build, mesh, batch, spec = _stjax_setup(spec)
    if mesh.devices.size != 1:
        raise RuntimeError(f"the FLOP count needs one device, found {mesh.devices.size}")
    counted = {}
    for remat in (False, True):
        factory, step = build(remat)
        counted["remat_flops" if remat else "model_flops"] = _flops(
            step.lower(factory.abstract, batch, jax.random.key(0)).cost_analysis())
    return dict(spec, **counted)
