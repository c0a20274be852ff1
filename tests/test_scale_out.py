"""Scale-out with real processes: 2 processes stopped by SIGTERM and resumed on fewer devices against 1 × 8,
SIGKILL during a save, sweeps.

Every run here is `python -m stjax.main` (the 2-process one through launch/multiprocess.sh) on a
tiny synthetic set, 24 steps of r3d_micro at 8 videos per step.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import xla_flags
from stjax import configlib
from stjax import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 24


def _config_flags(data_dir, manual_dir):
    return [
        "--config=configs/pretrain.py:demo",
        f"--config.data.data_dir={data_dir}", f"--config.data.manual_dir={manual_dir}",
        "--config.data.augmentation.crop_size=24", "--config.data.shuffle_buffer=16",
        "--config.model.backbone=r3d_micro",
        # a tenth of the demo's rate: float rounding differences between device layouts (all-reduces summed
        # in another order) then stay at rounding size instead of growing ~2x per step, as at the full rate
        "--config.optimizer.base_lr=0.48",
        "--config.byol.projector_hidden=(32,)", "--config.byol.projector_out=16",
        "--config.byol.predictor_hidden=(32,)",
        "--config.batch_size=8", "--config.eval_batch_size=8", f"--config.total_steps={TOTAL_STEPS}",
        "--config.log_every=1", "--config.checkpoint_every=100", "--config.probe.epochs=2",
        "--config.data.test_views.temporal=1", "--config.data.test_views.spatial=1",
    ]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One compilation cache for the module's runs: the same programs compile once."""
    return tmp_path_factory.mktemp("scale_out_jax_cache")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A built tiny synthetic set: (data_dir, manual_dir)."""
    from stjax.data import config as data_config

    root = tmp_path_factory.mktemp("multihost_data")
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), "demo")
    config.data.data_dir = str(root / "tfds")
    config.data.manual_dir = str(root / "videos")
    config.data.synthetic.update(num_train=16, num_test=8, size=32, seconds=1.0)
    config.data.augmentation.crop_size = 24  # the runs' crop: the demo's 56 is larger than these 32-px videos
    data_config.ensure_built(config, verbose=False)
    return config.data.data_dir, config.data.manual_dir


def _env(devices_per_process, cache_dir):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "STJAX_", "SLURM_")) and k != "XLA_FLAGS"}
    env.update(XLA_FLAGS=xla_flags(devices_per_process),
               STJAX_COMPILATION_CACHE=str(cache_dir), PYTHON=sys.executable, PYTHONUNBUFFERED="1",
               JAX_PLATFORMS="cpu")
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _start(workdir, dataset, cache_dir, devices=8, processes=1, extra=()):
    flags = _config_flags(*dataset) + list(extra) + [f"--workdir={workdir}"]
    if processes == 1:
        command = [sys.executable, "-m", "stjax.main", *flags]
        env = _env(devices, cache_dir)
    else:
        command = ["bash", os.path.join(ROOT, "launch", "multiprocess.sh"), str(processes), *flags]
        env = dict(_env(devices // processes, cache_dir), PORT=_free_port())
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def _losses(workdir):
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def _backbone(workdir):
    _, variables, step = export.run_backbone(str(workdir))
    return export.flatten_variables(variables), step


def _assert_same_backbone(a, b):
    (va, step_a), (vb, step_b) = a, b
    assert step_a == step_b == TOTAL_STEPS
    assert sorted(va) == sorted(vb)
    # the all-reduces sum in another order across processes: float32 rounding, grown over 24 steps of LARS at a
    # high rate, moves single elements by up to ~5e-4 (a different one each run); a wrong shard, update or BN
    # statistic moves whole arrays by far more
    distance = lambda a, b: float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-6))  # noqa: E731
    for name in va:
        assert distance(va[name], vb[name]) <= 1e-2, (name, distance(va[name], vb[name]))
    flat = [np.concatenate([np.ravel(v[name]) for name in sorted(va)]) for v in (va, vb)]
    assert distance(*flat) <= 1e-3, distance(*flat)


@pytest.fixture(scope="module")
def one_process_of_8(dataset, cache, tmp_path_factory):
    """The reference: 1 process, 8 devices, the data stream defined over 2 slices (as 2 processes read it)."""
    root = tmp_path_factory.mktemp("one_by_8")
    workdir = root / "run"
    output = _finish(_start(workdir, dataset, cache, extra=["--config.data.num_shards=2", "--config.final_probe=none"]))
    summary = json.loads((workdir / "summary.json").read_text())  # only its backbone and losses are compared
    assert summary["steps"] == TOTAL_STEPS and summary["probe_seconds"] < 1
    assert summary["linear_top1"] is None and summary["random_init_linear_top1"] is None
    assert summary["per_class_linear_top1"] == {} and "no linear probe (final_probe=none)" in output
    assert list(cache.glob("*-cache"))  # stjax.main kept its compiled programs there (the module's later runs load them)
    return workdir


@pytest.mark.slow
def test_2_processes_stop_on_sigterm_and_resume_on_fewer_devices_ending_like_1_process(dataset, cache,
                                                                                      one_process_of_8, tmp_path):
    """2 processes × 4 devices, SIGTERM mid-run, then the same command as 2 processes × 2 devices: every step
    is logged once (process 0 alone writes), and the run ends where 1 process × 8 devices ends."""
    workdir = tmp_path / "run"
    launcher = _start(workdir, dataset, cache, devices=8, processes=2)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        if launcher.poll() is not None:
            pytest.fail("the run ended before it logged 2 steps:\n" + launcher.stdout.read()[-4000:])
        assert time.time() < deadline, "no 2 steps logged in 300 s"
        time.sleep(0.02)
    launcher.send_signal(signal.SIGTERM)  # launch/multiprocess.sh passes it on to both processes
    output = _finish(launcher)
    assert "on 8 devices" in output
    assert output.count("checkpoint saved, run the same command to continue") == 1  # process 0 says it
    _, stopped_at = _backbone(workdir)  # one checkpoint, written by both processes at the same step
    assert 2 <= stopped_at < TOTAL_STEPS
    assert not (workdir / "summary.json").exists()
    # again, on a smaller mesh: the 8-device checkpoint restores onto 4 devices, the global batch stays 8
    # and the data stream keeps its 2 slices (recorded in the checkpoint), one per process
    output = _finish(_start(workdir, dataset, cache, devices=4, processes=2))
    assert f"resuming from step {stopped_at}" in output and "on 4 devices" in output
    assert [s for s, _ in _losses(workdir)] == list(range(1, TOTAL_STEPS + 1))
    assert output.count(f"step {TOTAL_STEPS}/{TOTAL_STEPS}") == 1 and output.count("wrote ") == 1
    summary = json.loads((workdir / "summary.json").read_text())  # the probe ran on features from both processes
    assert summary["num_devices"] == 4 and 0 <= summary["linear_top1"] <= 1
    np.testing.assert_allclose([v for _, v in _losses(workdir)], [v for _, v in _losses(one_process_of_8)],
                               rtol=1e-4)
    _assert_same_backbone(_backbone(workdir), _backbone(one_process_of_8))


KILLED_SAVE = """
import sys
import jax, jax.numpy as jnp, numpy as np
from stjax.train.checkpoint import Checkpointer
from stjax.train.state import TrainState

def state(step, size):
    # random on the host (jax's PRNG takes ~30 s for 150M values here), incompressible as real weights are
    values = jnp.asarray(np.random.default_rng(step).random(size, dtype=np.float32))
    return TrainState(step=jnp.asarray(step), params={"w": values}, batch_stats={"b": values[:4]},
                      extra={"e": values[:2]}, opt_state={"o": values[:3]})

checkpointer = Checkpointer(sys.argv[1], async_save=False)
checkpointer.save(state(1, 1000))
print("saved 1", flush=True)
checkpointer.save(state(2, 150_000_000))  # 600 MB of float32: still being written when the kill comes
print("saved 2", flush=True)
"""


def test_sigkill_during_a_save_leaves_nothing_that_resume_picks_up(tmp_path):
    import jax

    from stjax.train.checkpoint import Checkpointer

    env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu")
    process = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(tmp_path)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "saved 1"
    directory = tmp_path / "checkpoints"
    deadline = time.time() + 120
    while not any(p.name.startswith("2") for p in directory.iterdir()):
        assert time.time() < deadline and process.poll() is None, "the second save never started"
        time.sleep(0.001)
    partial = [p.name for p in directory.iterdir() if p.name.startswith("2")]
    process.kill()
    process.wait()
    assert partial and all(name != "2" for name in partial)  # killed while step 2 was a temporary folder

    checkpointer = Checkpointer(str(tmp_path))
    assert checkpointer.latest_step() == 1
    abstract = jax.eval_shape(lambda: _small_state())
    state, _ = checkpointer.restore(abstract)
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.asarray(_small_state().params["w"]))
    checkpointer.close()
    assert sorted(p.name for p in directory.iterdir()) == ["1"]  # the leftovers are gone


def _small_state():
    import jax
    import jax.numpy as jnp

    from stjax.train.state import TrainState

    values = jnp.asarray(np.random.default_rng(1).random(1000, dtype=np.float32))  # what KILLED_SAVE saved as 1
    return TrainState(step=jnp.asarray(1), params={"w": values}, batch_stats={"b": values[:4]},
                      extra={"e": values[:2]}, opt_state={"o": values[:3]})


# --- sweeps and the study's table -----------------------------------------------------------------------------

def _sweep(cache, *args):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "sweep.py"), *args], cwd=ROOT,
                            env=_env(8, cache), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _tiny_settings(data, total_steps):
    """The tiny run's flags, `total_steps` long, as `--set` items (top-level fields as config.FIELD)."""
    settings = []
    for flag in _config_flags(*data)[1:]:
        key, value = flag.removeprefix("--config.").split("=", 1)
        value = str(total_steps) if key == "total_steps" else value
        settings += ["--set", ("config." + key if "." not in key else key) + "=" + value]
    return settings


@pytest.mark.slow
def test_sweep_runs_every_grid_point_once_and_skips_finished_ones(dataset, cache, tmp_path):
    study = tmp_path / "study"
    args = ["--config", "configs/pretrain.py:demo", "--grid", "rho=1,2", *_tiny_settings(dataset, total_steps=4),
            "--set", "config.final_probe=pretrained", "--workdir", str(study)]
    output = _sweep(cache, *args)
    assert "2 runs in" in output and "0 finished, 2 to do" in output
    for rho in (1, 2):
        summary = json.loads((study / f"rho={rho}" / "summary.json").read_text())
        assert summary["rho"] == rho and summary["steps"] == 4
        assert 0 <= summary["linear_top1"] <= 1 and summary["random_init_linear_top1"] is None
        assert list(summary["per_class_linear_top1"]) == ["pretrained"]
    table = (study / "report.md").read_text()
    assert "| rho | linear_top1 |" in table
    for rho in (1, 2):
        top1 = json.loads((study / f"rho={rho}" / "summary.json").read_text())["linear_top1"]
        assert f"| {rho} | {100 * top1:.1f} |" in table
    assert (study / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (study / "rho=1" / "summary.json").stat().st_mtime
    knn = ["--eval", "configs/eval.py:knn --config.knn.k=4 --config.eval_batch_size=8"]
    again = _sweep(cache, *args, *knn)
    assert "2 finished, 0 to do; 2 evaluations to do" in again
    assert (study / "rho=1" / "summary.json").stat().st_mtime == before
    for rho in (1, 2):
        results = json.loads((study / f"rho={rho}" / "eval" / "knn" / "results.json").read_text())
        assert results["protocol"] == "knn" and results["init_from"] == str(study / f"rho={rho}")
        assert results["checkpoints"][-1]["step"] == 4 and results["checkpoints"][-1]["num_test"] == 8
    from stjax import report

    assert report.headline_metrics(report.collect(str(study))[1]) == ["linear_top1", "knn_top1"]
    knn_table = (study / "report_knn_top1.md").read_text()  # the sweep's tables: one per headline metric
    assert "knn_top1 of 2 runs from their evaluation `eval/knn`" in knn_table
    for rho in (1, 2):
        top1 = json.loads((study / f"rho={rho}" / "eval" / "knn" / "results.json").read_text())["checkpoints"][-1]["top1"]
        assert f"| {rho} | {100 * top1:.1f} |" in knn_table
    pending = _sweep(cache, *args, *knn, "--eval", "configs/eval.py:retrieval", "--print", "--prefix", "sbatch x.sh")
    lines = pending.strip().splitlines()  # knn is done: only the retrieval evaluations are left
    assert lines == [f"sbatch x.sh --config=configs/eval.py:retrieval --config.init_from={study}/rho={rho} "
                     f"--workdir={study}/rho={rho}/eval/retrieval" for rho in (1, 2)]
    printed = _sweep(cache, *args[:-2], "--grid", "framework=byol,simclr", "--workdir", str(study), "--print",
                     "--prefix", "sbatch launch/slurm.sh")
    lines = printed.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("sbatch launch/slurm.sh --config=") for line in lines)


@pytest.mark.slow
def test_sweep_checks_every_run_before_starting(tmp_path):
    def sweep(*args):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "sweep.py"), "--config",
                                 "configs/pretrain.py:demo", *args, "--workdir", str(tmp_path / "s")],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode != 0
        return result.stderr

    assert "rho=0 is invalid" in sweep("--grid", "rho=2,0")
    assert ("run rho=2,knn.kk=1: --config.knn.kk: no field 'kk' under knn; valid names: k, pool, temperature"
            in sweep("--grid", "rho=2", "--grid", "knn.kk=1"))
    assert "not an evaluation config" in sweep("--eval", "configs/pretrain.py:demo")
    assert "valid presets: linear, knn, retrieval, finetune" in sweep("--eval", "configs/eval.py:linaer")
    assert not (tmp_path / "s").exists()


def test_sweep_eta_counts_runs_and_evaluations_at_their_own_pace():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep", os.path.join(ROOT, "launch", "sweep.py"))
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    assert sweep.remaining_seconds({"run": [200.0, 300.0], "eval": [10.0]}, [False, True, False]) == 270.0
    assert sweep.remaining_seconds({"run": [200.0], "eval": []}, [False, True]) == 400.0  # no evaluation timed yet
    assert sweep.remaining_seconds({"run": [], "eval": [10.0]}, [True]) == 10.0
    assert sweep.parse_eval("configs/eval.py:finetune,dataset=ucf101/fold1 --config.seed=1") == (
        "finetune,dataset=ucf101-fold1", ["configs/eval.py:finetune,dataset=ucf101/fold1", "--config.seed=1"])
    assert sweep.parse_eval("configs/eval.py")[0] == "eval"
    with pytest.raises(SystemExit, match="--config.\\* flags"):
        sweep.parse_eval("configs/eval.py:knn knn.k=3")
    assert sweep.parse_eval("heldout=configs/eval.py:linear --config.data.eval_split=train[80%:]") == (
        "heldout", ["configs/eval.py:linear", "--config.data.eval_split=train[80%:]"])


def _write_study(root, with_sweep_json=True):
    grid = [["framework", ["byol", "simclr"]], ["rho", ["1", "2", "4"]]]
    runs = []
    for i, framework in enumerate(grid[0][1]):
        for j, rho in enumerate(grid[1][1]):
            name = f"framework={framework},rho={rho}"
            runs.append({"name": name, "params": {"framework": framework, "rho": rho}})
            (root / name).mkdir(parents=True)
            if (framework, rho) != ("simclr", "4"):  # one run unfinished
                (root / name / "summary.json").write_text(json.dumps({
                    "framework": framework, "rho": int(rho), "linear_top1": 0.1 * (i + 1) + 0.01 * j,
                    "random_init_linear_top1": 0.1, "chance_top1": 0.1, "final_loss": 1.0 + j, "steps": 500,
                    "backbone": "r3d_tiny", "dataset": "synthetic", "batch_size": 32}))
    if with_sweep_json:
        (root / "sweep.json").write_text(json.dumps({"grid": grid, "runs": runs}))


@pytest.mark.parametrize("with_sweep_json", [True, False])
def test_report_writes_the_framework_by_rho_table(tmp_path, capsys, with_sweep_json):
    from stjax import report

    _write_study(tmp_path, with_sweep_json)
    report.main([str(tmp_path)])
    table = (tmp_path / "report.md").read_text()
    assert "| framework | rho=1 | rho=2 | rho=4 |" in table
    assert "| byol | 10.0 | 11.0 | 12.0 |" in table
    assert "| simclr | 20.0 | 21.0 | – |" in table
    assert "5 of 6 runs finished" in table and "random initialisation: 10.0" in table
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.main([str(tmp_path), "--metric", "final_loss", "--rows", "rho", "--cols", "framework"])
    swapped = (tmp_path / "report_final_loss.md").read_text()
    assert "| rho | framework=byol | framework=simclr |" in swapped and "| 4 | 3 | – |" in swapped
    with pytest.raises(SystemExit, match="valid choices"):
        report.main([str(tmp_path), "--metric", "linear_top9"])
    with pytest.raises(SystemExit, match="valid choices: framework, rho"):
        report.main([str(tmp_path), "--rows", "seed"])


def test_report_names_the_commits_its_runs_come_from(tmp_path):
    from stjax import report

    _write_study(tmp_path)
    report.main([str(tmp_path)])
    assert "Code" not in (tmp_path / "report.md").read_text()  # summaries from before provenance was recorded
    for i, path in enumerate(sorted(tmp_path.glob("*/summary.json"))):
        summary = json.loads(path.read_text())
        path.write_text(json.dumps(dict(summary, provenance={"commit": "aaa" if i < 3 else "bbb+dirty"})))
    report.main([str(tmp_path)])
    assert "come from 2 code versions**: aaa (3 runs), bbb+dirty (2 runs)" in (tmp_path / "report.md").read_text()
    for path in tmp_path.glob("*/summary.json"):
        path.write_text(json.dumps(dict(json.loads(path.read_text()), provenance={"commit": "aaa"})))
    report.main([str(tmp_path)])
    assert "Code: commit aaa." in (tmp_path / "report.md").read_text()


def test_report_of_runs_without_the_final_probe_says_how_to_evaluate_them(tmp_path):
    from stjax import report

    _write_study(tmp_path)
    for path in tmp_path.glob("*/summary.json"):  # as k400_r50 leaves them (final_probe=none)
        path.write_text(json.dumps(dict(json.loads(path.read_text()), linear_top1=None, random_init_linear_top1=None)))
    report.main([str(tmp_path)])
    table = (tmp_path / "report.md").read_text()
    assert "| byol | – | – | – |" in table and "random initialisation" not in table
    assert "No finished run recorded linear_top1 (`final_probe=none`" in table and "configs/eval.py:linear" in table
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.main([str(tmp_path), "--metric", "final_loss"])
    assert "No finished run" not in (tmp_path / "report_final_loss.md").read_text()


def _write_results(run_dir, name, protocol, metrics_per_checkpoint, dataset="synthetic", **splits):
    folder = run_dir / "eval" / name
    folder.mkdir(parents=True)
    records = [{"checkpoint": f"step {s}", "step": s, "num_train": 16, "num_test": 8, **m}
               for s, m in metrics_per_checkpoint]
    (folder / "results.json").write_text(json.dumps({"protocol": protocol, "dataset": dataset, "checkpoints": records,
                                                     **splits}))


def test_report_reads_the_runs_evaluations(tmp_path, capsys):
    from stjax import report

    _write_study(tmp_path)
    for path in tmp_path.glob("*/summary.json"):
        path.write_text(json.dumps(dict(json.loads(path.read_text()), linear_top1=None, random_init_linear_top1=None)))
    _write_results(tmp_path / "framework=byol,rho=1", "linear,data=k400_r50", "linear",
                   [(400, {"top1": 0.5, "top5": 0.9}), (500, {"top1": 0.625, "top5": 0.95})])
    _write_results(tmp_path / "framework=byol,rho=2", "linear,data=k400_r50", "linear", [(500, {"top1": 0.75})])
    _write_results(tmp_path / "framework=byol,rho=2", "retrieval", "retrieval", [(500, {"R@1": 0.25, "R@5": 0.5})])
    (tmp_path / "framework=byol,rho=2" / "eval" / "finetune,dataset=ucf101").mkdir(parents=True)  # unfinished
    folds = {"protocol": "finetune", "datasets": {"1": "ucf101/fold1", "2": "ucf101/fold2"},
             "mean": [{"checkpoint": "step 500", "step": 500, "top1": 0.875}], "per_fold": {}}
    (tmp_path / "framework=byol,rho=4" / "eval" / "finetune,folds=all").mkdir(parents=True)
    (tmp_path / "framework=byol,rho=4" / "eval" / "finetune,folds=all" / "results.json").write_text(json.dumps(folds))

    report.main([str(tmp_path)])
    table = (tmp_path / "report.md").read_text()
    assert "| byol | 62.5 | 75.0 | – |" in table and "| simclr | – | – | – |" in table
    assert report.headline_metrics(report.collect(str(tmp_path))[1]) == [
        "linear_top1", "retrieval_R@1", "ucf101_finetune_top1"]
    assert "linear_top1 of 2 runs from their evaluation `eval/linear,data=k400_r50`" in table
    assert "random initialisation" not in table and "No finished run" not in table
    report.main([str(tmp_path), "--metric", "retrieval_R@1"])
    assert "| byol | – | 25.0 | – |" in (tmp_path / "report_retrieval_R@1.md").read_text()
    report.main([str(tmp_path), "--metric", "ucf101_finetune_top1"])
    assert "| byol | – | – | 87.5 |" in (tmp_path / "report_ucf101_finetune_top1.md").read_text()
    with pytest.raises(SystemExit, match="valid choices:.* knn_top1|valid choices:.*retrieval_R@5"):
        report.main([str(tmp_path), "--metric", "knn_top1"])
    # a summary's own figure stays where no evaluation gives one
    summary = tmp_path / "framework=simclr,rho=1" / "summary.json"
    summary.write_text(json.dumps(dict(json.loads(summary.read_text()), linear_top1=0.2)))
    report.main([str(tmp_path)])
    table = (tmp_path / "report.md").read_text()
    assert "| simclr | 20.0 | – | – |" in table and "of 1 from summary.json" in table


def test_report_names_an_evaluation_on_another_split_by_its_split_and_averages_seeds(tmp_path):
    from stjax import report

    grid = [["auxiliary", ["none", "dsm"]], ["seed", ["0", "1"]]]
    runs = [{"name": f"auxiliary={a},seed={s}", "params": {"auxiliary": a, "seed": s}} for a in grid[0][1]
            for s in grid[1][1]]
    (tmp_path / "sweep.json").write_text(json.dumps({"grid": grid, "runs": runs}))
    for i, run in enumerate(runs):
        run_dir = tmp_path / run["name"]
        run_dir.mkdir()
        (run_dir / "summary.json").write_text(json.dumps({"linear_top1": 0.5, "dataset": "synthetic_biased"}))
        (run_dir / "config.json").write_text(json.dumps({"data": {"eval_split": "test"}}))
        _write_results(run_dir, "biased", "linear", [(500, {"top1": 0.5 + 0.125 * (i % 2)})],
                       dataset="synthetic_biased", train_split="train[:80%]", eval_split="train[80%:]")
        if i != 3:  # the last run's test evaluation is unfinished
            _write_results(run_dir, "unbiased", "linear", [(500, {"top1": 0.25 + 0.25 * (i // 2)})],
                           dataset="synthetic_biased", train_split="train[:80%]", eval_split="test")
    _, records = report.collect(str(tmp_path))
    assert records[0][1]["linear_top1@train[80%:]"] == 0.5 and records[1][1]["linear_top1@train[80%:]"] == 0.625
    assert records[0][1]["linear_top1"] == 0.25 and records[3][1]["linear_top1"] == 0.5  # summary's, unevaluated
    assert report.headline_metrics(records) == ["linear_top1", "linear_top1@train[80%:]"]
    report.main([str(tmp_path), "--metric", "linear_top1@train[80%:]"])
    table = (tmp_path / "report_linear_top1@train_80_.md").read_text()
    assert "(in %, split train[80%:])" in table and "| auxiliary | seed=0 | seed=1 | mean |" in table
    assert "| none | 50.0 | 62.5 | 56.2 |" in table and "| dsm | 50.0 | 62.5 | 56.2 |" in table
    report.main([str(tmp_path)])
    table = (tmp_path / "report.md").read_text()
    assert "(in %, test split)" in table and "| none | 25.0 | 25.0 | 25.0 |" in table
    assert "| dsm | 50.0 | 50.0 | 50.0 |" in table and "from summary.json" in table
    assert report.without_split("retrieval_R@5") == "retrieval_R@5" and report.is_accuracy("retrieval_R@5@val")


def test_distributed_is_joined_only_when_the_environment_describes_several_processes():
    from stjax.train import distributed

    assert not distributed.wanted({})
    assert distributed.wanted({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
    assert not distributed.wanted({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"})
    assert not distributed.wanted({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"})  # the batch script, not srun
    assert distributed.wanted({"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "16", "SLURM_STEP_ID": "0"})
    assert distributed.wanted({"STJAX_DISTRIBUTED": "1"})
    assert not distributed.wanted({"STJAX_DISTRIBUTED": "0", "JAX_COORDINATOR_ADDRESS": "x:1"})
    with pytest.raises(ValueError, match="STJAX_DISTRIBUTED='yes' is invalid; valid values: auto, 1, 0"):
        distributed.wanted({"STJAX_DISTRIBUTED": "yes"})


# --- the cluster launchers, with fake gcloud / srun / scontrol on PATH -------------------------------------------

def _fake_tools(tmp_path, *names):
    """Executables that append their arguments to CALLS.txt and succeed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        tool = bin_dir / name
        tool.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "{tmp_path}/CALLS.txt"\n')
        tool.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


@pytest.mark.parametrize("script", ["local.sh", "multiprocess.sh", "tpu_pod.sh", "slurm.sh"])
def test_launch_scripts_parse(script):
    subprocess.run(["bash", "-n", os.path.join(ROOT, "launch", script)], check=True)


def test_slurm_script_runs_srun_and_requeues_an_unfinished_run(tmp_path):
    env = dict(_fake_tools(tmp_path, "srun", "scontrol"), SLURM_JOB_ID="77", PYTHON="python3")
    workdir = tmp_path / "run"
    args = ["--config", "configs/pretrain.py:demo", "--workdir", str(workdir)]
    subprocess.run(["bash", os.path.join(ROOT, "launch", "slurm.sh"), *args], env=env, check=True)
    calls = (tmp_path / "CALLS.txt").read_text().splitlines()
    assert calls == [f"srun --kill-on-bad-exit=1 python3 -m stjax.main {' '.join(args)}", "scontrol requeue 77"]
    workdir.mkdir()
    (workdir / "summary.json").write_text("{}")  # finished: no requeue
    (tmp_path / "CALLS.txt").unlink()
    subprocess.run(["bash", os.path.join(ROOT, "launch", "slurm.sh"), *args[:2], f"--workdir={workdir}"], env=env,
                   check=True)
    assert [c.split()[0] for c in (tmp_path / "CALLS.txt").read_text().splitlines()] == ["srun"]


def test_tpu_pod_script_runs_the_command_on_every_worker(tmp_path):
    env = dict(_fake_tools(tmp_path, "gcloud"), TPU_NAME="pod", ZONE="us-central2-b", REPO_DIR="/srv/stjax")
    subprocess.run(["bash", os.path.join(ROOT, "launch", "tpu_pod.sh"), "--config", "configs/pretrain.py:demo,rho=4",
                    "--workdir", "/mnt/shared/run 1"], env=env, check=True)
    call = (tmp_path / "CALLS.txt").read_text().strip()
    assert call.startswith("gcloud compute tpus tpu-vm ssh pod --zone us-central2-b --worker=all --command ")
    assert call.endswith("cd /srv/stjax && STJAX_DISTRIBUTED=1 python3 -m stjax.main --config "
                         "configs/pretrain.py:demo\\,rho=4 --workdir /mnt/shared/run\\ 1")
