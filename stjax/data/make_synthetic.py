"""Deterministic generator of the built-in synthetic video dataset ("synthetic motions").

Run as::

    python -m stjax.data.make_synthetic --out DIR [--num_train 2000] [--num_test 500]
        [--size 64] [--seconds 2.0] [--fps 25] [--seed 0] [--workers N]

Output (real H.264 mp4 files, libx264 / yuv420p, written with PyAV)::

    DIR/<class_name>/<split>_<index:06d>.mp4
    DIR/train.txt, DIR/test.txt       one relative path per line
    DIR/synthetic_meta.json           generator arguments, class list, version (written last)

``--kind charades`` writes a Charades-like set instead (multi-label: several motions one after the
other in one video), in the Charades v1 layout, so that `python -m stjax.data.build --dataset charades
--manual_dir DIR` builds it like the real one (the `synthetic_charades` dataset renders and builds it
on first use)::

    DIR/Charades_v1_classes.txt       c000 slide ... c008 bob: the motions but `still`
    DIR/Charades_v1_train.csv         one row per video; `actions` = `cNNN START END;...` (seconds)
    DIR/Charades_v1_test.csv
    DIR/Charades_v1_480/<id>.mp4      id = TR00000..., TE00000...
    DIR/synthetic_meta.json

Each video holds 2–4 (``--segments``) actions of distinct classes in consecutive segments of random
length (each segment's objects first stand still for up to a quarter of it); the nuisances are drawn
as for the motions set and continue across segments, only the motion changes. Suggested size for the
CPU: ``--seconds 4 --fps 24`` (Charades' frame rate), where a 0.6 s clip sees mostly one action.

Why it looks like this
----------------------
The rho-framework objectives (rho-SimCLR/MoCo/BYOL/SwAV) treat clips taken at
*different times of the same video* as positives, so they learn whatever persists
over time in a video and survives the augmentations. This set is built so that
the class is what persists, and little else does:

* Class = how the two objects of a video move (10 classes, CLASS_NAMES): still,
  slide (sideways), fall, rise, orbit, spin, pulse (grow/shrink), blink, shake
  (left-right) and bob (up-down). Horizontal flips keep every class (directions
  and turning senses are random within a class), every pattern shows within a
  0.6 s clip, and a random crop of a fifth of the frame still sees it.
* Nuisances drift *within* a video and are drawn the same way for every class
  (the random stream for them does not depend on the class): object hues rotate
  at 0.25-0.6 cycles/s, the background's two colours drift in hue, its
  plane-wave texture turns and slides, the lighting fluctuates.
* Per-video constants other than the class are kept few and weak: the texture's
  spatial frequencies, contrast and drift rates are the same for every video, the
  object size varies by +-5 %. Only the two objects' shapes (square, triangle,
  cross, bar) and places, and the motion's speed and phase, stay random per video.

Measured with the demo (rho-BYOL, r3d_tiny, 500 steps, 2 CPU cores): the linear
probe gap over random init grew from 0.08 (8-12 small objects, per-video texture
frequencies and drift rates) to 0.11 (texture made the same for every video) to
0.13 (objects of radius 0.18-0.2 of the frame, calmer texture). v2 (class = shape x
{bounce, orbit} of one object) gave 0.10; a supervised r3d_tiny with the full
augmentation learned it more slowly than it learns these motions.

Consequence: two clips taken at the same time (timespan 0) share colours, so a
contrastive model can match them by colour; clips far apart in time share only
the motion, so longer timespans should improve a linear probe on the class.

Each video's random stream is ``np.random.default_rng([seed, split_id, index])``,
so the output is independent of the worker count. The encoder runs with one
thread so the files are byte-for-byte reproducible on a given libx264 build; on
CPUs with AVX-512 it is limited to AVX2 code, because libx264's AVX-512 paths
(PyAV 17-18 wheels, x264 core 165) encode the same frames differently from one
call to the next.

This module imports only numpy and av (and tqdm for the progress bar); no TF.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

VERSION = "stjax-synthetic-v3"
META_NAME = "synthetic_meta.json"
PARTIAL_NAME = ".synthetic_meta.partial.json"  # marks a run in progress (for resuming)
SPLITS = ("train", "test")
_SPLIT_IDS = {"train": 0, "test": 1}

# The class is how the objects move; every object of a video moves that way.
CLASS_NAMES: tuple[str, ...] = (
    "still",   # objects stay where they are
    "slide",   # sideways, left or right, wrapping around the frame
    "fall",    # downwards, wrapping
    "rise",    # upwards, wrapping
    "orbit",   # small circles, clockwise or not
    "spin",    # rotate in place, either way
    "pulse",   # grow and shrink
    "blink",   # vanish and reappear
    "shake",   # fast left-right oscillation
    "bob",     # fast up-down oscillation
)
SHAPES = ("square", "triangle", "cross", "bar")  # none is round, so spinning shows

CODEC = {"codec": "libx264", "pix_fmt": "yuv420p", "crf": 20, "preset": "veryfast"}



def _x264_params() -> dict:
    """Encoder options that keep libx264 deterministic on this CPU (see the module docstring)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        try:  # other systems: numpy's view of the CPU
            from numpy._core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return {}
        flags = {name.lower() for name, present in features.items() if present}
    if "avx512f" in flags and "avx2" in flags:
        return {"x264-params": "asm=avx2"}  # every CPU with AVX-512 has all of x264's AVX2 set
    return {}


# Geometry relative to the frame size, times in seconds.
_N_OBJECTS = (2, 2)
_OBJ_RADIUS = (0.18, 0.2)  # nominal radius R
_EXTENT = 1.3  # every shape, at the largest pulse scale, fits in a circle of radius _EXTENT * R * _PULSE_MAX
_SPEED = (0.4, 0.6)  # slide / fall / rise, frame sizes per second
_ORBIT_RADIUS = (0.12, 0.18)
_ORBIT_PERIOD = (1.0, 1.5)
_SPIN_RATE = (0.4, 0.8)  # turns per second
_PULSE_PERIOD = (0.5, 0.9)
_PULSE_DEPTH = 0.4  # scale 1 +- depth
_PULSE_MAX = 1.0 + _PULSE_DEPTH
_BLINK_PERIOD = (0.4, 0.7)
_SHAKE_AMPLITUDE = (0.08, 0.12)
_SHAKE_FREQ = (1.5, 2.5)  # Hz
# Background: _N_WAVES plane waves at fixed spatial frequencies (cycles per frame width), the
# same for every video, turning and drifting at fixed rates (rad/s) in random directions.
_WAVE_FREQ = (1.0, 1.5, 2.0)
_N_WAVES = len(_WAVE_FREQ)
_WAVE_TURN = (0.4, 0.4)
_WAVE_DRIFT = (1.0, 1.0)
_TEXTURE_CONTRAST = 0.3


# ----------------------------------------------------------------------------- rendering


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB; h in cycles (any real), s, v in [0, 1]. Returns [..., 3]."""
    h = np.asarray(h, np.float32)[..., None]
    s = np.asarray(s, np.float32)[..., None]
    v = np.asarray(v, np.float32)[..., None]
    n = np.array([5.0, 3.0, 1.0], np.float32)
    k = np.mod(n + 6.0 * h, 6.0)
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _sd_box(px, py, bx, by):
    dx = np.abs(px) - bx
    dy = np.abs(py) - by
    outside = np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
    return outside + np.minimum(np.maximum(dx, dy), 0.0)


def _sd_triangle(px, py, r):
    """Equilateral triangle with half side r (Inigo Quilez's formula)."""
    k = math.sqrt(3.0)
    px = np.abs(px) - r
    py = py + r / k
    fold = (px + k * py) > 0.0
    qx = np.where(fold, (px - k * py) * 0.5, px)
    qy = np.where(fold, (-k * px - py) * 0.5, py)
    qx = qx - np.clip(qx, -2.0 * r, 0.0)
    return -np.hypot(qx, qy) * np.sign(qy)


def _shape_sdf(shape: str, px, py, r):
    """Signed distance (pixels) to a shape of nominal radius r (scalar or broadcastable) at the origin."""
    if shape == "square":
        return _sd_box(px, py, 0.85 * r, 0.85 * r)
    if shape == "triangle":
        return _sd_triangle(px, py, 1.05 * r)
    if shape == "cross":
        return np.minimum(_sd_box(px, py, 1.1 * r, 0.36 * r), _sd_box(px, py, 0.36 * r, 1.1 * r))
    if shape == "bar":
        return _sd_box(px, py, 1.2 * r, 0.4 * r)
    raise ValueError(f"unknown shape {shape!r}; valid: {SHAPES}")


def _signed_uniform(rng, lo, hi, size=None):
    return rng.uniform(lo, hi, size) * rng.choice([-1.0, 1.0], size)


def _wrap(u, lo, hi):
    return lo + np.mod(u - lo, hi - lo)


def render_video(
    class_index: int,
    rng: np.random.Generator,
    size: int,
    num_frames: int,
    fps: float,
    *,
    return_mask: bool = False,
    first_frame: int = 0,
):
    """Render one video of class ``class_index``: uint8 array [T, size, size, 3].

    ``first_frame`` > 0 renders frames ``first_frame … first_frame + num_frames − 1`` of the video the
    same rng state renders from frame 0 (the draws do not depend on the frames rendered).

    All random draws happen in a fixed order that does not depend on the class, so
    the same rng state gives the same nuisances (background, lighting, number,
    shapes, sizes, colours and places of the objects) for every class; only the
    way the objects move differs. With ``return_mask=True`` also returns the
    objects' coverage in [0, 1], float32 [T, size, size].
    """
    if not 0 <= class_index < len(CLASS_NAMES):
        raise ValueError(f"class_index {class_index} out of range [0, {len(CLASS_NAMES)})")
    motion = CLASS_NAMES[class_index]
    S = float(size)
    f32 = np.float32
    t = (first_frame + np.arange(num_frames, dtype=np.float64)) / float(fps)  # seconds, [T]
    T3 = (num_frames, 1, 1)

    # ---- nuisances (class-independent draws) ----------------------------------
    # Background: two colours whose hues drift, mixed by a low-contrast texture of
    # plane waves whose directions rotate and phases drift.
    bg_h = rng.uniform(0.0, 1.0, 2)[:, None] + _signed_uniform(rng, 0.15, 0.45, 2)[:, None] * t
    bg_s = rng.uniform(0.3, 0.9, 2)
    bg_v = np.array([rng.uniform(0.08, 0.25), rng.uniform(0.25, 0.45)])
    bg_rgb = _hsv_to_rgb(bg_h, bg_s[:, None], bg_v[:, None])  # [2, T, 3]
    w_theta = rng.uniform(0.0, 2 * np.pi, _N_WAVES)[:, None] + _signed_uniform(rng, *_WAVE_TURN, _N_WAVES)[:, None] * t
    w_phase = rng.uniform(0.0, 2 * np.pi, _N_WAVES)[:, None] + _signed_uniform(rng, *_WAVE_DRIFT, _N_WAVES)[:, None] * t
    gain = 1.0 + rng.uniform(0.05, 0.15) * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 2 * np.pi))
    # Objects: how many, shapes, sizes, places, colours (hue drifting within a second or two).
    n = int(rng.integers(_N_OBJECTS[0], _N_OBJECTS[1] + 1))
    shape_ids = rng.integers(0, len(SHAPES), n)
    R = rng.uniform(*_OBJ_RADIUS, n) * S
    anchor = rng.uniform(0.2 * S, 0.8 * S, (n, 2))
    angle0 = rng.uniform(0.0, 2 * np.pi, n)
    obj_h = rng.uniform(0.0, 1.0, n)[:, None] + _signed_uniform(rng, 0.25, 0.6, n)[:, None] * t
    obj_s = rng.uniform(0.5, 1.0, n)
    obj_v = rng.uniform(0.8, 1.0, n)
    # ---- motion parameters (drawn for every class, used according to the class) --
    phase = rng.uniform(0.0, 2 * np.pi, n)[:, None]  # per object, for the periodic motions
    speed = rng.uniform(*_SPEED) * S * rng.uniform(0.8, 1.2, n)[:, None]  # px/s
    side = rng.choice([-1.0, 1.0])  # slide direction, shared by the video's objects
    orbit_r = rng.uniform(*_ORBIT_RADIUS, n)[:, None] * S
    orbit_w = 2 * np.pi / rng.uniform(*_ORBIT_PERIOD, n)[:, None] * rng.choice([-1.0, 1.0])
    spin_w = 2 * np.pi * rng.uniform(*_SPIN_RATE, n)[:, None] * rng.choice([-1.0, 1.0])
    pulse_w = 2 * np.pi / rng.uniform(*_PULSE_PERIOD, n)[:, None]
    blink_w = 2 * np.pi / rng.uniform(*_BLINK_PERIOD, n)[:, None]
    shake_a = rng.uniform(*_SHAKE_AMPLITUDE, n)[:, None] * S
    shake_w = 2 * np.pi * rng.uniform(*_SHAKE_FREQ, n)[:, None]

    cx = np.repeat(anchor[:, :1], num_frames, 1)  # [n, T]
    cy = np.repeat(anchor[:, 1:], num_frames, 1)
    angle = np.repeat(angle0[:, None], num_frames, 1)
    scale = np.ones((n, num_frames))
    visible = np.ones((n, num_frames))
    margin = _EXTENT * _PULSE_MAX * R[:, None]
    if motion == "slide":
        cx = _wrap(cx + side * speed * t, -margin, S + margin)
    elif motion == "fall":
        cy = _wrap(cy + speed * t, -margin, S + margin)
    elif motion == "rise":
        cy = _wrap(cy - speed * t, -margin, S + margin)
    elif motion == "orbit":
        cx = cx + orbit_r * np.cos(orbit_w * t + phase)
        cy = cy + orbit_r * np.sin(orbit_w * t + phase)
    elif motion == "spin":
        angle = angle + spin_w * t
    elif motion == "pulse":
        scale = 1.0 + _PULSE_DEPTH * np.sin(pulse_w * t + phase)
    elif motion == "blink":
        visible = np.clip(0.5 + 2.0 * np.sin(blink_w * t + phase), 0.0, 1.0)
    elif motion == "shake":
        cx = cx + shake_a * np.sin(shake_w * t + phase)
    elif motion == "bob":
        cy = cy + shake_a * np.sin(shake_w * t + phase)

    # ---- compose on a canvas padded so that every object window fits ------------
    # Background on the visible frame only; objects are drawn on a canvas padded so that
    # the window around an object entering or leaving the frame always fits.
    coords = np.arange(size, dtype=f32) + f32(0.5)  # pixel centres
    xn = (coords / f32(S) - f32(0.5))[None, None, :]
    yn = (coords / f32(S) - f32(0.5))[None, :, None]
    shp = (num_frames, size, size)
    tmp = np.empty(shp, f32)
    tex = np.zeros(shp, f32)
    for k in range(_N_WAVES):
        kx = (2 * np.pi * _WAVE_FREQ[k] * np.cos(w_theta[k])).astype(f32).reshape(T3)
        ky = (2 * np.pi * _WAVE_FREQ[k] * np.sin(w_theta[k])).astype(f32).reshape(T3)
        ax = kx * xn + w_phase[k].astype(f32).reshape(T3)  # [T, 1, W]
        ay = ky * yn  # [T, H, 1]
        np.multiply(np.sin(ax), np.cos(ay), out=tmp)
        tex += tmp
        np.multiply(np.cos(ax), np.sin(ay), out=tmp)
        tex += tmp
    tex *= f32(_TEXTURE_CONTRAST / _N_WAVES)
    tex += f32(0.5)
    np.clip(tex, 0.0, 1.0, out=tex)
    pad = int(math.ceil(2 * float(margin.max()))) + 2
    P = size + 2 * pad
    img = np.zeros((3, num_frames, P, P), f32)
    inner = (slice(None), slice(pad, pad + size), slice(pad, pad + size))
    c0 = bg_rgb[0].T.reshape(3, num_frames, 1, 1)
    dc = (bg_rgb[1] - bg_rgb[0]).T.reshape(3, num_frames, 1, 1)
    for ch in range(3):
        np.multiply(tex, dc[ch], out=tmp)
        tmp += c0[ch]
        img[ch][inner] = tmp
    cover = np.zeros((num_frames, P, P), f32) if return_mask else None

    # Each object is drawn in a small window that follows it: [T, W, W] instead of the full frame.
    ti = np.arange(num_frames)[:, None, None]
    for i in range(n):
        W = 2 * int(math.ceil(float(margin[i, 0]))) + 2
        ox = np.floor(cx[i]).astype(np.int64) - W // 2 + pad  # window origin, canvas pixels [T]
        oy = np.floor(cy[i]).astype(np.int64) - W // 2 + pad
        cols = ox[:, None, None] + np.arange(W)[None, None, :]  # [T, 1, W]
        rows = oy[:, None, None] + np.arange(W)[None, :, None]  # [T, W, 1]
        dx = (cols + 0.5 - pad - cx[i][:, None, None]).astype(f32)
        dy = (rows + 0.5 - pad - cy[i][:, None, None]).astype(f32)
        ca = np.cos(angle[i]).astype(f32).reshape(T3)
        sa = np.sin(angle[i]).astype(f32).reshape(T3)
        px = ca * dx + sa * dy
        py = ca * dy - sa * dx
        r = (R[i] * scale[i]).astype(f32).reshape(T3)
        alpha = np.clip(f32(0.5) - _shape_sdf(SHAPES[shape_ids[i]], px, py, r), 0.0, 1.0)
        alpha = alpha * visible[i].astype(f32).reshape(T3)
        col = _hsv_to_rgb(obj_h[i], obj_s[i], obj_v[i]).T.reshape(3, num_frames, 1, 1)  # [3, T, 1, 1]
        for ch in range(3):
            win = img[ch][ti, rows, cols]
            img[ch][ti, rows, cols] = win + alpha * (col[ch] - win)
        if cover is not None:
            cw = cover[ti, rows, cols]
            cover[ti, rows, cols] = cw + alpha * (1.0 - cw)

    g = gain.astype(f32).reshape(T3) * f32(255.0)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for ch in range(3):
        v = img[ch][inner] * g
        np.rint(v, out=v)
        np.clip(v, 0.0, 255.0, out=v)
        frames[..., ch] = v
    if return_mask:
        return frames, cover[inner]
    return frames


# ----------------------------------------------------------------------------- encoding


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def write_mp4(path, frames: np.ndarray, fps: float) -> None:
    """Encode uint8 [T, H, W, 3] RGB frames as H.264 (yuv420p) mp4 at ``path``.

    Writes to a temporary file in the same folder and renames it into place, so an
    interrupted run never leaves a partial file under the final name.
    """
    import av  # local import keeps module import cheap

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even height and width, got {h}x{w}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    rate = _fps_fraction(fps)
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(CODEC["codec"], rate=rate)
            stream.width = w
            stream.height = h
            stream.pix_fmt = CODEC["pix_fmt"]
            stream.codec_context.thread_count = 1
            stream.options = {
                "crf": str(CODEC["crf"]),
                "preset": CODEC["preset"],
                "threads": "1",
                **_x264_params(),
            }
            for i, arr in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                frame.pts = i
                frame.time_base = 1 / rate
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------- dataset

KINDS = ("motions", "charades")
CHARADES_VERSION = "stjax-synthetic-charades-v1"
# The Charades-like set's action classes: every motion but "still", which is what the objects do between
# actions; ids c000.. in this order.
ACTION_CLASSES: tuple[str, ...] = CLASS_NAMES[1:]
CHARADES_FILES = {"classes": "Charades_v1_classes.txt", "train": "Charades_v1_train.csv",
                  "test": "Charades_v1_test.csv", "videos": "Charades_v1_480"}
CHARADES_COLUMNS = ("id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
                    "descriptions", "actions", "length")
# `generate`'s arguments for the Charades-like set the `synthetic_charades` dataset renders by default.
CHARADES_DEFAULTS = dict(num_train=800, num_test=200, size=64, seconds=4.0, fps=24.0, seed=0, segments=(2, 4))
_MAX_LEAD = 0.25  # of a segment: how long its objects may stay still before its action starts


def _num_frames(seconds: float, fps: float) -> int:
    return max(1, int(round(seconds * fps)))


def _build_meta(num_train, num_test, size, seconds, fps, seed, kind="motions", segments=(2, 4)) -> dict:
    args = {"num_train": int(num_train), "num_test": int(num_test), "size": int(size),
            "seconds": float(seconds), "fps": float(fps), "seed": int(seed)}
    if kind == "motions":  # as it has always been written: a folder made before `kind` existed still matches
        return {"version": VERSION, "generator": "stjax.data.make_synthetic", "args": args,
                "num_frames": _num_frames(seconds, fps), "classes": list(CLASS_NAMES),
                "splits": {"train": int(num_train), "test": int(num_test)}, "encoding": dict(CODEC)}
    return {"version": CHARADES_VERSION, "generator": "stjax.data.make_synthetic",
            "args": {**args, "kind": kind, "segments": [int(s) for s in segments]},
            "num_frames": _num_frames(seconds, fps), "classes": list(ACTION_CLASSES),
            "splits": {"train": int(num_train), "test": int(num_test)}, "encoding": dict(CODEC)}


def _diff_meta(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{key}: missing in existing, requested {new[k]!r}")
            elif k not in new:
                out.append(f"{key}: existing {old[k]!r}, not in request")
            else:
                out.extend(_diff_meta(old[k], new[k], key))
        return out
    return [] if old == new else [f"{prefix}: existing {old!r} != requested {new!r}"]


def _video_list(num_train: int, num_test: int) -> list[tuple[str, int, tuple, str]]:
    """(split, index, schedule, relpath) for every video of the motions set; classes round-robin; a
    schedule is ((class_index, first frame, end frame), ...), here one class for the whole video."""
    out = []
    for split, n in (("train", num_train), ("test", num_test)):
        for i in range(n):
            c = i % len(CLASS_NAMES)
            out.append((split, i, ((c, 0, None),), f"{CLASS_NAMES[c]}/{split}_{i:06d}.mp4"))
    return out


def charades_schedule(seed: int, split: str, index: int, num_frames: int,
                      segments: tuple[int, int]) -> tuple[tuple[int, int, int], ...]:
    """The time line of one Charades-like video: ((class_index, first frame, end frame), ...) covering
    frames 0 … num_frames − 1. It holds k ∈ `segments` (inclusive) actions of distinct classes one after
    the other, each in a segment of random length whose objects first stay still for up to a quarter of
    it (class `still`); its own random stream, so the nuisances (the video's stream) are those of a video
    of the motions set."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index, 1])
    k = int(rng.integers(segments[0], segments[1] + 1))
    k = max(1, min(k, num_frames // 2, len(ACTION_CLASSES)))
    classes = 1 + rng.choice(len(ACTION_CLASSES), k, replace=False)  # CLASS_NAMES indices, not `still`
    bounds = np.round(np.cumsum(np.concatenate([[0.0], rng.dirichlet(np.full(k, 3.0))])) * num_frames)
    bounds = np.maximum.accumulate(np.clip(bounds.astype(int), 0, num_frames))
    bounds[-1] = num_frames
    out = []
    for c, a, b in zip(classes, bounds[:-1], bounds[1:]):
        if b - a < 2:
            continue
        lead = int(round(rng.uniform(0.0, _MAX_LEAD) * (b - a)))
        if lead:
            out.append((0, int(a), int(a + lead)))
        out.append((int(c), int(a + lead), int(b)))
    return tuple(out)


def _charades_list(num_train: int, num_test: int, num_frames: int, seed: int,
                   segments) -> list[tuple[str, int, tuple, str]]:
    out = []
    for split, n in (("train", num_train), ("test", num_test)):
        for i in range(n):
            schedule = charades_schedule(seed, split, i, num_frames, segments)
            out.append((split, i, schedule, f"{CHARADES_FILES['videos']}/{charades_id(split, i)}.mp4"))
    return out


def charades_id(split: str, index: int) -> str:
    return f"{split[:2].upper()}{index:05d}"


def charades_actions(schedule, fps: float) -> str:
    """The `actions` column of a schedule: `cNNN START END` (seconds) per action, `;`-separated."""
    return ";".join(f"c{c - 1:03d} {a / fps:.2f} {b / fps:.2f}" for c, a, b in schedule if c != 0)


def _render(schedule, rng_key, size: int, num_frames: int, fps: float) -> np.ndarray:
    """The frames of a schedule: each segment rendered from the video's own stream (`rng_key`), so the
    background and objects continue across segments and only the motion changes."""
    parts = []
    for c, a, b in schedule:
        b = num_frames if b is None else b
        parts.append(render_video(c, np.random.default_rng(rng_key), size, b - a, fps, first_frame=a))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _make_one(job) -> str:
    out_dir, split, index, schedule, rel, size, num_frames, fps, seed = job
    path = Path(out_dir) / rel
    if path.exists():  # complete: files only appear under their final name when done
        return rel
    frames = _render(schedule, [seed, _SPLIT_IDS[split], index], size, num_frames, fps)
    write_mp4(path, frames, fps)
    return rel


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _index_files(kind: str, videos, fps: float, seconds: float) -> dict[str, str]:
    """{file name: text} of the files that list the videos (written after them)."""
    if kind == "motions":
        return {f"{split}.txt": "".join(rel + "\n" for s, _, _, rel in videos if s == split) for split in SPLITS}
    import csv
    import io

    files = {CHARADES_FILES["classes"]: "".join(f"c{i:03d} {name}\n" for i, name in enumerate(ACTION_CLASSES))}
    for split in SPLITS:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(CHARADES_COLUMNS)
        for s, i, schedule, _ in videos:
            if s == split:
                writer.writerow([charades_id(s, i), "synthetic", "synthetic", 7, 7, "Yes", "", "", "",
                                 charades_actions(schedule, fps), f"{seconds:.2f}"])
        files[CHARADES_FILES[split]] = text.getvalue()
    return files


def _is_complete(out: Path, videos, index_files) -> bool:
    if not all((out / name).is_file() for name in index_files):
        return False
    return all((out / rel).is_file() for _, _, _, rel in videos)


def generate(
    out_dir,
    num_train: int = 2000,
    num_test: int = 500,
    size: int = 64,
    seconds: float = 2.0,
    fps: float = 25.0,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    kind: str = "motions",
    segments: tuple[int, int] = (2, 4),
) -> dict:
    """Generate the dataset into ``out_dir`` and return its meta dict.

    ``kind``: "motions" (the built-in set, class-per-folder with train.txt / test.txt) or "charades"
    (several actions per video one after the other, `segments` = (fewest, most), in the Charades v1
    layout that the `charades` builder reads; see the module docstring).

    Idempotent: if ``out_dir`` already holds a complete dataset with the same meta,
    returns at once. Raises ``ValueError`` if it holds one made with different
    arguments, or ``FileExistsError`` if it is a non-empty folder that is not a
    synthetic dataset. An interrupted run (same arguments) is resumed.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is invalid; valid values: {', '.join(KINDS)}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    if num_train < 0 or num_test < 0 or seconds <= 0 or fps <= 0 or seed < 0:
        raise ValueError("num_train/num_test must be >= 0, seconds/fps > 0, seed >= 0")
    segments = tuple(int(s) for s in segments)
    if len(segments) != 2 or not 1 <= segments[0] <= segments[1]:
        raise ValueError(f"segments={segments!r} is invalid: (fewest, most) actions per video, 1 <= fewest <= most")
    out = Path(out_dir)
    meta = _build_meta(num_train, num_test, size, seconds, fps, seed, kind, segments)
    nf = meta["num_frames"]
    videos = _video_list(num_train, num_test) if kind == "motions" else \
        _charades_list(num_train, num_test, nf, seed, segments)
    index_files = _index_files(kind, videos, fps, seconds)
    meta_path, partial_path = out / META_NAME, out / PARTIAL_NAME

    def check(existing_path: Path) -> None:
        existing = json.loads(existing_path.read_text())
        diffs = _diff_meta(existing, meta)
        if diffs:
            raise ValueError(
                f"synthetic dataset meta mismatch in {out}: it was generated with different "
                f"arguments or generator version; refusing to overwrite it. Delete it, or choose another "
                f"--out (or STJAX_DATA_ROOT for the demo). Differences: " + "; ".join(diffs)
            )

    if meta_path.exists():
        check(meta_path)
        if _is_complete(out, videos, index_files):
            if progress:
                print(f"[make_synthetic] {out} already holds this dataset "
                      f"({len(videos)} videos); nothing to do.")
            return meta
        if progress:
            print(f"[make_synthetic] {out}: meta matches but files are missing; regenerating them.")
    elif partial_path.exists():
        check(partial_path)
        if progress:
            print(f"[make_synthetic] resuming interrupted run in {out}")
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} exists, is not empty and is not a synthetic dataset (no {META_NAME}); "
            "refusing to write into it."
        )

    out.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(partial_path, json.dumps(meta, indent=2) + "\n")
    for name in sorted({str(Path(rel).parent) for _, _, _, rel in videos}):
        d = out / name
        d.mkdir(exist_ok=True)
        for stale in d.glob(".*.mp4.tmp-*"):  # leftovers of a killed run
            stale.unlink()

    jobs = [(str(out), s, i, schedule, rel, int(size), nf, float(fps), int(seed)) for s, i, schedule, rel in videos]
    todo = [j for j in jobs if not (out / j[4]).exists()]
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    workers = max(1, min(workers, len(todo) or 1))

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = None
    if progress and tqdm is not None and todo:
        bar = tqdm(total=len(todo), desc="synthetic videos", unit="vid", file=sys.stderr, smoothing=0.1)

    t0 = time.time()
    if workers == 1:
        for j in todo:
            _make_one(j)
            if bar is not None:
                bar.update(1)
    else:
        # spawn: safe even if the caller has threads (JAX, TF) running.
        ctx = multiprocessing.get_context("spawn")
        chunk = max(1, min(16, len(todo) // (workers * 8)))
        with ctx.Pool(workers) as pool:
            for _ in pool.imap_unordered(_make_one, todo, chunksize=chunk):
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.time() - t0

    for name, text in index_files.items():
        _write_text_atomic(out / name, text)
    _write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")  # completion marker
    partial_path.unlink(missing_ok=True)
    if progress:
        print(f"[make_synthetic] wrote {len(todo)} videos ({len(videos)} total, "
              f"{len(meta['classes'])} classes) to {out} in {elapsed:.1f}s with {workers} worker(s)")
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num_train", type=int, default=2000)
    p.add_argument("--num_test", type=int, default=500)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="default: os.cpu_count()")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.add_argument("--kind", choices=KINDS, default="motions",
                   help="motions: one class per video; charades: several actions per video (Charades v1 layout)")
    p.add_argument("--segments", type=int, nargs=2, default=(2, 4), metavar=("FEWEST", "MOST"),
                   help="--kind charades: actions per video")
    a = p.parse_args(argv)
    generate(a.out, num_train=a.num_train, num_test=a.num_test, size=a.size, seconds=a.seconds,
             fps=a.fps, seed=a.seed, workers=a.workers, progress=not a.quiet, kind=a.kind,
             segments=tuple(a.segments))


if __name__ == "__main__":
    main()
