"""TFDS builder for any class-per-folder tree of videos.

Layout of the manual directory::

    DIR/<class name>/<video file>      one folder per class, any FFmpeg-readable video
    DIR/<split>.txt                    optional: relative paths (`class/file.mp4`), one per
                                       line; each file defines a split named after it.
                                       Without any, every video goes to `train`.

Each video is decoded once (PyAV), resampled to a constant frame rate, resized to
a short side and stored as a sequence of JPEG frames, together with what
sampling-before-decoding needs: label, video id, fps, frame count and frame
size. Files that cannot be used are skipped and listed, with the reason, in
`build_report.json` next to the dataset's files; a build never stops on one
bad video.
"""
from __future__ import annotations

import os

from stjax.data.builders.base import Annotations, VideoDatasetBuilder, VideoEntry, VideoFolderConfig
from stjax.data.builders import layout
from stjax.data.builders.layout import VIDEO_EXTENSIONS

__all__ = ["VIDEO_EXTENSIONS", "VideoFolder", "VideoFolderConfig", "scan_class_folders"]


def scan_class_folders(root: str) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Finds classes, split lists and videos under `root`.

    Returns:
      (class names sorted, {split: [relative video paths]}, ignored relative paths).
      Split entries that do not exist on disk are kept; the builder reports them.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"manual_dir {root!r} is not a directory")
    classes, videos, ignored = [], [], []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files = []
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
                if name.startswith("."):
                    continue
                if layout.is_video(name):
                    files.append(rel)
                else:
                    ignored.append(rel)
        if files:
            classes.append(entry.name)
            videos.extend(files)
    if not classes:
        raise FileNotFoundError(
            f"no class folders with video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) in {root!r}"
        )
    split_files = sorted(
        e.name for e in os.scandir(root) if e.is_file() and e.name.endswith(".txt") and not e.name.startswith(".")
    )
    splits = {}
    for name in split_files:
        with open(os.path.join(root, name)) as f:
            entries = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        splits[name[: -len(".txt")]] = entries
    if not splits:
        splits = {"train": videos}
    return classes, splits, ignored


class VideoFolder(VideoDatasetBuilder):
    """Videos in class-per-folder layout, stored as JPEG frames for clip sampling."""

    BUILDER_CONFIGS = [VideoFolderConfig(name="default", description="30 fps, short side 256")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _read_annotations(self, root: str) -> Annotations:
        classes, splits, ignored = scan_class_folders(root)
        class_set = set(classes)
        entries, skipped = [], []
        for split, paths in splits.items():
            for rel in paths:
                label = rel.split("/", 1)[0]
                outside = "/" not in rel or label not in class_set
                if outside and os.path.isfile(os.path.join(root, rel)):
                    skipped.append({"path": rel, "split": split,
                                    "reason": f"not inside a class folder (classes: {sorted(class_set)[:5]}...)"})
                    continue
                entries.append(VideoEntry(video_id=rel, path=rel, label=label, split=split, source=f"{split}.txt"))
        return Annotations(classes=classes, splits=list(splits), entries=entries, skipped=skipped,
                           ignored_files=ignored)
