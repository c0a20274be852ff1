"""The AVA-like synthetic set (issue 28): `make_synthetic --kind ava` and the `synthetic_ava` dataset. The GT boxes
are the objects' pixels, each object moves as its labels say, the simulated detector finds what it should, the
AVA v2.2 layout builds into keyframe examples, and `inputs.plan` counts keyframes."""
import csv
import os
from collections import Counter

import av
import numpy as np
import pytest
from scipy import ndimage

from stjax import configlib
from stjax.data import make_synthetic as ms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, FPS = 48, 30.0
GENERATOR = dict(num_train=4, num_test=2, size=SIZE, seconds=4.0, fps=FPS, seed=3, objects=(2, 3))


def _scene(seed, split, index, frame_ids, **options):
    actions = ms.ava_actions(seed, split, index, (2, 3))
    rng = np.random.default_rng([seed, {"train": 0, "val": 1}[split], index])
    return actions, ms.render_ava_video(actions, rng, SIZE, frame_ids, FPS, **options)


def _box_of(pixels):
    """x1, y1, x2, y2 in [0, 1] (pixel edges) of the True pixels of a [H, W] mask."""
    rows, cols = np.nonzero(pixels)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]) / pixels.shape[0]


def test_keyframes_ids_and_argument_errors(tmp_path):
    assert ms.ava_keyframes(6.0) == (902, 903, 904, 905) and ms.ava_keyframes(4.5) == (902, 903)
    assert ms.ava_keyframes(2.9) == () and ms.ava_keyframe_index(902, 30.0) == 60
    assert (ms.ava_id("train", 7), ms.ava_id("val", 12)) == ("syntr00007", "synva00012")
    assert ms.AVA_ACTIONS == ("stand", "orbit", "shake", "bob", "spin", "pulse")
    with pytest.raises(ValueError, match=r"seconds=2.5 is invalid for kind='ava'.*seconds >= 3"):
        ms.generate(tmp_path / "a", kind="ava", seconds=2.5, progress=False)
    with pytest.raises(ValueError, match=r"objects=\(3, 2\) is invalid"):
        ms.generate(tmp_path / "a", kind="ava", objects=(3, 2), progress=False)
    with pytest.raises(ValueError, match="valid values: motions, charades, ava"):
        ms.generate(tmp_path / "a", kind="kinetics", progress=False)
    assert not (tmp_path / "a").exists()


def test_each_object_has_one_movement_and_at_most_one_change():
    counts, sizes, changes = Counter(), Counter(), 0
    objects = 0
    for index in range(300):
        actions = ms.ava_actions(0, "train", index, (2, 3))
        sizes[len(actions)] += 1
        for ids in actions:
            assert list(ids) == sorted(ids) and 1 <= len(ids) <= 2
            assert 1 <= ids[0] <= 4 and all(5 <= a <= 6 for a in ids[1:])
            counts.update(ids)
            changes += len(ids) == 2
            objects += 1
    assert set(sizes) == {2, 3} and min(sizes.values()) > 100
    assert abs(changes / objects - 2 / 3) < 0.05  # ~750 objects: 4 standard deviations
    assert all(abs(counts[a] / objects - 1 / 4) < 0.05 for a in (1, 2, 3, 4))
    assert all(abs(counts[a] / changes - 1 / 2) < 0.07 for a in (5, 6))
    assert ms.ava_actions(0, "val", 5, (2, 3)) != ms.ava_actions(0, "train", 5, (2, 3)) or \
        ms.ava_actions(0, "val", 6, (2, 3)) != ms.ava_actions(0, "train", 6, (2, 3))


def test_the_gt_boxes_are_the_objects_pixels():
    keyframes = ms.ava_keyframes(4.0)
    frame_ids = [ms.ava_keyframe_index(k, FPS) for k in keyframes]
    for index in range(4):
        actions, scene = _scene(1, "val", index, frame_ids, boxes=True)
        boxes = ms.ava_boxes(1, "val", index, actions, SIZE, FPS, keyframes)
        np.testing.assert_array_equal(boxes, scene["boxes"])  # geometry alone = what the frames show
        _, empty = _scene(1, "val", index, frame_ids, only=())
        for i in range(len(actions)):
            _, alone = _scene(1, "val", index, frame_ids, only=(i,), return_mask=True)
            for k in range(len(frame_ids)):
                np.testing.assert_array_equal(boxes[k, i], _box_of(alone["mask"][k] > 0.5))
                # the pixels the object changes (by more than a third of its largest change)
                diff = np.abs(alone["frames"][k].astype(int) - empty["frames"][k].astype(int)).max(axis=-1)
                seen = _box_of(diff > diff.max() / 3)
                np.testing.assert_allclose(boxes[k, i], seen, atol=1.01 / SIZE)
                assert np.all(boxes[k, i, :2] > 0) and np.all(boxes[k, i, 2:] < 1)


def _ranges(mask):
    """Per-frame centroid (px) and area of a coverage [T, H, W]; its frames' soft IoU with the first frame
    moved (sub-pixel) onto their centroid: 1 for a shape that only translates."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    area = mask.sum(axis=(1, 2))
    cx, cy = (mask * xs).sum(axis=(1, 2)) / area, (mask * ys).sum(axis=(1, 2)) / area
    same = [np.minimum(moved := ndimage.shift(mask[0], (cy[t] - cy[0], cx[t] - cx[0]), order=1), mask[t]).sum()
            / np.maximum(moved, mask[t]).sum() for t in range(0, len(mask), 4)]
    return cx, cy, area, min(same)


def test_each_object_moves_as_its_labels_say():
    seen = Counter()
    frame_ids = np.arange(120)  # 4 s
    for index in range(14):
        actions = ms.ava_actions(2, "train", index, (2, 3))
        for i, ids in enumerate(actions):
            _, out = _scene(2, "train", index, frame_ids, only=(i,), return_mask=True, draw=False)
            mask = out["mask"]
            assert mask[:, 0].max() == mask[:, -1].max() == mask[:, :, 0].max() == mask[:, :, -1].max() == 0
            cx, cy, area, same = _ranges(mask)
            names = {ms.AVA_ACTIONS[a - 1] for a in ids}
            seen.update(names)
            moves_x, moves_y = np.ptp(cx) > 3.0, np.ptp(cy) > 3.0
            assert max(np.ptp(cx), np.ptp(cy)) < 0.3 or moves_x or moves_y
            assert (moves_x, moves_y) == {"stand": (False, False), "orbit": (True, True), "shake": (True, False),
                                          "bob": (False, True)}[ms.AVA_ACTIONS[ids[0] - 1]], (ids, np.ptp(cx))
            if "orbit" in names:  # on a circle: an algebraic circle fit leaves < 0.3 px
                a = np.stack([cx, cy, np.ones_like(cx)], axis=1)
                (p, q, c), *_ = np.linalg.lstsq(a, cx ** 2 + cy ** 2, rcond=None)
                radius = np.sqrt(c + p ** 2 / 4 + q ** 2 / 4)
                assert np.abs(np.hypot(cx - p / 2, cy - q / 2) - radius).max() < 0.3 and radius > 2
            assert (area.max() / area.min() > 2.0) == ("pulse" in names)
            if "pulse" not in names:
                assert (same < 0.8) == ("spin" in names), (ids, same)
    assert set(seen) == set(ms.AVA_ACTIONS) and min(seen.values()) >= 3, seen


def _iou(a, b):
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def test_the_simulated_detector_finds_92_percent_with_few_false_positives():
    rng = np.random.default_rng(0)
    found = total = false = duplicates = keyframes = 0
    for index in range(600):
        lo = rng.uniform(0.05, 0.5, (3, 2, 2))
        gt = np.concatenate([lo, lo + rng.uniform(0.1, 0.4, (3, 2, 2))], axis=-1)  # [K=3, n=2, 4]
        for frame, proposals in zip(gt, ms.ava_proposals(0, "val", index, gt)):
            keyframes += 1
            scores = [s for _, s in proposals]
            assert scores == sorted(scores, reverse=True)
            for box, score in proposals:
                assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
                best = _iou(frame, box).max()
                if score >= 0.8 and best > 0.7:
                    found += 1
                    j = _iou(frame, box).argmax()
                    w, h = frame[j, 2] - frame[j, 0], frame[j, 3] - frame[j, 1]
                    assert np.all(np.abs(box - frame[j]) <= 0.08 * np.array([w, h, w, h]) + 1e-9)
                elif score < 0.6 and best > 0.6:
                    duplicates += 1
                else:
                    false += 1
            total += len(frame)
    assert abs(found / total - 0.92) < 0.02  # 3600 boxes: 4 standard deviations
    assert abs(duplicates / keyframes - 0.5) < 0.05 and 0.2 < false / keyframes < 0.35


def test_the_plan_counts_keyframes_before_anything_is_rendered(tmp_path):
    from stjax.data import inputs

    config = configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), "demo,dataset=synthetic_ava")
    config.data.update(data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "videos"))
    with config.unlocked():
        config.data.synthetic = dict(GENERATOR)
    plan = inputs.plan(config)
    assert plan.dataset == "synthetic_ava/default" and plan.prepared is None
    assert plan.splits == {"train": 4 * 2, "val": 2 * 2} and plan.short_sides == {"train": {SIZE: 8}, "val": {SIZE: 4}}
    with config.unlocked():
        config.data.synthetic = {}  # the defaults: 240 + 80 videos of 6 s, keyframes 902–905
    assert inputs.plan(config).splits == {"train": 960, "val": 320}
    assert not (tmp_path / "videos").exists() and not (tmp_path / "tfds").exists()


@pytest.fixture(scope="module")
def ava_set(tmp_path_factory):
    """The AVA-like set (4 train, 2 val videos of 4 s at 48 px) rendered and built by `synthetic_ava`."""
    from stjax.data import build

    root = tmp_path_factory.mktemp("ava_like")
    videos, data_dir = root / "videos", root / "tfds"
    report = build.build("synthetic_ava", manual_dir=str(videos), data_dir=str(data_dir), workers=1, verbose=False,
                         generator_kwargs=dict(GENERATOR, workers=1))
    return videos, data_dir, report


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_the_layout_builds_into_keyframe_examples(ava_set):
    import tensorflow_datasets as tfds

    from stjax.data import builders

    videos, data_dir, report = ava_set
    assert report["written_per_split"] == {"train": 8, "val": 4} and report["skipped"] == 0
    assert not report["warnings"]
    builder = builders.load_builder("synthetic_ava", str(data_dir))
    assert builders.label_type(builder) == "boxes"
    assert builder.info.metadata["evaluated_classes"] == [0, 1, 2, 3, 4, 5]
    assert builders.class_names(builder)[:6] == ms.AVA_ACTIONS
    gt = {}
    for split in ("train", "val"):
        for row in _rows(videos / f"ava_{split}_v2.2.csv"):
            box = gt.setdefault((row[0], int(row[1])), {}).setdefault(int(row[7]), [tuple(map(float, row[2:6])), []])
            assert box[0] == tuple(map(float, row[2:6]))
            box[1].append(int(row[6]) - 1)
    proposals = {}
    for row in _rows(videos / "ava_val_predicted_boxes.csv"):
        assert row[6] == "" and len(row[7].split(".")[1]) == 6
        proposals.setdefault((row[0], int(row[1])), []).append(float(row[7]))
    for split, ids in (("train", range(4)), ("val", range(2))):
        ds = builder.as_dataset(split=split)
        keys = set()
        for example in tfds.as_numpy(ds):
            video, timestamp = example["video_id"].decode(), int(example["timestamp"])
            keys.add((video, timestamp))
            want = gt[(video, timestamp)]
            assert example["person_id"].tolist() == sorted(want)
            np.testing.assert_allclose(example["boxes"], [want[p][0] for p in sorted(want)], atol=1e-6)
            labels = example["label"].to_list() if hasattr(example["label"], "to_list") else example["label"]
            assert [sorted(x) for x in labels] == [sorted(want[p][1]) for p in sorted(want)]
            assert example["frames"].shape == (37, SIZE, SIZE, 3) and int(example["keyframe_index"]) == 18
            if split == "val":
                assert sorted(example["proposal_scores"].tolist(), reverse=True) == \
                    pytest.approx(proposals[(video, timestamp)], abs=1e-6)
                assert example["proposals"].shape == (len(proposals[(video, timestamp)]), 4)
            # the stored keyframe is the rendered frame of movie second `timestamp` (H.264 and JPEG: not exactly)
            frame = ms.ava_keyframe_index(timestamp, FPS)
            _, scene = _scene(3, split, int(video[5:]), [frame - 2, frame, frame + 2])
            error = [np.abs(example["frames"][18].astype(int) - f).mean() for f in scene["frames"].astype(int)]
            assert error[1] < min(error[0], error[2]) and error[1] < 8, error
        assert keys == {(ms.ava_id(split, i), t) for i in ids for t in (902, 903)}


def _decoded(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_deterministic_idempotent_and_refuses_other_arguments(ava_set, tmp_path, capsys):
    videos, _, _ = ava_set
    other = tmp_path / "again"
    ms.generate(other, kind="ava", workers=1, progress=False, **dict(GENERATOR, num_train=2, num_test=1))
    for name in ms.AVA_FILES.values():  # each video's rows are its own: those of the larger set
        if name.endswith(".csv"):
            want = [r for r in _rows(videos / name) if r[0] in ("syntr00000", "syntr00001", "synva00000")]
            assert _rows(other / name) == want, name
    for video in ("syntr00001", "synva00000"):
        np.testing.assert_array_equal(_decoded(other / "videos_15min" / f"{video}.mp4"),
                                      _decoded(videos / "videos_15min" / f"{video}.mp4"))
    assert (other / ms.AVA_FILES["actions"]).read_text() == (videos / ms.AVA_FILES["actions"]).read_text()
    seed1 = tmp_path / "seed1"
    ms.generate(seed1, kind="ava", workers=1, progress=False, **dict(GENERATOR, num_train=2, num_test=1, seed=1))
    assert _rows(seed1 / "ava_train_v2.2.csv") != _rows(other / "ava_train_v2.2.csv")
    capsys.readouterr()
    meta = ms.generate(other, kind="ava", workers=1, progress=True, **dict(GENERATOR, num_train=2, num_test=1))
    assert "nothing to do" in capsys.readouterr().out and meta["splits"] == {"train": 2, "val": 1}
    assert meta["args"]["objects"] == [2, 3] and meta["version"] == ms.AVA_VERSION
    with pytest.raises(ValueError, match=r"args.objects: existing \[2, 3\] != requested \[1, 2\]"):
        ms.generate(other, kind="ava", workers=1, progress=False,
                    **dict(GENERATOR, num_train=2, num_test=1, objects=(1, 2)))
    (other / "videos_15min" / "syntr00001.mp4").unlink()
    ms.generate(other, kind="ava", workers=1, progress=False, **dict(GENERATOR, num_train=2, num_test=1))
    np.testing.assert_array_equal(_decoded(other / "videos_15min" / "syntr00001.mp4"),
                                  _decoded(videos / "videos_15min" / "syntr00001.mp4"))
