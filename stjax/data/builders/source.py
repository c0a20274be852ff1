"""What a build read from its manual dir, so that a later build or first use notices when it changed.

A fingerprint lists the files a builder can read under the manual dir (videos, and the split and
annotation files: `.txt`, `.csv`, `.json`, `.jsonl`, `.tsv`, `.pbtxt`; hidden files excluded), each with its
size and modification time, plus the SHA-256 of each annotation file; and each frame folder (`layout.walk`)
as one entry: its images' total size, newest modification time and a digest of their names, sizes and
modification times (`video_io.source_signature`), so that an image added, removed or rewritten is a change
of that video. `stjax.data.build` saves it as
`SOURCE_NAME` next to the dataset's files, together with which file each written video came from
(`videos`: {split: {video id: relative path}}), so a rebuild can reuse the frames of the videos that
did not change. A video counts as changed when its size or modification time differs (the rule of the
decode cache; a frame folder: its listing digest too); an annotation file when its contents differ.

Files go through `tf.io.gfile` (the data dir may be any TFDS path); the manual dir is local.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os

import tensorflow as tf

from stjax.data import video_io
from stjax.data.builders import layout

SOURCE_NAME = "source.json.gz"
FORMAT_VERSION = 1
ANNOTATION_EXTENSIONS = (".txt", ".csv", ".json", ".jsonl", ".tsv", ".pbtxt")


def is_source_file(rel: str) -> bool:
    """Whether a builder may read `rel` (a video, or a split / annotation file)."""
    name = rel.rsplit("/", 1)[-1]
    return layout.is_video(name) or name.lower().endswith(ANNOTATION_EXTENSIONS)


def fingerprint(root: str) -> dict[str, list]:
    """{relative path: [size, mtime_ns, sha256 or None]} of the source files under `root`; a frame folder's
    entry holds its images' total size, newest mtime_ns and listing digest."""
    files = {}
    rels, folders = layout.walk(root)
    for rel in folders:
        signature = video_io.source_signature(os.path.join(root, rel))
        files[rel] = [signature["size"], signature["mtime_ns"], f"frames:{signature['listing']}"]
    for rel in rels:
        if not is_source_file(rel):
            continue
        path = os.path.join(root, rel)
        stat = os.stat(path)
        digest = None
        if not layout.is_video(rel):
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        files[rel] = [stat.st_size, stat.st_mtime_ns, digest]
    return files


@dataclasses.dataclass(frozen=True)
class Changes:
    """Source files added, removed or modified since a fingerprint was taken (relative paths, sorted)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def describe(self, limit: int = 4) -> str:
        """'2 added (a/x.mp4, a/y.mp4), 1 modified (test.txt)'."""
        parts = []
        for what, paths in (("added", self.added), ("removed", self.removed), ("modified", self.modified)):
            if paths:
                shown = ", ".join(paths[:limit]) + (f", ... {len(paths) - limit} more" if len(paths) > limit else "")
                parts.append(f"{len(paths)} {what} ({shown})")
        return ", ".join(parts) or "no change"

    def summary(self) -> dict[str, int]:
        return {"added": len(self.added), "removed": len(self.removed), "modified": len(self.modified)}


def compare(old: dict[str, list], new: dict[str, list]) -> Changes:
    """What changed from fingerprint `old` to `new`: videos by size and modification time, annotation files
    by contents."""
    def differs(a, b):
        return a[2] != b[2] if a[2] is not None and b[2] is not None else a[:2] != b[:2]

    return Changes(added=tuple(sorted(set(new) - set(old))), removed=tuple(sorted(set(old) - set(new))),
                   modified=tuple(sorted(k for k in set(old) & set(new) if differs(old[k], new[k]))))


def unchanged(old: dict[str, list], new: dict[str, list]) -> set[str]:
    """Paths present in both fingerprints with the same size and modification time (and digest, where both
    have one: a frame folder's listing)."""
    return {k for k in set(old) & set(new)
            if old[k][:2] == new[k][:2] and (old[k][2] is None or new[k][2] is None or old[k][2] == new[k][2])}


def save(dataset_dir: str, manual_dir: str, files: dict[str, list], videos: dict[str, dict[str, str]],
         frame_rates: dict[str, float] | None = None) -> str:
    """Writes the source record of a finished build into `dataset_dir`; returns its path. `frame_rates`:
    {path: source_fps} of the frame folders among `videos` (a rebuild decodes them at that rate)."""
    record = {"format": FORMAT_VERSION, "manual_dir": os.path.abspath(manual_dir), "files": files,
              "videos": videos, "frame_rates": frame_rates or {}}
    path = os.path.join(dataset_dir, SOURCE_NAME)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(gzip.compress(json.dumps(record, separators=(",", ":")).encode()))
    return path


def load(dataset_dir: str) -> dict | None:
    """The source record of the build in `dataset_dir` ({"manual_dir", "files", "videos", "frame_rates"}), or
    None for a build made before source records were kept."""
    path = os.path.join(dataset_dir, SOURCE_NAME)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        return json.loads(gzip.decompress(f.read()))
