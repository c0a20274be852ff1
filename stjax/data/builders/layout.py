"""Finding annotation files and videos in the trees the standard datasets come in.

A video is a file (`VIDEO_EXTENSIONS`) or a frame folder: a directory holding numbered JPEG/PNG images
(`video_io.frame_number`, e.g. `Charades_v1_rgb/46GP8/46GP8-000001.jpg`), which the walks here treat as one
unit: its images are not listed as files.
"""
from __future__ import annotations

import dataclasses
import os

from stjax.data import video_io

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv", ".mpg", ".mpeg", ".flv", ".ogv", ".3gp", ".wmv"}
)

# Folder names that mark a video as belonging to a split, for layouts with per-split subfolders.
SPLIT_FOLDERS = {
    "train": {"train", "training"},
    "validation": {"val", "valid", "validate", "validation"},
    "test": {"test", "testing"},
}


def is_video(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def walk(root: str) -> tuple[list[str], list[str]]:
    """(files, frame folders) under `root`, as sorted '/'-separated paths relative to it: every non-hidden
    file except the numbered images of frame folders, and every folder that directly holds such images."""
    found, folders = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        frames = {name for name in filenames if video_io.frame_number(name) is not None}
        if frames and prefix:
            folders.append(rel_dir)
        else:
            frames = set()
        for name in sorted(filenames):
            if not name.startswith(".") and name not in frames:
                found.append(prefix + name)
    return found, folders


def walk_files(root: str) -> list[str]:
    """Every non-hidden file under `root` but the images of frame folders (`walk`), as sorted '/'-separated
    paths relative to it."""
    return walk(root)[0]


def index_by_stem(paths: list[str]) -> dict[str, list[str]]:
    """{file name without extension: [paths]} for the video files among `paths`."""
    index: dict[str, list[str]] = {}
    for path in paths:
        name = path.rsplit("/", 1)[-1]
        if is_video(name):
            index.setdefault(os.path.splitext(name)[0], []).append(path)
    return index


@dataclasses.dataclass
class FileIndex:
    """The files under a manual dir (`files`), its videos by file name without extension (`by_stem`), its
    frame folders by folder name (`folders`), and the paths annotations used (`used`): what a layout's
    reader looks videos up in, and what it then reports as ignored."""

    files: list[str]
    by_stem: dict[str, list[str]]
    used: set = dataclasses.field(default_factory=set)
    folders: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, root: str) -> "FileIndex":
        files, frame_dirs = walk(root)
        folders: dict[str, list[str]] = {}
        for rel in frame_dirs:
            folders.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
        return cls(files, index_by_stem(files), folders=folders)

    def ignored(self, annotation_files) -> list[str]:
        """The files that neither an entry nor an annotation file uses, and the unused frame folders
        (`DIR/`)."""
        skip = self.used | set(annotation_files)
        unused = [f"{rel}/" for paths in self.folders.values() for rel in paths if rel not in skip]
        return [f for f in self.files if f not in skip] + sorted(unused)


def pick_file(candidates: list[str], split: str) -> tuple[str, str | None]:
    """One of several files that match a listed video: the one inside a folder named after
    `split` (e.g. `val/`), else the first. Returns (path, warning or None)."""
    if len(candidates) == 1:
        return candidates[0], None
    names = SPLIT_FOLDERS.get(split, {split})
    in_split = [c for c in candidates if names & {p.lower() for p in c.split("/")[:-1]}]
    chosen = (in_split or candidates)[0]
    if len(in_split) == 1:
        return chosen, None
    return chosen, f"{len(candidates)} files match ({', '.join(candidates)}); used {chosen}"


def find_annotation(root: str, subdirs: tuple[str, ...], suffixes: tuple[str, ...],
                    extension: str) -> list[str]:
    """Annotation files in `root` or one of its `subdirs` whose name, less `extension`, is one of
    `suffixes` or ends with one after a separator (`_`, `-`, `.`, space): e.g. suffix `train`
    matches `train.csv` and `kinetics_400_train.csv`. Returns paths relative to `root`, sorted."""
    found = []
    for sub in ("",) + subdirs:
        folder = os.path.join(root, sub)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            lower = name.lower()
            if not lower.endswith(extension) or not os.path.isfile(os.path.join(folder, name)):
                continue
            stem = lower[: -len(extension)]
            if any(stem == s or (stem.endswith(s) and stem[-len(s) - 1] in "_-. ") for s in suffixes):
                found.append(f"{sub}/{name}" if sub else name)
    return found


def read_lines(path: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-empty lines of a text annotation file."""
    with open(path, encoding="utf-8-sig") as f:
        return [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]
