"""The demo's code path end to end at a tiny size: synthetic videos → build → pretrain → probe → summary."""
import json
import os
import subprocess
import sys

import jax
import pytest

from stjax import configlib
from stjax import main as main_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _demo_config(tmp_path, arg="demo"):
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), arg)
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.manual_dir = str(tmp_path / "videos")
    config.data.synthetic.update(num_train=16, num_test=8, size=32, seconds=1.0)
    config.data.augmentation.crop_size = 24
    config.data.shuffle_buffer = 16
    config.model.backbone = "r3d_micro"
    config.byol.update(projector_hidden=(32,), projector_out=16, predictor_hidden=(32,))
    config.batch_size = 8
    config.eval_batch_size = 8
    config.total_steps = 4
    config.log_every = 2
    config.checkpoint_every = 2
    config.probe.epochs = 5
    return config


def test_demo_code_path_end_to_end(tmp_path, monkeypatch):
    config = _demo_config(tmp_path)
    config.eval_every = 2  # the kNN monitor at steps 2 and 4
    # the pipeline sends augmentation draws and the train step augments (the host path runs in test_evaluate's
    # fine-tuning and in test_pipeline; tests/test_train.py checks both give the same update)
    config.data.augment_on = "device"
    from stjax.data import device_augment

    traced = []
    original = device_augment.augment_clips
    monkeypatch.setattr(device_augment, "augment_clips", lambda *a, **k: traced.append(1) or original(*a, **k))
    workdir = str(tmp_path / "run")
    summary = main_lib.run(config, workdir)
    assert traced  # the train step applied the augmentation
    on_disk = json.loads(open(os.path.join(workdir, "summary.json")).read())
    per_class = summary.pop("per_class_linear_top1")
    assert on_disk.pop("per_class_linear_top1") == per_class
    code = summary.pop("provenance")
    assert on_disk.pop("provenance") == code
    assert on_disk == pytest.approx(summary)
    names = ["still", "slide", "fall", "rise", "orbit", "spin", "pulse", "blink", "shake", "bob"]
    for probe in ("pretrained", "random init"):
        assert sorted(per_class[probe]) == sorted(names)
        assert all(a is None or 0.0 <= a <= 1.0 for a in per_class[probe].values())
    for key in ("framework", "rho", "steps", "train_seconds", "linear_top1", "random_init_linear_top1",
                "chance_top1"):
        assert key in summary
    assert summary["framework"] == "byol" and summary["rho"] == 2 and summary["steps"] == 4
    for key in ("linear_top1", "random_init_linear_top1"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["chance_top1"] == pytest.approx(0.1)
    assert code["packages"]["jax"] == jax.__version__ and "commit" in code
    with open(os.path.join(workdir, "report.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))
    # the run's backbone exports (config.json names it) and loads back
    from stjax import export

    export.main(["--workdir", workdir, "--format", "npz", "--out", str(tmp_path / "backbone.npz")])
    spec, variables = export.load_backbone(str(tmp_path / "backbone.npz"))
    assert spec["backbone"] == config.model.backbone
    assert variables["params"]["stem_conv"]["kernel"].shape[-2:] == (3, 8)
    assert os.path.exists(os.path.join(workdir, "metrics.jsonl"))
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    knn_records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if "knn_top1" in line]
    assert [r["step"] for r in knn_records] == [2, 4]
    assert all(0.0 <= r["knn_top1"] <= r["knn_top5"] <= 1.0 for r in knn_records)
    assert os.path.exists(os.path.join(workdir, "knn.png"))


def test_bad_config_fails_before_any_work(tmp_path):
    config = _demo_config(tmp_path)
    config.model.backbone = "resnet9000"
    with pytest.raises(ValueError, match="model.backbone='resnet9000' is invalid; valid values: r2plus1d_18, r3d_18"):
        main_lib.run(config, str(tmp_path / "run"))
    config = _demo_config(tmp_path)
    config.model.dtype = "float16"
    with pytest.raises(ValueError, match="model.dtype='float16' is invalid; valid values: float32, bfloat16"):
        main_lib.run(config, str(tmp_path / "run"))
    config = _demo_config(tmp_path)
    config.model.init_from = str(tmp_path / "no_such_export.npz")
    with pytest.raises(ValueError, match="model.init_from=.*no_such_export.npz' is invalid"):
        main_lib.run(config, str(tmp_path / "run"))
    config = _demo_config(tmp_path)
    config.batch_size = 12
    with pytest.raises(ValueError, match="batch_size=12 must be a positive multiple of the number of devices"):
        main_lib.run(config, str(tmp_path / "run"))
    config = _demo_config(tmp_path)
    config.framework = "simclr2"
    with pytest.raises(ValueError, match="framework='simclr2' is invalid; valid values: byol, cmd, detection, dsm, moco"):
        main_lib.run(config, str(tmp_path / "run"))
    config = _demo_config(tmp_path)
    config.final_probe = "random"
    with pytest.raises(ValueError, match="final_probe='random' is invalid; valid values: both, pretrained, none"):
        main_lib.run(config, str(tmp_path / "run"))
    config = _demo_config(tmp_path, "demo,framework=moco")
    config.moco.bn_groups = 5
    with pytest.raises(ValueError, match="moco.bn_groups=5 is invalid; valid values: divisors of the batch size"):
        main_lib.run(config, str(tmp_path / "run"))
    assert not os.path.exists(str(tmp_path / "videos"))  # nothing was rendered or built



def test_a_misspelt_config_field_on_the_command_line_is_named_with_the_valid_ones(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stjax.main", "--config=configs/pretrain.py:demo",
                             "--config.data.augmentation.cropsize=48", f"--workdir={tmp_path / 'run'}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ("error: --config.data.augmentation.cropsize: no field 'cropsize' under data.augmentation; valid names: "
            "area_range, aspect_range, blur_prob, blur_sigma_range, brightness, color_jitter_prob, contrast, crop_size,"
            in result.stderr)
    assert not (tmp_path / "run").exists()


def test_compiled_programs_are_kept_where_the_environment_says(tmp_path):
    saved = {name: getattr(jax.config, name) for name in ("jax_compilation_cache_dir", "jax_compilation_cache_max_size")}
    try:
        assert main_lib.use_compilation_cache({"XDG_CACHE_HOME": str(tmp_path)}) is None  # a CPU: off unless asked
        folder = main_lib.use_compilation_cache({"XDG_CACHE_HOME": str(tmp_path)}, backend="gpu")
        assert folder == str(tmp_path / "stjax" / "jax_compilation_cache")
        assert jax.config.jax_compilation_cache_dir == folder
        assert jax.config.jax_compilation_cache_max_size == 8 * 2**30
        assert main_lib.use_compilation_cache({"STJAX_COMPILATION_CACHE": str(tmp_path / "c"),
                                               "JAX_COMPILATION_CACHE_MAX_SIZE": "-1"}) == str(tmp_path / "c")
        assert main_lib.use_compilation_cache({"STJAX_COMPILATION_CACHE": "off"}, backend="tpu") is None
        (tmp_path / "file").write_text("")  # a folder that cannot be made: no cache, and the run goes on
        assert main_lib.use_compilation_cache({"STJAX_COMPILATION_CACHE": str(tmp_path / "file" / "c")}) is None
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")  # off leaves JAX as it was
        jax.config.update("jax_compilation_cache_dir", "/from/jax")  # as JAX_COMPILATION_CACHE_DIR sets it
        assert main_lib.use_compilation_cache({"JAX_COMPILATION_CACHE_DIR": "/from/jax",
                                               "STJAX_COMPILATION_CACHE": "off"}) == "/from/jax"
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)


@pytest.mark.parametrize("job, flags, message", [
    ("pretraining", ["--config=configs/pretrain.py:demo", "--config.rho=0"], "error: config: rho must be >= 1, got 0"),
    ("evaluation", ["--config=configs/eval.py:knn", "--config.init_from=/no/such/run"],
     "error: init_from='/no/such/run' does not exist"),
])
def test_an_invalid_setting_on_the_command_line_is_one_error_line_and_status_1(tmp_path, job, flags, message):
    """(It used to end in a Python traceback.)"""
    result = subprocess.run([sys.executable, "-m", "stjax.main", *flags, f"--workdir={tmp_path / 'run'}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, (job, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and message + "\n" in result.stderr
    assert not (tmp_path / "run").exists()
