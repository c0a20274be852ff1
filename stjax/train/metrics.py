"""Metrics to JSONL and TensorBoard, and a progress line with rate and ETA.

Only process 0 writes. TensorBoard event files are written with `tf.summary`
when TensorFlow is importable (it is on data hosts); the JSONL file is always
written and is what reports are made from.
"""
from __future__ import annotations

import json
import os
import sys
import time

import jax


class MetricWriter:
    """Appends `{"step": s, name: value, ...}` lines to WORKDIR/metrics.jsonl (+ TensorBoard)."""

    def __init__(self, workdir: str, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled and tensorboard:
            try:
                import tensorflow as tf  # noqa: PLC0415 — optional, host-side only

                self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
                self._tf = tf
            except ImportError:
                self._tb = None

    def write(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            with self._tb.as_default(step=int(step)):
                for name, value in scalars.items():
                    self._tf.summary.scalar(name, float(value))

    def flush(self):
        if self._tb is not None:
            self._tb.flush()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """One line per report: step, loss, steps/s, clips/s and ETA (process 0 only)."""

    def __init__(self, total_steps: int, clips_per_step: int, start_step: int = 0, stream=None):
        self.total_steps = total_steps
        self.clips_per_step = clips_per_step
        self.stream = stream or sys.stdout
        self.enabled = jax.process_index() == 0
        self._last_time = time.time()
        self._last_step = start_step

    def report(self, step: int, scalars: dict) -> None:
        now = time.time()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        if not self.enabled:
            return
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        values = "  ".join(f"{k} {v:.4g}" for k, v in scalars.items())
        width = len(str(self.total_steps))
        print(f"step {step:>{width}}/{self.total_steps}  {values}  {rate:.2f} steps/s  "
              f"{rate * self.clips_per_step:.0f} clips/s  ETA {format_duration(eta)}",
              file=self.stream, flush=True)
