"""Codec motion vectors and key frames (`stjax.data.motion_vectors`), on videos made here with PyAV.

The videos: a textured square moving (+2, −1) px per frame over a static textured background, 96×128,
30 frames at 25 fps, encoded as stjax's synthetic set does (libx264 crf 20 veryfast: one I-frame,
B-pyramid, one reference per list), as CMD's re-encoding does (MPEG-4 Part 2, GOP 12, no B-frames),
as libx264 with GOP 12 and no B-frames (default preset: 3 references, so some blocks point 2 or 3
frames back), and with x264's defaults (3 references and B-pyramid).
"""
from __future__ import annotations

import fractions
import io
import math

import av
import numpy as np
import pytest
from PIL import Image

from stjax.data import motion_vectors as mv
from stjax.data import video_io

FPS = 25
FRAMES, HEIGHT, WIDTH = 30, 96, 128
VELOCITY = (2, -1)  # (dx, dy) pixels per frame of the square
SQUARE, START = 40, (40, 16)  # side; (y, x) of its top-left corner in frame 0

SETUPS = {
    "x264_synthetic": ("libx264", {"crf": "20", "preset": "veryfast"}),  # make_synthetic.write_mp4's settings
    "mpeg4_gop12": ("mpeg4", {"g": "12", "bf": "0"}),  # CMD / CoViAR
    "x264_gop12_no_b": ("libx264", {"g": "12", "bf": "0"}),
    "x264_defaults": ("libx264", {}),
}


def _texture(rng, height, width):
    """uint8-valued float [height, width, 3]: random 4×4-pixel blocks (motion search locks on them)."""
    cells = rng.uniform(0, 255, (height // 4 + 1, width // 4 + 1, 3))
    return np.kron(cells, np.ones((4, 4, 1)))[:height, :width]


def _frames(count=FRAMES, height=HEIGHT, width=WIDTH):
    rng = np.random.default_rng(0)
    background, square = _texture(rng, height, width), _texture(rng, SQUARE, SQUARE)
    frames = []
    for i in range(count):
        image = background.copy()
        y, x = START[0] + VELOCITY[1] * i, START[1] + VELOCITY[0] * i
        image[y:y + SQUARE, x:x + SQUARE] = square
        frames.append(image.astype(np.uint8))
    return np.stack(frames)


def _encode(path, frames, codec, options=None, fmt=None, pix_fmt="yuv420p"):
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.codec_context.thread_count = 1
        if options:
            stream.options = dict(options)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def _decoded(path):
    """(key_frame flags, picture types) of every frame, decoded independently of the module under test."""
    with av.open(path) as container:
        frames = list(container.decode(video=0))
    return np.array([f.key_frame for f in frames]), np.array([int(f.pict_type) for f in frames])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion_vectors")
    frames = _frames()
    return {name: _encode(root / f"{name}.mp4", frames, codec, options) for name, (codec, options) in SETUPS.items()}


def _interior(field, i, block=4, scale=1.0, margin=8):
    """[cells, 2]: the cells of `field` wholly inside the square of source frame i, `margin` pixels in from
    its edges, on a frame scaled by `scale`."""
    y, x = START[0] + VELOCITY[1] * i, START[1] + VELOCITY[0] * i
    r0, r1 = math.ceil((y + margin) * scale / block), math.floor((y + SQUARE - margin) * scale / block)
    c0, c1 = math.ceil((x + margin) * scale / block), math.floor((x + SQUARE - margin) * scale / block)
    assert r1 - r0 >= 2 and c1 - c0 >= 2
    return field[r0:r1, c0:c1].reshape(-1, 2)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_read_stream_recovers_the_translation(videos, setup):
    stream = mv.read_stream(videos[setup])
    key_frames, pict_types = _decoded(videos[setup])
    assert stream.num_frames == FRAMES and stream.codec == {"libx264": "h264", "mpeg4": "mpeg4"}[SETUPS[setup][0]]
    assert stream.fields.shape == (FRAMES, HEIGHT // 4, WIDTH // 4, 2) and stream.fields.dtype == np.float32
    assert (stream.height, stream.width, stream.block, stream.source_fps) == (HEIGHT, WIDTH, 4, FPS)
    np.testing.assert_allclose(stream.times, np.arange(FRAMES) / FPS, atol=1e-6)
    np.testing.assert_array_equal(stream.pict_types, pict_types)
    np.testing.assert_array_equal(stream.key_frames, pict_types == 1)
    assert stream.warnings == []
    if setup in ("x264_synthetic", "x264_defaults"):
        assert (pict_types == 3).sum() >= 8  # B-frames, forward and backward references
    else:
        np.testing.assert_array_equal(np.flatnonzero(key_frames), [0, 12, 24])
    for i in range(FRAMES):
        if pict_types[i] == 1:
            assert not stream.fields[i].any()  # I-frames: no motion
            continue
        square = np.median(_interior(stream.fields[i], i), axis=0)
        np.testing.assert_allclose(square, VELOCITY, atol=0.25, err_msg=f"frame {i} ({pict_types[i]})")
        # The static background below the square's path (y >= 84) reads ~0.
        background = stream.fields[i][84 // 4:].reshape(-1, 2)
        assert np.percentile(np.abs(background), 95) <= 0.25, f"frame {i}"


@pytest.mark.parametrize("container", ["h264", "avi"])
def test_streams_without_usable_timestamps(tmp_path, container):
    """A raw H.264 stream has no packet timestamps and AVI gives B-frames their decode times: references
    are found by decode rank and display order all the same."""
    codec, options = SETUPS["x264_defaults"]
    path = _encode(tmp_path / f"clip.{container}", _frames(), codec, options, fmt=container)
    stream = mv.read_stream(path)
    assert stream.num_frames == FRAMES and stream.warnings == []
    _, pict_types = _decoded(path)
    assert (pict_types == 3).sum() >= 8
    for i in np.flatnonzero(pict_types != 1):
        np.testing.assert_allclose(np.median(_interior(stream.fields[i], i), axis=0), VELOCITY, atol=0.25,
                                   err_msg=f"frame {i}")


def test_mpeg4_b_frames_are_flagged(tmp_path):
    path = _encode(tmp_path / "b.mp4", _frames(12), "mpeg4", {"g": "12", "bf": "1", "b": "4M"})
    stream = mv.read_stream(path)
    assert (stream.pict_types == 3).any()
    assert any("MPEG-4 Part 2 B-frames" in w and "-bf 0" in w for w in stream.warnings), stream.warnings


def test_reference_lists_of_the_x264_setups(videos):
    """One reference per list (veryfast) needs no luma check; x264's default ref=3 does."""
    def lists(path):
        with av.open(path) as container:
            stream = container.streams.video[0]
            headers = mv._H264Headers(stream.codec_context.extradata)
            return headers, [headers.picture(i, memoryview(p)) for i, p in enumerate(container.demux(stream))
                             if p.size]

    headers, pictures = lists(videos["x264_synthetic"])
    assert not headers.may_check and max(max(p.list0, p.list1) for p in pictures) == 1
    assert [p.idr for p in pictures].count(True) == 1 and not pictures[2].reference  # a B-frame not kept
    headers, pictures = lists(videos["x264_gop12_no_b"])
    assert headers.may_check and max(p.list0 for p in pictures) >= 3
    assert [p.idr for p in pictures].count(True) == 3


def test_candidate_references_start_at_the_last_idr_picture(videos, monkeypatch):
    """With x264 ref=3 and IDR pictures at 0, 12, 24, a P-frame k frames after an IDR picture has
    min(k, 3) candidate references (list 0 has 4 entries, one a weighted copy, weightp=2; the sequence
    holds 3 frames): the frames right after one have a single candidate, so no luma check."""
    calls = []
    check = mv._best_reference
    monkeypatch.setattr(mv, "_best_reference", lambda v, luma, refs: calls.append(len(refs)) or check(v, luma, refs))
    mv.read_stream(videos["x264_gop12_no_b"])
    after_idr = [min(k, 3) for k in range(2, 12)]
    assert calls == after_idr + after_idr + [min(k, 3) for k in range(2, 6)]


def test_extract_at_the_source_rate_and_keyframes(videos):
    path = videos["mpeg4_gop12"]
    motion, keyframes = mv.extract(path)
    assert motion.dtype == np.int8 and motion.shape == (FRAMES, HEIGHT // 4, WIDTH // 4, 2)
    key_frames, pict_types = _decoded(path)
    np.testing.assert_array_equal(keyframes, key_frames)
    np.testing.assert_array_equal(np.flatnonzero(keyframes), [0, 12, 24])
    for i in np.flatnonzero(pict_types != 1):
        square = np.median(_interior(motion[i], i), axis=0) / mv.MOTION_UNITS_PER_PIXEL
        np.testing.assert_allclose(square, VELOCITY, atol=0.25)


@pytest.mark.parametrize("setup", ["x264_synthetic", "x264_gop12_no_b"])
def test_extract_rescales_to_the_stored_size_and_rate(videos, setup):
    """At short side 72 (× 0.75) and 12.5 fps (2 source frames per grid frame) the square moves
    (2, −1) × 0.75 × 2 = (3, −1.5) stored pixels per stored frame: (12, −6) in quarter pixels."""
    path = videos[setup]
    motion, keyframes = mv.extract(path, fps=12.5, short_side=72)
    video = video_io.decode_video(path, fps=12.5, short_side=72)
    assert (video.height, video.width) == (72, 96)
    assert motion.shape == (video.num_frames, 18, 24, 2) == (15, 18, 24, 2)
    _, pict_types = _decoded(path)
    np.testing.assert_array_equal(np.flatnonzero(keyframes), np.flatnonzero(pict_types[::2] == 1))
    for k in range(video.num_frames):
        if pict_types[2 * k] == 1:  # grid frame k shows source frame 2k
            assert not motion[k].any()
            continue
        square = np.median(_interior(motion[k], 2 * k, scale=0.75), axis=0)
        np.testing.assert_allclose(square, (12, -6), atol=1, err_msg=f"grid frame {k}")


def test_extract_has_decode_videos_length_at_any_rate_and_limit(videos):
    path = videos["x264_synthetic"]
    for fps, max_seconds in ((None, None), (10.0, None), (60.0, None), (30.0, 0.5), (None, 0.3)):
        motion, keyframes = mv.extract(path, fps=fps, max_seconds=max_seconds)
        video = video_io.decode_video(path, fps=fps, max_seconds=max_seconds)
        assert motion.shape[0] == keyframes.shape[0] == video.num_frames, (fps, max_seconds)
        assert keyframes[0] and keyframes.sum() == 1  # one I-frame, flagged once however often it is shown
    assert mv.read_stream(path, max_seconds=0.5).num_frames == 13  # frames at 0, 0.04, ..., 0.48 s


def test_on_grid_shows_the_frames_decode_video_shows(tmp_path):
    """Frame i carries a patch of grey level 20 + 12·i; a field that encodes i tells which source frame each
    grid frame shows."""
    count = 16
    frames = _frames(count)
    frames[:, 80:, :16] = (20 + 12 * np.arange(count, dtype=np.uint8))[:, None, None, None]
    path = _encode(tmp_path / "marked.mp4", frames, "mpeg4", {"g": "5", "bf": "0", "b": "2M"})
    stream = mv.read_stream(path)
    for fps in (7.0, 25.0, 60.0):
        # dx = i / (stored units per source pixel per source frame): stored value i
        per_pixel = mv.MOTION_UNITS_PER_PIXEL * FPS / fps
        stream.fields = np.broadcast_to(np.arange(count, dtype=np.float32)[:, None, None, None] / per_pixel,
                                        stream.fields.shape).copy()
        video = video_io.decode_video(path, fps=fps)
        motion, keyframes = mv.on_grid(stream, fps, video.num_frames, (HEIGHT, WIDTH))
        shown = motion[:, 0, 0, 0].astype(int)
        grey = [np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"))[84:92, 4:12].mean()
                for jpeg in video.jpeg_frames]
        np.testing.assert_array_equal(shown, np.rint((np.array(grey) - 20) / 12).astype(int), err_msg=f"{fps}")
        assert len(set(shown)) == (count if fps >= FPS else video.num_frames)
        first_shown = np.r_[True, shown[1:] != shown[:-1]]
        np.testing.assert_array_equal(keyframes, (shown % 5 == 0) & first_shown)


def _stream(times, key_frames, fields, height=8, width=12, block=4, fps=25.0):
    return mv.StreamMotion(
        times=np.asarray(times, np.float64), key_frames=np.asarray(key_frames), pict_types=np.where(key_frames, 1, 2),
        fields=np.asarray(fields, np.float32), height=height, width=width, block=block, source_fps=fps,
        codec="test", warnings=[])


def test_on_grid_rule_and_units():
    times = [0.0, 0.04, 0.08, 0.12]
    fields = np.zeros((4, 2, 3, 2), np.float32)
    fields[..., 0] = np.arange(1, 5)[:, None, None]  # frame i: dx = i + 1 source px per source frame
    fields[..., 1] = -2
    stream = _stream(times, [True, False, True, False], fields)
    # Higher rate: each source frame shown twice, motion per grid frame halved, key frames flagged once.
    motion, keys = mv.on_grid(stream, 50.0, 8, (8, 12))
    np.testing.assert_array_equal(motion[:, 0, 0, 0], np.array([1, 1, 2, 2, 3, 3, 4, 4]) * 4 // 2)
    np.testing.assert_array_equal(motion[:, 0, 0, 1], [-4] * 8)
    np.testing.assert_array_equal(keys, [1, 0, 0, 0, 1, 0, 0, 0])
    # Lower rate: grid times 0, 0.1, 0.2 s show source frames 0, 2 (0.08 s) and 3; motion × 2.5.
    motion, keys = mv.on_grid(stream, 10.0, 3, (8, 12))
    np.testing.assert_array_equal(motion[:, 0, 0, 0], [10, 30, 40])
    np.testing.assert_array_equal(keys, [1, 1, 0])
    # More grid frames than the stream covers: the last source frame repeats, its key flag does not.
    motion, keys = mv.on_grid(_stream(times, [False, False, False, True], fields), 25.0, 6, (8, 12))
    np.testing.assert_array_equal(motion[:, 0, 0, 0], [4, 8, 12, 16, 16, 16])
    np.testing.assert_array_equal(keys, [0, 0, 0, 1, 0, 0])
    # 1 ms tolerance: timestamps rounded to milliseconds (30000/1001 fps) keep one source frame per grid frame.
    ntsc = 30000 / 1001
    rounded = _stream(np.round(np.arange(4) / ntsc, 3), [True, False, False, False], fields, fps=ntsc)
    motion, _ = mv.on_grid(rounded, ntsc, 4, (8, 12))
    np.testing.assert_array_equal(motion[:, 0, 0, 0], [4, 8, 12, 16])
    # Clipping to int8.
    motion, _ = mv.on_grid(_stream([0.0], [True], fields[:1] * 40), 25.0, 1, (8, 12))
    assert motion[0, 0, 0, 0] == 127 and motion[0, 0, 0, 1] == -127


def test_on_grid_resizes_by_area_and_scales_the_components():
    fields = np.zeros((1, 2, 4, 2), np.float32)  # 8×16 source, 4-px cells: left half dx=4, right half dx=8
    fields[0, :, :2, 0], fields[0, :, 2:, 0] = 4, 8
    fields[0, :, :, 1] = 2
    stream = _stream([0.0], [True], fields, height=8, width=16)
    motion, _ = mv.on_grid(stream, 25.0, 1, (4, 8))  # half size: one row of two cells
    assert motion.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(motion[0, 0, :, 0], [4 * 4 // 2, 8 * 4 // 2])  # dx × out_w / width
    np.testing.assert_array_equal(motion[0, 0, :, 1], [2 * 4 // 2] * 2)
    motion, _ = mv.on_grid(stream, 25.0, 1, (4, 4))  # a single 4×4 cell: the area mean, dx × 1/4
    np.testing.assert_array_equal(motion[0, 0, 0], [round(6 * 4 / 4), round(2 * 4 / 2)])


def _brute_force(vectors, distances, height, width, block):
    """The pixel-area-weighted mean of the vectors covering each cell, one pixel at a time."""
    total, summed = np.zeros((height, width)), np.zeros((height, width, 2))
    for vector, d in zip(vectors, distances):
        sign = -1 if vector["source"] < 0 else 1
        motion = sign * np.array([vector["motion_x"], vector["motion_y"]]) / vector["motion_scale"] / d
        x0, y0 = int(vector["dst_x"]) - vector["w"] // 2, int(vector["dst_y"]) - vector["h"] // 2
        rows, cols = slice(max(y0, 0), max(y0 + vector["h"], 0)), slice(max(x0, 0), max(x0 + vector["w"], 0))
        total[rows, cols] += 1
        summed[rows, cols] += motion
    grid_h, grid_w = -(-height // block), -(-width // block)
    padded_total = np.zeros((grid_h * block, grid_w * block))
    padded_sum = np.zeros((grid_h * block, grid_w * block, 2))
    padded_total[:height, :width], padded_sum[:height, :width] = total, summed
    cell_total = padded_total.reshape(grid_h, block, grid_w, block).sum(axis=(1, 3))
    cell_sum = padded_sum.reshape(grid_h, block, grid_w, block, 2).sum(axis=(1, 3))
    return np.where(cell_total[..., None] > 0, cell_sum / np.maximum(cell_total, 1e-9)[..., None], 0)


def test_rasterise_is_the_area_weighted_mean():
    rng = np.random.default_rng(1)
    dtype = [("source", "i4"), ("w", "u1"), ("h", "u1"), ("src_x", "i2"), ("src_y", "i2"), ("dst_x", "i2"),
             ("dst_y", "i2"), ("flags", "u8"), ("motion_x", "i4"), ("motion_y", "i4"), ("motion_scale", "u2")]
    height, width = 40, 56  # the macroblocks of the last row and column reach past the frame
    vectors = []
    for mb_y in range(0, height, 16):
        for mb_x in range(0, width, 16):
            if rng.random() < 0.2:
                continue  # an intra macroblock
            w, h = [(16, 16), (16, 8), (8, 16), (8, 8)][rng.integers(4)]
            for y in range(mb_y, mb_y + 16, h):
                for x in range(mb_x, mb_x + 16, w):
                    for source in (-1, 1)[:rng.integers(1, 3)]:
                        vectors.append((source, w, h, 0, 0, x + w // 2, y + h // 2, 0,
                                        rng.integers(-40, 41), rng.integers(-40, 41), 4))
    vectors = np.array(vectors, dtype)
    distances = rng.integers(1, 4, len(vectors)).astype(np.float32)
    for block in (1, 3, 4, 8, 16, 32):
        field = mv._rasterise(vectors, distances, height, width, block)
        np.testing.assert_allclose(field, _brute_force(vectors, distances, height, width, block), atol=1e-5,
                                   err_msg=f"block {block}")
    assert not mv._rasterise(vectors[:0], distances[:0], height, width, 4).any()


def test_codecs_without_motion_vectors_are_refused(tmp_path):
    frames = _frames(count=6)
    mjpeg = _encode(tmp_path / "clip.avi", frames, "mjpeg", fmt="avi", pix_fmt="yuvj420p")
    with pytest.raises(video_io.VideoReadError, match=r"mjpeg stream.*H\.264, MPEG-4 Part 2.*-c:v mpeg4 -g 12 -bf 0"):
        mv.read_stream(mjpeg)
    with pytest.raises(video_io.VideoReadError, match="mjpeg"):
        mv.extract(mjpeg, fps=10)
    intra = _encode(tmp_path / "intra.mp4", frames, "libx264", {"g": "1"})  # an intra-only H.264 stream
    with pytest.raises(video_io.VideoReadError, match="no frame of this h264 stream"):
        mv.read_stream(intra)
    single = _encode(tmp_path / "single.avi", frames[:1], "mjpeg", fmt="avi", pix_fmt="yuvj420p")
    stream = mv.read_stream(single)  # one frame has no motion to miss
    assert stream.num_frames == 1 and not stream.fields.any() and stream.key_frames.tolist() == [True]


def test_unreadable_files(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(video_io.VideoReadError, match="cannot open"):
        mv.read_stream(text)
    audio = tmp_path / "sound.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(video_io.VideoReadError, match="no video stream"):
        mv.read_stream(audio)


def test_a_truncated_file_keeps_its_prefix(tmp_path):
    frames = _frames()
    whole = _encode(tmp_path / "whole.mkv", frames, "mpeg4", {"g": "12", "bf": "0", "b": "2M"})
    data = open(whole, "rb").read()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    stream = mv.read_stream(cut)
    assert 0.4 * FRAMES < stream.num_frames < FRAMES
    assert any("truncated" in w or "stopped early" in w for w in stream.warnings), stream.warnings
    full = mv.read_stream(whole)
    assert full.warnings == []
    n = stream.num_frames - 1  # the last kept frame may be damaged; the ones before it are the same
    np.testing.assert_array_equal(stream.fields[:n], full.fields[:n])
    np.testing.assert_array_equal(stream.times, full.times[:stream.num_frames])
    # The RGB pass may keep a frame more or less: the grid repeats the last frame to its length.
    motion, keyframes = mv.on_grid(stream, FPS, stream.num_frames + 3, (HEIGHT, WIDTH))
    np.testing.assert_array_equal(motion[-4:], np.broadcast_to(motion[-4], motion[-4:].shape))
    assert not keyframes[-3:].any()
