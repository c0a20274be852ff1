"""Speed, FLOP/s, MFU and memory of one training step, against the same step in PyTorch.

    python bench/train_step.py                         # on a GPU/TPU: Slow R-50 8×8, 224², ρBYOL, ρ=2
    python bench/train_step.py --rhos 2,4 --max_batch  # also the largest batch that fits, per ρ
    python bench/train_step.py --backbone r3d_tiny --crop 64 --batch_per_device 4   # the CPU default
    python bench/train_step.py --lowering conv2d_concat --overrides '{"batch_norm": "flax"}'  # other implementations
    python bench/train_step.py --dtypes bfloat16 --remat off --variants '[{"name": "lars"},
        {"name": "sgd", "config": {"optimizer.name": "sgd"}},
        {"name": "flax BN", "overrides": {"batch_norm": "flax"}},
        {"name": "no triton gemm", "xla_flags": "--xla_gpu_enable_triton_gemm=false"}]'  # rows side by side

For each compute dtype × rematerialisation setting it compiles `stjax.train.step.train_step` (the
very step the training loop runs, with the framework's optimiser from configs/pretrain.py:k400_r50)
on a mesh over all local devices and times it on a synthetic uint8 batch already on the devices
(no input pipeline, no TensorFlow). Every measurement runs in its own process, so the peak-memory
counter and an out-of-memory failure belong to that measurement alone. Printed per setting:

  step ms      median over --rounds rounds of the mean of --steps back-to-back steps
  clips/s      B·ρ clips per step / step time (B = videos per step, all devices)
  TFLOP/s      per device: hardware FLOPs (XLA's cost analysis of the step's program at one
               device's shapes, counting rematerialised recomputation) / step time
  MFU          model FLOPs (the same count for the step without rematerialisation) / step time /
               the device's peak; the peak used is printed (bf16 dense tensor-core peak; float32
               uses the TF32 peak on NVIDIA GPUs, the precision XLA computes float32 convolutions
               and matmuls in by default)
  peak GiB     the device allocator's peak bytes in use (GPU/TPU) reached by the steps. Where it
               was reached before the first step (autotuning float32 convolutions while compiling
               can take more than the step), 2 steps run again in a fresh process that loads the
               compiled step from a compilation cache the timing filled, and that peak is shown
               (marked †). On a CPU: XLA's compiled memory estimate (arguments + outputs + temporaries)

The FLOPs are counted by XLA's CPU backend in a separate process, on the step lowered for one CPU
device with one accelerator's share of the batch: XLA:GPU's cost analysis of the compiled step does
not count the convolutions it hands to cuDNN as custom calls (it reported 70 GFLOP for a Slow R-50
step of 5.2 TFLOP on an H100), so the accelerator's own count would overstate nothing and
understate almost everything.

The PyTorch column (`bench/torch_reference.py`) times the same ρBYOL step of the same network in
PyTorch (bf16 autocast, channels-last-3d, cuDNN benchmark mode, eager and torch.compile, the
faster reported) and prints stjax's clips/s over it. torch comes from the `torch` extra; without
it the column says so and is skipped.

--variants measures the table once per variant, in one run: a JSON list (or @FILE holding one) of
objects with a "name" and any of "config" (config fields by dotted name, e.g. {"optimizer.name":
"sgd"}), "overrides" (backbone fields, over --overrides) and "xla_flags" (added to XLA_FLAGS of
that variant's process). The FLOPs are counted per variant (xla_flags aside), since a variant may
change the network.

With --max_batch the largest per-device batch (videos) that trains for each ρ in --rhos is found,
starting at --batch_per_device: a line through XLA's memory figures of the batches tried so far
predicts where the device's memory runs out, and the prediction is confirmed by training it and
failing one more (XLA_PYTHON_CLIENT_MEM_FRACTION=--mem_fraction; see search_largest_batch). Each try
compiles the step anew, so a start near the answer saves time.

Results go to stdout as tables, and with --out to OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.util
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "RESULT "
PARTIAL_TAG = "PARTIAL "
PROFILED_STEPS = 3

# Dense peak FLOP/s per device, by a substring of jax's `device_kind` (first match wins), for bf16
# and float32 computation. NVIDIA: tensor-core rates without sparsity (float32 = TF32). TPUs compute
# float32 matmuls in bf16 passes by default, so both entries are the bf16 peak.
PEAK_FLOPS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("H200", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("GH200", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
    ("L4", {"bfloat16": 121e12, "float32": 60.5e12}),
    ("TPU v4", {"bfloat16": 275e12, "float32": 275e12}),
    ("TPU v5 lite", {"bfloat16": 197e12, "float32": 197e12}),
    ("TPU v5e", {"bfloat16": 197e12, "float32": 197e12}),
    ("TPU v5", {"bfloat16": 459e12, "float32": 459e12}),
    ("TPU v6 lite", {"bfloat16": 918e12, "float32": 918e12}),
    ("TPU v6e", {"bfloat16": 918e12, "float32": 918e12}),
)


def peak_flops(device_kind: str, dtype: str, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one device of `device_kind` for `dtype`; None when unknown (e.g. CPUs)."""
    if override_tflops:
        return override_tflops * 1e12
    for name, peaks in PEAK_FLOPS:
        if name.lower() in device_kind.lower():
            return peaks[dtype]
    return None


# ----------------------------------------------------------------------------- child: stjax


def _pretrain_config(spec: dict):
    """configs/pretrain.py:k400_r50 for the framework, with the bench's backbone, shapes and model options."""
    from stjax import configlib

    config = configlib.load_config_file(str(ROOT / "configs" / "pretrain.py"), f"k400_r50,framework={spec['framework']},rho={spec['rho']},"
                               f"backbone={spec['backbone']},batch_size={spec['batch']}")
    config.data.num_frames = spec["frames"]
    config.data.augmentation.crop_size = spec["crop"]
    config.model.dtype = spec["dtype"]
    config.model.remat = spec["remat"]
    config.model.lowering = spec["lowering"]
    config.model.overrides = dict(spec.get("overrides") or {})
    configlib.set_fields(config, spec.get("config") or {})
    return config


VARIANT_KEYS = ("name", "config", "overrides", "xla_flags")


def parse_variants(text: str | None) -> list[dict]:
    """--variants: a JSON list of {"name", "config"?, "overrides"?, "xla_flags"?}, or @FILE holding one.

    Returns the variants with every key filled in; [{"name": "default", ...}] when `text` is empty.
    Raises ValueError naming what is wrong."""
    if not text:
        return [dict(name="default", config={}, overrides={}, xla_flags="")]
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as error:
            raise ValueError(f"--variants: cannot read {text[1:]}: {error.strerror}") from None
    try:
        variants = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--variants is not JSON: {error}") from None
    if not isinstance(variants, list) or not variants:
        raise ValueError("--variants must be a non-empty JSON list of objects")
    parsed = []
    for i, v in enumerate(variants):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not v["name"]:
            raise ValueError(f"--variants[{i}] must be an object with a non-empty \"name\"")
        unknown = sorted(set(v) - set(VARIANT_KEYS))
        if unknown:
            raise ValueError(f"--variants[{i}] ({v['name']}): unknown key {unknown[0]!r}; valid keys: "
                             + ", ".join(VARIANT_KEYS))
        for key, kind in (("config", dict), ("overrides", dict), ("xla_flags", str)):
            if not isinstance(v.get(key, kind()), kind):
                raise ValueError(f"--variants[{i}] ({v['name']}): {key} must be a JSON "
                                 + ("object" if kind is dict else "string"))
        parsed.append(dict(name=v["name"], config=v.get("config", {}), overrides=v.get("overrides", {}),
                           xla_flags=v.get("xla_flags", "")))
    names = [v["name"] for v in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--variants: the name {repeated[0]!r} is used more than once")
    return parsed


def check_variant_config(base: dict, variant: dict, devices: int) -> None:
    """Builds the variant's config and backbone (nothing is compiled or run), so that a misspelt or
    mistyped config field or backbone field fails before anything is measured; raises ValueError
    naming the variant and what is wrong."""
    from stjax import models

    try:
        config = _pretrain_config(dict(base, batch=base["batch_per_device"] * devices, dtype="float32", remat=False,
                                       config=variant["config"],
                                       overrides={**base["overrides"], **variant["overrides"]}))
        models.create_backbone(config.model.backbone, **models.backbone_options(config.model))
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # str(KeyError) adds quotes
        raise ValueError(f"--variants ({variant['name']}): {message}") from None


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
    """Compiles and times the train step for `spec`; returns the figures (see the module docstring)."""
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


KERNEL_NUMBER = re.compile(r"[._]\d+$")  # loop_add_fusion_12, input_reduce_fusion.3 → one kind
TOP_KERNELS = 15
JIT_PREFIX = re.compile(r"^jit\([^)]*\)/")  # jit(train_step)/jvp(ResNet3D)/stem_conv/… → jvp(ResNet3D)/…
GRAPHED = "(kernels in a CUDA graph: no op name)"
MATMUL_KERNEL = re.compile(r"gemm|xmma|cutlass|nvjet|cudnn|conv|fprop|dgrad|wgrad|cublas|dot", re.IGNORECASE)


def kernel_time(trace_dir: str, steps: int) -> dict | None:
    """Device time per step in the jax.profiler trace under `trace_dir`, split by kernel kind.

    Returns milliseconds per step: `busy` (all device kernels and copies), `matmul` (convolution and
    matrix-multiply kernels: cuDNN, cuBLAS, CUTLASS, XLA's Triton gemm fusions) and `other` (XLA's
    fusions: normalisation, elementwise, reductions, copies), `launches` per step, `top`: the
    TOP_KERNELS kinds of kernel (names without their instance number) that take the most time, as
    (name, ms per step, launches per step), and `ops`: the same for the jax operations that launched
    them (layer path and primitive, from the kernel's `name` argument; XLA's kernels inside a CUDA graph
    carry none and are counted as GRAPHED); None when the trace has no device events (a CPU run)."""
    traces = sorted(Path(trace_dir).rglob("*.trace.json.gz"))
    if not traces:
        return None
    with gzip.open(traces[-1], "rt") as f:
        events = json.load(f).get("traceEvents", [])
    devices = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
               and str(e.get("args", {}).get("name", "")).startswith("/device:")}
    kernels = [e for e in events if e.get("ph") == "X" and e.get("pid") in devices]
    if not kernels:
        return None
    matmul = sum(e["dur"] for e in kernels if MATMUL_KERNEL.search(e.get("name", "")))
    busy = sum(e["dur"] for e in kernels)

    def most_time(key) -> list[tuple[str, float, float]]:
        groups: dict[str, list[float]] = {}
        for e in kernels:
            group = groups.setdefault(key(e), [0.0, 0])
            group[0] += e["dur"] / 1e3 / steps
            group[1] += 1 / steps
        top = sorted(groups.items(), key=lambda item: -item[1][0])[:TOP_KERNELS]
        return [(name, ms, count) for name, (ms, count) in top]

    def op(e) -> str:
        name = e.get("args", {}).get("name")
        return JIT_PREFIX.sub("", name) if name else GRAPHED

    return dict(busy=busy / 1e3 / steps, matmul=matmul / 1e3 / steps, other=(busy - matmul) / 1e3 / steps,
                launches=len(kernels) / steps, top=most_time(lambda e: KERNEL_NUMBER.sub("", e.get("name", "?"))[:80]),
                ops=most_time(op))


def count_flops(spec: dict) -> dict:
    """FLOPs of one device's step for `spec`, with and without remat (see the module docstring).

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


def search_largest_batch(attempt: Callable[[int], int | None], start: int, bytes_limit: int | None,
                         batch_limit: int, after_each: Callable[[dict], None] | None = None
                         ) -> dict[int, int | None]:
    """The largest batch for which `attempt(batch)` succeeds, and the one above it that fails.

    `attempt(b)` returns the bytes a batch of b used (0 if unknown), or None if it does not fit.
    Returns every try as {batch: bytes or None}; the answer is its largest fitting batch, with
    batch + 1 failing (or equal to `batch_limit`). With the device's `bytes_limit`, the next try is
    the batch where a line through the two largest fitting tries' bytes (through 0 after one try)
    reaches the limit: the bytes grow about linearly with the batch, so from a `start` that fits
    this is usually start, the prediction, one more that fits or fails, and its neighbour. Without
    a limit (or where the prediction is no help) the search doubles until a batch fails, then
    bisects. A `start` that does not fit is halved until one does. `after_each(tried)` sees every
    try as it is recorded.
    """
    tried: dict[int, int | None] = {}

    def bounds() -> tuple[int | None, int | None]:
        fitting = [b for b, used in tried.items() if used is not None]
        failing = [b for b, used in tried.items() if used is None]
        return max(fitting, default=None), min(failing, default=None)

    def predicted() -> int | None:
        points = sorted((b, used) for b, used in tried.items() if used)
        if not bytes_limit or not points:
            return None
        (b1, used1), (b0, used0) = points[-1], (points[-2] if len(points) > 1 else (0, 0))
        if used1 <= used0:
            return None
        return b1 + int((bytes_limit - used1) * (b1 - b0) // (used1 - used0))

    batch = start
    while True:
        tried[batch] = attempt(batch)
        if after_each is not None:
            after_each(tried)
        fits, fails = bounds()
        if fits is None:
            if batch == 1:
                return tried
            batch = max(1, batch // 2)
            continue
        upper = min(fails if fails is not None else batch_limit + 1, batch_limit + 1)
        if upper - fits <= 1:
            return tried
        guess = predicted()
        if guess is not None and fits < guess < upper and guess not in tried:
            batch = guess
        elif guess is not None and guess <= fits and fits + 1 not in tried:
            batch = fits + 1  # the line says this is the largest: the next one should fail
        elif fails is None:
            batch = min(2 * fits, batch_limit)
        else:
            batch = (fits + upper) // 2


def find_max_batch(spec: dict) -> dict:
    """Largest per-device batch that trains for `spec` (see the module docstring); runs in one process."""
    import jax

    def attempt(batch_per_device: int) -> int | None:
        """Bytes of 2 steps at this batch (XLA's arguments + temporaries), or None if it does not fit."""
        try:
            build, _, batch, sized = _stjax_setup(dict(spec, batch_per_device=batch_per_device))
            factory, step = build(spec["remat"])
            state = factory.create(jax.random.key(0))
            compiled = step.lower(state, batch, jax.random.key(0)).compile()
            for _ in range(2):
                state, metrics = compiled(state, batch, jax.random.key(0))
            jax.block_until_ready(metrics)
            memory = compiled.memory_analysis()
            used = (memory.temp_size_in_bytes + memory.argument_size_in_bytes) if memory else 0
            del state, batch, compiled
        except Exception as error:  # noqa: BLE001 - XlaRuntimeError's class moved between jax versions
            if "RESOURCE_EXHAUSTED" not in str(error) and "out of memory" not in str(error).lower():
                raise
            used = None
        print(f"  ρ={spec['rho']}: {batch_per_device} videos/device {'does not fit' if used is None else 'fits'}"
              + (f" ({used / 2**30:.2f} GiB)" if used else ""), flush=True)
        return used

    def so_far(tried: dict[int, int | None]) -> dict:
        """The search so far: the largest batch that fitted, the smallest that did not, every try."""
        return dict(max_batch_per_device=max((b for b, v in tried.items() if v is not None), default=None),
                    first_failing=min((b for b, v in tried.items() if v is None), default=None),
                    tried={str(k): v for k, v in tried.items()})

    limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    tried = search_largest_batch(attempt, spec["batch_per_device"], limit, spec["max_batch_limit"],
                                 after_each=lambda t: print(PARTIAL_TAG + json.dumps(so_far(t)), flush=True))
    return dict(spec, **so_far(tried), memory_limit=limit)


# ----------------------------------------------------------------------------- child: PyTorch


def measure_torch(spec: dict) -> dict:
    """Times bench/torch_reference.py's ρBYOL step for `spec`, eager and (if asked) compiled."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch_reference

    from stjax import models

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.backends.cudnn.benchmark = True
    backbone = models.create_backbone(spec["backbone"])
    shape = (spec["batch_per_device"] * spec["rho"], 3, spec["frames"], spec["crop"], spec["crop"])
    clips = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    results = {}
    modes = {"off": [False], "on": [True], "both": [False, True]}[spec["torch_compile"]]
    for compiled in modes:
        name = "compiled" if compiled else "eager"
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            step = torch_reference.ByolStep(backbone, spec["rho"], dtype=spec["dtype"], compile=compiled,
                                            device=device)
            started = time.perf_counter()
            for _ in range(max(spec["warmup"], 2)):
                loss = step(clips)
            float(loss.detach())
            warmup_s = time.perf_counter() - started
            times = []
            for _ in range(spec["rounds"]):
                if cuda:
                    torch.cuda.synchronize()
                started = time.perf_counter()
                for _ in range(spec["steps"]):
                    loss = step(clips)
                float(loss.detach())
                times.append((time.perf_counter() - started) / spec["steps"])
            results[name] = dict(step_s=statistics.median(times), step_s_all=times, warmup_s=warmup_s,
                                 loss=float(loss.detach()), parameters=step.backbone_parameters,
                                 peak_bytes=torch.cuda.max_memory_allocated() if cuda else None)
            del step
        except Exception as error:  # noqa: BLE001 - a failed mode (e.g. no compiler for torch.compile) is reported
            results[name] = dict(error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
        if cuda:
            torch.cuda.empty_cache()
    timed = {k: v for k, v in results.items() if "step_s" in v}
    best = min(timed, key=lambda k: timed[k]["step_s"]) if timed else None
    return dict(spec, modes=results, best=best, torch=torch.__version__,
                cuda=torch.version.cuda if cuda else None,
                cudnn=torch.backends.cudnn.version() if cuda else None,
                device_name=torch.cuda.get_device_name() if cuda else platform.processor() or "cpu")


def probe(spec: dict) -> dict:
    """The accelerator this process sees (the parent never initialises one: it would hold its memory)."""
    del spec
    import jax

    device = jax.local_devices()[0]
    return dict(platform=jax.default_backend(), device_kind=device.device_kind, count=jax.local_device_count())


CHILDREN = {"probe": probe, "stjax": measure_stjax, "memory": measure_step_memory, "flops": count_flops,
            "torch": measure_torch, "max_batch": find_max_batch}


def child_main(kind: str, spec_json: str) -> None:
    sys.path.insert(0, str(ROOT))
    result = CHILDREN[kind](json.loads(spec_json))
    print(RESULT_TAG + json.dumps(result), flush=True)


def run_child(kind: str, spec: dict, env: dict | None = None, timeout: float | None = None,
              command: list[str] | None = None) -> dict:
    """Runs one measurement in a fresh process and returns its result (the RESULT line).

    The child's output is passed through as it comes. A child that dies or runs past `timeout`
    returns `spec` with an "error", updated with its last PARTIAL line if it printed one (the
    largest-batch search does after every try), so that what was measured is kept."""
    command = command or [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--spec", json.dumps(spec)]
    environment = dict(os.environ, **(env or {}))
    if kind in ("torch", "flops"):
        environment["JAX_PLATFORMS"] = "cpu"  # the PyTorch process must leave the accelerator to torch
    if kind == "flops":  # one CPU device, whatever device count the caller forces
        environment["XLA_FLAGS"] = " ".join(f for f in environment.get("XLA_FLAGS", "").split()
                                            if "force_host_platform_device_count" not in f)
    # its own process group: a time limit ends its helpers too (torch.compile's workers hold the pipe open)
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1, start_new_session=True)

    def kill():
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    lines: list[str] = []
    result = partial = None
    timer = None
    timed_out = threading.Event()
    if timeout:
        def stop():
            timed_out.set()
            kill()
        timer = threading.Timer(timeout, stop)
        timer.start()
    try:
        for line in process.stdout:
            line = line.rstrip("\n")
            if line.startswith(RESULT_TAG):
                result = json.loads(line[len(RESULT_TAG):])
            elif line.startswith(PARTIAL_TAG):
                partial = json.loads(line[len(PARTIAL_TAG):])
            elif line.strip():
                lines.append(line)
                print("    | " + line, flush=True)
        process.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if process.poll() is None:
            kill()
            process.wait()
    if result is not None:
        return result
    if timed_out.is_set():
        error = f"timed out after {timeout:.0f} s"
    else:
        output = "\n".join(lines)
        oom = "RESOURCE_EXHAUSTED" in output or "out of memory" in output.lower()
        error = ("out of memory: " if oom else f"exit {process.returncode}: ") + (lines[-1:] or ["no output"])[0][:300]
    return dict(spec, **(partial or {}), error=error)


# ----------------------------------------------------------------------------- parent


def _fmt(value, spec=".1f", missing="–"):
    return missing if value is None else format(value, spec)


def _slug(name: str) -> str:
    """A variant's name as a directory name: letters, digits, '-', '_' and '.' kept, the rest '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "variant"


def _variant_cell(r: dict, named: bool) -> str:
    return f"| {r.get('variant', 'default')} " if named else ""


def _table_head(columns: str, named: bool) -> list[str]:
    """A Markdown table's header and rule for "| a | b |", with a variant column first if `named`."""
    columns = ("| variant " if named else "") + columns
    return [columns, "| --- " * columns.count("|", 1) + "|"]


FRESH_MARK, BEFORE_STEPS_MARK = " (†)", " (‡)"


def step_memory(r: dict) -> tuple[int | None, str]:
    """(bytes, mark) for the peak-memory column: the allocator's peak if a step reached it; else the peak
    of a fresh process that loaded the compiled step from the cache (†); else the allocator's peak,
    reached before the first step (‡); on a CPU, XLA's compiled estimate."""
    own = step_peak_bytes(r)
    if own is not None:
        return own, ""
    fresh = step_peak_bytes(r.get("fresh_process_memory") or {})
    if fresh is not None:
        return fresh, FRESH_MARK
    if r.get("peak_bytes") is not None:
        return r["peak_bytes"], BEFORE_STEPS_MARK
    return r.get("compiled_bytes"), ""


def summarize(stjax_rows: list[dict], torch_rows: dict, peak_override: float | None,
              named: bool = False) -> tuple[list[str], list[dict]]:
    """Markdown lines of the main table (with a variant column if `named`), and the rows as dicts."""
    lines = _table_head("| dtype | remat | step ms | clips/s | TFLOP/s/device | MFU | HFU | peak GiB | compile s | "
                        "PyTorch clips/s | stjax / PyTorch |", named)
    rows = []
    for r in stjax_rows:
        if "error" in r:
            lines.append(f"{_variant_cell(r, named)}| {r['dtype']} | {'on' if r['remat'] else 'off'} | {r['error']} "
                         "| | | | | | | | |")
            rows.append(r)
            continue
        clips = r["batch"] * r["rho"] / r["step_s"]
        peak = peak_flops(r["device_kind"], r["dtype"], peak_override)
        achieved = r["hardware_flops"] / r["step_s"] if r["hardware_flops"] else None
        mfu = r["model_flops"] / r["step_s"] / peak if (peak and r["model_flops"]) else None
        hfu = achieved / peak if (peak and achieved) else None
        memory, mark = step_memory(r)
        reference = torch_rows.get(r["dtype"])
        torch_clips = ratio = None
        if reference and reference.get("best") and not r["remat"]:
            best = reference["modes"][reference["best"]]
            torch_clips = reference["batch_per_device"] * reference["rho"] / best["step_s"] * r["devices"]
            ratio = clips / torch_clips
        row = dict(r, clips_per_s=clips, achieved_flops=achieved, mfu=mfu, hfu=hfu, peak=peak,
                   torch_clips_per_s=torch_clips, ratio=ratio)
        rows.append(row)
        lines.append(
            f"{_variant_cell(r, named)}| {r['dtype']} | {'on' if r['remat'] else 'off'} | {r['step_s'] * 1e3:.1f} | "
            f"{clips:.1f} | "
            f"{_fmt(achieved and achieved / 1e12, '.3g')} | {_fmt(mfu and 100 * mfu, '.1f')}{'%' if mfu else ''} | "
            f"{_fmt(hfu and 100 * hfu, '.1f')}{'%' if hfu else ''} | {_fmt(memory and memory / 2**30, '.2f')}{mark} | "
            f"{r['compile_s']:.0f} | {_fmt(torch_clips)} | {_fmt(ratio, '.2f')}{'×' if ratio else ''} |")
    return lines, rows


def torch_lines(torch_rows: dict) -> list[str]:
    lines = ["| dtype | mode | step ms | clips/s | peak GiB | warm-up s | backbone params |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for dtype, r in torch_rows.items():
        if "error" in r:
            lines.append(f"| {dtype} | {r['error']} | | | | | |")
            continue
        for mode, m in r["modes"].items():
            if "error" in m:
                lines.append(f"| {dtype} | {mode} | {m['error']} | | | | |")
                continue
            clips = r["batch_per_device"] * r["rho"] / m["step_s"]
            lines.append(f"| {dtype} | {mode}{' (best)' if mode == r['best'] else ''} | {m['step_s'] * 1e3:.1f} | "
                         f"{clips:.1f} | {_fmt(m['peak_bytes'] and m['peak_bytes'] / 2**30, '.2f')} | "
                         f"{m['warmup_s']:.0f} | {m['parameters']:,} |")
    return lines


def table_notes(rows: list[dict], torch_rows: dict, found: dict, on_cpu: bool) -> list[str]:
    """The notes under the main table: definitions, the peak used, FLOPs per clip, parameter counts."""
    peaks = sorted({f"{r['dtype']}: {r['peak'] / 1e12:.1f} TFLOP/s" for r in rows if r.get("peak")})
    notes = [
        "MFU: model FLOPs (XLA's count of the step without remat) / step time / peak; HFU: XLA's count of the "
        "step with remat's recomputation / step time / peak. FLOPs counted by XLA:CPU on one device's share "
        "of the batch (XLA:GPU's count leaves out cuDNN convolutions).",
        "peak used: " + ("; ".join(peaks) if peaks else f"none known for {found['device_kind']} (--peak_tflops)"),
    ]
    flops = next((r for r in rows if r.get("model_flops")), None)
    if flops:
        notes.append(f"model FLOPs per step and device: {flops['model_flops'] / 1e12:.3g} TFLOP "
                     f"({flops['model_flops'] / (flops['batch'] / flops['devices'] * flops['rho']) / 1e9:.1f} "
                     f"GFLOP per clip: online forward + backward, target forward)")
    counts = {r["parameters"] for r in rows if r.get("parameters")}
    counts |= {m["parameters"] for r in torch_rows.values() for m in r.get("modes", {}).values() if "parameters" in m}
    if counts:
        notes.append("backbone parameters: " + ("stjax and PyTorch both " if len(counts) == 1 and torch_rows else "")
                     + ", ".join(f"{c:,}" for c in sorted(counts)))
    if on_cpu:
        notes.append("peak GiB on a CPU: XLA's compiled memory estimate, not a measured peak.")
    marks = {step_memory(r)[1] for r in rows if "error" not in r}
    if FRESH_MARK in marks:
        notes.append("peak GiB (†): the allocator's peak was reached while compiling (autotuning), before the "
                     "first step; this is the peak of 2 steps in a fresh process that loaded the compiled step "
                     "from the compilation cache, so nothing was autotuned there.")
    if BEFORE_STEPS_MARK in marks:
        notes.append("peak GiB (‡): reached before the first step (while compiling), also in a fresh process; "
                     "the step's own peak is at most this.")
    return notes


def top_kernel_lines(rows: list[dict], named: bool = False) -> list[str]:
    """Markdown table per profiled setting of the kinds of kernel that take the most device time."""
    lines = []
    for r in rows:
        variant = f"{r.get('variant', 'default')}, " if named else ""
        lines += ["", f"Top kernels, {variant}{r['dtype']}, remat {'on' if r['remat'] else 'off'}:", "",
                  "| kernel | ms/step | launches/step |", "| --- | --- | --- |"]
        lines += [f"| `{name}` | {ms:.2f} | {count:.0f} |" for name, ms, count in r["kernel_time"].get("top", [])]
        if r["kernel_time"].get("ops"):
            lines += ["", f"Top jax operations, {variant}{r['dtype']}, remat {'on' if r['remat'] else 'off'}:", "",
                      "| operation | ms/step | launches/step |", "| --- | --- | --- |"]
            lines += [f"| `{name}` | {ms:.2f} | {count:.0f} |" for name, ms, count in r["kernel_time"]["ops"]]
    return lines


def kernel_lines(rows: list[dict], named: bool = False) -> list[str]:
    """Markdown table of `kernel_time` per profiled setting: where the device's time goes."""
    lines = _table_head("| dtype | remat | busy ms | conv + matmul ms | their TFLOP/s | other kernels ms | "
                        "other share | launches |", named)
    for r in rows:
        k = r["kernel_time"]
        rate = r["hardware_flops"] / (k["matmul"] / 1e3) / 1e12 if (r.get("hardware_flops") and k["matmul"]) else None
        lines.append(f"{_variant_cell(r, named)}| {r['dtype']} | {'on' if r['remat'] else 'off'} | {k['busy']:.1f} | "
                     f"{k['matmul']:.1f} | "
                     f"{_fmt(rate, '.0f')} | {k['other']:.1f} | {100 * k['other'] / k['busy']:.0f}% | "
                     f"{k['launches']:.0f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=None, help="default: slow_r50 on an accelerator, r3d_tiny on a CPU")
    parser.add_argument("--framework", default="byol", help="byol|moco|simclr|swav (the PyTorch column: byol)")
    parser.add_argument("--rhos", default="2", help="comma list; the table is measured for the first")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--crop", type=int, default=None, help="default: 224 on an accelerator, 64 on a CPU")
    parser.add_argument("--batch_per_device", type=int, default=None,
                        help="videos per device per step (default: 8 on an accelerator, 2 on a CPU)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="of the table; none: no table")
    parser.add_argument("--remat", default="off,on", help="comma list of off|on")
    parser.add_argument("--lowering", default="auto", help="Conv3D lowering: auto|native|conv2d_sum|conv2d_concat|"
                                                            "conv2d_time")
    parser.add_argument("--overrides", default=None,
                        help='backbone fields as JSON, e.g. \'{"batch_norm": "flax", "pool": "reduce_window"}\' '
                             "(config.model.overrides)")
    parser.add_argument("--variants", default=None,
                        help='measure the table per variant: JSON list (or @FILE) of {"name", "config": '
                             '{"a.b": value}, "overrides": {...}, "xla_flags": "..."}')
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--torch", default="auto", choices=("auto", "off"), help="the PyTorch column")
    parser.add_argument("--torch_compile", default="both", choices=("off", "on", "both"))
    parser.add_argument("--torch_dtypes", default="bfloat16", help="dtypes of the PyTorch column")
    parser.add_argument("--max_batch", action="store_true", help="find the largest per-device batch per ρ")
    parser.add_argument("--max_batch_dtype", default="bfloat16")
    parser.add_argument("--max_batch_limit", type=int, default=512)
    parser.add_argument("--mem_fraction", default="0.95", help="XLA_PYTHON_CLIENT_MEM_FRACTION for --max_batch")
    parser.add_argument("--peak_tflops", type=float, default=None, help="override the device's peak (TFLOP/s)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    parser.add_argument("--profile", default=None,
                        help="also trace 3 steps of every setting with jax.profiler into PROFILE/<setting> "
                             "(open with TensorBoard's profile plugin or XProf)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.spec)
        return 0

    sys.path.insert(0, str(ROOT))
    from stjax import provenance
    from stjax.models import LOWERINGS

    try:
        variants = parse_variants(args.variants)
    except ValueError as error:
        parser.error(str(error))

    found = run_child("probe", {}, timeout=args.timeout)
    if "error" in found:
        print(f"could not start jax: {found['error']}", file=sys.stderr)
        return 1
    platform_name = found["platform"]
    on_cpu = platform_name == "cpu"
    table_dtypes = [] if args.dtypes == "none" else args.dtypes.split(",")
    for name, value in (("dtypes", ",".join(table_dtypes)), ("torch_dtypes", args.torch_dtypes)):
        bad = [d for d in value.split(",") if d and d not in ("float32", "bfloat16")]
        if bad:
            parser.error(f"--{name}: {bad[0]!r} is not a dtype; valid choices: float32, bfloat16")
    if args.lowering not in LOWERINGS:
        parser.error(f"--lowering={args.lowering!r}; valid choices: {', '.join(LOWERINGS)}")
    try:
        overrides = json.loads(args.overrides) if args.overrides else {}
    except json.JSONDecodeError as error:
        parser.error(f"--overrides is not JSON: {error}")
    if not isinstance(overrides, dict):
        parser.error("--overrides must be a JSON object of backbone fields")
    remats = [{"off": False, "on": True}.get(v) for v in args.remat.split(",")]
    if None in remats:
        parser.error(f"--remat={args.remat!r}; valid choices: a comma list of off, on")
    rhos = [int(v) for v in args.rhos.split(",")]
    base = dict(backbone=args.backbone or ("r3d_tiny" if on_cpu else "slow_r50"), framework=args.framework,
                rho=rhos[0], frames=args.frames, crop=args.crop or (64 if on_cpu else 224),
                batch_per_device=args.batch_per_device or (2 if on_cpu else 8), lowering=args.lowering,
                steps=args.steps, rounds=args.rounds, warmup=args.warmup, torch_compile=args.torch_compile,
                max_batch_limit=args.max_batch_limit, overrides=overrides)
    for variant in variants:
        try:
            check_variant_config(base, variant, found["count"])
        except ValueError as error:
            parser.error(str(error))
    named = args.variants is not None  # rows carry the variant's name
    header = [
        f"date: {datetime.date.today().isoformat()}; device: {found['device_kind']} × {found['count']} "
        f"({platform_name}); host: {platform.node()} ({os.cpu_count()} cores)",
        "code: " + provenance.one_line(provenance.describe(("jax", "jaxlib", "flax", "optax", "torch"))),
        f"step: {base['framework']} on {base['backbone']}, ρ={base['rho']}, {base['frames']}×{base['crop']}², "
        f"{base['batch_per_device']} videos/device, Conv3D lowering {args.lowering}"
        f"{', backbone overrides ' + json.dumps(overrides) if overrides else ''}"
        f"{'; variants ' + ', '.join(v['name'] for v in variants) if named else ''}; "
        f"command: python bench/train_step.py {' '.join(argv if argv is not None else sys.argv[1:])}",
    ]
    print("\n".join(header), flush=True)

    stjax_rows: list[dict] = []
    torch_rows: dict = {}
    max_rows: list[dict] = []
    notes_extra: list[str] = []

    def report() -> tuple[list[str], list[dict]]:
        """The whole report as Markdown lines, from what has been measured so far, and the table's rows."""
        lines, rows = summarize(stjax_rows, torch_rows, args.peak_tflops, named)
        text = header + ["", *lines, "", *("- " + n for n in table_notes(rows, torch_rows, found, on_cpu))]
        profiled = [r for r in rows if r.get("kernel_time")]
        if profiled:
            text += ["", f"Device time per step by kernel kind (jax.profiler trace of {PROFILED_STEPS} steps; "
                         "traces in " + str(args.profile) + "):", "", *kernel_lines(profiled, named),
                     *top_kernel_lines(profiled, named)]
        if torch_rows:
            text += ["", "PyTorch reference (bench/torch_reference.py):", "", *torch_lines(torch_rows)]
        text += ["", *notes_extra] if notes_extra else []
        if args.max_batch:
            text += ["", f"Largest batch that trains ({args.max_batch_dtype}, no remat, "
                         f"XLA_PYTHON_CLIENT_MEM_FRACTION={args.mem_fraction}):", "",
                     "| ρ | videos/device | clips/device | first failing | note |", "| --- | --- | --- | --- | --- |"]
            for r in max_rows:
                best = r.get("max_batch_per_device")
                bound = "≥ " if ("error" in r and best) else ""
                text.append(f"| {r['rho']} | {bound}{_fmt(best, 'd')} | {bound}{_fmt(best and best * r['rho'], 'd')} | "
                            f"{_fmt(r.get('first_failing'), 'd', 'none up to the limit')} | {r.get('error', '')} |")
        return text, rows

    def save() -> None:
        """Rewrites OUT.md and OUT.json after every measurement, so a run cut short keeps what it measured."""
        if not args.out:
            return
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        text, rows = report()
        out.with_suffix(".md").write_text("\n".join(text) + "\n")
        out.with_suffix(".json").write_text(json.dumps(
            dict(header=header, stjax=rows, torch=torch_rows, max_batch=max_rows), indent=2, default=str) + "\n")

    counts: dict[str, dict] = {}
    # filled by each timing process, read by its memory process; removed after the table (or at exit)
    cache_directory = tempfile.TemporaryDirectory(prefix="stjax_bench_compilation_cache_")
    cache = cache_directory.name
    for dtype in table_dtypes:
        for variant in variants:
            spec = dict(base, dtype=dtype, variant=variant["name"], config=variant["config"],
                        overrides={**overrides, **variant["overrides"]})
            label = f"{dtype}{', ' + variant['name'] if named else ''}"
            key = json.dumps([dtype, spec["config"], spec["overrides"]], sort_keys=True)
            if key not in counts:  # XLA flags of the accelerator do not change the count
                print(f"FLOPs of the {label} step (XLA:CPU cost analysis) ...", flush=True)
                counts[key] = run_child("flops", dict(spec, remat=False), timeout=args.timeout)
                if "error" in counts[key]:
                    print(f"  → not counted ({counts[key]['error']})", flush=True)
            counted = counts[key]
            env = ({"XLA_FLAGS": " ".join(filter(None, (os.environ.get("XLA_FLAGS", ""), variant["xla_flags"])))}
                   if variant["xla_flags"] else None)
            for remat in remats:
                name = f"{dtype}_remat-{'on' if remat else 'off'}" + (f"_{_slug(variant['name'])}" if named else "")
                print(f"stjax {label}, remat {'on' if remat else 'off'} ...", flush=True)
                profile = str(Path(args.profile).resolve() / name) if args.profile else None
                result = run_child("stjax", dict(spec, remat=remat, profile=profile, compilation_cache=cache),
                                   env=env, timeout=args.timeout)
                if "error" not in result and result.get("peak_bytes") is not None and step_peak_bytes(result) is None:
                    print("  the allocator's peak was reached before the first step; the step's own peak, "
                          "in a fresh process ...", flush=True)
                    result["fresh_process_memory"] = run_child(
                        "memory", dict(spec, remat=remat, compilation_cache=cache), env=env, timeout=args.timeout)
                print(f"  → {_fmt(result.get('step_s') and result['step_s'] * 1e3)} ms/step"
                      + (f" ({result['error']})" if "error" in result else ""), flush=True)
                result.update(model_flops=counted.get("model_flops"), xla_flags=variant["xla_flags"],
                              hardware_flops=counted.get("remat_flops" if remat else "model_flops"))
                stjax_rows.append(result)
                save()

    cache_directory.cleanup()

    if args.torch == "off":
        notes_extra.append("PyTorch column: off (--torch off)")
    elif args.framework != "byol":
        notes_extra.append("PyTorch column: skipped (the reference implements ρBYOL only)")
    elif importlib.util.find_spec("torch") is None:
        notes_extra.append("PyTorch column: skipped, torch is not installed (pip install -e '.[torch]')")
    else:
        for dtype in args.torch_dtypes.split(","):
            print(f"PyTorch {dtype} ...", flush=True)
            torch_rows[dtype] = run_child("torch", dict(base, dtype=dtype), timeout=args.timeout)
            save()

    if args.max_batch:
        for rho in rhos:
            print(f"largest batch, ρ={rho} ...", flush=True)
            max_rows.append(run_child("max_batch", dict(base, rho=rho, dtype=args.max_batch_dtype, remat=False),
                                      env={"XLA_PYTHON_CLIENT_MEM_FRACTION": args.mem_fraction},
                                      timeout=args.timeout))
            save()
    print("\n" + "\n".join(report()[0]), flush=True)
    if args.out:
        print(f"wrote {Path(args.out).with_suffix('.md')} and {Path(args.out).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
