"""One run per workdir, and a resumed run that stays the run its checkpoints are of.

`hold(workdir)`: process 0 holds an exclusive lock on WORKDIR/.stjax.lock for the whole run (`fcntl.flock`:
the kernel drops it when the process ends, however it ends, so a crashed, preempted or SIGKILLed run leaves
nothing stuck). The file names the holder (host, pid, start time, command); a second run on the workdir stops
with WorkdirBusyError naming it, before it reads or writes anything there. The other processes of a
multi-process run are part of the run: they take no lock, and stop with process 0 when it cannot.

`check_config(workdir, config)`: WORKDIR/config.json is the config that wrote the run's checkpoints, and once
there are checkpoints it is never rewritten. A resumed run's config is compared with it first: the fields in
`may_change` (PRETRAIN_MAY_CHANGE) may differ, every other one must be equal (ConfigMismatchError naming each,
with both values, before anything is written), and the accepted differences are appended to
WORKDIR/config_history.jsonl. `run_config(workdir)` is config.json with them applied: the settings of the
run's latest session. Fields that only one side has (the code gained or lost a setting) are accepted and
recorded the same way.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time

LOCK_FILE = ".stjax.lock"
CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"

# What a resumed pretraining run may change: how often it logs, saves and evaluates and how many checkpoints it
# keeps, where it finds its data, how the backbone is computed (the same function and variables: remat, the 3D
# convolution lowering, the BatchNorm implementation, the stem's channel padding), and the evaluations of the
# backbone during and after training. Everything else defines the run and may not change: framework and its
# block, rho, model (backbone, dtype, init_from), optimizer, batch_size, seed, total_steps / num_epochs (they
# set the learning-rate and momentum schedules), the dataset, its sampling and augmentation. An entry ending
# in "." covers the fields under it. Blocks of the frameworks the run does not use are not compared.
PRETRAIN_MAY_CHANGE = (
    "log_every", "checkpoint_every", "keep_checkpoints", "eval_every", "eval_batch_size", "final_probe",
    "probe.", "knn.", "data.data_dir", "data.manual_dir", "data.eval_split", "data.test_views.",
    "model.remat", "model.remat_policy", "model.lowering", "model.batch_norm", "model.stem_pad_channels",
)


class WorkdirBusyError(RuntimeError):
    """Another run holds the workdir; the message names it and how to proceed."""


class ConfigMismatchError(ValueError):
    """A resumed run's config differs from its config.json in fields that may not change; the message names
    every one with both values."""


def _process_index() -> int:
    import jax

    return jax.process_index()


def _process_0_says(flag: bool) -> bool:
    """Process 0's `flag` on every process of the run (a collective: every process calls it once)."""
    import jax

    if jax.process_count() == 1:
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def _session() -> dict:
    """Who this process is: host, pid, start time and command line."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _now(),
            "command": shlex.join([os.path.basename(sys.executable), *sys.argv])}


@contextlib.contextmanager
def hold(workdir: str):
    """Holds WORKDIR (made if missing) for the `with` block; WorkdirBusyError when another run holds it."""
    os.makedirs(workdir, exist_ok=True)
    fd, busy = _lock(workdir) if _process_index() == 0 else (None, None)
    if _process_0_says(busy is not None):
        raise WorkdirBusyError(busy or f"{workdir} is in use by another run (process 0 of this run names it)")
    try:
        yield
    finally:
        if fd is not None:
            os.ftruncate(fd, 0)  # the file stays (removing it would race a run locking it now); its record goes
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _lock(workdir: str) -> tuple[int | None, str | None]:
    """(the locked file's descriptor, None); (None, the busy message) when another process holds it; (None, None)
    when the file system has no locks (a warning, and the run goes on unguarded)."""
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        message = _busy_message(workdir, fd)
        os.close(fd)
        return None, message
    except OSError as error:
        os.close(fd)
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        print(f"warning: {path} cannot be locked on this file system ({error.strerror}); nothing stops a second "
              "run on this workdir", file=sys.stderr, flush=True)
        return None, None
    record = json.dumps(_session()) + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    return fd, None


def _busy_message(workdir: str, fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (OSError, ValueError):
        holder = {}
    if holder.get("pid"):
        pid, host = holder["pid"], holder.get("host", "?")
        who = f"pid {pid} on host {host}, started {holder.get('started', '?')}"
        stop = f"stop it (`kill {pid}` on {host}: it saves a checkpoint, and then this command continues the run)"
        command = f" Its command: {holder['command']}" if holder.get("command") else ""
    else:
        who, stop, command = f"its details in {os.path.join(workdir, LOCK_FILE)} are not written yet", "stop it", ""
    return (f"{workdir} is in use by another run ({who}). Two runs on one workdir would resume each other's "
            f"checkpoints and mix them. Wait for that run to end, {stop}, or give this run another --workdir."
            + command)


def _flatten(tree, prefix: str = "") -> dict:
    """{'a.b': leaf} of a nested dict (an empty dict is a leaf)."""
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _may_change(field: str, may_change) -> bool:
    return any(field == rule or (rule.endswith(".") and field.startswith(rule)) for rule in may_change)


def compare(saved: dict, new: dict, may_change=PRETRAIN_MAY_CHANGE) -> dict:
    """{'refused': {field: (saved, new)}, 'changed': {...}, 'added': {field: new}, 'removed': {field: saved}}
    between two configs as dicts (`config.to_json_best_effort()` parsed)."""
    from stjax import objectives

    used = {saved.get("framework"), new.get("framework")}
    unused = set(objectives.FRAMEWORKS) - used
    old_flat, new_flat = _flatten(saved), _flatten(new)
    result = {"refused": {}, "changed": {}, "added": {}, "removed": {}}
    for field in sorted(set(old_flat) | set(new_flat)):
        if field.split(".")[0] in unused:
            continue
        if field not in old_flat:
            result["added"][field] = new_flat[field]
        elif field not in new_flat:
            result["removed"][field] = old_flat[field]
        elif old_flat[field] != new_flat[field]:
            kind = "changed" if _may_change(field, may_change) else "refused"
            result[kind][field] = (old_flat[field], new_flat[field])
    return result


def check_config(workdir: str, config, may_change=PRETRAIN_MAY_CHANGE) -> dict:
    """Compares `config` with WORKDIR/config.json when WORKDIR has checkpoints and records it (process 0 writes);
    returns the fields changed, {field: (saved, new)}.

    A new run writes config.json (a previous one that wrote no checkpoint is replaced, its config kept in the
    history); a resumed run refuses changes outside `may_change` (ConfigMismatchError, nothing written) and
    appends the accepted ones to WORKDIR/config_history.jsonl. Call it holding the workdir (`hold`).
    """
    from stjax.train import checkpoint as checkpoint_lib

    path = os.path.join(workdir, CONFIG_FILE)
    new = json.loads(config.to_json_best_effort())
    steps = checkpoint_lib.saved_steps(workdir)
    saved = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError) as error:
            if steps:
                raise ConfigMismatchError(
                    f"{path} cannot be read ({error}): it is the config that wrote the checkpoints in {workdir}, "
                    "which a resumed run is checked against. Restore it, or move it aside to resume with this "
                    "command's config unchecked.") from None
    if not steps or saved is None:
        if _process_index() == 0:
            if saved is not None and saved != new:
                _append_history(workdir, {"replaced": saved, "why": "no checkpoint had been written"})
            _write_json(path, new)
        return {}
    difference = compare(saved, new, may_change)
    if difference["refused"]:
        lines = [f"  {field}: {_show(old)} in config.json, {_show(value)} now"
                 for field, (old, value) in difference["refused"].items()]
        raise ConfigMismatchError(
            f"{workdir} holds checkpoints (up to step {steps[-1]}) of a run with other settings; "
            f"{'this field' if len(lines) == 1 else 'these fields'} may not change when a run resumes:\n"
            + "\n".join(lines) + "\nNothing was written. To continue the run, give it the settings in "
            f"{path}; for a new run, give another --workdir. A resumed run may change: "
            + ", ".join(r.rstrip(".") + ("*" if r.endswith(".") else "") for r in may_change) + ".")
    if any(difference[k] for k in ("changed", "added", "removed")) and _process_index() == 0:
        _append_history(workdir, {"resumed_from_step": steps[-1],
                                  "changed": {k: list(v) for k, v in difference["changed"].items()},
                                  "added": difference["added"], "removed": difference["removed"]})
        shown = [f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in difference["changed"].items()]
        shown += [f"{k} (new setting): {_show(v)}" for k, v in difference["added"].items()]
        shown += [f"{k} (setting gone)" for k in difference["removed"]]
        print(f"resuming with settings changed since the run started ({', '.join(shown)}); recorded in "
              f"{os.path.join(workdir, HISTORY_FILE)}, {CONFIG_FILE} stays as the run started", flush=True)
    return difference["changed"]


def run_config(workdir: str) -> dict:
    """WORKDIR/config.json with the changes in WORKDIR/config_history.jsonl applied, in order: the settings of
    the run's latest session (the same as config.json in every field a resumed run may not change)."""
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
        config = json.load(f)
    history = os.path.join(workdir, HISTORY_FILE)
    if not os.path.exists(history):
        return config
    with open(history) as f:
        records = [json.loads(line) for line in f if line.strip()]
    for record in records:
        if "replaced" in record:
            continue
        for field, value in [(k, v[1]) for k, v in record.get("changed", {}).items()] + \
                list(record.get("added", {}).items()):
            *parents, leaf = field.split(".")
            node = config
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        for field in record.get("removed", {}):
            *parents, leaf = field.split(".")
            node = config
            for key in parents:
                node = node.get(key, {})
            node.pop(leaf, None)
    return config


def _show(value) -> str:
    return repr(tuple(value)) if isinstance(value, list) else repr(value)


def _write_json(path: str, value: dict) -> None:
    """Writes `path` whole or not at all (a temporary file renamed over it)."""
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(temporary, path)


def _append_history(workdir: str, record: dict) -> None:
    with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
        session = _session()
        f.write(json.dumps({"time": session.pop("started"), **session, **record}) + "\n")
