"""Stopping cleanly when the scheduler asks (SIGTERM): every process at the same step, after a checkpoint.

Alone, a SIGTERM handler sets a flag that the train loop reads at each step boundary.
In a `jax.distributed` run JAX's preemption service catches SIGTERM on any process
and agrees with the others on a step at which all of them stop
(`multihost_utils.reached_preemption_sync_point`), so the checkpoint saved there is
the same on every host.

Start-up (validation, building the data, restoring, compiling: minutes at paper scale) is
covered too: `python -m stjax.main` calls `defer_from_start()` first, after which a SIGTERM
is only recorded until a `PreemptionWatch` takes it over (the train loop then stops before
its first step, having written nothing) or `end_start_up()` hands it to the caller.
Either way the process ends with `Preempted` and exit status 0, not killed by the signal (143).
"""
from __future__ import annotations

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
    """A run stopped on a SIGTERM (`python -m stjax.main` exits 0 on it; the same command continues).

    `checkpoint_saved`: a checkpoint was written on the way out (False: stopped during start-up, before
    training anything in this session)."""

    def __init__(self, message: str, checkpoint_saved: bool = True):
        super().__init__(message)
        self.checkpoint_saved = checkpoint_saved


_replaced: dict = {}            # signal -> the handler `defer_from_start` replaced
_requested: list[str] = []      # the signals that came while deferred, not yet taken over
_handed_to_jax = False          # `hand_over_to_jax` ran: JAX's service owns SIGTERM; never touch it again


def _record(signum, frame):
    del frame
    _requested.append(signal.Signals(signum).name)


def defer_from_start(signals=(signal.SIGTERM,)) -> None:
    """From now on these signals are recorded instead of ending the process, until a `PreemptionWatch` or
    `end_start_up()` takes them over. Call first thing in a process (main thread only; again: no-op)."""
    if _handed_to_jax or threading.current_thread() is not threading.main_thread():
        return
    for sig in signals:
        if sig not in _replaced:
            _replaced[sig] = signal.signal(sig, _record)


def hand_over_to_jax() -> None:
    """For a process of a `jax.distributed` run, after `jax.distributed.initialize()`: JAX's preemption service
    now catches SIGTERM (it replaced the deferring handler), and a SIGTERM recorded before it did is sent
    again, to it, so that all processes stop together at the train loop's first sync point."""
    global _handed_to_jax
    _handed_to_jax = True
    _replaced.clear()
    if _requested:
        _requested.clear()
        os.kill(os.getpid(), signal.SIGTERM)


def requested_at_start() -> str | None:
    """The name of the signal recorded since `defer_from_start` (None: none yet); it stays recorded."""
    return _requested[0] if _requested else None


def _take_over(sig, handler):
    """Installs `handler` for `sig`; returns the handler to restore later (the one before deferring, if
    deferred)."""
    previous = signal.signal(sig, handler)
    if previous is _record:
        previous = _replaced.pop(sig, signal.SIG_DFL)
    return previous


def end_start_up() -> str | None:
    """Ends what `defer_from_start` began: the signals' earlier handlers are back, and the name of the signal
    that came meanwhile is returned (None: none came) for the caller to stop on."""
    if not _handed_to_jax and threading.current_thread() is threading.main_thread():
        for sig in list(_replaced):
            current = signal.getsignal(sig)
            if current is _record:
                signal.signal(sig, _replaced.pop(sig))
    requested = _requested[0] if _requested else None
    _requested.clear()
    return requested


class PreemptionWatch:
    """`should_stop(step)` is True once a stop was requested (call it at every step, on every process).

    Alone, `requested_by` names the signal as soon as it came, including one that came before the watch
    (deferred by `defer_from_start`): the caller can stop before its first step."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.distributed = jax.process_count() > 1
        self.requested_by = None
        self._previous = {}
        if not self.distributed and not _handed_to_jax and threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = _take_over(sig, self._handle)
            if _requested:
                self.requested_by = _requested[0]
                _requested.clear()

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
        """Restores the handlers from before the watch, or from before `defer_from_start` (a SIGTERM after
        the loop ends the process as usual)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
