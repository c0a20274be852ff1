"""Metrics to JSONL and TensorBoard, and a progress line with rate and ETA.

Only process 0 writes. TensorBoard event files are written with `tf.summary`
when TensorFlow is importable (it is on data hosts); the JSONL file is always
written and is what reports are made from.

Each record is one line, written with a single `os.write` to a file opened for
appending, so a kill, a power loss or a full disk leaves at most a torn last
line: `read_metrics` skips it (and any other unreadable line) with a warning
naming the file and line. A writer opened for a run that starts at step S
first drops the records of later steps that an interrupted session logged
(they are trained and logged again) and a torn tail, rewriting the file
atomically, so every step has one record.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import jax

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    """Appends `{"step": s, name: value, ...}` lines to WORKDIR/metrics.jsonl (+ TensorBoard).

    `start_step`: the step this session trains from; records of later steps are dropped first
    (None: keep every record). The count dropped is in `dropped` (torn lines included)."""

    def __init__(self, workdir: str, tensorboard: bool = True, start_step: int | None = None):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        self.dropped = 0
        self._fd = None
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self.dropped = _drop_records_after(self.path, start_step)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if tensorboard:
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
        _write_all(self._fd, (json.dumps(record) + "\n").encode())
        if self._tb is not None:
            with self._tb.as_default(step=int(step)):
                for name, value in scalars.items():
                    self._tf.summary.scalar(name, float(value))

    def flush(self, durable: bool = False):
        """TensorBoard's buffer out; with `durable` the JSONL lines so far also on disk (fsync: at checkpoints)."""
        if self._fd is not None and durable:
            os.fsync(self._fd)
        if self._tb is not None:
            self._tb.flush()

    def close(self):
        self.flush(durable=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    """One `os.write` (atomic for a line on local filesystems); the rest again if the system wrote less."""
    while data:
        data = data[os.write(fd, data):]


def _parse(path: str) -> tuple[list[tuple[int, dict]], list[int], bool]:
    """(records with their line numbers, numbers of unreadable lines, whether the file ends without a newline)."""
    with open(path, "rb") as f:
        data = f.read()
    records, bad = [], []
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode())
        except (UnicodeDecodeError, ValueError):
            bad.append(number)
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append((number, record))
        else:
            bad.append(number)
    return records, bad, bool(data) and not data.endswith(b"\n")


def _warn_unreadable(path: str, bad: list[int], last_line: int, torn_tail: bool) -> None:
    for number in bad:
        where = ("its last line, torn by an interrupted write" if number == last_line and torn_tail
                 else "not a complete record")
        print(f"warning: {path}, line {number}: {where}; skipped", file=sys.stderr, flush=True)


def _drop_records_after(path: str, step: int | None) -> int:
    """Rewrites `path` (temporary file + rename) without its unreadable lines and, unless `step` is None,
    its records of steps after `step`; the number of lines dropped (0: left as it was)."""
    if not os.path.exists(path):
        return 0
    records, bad, torn_tail = _parse(path)
    last_line = max([n for n, _ in records] + bad, default=0)
    later = [n for n, r in records if step is not None and r["step"] > step]
    if not bad and not later and not torn_tail:
        return 0
    _warn_unreadable(path, bad, last_line, torn_tail)
    dropped = set(later)
    kept = [r for n, r in records if n not in dropped]
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    if later:
        print(f"{path}: dropped {len(later)} records of steps after {step}, logged by the interrupted session "
              "after its last checkpoint (those steps are trained and logged again)", flush=True)
    return len(later) + len(bad)


def read_metrics(workdir: str) -> list[dict]:
    """The records of WORKDIR/metrics.jsonl in file order; unreadable lines (a torn last line after a kill)
    are skipped with a warning naming the file and line."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    records, bad, torn_tail = _parse(path)
    if bad:
        _warn_unreadable(path, bad, max([n for n, _ in records] + bad), torn_tail)
    return [r for _, r in records]


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
