"""Joining a multi-process run (`jax.distributed`) when the environment describes one.

The same `python -m stjax.main ...` runs on every process; `initialize()` is its first
JAX call. `STJAX_DISTRIBUTED` decides:

  auto (default)  join when JAX_COORDINATOR_ADDRESS is set (launch/multiprocess.sh sets it, with
                  JAX_NUM_PROCESSES and JAX_PROCESS_ID) or under `srun` with more than one task
                  (SLURM; JAX reads the rest from SLURM's variables); otherwise run alone.
  1               always join, JAX detecting the cluster (TPU VM pods: launch/tpu_pod.sh).
  0               never join.
"""
from __future__ import annotations

import os

import jax

MODES = ("auto", "1", "0")


def wanted(environ=os.environ) -> bool:
    """Whether this process is one of several, as `STJAX_DISTRIBUTED` and the environment say."""
    mode = environ.get("STJAX_DISTRIBUTED", "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"STJAX_DISTRIBUTED={mode!r} is invalid; valid values: {', '.join(MODES)}")
    if mode != "auto":
        return mode == "1"
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS")
    return bool(environ.get("SLURM_STEP_ID")) and tasks is not None and int(tasks) > 1


def initialize(environ=os.environ) -> bool:
    """Joins the run if `wanted()`; True when this process is one of several. Call before any other JAX use."""
    if not wanted(environ) or jax.distributed.is_initialized():
        return jax.distributed.is_initialized()
    kwargs = {}
    for field, var in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        if environ.get(var):
            kwargs[field] = int(environ[var])
    try:  # cross-process collectives of CPU devices (the default from JAX 0.5; a no-op for accelerators)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):
        pass
    jax.distributed.initialize(**kwargs)
    return True
