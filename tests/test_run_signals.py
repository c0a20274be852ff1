"""`python -m stjax.main` as a scheduler treats it: SIGTERM during start-up, SIGKILL mid-run, then the same command.

Each run is a real process on a tiny synthetic set (r3d_micro, 8 videos per step, no final probe).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from stjax import configlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 12


def _flags(data_root, workdir, **overrides):
    settings = {
        "data.data_dir": data_root / "tfds", "data.manual_dir": data_root / "videos",
        "data.synthetic.num_train": 16, "data.synthetic.num_test": 8, "data.synthetic.size": 32,
        "data.synthetic.seconds": 1.0, "data.augmentation.crop_size": 24, "data.shuffle_buffer": 16,
        "model.backbone": "r3d_micro", "byol.projector_hidden": "(32,)", "byol.projector_out": 16,
        "byol.predictor_hidden": "(32,)", "batch_size": 8, "eval_batch_size": 8, "total_steps": TOTAL_STEPS,
        "log_every": 1, "checkpoint_every": 4, "final_probe": "none",
    }
    settings.update(overrides)
    return (["--config=configs/pretrain.py:demo"] + [f"--config.{k}={v}" for k, v in settings.items()]
            + [f"--workdir={workdir}"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One compilation cache for the module's runs: the same programs compile once."""
    return tmp_path_factory.mktemp("signals_jax_cache")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A folder with the tiny synthetic set built in it (data_root for `_flags`)."""
    from stjax.data import config as data_config

    root = tmp_path_factory.mktemp("signals_data")
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), "demo")
    config.data.data_dir, config.data.manual_dir = str(root / "tfds"), str(root / "videos")
    config.data.synthetic.update(num_train=16, num_test=8, size=32, seconds=1.0)
    config.data.augmentation.crop_size = 24
    data_config.ensure_built(config, verbose=False)
    return root


class Run:
    """`python -m stjax.main FLAGS`, its merged stdout and stderr collected as they come (progress bars too)."""

    def __init__(self, flags, cache_dir):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "STJAX_", "SLURM_"))}
        env.update(STJAX_COMPILATION_CACHE=str(cache_dir), PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
        self.process = subprocess.Popen([sys.executable, "-m", "stjax.main", *flags], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._chunks = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for chunk in iter(lambda: self.process.stdout.read1(4096), b""):
            self._chunks.append(chunk)

    @property
    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while text not in self.output:
            assert self.process.poll() is None, f"ended before printing {text!r}:\n{self.output[-3000:]}"
            assert time.time() < deadline, f"no {text!r} after {timeout} s:\n{self.output[-3000:]}"
            time.sleep(0.01)

    def finish(self, timeout: float = 600) -> str:
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.output


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _saved_steps(workdir):
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


@pytest.mark.slow
def test_sigterm_during_start_up_stops_cleanly_and_the_same_command_then_runs(tmp_path, cache):
    """SIGTERM while the data is built, then while the run compiles: each time exit 0 with the message the
    launchers expect, nothing trained or saved (it used to die of the signal, status 143); then the same command
    runs to the end."""
    data_root, workdir = tmp_path / "data", tmp_path / "run"
    flags = _flags(data_root, workdir)

    building = Run(flags, cache)
    building.wait_for("synthetic videos")  # the data set is being rendered
    building.process.send_signal(signal.SIGTERM)
    output = building.finish()
    assert building.process.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert "stopped on SIGTERM during start-up" in output and "run the same command to continue" in output
    assert "checkpoint saved" not in output
    assert not (workdir / "metrics.jsonl").exists() and _saved_steps(workdir) == []
    assert list((data_root / "tfds" / "synthetic").glob("*/*/dataset_info.json"))  # the build was finished first

    compiling = Run(flags, cache)
    compiling.wait_for("byol on synthetic")  # printed once the data is ready, before the state and the step
    compiling.process.send_signal(signal.SIGTERM)
    output = compiling.finish()
    assert compiling.process.returncode == 0, output[-3000:]
    assert "synthetic videos" not in output  # the data built before is used as it is
    assert "stopped on SIGTERM during start-up" in output and "run the same command to continue" in output
    assert not (workdir / "metrics.jsonl").exists() and _saved_steps(workdir) == []

    whole = Run(flags, cache)
    output = whole.finish()
    assert whole.process.returncode == 0, output[-3000:]
    assert f"step {TOTAL_STEPS}/{TOTAL_STEPS}" in output
    assert [r["step"] for r in _records(workdir)] == list(range(1, TOTAL_STEPS + 1))
    assert json.loads((workdir / "summary.json").read_text())["steps"] == TOTAL_STEPS


@pytest.mark.slow
def test_after_sigkill_and_a_torn_last_line_the_same_command_logs_every_step_once(tmp_path, built, cache):
    """Killed after logging steps past its last checkpoint, mid-write of a line: the same command drops those
    records (the steps are trained again) and the torn line, saying so, and ends with one record per step and a
    summary (the end of the run used to fail on the torn line, and the steps were listed twice)."""
    workdir = tmp_path / "run"
    flags = _flags(built, workdir)
    killed = Run(flags, cache)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 300
    while True:  # stopped (SIGSTOP) to look: logged past the newest finished checkpoint?
        assert killed.process.poll() is None and time.time() < deadline, killed.output[-3000:]
        logged = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        if logged >= 2:
            killed.process.send_signal(signal.SIGSTOP)
            if logged > max(_saved_steps(workdir), default=0) and logged < TOTAL_STEPS:
                break
            killed.process.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    killed.process.kill()
    killed.finish()
    resume_from = max(_saved_steps(workdir), default=0)
    logged = [r["step"] for r in _records(workdir)]
    assert logged[-1] > resume_from
    with open(metrics, "a") as f:
        f.write('{"step": %d, "grad_no' % (logged[-1] + 1))  # as a kill in the middle of a write leaves it

    resumed = Run(flags, cache)
    output = resumed.finish()
    assert resumed.process.returncode == 0, output[-3000:]
    assert f"warning: {metrics}, line {len(logged) + 1}: its last line, torn by an interrupted write; skipped" in output
    dropped = len([s for s in logged if s > resume_from])
    assert f"dropped {dropped} records of steps after {resume_from}" in output
    records = _records(workdir)
    assert [r["step"] for r in records] == list(range(1, TOTAL_STEPS + 1))
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == TOTAL_STEPS and summary["final_loss"] == records[-1]["loss"]
