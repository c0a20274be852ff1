"""Every measurement in its own process: `run_child` starts bench/train_step.py --child KIND --spec JSON,
passes its output through and returns its RESULT line (or the spec with an error, and its last PARTIAL
line); `child_main` is that process's side, dispatching KIND through CHILDREN."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

from . import BENCH, PARTIAL_TAG, RESULT_TAG, ROOT
from .batch_search import find_max_batch
from .measure import count_flops, measure_step_memory, measure_stjax
from .torch_timing import measure_torch


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
    command = command or [sys.executable, str(BENCH / "train_step.py"), "--child", kind, "--spec", json.dumps(spec)]
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
