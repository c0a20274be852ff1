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

import collections
import dataclasses
import multiprocessing
import os
from typing import Iterator

import tensorflow as tf
import tqdm
import tensorflow_datasets as tfds

from stjax.data import video_io

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv", ".mpg", ".mpeg", ".flv", ".ogv", ".3gp", ".wmv"}
)


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
    """Storage options, recorded in the dataset's metadata.

    Attributes:
      fps: stored frames per second (None: each video's own average rate).
      short_side: stored short side in pixels (None: source size).
      jpeg_quality: JPEG quality of the stored frames, 1..100.
      max_seconds: keep at most this many seconds of each video (None: all).
    """

    fps: float | None = 30.0
    short_side: int | None = 256
    jpeg_quality: int = 90
    max_seconds: float | None = None

    def __post_init__(self):
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0 or None, got {self.fps}")
        if self.short_side is not None and not self.short_side >= 1:
            raise ValueError(f"short_side must be >= 1 or None, got {self.short_side}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    def storage_metadata(self) -> dict:
        return {
            "fps": self.fps, "short_side": self.short_side,
            "jpeg_quality": self.jpeg_quality, "max_seconds": self.max_seconds,
        }


@dataclasses.dataclass
class BuildReport:
    """What a build wrote and skipped; saved as JSON next to the dataset."""

    written: dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())
    skipped: list[dict] = dataclasses.field(default_factory=list)
    warnings: list[dict] = dataclasses.field(default_factory=list)
    ignored_files: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "written": sum(self.written.values()),
            "written_per_split": dict(self.written),
            "skipped": len(self.skipped),
            "skipped_files": self.skipped,
            "warnings": self.warnings,
            "ignored_files": self.ignored_files,
        }


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
                if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
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


def _decode_task(task):
    """Worker: (relative path, absolute path, config fields) → (relative path, result or error)."""
    rel, path, fps, short_side, quality, max_seconds = task
    try:
        video = video_io.decode_video(path, fps=fps, short_side=short_side,
                                      jpeg_quality=quality, max_seconds=max_seconds)
    except video_io.VideoReadError as e:
        return rel, None, str(e)
    except Exception as e:  # noqa: BLE001 — one bad file must never stop a build.
        return rel, None, f"unexpected {type(e).__name__}: {e}"
    return rel, video, None


class VideoFolder(tfds.core.GeneratorBasedBuilder):
    """Videos in class-per-folder layout, stored as JPEG frames for clip sampling."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "JPEG frames at a constant rate, with label, video id, fps and size."}
    BUILDER_CONFIGS = [VideoFolderConfig(name="default", description="30 fps, short side 256")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def __init__(self, *, manual_dir: str | None = None, workers: int | None = None, **kwargs):
        """`manual_dir` is needed to build (it names the classes); loading needs nothing."""
        self._scan_root = os.fspath(manual_dir) if manual_dir else None
        self._scan = scan_class_folders(self._scan_root) if self._scan_root else None
        self._workers = workers or os.cpu_count() or 1
        self.report = BuildReport()
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        if self._scan is not None:
            label = tfds.features.ClassLabel(names=self._scan[0])
        else:  # names are restored from the prepared dataset's files
            label = tfds.features.ClassLabel()
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "frames": tfds.features.Sequence(
                    tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
                ),
                "label": label,
                "video_id": tfds.features.Text(),
                "fps": tfds.features.Scalar(tf.float32, doc="stored frames per second"),
                "num_frames": tfds.features.Scalar(tf.int32),
                "height": tfds.features.Scalar(tf.int32, doc="stored frame height in pixels"),
                "width": tfds.features.Scalar(tf.int32, doc="stored frame width in pixels"),
            }),
            metadata=tfds.core.MetadataDict(storage=self.builder_config.storage_metadata()),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        if self._scan is None:
            raise ValueError(
                f"building {self.name} needs the video folder: pass manual_dir "
                "(`python -m stjax.data.build --dataset NAME --manual_dir DIR`)"
            )
        self.report = BuildReport(ignored_files=list(self._scan[2]))
        return {split: self._generate_examples(split, paths) for split, paths in self._scan[1].items()}

    def _generate_examples(self, split: str, relative_paths: list[str]) -> Iterator[tuple[str, dict]]:
        classes = set(self._scan[0])
        cfg = self.builder_config
        tasks, seen = [], set()
        for rel in relative_paths:
            path = os.path.join(self._scan_root, rel)
            cls = rel.split("/", 1)[0]
            reason = None
            if rel in seen:
                reason = f"listed twice in {split}.txt"
            elif not os.path.isfile(path):
                reason = f"listed in {split}.txt but not found"
            elif cls not in classes or "/" not in rel:
                reason = f"not inside a class folder (classes: {sorted(classes)[:5]}...)"
            seen.add(rel)
            if reason:
                self.report.skipped.append({"path": rel, "split": split, "reason": reason})
            else:
                tasks.append((rel, path, cfg.fps, cfg.short_side, cfg.jpeg_quality, cfg.max_seconds))

        results = _map_in_workers(_decode_task, tasks, self._workers)
        for rel, video, error in tqdm.tqdm(results, total=len(tasks), desc=f"{self.name} {split}",
                                           unit="video", dynamic_ncols=True):
            if error is not None:
                self.report.skipped.append({"path": rel, "split": split, "reason": error})
                continue
            for warning in video.warnings:
                self.report.warnings.append({"path": rel, "split": split, "warning": warning})
            self.report.written[split] += 1
            yield rel, {
                "frames": video.jpeg_frames,
                "label": rel.split("/", 1)[0],
                "video_id": rel,
                "fps": video.fps,
                "num_frames": video.num_frames,
                "height": video.height,
                "width": video.width,
            }


def _map_in_workers(fn, tasks, workers):
    """Ordered map over `tasks`, in worker processes when workers > 1."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    # spawn: the parent has TensorFlow threads running, which fork does not survive.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(fn, tasks, chunksize=4)
