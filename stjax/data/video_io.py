"""Decoding video files into JPEG frames on a constant-rate grid (PyAV).

Used once, at build time: a video is decoded, resampled onto a uniform time
grid (so variable-frame-rate files get regular frame indices), resized to a
target short side and stored as JPEG frames. Training then samples frame
indices and decodes only those JPEGs.

Nothing here imports TensorFlow or JAX.
"""
from __future__ import annotations

import dataclasses
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


def decode_video(
    path: str | os.PathLike,
    fps: float | None = None,
    short_side: int | None = None,
    jpeg_quality: int = 90,
    max_seconds: float | None = None,
) -> DecodedVideo:
    """Decodes `path` into JPEG frames sampled at `fps` with the given short side.

    Args:
      path: any container/codec FFmpeg reads (mp4, avi, webm, mkv, ...).
      fps: output frame rate in frames/s; None keeps the stream's average rate.
        Output frame k shows the last source frame whose timestamp is at or
        before k / fps seconds (nearest-previous resampling), so variable frame
        rates and rates above or below the source's are handled alike.
      short_side: output short side in pixels; None keeps the source size.
      jpeg_quality: JPEG quality of the stored frames, 1..100.
      max_seconds: stop after this many seconds of video (None: all).

    Returns:
      DecodedVideo with at least one frame.

    Raises:
      VideoReadError: the file cannot be opened, has no video stream, or no
        frame could be decoded. A file that breaks off mid-way keeps the frames
        decoded before the break and notes it in `warnings`.
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

        jpegs: list[bytes] = []
        warnings: list[str] = []
        src_hw = out_hw = None
        first_time = None
        pending = None  # (rgb frame, its time in seconds) not yet emitted up to
        try:
            for frame in container.decode(stream):
                t = _frame_time(frame, stream)
                if t is None:  # no timestamps at all: assume a constant rate
                    t = len(jpegs) / out_fps if pending is None else pending[1] + 1.0 / out_fps
                if first_time is None:
                    first_time = t
                t -= first_time
                if max_seconds is not None and t >= max_seconds:
                    break
                if src_hw is None:
                    src_hw = (frame.height, frame.width)
                    out_hw = resized_shape(frame.height, frame.width, short_side)
                if pending is not None:
                    _emit_until(jpegs, pending[0], t, out_fps, jpeg_quality)
                # Frames whose size changes mid-stream are scaled to the first frame's output size.
                rgb = frame.to_ndarray(
                    format="rgb24", width=out_hw[1], height=out_hw[0], interpolation="AREA"
                )
                pending = (rgb, t)
        except (av.FFmpegError, OSError, ValueError, EOFError) as e:
            if pending is None:
                raise VideoReadError(f"decode failed before any frame: {type(e).__name__}: {e}") from e
            warnings.append(f"decoding stopped early ({type(e).__name__}: {e}); kept the frames before it")
        if pending is None:
            raise VideoReadError("no decodable frames")
        # The last source frame lasts one source frame period; every video gives >= 1 frame.
        end_time = pending[1] + 1.0 / (_stream_fps(stream) or out_fps)
        if max_seconds is not None:
            end_time = min(end_time, max_seconds)
        _emit_until(jpegs, pending[0], end_time, out_fps, jpeg_quality)
        if not jpegs:
            jpegs.append(_encode_jpeg(pending[0], jpeg_quality))
        declared = container.duration / av.time_base if container.duration else None
        if declared and max_seconds is None and end_time < 0.9 * declared - 0.1:
            warnings.append(f"decoded {end_time:.2f} s of the {declared:.2f} s the file declares (truncated?)")
    return DecodedVideo(
        jpeg_frames=jpegs, fps=out_fps, height=out_hw[0], width=out_hw[1],
        source_height=src_hw[0], source_width=src_hw[1], warnings=warnings,
    )


def _emit_until(jpegs, rgb, until_time, out_fps, quality):
    """Appends `rgb` for every output grid time k/out_fps < until_time not yet emitted."""
    # Timestamps are often rounded to milliseconds: a 1 ms tolerance keeps that
    # rounding from adding or dropping a frame.
    n_total = math.ceil((until_time - 1e-3) * out_fps)
    if n_total > len(jpegs):
        encoded = _encode_jpeg(rgb, quality)
        jpegs.extend([encoded] * (n_total - len(jpegs)))


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

