"""The run assembly (`stjax.train.setup`) and the generic loop (`stjax.train.loop`): init shapes from the
pipeline's element spec, the loop's steps and evaluations under `jax.transfer_guard("disallow")`."""
import os

import jax
import ml_collections
import numpy as np
import pytest

from stjax import configlib, objectives
from stjax.train import loop, setup
from stjax.train import mesh as mesh_lib
from stjax.train import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIPS_SHAPE = (8, 2, 4, 16, 16, 3)


def _config(**overrides):
    config = ml_collections.ConfigDict(dict(
        seed=0, framework="byol", rho=2, batch_size=8, model=dict(backbone="r3d_micro"),
        byol=dict(projector_hidden=(32,), projector_out=16, predictor_hidden=(32,), base_momentum=0.99,
                  pairing="all"),
        optimizer=dict(name="sgd", base_lr=0.1, base_batch_size=8, warmup_epochs=0.0, weight_decay=0.0,
                       momentum=0.9, nesterov=True, trust_coefficient=0.001),
        log_every=1, checkpoint_every=2, keep_checkpoints=1, eval_every=1,
    ))
    config.update(overrides)
    return config


def _batches(start, num_shards=1):
    rng = np.random.default_rng(start)
    while True:
        yield {"clips": rng.integers(0, 256, size=CLIPS_SHAPE, dtype=np.uint8)}


def _run(config, total_steps=2):
    framework = objectives.create_framework(config, total_steps=total_steps)
    return setup.Run(config=config, mesh=mesh_lib.create_mesh(), framework=framework, batches=_batches,
                     element_spec={"clips": jax.ShapeDtypeStruct(CLIPS_SHAPE, np.uint8)},
                     total_steps=total_steps, steps_per_epoch=2.0)


def test_an_implicit_transfer_in_an_evaluation_fails_under_the_loops_guard(tmp_path):
    def implicit(state):  # a Python scalar copied to the device nobody asked for
        return {"step_seen": float(jax.device_get(state.step * 2))}

    with pytest.raises(Exception, match="[Dd]isallowed"):
        loop.train(_run(_config()), str(tmp_path), evaluate=implicit)


def test_explicit_transfers_pass_the_guard_and_the_loop_state_reaches_its_results(tmp_path):
    def explicit(state):
        return {"step_seen": float(jax.device_get(state.step))}

    result = loop.train(_run(_config()), str(tmp_path), evaluate=explicit)
    assert result.steps == 2 and not result.preempted
    seen = [r["step_seen"] for r in metrics_lib.read_metrics(str(tmp_path)) if "step_seen" in r]
    assert seen == [1.0, 2.0]
    assert int(jax.device_get(result.state.step)) == 2
    assert isinstance(result, loop.TrainResult)


def test_an_implicit_host_to_device_copy_inside_the_loop_fails(tmp_path):
    """A NumPy array added to a device array inside the loop is an implicit host->device copy."""
    def mixes(state):
        return {"x": float(jax.device_get(state.step + np.ones((), np.int32)))}

    with pytest.raises(Exception, match="[Dd]isallowed"):
        loop.train(_run(_config()), str(tmp_path), evaluate=mixes)


def test_build_takes_the_init_shapes_from_the_pipelines_element_spec(tmp_path):
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), "demo")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.manual_dir = str(tmp_path / "videos")
    config.data.synthetic.update(num_train=16, num_test=8, size=32, seconds=1.0)
    config.data.augmentation.crop_size = 24
    config.data.shuffle_buffer = 16
    config.data.augment_on = "device"
    config.model.backbone = "r3d_micro"
    config.batch_size = 8
    config.total_steps = 4
    from stjax.data import config as data_config

    data_config.ensure_built(config, verbose=False)
    run = setup.build(config, mesh_lib.create_mesh())
    clips = data_config.clip_spec(config)
    assert run.clips_shape == (8, clips.num_clips, clips.num_frames, 24, 24, 3)
    assert run.total_steps == 4 and run.steps_per_epoch == 16 / 8 and run.num_train == 16
    assert run.augmentation is not None and len(run.class_names) == 10
    batch = next(run.batches(0, 1))  # what the pipeline gives matches what the state was initialised for
    assert set(batch) == set(run.element_spec)
    for name, spec in run.element_spec.items():
        assert batch[name].shape == spec.shape and batch[name].dtype == spec.dtype, name
