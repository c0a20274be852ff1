"""Stopping cleanly when the scheduler asks (SIGTERM): every process at the same step, after a checkpoint.

Alone, a SIGTERM handler sets a flag that the train loop reads at each step boundary.
In a `jax.distributed` run JAX's preemption service catches SIGTERM on any process
and agrees with the others on a step at which all of them stop
(`multihost_utils.reached_preemption_sync_point`), so the checkpoint saved there is
the same on every host.
"""
from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
    """`should_stop(step)` is True once a stop was requested (call it at every step, on every process)."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.distributed = jax.process_count() > 1
        self.requested_by = None
        self._previous = {}
        if not self.distributed and threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        del frame
        self.requested_by = signal.Signals(signum).name

    def should_stop(self, step: int) -> bool:
        if self.distributed:
            if multihost_utils.reached_preemption_sync_point(step):
                self.requested_by = "a preemption notice (SIGTERM) to one of the processes"
                return True
            return False
        return self.requested_by is not None

    def close(self):
        """Restores the previous handlers (a SIGTERM after the loop ends the process as usual)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
