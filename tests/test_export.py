"""stjax.export: formats, round trips, PyTorch names and parity with PyTorch references."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax import export, models
from stjax.train import checkpoint as checkpoint_lib
from stjax.train.state import TrainState


def _random_variables(name, clip=(1, 4, 32, 32, 3), seed=0):
    """Variables of backbone `name` with every leaf random (BN scales, biases and running stats included)."""
    module = models.create_backbone(name)
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(clip), train=False))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        key = jax.tree_util.keystr(path)
        if "kernel" in key:
            fan_in = np.prod(leaf.shape[:-1])
            return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        if "'var'" in key:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if "'scale'" in key:
            return rng.uniform(0.5, 1.0, leaf.shape).astype(np.float32)
        return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, dict(variables))


def _assert_trees_equal(a, b):
    fa, fb = export.flatten_variables(a), export.flatten_variables(b)
    assert sorted(fa) == sorted(fb)
    for key in fa:
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


def _features(name, variables, x):
    model = models.create_backbone(name)  # one compiled program: op by op takes ~3x longer for an R3D-18
    return np.asarray(jax.jit(lambda v, clips: model.apply(v, clips, train=False))(variables, jnp.asarray(x)))


def _assert_close(a, b, tol=1e-4):
    """max |a - b| <= tol * max(1, max |b|): float32 agreement of two implementations."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    err = float(np.max(np.abs(a - b)))
    assert err <= tol * max(1.0, float(np.max(np.abs(b)))), err


# ----------------------------------------------------------------------------------------------
# Without torch.


@pytest.mark.parametrize("fmt,suffix", [("npz", ".npz"), ("safetensors", ".safetensors"), ("orbax", "")])
def test_round_trip_is_the_identity(tmp_path, fmt, suffix):
    variables = _random_variables("r3d_micro")
    spec = export.backbone_spec("r3d_micro")
    path = export.save_backbone(variables, spec, fmt, str(tmp_path / f"backbone{suffix or '_orbax'}"))
    loaded_spec, loaded = export.load_backbone(path)
    assert loaded_spec == spec
    _assert_trees_equal(loaded, variables)
    with pytest.raises(ValueError, match="holds a r3d_micro, not a r3d_tiny"):
        export.load_backbone(path, backbone="r3d_tiny")
    with pytest.raises(FileExistsError, match="never overwrite"):
        export.save_backbone(variables, spec, fmt, path)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown format 'onnx'; valid choices: orbax, npz, safetensors"):
        export.save_backbone({}, {}, "onnx", str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError):
        export.load_backbone(str(tmp_path / "nothing.npz"))


def test_pyslowfast_names_of_slow_r50():
    variables = _random_variables("slow_r50", clip=(1, 8, 32, 32, 3))
    state = export.to_torch_state_dict(variables, "pyslowfast")
    assert state["s1.pathway0_stem.conv.weight"].shape == (64, 3, 1, 7, 7)
    assert state["s2.pathway0_res0.branch1.weight"].shape == (256, 64, 1, 1, 1)
    assert state["s4.pathway0_res5.branch2.a.weight"].shape == (256, 1024, 3, 1, 1)
    assert state["s5.pathway0_res2.branch2.c_bn.running_var"].shape == (2048,)
    assert state["s3.pathway0_res0.branch2.b.weight"].shape == (128, 128, 1, 3, 3)
    assert state["s5.pathway0_res2.branch2.c_bn.num_batches_tracked"].dtype == np.int64
    blocks = {k.split(".")[0] + "." + k.split(".")[1] for k in state if k.startswith("s")}
    assert len(blocks) == 1 + 3 + 4 + 6 + 3
    # 5 tensors per BN (weight, bias, running mean/var, num_batches_tracked), 1 per conv
    assert len(state) == 53 * 1 + 53 * 5
    # and back: the same variables
    loaded, ignored = export.from_torch_state_dict(state, variables, "pyslowfast")
    assert ignored == sorted(k for k in state if k.endswith("num_batches_tracked"))
    _assert_trees_equal(loaded, variables)


def test_import_reports_offending_keys():
    variables = _random_variables("slow_r50", clip=(1, 8, 32, 32, 3))
    state = export.to_torch_state_dict(variables, "pyslowfast")
    state = {"backbone." + k: v for k, v in state.items()}  # PySlowFast's ContrastiveModel prefix
    state["backbone.head.projection.weight"] = np.zeros((128, 2048), np.float32)
    state["backbone_hist.s1.pathway0_stem.conv.weight"] = np.zeros((64, 3, 1, 7, 7), np.float32)
    state["queue_x"] = np.zeros((4, 128), np.float32)
    loaded, ignored = export.from_torch_state_dict(state, variables, "pyslowfast")
    _assert_trees_equal(loaded, variables)
    assert {"head.projection.weight", "backbone_hist.s1.pathway0_stem.conv.weight", "queue_x"} <= set(ignored)

    del state["backbone.s3.pathway0_res1.branch2.b_bn.running_mean"]
    state["backbone.s2.pathway0_res0.branch2.a.weight"] = np.zeros((64, 64, 3, 1, 1), np.float32)
    state["backbone.s6.pathway0_res0.branch2.a.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ValueError) as err:
        export.from_torch_state_dict(state, variables, "pyslowfast")
    message = str(err.value)
    assert "1 key(s) missing from the file: s3.pathway0_res1.branch2.b_bn.running_mean" in message
    assert "1 key(s) in the file but not in the backbone: s6.pathway0_res0.branch2.a.weight" in message
    assert "s2.pathway0_res0.branch2.a.weight: file (64, 64, 3, 1, 1), backbone expects (64, 64, 1, 1, 1)" in message


def test_layouts_refuse_the_wrong_block_type():
    with pytest.raises(ValueError, match="format pyslowfast holds bottleneck ResNets.*use format torchvision"):
        export.to_torch_state_dict(_random_variables("r3d_micro"), "pyslowfast")
    with pytest.raises(ValueError, match="format torchvision holds basic-block ResNets.*use format pyslowfast"):
        export.to_torch_state_dict(_random_variables("slow_r50", clip=(1, 8, 32, 32, 3)), "torchvision")


def _fake_run(workdir, name="r3d_micro", steps=(2, 5)):
    """A run directory as `stjax.main` leaves it: config.json and Orbax checkpoints of a TrainState."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"model": {"backbone": name, "dtype": "float32"}}, f)
    ckpt = checkpoint_lib.Checkpointer(str(workdir), async_save=False)
    saved = {}
    for step in steps:
        variables = _random_variables(name, seed=step)
        state = TrainState(step=jnp.asarray(step, jnp.int32),
                           params={"backbone": variables["params"], "projector": {"w": jnp.ones(3)}},
                           batch_stats={"backbone": variables["batch_stats"]}, extra={},
                           opt_state={"mu": jnp.zeros(3)})
        ckpt.save(state, {})
        saved[step] = variables
    ckpt.close()
    return saved


def test_cli_exports_a_runs_backbone(tmp_path, capsys):
    saved = _fake_run(tmp_path / "run")
    out = tmp_path / "exports" / "latest.safetensors"
    export.main(["--workdir", str(tmp_path / "run"), "--format", "safetensors", "--out", str(out)])
    assert "wrote r3d_micro (step 5" in capsys.readouterr().out
    spec, variables = export.load_backbone(str(out))
    assert spec["backbone"] == "r3d_micro"
    _assert_trees_equal(variables, saved[5])
    export.main(["--workdir", str(tmp_path / "run"), "--format", "npz", "--out", str(tmp_path / "s2.npz"),
                 "--step", "2"])
    _assert_trees_equal(export.load_backbone(str(tmp_path / "s2.npz"))[1], saved[2])
    with pytest.raises(ValueError, match=r"step=3 has no checkpoint .*valid choices: \[2, 5\]"):
        export.run_backbone(str(tmp_path / "run"), step=3)


def test_one_reader_of_a_runs_checkpoints(tmp_path):
    """checkpoint.latest_step / restore_backbone read a run folder; export and evaluation go through them."""
    from stjax.eval import evaluate

    assert checkpoint_lib.latest_step(str(tmp_path / "none")) is None
    saved = _fake_run(tmp_path / "run")
    run = str(tmp_path / "run")
    assert checkpoint_lib.latest_step(run) == 5
    variables, step = checkpoint_lib.restore_backbone(run)
    assert step == 5
    _assert_trees_equal(variables, saved[5])
    _assert_trees_equal(checkpoint_lib.restore_backbone(run, 2)[0], saved[2])
    with pytest.raises(ValueError, match=r"step=4 has no checkpoint .*valid choices: \[2, 5\]"):
        checkpoint_lib.restore_backbone(run, 4)
    with pytest.raises(FileNotFoundError, match="no checkpoints in"):
        checkpoint_lib.restore_backbone(str(tmp_path))
    targets = evaluate.resolve_targets(run, "all")
    assert [t.step for t in targets] == [2, 5]
    _assert_trees_equal(targets[0].load()[1], saved[2])


def test_init_from_starts_the_backbone_and_its_target(tmp_path):
    """model.init_from: a pretraining run starts from exported weights, online and momentum target alike."""
    from stjax import objectives
    from stjax.train import mesh as mesh_lib
    from stjax.train import pretrain as pretrain_lib

    from test_train import CLIPS_SHAPE, _config, _make_batches

    source = _random_variables("r3d_micro", clip=CLIPS_SHAPE[:1] + CLIPS_SHAPE[2:])
    path = export.save_backbone(source, export.backbone_spec("r3d_micro"), "npz", str(tmp_path / "init.npz"))
    config = _config()
    config.model.init_from = path
    framework = objectives.create_framework(config, total_steps=1)
    result = pretrain_lib.pretrain(config, str(tmp_path / "run"), framework, _make_batches, CLIPS_SHAPE, 1,
                                   steps_per_epoch=2, mesh=mesh_lib.create_mesh(), stop_after=0)
    state = jax.device_get(result.state)
    _assert_trees_equal({"params": state.params["backbone"], "batch_stats": state.batch_stats["backbone"]}, source)
    target = state.extra["target"]
    _assert_trees_equal({"params": target["params"]["backbone"], "batch_stats": target["batch_stats"]["backbone"]},
                        source)

    config.model.backbone = "r3d_tiny"
    with pytest.raises(ValueError, match="holds a r3d_micro, not a r3d_tiny"):
        pretrain_lib.pretrain(config, str(tmp_path / "run2"), objectives.create_framework(config, total_steps=1),
                              _make_batches, CLIPS_SHAPE, 1, steps_per_epoch=2, mesh=mesh_lib.create_mesh(),
                              stop_after=0)


# ----------------------------------------------------------------------------------------------
# With torch (the `torch` extra; CI installs it).


def _video(shape=(2, 8, 64, 64, 3), seed=3):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _torch_features(model, x):
    import torch

    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))).numpy()


@pytest.mark.parametrize("depth,name", [(50, "slow_r50"), (101, "slow_r101")])
def test_pyslowfast_export_matches_an_independent_pytorch_slow_resnet(tmp_path, depth, name):
    torch = pytest.importorskip("torch")
    from pyslowfast_reference import SlowResNet

    variables = _random_variables(name, clip=(1, 8, 32, 32, 3), seed=depth)
    path = export.save_backbone(variables, export.backbone_spec(name), "pyslowfast", str(tmp_path / "m.pyth"))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    reference = SlowResNet(depth)
    reference.load_state_dict(checkpoint["model_state"], strict=True)  # every name and shape matches
    x = _video(seed=depth)
    _assert_close(_features(name, variables, x), _torch_features(reference, x))
    # import: the identity, with the backbone named in the file
    spec, loaded = export.load_backbone(path)
    assert spec["backbone"] == name
    _assert_trees_equal(loaded, variables)


def test_pyslowfast_checkpoint_from_pytorch_imports(tmp_path):
    """A PySlowFast contrastive checkpoint made in PyTorch (no stjax metadata) imports and gives PyTorch's features."""
    torch = pytest.importorskip("torch")
    from pyslowfast_reference import SlowResNet, randomize_batch_norm

    torch.manual_seed(0)
    reference = SlowResNet(50)
    randomize_batch_norm(reference)
    state = {f"backbone.{k}": v for k, v in reference.state_dict().items()}
    state.update({f"backbone_hist.{k}": v for k, v in reference.state_dict().items()})
    state["backbone.head.projection.weight"] = torch.zeros(128, 2048)
    path = tmp_path / "rho_byol.pyth"
    torch.save({"model_state": state, "epoch": 200}, path)
    spec, variables = export.load_backbone(str(path))
    assert spec["backbone"] == "slow_r50"
    x = _video(seed=5)
    _assert_close(_features("slow_r50", variables, x), _torch_features(reference, x))


def test_loading_never_runs_pickled_code(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pyth"
    torch.save({"model_state": {"x": Payload()}}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        export.load_backbone(str(path), backbone="slow_r50")
    assert not marker.exists()


def _torchvision(*args, cwd):
    """Runs tests/torchvision_reference.py in its own process (torchvision must not be imported beside
    TensorFlow)."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "torchvision_reference.py")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, script, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_torchvision_models_import_and_export(tmp_path):
    """torchvision's own R3D-18 and R(2+1)D-18 with random weights: the same features in stjax, both ways."""
    import importlib.util

    pytest.importorskip("torch")
    if importlib.util.find_spec("torchvision") is None:  # looked up, not imported: that happens in a subprocess
        pytest.skip("torchvision is not installed (pip install -e '.[torch]')")
    names = ("r3d_18", "r2plus1d_18")
    _torchvision("make", tmp_path, *names, cwd=tmp_path)
    x = np.load(tmp_path / "x.npy")
    exported = []
    for name in names:
        spec, variables = export.load_backbone(str(tmp_path / f"{name}.pth"))
        assert spec["backbone"] == name
        _assert_close(_features(name, variables, x), np.load(tmp_path / f"{name}.npy"))
        out = export.save_backbone(variables, spec, "torchvision", str(tmp_path / f"{name}_export.pth"))
        exported += [name, out, tmp_path / f"{name}_exported.npy"]
    _torchvision("features", tmp_path / "x.npy", *exported, cwd=tmp_path)
    for name in names:
        _assert_close(np.load(tmp_path / f"{name}_exported.npy"), np.load(tmp_path / f"{name}.npy"), tol=1e-6)


# ----------------------------------------------------------------------------------------------
# model.init_from=RUN_FOLDER (issue 26).


def _tiny_pretraining_run(workdir, backbone="r3d_micro", seed=0):
    """A real pretraining run, one step, as `stjax.main` leaves it: config.json and a checkpoint."""
    from stjax import objectives
    from stjax.train import mesh as mesh_lib
    from stjax.train import pretrain as pretrain_lib

    from test_train import CLIPS_SHAPE, _config, _make_batches

    config = _config(seed=seed)
    config.model.backbone = backbone
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=1))
    result = pretrain_lib.pretrain(config, str(workdir), objectives.create_framework(config, total_steps=1),
                                   _make_batches, CLIPS_SHAPE, 1, steps_per_epoch=2, mesh=mesh_lib.create_mesh())
    state = jax.device_get(result.state)
    return {"params": state.params["backbone"], "batch_stats": state.batch_stats["backbone"]}


def test_init_from_a_run_folder_starts_from_its_latest_backbone(tmp_path, capsys):
    """model.init_from=RUN (as evaluation's init_from accepts) loads the run's latest checkpoint, not an Orbax
    KeyError; a run of another backbone is refused with both names."""
    from stjax import objectives
    from stjax.train import mesh as mesh_lib
    from stjax.train import pretrain as pretrain_lib

    from test_train import CLIPS_SHAPE, _config, _make_batches

    first = _tiny_pretraining_run(tmp_path / "first", seed=1)
    spec, variables = export.load_backbone(str(tmp_path / "first"))
    assert spec["backbone"] == "r3d_micro"
    _assert_trees_equal(variables, first)
    assert f"pretraining run {tmp_path / 'first'}: backbone r3d_micro, checkpoint step 1" in capsys.readouterr().out

    config = _config(seed=2)  # another seed: a random init would differ from the first run's weights
    config.model.init_from = str(tmp_path / "first")
    result = pretrain_lib.pretrain(config, str(tmp_path / "second"), objectives.create_framework(config, total_steps=1),
                                   _make_batches, CLIPS_SHAPE, 1, steps_per_epoch=2, mesh=mesh_lib.create_mesh(),
                                   stop_after=0)
    state = jax.device_get(result.state)
    _assert_trees_equal({"params": state.params["backbone"], "batch_stats": state.batch_stats["backbone"]}, first)

    config.model.backbone = "r3d_tiny"
    with pytest.raises(ValueError, match=r"first is a pretraining run whose backbone is r3d_micro \(checkpoint step 1\), "
                                         r"not r3d_tiny"):
        pretrain_lib.pretrain(config, str(tmp_path / "third"), objectives.create_framework(config, total_steps=1),
                              _make_batches, CLIPS_SHAPE, 1, steps_per_epoch=2, mesh=mesh_lib.create_mesh(),
                              stop_after=0)


def test_a_folder_that_is_neither_a_run_nor_an_export_is_a_clear_error(tmp_path):
    (tmp_path / "run_without_checkpoints").mkdir()
    (tmp_path / "run_without_checkpoints" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"neither a pretraining run's workdir \(no checkpoints/\) nor an Orbax "
                                         r"export of `python -m stjax.export --format orbax`"):
        export.load_backbone(str(tmp_path / "run_without_checkpoints"))
