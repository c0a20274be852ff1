"""The `detection` framework and protocol (AVA's): the masked box loss, the detection layout of a backbone,
frame mAP of scored keyframes, and an evaluation end to end whose mAP is recomputed from the files it wrote
and the layout's own CSVs."""
import csv
import json
import os

import numpy as np
import pytest

from keyframe_layout import GT, PROPOSALS, build_layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bce(logits, labels):
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))


def test_box_loss_is_the_mean_cross_entropy_of_the_valid_boxes_only():
    import jax.numpy as jnp

    from stjax.objectives.detection import box_loss

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
    labels = (rng.random((3, 4, 5)) < 0.3).astype(np.int32)
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    loss, metrics = box_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
    np.testing.assert_allclose(float(loss), _bce(logits, labels).mean(axis=-1)[mask].mean(), rtol=1e-5)
    assert float(metrics["boxes"]) == 3
    top = logits.argmax(-1)
    hits = np.take_along_axis(labels, top[..., None], -1)[..., 0][mask]
    assert float(metrics["train_top1"]) == pytest.approx(hits.mean())
    none, _ = box_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.zeros((3, 4), bool))
    assert float(none) == 0.0
    with pytest.raises(ValueError, match="box_mask"):
        box_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask[:, :2]))


def _framework(backbone="r3d_micro"):
    import ml_collections

    from stjax import models
    from stjax.objectives import create_framework

    c = ml_collections.ConfigDict(dict(
        framework="detection", model=dict(backbone=backbone, dtype="float32", remat=False,
                                          overrides=models.detection_overrides(backbone, 16)),
        detection=dict(num_classes=5, dropout=0.0)))
    return create_framework(c, total_steps=1)


def test_padded_boxes_take_no_part_in_the_loss_or_its_gradient():
    import jax
    import jax.numpy as jnp

    framework = _framework()
    clips = jax.random.normal(jax.random.key(0), (2, 1, 4, 32, 32, 3))
    params, stats, extra = framework.init(jax.random.key(1), clips)
    boxes = jnp.asarray([[[0.1, 0.1, 0.6, 0.7], [0.0, 0.0, 0.0, 0.0]], [[0.3, 0.2, 0.9, 0.9], [0, 0, 0, 0]]])
    mask = jnp.asarray([[True, False], [True, False]])
    labels = jnp.asarray(np.eye(5, dtype=np.int32)[[[1, 0], [3, 0]]])

    def loss(p, b, y):
        return framework.loss(p, stats, extra, clips, jax.random.key(2), 0, boxes=b, box_mask=mask, labels=y)[0]

    other_boxes = boxes.at[:, 1].set(jnp.asarray([0.2, 0.2, 0.8, 0.8]))
    other_labels = labels.at[:, 1].set(1)
    g1 = jax.grad(loss)(params, boxes, labels)
    g2 = jax.grad(loss)(params, other_boxes, other_labels)
    assert float(loss(params, boxes, labels)) == pytest.approx(float(loss(params, other_boxes, other_labels)))
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    logits = framework.detect(params, stats, clips, boxes)
    assert logits.shape == (2, 2, 5)


def test_the_detection_layout_is_pyslowfasts_and_keeps_the_weights():
    import jax
    import jax.numpy as jnp

    from stjax import models

    assert models.detection_overrides("slow_r50") == {"spatial_strides": (1, 2, 2, 1),
                                                      "spatial_dilations": (1, 1, 1, 2)}
    for stride in (32, 16, 8):
        overrides = models.detection_overrides("r3d_tiny", stride)
        net = models.create_backbone("r3d_tiny", **overrides)
        x = jnp.zeros((1, 4, 64, 64, 3))
        v = jax.eval_shape(lambda k: net.init(k, x, train=False), jax.random.key(0))
        fmap = jax.eval_shape(lambda v: net.apply(v, x, False, pooled=False), v)
        assert fmap.shape[2:4] == (64 // stride, 64 // stride)
    with pytest.raises(ValueError, match="output_stride=4 .*weights|weights unchanged"):
        models.detection_overrides("r3d_tiny", 4)
    with pytest.raises(ValueError, match="output_stride=12 is invalid"):
        models.detection_overrides("r3d_tiny", 12)


def _outputs(scores_from_labels: bool, shift: float = 0.0):
    """Scored keyframes in `score_keyframes`' form: 2 keyframes, 2 boxes each, 3 classes."""
    gt_frame = np.array([[[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.9]], [[0.2, 0.2, 0.6, 0.6], [0, 0, 0, 0]]],
                        np.float32)
    gt_mask = np.array([[True, True], [True, False]])
    gt_label = np.zeros((2, 2, 3), np.int32)
    gt_label[0, 0, [0, 2]] = 1
    gt_label[0, 1, 1] = 1
    gt_label[1, 0, 2] = 1
    rng = np.random.default_rng(0)
    scores = gt_label.astype(np.float32) if scores_from_labels else rng.random((2, 2, 3)).astype(np.float32)
    return {"mask": np.array([True, True]), "video_id": np.array([b"v", b"v"], object),
            "timestamp": np.array([902, 903]), "excluded": np.array([False, False]),
            "gt_frame": gt_frame, "gt_mask": gt_mask, "gt_label": gt_label, "gt_scores": scores,
            "box_frame": gt_frame + shift, "box_mask": gt_mask, "scores": scores}


def test_keyframe_metrics_score_perfect_detections_one_and_misplaced_ones_zero():
    from stjax.eval.protocols.detection import keyframe_metrics

    perfect = keyframe_metrics(_outputs(True), [0, 1, 2], 3)
    assert perfect["mAP"] == 1.0 and perfect["mAP_gt_boxes"] == 1.0
    np.testing.assert_array_equal(perfect["per_class_ap"], [1.0, 1.0, 1.0])
    moved = keyframe_metrics(_outputs(True, shift=0.3), [0, 1, 2], 3)
    assert moved["mAP"] == 0.0 and moved["mAP_gt_boxes"] == 1.0
    some = keyframe_metrics(_outputs(True), [0, 2], 3)  # class 1 not evaluated
    assert np.isnan(some["per_class_ap"][1]) and some["evaluated_classes"] == [0, 2]
    excluded, alone = _outputs(False), _outputs(False)
    excluded["excluded"][1] = True  # key 903 goes, its GT and its detections: as if it had not been scored
    alone["mask"][1] = False
    both = keyframe_metrics(_outputs(False), [0, 1, 2], 3)
    assert keyframe_metrics(excluded, [0, 1, 2], 3)["mAP"] == keyframe_metrics(alone, [0, 1, 2], 3)["mAP"]
    assert keyframe_metrics(excluded, [0, 1, 2], 3)["mAP"] != both["mAP"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("ava_boxes_layout")
    data_dir = build_layout(root, tmp_path_factory.mktemp("ava_boxes_protocol_tfds"))
    return str(root), data_dir


def _eval_config(data_dir):
    from stjax import configlib

    c = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), "detection")
    c.init_from = "random:r3d_micro"
    c.data.dataset, c.data.data_dir, c.data.eval_split = "ava/boxes", data_dir, "val"
    c.data.num_frames, c.data.stride = 4, 2
    c.data.augmentation.crop_size = 40
    c.data.keyframes.update(test_short_side=32, test_aspect=2.0, max_boxes=3, box_jitter=0.05)
    c.eval_batch_size = 8
    c.detection.update(batch_size=8, epochs=8.0, warmup_epochs=0.5, decay_epochs=(6.0,), base_lr=0.05,
                       output_stride=16, log_every=1)
    return c


def test_detection_end_to_end_writes_the_official_detections_its_map_is_of(layout, tmp_path):
    from stjax.eval import detection, evaluate

    root, data_dir = layout
    config = _eval_config(data_dir)
    evaluate.validate(config)
    results = evaluate.run(config, str(tmp_path))
    record = results["checkpoints"][0]
    assert set(record["per_class_ap"]) == {f"a{i}" for i in range(1, 7)}  # the evaluated classes only
    assert 0.0 <= record["mAP"] <= 1.0 and 0.0 <= record["mAP_gt_boxes"] <= 1.0
    assert record["num_test"] == 3 and record["num_train"] == 3
    assert record["counts"] == {"keyframes": 3, "gt_boxes": 5, "proposals": 4, "excluded_keyframes": 0}
    kept = sum(1 for rows in PROPOSALS.values() for _, s in rows if s >= 0.8)
    path = tmp_path / "detection" / "random_init" / "detections.csv"
    with open(path) as f:
        assert sum(1 for _ in csv.reader(f)) == kept * 6
    # the official way: the layout's GT CSV and the written detections
    classes = list(range(1, 7))
    gt = detection.read_boxes_csv(os.path.join(root, "ava_val_v2.2.csv"), classes)
    dets = detection.read_boxes_csv(str(path), classes, with_scores=True)
    official = detection.frame_ap(gt, dets, classes)
    assert official["mAP"] == pytest.approx(record["mAP"], abs=1e-5)
    assert (tmp_path / "report.md").exists() and (tmp_path / "per_class.png").exists()
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["protocol"] == "detection"
    assert len(GT) == 3


def test_detection_refuses_a_dataset_without_boxes_and_bad_settings():
    from stjax import configlib
    from stjax.eval import protocols

    c = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), "detection")
    protocol = protocols.get("detection")
    with pytest.raises(ValueError, match="person boxes"):
        protocol.validate(c, "single")
    c.data.keyframes.score_threshold = 0.8
    c.data.keyframes.scale_range = (0.5, 2.0)
    with pytest.raises(ValueError, match="data.keyframes.*scale_range"):
        protocol.validate(c, "boxes")


def test_the_ava_preset_is_the_studys_recipe():
    from stjax import configlib

    c = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), "ava,data=k400_r50")
    d = c.detection
    assert (c.protocol, c.data.dataset, c.data.eval_split, c.data_from_run) == ("detection", "ava", "val", False)
    assert (c.data.num_frames, c.data.stride, c.data.augmentation.crop_size) == (8, 8, 224)
    assert (d.base_lr, d.base_batch_size, d.epochs, tuple(d.decay_epochs), d.warmup_epochs) == \
        (0.3, 64, 32.0, (16.0, 24.0, 28.0), 5.0)
    assert (d.weight_decay, d.dropout, d.schedule, d.output_stride) == (1e-7, 0.5, "steps", None)
    k = c.data.keyframes
    assert (k.score_threshold, k.test_short_side, k.flip, k.box_jitter) == (0.8, 256, True, 0.0)
    assert tuple(k.scale_range) == pytest.approx((256 / 224, 320 / 224))


@pytest.mark.slow
def test_two_processes_score_every_keyframe_and_write_the_detections_once(layout, tmp_path):
    """2 processes of 4 devices: each scores its slice of the val keyframes; all of them are gathered, scored
    once and written once by process 0 (`launch/multiprocess.sh`, real processes)."""
    import subprocess
    import sys

    from conftest import xla_flags
    from stjax.eval import detection

    root, data_dir = layout
    flags = ["--config=configs/eval.py:detection", "--config.init_from=random:r3d_micro",
             "--config.data.dataset=ava/boxes", f"--config.data.data_dir={data_dir}", "--config.data.eval_split=val",
             "--config.data.num_frames=4", "--config.data.stride=2", "--config.data.augmentation.crop_size=40",
             "--config.data.keyframes.test_short_side=32", "--config.data.keyframes.test_aspect=2.0",
             "--config.data.keyframes.max_boxes=3", "--config.eval_batch_size=8", "--config.detection.batch_size=8",
             "--config.detection.epochs=8.0", "--config.detection.warmup_epochs=0.5",
             "--config.detection.decay_epochs=(6.0,)", "--config.detection.output_stride=16",
             f"--workdir={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_")) and k != "XLA_FLAGS"}
    env.update(XLA_FLAGS=xla_flags(4), PYTHON=sys.executable, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               PORT=str(20000 + os.getpid() % 20000))
    done = subprocess.run(["bash", os.path.join(ROOT, "launch", "multiprocess.sh"), "2", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    record = json.loads((tmp_path / "results.json").read_text())["checkpoints"][0]
    assert record["counts"] == {"keyframes": 3, "gt_boxes": 5, "proposals": 4, "excluded_keyframes": 0}
    path = tmp_path / "detection" / "random_init" / "detections.csv"
    rows = list(csv.reader(open(path)))
    assert len(rows) == 4 * 6 and len({tuple(r[:2]) for r in rows}) == 2  # vidA,0902 and vidB,0902
    classes = list(range(1, 7))
    official = detection.frame_ap(detection.read_boxes_csv(os.path.join(root, "ava_val_v2.2.csv"), classes),
                                  detection.read_boxes_csv(str(path), classes, with_scores=True), classes)
    assert official["mAP"] == pytest.approx(record["mAP"], abs=1e-5)
