"""Something-Something v2 from its JSON annotations.

Layout of the manual directory (as the official archives unpack)::

    DIR/labels.json         {"<class name>": "<id>", ...}, ids 0..173
    DIR/train.json          [{"id": "78687", "label": "...", "template": "Holding [something] next to
    DIR/validation.json       [something]", "placeholders": [...]}, ...]
    DIR/test.json           [{"id": "1420"}, ...] (no labels: stored as label -1)
        (also in DIR/labels/ or DIR/annotations/, and with the official prefix:
        something-something-v2-labels.json, something-something-v2-train.json, ...)
    DIR/**/<id>.webm        the videos, anywhere below DIR (officially
                            DIR/20bn-something-something-v2/), any FFmpeg-readable extension

A video's class is its `template` with the square brackets removed (`Holding
[something] next to [something]` → `Holding something next to something`), the
name `labels.json` maps to the label id; the `label` field (the template filled
with the actual objects) is not a class. Splits: `train`, `validation`, `test`,
one per JSON file present. Video ids are the `id`s.

Stored by default at the source's 12 frames/s and 240-pixel short side.
"""
from __future__ import annotations

import json
import os

from stjax.data.builders import layout
from stjax.data.builders.base import Annotations, VideoDatasetBuilder, VideoEntry, VideoFolderConfig

ANNOTATION_DIRS = ("labels", "annotations")
SPLITS = ("train", "validation", "test")


class Ssv2(VideoDatasetBuilder, skip_registration=True):
    """Something-Something v2 (174 classes), stored as JPEG frames for clip sampling."""

    name = "ssv2"
    BUILDER_CONFIGS = [VideoFolderConfig(name="default", fps=12.0, short_side=240,
                                         description="12 fps, short side 240 (the source's)")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _read_annotations(self, root: str) -> Annotations:
        labels_file = _find_json(root, "labels", required=True)
        classes = read_labels(os.path.join(root, labels_file))
        lists = {split: path for split in SPLITS if (path := _find_json(root, split))}
        if not lists:
            raise FileNotFoundError(f"no train.json, validation.json or test.json in {root!r}; "
                                    f"expected the layout:\n{__doc__}")
        found = layout.FileIndex.of(root)
        annotations = Annotations(classes=classes, splits=list(lists), entries=[])
        for split, source in lists.items():
            with open(os.path.join(root, source), encoding="utf-8") as f:
                items = json.load(f)
            for n, item in enumerate(items):
                video_id = str(item.get("id", "")).strip() if isinstance(item, dict) else ""
                if not video_id:
                    annotations.skipped.append({"path": f"{source}[{n}]", "split": split,
                                                "reason": f"item {n} of {source} has no id: {item!r}"})
                    continue
                label = None
                if "template" in item:
                    label = normalise_template(item["template"])
                elif split != "test":
                    annotations.skipped.append({"path": video_id, "split": split,
                                                "reason": f"item {n} of {source} has no template (class)"})
                    continue
                path = None
                if video_id in found.by_stem:
                    path, warning = layout.pick_file(found.by_stem[video_id], split)
                    if warning:
                        annotations.warnings.append({"path": path, "split": split, "warning": warning})
                found.used.add(path)
                annotations.entries.append(VideoEntry(
                    video_id=video_id, path=path, label=label, split=split, source=source,
                    missing_reason=f"listed in {source} but no video file is named {video_id}.*",
                ))
        annotations.ignored_files = found.ignored({labels_file, *lists.values()})
        return annotations


def normalise_template(template: str) -> str:
    """The class name of a template: `Putting [something] on [something]` → `Putting something on something`."""
    return template.replace("[", "").replace("]", "")


def read_labels(path: str) -> list[str]:
    """Class names in label-id order from labels.json ({name: id as string or int})."""
    with open(path, encoding="utf-8") as f:
        by_name = json.load(f)
    try:
        by_id = {int(i): name for name, i in by_name.items()}
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"{path}: expected {{\"<class name>\": \"<id>\", ...}}") from None
    if sorted(by_id) != list(range(len(by_name))):
        raise ValueError(f"{path}: label ids must be 0..{len(by_name) - 1}, each once")
    return [by_id[i] for i in range(len(by_id))]


def _find_json(root: str, kind: str, required: bool = False) -> str | None:
    paths = layout.find_annotation(root, ANNOTATION_DIRS, (kind,), ".json")
    if len(paths) > 1:
        raise ValueError(f"several Something-Something {kind} files in {root!r}: {', '.join(paths)}; keep one")
    if not paths and required:
        raise FileNotFoundError(f"no {kind}.json in {root!r} or its {'/, '.join(ANNOTATION_DIRS)}/ folders; "
                                f"expected the layout:\n{__doc__}")
    return paths[0] if paths else None
