"""Orbax checkpoints of the train state, plus the data position, in `WORKDIR/checkpoints/`.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and
renames it when complete, so a save interrupted even by SIGKILL is never picked
up; its leftovers are removed when the next run opens the directory), the last
`max_to_keep` are kept. With several processes Orbax writes one checkpoint
together (each process its shards, process 0 the metadata and the rename). The data position is the number of batches consumed,
which equals the step: the pipeline is deterministic and resumes from it.

Resuming (`Checkpointer.restore_latest`) restores the newest checkpoint that reads back: one that does not
(damaged files) is moved to `WORKDIR/checkpoints_corrupt/STEP-TIME/` with the error beside it, never deleted,
and the run continues from the step before, saying so; one whose arrays do not fit the state this run builds
(another backbone, framework or heads) is an `IncompatibleCheckpointError`, and nothing moves. A save that
fails on the file system (no space left, quota, permissions) is one short `CheckpointSaveError` naming the
path, the space and the checkpoints still intact; a save that would not fit in the free space is refused
before it starts.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
import threading
import time
import traceback

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from stjax import configlib

CORRUPT_DIR = "checkpoints_corrupt"  # WORKDIR/checkpoints_corrupt/STEP-TIME/: checkpoints that did not read back
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (the message names the path, the space, and the checkpoints intact);
    `errno` is the file system's error code."""


class CorruptCheckpointError(RuntimeError):
    """No checkpoint of the workdir could be read back; nothing was moved."""


class IncompatibleCheckpointError(ValueError):
    """The checkpoint holds arrays of other names or shapes than the state this run builds."""


def saved_steps(workdir: str) -> list[int]:
    """The finished checkpoints' steps in WORKDIR/checkpoints, ascending (none: [])."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    return sorted(ocp.path.step.checkpoint_steps(directory)) if os.path.isdir(directory) else []


def latest_step(workdir: str) -> int | None:
    """The newest finished checkpoint's step in WORKDIR/checkpoints (None: none)."""
    steps = saved_steps(workdir)
    return steps[-1] if steps else None


def restore_backbone(workdir: str, step: int | None = None) -> tuple[dict, int]:
    """({'params', 'batch_stats'} of the online backbone as NumPy arrays, step) from a run's checkpoint at
    `step` (None: the latest), onto this process's first device whatever mesh wrote it. The one reader of a
    run's checkpoints outside the train loop (export, evaluation, `model.init_from=RUN`)."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoints in {directory}: is {workdir!r} a pretraining run's workdir?")
    steps = saved_steps(workdir)
    if not steps:
        raise FileNotFoundError(f"no finished checkpoint in {directory}")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ValueError(f"step={step} has no checkpoint in {directory}; valid choices: {steps}")
    manager = ocp.CheckpointManager(
        directory, item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
    try:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              manager.item_metadata(step)["state"])
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    finally:
        manager.close()
    variables = {"params": restored["params"]["backbone"], "batch_stats": restored["batch_stats"]["backbone"]}
    return jax.tree.map(np.asarray, variables), int(step)


def use_replica_parallel_saving(enabled: bool) -> None:
    """Sets whether Orbax splits the writing of a replicated array among its replicas (its default off on GPUs,
    when JAX_PLATFORMS names them, and on elsewhere).

    Splitting takes a slice of every replica's copy with an eager jax op, and each (shape, replica) compiles
    its own small program on the first save of a process: with an r3d_micro ρBYOL state replicated on 8 CPU
    devices that first save blocked the training loop for ~11 s (2-core VM) of a ~37 s run. Writing each array
    from one replica should matter little at this project's checkpoint sizes (a Slow R-50 train state is
    ~0.5 GB; not measured on several hosts). The on-disk format does not change, so checkpoints written either
    way restore either way. Orbax reads the setting from its global registry of type handlers; this replaces
    its `jax.Array` handler, carrying over the handler's array metadata store.
    """
    current = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(current, "_use_replica_parallel", None) == enabled:
        return
    # the array metadata store is the one setting Orbax's default handler gives that the constructor's default lacks
    store = getattr(current, "_array_metadata_store", None)
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=enabled, array_metadata_store=store),
        override=True)


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` for a TrainState.

    Replicated arrays are written from one replica except on TPUs (`use_replica_parallel_saving`)."""

    def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True):
        configlib.require(isinstance(max_to_keep, int) and not isinstance(max_to_keep, bool) and max_to_keep >= 1,
                          "keep_checkpoints", max_to_keep, "integers >= 1 (the newest checkpoints kept)")
        use_replica_parallel_saving(jax.default_backend() == "tpu")
        _quiet_orbax_file_errors()
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, "checkpoints")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,  # what a killed save left behind
            ),
        )
        self._pending = None  # the step of a save that may still be writing
        self._failed = False  # a save failed and was reported: close() does not report it again

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state, meta: dict | None = None, force: bool = False) -> bool:
        """Starts saving `state` (and `meta`) at its step; CheckpointSaveError when it cannot be written."""
        step = int(jax.device_get(state.step))
        self._finish_pending()
        self._check_space(state, step)
        try:
            saved = self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})),
                force=force,
            )
        except Exception as error:  # noqa: BLE001 — file system errors become one short message, others pass
            self._raise_short(error, step)
            raise
        if saved:
            self._pending = step
        return saved

    def restore(self, abstract_state, step: int | None = None):
        """(state placed with the shardings in `abstract_state`, meta dict) of `step` (default latest)."""
        step = self.latest_step() if step is None else step
        self._check_compatible(step, abstract_state)
        return self._read(step, abstract_state)

    def restore_latest(self, abstract_state):
        """(step, state, meta) of the newest checkpoint that reads back, or None when there is none.

        Checkpoints newer than it that did not read back are moved to WORKDIR/checkpoints_corrupt/ (process 0
        says which, and why). All processes restore the same step: one that fails to read on any process counts
        as unreadable. CorruptCheckpointError when none reads back (nothing is moved then: the cause may be
        elsewhere); IncompatibleCheckpointError when a checkpoint's arrays do not fit `abstract_state`.
        """
        failures = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            state = meta = error = None
            try:
                self._check_compatible(step, abstract_state)
                state, meta = self._read(step, abstract_state)
            except IncompatibleCheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 — whatever failed to read, the next older step is tried
                error = e
            if _all_processes_agree(error is None):
                if failures:
                    self._set_aside(failures, step)
                return step, state, meta
            failures.append((step, error or RuntimeError("another process of this run could not read it")))
        if failures:
            listed = "; ".join(f"step {s}: {_short(e)}" for s, e in failures)
            raise CorruptCheckpointError(
                f"no checkpoint in {self.directory} could be read back ({listed}). Nothing was moved. If their "
                f"files are damaged, move the step folders into {os.path.join(self.workdir, CORRUPT_DIR)} and run "
                "the same command to start again from step 0.")
        return None

    def wait(self):
        self._finish_pending()

    def close(self):
        try:
            if not self._failed:
                self._finish_pending()
        finally:
            try:
                self.manager.close()
            except Exception:  # noqa: BLE001 — the save that failed again, already reported
                if not self._failed:
                    raise

    # -- internals ---------------------------------------------------------------------------------------------

    def _step_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _read(self, step: int, abstract_state):
        """Reads one step with Orbax's item handlers (no cross-process barrier, unlike the manager's restore,
        so a process that fails does not leave the others waiting): the same files the manager writes."""
        path = epath.Path(self._step_path(step))
        if not ocp.path.step.is_path_finalized(path):
            raise ValueError(f"{path} is not a finished checkpoint")
        state_handler, meta_handler = ocp.StandardCheckpointHandler(), ocp.JsonCheckpointHandler()
        try:
            state = state_handler.restore(path / "state", args=ocp.args.StandardRestore(abstract_state))
            meta = meta_handler.restore(path / "meta")
        finally:
            state_handler.close()
            meta_handler.close()
        return state, meta

    def _check_compatible(self, step: int, abstract_state) -> None:
        """IncompatibleCheckpointError unless the arrays saved at `step` have the names, shapes and dtypes of
        `abstract_state`'s leaves; unreadable metadata is left to `_read` to report."""
        handler = ocp.StandardCheckpointHandler()
        try:
            saved_tree = handler.metadata(epath.Path(self._step_path(step)) / "state")
        except Exception:  # noqa: BLE001 — a damaged checkpoint, not an incompatible one
            return
        finally:
            handler.close()
        saved = {leaf.name: (tuple(leaf.shape), np.dtype(leaf.dtype))
                 for leaf in jax.tree.leaves(saved_tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "name"))
                 if hasattr(leaf, "shape") and hasattr(leaf, "name")}
        wanted = {_leaf_name(path): (tuple(leaf.shape), np.dtype(leaf.dtype))
                  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
        differ = [f"{n}: saved {saved[n][0]} {saved[n][1]}, this run {wanted[n][0]} {wanted[n][1]}"
                  for n in sorted(set(saved) & set(wanted)) if saved[n] != wanted[n]]
        only_saved, only_wanted = sorted(set(saved) - set(wanted)), sorted(set(wanted) - set(saved))
        if not (differ or only_saved or only_wanted):
            return
        parts = [f"{len(differ)} of other shape or dtype ({_first(differ)})"] if differ else []
        parts += [f"{len(only_saved)} only in the checkpoint ({_first(only_saved)})"] if only_saved else []
        parts += [f"{len(only_wanted)} only in this run ({_first(only_wanted)})"] if only_wanted else []
        raise IncompatibleCheckpointError(
            f"the checkpoint of step {step} in {self.directory} is not of the train state this run builds "
            f"(another backbone, framework or heads?): arrays {'; '.join(parts)}. Resume it with the settings "
            f"that wrote it ({os.path.join(self.workdir, 'config.json')}), or start a new run in another --workdir.")

    def _set_aside(self, failures: list, restored: int) -> None:
        """Moves the unreadable steps out of Orbax's directory (process 0), with the error beside each."""
        if jax.process_index() == 0:
            root = os.path.join(self.workdir, CORRUPT_DIR)
            os.makedirs(root, exist_ok=True)
            for step, error in failures:
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                target, n = os.path.join(root, f"{step}-{stamp}"), 1
                while os.path.exists(target):
                    target, n = os.path.join(root, f"{step}-{stamp}-{n}"), n + 1
                os.rename(self._step_path(step), target)
                with open(target + ".txt", "w") as f:
                    f.write(f"step {step} of {self.directory} did not read back; the run resumed from step "
                            f"{restored}.\n\n" + "".join(traceback.format_exception(error)))
                print(f"checkpoint step {step} could not be read ({_short(error)}); moved to {target} "
                      f"(the error is in {os.path.basename(target)}.txt)", flush=True)
            print(f"restoring step {restored}, the newest checkpoint that reads back", flush=True)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("stjax: unreadable checkpoints set aside")
        self.manager.reload()

    def _finish_pending(self) -> None:
        """Waits for the save in flight; its failure is reported as that step's."""
        if self._pending is None:
            return
        step, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001
            self._raise_short(error, step)
            raise

    def _check_space(self, state, step: int) -> None:
        """CheckpointSaveError before writing anything when the file system has less room than a checkpoint
        takes (the newest one on disk, else the state's bytes); every process refuses when one does."""
        steps = self.manager.all_steps()
        needed = (_disk_bytes(self._step_path(max(steps))) if steps else 0) or \
            sum(int(leaf.nbytes) for leaf in jax.tree.leaves(state))
        try:
            usage = shutil.disk_usage(self.directory)
        except OSError:  # not a local file system (e.g. a bucket): nothing to measure
            usage = None
        fits = usage is None or usage.free >= needed
        if _all_processes_agree(fits):
            return
        self._failed = True
        short = CheckpointSaveError(self._save_failure_message(
            step, errno.ENOSPC, f"a checkpoint takes about {_format_bytes(needed)}", started=False))
        short.errno = errno.ENOSPC
        raise short

    def _raise_short(self, error: BaseException, step: int) -> None:
        """Raises CheckpointSaveError for `error` when a file system error caused it; returns otherwise."""
        code, detail = _file_system_error(error)
        if code is None:
            return
        self._failed = True
        _let_orbax_threads_finish()  # the save's other writes: none may outlive it (a retry reuses its folder)
        short = CheckpointSaveError(self._save_failure_message(step, code, detail))
        short.errno = code
        del error  # no reference to Orbax's frames, which hold its unfinished writes
        raise short from None

    def _save_failure_message(self, step: int, code: int, detail: str, started: bool = True) -> str:
        try:
            usage = shutil.disk_usage(self.directory)
            detail = f"{_format_bytes(usage.free)} free of {_format_bytes(usage.total)} there; {detail}"
        except OSError:
            pass
        done = [s for s in saved_steps(self.workdir) if s != step]
        if done:
            kept = (f"The previous checkpoints (step{'s' * (len(done) > 1)} {', '.join(map(str, done))}) are intact: "
                    f"{'free some space' if code in _DISK_FULL else 'fix that'} and run the same command to "
                    f"continue from step {done[-1]}.")
        else:
            kept = "No checkpoint of this run was written before it; the same command starts the run again."
        return (f"could not save the checkpoint of step {step} in {self.directory}: {os.strerror(code).lower()} "
                f"({detail}){', so the save was not started' if not started else ''}. {kept}")


def _all_processes_agree(ok: bool) -> bool:
    """True when `ok` holds on every process of the run (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


def _let_orbax_threads_finish(timeout: float = 300.0) -> None:
    """Joins the threads of Orbax's unfinished save operations (each save starts its own; none outlives a
    completed save), at most `timeout` seconds in all."""
    deadline = time.time() + timeout
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and type(thread).__module__.startswith("orbax"):
            thread.join(max(0.0, deadline - time.time()))


def _leaf_name(path) -> str:
    """The name Orbax gives the leaf at `path`: its keys joined by dots ('opt_state.0.trace.backbone...')."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return ".".join(parts)


def _first(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _short(error: BaseException) -> str:
    """A one-line description of `error` (TensorStore's messages carry a whole spec after the cause)."""
    text = (str(error).strip().splitlines() or [""])[0]
    text = text.split(" See full TensorStore details")[0].split(" [tensorstore_spec=")[0]
    return f"{type(error).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}"


def _disk_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _file_system_error(error: BaseException) -> tuple[int | None, str]:
    """(errno, the failing write in a line) when a file system error is among `error`'s causes, else (None, '').

    TensorStore reports them as ValueError text ("... No space left on device [os_error_code='28']")."""
    seen, pending = set(), [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        text = str(e)
        if isinstance(e, OSError) and e.errno:
            return e.errno, (e.filename and f"writing {e.filename}") or _short(e)
        match = _OS_ERROR_CODE.search(text)
        if match:
            failed = re.search(r'Failed writing: "([^"]+)"', text) or re.search(r'local file "([^"]+)"', text)
            return int(match.group(1)), f"writing {failed.group(1)}" if failed else _short(e)
        if "No space left on device" in text:
            return errno.ENOSPC, _short(e)
        pending += [e.__cause__, e.__context__]
    return None, ""


class _NoFileErrorTracebacks(logging.Filter):
    """Orbax logs every failed write of a save with its traceback (~1,500 lines for one full disk); its records
    caused by a file system error keep their first line, and the run ends with one CheckpointSaveError."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "orbax" in record.pathname and _file_system_error(record.exc_info[1])[0]:
            record.msg, record.args = record.getMessage().splitlines()[0][:300], ()
            record.exc_info = record.exc_text = None
        return True


class _NoAbandonedOrbaxTasks(logging.Filter):
    """Drops asyncio's "exception was never retrieved" for the tasks of an Orbax read or write that failed
    (one per array, each with its traceback): that failure is reported once, by the operation itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (error is not None and "never retrieved" in str(record.msg) and _raised_in_orbax(error))


def _raised_in_orbax(error: BaseException | None) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            if "/orbax/" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    return False


def _is_orbax_aftermath(unraisable) -> bool:
    """Whether an unraisable exception is what an Orbax operation that failed leaves behind: the coroutines it
    abandoned (closed when collected, often at exit), and TensorStore's callbacks into its closed event loop."""
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and "/orbax/" in code.co_filename:
        return True
    error, tb = unraisable.exc_value, unraisable.exc_traceback
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return (isinstance(error, RuntimeError) and str(error) == "Event loop is closed" and tb is not None
            and tb.tb_frame.f_code.co_filename.endswith("base_events.py"))


def _quiet_orbax_file_errors() -> None:
    """Installs the filters above (once per process) and an unraisable hook that drops Orbax's aftermath; a
    failed checkpoint read or write then prints its one message, not hundreds of tracebacks."""
    for name, kind in (("absl", _NoFileErrorTracebacks), ("asyncio", _NoAbandonedOrbaxTasks)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    previous = sys.unraisablehook
    if getattr(previous, "_stjax_quiet", False):
        return

    def hook(unraisable):
        if not _is_orbax_aftermath(unraisable):
            previous(unraisable)

    hook._stjax_quiet = True
    sys.unraisablehook = hook
