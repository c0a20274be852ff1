"""AVA v2.2: the builder on a tiny copy of the official layout, with each kind of media.

Every source frame shows its own index (three base-16 digits as grey stripes), so each stored frame can be
traced back to the source frame it shows.
"""
import csv
import math
import os
from fractions import Fraction

import numpy as np
import pytest

FPS = 10  # stored
HALF = 1.1  # the default half window: frames k_c - 11 ... k_c + 11 at 10 fps
WIDTH, HEIGHT = 24, 16
A, B, C, D, E, F = "-5KQ66BBWC4", "vidframes_B", "movieC", "goneD", "vidtest_E", "goneF"
# media: video -> (kind, source fps, number of source frames, movie second of the file's time 0)
MEDIA = {A: ("videos_15min", 25, 150, 900), B: ("frames", 30, 180, 900), C: ("videos", 1, 906, 0),
         E: ("videos_15min", 25, 100, 900)}

TRAIN_GT = [  # video, timestamp, x1, y1, x2, y2, action, person
    (A, "0902", "0.100", "0.200", "0.500", "0.900", 12, 0),
    (A, "0902", "0.100", "0.200", "0.500", "0.900", 80, 0),  # the same box, a second action
    (A, "0902", "0.600", "0.100", "0.950", "0.800", 1, 1),
    (A, "0902", "0.000", "0.000", "1.000", "1.000", 17, 2),
    (A, "0902", "0.000", "0.000", "1.000", "1.000", 79, 2),
    (A, "0902", "0.000", "0.000", "1.000", "1.000", 80, 2),
    (A, "0903", "0.250", "0.250", "0.750", "0.750", 14, 3),
    (A, "0905", "0.300", "0.300", "0.400", "0.600", 11, 0),  # near the end: edge frames repeated
    (A, "0906", "0.300", "0.300", "0.400", "0.600", 11, 0),  # its keyframe is past the video's end
    (C, "0902", "0.500", "0.500", "0.700", "0.900", 8, 5),
    (C, "0903", "0.500", "0.500", "0.700", "0.900", 8, 5),
    (C, "0903", "0.100", "0.100", "0.200", "0.300", 60, 6),
]
BAD_TRAIN = [  # (row, the reason's text)
    ((A, "0902", "0.700", "0.200", "0.500", "0.900", 12, 0), "box 0.700,0.200,0.500,0.900 is not 0 <= x1 < x2"),
    ((A, "0902", "0.100", "0.200", "0.500", "0.900", 81, 0), "action id 81 is outside 1–80"),
    ((A, "0901", "0.100", "0.200", "0.500", "0.900", 12, 0), "timestamp 901 is outside AVA's keyframes 902–1798"),
    ((A, "0902", "0.1", "0.2"), "4 columns, needs 7"),
]
VAL_GT = [
    (B, "0902", "0.100", "0.100", "0.400", "0.900", 5, 0),
    (B, "0902", "0.100", "0.100", "0.400", "0.900", 6, 0),
    (B, "0902", "0.500", "0.100", "0.900", "0.900", 80, 1),
    (B, "0904", "0.200", "0.200", "0.600", "0.600", 3, 0),
    (D, "0902", "0.200", "0.200", "0.600", "0.600", 3, 0),
    (D, "0903", "0.200", "0.200", "0.600", "0.600", 3, 0),
]
PROPOSALS = {  # split -> rows: video, timestamp, box, action column, score
    "train": [(A, "0902", "0.110", "0.190", "0.520", "0.880", "", "0.97"),
              (A, "0904", "0.110", "0.190", "0.520", "0.880", "", "0.50")],  # no GT at 904: not a train example
    "val": [(B, "0902", "0.120", "0.110", "0.410", "0.880", "5", "0.93"),
            (B, "0902", "0.120", "0.110", "0.410", "0.880", "6", "0.93"),  # the same box with another action
            (B, "0902", "0.520", "0.090", "0.880", "0.910", "", "0.41"),
            (B, "0903", "0.300", "0.300", "0.500", "0.700", "", "0.88"),  # a key with proposals only
            (B, "0903", "0.300", "0.300", "0.500", "0.700", "", "abc")],  # a bad score
    "test": [(E, "0902", "0.200", "0.200", "0.300", "0.400", "", "0.99"),
             (E, "0903", "0.200", "0.200", "0.300", "0.400", "", "0.98"),
             (F, "0902", "0.200", "0.200", "0.300", "0.400", "", "0.70")],
}
EXCLUDED = {"val": [(B, "0904"), (B, "0905")], "train": []}
EVALUATED = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37, 38, 41,
             43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 72, 73,
             74, 76, 77, 78, 79, 80)


def _frame(index):
    """A grey frame showing `index` as three base-16 digits, one per vertical stripe (value 16·digit + 8)."""
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for s, digit in enumerate((index // 256, (index // 16) % 16, index % 16)):
        img[:, 8 * s:8 * s + 8] = 16 * digit + 8
    return img


def _index(rgb):
    """The index a decoded frame shows (inverse of `_frame`, robust to compression)."""
    digits = [int(round((float(rgb[2:-2, 8 * s + 2:8 * s + 6].mean()) - 8) / 16)) for s in range(3)]
    return 256 * digits[0] + 16 * digits[1] + digits[2]


def _write_mp4(path, fps, count):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(count):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_rows(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _layout(root):
    from PIL import Image

    ann = root / "annotations"
    ann.mkdir()
    _write_rows(ann / "ava_train_v2.2.csv", TRAIN_GT[:3] + [r for r, _ in BAD_TRAIN] + TRAIN_GT[3:])
    _write_rows(ann / "ava_val_v2.2.csv", VAL_GT)
    for split, rows in PROPOSALS.items():
        _write_rows(ann / f"ava_{split}_predicted_boxes.csv", rows)
    for split, rows in EXCLUDED.items():
        _write_rows(ann / f"ava_{split}_excluded_timestamps_v2.2.csv", rows)
    (ann / "ava_action_list_v2.2.pbtxt").write_text("".join(
        f'label {{\n  name: "action name {i}"\n  label_id: {i}\n  label_type: PERSON_MOVEMENT\n}}\n'
        for i in range(1, 81)))
    (ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text("".join(
        f'item {{\n  name: "action name {i}"\n  id: {i}\n}}\n' for i in EVALUATED))
    for video, (kind, fps, count, _) in MEDIA.items():
        if kind == "frames":
            folder = root / "frames" / video
            folder.mkdir(parents=True)
            for n in range(1, count + 1):
                Image.fromarray(_frame(n - 1)).save(folder / f"{video}_{n:06d}.jpg", quality=95)
        else:
            (root / kind).mkdir(exist_ok=True)
            _write_mp4(root / kind / f"{video}.mp4", fps, count)


def _expected_keys():
    """{split: {key: {"boxes": {box: (set of actions, person)}, "proposals": {box: score}}}}, grouped here."""
    out = {"train": {}, "val": {}, "test": {}}
    for split, rows in (("train", TRAIN_GT), ("val", VAL_GT)):
        for video, ts, *box, action, person in rows:
            entry = out[split].setdefault((video, int(ts)), {"boxes": {}, "proposals": {}})
            entry["boxes"].setdefault(tuple(map(float, box)), (set(), person))[0].add(action)
    for split, rows in PROPOSALS.items():
        for video, ts, *box, _, score in rows:
            key = (video, int(ts))
            if score == "abc" or (split == "train" and key not in out[split]):
                continue
            entry = out[split].setdefault(key, {"boxes": {}, "proposals": {}})
            entry["proposals"][tuple(map(float, box))] = float(score)
    for split in out:  # no media, or the keyframe past the video's end
        out[split] = {k: v for k, v in out[split].items() if k[0] in MEDIA and k != (A, 906)}
    return out


def _expected_frame_ids(video, timestamp):
    """The source frame each of a keyframe's 23 stored frames shows: grid k = k_c - 11 ... k_c + 11 at 10 fps
    (clamped to the video's grid frames), each the last source frame at or before k / 10 s."""
    _, fps, count, offset = MEDIA[video]
    centre = (timestamp - offset) * FPS
    last = math.ceil(Fraction(count, fps) * FPS) - 1  # the grid frames the file has: k / 10 < count / fps
    return [int(Fraction(min(k, last) * fps, FPS)) for k in range(centre - 11, centre + 12)]


@pytest.fixture(scope="module")
def ava_dataset(tmp_path_factory):
    from stjax.data import build

    root = tmp_path_factory.mktemp("ava")
    _layout(root)
    data_dir = tmp_path_factory.mktemp("ava_tfds")
    report = build.build("ava", manual_dir=str(root), data_dir=str(data_dir), config="tiny", fps=FPS,
                         short_side=HEIGHT, workers=2, verbose=False)
    return str(data_dir), str(root), report


def _label_lists(label):
    return label.to_list() if hasattr(label, "to_list") else [list(row) for row in label]


def test_keyframes_hold_their_window_boxes_actions_and_proposals(ava_dataset):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from stjax.data import builders, targets

    data_dir, _, report = ava_dataset
    builder = builders.load_builder("ava/tiny", data_dir)
    assert builders.label_type(builder) == "boxes"
    names = builders.class_names(builder)
    assert len(names) == 80 and names[0] == "action name 1" and names[79] == "action name 80"
    assert builder.info.metadata["evaluated_classes"] == [i - 1 for i in EVALUATED]
    assert builder.info.metadata["storage"]["half_window"] == HALF
    expected = _expected_keys()
    assert {s: builder.info.splits[s].num_examples for s in ("train", "val", "test")} == {
        s: len(keys) for s, keys in expected.items()} == {"train": 5, "val": 3, "test": 2}
    for split, keys in expected.items():
        ds = builder.as_dataset(split=split, decoders={"frames": tfds.decode.SkipDecoding()})
        stored = {}
        for ex in ds:
            stored[(ex["video_id"].numpy().decode(), int(ex["timestamp"]))] = (
                tfds.as_numpy(ex), targets.box_labels(ex["label"], 80).numpy())
        assert set(stored) == set(keys), split
        for (video, timestamp), want in keys.items():
            ex, multi_hot = stored[video, timestamp]
            where = f"{split} {video},{timestamp}"
            boxes = list(want["boxes"])
            np.testing.assert_array_equal(ex["boxes"], np.array(boxes, np.float32).reshape(-1, 4), where)
            assert ex["person_id"].tolist() == [want["boxes"][b][1] for b in boxes], where
            assert [sorted(ids) for ids in _label_lists(ex["label"])] == [
                sorted(a - 1 for a in want["boxes"][b][0]) for b in boxes], where
            want_hot = np.zeros((len(boxes), 80), np.int32)
            for m, b in enumerate(boxes):
                want_hot[m, [a - 1 for a in want["boxes"][b][0]]] = 1
            np.testing.assert_array_equal(multi_hot, want_hot, where)
            proposals = list(want["proposals"])
            np.testing.assert_array_equal(ex["proposals"], np.array(proposals, np.float32).reshape(-1, 4), where)
            np.testing.assert_allclose(ex["proposal_scores"], [want["proposals"][p] for p in proposals], rtol=1e-6)
            assert bool(ex["excluded"]) == ((video, f"{timestamp:04d}") in EXCLUDED.get(split, [])), where
            # the frames: 23 at 10 fps around the keyframe, each the source frame of its grid time
            assert ex["num_frames"] == len(ex["frames"]) == 23 and ex["fps"] == FPS, where
            assert (ex["height"], ex["width"]) == (HEIGHT, WIDTH) and ex["keyframe_index"] == 11, where
            shown = [_index(tf.io.decode_jpeg(f).numpy()) for f in ex["frames"]]
            assert shown == _expected_frame_ids(video, timestamp), where
            _, fps, _, offset = MEDIA[video]
            assert shown[ex["keyframe_index"]] == (timestamp - offset) * fps, where
    assert report["written"] == 10 and report["written_per_split"] == {"train": 5, "val": 3, "test": 2}


def test_the_report_names_bad_rows_missing_videos_and_clipped_windows(ava_dataset):
    _, _, report = ava_dataset
    skipped = report["skipped_files"]
    by_path = {r["path"]: r for r in skipped}
    for line, (_, reason) in enumerate(BAD_TRAIN, start=4):
        assert reason in by_path[f"annotations/ava_train_v2.2.csv:{line}"]["reason"], line
    assert by_path["annotations/ava_val_predicted_boxes.csv:5"]["reason"] == "score 'abc' is not a number"
    assert by_path[D] == {"path": D, "split": "val", "reason": (
        f"no media for {D}: none of videos_15min/{D}.*, frames/{D}/, videos/{D}.*; its 2 keyframes are not built")}
    assert by_path[F]["split"] == "test" and "its 1 keyframes are not built" in by_path[F]["reason"]
    past = [r for r in skipped if r.get("example") == f"{A},0906"]
    assert past == [{"path": f"videos_15min/{A}.mp4", "split": "train", "example": f"{A},0906", "reason": (
        "the range [4.900, 7.100] s is centred at 6.000 s, outside the decoded video (0.900–6.000 s)")}]
    assert report["missing"] == 2 and report["skipped"] == len(BAD_TRAIN) + 1 + 2 + 1
    clipped = [w for w in report["warnings"] if w.get("example") == f"{A},0905"]
    assert clipped == [{"path": f"videos_15min/{A}.mp4", "split": "train", "example": f"{A},0905", "warning": (
        "2 of the range's 23 frames lie outside the decoded video (0.900–6.000 s); its edge frame is repeated")}]
    assert any("1 keys have proposals but no GT box" in w["warning"] for w in report["warnings"])
    assert report["decoded"] == 4  # each video once, for all its keyframes


def test_an_interrupted_build_resumes_and_decodes_each_video_once(tmp_path, monkeypatch):
    from stjax.data import build, video_io

    root = tmp_path / "ava"
    root.mkdir()
    _layout(root)

    class Killed(BaseException):
        pass

    calls = []
    real = {name: getattr(video_io, name) for name in ("decode_video", "decode_frame_folder")}

    def counting(name):
        def decode(path, *args, **kwargs):
            calls.append((os.path.relpath(path, root), kwargs.get("start_seconds")))
            if len(calls) == 3 and kill:
                raise Killed
            return real[name](path, *args, **kwargs)
        return decode

    for name in real:
        monkeypatch.setattr(video_io, name, counting(name))
    kwargs = dict(manual_dir=str(root), data_dir=str(tmp_path / "tfds"), config="tiny", fps=FPS, short_side=HEIGHT,
                  workers=1, verbose=False)
    kill = True
    with pytest.raises(Killed):
        build.build("ava", **kwargs)
    kill = False
    report = build.build("ava", **kwargs)
    assert report["reused_from_interrupted_build"] == 2 and report["decoded"] == 2
    decoded = dict(calls[:2] + calls[3:])  # the start of the span of each video's windows, each decoded once
    assert len(calls) == 5 and decoded == {
        f"videos_15min/{A}.mp4": pytest.approx(0.9), f"frames/{B}": pytest.approx(0.9),
        "videos/movieC.mp4": pytest.approx(900.9), f"videos_15min/{E}.mp4": pytest.approx(0.9)}


def test_layout_errors_name_the_files_and_the_field(tmp_path):
    from stjax.data import build
    from stjax.data.builders import ava

    (tmp_path / "ava_train_v2.2.csv").write_text("")
    with pytest.raises(FileNotFoundError, match="ava_action_list_v2.2.pbtxt or ava_action_list_v2.2_for_activity"):
        build.build("ava", manual_dir=str(tmp_path), data_dir=str(tmp_path / "out"), workers=1, verbose=False)
    with pytest.raises(ValueError, match="fps must be > 0 for ava"):
        ava.AvaConfig(name="x", fps=None)
    (tmp_path / "bad.pbtxt").write_text('item {\n  name: "a"\n}\n')
    with pytest.raises(ValueError, match="needs a `name:"):
        ava.read_label_map(str(tmp_path / "bad.pbtxt"))
