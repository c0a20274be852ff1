"""Codec motion vectors and key frames of a compressed video, on the stored frame grid (PyAV).

CMD's motion input: the block motion vectors the encoder wrote into the bitstream, read while
decoding (FFmpeg's `export_mvs`) without converting a single frame to RGB, then rasterised onto a
`block`-pixel grid and put on `video_io.decode_video`'s constant-rate grid. Used at build time, once
per video, in worker processes, right after `decode_video`. Nothing here imports TensorFlow or JAX.

FFmpeg exports motion vectors for H.264, MPEG-4 Part 2, H.263 and MPEG-1/2 video (its mpegvideo
family); other codecs (HEVC, VP8/9, AV1, MJPEG, PNG, ...) and intra-only streams carry none, and
reading them raises `video_io.VideoReadError` with a re-encoding recipe instead of giving zeros.

Units. A field holds forward-in-time content motion (dx, dy) in source pixels per source frame
(x right, y down): where the content of a block was at time t − 1 frame it is at t now, moved by
(dx, dy). One exported vector says that the w×h block centred at (dst_x, dst_y) of this frame is
predicted from its reference frame displaced by (motion_x, motion_y) / motion_scale pixels
(= src − dst, sub-pixel; FFmpeg's integer src_x/src_y are truncated, so they are not used). A
reference d display frames in the past gives (dst − src) / d; one d frames in the future (B-frames)
gives (src − dst) / d.

The reference distance d. FFmpeg's `source` only says the list (−1: past, list 0; +1: future,
list 1), not which frame. The rule: a vector's reference is a frame on its side in display order
that (i) is a reference picture — I and P frames; for H.264 also any frame whose slice NAL units have
nal_ref_idc > 0 (the B-frames x264 keeps as references in its B-pyramid), read from the packets' NAL
headers; the other codecs never reference B-frames — (ii) was decoded before this frame (each packet
carries its decode rank through the decoder as `opaque`, so no timestamp is needed: raw .h264 and
.m4v streams work) and (iii) for H.264, not before the last IDR picture. Of those, the nearest,
unless the list holds several (H.264's num_ref_idx_active, parsed from the slice header and its
parameter sets, at most the sequence's max_num_ref_frames distinct frames; 1 for the other codecs):
then, per vector, the candidate whose luma plane matches the block best at the vector's
displacement (sum of absolute differences over 16 of the block's pixels on a sheared 4×4 lattice,
candidates nearest first, the nearest of equals; still blocks keep the nearest). d is that frame's distance in
display order, in frames (not from timestamps: AVI gives B-frames their decode times).

How exact it is. The nearest-reference part is exact for MPEG-4 Part 2, H.263 and MPEG-1/2 (one
reference per direction: the surrounding anchors) and for H.264 with one reference per list (x264
`ref=1`, e.g. preset veryfast: stjax's synthetic set). With x264's default `ref=3`, about 13 % of the
moving blocks of panning footage point further back than the nearest reference; without the luma check
those read d_true/d times too fast. Measured: a textured square moving (+2, −1) px/frame over a static
textured background (96×128, 30 frames, 25 fps; median over the square's interior 4-px cells per P/B
frame; `tests/test_motion_vectors.py`):

    encoder setup                                    picture types      error, every frame
    libx264 crf 20 veryfast (make_synthetic)         I, P, B (pyramid)  0 px (1 list entry: no check)
    mpeg4 -g 12 -bf 0 (CMD / CoViAR)                 I, P               0 px
    libx264 -g 12 -bf 0 (default preset, ref=3)      I, P               0 px (nearest only: 2 px on 14 of 27)
    libx264 defaults (ref=3, 3 B-frames)             I, P, B (pyramid)  0 px (nearest only: 2–6 px on 6 of 29)

and on `bench/input_pipeline.py`'s panning clips (x264 defaults, 4 × 300 frames, 256–320 px short
side) the luma check picks the same reference as a full-block, sub-pixel (bilinear) match for 98.1 %
of the 392k vectors it checks; its mean speed error against that match is 0.018 px/frame (nearest
only: 0.21), for a mean speed of 1.41 px/frame (an 8×8 lattice, 4× the pixels: 98.4 %, 0.015).
Long-term references, field pictures and MMCO are not modelled, and d counts frames, so a
variable-frame-rate stream's field is per source frame, not per second. Two FFmpeg limits: nothing is
exported for the last frame of an MPEG-1/2 stream (it is output at the flush), so its field is 0;
MPEG-4 Part 2 B-frames export their direct-mode macroblocks as zero vectors (a warning says so:
re-encode with -bf 0, as CMD does).

Where a block has vectors in both directions (bi-prediction) their two motions are averaged. A vector
to a reference d frames away gives the mean motion over those d frames: on the bench clips' camera pan
(known; it moves in whole-pixel steps, 0, 1 or 2 px per frame) the per-frame median of the H.264 fields
(B-frames, references 1–4 frames away) is off by 0.01–0.35 px/frame on average, of the MPEG-4 GOP-12
fields (every reference 1 frame back) by 0–0.33.

Rasterisation: each vector covers the w×h block centred at (dst_x, dst_y), clipped to the frame. A
grid cell holds the mean of the motions of the vectors covering it, each weighted by the area it
covers (both directions pooled); cells no vector covers (intra blocks, all of an I-frame) hold 0.
Blocks on the codecs' 8- or 16-pixel grid are painted exactly with running sums; any other layout
(or a frame of another size) by per-cell overlaps.

Decoding: slice threads only (`thread_type="SLICE"`): with frame threads FFmpeg's H.264 decoder
exports incomplete vector sets for some B- and P-frames at random (measured: 18–35 of 600 decoded
frames, 20 decodes of a 30-frame clip, differed from a single-threaded decode). The deblocking filter
is skipped (`skip_loop_filter=all`): the exported vectors are identical (checked on every frame of two
bench clips and of the test videos) and H.264 decodes about 15 % faster. No frame is converted to RGB.
"""
from __future__ import annotations

import dataclasses
import math
import os

import av
import numpy as np

from stjax.data import video_io

MV_BLOCK = 4  # default block size in pixels of the stored motion grid
MOTION_UNITS_PER_PIXEL = 4  # stored int8 value = round(4 * pixels per grid frame), clipped to [-127, 127]

# PyAV's PictureType values (av.video.frame.PictureType).
PICT_I, PICT_P, PICT_B = 1, 2, 3
_MAX_CANDIDATES = 4  # H.264 reference pictures tried per list when a slice header cannot be read
_SAMPLES = 4  # an H.264 block's pixels compared with its candidate references: _SAMPLES² of them
_LUMAS_KEPT = 17  # reference luma planes kept (H.264 lists hold 16 frames at most)
_REORDER_WINDOW = 64  # pictures remembered for finding a frame's references (more than any decoder's delay)
_MV_CODECS = "H.264, MPEG-4 Part 2, H.263 and MPEG-1/2 video"
# FFmpeg decoders that export motion vectors (its mpegvideo family and H.264). Any other codec fails as soon
# as a second frame without vectors is decoded that is not an I-frame, or after _GIVE_UP_FRAMES frames.
_EXPORTERS = frozenset({"h264", "mpeg4", "h263", "h263i", "h263p", "flv", "mpeg1video", "mpeg2video", "msmpeg4v1",
                        "msmpeg4v2", "msmpeg4", "wmv1", "wmv2", "wmv3", "vc1", "h261", "rv10", "rv20"})
_GIVE_UP_FRAMES = 30
_REENCODE = "ffmpeg -i IN -c:v mpeg4 -g 12 -bf 0 OUT.mp4"


@dataclasses.dataclass
class StreamMotion:
    """Per decoded source frame, in display order (F frames).

    times: float64 [F], seconds from the first frame (the rule of `video_io.decode_video`).
    key_frames: bool [F], the frame is an I-frame (`frame.pict_type` is I: CMD's "I-frames", as
      `ffprobe -show_frames` reports them; for H.264 this includes I-frames that are not IDR).
    pict_types: int8 [F], PyAV's PictureType value (I=1, P=2, B=3, S=4, SI=5, SP=6, BI=7; 0 unknown).
    fields: float32 [F, ceil(height/block), ceil(width/block), 2], (dx, dy) forward-in-time content
      motion in source pixels per source frame (x right, y down); 0 on I-frames and intra blocks.
    height, width: source frame size in pixels (the first frame's; later frames of another size are
      scaled to it). block: grid cell size in source pixels. source_fps: the stream's frame rate.
    codec: FFmpeg's decoder name. warnings: non-fatal problems (a truncated file's prefix kept, ...).
    """

    times: np.ndarray
    key_frames: np.ndarray
    pict_types: np.ndarray
    fields: np.ndarray
    height: int
    width: int
    block: int
    source_fps: float
    codec: str
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.times)


def extract(path: str | os.PathLike, fps: float | None = None, short_side: int | None = None,
            block: int = MV_BLOCK, max_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(motion int8 [N, ceil(h/block), ceil(w/block), 2], keyframes bool [N]) of `path` on the grid that
    `video_io.decode_video(path, fps, short_side, max_seconds=max_seconds)` stores: N frames at `fps`
    (None: the stream's rate), (h, w) = `video_io.resized_shape(height, width, short_side)`. See `on_grid`.

    Raises:
      video_io.VideoReadError: as `read_stream`.
    """
    stream = read_stream(path, block=block, max_seconds=max_seconds)
    out_fps = float(fps) if fps else stream.source_fps
    out_hw = video_io.resized_shape(stream.height, stream.width, short_side)
    return on_grid(stream, out_fps, grid_length(stream, out_fps, max_seconds), out_hw)


def grid_length(stream: StreamMotion, fps: float, max_seconds: float | None = None) -> int:
    """The number of frames `video_io.decode_video` stores at `fps` for the frames of `stream`: every grid
    time k / fps before the end of the last frame (its time + one source frame period, at most
    `max_seconds`), with its 1 ms tolerance; at least 1."""
    ends = np.append(stream.times[1:], stream.times[-1] + 1.0 / stream.source_fps)
    if max_seconds is not None:
        ends[-1] = min(ends[-1], max_seconds)
    return max(1, int(np.max(np.ceil((ends - video_io._TIME_TOLERANCE) * fps))))


def on_grid(stream: StreamMotion, fps: float, num_frames: int,
            out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """`stream` resampled onto `num_frames` frames of a `fps` grid of frames of size `out_hw`.

    Grid frame k shows the last source frame i with ceil((t_i − 1 ms)·fps) ≤ k (`video_io`'s
    nearest-previous rule and tolerance); the first source frame also covers the grid frames before its
    time, and the last one repeats past the stream's end (when `num_frames` asks for more).

    Returns:
      motion: int8 [num_frames, ceil(out_h/block), ceil(out_w/block), 2], the shown source frame's field
        area-averaged onto the output grid, dx scaled by out_w/width and dy by out_h/height, converted to
        pixels per grid frame period (× source_fps / fps), in units of 1/MOTION_UNITS_PER_PIXEL pixel,
        rounded and clipped to [-127, 127]: motion / MOTION_UNITS_PER_PIXEL = output pixels per grid frame.
      keyframes: bool [num_frames], True where the shown source frame is a key frame and k is the first grid
        frame that shows it (a key frame repeated by an up-sampled grid is flagged once).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    starts = np.ceil((stream.times - video_io._TIME_TOLERANCE) * fps)
    starts = np.maximum.accumulate(starts)  # a frame before an earlier one's time shows nothing (as decode_video)
    shown = np.maximum(np.searchsorted(starts, np.arange(num_frames), side="right") - 1, 0)
    first = np.ones(num_frames, bool)
    first[1:] = shown[1:] != shown[:-1]
    keyframes = stream.key_frames[shown] & first

    used, inverse = np.unique(shown, return_inverse=True)
    if (out_h, out_w) == (stream.height, stream.width):
        fields = stream.fields[used]  # (a copy)
    else:
        rows = _area_matrix(stream.height, out_h, stream.block)  # [out cells, source cells]
        cols = _area_matrix(stream.width, out_w, stream.block)
        fields = np.einsum("ys,fsxc,wx->fywc", rows, stream.fields[used], cols, optimize=True)
    units = MOTION_UNITS_PER_PIXEL * stream.source_fps / fps
    fields *= np.array([units * out_w / stream.width, units * out_h / stream.height], np.float32)
    motion = np.clip(np.rint(fields), -127, 127).astype(np.int8)
    return motion[inverse.reshape(-1)], keyframes


def _area_matrix(size: int, out_size: int, block: int) -> np.ndarray:
    """float32 [ceil(out_size/block), ceil(size/block)]: the share of each output cell's area (a side of
    `out_size` pixels, mapped onto `size` source pixels) that each source cell covers; rows sum to 1."""
    scale = size / out_size
    out_edges = np.minimum(np.arange(-(-out_size // block) + 1) * block, out_size) * scale
    src_edges = np.minimum(np.arange(-(-size // block) + 1) * block, size).astype(np.float64)
    overlap = (np.minimum(out_edges[1:, None], src_edges[None, 1:])
               - np.maximum(out_edges[:-1, None], src_edges[None, :-1]))
    overlap = np.maximum(overlap, 0.0)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def read_stream(path: str | os.PathLike, block: int = MV_BLOCK, max_seconds: float | None = None) -> StreamMotion:
    """The motion field, picture type and time of every frame of `path`'s first video stream.

    Decodes with motion-vector export and no RGB conversion. `max_seconds` stops at that time from the
    first frame (frames at or after it are dropped), as `video_io.decode_video`. The fields take
    F·ceil(H/block)·ceil(W/block)·8 bytes (10 s at 30 fps of 568×320 at block 4: 27 MB; an hour of 720p:
    5 GB, so limit long videos with `max_seconds` or a larger block).

    Raises:
      video_io.VideoReadError: the file cannot be opened, has no video stream or no decodable frame, or
        its codec (or an intra-only stream) gives no motion vectors while it has more than one frame. A
        file that breaks off mid-way keeps the frames decoded before the break, noted in `warnings`.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    path = os.fspath(path)
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise video_io.VideoReadError(f"cannot open: {type(e).__name__}: {e}") from e
    with container:
        if not container.streams.video:
            raise video_io.VideoReadError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # frame threads drop H.264 vectors at random (module docstring)
        # Vectors are bitstream syntax: without the deblocking filter they are the same, decoded faster.
        stream.codec_context.options = {"skip_loop_filter": "all"}
        stream.codec_context.flags2 |= av.codec.context.Flags2.export_mvs
        reader = _Reader(stream, block, max_seconds)
        warnings = []
        try:
            reader.run(container)
        except (av.FFmpegError, OSError, ValueError, EOFError) as e:
            if not reader.times:
                raise video_io.VideoReadError(f"decode failed before any frame: {type(e).__name__}: {e}") from e
            warnings.append(f"decoding stopped early ({type(e).__name__}: {e}); kept the frames before it")
        if not reader.times:
            raise video_io.VideoReadError("no decodable frames")
        codec = stream.codec_context.name
        if len(reader.times) > 1 and not reader.had_vectors:
            raise video_io.VideoReadError(_no_vectors(codec))
        source_fps = reader.source_fps
        end_time = reader.times[-1] + 1.0 / source_fps
        declared = container.duration / av.time_base if container.duration else None
        if declared and max_seconds is None and end_time < 0.9 * declared - 0.1:
            warnings.append(f"decoded {end_time:.2f} s of the {declared:.2f} s the file declares (truncated?)")
        warnings.extend(reader.warnings)
        if codec == "mpeg4" and PICT_B in reader.pict_types:
            warnings.append("MPEG-4 Part 2 B-frames: FFmpeg exports their direct-mode macroblocks (most of them) as "
                            f"zero vectors, so their motion reads too slow; re-encode without B-frames: `{_REENCODE}`")
    return StreamMotion(
        times=np.asarray(reader.times, np.float64), key_frames=np.asarray(reader.pict_types) == PICT_I,
        pict_types=np.asarray(reader.pict_types, np.int8), fields=np.stack(reader.fields).astype(np.float32),
        height=reader.height, width=reader.width, block=block, source_fps=source_fps, codec=codec,
        warnings=warnings,
    )


def _no_vectors(codec: str) -> str:
    return (f"no frame of this {codec} stream carries motion vectors: FFmpeg exports them only for the "
            f"inter-coded frames of {_MV_CODECS} (an intra-only stream or another codec has none); "
            f"re-encode it, e.g. `{_REENCODE}`")


class _Reader:
    """Demuxes and decodes one video stream, keeping per frame its time, type and motion field.

    Each packet carries its `_Picture` through the decoder (`opaque`, `copy_opaque`), so every frame knows
    its decode rank, whatever its timestamps."""

    def __init__(self, stream, block, max_seconds):
        self.stream, self.block, self.max_seconds = stream, block, max_seconds
        codec = stream.codec_context.name
        self.h264 = _H264Headers(stream.codec_context.extradata) if codec == "h264" else None
        self.exporter = codec in _EXPORTERS
        self.source_fps = video_io._stream_fps(stream)
        if not self.source_fps or not math.isfinite(self.source_fps) or self.source_fps <= 0:
            raise video_io.VideoReadError("cannot determine the stream's frame rate")
        stream.codec_context.copy_opaque = True
        self.times, self.pict_types, self.fields = [], [], []
        self.warnings: list[str] = []
        self.had_vectors = False
        self.height = self.width = None
        self._first_time = None
        self._pictures: list[_Picture] = []  # the last _REORDER_WINDOW pictures, in decode order
        self._pending: list[tuple] = []  # frames waiting for the pictures decoded before them to be shown
        self._unmatched = 0

    def run(self, container):
        try:
            for packet in container.demux(self.stream):
                if packet.size:
                    packet.opaque = self._picture(packet)
                for frame in packet.decode():
                    if not self._add(frame):
                        return
        finally:
            self._flush(final=True)
            if self._unmatched:
                self.warnings.append(f"{self._unmatched} frames could not be matched to their packet: their "
                                     "motion assumes references 1 frame away")

    def _picture(self, packet) -> _Picture:
        rank = self._pictures[-1].rank + 1 if self._pictures else 0
        if self.h264 is None:  # every picture but a B-picture is a reference (known once decoded)
            picture = _Picture(rank, None, False, 1, 1)
        else:
            picture = self.h264.picture(rank, memoryview(packet))
        self._pictures.append(picture)
        if len(self._pictures) > _REORDER_WINDOW:
            self._pictures.pop(0).luma = None
        return picture

    def _add(self, frame) -> bool:
        """Records `frame`; False when past `max_seconds`."""
        t = video_io._frame_time(frame, self.stream)
        if t is None:  # no timestamps: a constant rate
            t = (self.times[-1] + self._first_time + 1.0 / self.source_fps) if self.times else 0.0
        if self._first_time is None:
            self._first_time = t
        t -= self._first_time
        if self.max_seconds is not None and t >= self.max_seconds:
            return False
        if self.height is None:
            self.height, self.width = frame.height, frame.width
        pict_type = int(frame.pict_type)
        picture = frame.opaque if isinstance(frame.opaque, _Picture) else None
        index = len(self.times)
        self.times.append(t)
        self.pict_types.append(pict_type)
        self.fields.append(None)
        if not self.had_vectors and not self.exporter and index > 0 and (
                pict_type not in (PICT_I, 0) or index + 1 >= _GIVE_UP_FRAMES):
            raise video_io.VideoReadError(_no_vectors(self.stream.codec_context.name))  # fail fast
        if picture is not None:
            picture.index = index
            if self.h264 is None:  # B and BI pictures are never references; the others predict from the past
                picture.reference = pict_type not in (PICT_B, 7)
                picture.list1 = 1 if pict_type == PICT_B else 0
            elif self.h264.may_check:
                picture.luma = _Luma.of(frame)
                kept = [p for p in self._pictures if p.luma is not None and p.reference]
                for old in kept[:-_LUMAS_KEPT]:  # no list reaches further back
                    old.luma = None
        side = frame.side_data.get("MOTION_VECTORS")
        if side is None:
            self.fields[index] = np.zeros((-(-self.height // self.block), -(-self.width // self.block), 2), np.float32)
        else:
            self.had_vectors = True
            self._unmatched += picture is None
            self._pending.append((index, side.to_ndarray(), picture, (frame.height, frame.width)))
        self._flush(final=False)
        return True

    def _flush(self, final):
        """Rasterises the pending frames, in order, once every picture decoded before them is shown (their
        future references are among those; all of them when `final` or when too many wait)."""
        while self._pending:
            index, vectors, picture, size = self._pending[0]
            if picture is None:
                distances = np.ones(len(vectors), np.float32)
            else:
                if not final and picture.list1 and len(self._pending) < _REORDER_WINDOW and any(
                        other.index is None for other in self._pictures if other.rank < picture.rank):
                    return
                distances = self._distances(vectors, picture)
                if not picture.reference:
                    picture.luma = None
            scale = (self.width / size[1], self.height / size[0])
            self.fields[index] = _rasterise(vectors, distances, self.height, self.width, self.block, scale)
            self._pending.pop(0)

    def _candidates(self, picture):
        """(past, future): the reference pictures decoded before `picture` (and not before the last IDR picture
        before it) and shown before / after it, nearest first, as many as its lists hold."""
        reset = max((p.rank for p in self._pictures if p.idr and p.rank <= picture.rank), default=-1)
        known = [p for p in self._pictures
                 if reset <= p.rank < picture.rank and p.reference is not False and p.index is not None]
        past = sorted((p for p in known if p.index < picture.index), key=lambda p: -p.index)
        future = sorted((p for p in known if p.index > picture.index), key=lambda p: p.index)
        return past[:max(picture.list0, 1)], future[:max(picture.list1, 1)]

    def _distances(self, vectors, picture):
        """float32 [N]: each vector's reference distance in source frames (see the module docstring)."""
        past, future = self._candidates(picture)

        def frames(others):  # display order, not timestamps: AVI gives B-frames their decode time
            return [float(abs(other.index - picture.index)) for other in others] or [1.0]

        d_past, d_future = frames(past), frames(future)
        backward = vectors["source"] < 0
        distances = np.where(backward, d_past[0], d_future[0]).astype(np.float32)
        luma = picture.luma
        if luma is None or (len(past) < 2 and len(future) < 2):
            return distances
        moving = (vectors["motion_x"] != 0) | (vectors["motion_y"] != 0)  # a still block reads 0 from any
        for mask, others, d in ((backward & moving, past, d_past), (~backward & moving, future, d_future)):
            usable = [i for i, other in enumerate(others) if other.luma is not None and other.luma.fits(luma)]
            if len(usable) < 2 or usable[0] != 0 or not mask.any():
                continue
            chosen = _best_reference(vectors[mask], luma, [others[i].luma for i in usable])
            distances[mask] = np.asarray([d[i] for i in usable], np.float32)[chosen]
        return distances


@dataclasses.dataclass(eq=False)
class _Picture:
    """One coded picture: its decode rank, whether it is a reference picture (None: not known until decoded),
    whether it is an IDR picture (the references before it are gone), how many reference pictures its lists
    0 and 1 hold (H.264: from its slice header; 0 for none), and once decoded its display index and (H.264
    with several references per list) luma plane."""

    rank: int
    reference: bool | None
    idr: bool
    list0: int
    list1: int
    index: int | None = None
    luma: _Luma | None = None


class _Luma:
    """A decoded frame's luma plane as a flat uint8 array with its row stride (a view, no copy)."""

    def __init__(self, flat, height, width, stride):
        self.flat, self.height, self.width, self.stride = flat, height, width, stride

    @classmethod
    def of(cls, frame) -> _Luma | None:
        if frame.format.name not in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                                     "nv12", "nv21", "gray"):
            return None  # high bit depths and others: no check, the nearest reference
        plane = frame.planes[0]
        return cls(np.frombuffer(plane, np.uint8), plane.height, plane.width, plane.line_size)

    def fits(self, other: _Luma) -> bool:
        return (self.height, self.width, self.stride) == (other.height, other.width, other.stride)


def _best_reference(vectors: np.ndarray, luma: _Luma, references: list[_Luma]) -> np.ndarray:
    """int [N]: for each vector, the index of the reference picture (nearest first) its block matches best at
    its displacement (the nearest of equals): the sum of absolute differences over _SAMPLES² pixels of the
    block (a sheared lattice, so that no period of a texture aliases it), the displacement rounded to whole
    pixels, positions past the frame's edge clamped to the plane."""
    n = len(vectors)
    rows = np.rint(_LATTICE_Y * vectors["h"][:, None]).astype(np.int32) * luma.stride  # [N, S²]
    cols = np.rint(_LATTICE_X * vectors["w"][:, None]).astype(np.int32)
    scale = np.maximum(vectors["motion_scale"], 1)
    at = (vectors["dst_y"].astype(np.int32) * luma.stride + vectors["dst_x"])[:, None] + rows + cols
    current = np.take(luma.flat, at, mode="clip")
    at += (np.rint(vectors["motion_y"] / scale).astype(np.int32) * luma.stride
           + np.rint(vectors["motion_x"] / scale).astype(np.int32))[:, None]
    sad = np.empty((n, len(references)), np.int32)
    for j, reference in enumerate(references):
        other = np.take(reference.flat, at, mode="clip")
        sad[:, j] = (np.maximum(current, other) - np.minimum(current, other)).sum(axis=1, dtype=np.int32)
    return np.argmin(sad, axis=1)  # the first (nearest) of equals


def _lattice(samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) float [samples²]: sample positions as fractions of a block's height and width around its centre;
    each row of the lattice is shifted right by 1/samples of a column step."""
    r, c = np.divmod(np.arange(samples * samples), samples)
    return (r + 0.5) / samples - 0.5, ((c + 0.5 + r / samples) / samples) % 1.0 - 0.5


_LATTICE_Y, _LATTICE_X = _lattice(_SAMPLES)


# --- H.264 headers ----------------------------------------------------------------------------------------------


class _H264Headers:
    """Just enough of H.264's parameter sets and slice headers to know, per coded picture, whether it is a
    reference picture (nal_ref_idc), an IDR picture and how many pictures its reference lists hold
    (num_ref_idx_active); no slice data is read. What cannot be parsed gives `_MAX_CANDIDATES` per list."""

    def __init__(self, extradata):
        self.sps: dict[int, dict] = {}
        self.pps: dict[int, dict] = {}
        self.nal_length = None
        # Whether any picture may have more than one reference per list: then frames keep their luma planes.
        self.may_check = True
        data = bytes(extradata or b"")
        if len(data) >= 7 and data[0] == 1:  # avcC: lengths-prefixed parameter sets
            self.nal_length = (data[4] & 3) + 1
            try:
                position, nals = 6, []
                for count_at_start in (True, False):
                    count = data[position - 1] & (0x1F if count_at_start else 0xFF)
                    for _ in range(count):
                        size = int.from_bytes(data[position:position + 2], "big")
                        nals.append(data[position + 2:position + 2 + size])
                        position += 2 + size
                    position += 1
                for nal in nals:
                    self._parameter_set(nal)
            except (IndexError, ValueError):
                pass
        elif data:
            for nal in _annex_b_units(memoryview(data)):
                self._parameter_set(bytes(nal))
        if self.pps and all(p["list0"] == 1 and p["list1"] == 1 for p in self.pps.values()):
            # x264 writes its --ref as the default; slices that override it to more turn the check back on.
            self.may_check = False

    def picture(self, rank: int, data: memoryview) -> _Picture:
        # (a 4-byte start code in an avcC stream: a 1-byte NAL unit length would be no picture)
        annex_b = not self.nal_length or bytes(data[:4]) == b"\x00\x00\x00\x01"
        units = _annex_b_units(data) if annex_b else _length_prefixed_units(data, self.nal_length)
        try:
            for nal in units:
                kind = nal[0] & 0x1F
                if kind in (7, 8):
                    self._parameter_set(bytes(nal))
                elif kind in (1, 5):
                    reference, idr = bool(nal[0] & 0x60), kind == 5
                    lists = self._slice_lists(bytes(nal[:_SLICE_HEADER_BYTES]), idr)
                    if lists is None:
                        lists = (_MAX_CANDIDATES, _MAX_CANDIDATES)
                    if max(lists) > 1:
                        self.may_check = True
                    return _Picture(rank, reference, idr, *lists)
        except (IndexError, ValueError):
            pass
        return _Picture(rank, None, False, _MAX_CANDIDATES, _MAX_CANDIDATES)

    def _parameter_set(self, nal: bytes):
        try:
            if nal[0] & 0x1F == 7:
                sps = _parse_sps(_Bits(nal[1:]))
                self.sps[sps["id"]] = sps
            elif nal[0] & 0x1F == 8:
                pps = _parse_pps(_Bits(nal[1:]))
                self.pps[pps["id"]] = pps
        except (IndexError, ValueError, KeyError):
            pass

    def _slice_lists(self, nal: bytes, idr: bool) -> tuple[int, int] | None:
        """(list 0, list 1) sizes from a slice header; None when its parameter sets are unknown."""
        try:
            bits = _Bits(nal[1:])
            bits.ue()  # first_mb_in_slice
            slice_type = bits.ue() % 5
            pps = self.pps[bits.ue()]
            sps = self.sps[pps["sps"]]
            if sps["separate_colour_plane"]:
                bits.u(2)
            bits.u(sps["log2_max_frame_num"])
            field = False
            if not sps["frame_mbs_only"]:
                field = bool(bits.u(1))
                if field:
                    bits.u(1)
            if idr:
                bits.ue()
            if sps["poc_type"] == 0:
                bits.u(sps["log2_max_poc_lsb"])
                if pps["bottom_field_poc"] and not field:
                    bits.se()
            elif sps["poc_type"] == 1 and not sps["delta_poc_always_zero"]:
                bits.se()
                if pps["bottom_field_poc"] and not field:
                    bits.se()
            if pps["redundant_pic_cnt"]:
                bits.ue()
            if slice_type in (2, 4):  # I, SI
                return 0, 0
            if slice_type == 1:  # B
                bits.u(1)  # direct_spatial_mv_pred_flag
            list0, list1 = pps["list0"], pps["list1"]
            if bits.u(1):  # num_ref_idx_active_override_flag
                list0 = bits.ue() + 1
                if slice_type == 1:
                    list1 = bits.ue() + 1
            if field:  # field pictures count fields: two per frame
                list0, list1 = (list0 + 1) // 2, (list1 + 1) // 2
            # Entries may repeat a frame (x264's weightp=2 adds a weighted copy): at most the distinct ones.
            most = max(sps["max_refs"], 1)
            return min(list0, most), (min(list1, most) if slice_type == 1 else 0)
        except (IndexError, ValueError, KeyError):
            return None


_SLICE_HEADER_BYTES = 64  # enough for every slice header field up to num_ref_idx_active


class _Bits:
    """An MSB-first bit reader over one NAL unit's payload (emulation prevention bytes removed)."""

    def __init__(self, data: bytes):
        data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.value, self.left = int.from_bytes(data, "big"), 8 * len(data)

    def u(self, n: int) -> int:
        if n > self.left:
            raise ValueError("past the end of the NAL unit")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def _parse_sps(bits: _Bits) -> dict:
    """The fields of a sequence parameter set that slice headers need before num_ref_idx_active."""
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    sps = {"id": bits.ue(), "separate_colour_plane": False}
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = bits.ue()
        if chroma_format == 3:
            sps["separate_colour_plane"] = bool(bits.u(1))
        bits.ue(), bits.ue()  # bit depths
        bits.u(1)  # qpprime_y_zero_transform_bypass
        if bits.u(1):  # seq_scaling_matrix_present
            for i in range(8 if chroma_format != 3 else 12):
                if bits.u(1):
                    last = following = 8
                    for _ in range(16 if i < 6 else 64):
                        if following:
                            following = (last + bits.se() + 256) % 256
                        last = following or last
    sps["log2_max_frame_num"] = bits.ue() + 4
    sps["poc_type"] = bits.ue()
    sps["delta_poc_always_zero"] = False
    if sps["poc_type"] == 0:
        sps["log2_max_poc_lsb"] = bits.ue() + 4
    elif sps["poc_type"] == 1:
        sps["delta_poc_always_zero"] = bool(bits.u(1))
        bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    sps["max_refs"] = bits.ue()  # max_num_ref_frames: the distinct frames the lists can hold
    bits.u(1)  # gaps_in_frame_num_allowed
    bits.ue(), bits.ue()  # size in macroblocks
    sps["frame_mbs_only"] = bool(bits.u(1))
    return sps


def _parse_pps(bits: _Bits) -> dict:
    """The fields of a picture parameter set that slice headers need before num_ref_idx_active."""
    pps = {"id": bits.ue(), "sps": bits.ue()}
    bits.u(1)  # entropy_coding_mode
    pps["bottom_field_poc"] = bool(bits.u(1))
    if bits.ue():  # slice groups (FMO, Baseline only): not parsed
        raise ValueError("slice groups")
    pps["list0"], pps["list1"] = bits.ue() + 1, bits.ue() + 1
    bits.u(3)  # weighted prediction
    bits.se(), bits.se(), bits.se()  # QP
    bits.u(2)  # deblocking filter control, constrained intra
    pps["redundant_pic_cnt"] = bool(bits.u(1))
    return pps


def _length_prefixed_units(data: memoryview, size: int):
    """The NAL units of an avcC (mp4/mkv) access unit."""
    position = 0
    while position + size < len(data):
        length = int.from_bytes(data[position:position + size], "big")
        position += size
        if length:
            yield data[position:position + length]
        position += length


def _annex_b_units(data: memoryview):
    """The NAL units of an Annex-B (start code) stream or access unit."""
    raw = bytes(data)
    starts = []
    position = raw.find(b"\x00\x00\x01")
    while position >= 0:
        starts.append(position + 3)
        position = raw.find(b"\x00\x00\x01", position + 3)
    for begin, end in zip(starts, starts[1:] + [len(raw) + 3]):
        unit = data[begin:end - 3]
        if len(unit):
            yield unit  # trailing zero bytes of a 4-byte start code do not matter for headers


# --- rasterisation ----------------------------------------------------------------------------------------------


def _rasterise(vectors: np.ndarray, distances: np.ndarray, height: int, width: int, block: int,
               scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """float32 [ceil(height/block), ceil(width/block), 2]: the area-weighted mean forward content motion
    (pixels per source frame) of the exported `vectors` covering each cell; 0 where none does. `distances`
    float [N]: each vector's reference distance in frames. `scale` maps a frame of another size onto
    (height, width)."""
    grid_h, grid_w = -(-height // block), -(-width // block)
    if len(vectors) == 0:
        return np.zeros((grid_h, grid_w, 2), np.float32)
    motion_scale = np.maximum(vectors["motion_scale"], 1).astype(np.float32)
    factor = np.where(vectors["source"] < 0, -1.0, 1.0).astype(np.float32) / (distances * motion_scale)
    u = vectors["motion_x"] * factor * np.float32(scale[0])
    v = vectors["motion_y"] * factor * np.float32(scale[1])
    w, h = vectors["w"].astype(np.int64), vectors["h"].astype(np.int64)
    x0 = vectors["dst_x"].astype(np.int64) - w // 2
    y0 = vectors["dst_y"].astype(np.int64) - h // 2
    unit = int(np.gcd.reduce(np.concatenate([x0, y0, w, h]))) if scale == (1.0, 1.0) else 0
    if unit and (unit % block == 0 or block % unit == 0):
        return _paint_aligned(u, v, x0, y0, w, h, unit, height, width, block)
    # Any other layout: per-cell overlaps (areas) of every block.
    cols, col_overlap = _cells(np.clip(x0 * scale[0], 0, width), np.clip((x0 + w) * scale[0], 0, width), block)
    rows, row_overlap = _cells(np.clip(y0 * scale[1], 0, height), np.clip((y0 + h) * scale[1], 0, height), block)
    weight = row_overlap[:, :, None] * col_overlap[:, None, :]  # [N, ny, nx]
    keep = weight > 0
    cell = (rows[:, :, None] * grid_w + cols[:, None, :])[keep]
    weight = weight[keep]
    owner = np.broadcast_to(np.arange(len(vectors))[:, None, None], keep.shape)[keep]
    count = grid_h * grid_w
    sums = np.stack([np.bincount(cell, weight * u[owner], minlength=count),
                     np.bincount(cell, weight * v[owner], minlength=count)])
    field = _mean(np.bincount(cell, weight, minlength=count), sums)
    return field.reshape(2, grid_h, grid_w).transpose(1, 2, 0).copy()


def _paint_aligned(u, v, x0, y0, w, h, unit, height, width, block) -> np.ndarray:
    """`_rasterise` for blocks whose corners and sizes are multiples of `unit` (16 or 8 pixels for these
    codecs), a multiple or divisor of `block`. Each block adds its value at its rectangle's four corners of
    a difference array on the unit grid, whose 2-D running sum is the sum over the blocks covering each unit
    cell; the unit cells' means are repeated onto a finer block grid, or their sums weighted by their area
    inside the frame and summed into a coarser one."""
    grid_h, grid_w = -(-height // block), -(-width // block)
    rows, cols = -(-height // unit), -(-width // unit)
    r0, r1 = np.clip(y0 // unit, 0, rows), np.clip((y0 + h) // unit, 0, rows)
    c0, c1 = np.clip(x0 // unit, 0, cols), np.clip((x0 + w) // unit, 0, cols)
    stride = cols + 1
    corners = np.concatenate([r0 * stride + c0, r0 * stride + c1, r1 * stride + c0, r1 * stride + c1])
    sign = np.repeat(np.array([1.0, -1.0, -1.0, 1.0]), len(u))
    size = (rows + 1) * stride
    painted = np.stack([np.bincount(corners, sign, minlength=size),
                        np.bincount(corners, sign * np.tile(u, 4), minlength=size),
                        np.bincount(corners, sign * np.tile(v, 4), minlength=size)])
    painted = painted.reshape(3, rows + 1, stride).cumsum(axis=1).cumsum(axis=2)[:, :rows, :cols]
    if unit >= block:
        k = unit // block
        field = _mean(painted[0], painted[1:]).transpose(1, 2, 0)
        field = np.broadcast_to(field[:, None, :, None], (rows, k, cols, k, 2)).reshape(rows * k, cols * k, 2)
        return np.ascontiguousarray(field[:grid_h, :grid_w])
    k = block // unit
    inside_rows = np.clip(height - np.arange(rows) * unit, 0, unit)
    inside_cols = np.clip(width - np.arange(cols) * unit, 0, unit)
    weighted = np.zeros((3, grid_h * k, grid_w * k))
    weighted[:, :rows, :cols] = painted * (inside_rows[:, None] * inside_cols[None, :])
    painted = weighted.reshape(3, grid_h, k, grid_w, k).sum(axis=(2, 4))
    return _mean(painted[0], painted[1:]).transpose(1, 2, 0).copy()


def _mean(total: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """float32 sums / total (sums: [2, ...] over total's shape), 0 where total is 0 (the running sums leave
    rounding residue there, hence the threshold)."""
    covered = total > 1e-6
    share = np.where(covered, 1.0 / np.where(covered, total, 1.0), 0.0)
    return (sums * share).astype(np.float32)


def _cells(start: np.ndarray, end: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(cell index int64 [N, n], overlap length in pixels float64 [N, n]) of the intervals [start, end) with
    the cells [c·block, (c+1)·block); n is the most cells one interval touches, overlap 0 past it."""
    first = np.floor(start / block).astype(np.int64)
    last = np.ceil(end / block).astype(np.int64)  # exclusive
    span = max(int((last - first).max()), 1)
    index = first[:, None] + np.arange(span)[None, :]
    overlap = np.minimum(end[:, None], (index + 1) * block) - np.maximum(start[:, None], index * block)
    overlap = np.maximum(overlap, 0)
    return np.where(overlap > 0, index, 0), overlap
