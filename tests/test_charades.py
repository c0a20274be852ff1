"""Charades v1: the builder on a tiny copy of the official layout."""
import csv

import numpy as np
import pytest

from conftest import write_video

CODES = ["c000", "c001", "c002", "c003"]
NAMES = ["Holding some clothes", "Putting clothes somewhere", "Taking a cup", "Holding some clothes"]
COLUMNS = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects", "descriptions",
           "actions", "length"]
TRAIN = {  # id: (actions, length)
    "AAA01": ("c000 0.00 1.20;c002 0.50 2.00", "2.10"),
    "AAA02": ("c001 0.30 0.90;c001 1.00 1.80", "2.0"),
    "AAA03": ("", "1.0"),  # no action: kept, no label
    "AAA04": ("c003 0.00 1.00", ""),  # no length
    "BAD01": ("c000 0.00 1.00;c009 0.50 0.70", "2"),  # a class outside the list
    "BAD02": ("c000 1.50 0.20", "2"),  # ends before it starts
    "BAD03": ("c000 0.0", "2"),  # not a triple
    "GONE1": ("c000 0.00 1.00", "2"),  # no file
}
TEST = {"TST01": ("c002 0.10 0.60;c000 0.20 1.90", "2.0"), "TST02": ("c003 0.00 0.50", "1.0")}


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for video_id, (actions, length) in rows.items():
            writer.writerow([video_id, "S1", "Kitchen", "6", "7", "Yes", "A person holds clothes, then a cup.",
                             "clothes;cup", "", actions, length])


@pytest.fixture(scope="module")
def charades_dataset(tmp_path_factory):
    from stjax.data import build

    root = tmp_path_factory.mktemp("charades")
    (root / "Charades_v1_classes.txt").write_text("".join(f"{c} {n}\n" for c, n in zip(CODES, NAMES)))
    _write_csv(root / "Charades_v1_train.csv", TRAIN)
    _write_csv(root / "Charades_v1_test.csv", TEST)
    (root / "Charades_v1_480").mkdir()
    (root / "Charades_v1").mkdir()
    for i, video_id in enumerate([*TRAIN, *TEST]):
        if video_id != "GONE1":
            write_video(root / "Charades_v1_480" / f"{video_id}.mp4", num_frames=30 + 5 * i, seed=i)
    write_video(root / "Charades_v1" / "AAA01.mp4", num_frames=10, seed=99)  # the full-size copy of one video
    data_dir = tmp_path_factory.mktemp("charades_tfds")
    report = build.build("charades", manual_dir=str(root), data_dir=str(data_dir), config="tiny", fps=24,
                         short_side=32, workers=1, verbose=False)
    return str(data_dir), report


def test_the_builder_stores_labels_time_stamped_actions_and_durations(charades_dataset):
    import tensorflow_datasets as tfds

    from stjax.data import builders

    data_dir, report = charades_dataset
    builder = builders.load_builder("charades/tiny", data_dir)
    assert builders.label_type(builder) == "multi_hot"
    # names from the class file; two classes with one name keep their codes
    assert builders.class_names(builder) == ("c000 Holding some clothes", "Putting clothes somewhere",
                                             "Taking a cup", "c003 Holding some clothes")
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {"train": 4, "test": 2}
    ds = builder.as_dataset(split="train+test", decoders={"frames": tfds.decode.SkipDecoding()})
    stored = {ex["video_id"].decode(): ex for ex in tfds.as_numpy(ds)}
    assert set(stored) == {"AAA01", "AAA02", "AAA03", "AAA04", "TST01", "TST02"}
    for video_id, (actions, length) in {**TRAIN, **TEST}.items():
        if video_id not in stored:
            continue
        ex = stored[video_id]
        triples = [a.split() for a in actions.split(";") if a]
        ids = [CODES.index(t[0]) for t in triples]
        assert sorted(ex["label"].tolist()) == sorted(set(ids)), video_id
        assert ex["actions"]["class_id"].tolist() == ids
        np.testing.assert_allclose(ex["actions"]["start"], [float(t[1]) for t in triples], rtol=1e-6)
        np.testing.assert_allclose(ex["actions"]["end"], [float(t[2]) for t in triples], rtol=1e-6)
        assert ex["duration"] == pytest.approx(float(length) if length else -1.0)
        assert ex["fps"] == 24.0 and min(ex["height"], ex["width"]) == 32
    # the 480p copy is used, with a warning naming both files
    assert stored["AAA01"]["num_frames"] > 10
    warnings = {w["path"]: w["warning"] for w in report["warnings"]}
    assert "used Charades_v1_480/AAA01.mp4" in warnings["Charades_v1_480/AAA01.mp4"]
    reasons = {r["path"]: r["reason"] for r in report["skipped_files"]}
    assert "action class c009 is not in Charades_v1_classes.txt (4 classes)" in reasons["BAD01"]
    assert "needs 0 <= START <= END seconds" in reasons["BAD02"]
    assert "'c000 0.0' is not `cNNN START END`" in reasons["BAD03"]
    assert "no video file is named GONE1.*" in reasons["GONE1"]
    assert report["written"] == 6 and report["skipped"] == 4


def test_a_missing_class_file_names_the_layout(tmp_path):
    from stjax.data import build

    (tmp_path / "Charades_v1_train.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(FileNotFoundError, match="Charades_v1_classes.txt not found"):
        build.build("charades", manual_dir=str(tmp_path), data_dir=str(tmp_path / "out"), workers=1, verbose=False)
    (tmp_path / "Charades_v1_classes.txt").write_text("c000 a\nc000 b\n")
    with pytest.raises(ValueError, match="class c000 is listed twice"):
        build.build("charades", manual_dir=str(tmp_path), data_dir=str(tmp_path / "out"), workers=1, verbose=False)


# --- training clips labelled by the actions in their time window ------------------------------------------------

ONE_VIDEO_ACTIONS = [(0, 0.0, 0.5), (1, 1.0, 1.6), (2, 2.5, 3.0), (0, 2.9, 3.0)]  # (class, start, end) seconds


def _window_rule(clip_starts, clip_seconds, actions, num_classes):
    """An independent statement of the rule: c is on iff [start_c, end_c] and a clip's window share a point."""
    on = np.zeros(num_classes, np.int32)
    for s in clip_starts:
        for c, a, b in actions:
            if max(a, s) <= min(b, s + clip_seconds):
                on[c] = 1
    return on


@pytest.mark.parametrize("starts,expected", [  # windows of 0.3 s
    ([0.0], [1, 0, 0, 0]),      # inside the first action
    ([0.5], [1, 0, 0, 0]),      # touching its end is overlapping
    ([0.6], [0, 0, 0, 0]),      # between the actions: nothing
    ([0.75], [0, 1, 0, 0]),     # reaches the second action's start (0.75 + 0.3 > 1.0)
    ([1.7, 2.4], [0, 0, 1, 0]),  # the union over ρ clips
    ([2.95], [1, 0, 1, 0]),     # two classes at once
])
def test_window_label_is_the_union_of_the_actions_overlapping_each_clip(starts, expected):
    import tensorflow as tf

    from stjax.data import targets

    actions = {"class_id": tf.constant([c for c, _, _ in ONE_VIDEO_ACTIONS]),
               "start": tf.constant([a for _, a, _ in ONE_VIDEO_ACTIONS]),
               "end": tf.constant([b for _, _, b in ONE_VIDEO_ACTIONS])}
    got = targets.window_label(actions, tf.constant(starts), tf.constant(0.3), 4).numpy()
    assert got.tolist() == expected == _window_rule(starts, 0.3, ONE_VIDEO_ACTIONS, 4).tolist()
    empty = {"class_id": tf.zeros([0], tf.int32), "start": tf.zeros([0]), "end": tf.zeros([0])}
    assert targets.window_label(empty, tf.constant(starts), tf.constant(0.3), 4).numpy().tolist() == [0] * 4


def test_training_clips_take_the_labels_of_their_window(tmp_path, tiny_video_dataset):
    """One 3.2 s video with actions at different times: each training clip's target follows its own start
    (clip_labels='window'), where 'video' gives every clip all the video's classes; a dataset without
    time-stamped actions refuses 'window' naming the field."""
    from stjax.data import augment, build, pipeline

    root = tmp_path / "charades"
    root.mkdir()
    (root / "Charades_v1_classes.txt").write_text("".join(f"{c} {n}\n" for c, n in zip(CODES, NAMES)))
    text = ";".join(f"{CODES[c]} {a:.2f} {b:.2f}" for c, a, b in ONE_VIDEO_ACTIONS)
    _write_csv(root / "Charades_v1_train.csv", {"ONE01": (text, "3.2")})
    write_video(root / "ONE01.mp4", num_frames=80, fps=25, seed=3)
    build.build("charades", manual_dir=str(root), data_dir=str(tmp_path / "tfds"), config="tiny", fps=24,
                short_side=32, workers=1, verbose=False)
    clips = pipeline.ClipSpec(rho=1, num_frames=4, stride=4)  # 13 stored frames: 13/24 s per clip
    kwargs = dict(data_dir=str(tmp_path / "tfds"), batch_size=1, clips=clips,
                  augmentation=augment.AugmentConfig(crop_size=24), shuffle_buffer=1, prefetch=1)
    seen = set()
    for clip_labels in ("window", "video"):
        stream = pipeline.pretrain_dataset("charades/tiny", clip_labels=clip_labels, **kwargs).as_numpy_iterator()
        for _ in range(40):
            batch = next(stream)
            if clip_labels == "video":
                assert batch["label"][0].tolist() == [1, 1, 1, 0]
                continue
            want = _window_rule(batch["clip_starts"][0], 13 / 24, ONE_VIDEO_ACTIONS, 4)
            assert batch["label"][0].tolist() == want.tolist(), batch["clip_starts"]
            seen.add(tuple(want))
    assert len(seen) >= 3  # clips in different parts of the video got different targets

    with pytest.raises(ValueError, match="data.clip_labels='frames' is invalid; valid values: video, window"):
        pipeline.pretrain_dataset("charades/tiny", clip_labels="frames", **kwargs)
    with pytest.raises(ValueError, match="data.clip_labels='window' needs time-stamped actions, which "
                                         "'video_folder/tiny' does not store"):
        pipeline.pretrain_dataset("video_folder/tiny", clip_labels="window", **dict(kwargs, data_dir=tiny_video_dataset[0]))
