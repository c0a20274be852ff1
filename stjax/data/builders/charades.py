"""Charades v1 (157 overlapping indoor actions, several per video) from its official CSV files.

Layout of the manual directory (as the official archives unpack)::

    DIR/Charades_v1_classes.txt    `c000 Holding some clothes`, one class per line, c000 … c156
    DIR/Charades_v1_train.csv      columns id, subject, scene, quality, relevance, verified, script,
    DIR/Charades_v1_test.csv         objects, descriptions, actions, length; `actions` holds the
                                     video's time-stamped actions `c092 11.90 21.20;c147 0.00 12.60`
                                     (class, start and end in seconds; may be empty), `length` its
                                     duration in seconds
        (also in DIR/Charades/ or DIR/annotations/)
    DIR/**/<id>.mp4                the videos, anywhere below DIR: officially Charades_v1_480/
                                   (480p, preferred when both are present) or Charades_v1/
    DIR/Charades_v1_rgb/<id>/<id>-000001.jpg ...
                                   or the official RGB frames (24 fps), used for the videos that have
                                   no video file; a frame folder named <id> elsewhere below DIR works too

Splits: `train` and `test` (the official test set, which papers report as "validation"). Each video
is stored with its frames at 24 fps (the rate of the official RGB frames) and:

  label     the classes of all its actions (multi-hot in batches: `stjax.data.targets`), the
            video-level target the test set is scored against;
  actions   its time-stamped actions: `class_id` int32 [S] (the label's ids), `start` and `end`
            float32 [S] in seconds, in annotation order; S = 0 for a video without actions;
  duration  float32 seconds: the `length` column (-1 where it is missing).

A video whose actions name a class outside the class list, or an action that is not
`cNNN START END` with 0 <= START <= END, is skipped and listed in the build report; so is a listed
video with no file or frame folder, and a frame folder without a readable numbered image. A video without
actions is kept, with no label.
"""
from __future__ import annotations

import csv
import math
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from stjax.data.builders import layout
from stjax.data.builders.base import Annotations, VideoDatasetBuilder, VideoEntry, VideoFolderConfig

CLASSES_FILE = "Charades_v1_classes.txt"
SPLIT_FILES = {"train": "Charades_v1_train.csv", "test": "Charades_v1_test.csv"}
ANNOTATION_DIRS = ("Charades", "annotations")
PREFERRED_VIDEO_DIR = "Charades_v1_480"
FRAMES_DIR = "Charades_v1_rgb"  # the official RGB frames: Charades_v1_rgb/<id>/<id>-000001.jpg ...
FRAMES_FPS = 24.0


class Charades(VideoDatasetBuilder, skip_registration=True):
    """Charades v1: 157 action classes, several time-stamped actions per video."""

    name = "charades"
    LABEL_TYPE = "multi_hot"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "JPEG frames at 24 fps with multi-hot labels, time-stamped actions and duration."}
    BUILDER_CONFIGS = [VideoFolderConfig(name="default", fps=24.0, short_side=256,
                                         description="24 fps (the official RGB frames' rate), short side 256")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def extra_features(self):
        return {
            "actions": tfds.features.Sequence({
                "class_id": tfds.features.Scalar(tf.int32, doc="the action's class (the label's ids)"),
                "start": tfds.features.Scalar(tf.float32, doc="seconds"),
                "end": tfds.features.Scalar(tf.float32, doc="seconds"),
            }),
            "duration": tfds.features.Scalar(tf.float32, doc="seconds (the `length` column; -1: missing)"),
        }

    def _read_annotations(self, root: str) -> Annotations:
        classes_file = _find(root, CLASSES_FILE)
        if classes_file is None:
            raise FileNotFoundError(f"{CLASSES_FILE} not found in {root!r} (or its {', '.join(ANNOTATION_DIRS)}/); "
                                    f"expected the layout:\n{__doc__}")
        codes, classes = read_classes(os.path.join(root, classes_file))
        lists = {split: path for split, name in SPLIT_FILES.items() if (path := _find(root, name))}
        if not lists:
            raise FileNotFoundError(f"neither {' nor '.join(SPLIT_FILES.values())} is in {root!r}; "
                                    f"expected the layout:\n{__doc__}")
        found = layout.FileIndex.of(root)
        annotations = Annotations(classes=classes, splits=list(lists), entries=[])
        for split, source in lists.items():
            with open(os.path.join(root, source), newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
            for line, row in enumerate(rows, start=2):
                where = f"{source}:{line}"
                video_id = (row.get("id") or "").strip()
                if not video_id:
                    annotations.skipped.append({"path": where, "split": split, "reason": f"{where} has no id"})
                    continue
                try:
                    actions = parse_actions(row.get("actions") or "")
                except ValueError as e:
                    annotations.skipped.append({"path": video_id, "split": split, "reason": f"{where}: {e}"})
                    continue
                unknown = sorted({code for code, _, _ in actions if code not in codes})
                if unknown:
                    annotations.skipped.append({"path": video_id, "split": split, "reason":
                                                f"{where}: action class {', '.join(unknown)} is not in "
                                                f"{classes_file} ({len(codes)} classes)"})
                    continue
                path = source_fps = None
                if video_id in found.by_stem:
                    path, warning = _pick(found.by_stem[video_id])
                    if warning:
                        annotations.warnings.append({"path": path, "split": split, "warning": warning})
                    found.used.add(path)
                elif (path := _frame_folder(root, found, video_id)) is not None:
                    source_fps = FRAMES_FPS
                    found.used.add(path)
                extra = {
                    "actions": {"class_id": [codes[c] for c, _, _ in actions],
                                "start": [s for _, s, _ in actions], "end": [e for _, _, e in actions]},
                    "duration": _duration(row.get("length")),
                }
                annotations.entries.append(VideoEntry(
                    video_id=video_id, path=path, label=tuple(classes[codes[c]] for c, _, _ in actions),
                    split=split, source=where, source_fps=source_fps, extra=extra,
                    missing_reason=f"{where}: no video file is named {video_id}.* and there is no frame folder "
                                   f"{FRAMES_DIR}/{video_id}/"))
        annotations.ignored_files = found.ignored({classes_file, *lists.values()})
        return annotations


def read_classes(path: str) -> tuple[dict[str, int], list[str]]:
    """({code: id}, names in id order) from a `cNNN name` per line class file; a name is the text after
    the code (the code itself where there is none, or where two classes share a name)."""
    codes, names = {}, []
    for line, text in layout.read_lines(path):
        code, _, name = text.partition(" ")
        if code in codes:
            raise ValueError(f"{path}:{line}: class {code} is listed twice")
        codes[code] = len(names)
        names.append(name.strip() or code)
    repeated = {n for n in names if names.count(n) > 1}
    names = [f"{code} {n}" if n in repeated else n for code, n in zip(codes, names)]
    return codes, names


def parse_actions(text: str) -> list[tuple[str, float, float]]:
    """`c092 11.90 21.20;c147 0.00 12.60` → [(code, start s, end s)]; '' → []. Raises ValueError naming
    the malformed action."""
    actions = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        fields = part.split()
        try:
            code, start, end = fields[0], float(fields[1]), float(fields[2])
        except (ValueError, IndexError):
            code = None
        if code is None or len(fields) != 3:
            raise ValueError(f"action {part!r} is not `cNNN START END`")
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
            raise ValueError(f"action {part!r}: needs 0 <= START <= END seconds")
        actions.append((code, start, end))
    return actions


def _duration(text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return -1.0
    return value if math.isfinite(value) and value >= 0 else -1.0


def _find(root: str, name: str) -> str | None:
    """`name` in `root` or its ANNOTATION_DIRS, the first in that order (`layout.find_annotation`'s rule:
    any case, also after a prefix)."""
    stem, extension = os.path.splitext(name)
    paths = layout.find_annotation(root, ANNOTATION_DIRS, (stem.lower(),), extension.lower())
    return paths[0] if paths else None


def _frame_folder(root: str, found: layout.FileIndex, video_id: str) -> str | None:
    """The frame folder of a video: the one in Charades_v1_rgb/, else the first named `video_id`; an empty
    Charades_v1_rgb/<id>/ too (the build then reports it as unreadable)."""
    candidates = found.folders.get(video_id, [])
    official = f"{FRAMES_DIR}/{video_id}"
    if official in candidates or os.path.isdir(os.path.join(root, official)):
        return official
    return candidates[0] if candidates else None


def _pick(candidates: list[str]) -> tuple[str, str | None]:
    """The file of a video: the only one, else the one in Charades_v1_480/ (warned about either way)."""
    if len(candidates) == 1:
        return candidates[0], None
    preferred = [c for c in candidates if PREFERRED_VIDEO_DIR in c.split("/")[:-1]]
    chosen = (preferred or candidates)[0]
    return chosen, f"{len(candidates)} files match ({', '.join(candidates)}); used {chosen}"
