"""Decoding videos into JPEG frames on a constant-rate grid (PyAV).

Used once, at build time: a video is decoded, resampled onto a uniform time
grid (so variable-frame-rate files get regular frame indices), resized to a
target short side and stored as JPEG frames. Training then samples frame
indices and decodes only those JPEGs.

A video is a file (`decode_video`) or a frame folder (`decode_frame_folder`): a
directory of numbered JPEG/PNG images (`46GP8-000001.jpg`, `clip_000002.png`,
...), as datasets ship extracted frames. A folder has no timestamps: image n
shows time (n − 1) / source_fps (or n / source_fps for a folder numbered from
0), with the rate its layout states. `decode` takes either.

Nothing here imports TensorFlow or JAX.
"""
from __future__ import annotations

import bisect
import dataclasses
import hashlib
import io
import math
import os

import av
import numpy as np
from PIL import Image


class VideoReadError(Exception):
    """A file that yields no usable frames; the message says why."""


@dataclasses.dataclass
class DecodedVideo:
    """A video stored as JPEG frames on a uniform grid of `fps` frames per second."""

    jpeg_frames: list[bytes]
    fps: float
    height: int
    width: int
    source_height: int
    source_width: int
    # Non-fatal problems, e.g. a truncated file whose decodable prefix was kept.
    warnings: list[str] = dataclasses.field(default_factory=list)
    # The grid index of jpeg_frames[0]: frame i shows time (first_index + i) / fps from the video's start
    # (0 unless decoding started at `start_seconds` > 0).
    first_index: int = 0

    @property
    def num_frames(self) -> int:
        return len(self.jpeg_frames)

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.fps


def resized_shape(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) with the shorter side scaled to `short_side`, aspect kept.

    Sizes are rounded to the nearest integer (at least 1); `None` keeps the size.
    A 97×61 frame at short side 32 becomes 51×32; portrait and landscape alike.
    """
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# Seek into a file (instead of decoding from its start) when decoding starts this many seconds in.
SEEK_AFTER_SECONDS = 5.0
# Tolerance of the output grid for timestamps rounded to milliseconds (see `_emit_until`).
_TIME_TOLERANCE = 1e-3


def grid_index(seconds: float, fps: float) -> int:
    """The index of the first frame of a `fps` grid at or after `seconds` (k / fps >= seconds, to 1e-6 frames)."""
    return math.ceil(seconds * fps - 1e-6)


def decode(path: str | os.PathLike, source_fps: float | None = None, **options) -> DecodedVideo:
    """`decode_frame_folder` for a directory (its images' rate `source_fps`), else `decode_video`;
    `options` as theirs."""
    if os.path.isdir(path):
        return decode_frame_folder(path, source_fps, **options)
    return decode_video(path, **options)


def decode_video(
    path: str | os.PathLike,
    fps: float | None = None,
    short_side: int | None = None,
    jpeg_quality: int = 90,
    max_seconds: float | None = None,
    start_seconds: float = 0.0,
) -> DecodedVideo:
    """Decodes `path` into JPEG frames sampled at `fps` with the given short side.

    Args:
      path: any container/codec FFmpeg reads (mp4, avi, webm, mkv, ...).
      fps: output frame rate in frames/s; None keeps the stream's average rate.
        Output frame k shows the last source frame whose timestamp is at or
        before k / fps seconds (nearest-previous resampling), so variable frame
        rates and rates above or below the source's are handled alike. Times
        count from the first frame.
      short_side: output short side in pixels; None keeps the source size.
      jpeg_quality: JPEG quality of the stored frames, 1..100.
      max_seconds: stop at this time, in seconds from the video's start (None: the end).
      start_seconds: the first output frame is the first grid frame at or after this time
        (`DecodedVideo.first_index`); past SEEK_AFTER_SECONDS the file is entered by a seek, so a
        15-minute range of a 2-hour movie costs about 15 minutes of decoding.

    Returns:
      DecodedVideo with at least one frame.

    Raises:
      VideoReadError: the file cannot be opened, has no video stream, or no
        frame could be decoded (at or after `start_seconds`). A file that breaks
        off mid-way keeps the frames decoded before the break and notes it in `warnings`.
    """
    path = os.fspath(path)
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoReadError(f"cannot open: {type(e).__name__}: {e}") from e
    with container:
        if not container.streams.video:
            raise VideoReadError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        out_fps = float(fps) if fps else _stream_fps(stream)
        if not out_fps or out_fps <= 0 or not math.isfinite(out_fps):
            raise VideoReadError("cannot determine the frame rate; pass fps explicitly")

        first_index = grid_index(start_seconds, out_fps) if start_seconds > 0 else 0
        jpegs: list[bytes] = []
        warnings: list[str] = []
        out_hw = None  # (height, width) of the output frames
        src_hw = None
        first_time = None
        pending = None  # (source frame, its time in seconds) not yet emitted up to
        try:
            frames = container.decode(stream)
            if start_seconds > SEEK_AFTER_SECONDS:
                frames, first_time = _seek(container, stream, frames, start_seconds)
            for frame in frames:
                t = _frame_time(frame, stream)
                if t is None:  # no timestamps at all: assume a constant rate
                    t = (first_index + len(jpegs)) / out_fps if pending is None else pending[1] + 1.0 / out_fps
                    t += first_time or 0.0
                if first_time is None:
                    first_time = t
                t -= first_time
                if max_seconds is not None and t >= max_seconds:
                    break
                if src_hw is None:
                    src_hw = (frame.height, frame.width)
                    out_hw = resized_shape(frame.height, frame.width, short_side)
                if pending is not None:
                    _emit_until(jpegs, first_index, _converter(pending[0], out_hw), t, out_fps, jpeg_quality)
                pending = (frame, t)
        except (av.FFmpegError, OSError, ValueError, EOFError) as e:
            if pending is None:
                raise VideoReadError(f"decode failed before any frame: {type(e).__name__}: {e}") from e
            warnings.append(f"decoding stopped early ({type(e).__name__}: {e}); kept the frames before it")
        if pending is None:
            raise VideoReadError("no decodable frames" + (f" at or after {start_seconds:.2f} s" if first_index else ""))
        # The last source frame lasts one source frame period; every video gives >= 1 frame.
        end_time = pending[1] + 1.0 / (_stream_fps(stream) or out_fps)
        if max_seconds is not None:
            end_time = min(end_time, max_seconds)
        last = _converter(pending[0], out_hw)
        _emit_until(jpegs, first_index, last, end_time, out_fps, jpeg_quality)
        if not jpegs:
            if first_index:
                raise VideoReadError(f"no frame at or after {start_seconds:.2f} s: the video ends at {end_time:.2f} s")
            jpegs.append(_encode_jpeg(last(), jpeg_quality))
        declared = container.duration / av.time_base if container.duration else None
        if declared and max_seconds is None and end_time < 0.9 * declared - 0.1:
            warnings.append(f"decoded {end_time:.2f} s of the {declared:.2f} s the file declares (truncated?)")
    return DecodedVideo(
        jpeg_frames=jpegs, fps=out_fps, height=out_hw[0], width=out_hw[1],
        source_height=src_hw[0], source_width=src_hw[1], warnings=warnings, first_index=first_index,
    )


def _seek(container, stream, frames, start_seconds):
    """(frames from the key frame at or before `start_seconds`, the first frame's time) — times still count
    from the video's first frame, which is decoded first; without timestamps, (frames, None) from the start."""
    first = next(frames, None)
    first_time = None if first is None else _frame_time(first, stream)
    if first_time is None or stream.time_base is None:
        return (frames if first is None else _chain(first, frames)), None
    target = first_time + start_seconds - 1.0  # a second early: the frame shown at the start comes before it
    container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
    return container.decode(stream), first_time


def _chain(first, rest):
    yield first
    yield from rest


def _converter(frame, out_hw):
    """A function giving `frame` as RGB uint8 [H, W, 3] at the output size; converts once, when first asked."""
    cache = []

    def rgb():
        if not cache:
            # Frames whose size changes mid-stream are scaled to the first frame's output size.
            cache.append(frame.to_ndarray(format="rgb24", width=out_hw[1], height=out_hw[0], interpolation="AREA"))
        return cache[0]

    return rgb


def _emit_until(jpegs, first_index, rgb, until_time, out_fps, quality):
    """Appends the frame `rgb()` for every output grid time k/out_fps < until_time not yet emitted
    (jpegs[i] is grid frame first_index + i)."""
    # Timestamps are often rounded to milliseconds: a 1 ms tolerance keeps that
    # rounding from adding or dropping a frame.
    n_total = math.ceil((until_time - _TIME_TOLERANCE) * out_fps) - first_index
    if n_total > len(jpegs):
        encoded = _encode_jpeg(rgb(), quality)
        jpegs.extend([encoded] * (n_total - len(jpegs)))


# --- frame folders ------------------------------------------------------------------------------------------------

FRAME_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})


def frame_number(name: str) -> int | None:
    """The number a frame image's file name ends with (`46GP8-000012.jpg` → 12); None for any other file."""
    stem, extension = os.path.splitext(name)
    if extension.lower() not in FRAME_EXTENSIONS or name.startswith("."):
        return None
    digits = len(stem) - len(stem.rstrip("0123456789"))
    return int(stem[-digits:]) if digits else None


def frame_images(folder: str | os.PathLike) -> list[tuple[int, str]]:
    """(number, file name) of the numbered images directly in `folder`, sorted by number, then name."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            number = frame_number(entry.name)
            if number is not None and entry.is_file():
                found.append((number, entry.name))
    return sorted(found)


def source_signature(path: str | os.PathLike) -> dict:
    """What decoding `path` depends on in the file system, for cache keys and change detection: a file's
    `size` and `mtime_ns`; for a frame folder its images' `frames` (count), `size` (bytes), newest `mtime_ns`
    and `listing` (a SHA-256 of their names, sizes and modification times), so that an image added,
    removed, renamed or rewritten changes it."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        stat = os.stat(path)
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    digest, count, size, newest = hashlib.sha256(), 0, 0, 0
    for _, name in frame_images(path):
        stat = os.stat(os.path.join(path, name))
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        count, size, newest = count + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
    return {"frames": count, "size": size, "mtime_ns": newest, "listing": digest.hexdigest()}


def decode_frame_folder(
    path: str | os.PathLike,
    source_fps: float | None,
    fps: float | None = None,
    short_side: int | None = None,
    jpeg_quality: int = 90,
    max_seconds: float | None = None,
    start_seconds: float = 0.0,
) -> DecodedVideo:
    """Decodes a folder of numbered JPEG/PNG images as `decode_video` decodes a file.

    Image n shows time (n − n0) / source_fps seconds and lasts one source frame period, where n0 is 1
    (ffmpeg's `%06d` numbering, as Charades' and AVA's frames are numbered) or 0 for a folder numbered from
    0; output frame k shows the last image at or before k / fps (the same nearest-previous rule and 1 ms
    tolerance as for files), and times before the first image show the first. Only the images some output
    frame shows are read. A number missing from the sequence, or an image that cannot be read, is filled by
    the readable image before it, noted in `warnings`; images of another size are scaled to the first one's
    output size. Arguments as for `decode_video`, with `fps` None meaning `source_fps`.

    Raises:
      VideoReadError: no frame rate, no numbered image in the folder, or no readable one.
    """
    path = os.fspath(path)
    if source_fps is None or not source_fps > 0 or not math.isfinite(source_fps):
        raise VideoReadError(f"a frame folder needs the frame rate of its images (source_fps), got {source_fps}")
    try:
        listed = frame_images(path)
    except OSError as e:
        raise VideoReadError(f"cannot list the frame folder: {type(e).__name__}: {e}") from e
    if not listed:
        raise VideoReadError("no numbered JPEG/PNG frames in the folder")
    names: dict[int, str] = {}
    for number, name in listed:
        names.setdefault(number, name)
    warnings = []
    if len(names) < len(listed):
        warnings.append(f"{len(listed) - len(names)} images repeat another's number; used the first by name")
    numbers = sorted(names)
    origin = 0 if numbers[0] == 0 else 1
    out_fps = float(fps) if fps else float(source_fps)
    end_time = (numbers[-1] - origin + 1) / source_fps
    if max_seconds is not None:
        end_time = min(end_time, max_seconds)
    first_index = grid_index(start_seconds, out_fps) if start_seconds > 0 else 0
    count = math.ceil((end_time - _TIME_TOLERANCE) * out_fps) - first_index
    if first_index and count <= 0:
        raise VideoReadError(f"no frame at or after {start_seconds:.2f} s: the frames end at {end_time:.2f} s")
    count = max(count, 1)

    reader = _FolderReader(path, names, numbers, short_side, jpeg_quality)
    jpegs = []
    for k in range(first_index, first_index + count):
        wanted = origin + math.floor(((k / out_fps) + _TIME_TOLERANCE) * source_fps)
        position = max(bisect.bisect_right(numbers, wanted) - 1, 0)  # the last image at or before; else the first
        jpegs.append(reader.jpeg(position))
    missing = numbers[-1] - numbers[0] + 1 - len(numbers) + (numbers[0] - origin)
    if missing:
        warnings.append(f"{missing} frame numbers between {origin} and {numbers[-1]} have no image; "
                        "the image before each is repeated")
    if reader.failures:
        warnings.append(f"unreadable images replaced by the one before: {reader.describe_failures()}")
    return DecodedVideo(
        jpeg_frames=jpegs, fps=out_fps, height=reader.out_hw[0], width=reader.out_hw[1],
        source_height=reader.src_hw[0], source_width=reader.src_hw[1], warnings=warnings, first_index=first_index,
    )


class _FolderReader:
    """Reads a frame folder's images on demand as output JPEGs. An unreadable image gives the nearest
    readable one before it (after it, when there is none before); no readable image at all raises
    VideoReadError. Holds one decoded image at a time."""

    def __init__(self, path, names, numbers, short_side, quality):
        self._path, self._names, self._numbers = path, names, numbers
        self._short_side, self._quality = short_side, quality
        self._failed: set[int] = set()  # positions (indices into numbers) that could not be read
        self._cached = (None, None)  # (position, JPEG) of the image read last
        self._asked = (None, None)  # (position asked for, JPEG given)
        self.out_hw = self.src_hw = None
        self.failures: list[str] = []

    def jpeg(self, position: int) -> bytes:
        if self._asked[0] == position:
            return self._asked[1]
        for candidate in (*range(position, -1, -1), *range(position + 1, len(self._numbers))):
            result = self._read(candidate)
            if result is not None:
                self._asked = (position, result)
                return result
        raise VideoReadError(f"no readable frame: {self.describe_failures()}")

    def _read(self, position: int) -> bytes | None:
        if position in self._failed:
            return None
        if self._cached[0] == position:
            return self._cached[1]
        name = self._names[self._numbers[position]]
        try:
            with Image.open(os.path.join(self._path, name)) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            self.failures.append(f"{name} ({type(e).__name__}: {e})")
            self._failed.add(position)
            return None
        if self.out_hw is None:
            self.src_hw = rgb.shape[:2]
            self.out_hw = resized_shape(rgb.shape[0], rgb.shape[1], self._short_side)
        if rgb.shape[:2] != self.out_hw:  # the scaler used for video files
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            rgb = frame.reformat(width=self.out_hw[1], height=self.out_hw[0], format="rgb24",
                                 interpolation="AREA").to_ndarray()
        self._cached = (position, _encode_jpeg(rgb, self._quality))
        return self._cached[1]

    def describe_failures(self, limit: int = 3) -> str:
        shown = "; ".join(self.failures[:limit])
        more = f"; ... {len(self.failures) - limit} more" if len(self.failures) > limit else ""
        return f"{len(self.failures)} of {len(self._numbers)} images unreadable: {shown}{more}"


def _stream_fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.base_rate, stream.guessed_rate):
        if rate:
            return float(rate)
    return None


def _frame_time(frame, stream) -> float | None:
    if frame.pts is not None and stream.time_base is not None:
        return float(frame.pts * stream.time_base)
    if frame.time is not None:
        return float(frame.time)
    return None

