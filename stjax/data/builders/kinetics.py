"""Kinetics-400 / -600 / -700 from the official annotation CSVs and the videos downloaded for them.

Layout of the manual directory::

    DIR/train.csv, DIR/validate.csv, DIR/test.csv
        (or in DIR/annotations/; any prefix works: kinetics_400_train.csv, k700-2020_val.csv)
        header `label,youtube_id,time_start,time_end,split` (time in whole seconds); a test
        CSV without the `label` column, or with empty labels, gives unlabelled examples (-1)
    DIR/**/<youtube_id>_<start:06d>_<end:06d>.<ext>   or   DIR/**/<youtube_id>.<ext>
        videos anywhere below DIR (per-split and/or per-class subfolders are fine), any
        FFmpeg-readable extension, e.g. train/abseiling/-3B32lodo2M_000059_000069.mp4

Splits: `train`, `validation` (validate.csv, val.csv or validation.csv) and
`test`, one per CSV present. Class names are the sorted set of labels in the
CSVs, so label ids do not depend on which videos could be downloaded. Listed
videos without a file (usually many: videos vanish from YouTube) are skipped
and counted as `missing` in the build report; video files no CSV lists are
named in its `ignored_files`. A file named `<youtube_id>.<ext>` is used when
there is none with the time suffix. When several files match one row, the one
inside a folder named after the split is used, else the first, with a
warning. Video ids are `<youtube_id>_<start:06d>_<end:06d>` whatever the file
names.
"""
from __future__ import annotations

import csv
import os

from stjax.data.builders import layout
from stjax.data.builders.base import Annotations, VideoDatasetBuilder, VideoEntry, VideoFolderConfig

CSV_SPLITS = {"train": ("train",), "validation": ("validate", "validation", "val"), "test": ("test",)}
REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end")


class Kinetics(VideoDatasetBuilder, skip_registration=True):
    """Kinetics (the release is set by subclasses), stored as JPEG frames for clip sampling."""

    NUM_CLASSES: int
    BUILDER_CONFIGS = [VideoFolderConfig(name="default", description="30 fps, short side 256")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _read_annotations(self, root: str) -> Annotations:
        csvs = find_csvs(root)
        rows = {split: read_csv(os.path.join(root, path)) for split, path in csvs.items()}
        classes = sorted({r["label"] for split_rows in rows.values() for r in split_rows if r["label"]})
        if not classes:
            raise ValueError(f"the Kinetics CSVs in {root!r} ({', '.join(csvs.values())}) name no labels")
        found = layout.FileIndex.of(root)
        annotations = Annotations(classes=classes, splits=list(csvs), entries=[])
        if len(classes) != self.NUM_CLASSES:
            annotations.warnings.append({"path": None, "split": None, "warning": (
                f"the CSVs name {len(classes)} classes, {self.name} has {self.NUM_CLASSES}: "
                "are they the right release?")})
        for split, source in csvs.items():
            for row in rows[split]:
                if row["error"]:
                    annotations.skipped.append({"path": f"{source}:{row['line']}", "split": split,
                                                "reason": row["error"]})
                    continue
                entry = self._entry(row, split, source, found.by_stem, annotations)
                found.used.add(entry.path)
                annotations.entries.append(entry)
        annotations.ignored_files = found.ignored(csvs.values())
        return annotations

    def _entry(self, row, split, source, index, annotations) -> VideoEntry:
        video_id = f"{row['youtube_id']}_{row['time_start']:06d}_{row['time_end']:06d}"
        candidates = index.get(video_id) or index.get(row["youtube_id"])
        path = None
        if candidates:
            path, warning = layout.pick_file(candidates, split)
            if warning:
                annotations.warnings.append({"path": path, "split": split, "warning": warning})
        return VideoEntry(
            video_id=video_id, path=path, label=row["label"], split=split, source=source,
            missing_reason=f"listed in {source} but no video file is named {video_id}.* or {row['youtube_id']}.*",
        )


class Kinetics400(Kinetics, skip_registration=True):
    """Kinetics-400 (400 classes), stored as JPEG frames for clip sampling."""

    name = "kinetics400"
    NUM_CLASSES = 400


class Kinetics600(Kinetics, skip_registration=True):
    """Kinetics-600 (600 classes), stored as JPEG frames for clip sampling."""

    name = "kinetics600"
    NUM_CLASSES = 600


class Kinetics700(Kinetics, skip_registration=True):
    """Kinetics-700 (700 classes), stored as JPEG frames for clip sampling."""

    name = "kinetics700"
    NUM_CLASSES = 700


def find_csvs(root: str) -> dict[str, str]:
    """{split: CSV path relative to `root`} for the splits whose CSV is present."""
    found = {}
    for split, suffixes in CSV_SPLITS.items():
        paths = layout.find_annotation(root, ("annotations",), suffixes, ".csv")
        if len(paths) > 1:
            raise ValueError(f"several Kinetics {split} CSVs in {root!r}: {', '.join(paths)}; keep one")
        if paths:
            found[split] = paths[0]
    if not found:
        raise FileNotFoundError(
            f"no Kinetics annotation CSV in {root!r} or {os.path.join(root, 'annotations')!r}; "
            "expected train.csv, validate.csv and/or test.csv (any prefix, e.g. kinetics_400_train.csv)"
        )
    return found


def read_csv(path: str) -> list[dict]:
    """Rows of an official Kinetics CSV as {line, youtube_id, time_start, time_end (int
    seconds), label (None if absent or empty), error (why the row is unusable, or None)}."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)}; the header must include "
                             f"{','.join(REQUIRED_COLUMNS)} (and label, except in a test CSV)")
        reader.fieldnames = columns
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {"line": line, "youtube_id": (raw["youtube_id"] or "").strip(),
                   "label": (raw.get("label") or "").strip() or None, "error": None}
            try:
                row["time_start"], row["time_end"] = (int(float(raw[k])) for k in ("time_start", "time_end"))
            except (TypeError, ValueError):
                row["error"] = f"line {line}: time_start/time_end are not numbers: {raw}"
            if not row["youtube_id"]:
                row["error"] = f"line {line}: empty youtube_id"
            rows.append(row)
    return rows
