"""TFDS builder for any folder of videos with a list of classes per video (multi-hot labels).

Layout of the manual directory::

    DIR/classes.txt          class names, one per line, in label-id order
    DIR/<split>.csv          one split per file (`train.csv`, `test.csv`, ...): a header row
                             `path,labels`, then one row per video: its path relative to DIR and
                             its classes separated by ';' (empty: none of the classes)
    DIR/**/<video file>      the videos, anywhere below DIR

Stored like `video_folder` (JPEG frames at a constant rate); the `label` feature holds each video's
class ids and batches carry them as a multi-hot vector [C] (`stjax.data.targets`), which the linear
probe and fine-tuning score with sigmoid losses and mAP. Rows naming a class outside `classes.txt`, a
file that does not exist or a video listed twice in a split are skipped and listed in the build report.
"""
from __future__ import annotations

import csv
import os

from stjax.data.builders import layout
from stjax.data.builders.base import Annotations, VideoDatasetBuilder, VideoEntry, VideoFolderConfig

CLASSES_FILE = "classes.txt"
COLUMNS = ("path", "labels")
SEPARATOR = ";"


class VideoMultilabel(VideoDatasetBuilder):
    """Videos with any number of classes each, stored as JPEG frames for clip sampling."""

    LABEL_TYPE = "multi_hot"
    BUILDER_CONFIGS = [VideoFolderConfig(name="default", description="30 fps, short side 256")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _read_annotations(self, root: str) -> Annotations:
        classes_path = os.path.join(root, CLASSES_FILE)
        if not os.path.isfile(classes_path):
            raise FileNotFoundError(f"{classes_path} not found: the class names, one per line, in label-id order")
        classes = [name for _, name in layout.read_lines(classes_path)]
        if len(set(classes)) != len(classes):
            repeated = sorted({c for c in classes if classes.count(c) > 1})
            raise ValueError(f"{classes_path} lists classes more than once: {', '.join(repeated[:5])}")
        split_files = sorted(e.name for e in os.scandir(root)
                             if e.is_file() and e.name.endswith(".csv") and not e.name.startswith("."))
        if not split_files:
            raise FileNotFoundError(f"no split file (<split>.csv with columns {', '.join(COLUMNS)}) in {root!r}")
        entries, splits, listed = [], [], set()
        for name in split_files:
            split = name[: -len(".csv")]
            splits.append(split)
            with open(os.path.join(root, name), newline="") as f:
                rows = list(csv.reader(f))
            if not rows or tuple(c.strip() for c in rows[0][:2]) != COLUMNS:
                raise ValueError(f"{os.path.join(root, name)}: the first row must be the header "
                                 f"{','.join(COLUMNS)}; got {rows[0] if rows else 'an empty file'}")
            for line, row in enumerate(rows[1:], start=2):
                if not row or not row[0].strip():
                    continue
                rel = row[0].strip().replace(os.sep, "/")
                labels = tuple(x.strip() for x in (row[1] if len(row) > 1 else "").split(SEPARATOR) if x.strip())
                exists = os.path.isfile(os.path.join(root, rel))
                listed.add(rel)
                entries.append(VideoEntry(video_id=rel, path=rel if exists else None, label=labels, split=split,
                                          source=f"{name}:{line}",
                                          missing_reason=None if exists else f"{name}:{line}: {rel} not found"))
        ignored = [p for p in layout.walk_files(root)
                   if p not in listed and p != CLASSES_FILE and p not in split_files]
        return Annotations(classes=classes, splits=splits, entries=entries, ignored_files=ignored)
