"""Where the device's time goes: a jax.profiler trace of a few steps split by kernel kind (convolutions
and matmuls against XLA's other fusions) and by the jax operation that launched each kernel."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

PROFILED_STEPS = 3  # steps traced per setting with --profile
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
