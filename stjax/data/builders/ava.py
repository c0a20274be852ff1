"""AVA v2.2 (atomic actions of people, boxes at 1 Hz keyframes) from its official files; one example per keyframe.

Layout of the manual directory (the annotation files in DIR or DIR/annotations/)::

    ava_train_v2.2.csv, ava_val_v2.2.csv     one row per (box, action), no header: video_id, timestamp
                                             (integer movie seconds, 902–1798), x1, y1, x2, y2 (normalised
                                             to [0, 1]), action_id (1–80), person_id
    ava_action_list_v2.2.pbtxt               the 80 actions (`label { name: "…" label_id: N … }`)
    ava_action_list_v2.2_for_activitynet_2019.pbtxt
                                             the 60 evaluated ones (`item { name: "…" id: N }`); at least one
                                             of the two files (names neither gives are `action N`); the
                                             classes are the ids 1 … the largest a map lists (AVA: 80; a
                                             dataset in this layout with its own, smaller label map: its own)
    ava_train_excluded_timestamps_v2.2.csv, ava_val_excluded_timestamps_v2.2.csv
                                             video_id, timestamp: keys the evaluation ignores (optional)
    ava_train_predicted_boxes.csv, ava_val_predicted_boxes.csv, ava_test_predicted_boxes.csv
                                             person detections (optional): the same first six columns, an
                                             empty column or an action id, the detector's score
    and per video the first of these media that exists:
    videos_15min/<video_id>.<ext>            the 15-minute cuts (`ffmpeg -ss 900 -t 901`): movie second T is
                                             second T − 900 of the file
    frames/<video_id>/<video_id>_000001.jpg  frames of those cuts at 30 fps (PySlowFast's `ffmpeg -r 30`):
                                             frame n shows movie second 900 + (n − 1) / 30
    videos/<video_id>.<ext>                  the full movies: movie second T is second T of the file (the
                                             decoding seeks to the annotated quarter hour)

Examples, one per keyframe: in `train` every (video, timestamp) with a GT box; in `val` also those with
only proposals (M = 0), so that an evaluation sees every detection; in `test` (when its proposals file
exists and some of its videos have media) every key with a proposal. Each video is decoded once, over the
span its keyframes' windows cover, and each example holds

  frames          the stored frames (short side 256 and 30 fps by default) of the window
                  [T − half_window, T + half_window] (default ±1.1 s: 67 frames, enough for an 8×8 clip
                  centred on the keyframe); frames before the video's start or after its end repeat its
                  first / last frame (as PySlowFast clamps clip indices), so every example of a config has
                  the same number of frames; a keyframe whose own frame is past the video's end is skipped
  keyframe_index  int32: the index, in `frames`, of the keyframe (stored frame j shows movie second
                  timestamp + (j − keyframe_index) / fps)
  video_id, timestamp (int32 movie seconds; the example's key is `video_id,%04d`, the evaluator's key)
  boxes           float32 [M, 4]: the GT boxes, x1, y1, x2, y2 in [0, 1] of the frame, in file order
  label           the GT boxes' actions, [M, (k)] class ids = action id − 1 (label type `boxes`,
                  `stjax.data.targets.box_labels` makes the multi-hot [M, C], C = 80 for AVA)
  person_id       int32 [M] (-1 where the row has none)
  proposals       float32 [P, 4] and proposal_scores float32 [P]: all the detector's boxes of the key (the
                  same box listed with several action ids once, at its highest score); the score threshold
                  (0.8 in the study, 0.9 in PySlowFast) is an evaluation setting
  excluded        bool: the key is in the split's excluded-timestamps file (kept, for the evaluation to skip)

and the usual `video_id`, `fps`, `num_frames`, `height`, `width`. `info.metadata["evaluated_classes"]` lists
the label ids (action id − 1) of the 60 evaluated actions. Rows that do not parse (column count, a box not
0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, an action id outside 1–80 or past the label maps' largest, a
timestamp outside 902–1798 or not an integer, a score that is not a number) are skipped, one report record
each; a video without media is one record with the number of keyframes it loses (and counts once in
`missing`).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from stjax.data import video_io
from stjax.data.builders import layout
from stjax.data.builders.base import Annotations, VideoDatasetBuilder, VideoEntry, VideoFolderConfig

NUM_CLASSES = 80
VALID_SECONDS = (902, 1798)  # the annotated keyframes of each movie, inclusive
SPLITS = ("train", "val", "test")
GT_FILES = {"train": "ava_train_v2.2.csv", "val": "ava_val_v2.2.csv"}
EXCLUDED_FILES = {"train": "ava_train_excluded_timestamps_v2.2.csv", "val": "ava_val_excluded_timestamps_v2.2.csv"}
PROPOSAL_FILES = {split: f"ava_{split}_predicted_boxes.csv" for split in SPLITS}
LABEL_MAP_80 = "ava_action_list_v2.2.pbtxt"
LABEL_MAP_60 = "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
ANNOTATION_DIRS = ("annotations",)
# The 60 actions AVA v2.2 evaluates (the activitynet_2019 list), used when that file is not there.
EVALUATED_IDS = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37,
                 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68,
                 69, 70, 72, 73, 74, 76, 77, 78, 79, 80)
FRAMES_FPS = 30.0
# Media, in the order they are looked for: (top folder, movie second at the file's time 0, kind).
MEDIA = (("videos_15min", 900.0, "file"), ("frames", 900.0, "frames"), ("videos", 0.0, "file"))


@dataclasses.dataclass(eq=False)
class AvaConfig(VideoFolderConfig):
    """Storage options plus the window stored around each keyframe.

    Attributes:
      half_window: seconds of video kept on each side of the keyframe (the frames at grid times within
        [T − half_window, T + half_window]); recorded with the storage options.
    """

    half_window: float = 1.1

    def __post_init__(self):
        super().__post_init__()
        if self.fps is None:
            raise ValueError("fps must be > 0 for ava (keyframes are found by frame index), got None")
        if not (math.isfinite(self.half_window) and self.half_window >= 0):
            raise ValueError(f"half_window must be >= 0 seconds, got {self.half_window}")

    def storage_metadata(self) -> dict:
        return super().storage_metadata() | {"half_window": self.half_window}


class Ava(VideoDatasetBuilder, skip_registration=True):
    """AVA v2.2: per keyframe, the frames around it, the GT person boxes with their actions and the proposals."""

    name = "ava"
    LABEL_TYPE = "boxes"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One example per keyframe: a window of JPEG frames, GT boxes, actions, proposals."}
    BUILDER_CONFIGS = [AvaConfig(name="default", fps=30.0, short_side=256, half_window=1.1,
                                 description="30 fps, short side 256, ±1.1 s around each keyframe")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def extra_features(self):
        boxes = dict(shape=(None, 4), dtype=np.float32)
        return {
            "timestamp": tfds.features.Scalar(tf.int32, doc="the keyframe's movie second"),
            "keyframe_index": tfds.features.Scalar(tf.int32, doc="the keyframe's index in `frames`"),
            "boxes": tfds.features.Tensor(**boxes, doc="GT boxes x1, y1, x2, y2 in [0, 1]"),
            "person_id": tfds.features.Tensor(shape=(None,), dtype=np.int32, doc="per GT box; -1: none"),
            "proposals": tfds.features.Tensor(**boxes, doc="detected person boxes x1, y1, x2, y2 in [0, 1]"),
            "proposal_scores": tfds.features.Tensor(shape=(None,), dtype=np.float32, doc="per proposal"),
            "excluded": tfds.features.Scalar(tf.bool, doc="listed in the excluded-timestamps file"),
        }

    def _info(self):
        info = super()._info()
        evaluated = getattr(self, "_evaluated", None)
        if evaluated is not None:
            info.metadata["evaluated_classes"] = list(evaluated)
        return info

    def _read_annotations(self, root: str) -> Annotations:
        files = {kind: {split: path for split, name in names.items() if (path := _find(root, name))}
                 for kind, names in (("gt", GT_FILES), ("excluded", EXCLUDED_FILES), ("proposals", PROPOSAL_FILES))}
        maps = {n: path for n in (LABEL_MAP_80, LABEL_MAP_60) if (path := _find(root, n))}
        if not files["gt"] or not maps:
            wanted = [*GT_FILES.values()] if not files["gt"] else [f"{LABEL_MAP_80} or {LABEL_MAP_60}"]
            raise FileNotFoundError(f"{' and '.join(wanted)} not found in {root!r} (or its annotations/); "
                                    f"expected the layout:\n{__doc__}")
        names = {}
        for name in (LABEL_MAP_60, LABEL_MAP_80):  # the 80-action list's names win
            if name in maps:
                names.update(read_label_map(os.path.join(root, maps[name])))
        # AVA's 80 actions; a dataset in AVA's layout with its own label map (the synthetic set's 6, e.g.) has
        # the ids 1 … its largest
        classes = _unique([names.get(i, f"action {i}") for i in range(1, min(max(names), NUM_CLASSES) + 1)])
        evaluated = (sorted(read_label_map(os.path.join(root, maps[LABEL_MAP_60])))
                     if LABEL_MAP_60 in maps else list(EVALUATED_IDS))
        self._evaluated = [i - 1 for i in evaluated]
        annotations = Annotations(classes=classes, splits=[], entries=[])
        if LABEL_MAP_60 not in maps:
            annotations.warnings.append({"path": maps[LABEL_MAP_80], "split": None, "warning": (
                f"{LABEL_MAP_60} not found: the evaluated classes are AVA v2.2's standard 60")})

        boxes, proposals, excluded = {}, {}, {}
        for split, rel in files["gt"].items():
            boxes[split] = _read_rows(root, rel, split, False, annotations, len(classes))
        for split, rel in files["proposals"].items():
            proposals[split] = _read_rows(root, rel, split, True, annotations, len(classes))
        for split, rel in files["excluded"].items():
            excluded[split] = _read_excluded(root, rel, split, annotations)

        found = layout.FileIndex.of(root)
        media_of = {}  # video id -> (rel, offset, source_fps) or None
        for split in SPLITS:
            keys = set(boxes.get(split, {}))
            if split == "train" and split in proposals:
                unused = set(proposals[split]) - keys
                if unused:
                    annotations.warnings.append({"path": files["proposals"][split], "split": split, "warning": (
                        f"{len(unused)} keys have proposals but no GT box: not train examples")})
            elif split in proposals:
                keys |= set(proposals[split])
            if not keys:
                continue
            videos = sorted({video for video, _ in keys})
            for video in videos:
                if video not in media_of:
                    media_of[video] = _media(root, found, video, split, annotations)
            if split == "test" and split not in boxes and not any(media_of[v] for v in videos):
                annotations.warnings.append({"path": files["proposals"][split], "split": split, "warning": (
                    f"none of its {len(videos)} videos has media; no test split")})
                continue
            annotations.splits.append(split)
            lost = {}
            for video, timestamp in sorted(keys):
                media = media_of[video]
                if media is None:
                    lost[video] = lost.get(video, 0) + 1
                    continue
                annotations.entries.append(self._entry(video, timestamp, split, media, boxes.get(split, {}),
                                                       proposals.get(split, {}), excluded.get(split, set()),
                                                       files, classes))
            for video, count in lost.items():
                annotations.missing += 1
                annotations.skipped.append({"path": video, "split": split, "reason": (
                    f"no media for {video}: none of videos_15min/{video}.*, frames/{video}/, videos/{video}.*; "
                    f"its {count} keyframes are not built")})
        used = {*files["gt"].values(), *files["proposals"].values(), *files["excluded"].values(), *maps.values()}
        annotations.ignored_files = found.ignored(used)
        return annotations

    def _entry(self, video, timestamp, split, media, boxes, proposals, excluded, files, classes) -> VideoEntry:
        rel, offset, source_fps = media
        cfg = self.builder_config
        t = timestamp - offset  # the keyframe's time in the file
        start, end = t - cfg.half_window, t + cfg.half_window
        gt = boxes.get((video, timestamp), {})
        found = proposals.get((video, timestamp), {})
        extra = {
            "timestamp": timestamp,
            "keyframe_index": round(t * cfg.fps) - video_io.grid_index(start, cfg.fps),
            "boxes": np.array(list(gt), np.float32).reshape(-1, 4),
            "person_id": np.array([person for _, person in gt.values()], np.int32),
            "proposals": np.array(list(found), np.float32).reshape(-1, 4),
            "proposal_scores": np.array(list(found.values()), np.float32),
            "excluded": (video, timestamp) in excluded,
        }
        label = tuple(tuple(classes[a - 1] for a in sorted(actions)) for actions, _ in gt.values())
        return VideoEntry(video_id=video, key=f"{video},{timestamp:04d}", path=rel, label=label, split=split,
                          source=files["gt"].get(split) or files["proposals"][split], start=start, end=end,
                          source_fps=source_fps, extra=extra)


def read_label_map(path: str) -> dict[int, str]:
    """{action id: name} from a label map `.pbtxt` (`item { name: "…" id: N }` or `label { name: "…"
    label_id: N … }` blocks). Raises ValueError naming a block without both, or an id listed twice."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    names = {}
    for block in re.findall(r"\{([^{}]*)\}", text):
        name = re.search(r'\bname:\s*"((?:[^"\\]|\\.)*)"', block)
        number = re.search(r"\b(?:label_)?id:\s*(-?\d+)", block)
        if not name or not number:
            raise ValueError(f"{path}: the block {{{block.strip()}}} needs a `name: \"…\"` and an `id: N`")
        action = int(number.group(1))
        if action in names:
            raise ValueError(f"{path}: action id {action} is listed twice")
        names[action] = name.group(1)
    if not names:
        raise ValueError(f"{path}: no `item {{ name: … id: … }}` blocks")
    return names


def parse_row(row: list[str], proposals: bool, num_classes: int = NUM_CLASSES
              ) -> tuple[str, int, tuple[float, ...], tuple[int, int] | float]:
    """(video id, timestamp, (x1, y1, x2, y2), value) of one CSV row; value: for a GT row (action id 1–num_classes,
    person id or -1 if absent), for a proposal row its score (its action column is ignored). Raises
    ValueError saying what is wrong."""
    need = 8 if proposals else 7
    if len(row) < need:
        raise ValueError(f"{len(row)} columns, needs {need}")
    video = row[0].strip()
    if not video:
        raise ValueError("no video id")
    try:
        timestamp = int(row[1])
    except ValueError:
        raise ValueError(f"timestamp {row[1]!r} is not an integer") from None
    if not VALID_SECONDS[0] <= timestamp <= VALID_SECONDS[1]:
        raise ValueError(f"timestamp {timestamp} is outside AVA's keyframes {VALID_SECONDS[0]}–{VALID_SECONDS[1]}")
    try:
        box = tuple(float(v) for v in row[2:6])
    except ValueError:
        raise ValueError(f"box {','.join(row[2:6])!r} is not 4 numbers") from None
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ValueError(f"box {','.join(row[2:6])} is not 0 <= x1 < x2 <= 1, 0 <= y1 < y2 <= 1")
    if proposals:
        try:
            score = float(row[7])
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise ValueError(f"score {row[7]!r} is not a number")
        return video, timestamp, box, score
    try:
        action = int(row[6])
    except ValueError:
        raise ValueError(f"action id {row[6]!r} is not an integer") from None
    if not 1 <= action <= num_classes:
        raise ValueError(f"action id {action} is outside 1–{num_classes}")
    person = row[7].strip() if len(row) > 7 else ""
    try:
        person_id = int(person) if person else -1
    except ValueError:
        raise ValueError(f"person id {person!r} is not an integer") from None
    return video, timestamp, box, (action, person_id)


def _read_rows(root, rel, split, proposals, annotations, num_classes: int = NUM_CLASSES) -> dict:
    """GT: {(video, timestamp): {box: (set of action ids, person id)}}; proposals: {(video, timestamp):
    {box: score}} (the highest of a box's rows); rows that do not parse are reported."""
    keys = {}
    with open(os.path.join(root, rel), newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not any(cell.strip() for cell in row):
                continue
            try:
                video, timestamp, box, value = parse_row(row, proposals, num_classes)
            except ValueError as e:
                annotations.skipped.append({"path": f"{rel}:{line}", "split": split, "reason": str(e)})
                continue
            found = keys.setdefault((video, timestamp), {})
            if proposals:
                found[box] = max(found.get(box, -math.inf), value)
            elif box in found:  # another action of the box (its first row's person id is kept)
                found[box][0].add(value[0])
            else:
                found[box] = ({value[0]}, value[1])
    return keys


def _read_excluded(root, rel, split, annotations) -> set:
    keys = set()
    with open(os.path.join(root, rel), newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not any(cell.strip() for cell in row):
                continue
            try:
                keys.add((row[0].strip(), int(row[1])))
            except (IndexError, ValueError):
                annotations.skipped.append({"path": f"{rel}:{line}", "split": split,
                                            "reason": f"not `video_id,timestamp`: {','.join(row)!r}"})
    return keys


def _media(root, found: layout.FileIndex, video: str, split: str, annotations) -> tuple | None:
    """(path, movie second at its time 0, source_fps or None) of a video's media (MEDIA's order), or None."""
    candidates = []
    for folder, offset, kind in MEDIA:
        if kind == "frames":
            paths = [p for p in found.folders.get(video, []) if p.split("/")[0] == folder]
            if not paths and os.path.isdir(os.path.join(root, folder, video)):
                paths = [f"{folder}/{video}"]  # an empty folder: reported when it is decoded
        else:
            paths = [p for p in found.by_stem.get(video, []) if p.split("/")[0] == folder]
        candidates += [(p, offset, FRAMES_FPS if kind == "frames" else None) for p in paths]
    if not candidates:
        return None
    if len(candidates) > 1:
        annotations.warnings.append({"path": candidates[0][0], "split": split, "warning": (
            f"{len(candidates)} media hold {video} ({', '.join(c[0] for c in candidates)}); used {candidates[0][0]}")})
    found.used.update(c[0] for c in candidates)
    return candidates[0]


def _find(root: str, name: str) -> str | None:
    """`name` in `root` or annotations/ (any case)."""
    stem, extension = os.path.splitext(name)
    paths = layout.find_annotation(root, ANNOTATION_DIRS, (stem.lower(),), extension.lower())
    return paths[0] if paths else None


def _unique(names: list[str]) -> list[str]:
    """Class names with a repeated name made unique by its action id (`name (id N)`)."""
    return [f"{n} (id {i})" if names.count(n) > 1 else n for i, n in enumerate(names, start=1)]
