"""A run's checkpoints and workdir are safe: keep_checkpoints is checked, one run holds a workdir (a killed one
leaves it free), a resumed run keeps the config that wrote its checkpoints, an unreadable checkpoint is set
aside for the one before, and a save that fails on a full disk ends in one short message."""
import errno
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from stjax import configlib
from stjax import main as main_lib
from stjax import objectives
from stjax.train import checkpoint as checkpoint_lib
from stjax.train import mesh as mesh_lib
from stjax.train import pretrain as pretrain_lib
from stjax.train import workdir as workdir_lib

from conftest import xla_flags
from test_train import CLIPS_SHAPE, _config, _make_batches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A built tiny synthetic set: (data_dir, manual_dir)."""
    from stjax.data import config as data_config

    root = tmp_path_factory.mktemp("run_safety_data")
    config = _demo_config(str(root / "tfds"), str(root / "videos"))
    data_config.ensure_built(config, verbose=False)
    return config.data.data_dir, config.data.manual_dir


def _demo_config(data_dir, manual_dir, **fields):
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), "demo")
    configlib.set_fields(config, {"data.data_dir": data_dir, "data.manual_dir": manual_dir, **_TINY, **fields})
    return config


_TINY = {"data.synthetic.num_train": 16, "data.synthetic.num_test": 8, "data.synthetic.size": 32,
         "data.synthetic.seconds": 1.0, "data.augmentation.crop_size": 24, "data.shuffle_buffer": 16,
         "model.backbone": "r3d_micro", "byol.projector_hidden": (32,), "byol.projector_out": 16,
         "byol.predictor_hidden": (32,), "batch_size": 8, "eval_batch_size": 8, "total_steps": 4, "log_every": 2,
         "checkpoint_every": 2, "final_probe": "none", "data.test_views.temporal": 1, "data.test_views.spatial": 1}


def _command(data, workdir, **fields):
    flags = [f"--config.{k}={v}" for k, v in {**_TINY, **fields}.items()]
    return [sys.executable, "-m", "stjax.main", "--config=configs/pretrain.py:demo",
            f"--config.data.data_dir={data[0]}", f"--config.data.manual_dir={data[1]}", *flags, f"--workdir={workdir}"]


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_")) and k != "XLA_FLAGS"}
    return dict(env, XLA_FLAGS=xla_flags(8), JAX_PLATFORMS="cpu",
                PYTHONUNBUFFERED="1")


def _pretrain(workdir, total_steps=6, **fields):
    config = _config(**fields)
    framework = objectives.create_framework(config, total_steps=total_steps)
    return pretrain_lib.pretrain(config, str(workdir), framework, _make_batches, CLIPS_SHAPE, total_steps,
                                 steps_per_epoch=2, mesh=mesh_lib.create_mesh())


# --- keep_checkpoints ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", [0, -1])
def test_keep_checkpoints_below_1_fails_before_any_work(tmp_path, keep):
    """keep_checkpoints=0 used to keep nothing (a SIGTERM said "checkpoint saved" over an empty folder), and a
    negative value failed only inside Orbax."""
    config = _demo_config(str(tmp_path / "tfds"), str(tmp_path / "videos"), keep_checkpoints=keep)
    message = rf"keep_checkpoints={keep} is invalid; valid values: integers >= 1"
    with pytest.raises(ValueError, match=message):
        main_lib.validate(config)
    with pytest.raises(ValueError, match=message):
        main_lib.run(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run") and not os.path.exists(tmp_path / "videos")
    with pytest.raises(ValueError, match=message):
        checkpoint_lib.Checkpointer(str(tmp_path / "direct"), max_to_keep=keep)


# --- one run per workdir ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_run_stops_naming_the_first_and_a_killed_run_leaves_the_workdir_free(data, tmp_path):
    """Two `python -m stjax.main` on one workdir: the second stops before touching it (config.json as the
    first wrote it), naming the first; after SIGKILL of the first the same command resumes it."""
    workdir = tmp_path / "run"
    first = subprocess.Popen(_command(data, workdir, total_steps=10), cwd=ROOT, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while not checkpoint_lib.saved_steps(str(workdir)):
            assert first.poll() is None and time.time() < deadline, "the first run ended before a checkpoint"
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # paused mid-run: it holds the workdir while the second tries
        config_json = (workdir / "config.json").read_bytes()
        second = subprocess.run(_command(data, workdir, total_steps=10, log_every=1), cwd=ROOT, env=_env(),
                                capture_output=True, text=True, timeout=300)
        output = second.stdout + second.stderr
        assert second.returncode != 0, output[-3000:]
        assert (f"{workdir} is in use by another run (pid {first.pid} on host {socket.gethostname()}, started "
                in output), output[-3000:]
        assert "or give this run another --workdir. Its command: " in output and "resuming" not in output
        assert (workdir / "config.json").read_bytes() == config_json  # not rewritten with log_every=1
        holder = json.loads((workdir / workdir_lib.LOCK_FILE).read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        assert "--config=configs/pretrain.py:demo" in holder["command"]

        first.kill()  # SIGKILL: the kernel drops its lock
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    with workdir_lib.hold(str(workdir)):  # free at once: nothing stuck
        pass
    resumed = subprocess.run(_command(data, workdir, total_steps=10), cwd=ROOT, env=_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert "resuming from step" in resumed.stdout
    assert json.loads((workdir / "summary.json").read_text())["steps"] == 10


def test_the_workdir_lock_in_one_process():
    """Held: a second holder fails (in this process too) and the record names the holder; released: free,
    the record cleared."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        lock = os.path.join(directory, workdir_lib.LOCK_FILE)
        with workdir_lib.hold(directory):
            assert json.loads(open(lock).read())["pid"] == os.getpid()
            with pytest.raises(workdir_lib.WorkdirBusyError, match=rf"pid {os.getpid()} on host"):
                with workdir_lib.hold(directory):
                    pass
        assert open(lock).read() == ""
        with workdir_lib.hold(directory):
            pass


def test_an_evaluation_holds_its_workdir(tmp_path):
    """`configs/eval.py` runs take the lock too (RUN/eval/NAME/), before they build data or features."""
    from test_export import _fake_run

    from stjax.eval import evaluate

    _fake_run(tmp_path / "run", steps=(2,))
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), "knn")
    config.init_from, config.data_from_run = str(tmp_path / "run"), False
    config.data.data_dir, config.data.manual_dir = str(tmp_path / "tfds"), str(tmp_path / "videos")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from stjax.train import workdir; "
                               "h = workdir.hold(sys.argv[1]); h.__enter__(); print('held', flush=True); "
                               "time.sleep(600)", str(tmp_path / "eval")],
                              cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(workdir_lib.WorkdirBusyError, match=rf"in use by another run \(pid {holder.pid} "):
            evaluate.run(config, str(tmp_path / "eval"))
    finally:
        holder.kill()
        holder.wait()
    assert not os.path.exists(tmp_path / "videos")  # it stopped before building anything


# --- a resumed run keeps its config -------------------------------------------------------------------------

@pytest.mark.slow  # three whole runs through stjax.main.run
def test_a_resumed_run_refuses_settings_that_define_the_run_and_keeps_its_config_json(data, tmp_path):
    """A finished run given another backbone used to rewrite config.json, then fail in Orbax on a shape, and
    leave export naming the old weights with the new backbone."""
    from stjax import export

    workdir = str(tmp_path / "run")
    main_lib.run(_demo_config(*data), workdir)
    original = open(os.path.join(workdir, "config.json"), "rb").read()
    changed = _demo_config(*data, **{"model.backbone": "r3d_tiny", "optimizer.base_lr": 1.0})
    with pytest.raises(workdir_lib.ConfigMismatchError) as error:
        main_lib.run(changed, workdir)
    message = str(error.value)
    assert f"{workdir} holds checkpoints (up to step 4) of a run with other settings" in message
    assert "  model.backbone: 'r3d_micro' in config.json, 'r3d_tiny' now" in message
    assert "  optimizer.base_lr: 4.8 in config.json, 1.0 now" in message
    assert "Nothing was written" in message and "log_every, checkpoint_every, keep_checkpoints" in message
    assert open(os.path.join(workdir, "config.json"), "rb").read() == original
    assert checkpoint_lib.saved_steps(workdir) == [2, 4]
    spec, _, step = export.run_backbone(workdir)
    assert spec["backbone"] == "r3d_micro" and step == 4

    # settings that do not define the run may change: recorded beside config.json, which stays
    main_lib.run(_demo_config(*data, log_every=1, **{"probe.epochs": 3, "moco.temperature": 0.5}), workdir)
    assert open(os.path.join(workdir, "config.json"), "rb").read() == original
    (record,) = [json.loads(line) for line in open(os.path.join(workdir, workdir_lib.HISTORY_FILE))]
    assert record["changed"] == {"log_every": [2, 1], "probe.epochs": [100, 3]}  # moco's block: not this run's
    assert record["resumed_from_step"] == 4 and record["pid"] == os.getpid()
    latest = workdir_lib.run_config(workdir)
    assert latest["log_every"] == 1 and latest["probe"]["epochs"] == 3 and latest["model"]["backbone"] == "r3d_micro"


def test_config_comparison_rules():
    saved = {"framework": "byol", "seed": 0, "log_every": 10, "model": {"backbone": "a", "remat": False},
             "byol": {"base_momentum": 0.99}, "swav": {"epsilon": 0.05}, "data": {"data_dir": None, "stride": 2,
                                                                                    "test_views": {"spatial": 1}}}
    new = {"framework": "byol", "seed": 1, "log_every": 5, "model": {"backbone": "a", "remat": True, "new": 1},
           "byol": {"base_momentum": 0.9}, "swav": {"epsilon": 0.1}, "data": {"data_dir": "/d", "stride": 4,
                                                                               "test_views": {"spatial": 3}}}
    result = workdir_lib.compare(saved, new)
    assert result["refused"] == {"seed": (0, 1), "byol.base_momentum": (0.99, 0.9), "data.stride": (2, 4)}
    assert result["changed"] == {"log_every": (10, 5), "model.remat": (False, True), "data.data_dir": (None, "/d"),
                                 "data.test_views.spatial": (1, 3)}
    assert result["added"] == {"model.new": 1} and result["removed"] == {}


# --- an unreadable checkpoint -------------------------------------------------------------------------------

def _damage(step_dir, how):
    if how == "truncated data":
        files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_*", "d", "*"))
        assert files
        for path in files:
            os.truncate(path, os.path.getsize(path) // 2)
    else:
        with open(os.path.join(step_dir, "state", "_METADATA"), "w") as f:
            f.write('{"tree_metadata": {')


@pytest.mark.parametrize("how", ["truncated data", "garbled metadata"])
def test_an_unreadable_latest_checkpoint_is_set_aside_and_the_run_ends_as_an_uninterrupted_one(tmp_path, capsys,
                                                                                            caplog, how):
    """A damaged latest checkpoint used to end every resume in a TensorStore error."""
    whole = jax.device_get(_pretrain(tmp_path, total_steps=6).state)  # checkpoints at steps 3 and 6
    assert checkpoint_lib.saved_steps(str(tmp_path)) == [3, 6]
    _damage(str(tmp_path / "checkpoints" / "6"), how)
    capsys.readouterr()
    resumed = _pretrain(tmp_path, total_steps=6)
    out = capsys.readouterr().out
    assert resumed.resumed_from == 3
    (aside,) = glob.glob(str(tmp_path / checkpoint_lib.CORRUPT_DIR / "6-*Z"))
    assert "checkpoint step 6 could not be read (" in out and f"moved to {aside}" in out
    assert "restoring step 3, the newest checkpoint that reads back" in out
    assert "did not read back; the run resumed from step 3" in open(aside + ".txt").read()
    assert os.listdir(os.path.join(aside, "state"))  # kept whole for inspection
    assert checkpoint_lib.saved_steps(str(tmp_path)) == [3, 6]  # 6 written again
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]  # one line per array, else
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(jax.device_get(resumed.state))):
        np.testing.assert_array_equal(a, b)


def test_no_readable_checkpoint_stops_the_run_and_moves_nothing(tmp_path):
    # (6 steps, as in the test above: the same compiled programs)
    _pretrain(tmp_path, total_steps=6, keep_checkpoints=1)
    _damage(str(tmp_path / "checkpoints" / "6"), "truncated data")
    with pytest.raises(checkpoint_lib.CorruptCheckpointError,
                       match=r"no checkpoint in .*checkpoints could be read back \(step 6: .*\)\. Nothing was moved"):
        _pretrain(tmp_path, total_steps=6, keep_checkpoints=1)
    assert checkpoint_lib.saved_steps(str(tmp_path)) == [6]
    assert not os.path.exists(tmp_path / checkpoint_lib.CORRUPT_DIR)


def test_a_checkpoint_of_another_state_is_named_not_set_aside(tmp_path):
    _pretrain(tmp_path, total_steps=6)
    with pytest.raises(checkpoint_lib.IncompatibleCheckpointError,
                       match=r"the checkpoint of step 6 in .* is not of the train state this run builds .*"
                             r"arrays \d+ of other shape or dtype \(.*params.projector"):
        _pretrain(tmp_path, total_steps=6, byol=dict(projector_hidden=(32,), projector_out=8,
                                                     predictor_hidden=(32,), base_momentum=0.99, pairing="all"))
    assert checkpoint_lib.saved_steps(str(tmp_path)) == [3, 6]
    assert not os.path.exists(tmp_path / checkpoint_lib.CORRUPT_DIR)


# --- a full disk --------------------------------------------------------------------------------------------

def test_a_save_that_fails_on_a_full_disk_ends_in_one_short_message(tmp_path, monkeypatch, caplog):
    """ENOSPC in Orbax's background save thread (its writer of the step's metadata, from the second save on):
    one CheckpointSaveError naming the path, the space and the intact checkpoint; Orbax's logs lose their
    tracebacks (~1,500 lines for one full disk)."""
    original, saves = ocp.JsonCheckpointHandler._save_fn, []

    async def fails_once_full(self, x, directory):
        saves.append(directory)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))
        return await original(self, x, directory)

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", fails_once_full)
    with pytest.raises(checkpoint_lib.CheckpointSaveError) as error:
        _pretrain(tmp_path, total_steps=6)
    message = str(error.value)
    assert error.value.errno == errno.ENOSPC and "\n" not in message
    assert message.startswith(f"could not save the checkpoint of step 6 in {tmp_path / 'checkpoints'}: no space "
                              "left on device (") and " free of " in message
    assert message.endswith("The previous checkpoints (step 3) are intact: free some space and run the same "
                            "command to continue from step 3.")
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in caplog.records if "orbax" in r.pathname)
    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", original)
    assert _pretrain(tmp_path, total_steps=6).resumed_from == 3


def test_a_save_that_would_not_fit_is_not_started(tmp_path, monkeypatch):
    real = checkpoint_lib.shutil.disk_usage
    monkeypatch.setattr(checkpoint_lib.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=100_000))  # less than a train state
    with pytest.raises(checkpoint_lib.CheckpointSaveError,
                       match=r"could not save the checkpoint of step 3 in .*: no space left on device \(97\.7 KiB "
                             r"free of .* there; a checkpoint takes about [\d.]+ [KM]iB\), so the save was not started\. No "
                             "checkpoint of this run was written before it"):
        _pretrain(tmp_path, total_steps=6)
    assert os.listdir(tmp_path / "checkpoints") == []  # not even a temporary folder
