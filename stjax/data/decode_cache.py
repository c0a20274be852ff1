"""A per-video cache of decode results, so that an interrupted build resumes where it stopped.

A build first decodes every listed video into this cache, then writes the TFDS
files from it (`base.VideoDatasetBuilder`). Each video's result — its JPEG
frames, or the reason it cannot be used — is one file under
`DATA_DIR/NAME/CONFIG/.partial/`, written under a temporary name and renamed
into place, so a file that exists is always complete. A file is named by a hash
of everything its content depends on: the video's path relative to the manual
dir, its size and modification time, the storage options and the builder
version; a video that changed, or a build with other options, never reuses a
result. The build deletes the folder once the dataset is written. It holds the
same JPEG frames as the finished dataset, so a build needs about twice the
dataset's final size on disk until it ends.

A video is a file or a frame folder (`video_io.decode_frame_folder`: numbered
images at the `source_fps` its layout gives); a folder is keyed by the names,
sizes and modification times of its images (`video_io.source_signature`). A
task may cover a time range of its video (`start_seconds` to `max_seconds`),
e.g. the part of a movie that several examples are cut from; the range is part
of the key, and `FrameReader` reads single frames of a result.

Files on other file systems than the local one go through `tf.io.gfile`, so the data dir may be any
path TFDS writes to (local disk, `gs://...`); the videos themselves must be local files (PyAV). The module
imports TensorFlow only for such paths: the decoding workers (spawned processes) start in about a second,
not the seven that importing TensorFlow takes.

File format (integers little-endian)::

    8 bytes    n: length of the header
    n bytes    header, UTF-8 JSON: {"path", "error", "warnings", "fps", "height",
               "width", "frame_sizes", "first_index"} and, for a task with motion vectors,
               "motion_shape" [N, h, w, 2] and "keyframes" (N booleans); `error` is null for a
               usable video; frame i is grid frame first_index + i of the video (0 when missing)
    the rest   the JPEG frames back to back, their sizes in header["frame_sizes"]; then, with
               motion vectors, the int8 motion array (C order)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import uuid

import numpy as np

from stjax.data import video_io

FORMAT_VERSION = 1
_LENGTH = struct.Struct("<Q")


@dataclasses.dataclass(frozen=True)
class DecodeTask:
    """One video to decode: its relative path (for reports), its file or frame folder, where its result
    goes, and the storage options (units as in `video_io.decode_video`); `source_fps` is the rate of a
    frame folder's images (None for a file), `start_seconds` where decoding starts."""

    rel: str
    path: str
    cache_file: str
    fps: float | None
    short_side: int | None
    jpeg_quality: int
    max_seconds: float | None
    source_fps: float | None = None
    start_seconds: float = 0.0
    motion_block: int | None = None  # also extract motion vectors on this grid (pixels; `motion_vectors`)


@dataclasses.dataclass
class DecodeResult:
    """A cached decode result; `jpeg_frames` is None when only the header was read. With motion vectors,
    `motion` (int8 [N, h, w, 2], quarter pixels per frame; None when only the header was read) and
    `keyframes` (bool [N]) belong to the same N frames."""

    rel: str
    error: str | None
    warnings: list[str]
    fps: float = 0.0
    height: int = 0
    width: int = 0
    frame_sizes: list[int] = dataclasses.field(default_factory=list)
    jpeg_frames: list[bytes] | None = None
    first_index: int = 0  # the grid index of the first frame (see `video_io.DecodedVideo`)
    motion: np.ndarray | None = None
    keyframes: np.ndarray | None = None
    motion_shape: list[int] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frame_sizes)


def cache_file(cache_dir: str, rel: str, path: str, storage: dict, version: str, source_fps: float | None = None,
               span: tuple[float, float | None] | None = None) -> str:
    """Where the result of decoding `path` (`rel` relative to the manual dir; a file or a frame folder of
    images at `source_fps`) with `storage` goes; `span`: (start_seconds, max_seconds) of a task that covers
    a time range (None: the whole video)."""
    fields = {"rel": rel, **video_io.source_signature(path), "storage": storage, "version": version,
              "format": FORMAT_VERSION}
    if source_fps is not None:
        fields["source_fps"] = source_fps
    if span is not None:
        fields["span"] = list(span)
    identity = json.dumps(fields, sort_keys=True)
    key = hashlib.sha256(identity.encode()).hexdigest()[:40]
    return f"{cache_dir.rstrip('/')}/{key[:2]}/{key}.frames"


def _is_local(path: str) -> bool:
    return "://" not in path


def exists(path: str) -> bool:
    if _is_local(path):
        return os.path.exists(path)
    import tensorflow as tf

    return tf.io.gfile.exists(path)


def _open(path: str, mode: str):
    if _is_local(path):
        return open(path, mode)
    import tensorflow as tf

    return tf.io.gfile.GFile(path, mode)


def write(path: str, result: DecodeResult) -> None:
    """Writes `result` to `path` atomically (temporary name, then rename)."""
    frames = result.jpeg_frames or []
    fields = {
        "path": result.rel, "error": result.error, "warnings": result.warnings, "fps": result.fps,
        "height": result.height, "width": result.width, "frame_sizes": [len(f) for f in frames],
        "first_index": result.first_index,
    }
    motion = None
    if result.motion is not None:
        motion = np.ascontiguousarray(result.motion, dtype=np.int8)
        fields.update(motion_shape=list(motion.shape), keyframes=[bool(k) for k in result.keyframes])
    header = json.dumps(fields).encode()
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    if _is_local(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    else:
        import tensorflow as tf

        tf.io.gfile.makedirs(os.path.dirname(path))
    with _open(tmp, "wb") as f:
        f.write(_LENGTH.pack(len(header)))
        f.write(header)
        for frame in frames:
            f.write(frame)
        if motion is not None:
            f.write(motion.tobytes())
    if _is_local(path):
        os.replace(tmp, path)
    else:
        import tensorflow as tf

        tf.io.gfile.rename(tmp, path, overwrite=True)


def read(path: str, frames: bool = True) -> DecodeResult:
    """Reads a result written by `write`; with `frames=False` only its header."""
    with _open(path, "rb") as f:
        (length,) = _LENGTH.unpack(f.read(_LENGTH.size))
        header = json.loads(f.read(length))
        jpegs = [f.read(size) for size in header["frame_sizes"]] if frames else None
        shape = header.get("motion_shape")
        motion = None
        if frames and shape is not None:
            motion = np.frombuffer(f.read(int(np.prod(shape))), np.int8).reshape(shape)
    return DecodeResult(
        rel=header["path"], error=header["error"], warnings=header["warnings"], fps=header["fps"],
        height=header["height"], width=header["width"], frame_sizes=header["frame_sizes"], jpeg_frames=jpegs,
        first_index=header.get("first_index", 0), motion=motion, motion_shape=shape,
        keyframes=None if shape is None else np.asarray(header["keyframes"], bool),
    )


class FrameReader:
    """Single frames of one cached result, read by seeking: the header is read once, so cutting many
    examples out of one long video reads each example's frames only."""

    def __init__(self, path: str):
        self.path = path
        with _open(path, "rb") as f:
            (length,) = _LENGTH.unpack(f.read(_LENGTH.size))
            self._start = _LENGTH.size + length
            header = json.loads(f.read(length))
        self.header = DecodeResult(
            rel=header["path"], error=header["error"], warnings=header["warnings"], fps=header["fps"],
            height=header["height"], width=header["width"], frame_sizes=header["frame_sizes"],
            first_index=header.get("first_index", 0))
        self._offsets = [0]
        for size in header["frame_sizes"]:
            self._offsets.append(self._offsets[-1] + size)

    def frames(self, positions: list[int]) -> list[bytes]:
        """The JPEG bytes of the frames at `positions` (indices into the result's frames; repeats allowed)."""
        read: dict[int, bytes] = {}
        with _open(self.path, "rb") as f:
            for i in sorted(set(positions)):
                f.seek(self._start + self._offsets[i])
                read[i] = f.read(self._offsets[i + 1] - self._offsets[i])
        return [read[i] for i in positions]


def decode(task: DecodeTask) -> DecodeResult:
    """Decodes `task`'s video (and with `motion_block`, its motion vectors on the same frames, a second pass
    over the compressed stream); a video that cannot be used gives a result with `error` set."""
    try:
        video = video_io.decode(task.path, source_fps=task.source_fps, fps=task.fps, short_side=task.short_side,
                                jpeg_quality=task.jpeg_quality, max_seconds=task.max_seconds,
                                start_seconds=task.start_seconds)
        motion = keyframes = None
        warnings = list(video.warnings)
        if task.motion_block is not None:
            motion, keyframes, notes = _motion(task, video)
            warnings += notes
    except video_io.VideoReadError as e:
        return DecodeResult(task.rel, str(e), [])
    except Exception as e:  # noqa: BLE001 — one bad file must never stop a build.
        return DecodeResult(task.rel, f"unexpected {type(e).__name__}: {e}", [])
    return DecodeResult(
        task.rel, None, warnings, fps=video.fps, height=video.height, width=video.width,
        frame_sizes=[len(f) for f in video.jpeg_frames], jpeg_frames=video.jpeg_frames, first_index=video.first_index,
        motion=motion, keyframes=keyframes, motion_shape=None if motion is None else list(motion.shape),
    )


def _motion(task: DecodeTask, video: video_io.DecodedVideo):
    """(motion int8 [N, h, w, 2], keyframes bool [N], warnings) of `video`'s N stored frames, read from the
    compressed stream of `task`'s file (`motion_vectors`)."""
    from stjax.data import motion_vectors

    if task.source_fps is not None:
        raise video_io.VideoReadError("a frame folder has no compressed stream, so no motion vectors; "
                                      "build without motion vectors, or from the video files")
    if task.start_seconds > 0:
        raise video_io.VideoReadError("motion vectors are extracted for whole videos only, not time ranges")
    stream = motion_vectors.read_stream(task.path, block=task.motion_block, max_seconds=task.max_seconds)
    motion, keyframes = motion_vectors.on_grid(stream, video.fps, video.num_frames, (video.height, video.width))
    return motion, keyframes, [f"motion vectors: {w}" for w in stream.warnings]


def decode_into_cache(task: DecodeTask) -> DecodeResult:
    """Worker: decodes `task`, stores the result in its cache file, returns the header only."""
    result = decode(task)
    write(task.cache_file, result)
    return dataclasses.replace(result, jpeg_frames=None, motion=None)


def load_or_decode(task: DecodeTask) -> DecodeResult:
    """The cached result of `task` with its frames, decoding (and caching) it first if needed."""
    if exists(task.cache_file):
        return read(task.cache_file)
    result = decode(task)
    write(task.cache_file, result)
    return result
