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

``--kind ava`` writes an AVA-like set (several objects per frame, each with a box and its own actions at
1 Hz keyframes) in the AVA v2.2 layout, so that `python -m stjax.data.build --dataset ava --manual_dir DIR`
builds it like the real one (the `synthetic_ava` dataset renders and builds it on first use; ``--num_test``
videos make its `val` split)::

    DIR/videos_15min/<id>.mp4         id = syntr00000..., synva00000...; time 0 is movie second 900
    DIR/ava_{train,val}_v2.2.csv      video_id, timestamp, x1, y1, x2, y2 (3 decimals), action_id, person_id
                                      (the object's index): one row per box and action
    DIR/ava_action_list_v2.2.pbtxt, DIR/ava_action_list_v2.2_for_activitynet_2019.pbtxt
                                      the 6 actions (all evaluated): 1 stand, 2 orbit, 3 shake, 4 bob,
                                      5 spin, 6 pulse
    DIR/ava_{train,val}_predicted_boxes.csv
                                      a simulated person detector (`ava_proposals`): each GT box found with
                                      probability 0.92, jittered, score U(0.8, 1); false positives and
                                      low-score duplicates
    DIR/ava_val_excluded_timestamps_v2.2.csv   empty
    DIR/synthetic_meta.json

Each video holds 2–3 (``--objects``) objects of radius 0.13–0.16 of the frame, one per vertical band at a
random height, placed so that their paths stay in the frame; background, lighting and hue drift are those
of the motions set. Each object has its own actions, constant over the video: one movement (stand = still,
orbit, shake, bob) and, for two objects in three, one change (spin or pulse); orbits and shakes are 3/4 of
the motions set's. Keyframes are the movie seconds 902 … 900 + floor(seconds) − 1 (frame
round((T − 900) · fps)); an object's GT box there is the tight box of its coverage > 0.5. Suggested (and
`synthetic_ava`'s) size: ``--num_train 240 --num_test 80 --size 64 --seconds 6 --fps 30``, 4 keyframes per
video (960 train, 320 val examples).

``--kind biased [--bias 0.8]`` writes a scene-biased variant of the motions set, in its layout (the
`synthetic_biased` dataset renders and builds it on first use), plus ``DIR/backgrounds.json`` ({relpath:
background class index}, every video). Each class b has its own typical background: two colours with hues
centred on b/10 (dark) and b/10 + 0.35 (light), narrow bands of saturation and value, and a texture whose
plane waves point near b·π/10 at 0.7 (even b) or 1.3 (odd b) times the motions set's frequencies; within a
video the hues and directions still drift, as fast as the motions set's, but swing around the class's centre
(±0.04 cycles, ±0.25 rad). In train a video of class c has background c with probability ``--bias``, else
one of the other nine, uniformly (0.1 = 1/10: no bias); in test the background class is uniform,
independent of the motion. Everything else is the motions set's video of the same seed, split and index
(the same stream: objects, motion, lighting, texture phases). Why: the background is a per-video constant
that all clips of a video share, so the ρ-objectives can match clips by it; a representation that keys on it
gets the class from it in train and fails on test, one that keys on the motion does not. Default (and
`synthetic_biased`'s) size: the motions set's.

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
# The scene-biased set (--kind biased): class b's typical background, made from the motions set's draws. Its
# two colours' hues are centred on b / 10 (the dark one) and b / 10 + _SCENE_HUE_OFFSET (the light one) and
# swing by ±_SCENE_HUE_SWING cycles, as fast as the motions set's hues drift; saturation and value lie in
# narrow bands; its plane waves point near b · π / 10 (±_SCENE_WAVE_SPREAD rad) and swing by
# ±_SCENE_TURN_SWING rad, as fast as the motions set's turn, at the motions set's frequencies times
# _SCENE_FREQ_SCALE[b % 2].
_SCENE_HUE_OFFSET = 0.35
_SCENE_HUE_SWING = 0.04
_SCENE_SATURATION = (0.6, 0.8)
_SCENE_VALUE = ((0.14, 0.18), (0.32, 0.38))
_SCENE_WAVE_SPREAD = (-0.25, 0.0, 0.25)
_SCENE_TURN_SWING = 0.25
_SCENE_FREQ_SCALE = (0.7, 1.3)


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
    background: int | None = None,
):
    """Render one video of class ``class_index``: uint8 array [T, size, size, 3].

    ``first_frame`` > 0 renders frames ``first_frame … first_frame + num_frames − 1`` of the video the
    same rng state renders from frame 0 (the draws do not depend on the frames rendered).

    All random draws happen in a fixed order that does not depend on the class, so
    the same rng state gives the same nuisances (background, lighting, number,
    shapes, sizes, colours and places of the objects) for every class; only the
    way the objects move differs. With ``return_mask=True`` also returns the
    objects' coverage in [0, 1], float32 [T, size, size].

    ``background``: None (the motions set's) or a class index: the background of the scene-biased set
    (``--kind biased``) typical of that class, from the same draws; everything else is unchanged.
    """
    if not 0 <= class_index < len(CLASS_NAMES):
        raise ValueError(f"class_index {class_index} out of range [0, {len(CLASS_NAMES)})")
    if background is not None and not 0 <= background < len(CLASS_NAMES):
        raise ValueError(f"background {background} out of range [0, {len(CLASS_NAMES)}) (or None)")
    frame_ids = first_frame + np.arange(num_frames, dtype=np.float64)
    out = _render_scene(rng, size, frame_ids, fps, CLASS_NAMES[class_index], return_mask=return_mask,
                        background=background)
    return (out["frames"], out["mask"]) if return_mask else out["frames"]


def _draw_scene(rng: np.random.Generator, S: float, t: np.ndarray, n_objects, radius, free_places: bool,
                background: int | None = None) -> dict:
    """Every random draw of a video, in the one order `render_video` has always made them (times ``t`` [T] s).

    ``free_places``: anchors anywhere in [0.2, 0.8] of the frame (pixels); else the raw U(0, 1) draws,
    placed later by `_place_in_bands`. ``background``: None, the motions set's background (hues anywhere,
    drifting round the colour circle; texture in any direction, turning), or a class index: that class's
    typical background (`_scene_background`), made from the same draws."""
    sc = {}
    # ---- nuisances (class-independent draws) ----------------------------------
    # Background: two colours whose hues drift, mixed by a low-contrast texture of
    # plane waves whose directions rotate and phases drift.
    hue0, hue_rate = rng.uniform(0.0, 1.0, 2), _signed_uniform(rng, 0.15, 0.45, 2)
    bg_s = rng.uniform(0.3, 0.9, 2)
    bg_v = np.array([rng.uniform(0.08, 0.25), rng.uniform(0.25, 0.45)])
    theta0, turn = rng.uniform(0.0, 2 * np.pi, _N_WAVES), _signed_uniform(rng, *_WAVE_TURN, _N_WAVES)
    sc["w_phase"] = rng.uniform(0.0, 2 * np.pi, _N_WAVES)[:, None] + \
        _signed_uniform(rng, *_WAVE_DRIFT, _N_WAVES)[:, None] * t
    if background is None:
        bg_h = hue0[:, None] + hue_rate[:, None] * t
        sc["bg_rgb"] = _hsv_to_rgb(bg_h, bg_s[:, None], bg_v[:, None])  # [2, T, 3]
        sc["w_theta"] = theta0[:, None] + turn[:, None] * t
        sc["w_freq"] = _WAVE_FREQ
    else:
        sc.update(_scene_background(int(background), t, hue0, hue_rate, bg_s, bg_v, theta0, turn))
    sc["gain"] = 1.0 + rng.uniform(0.05, 0.15) * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t
                                                         + rng.uniform(0, 2 * np.pi))
    # Objects: how many, shapes, sizes, places, colours (hue drifting within a second or two).
    n = sc["n"] = int(rng.integers(n_objects[0], n_objects[1] + 1))
    sc["shape_ids"] = rng.integers(0, len(SHAPES), n)
    sc["R"] = rng.uniform(*radius, n) * S
    sc["anchor"] = rng.uniform(0.2 * S, 0.8 * S, (n, 2)) if free_places else rng.uniform(0.0, 1.0, (n, 2))
    sc["angle0"] = rng.uniform(0.0, 2 * np.pi, n)
    sc["obj_h"] = rng.uniform(0.0, 1.0, n)[:, None] + _signed_uniform(rng, 0.25, 0.6, n)[:, None] * t
    sc["obj_s"] = rng.uniform(0.5, 1.0, n)
    sc["obj_v"] = rng.uniform(0.8, 1.0, n)
    # ---- motion parameters (drawn for every class, used according to the class) --
    sc["phase"] = rng.uniform(0.0, 2 * np.pi, n)[:, None]  # per object, for the periodic motions
    sc["speed"] = rng.uniform(*_SPEED) * S * rng.uniform(0.8, 1.2, n)[:, None]  # px/s
    sc["side"] = rng.choice([-1.0, 1.0])  # slide direction, shared by the video's objects
    sc["orbit_r"] = rng.uniform(*_ORBIT_RADIUS, n)[:, None] * S
    sc["orbit_w"] = 2 * np.pi / rng.uniform(*_ORBIT_PERIOD, n)[:, None] * rng.choice([-1.0, 1.0])
    sc["spin_w"] = 2 * np.pi * rng.uniform(*_SPIN_RATE, n)[:, None] * rng.choice([-1.0, 1.0])
    sc["pulse_w"] = 2 * np.pi / rng.uniform(*_PULSE_PERIOD, n)[:, None]
    sc["blink_w"] = 2 * np.pi / rng.uniform(*_BLINK_PERIOD, n)[:, None]
    sc["shake_a"] = rng.uniform(*_SHAKE_AMPLITUDE, n)[:, None] * S
    sc["shake_w"] = 2 * np.pi * rng.uniform(*_SHAKE_FREQ, n)[:, None]
    return sc


def _rescale(x, source, target):
    """Maps x linearly from the interval `source` onto `target`."""
    return target[0] + (np.asarray(x) - source[0]) * (target[1] - target[0]) / (source[1] - source[0])


def _scene_background(b: int, t: np.ndarray, hue0, hue_rate, sat, value, theta0, turn) -> dict:
    """Class ``b``'s typical background (the scene-biased set) at times ``t`` [T] s, from the draws `_draw_scene`
    makes for the motions set's (hue0, hue_rate, sat, value [2]; theta0, turn [_N_WAVES]): {"bg_rgb": [2, T, 3],
    "w_theta": [_N_WAVES, T] rad, "w_freq": _N_WAVES cycles per frame width}. Each hue and wave direction
    swings around the class's centre (a sine whose fastest rate is the motions set's drift / turn rate, its
    phase the motions set's start value), so a video's background drifts but stays the class's."""
    centre = np.array([b / len(CLASS_NAMES), b / len(CLASS_NAMES) + _SCENE_HUE_OFFSET])[:, None]
    hue = centre + _SCENE_HUE_SWING * np.sin(2 * np.pi * hue0[:, None] + hue_rate[:, None] / _SCENE_HUE_SWING * t)
    sat = _rescale(sat, (0.3, 0.9), _SCENE_SATURATION)  # the ranges _draw_scene draws from
    value = np.array([_rescale(value[0], (0.08, 0.25), _SCENE_VALUE[0]),
                      _rescale(value[1], (0.25, 0.45), _SCENE_VALUE[1])])
    direction = b * np.pi / len(CLASS_NAMES) + np.array(_SCENE_WAVE_SPREAD)[:, None]
    theta = direction + _SCENE_TURN_SWING * np.sin(theta0[:, None] + turn[:, None] / _SCENE_TURN_SWING * t)
    scale = _SCENE_FREQ_SCALE[b % len(_SCENE_FREQ_SCALE)]
    return {"bg_rgb": _hsv_to_rgb(hue, sat[:, None], value[:, None]), "w_theta": theta,
            "w_freq": tuple(scale * f for f in _WAVE_FREQ)}


def _reach(sc: dict, motions) -> np.ndarray:
    """[n, 2] how far (px, x and y) each object can extend from its anchor, given its motions."""
    out = np.empty((sc["n"], 2))
    for i, names in enumerate(motions):
        extent = _EXTENT * sc["R"][i] * (_PULSE_MAX if "pulse" in names else 1.0)
        orbit = sc["orbit_r"][i, 0] if "orbit" in names else 0.0
        out[i, 0] = extent + orbit + (sc["shake_a"][i, 0] if "shake" in names else 0.0)
        out[i, 1] = extent + orbit + (sc["shake_a"][i, 0] if "bob" in names else 0.0)
    return out


def _place_in_bands(sc: dict, S: float, motions) -> np.ndarray:
    """Anchors [n, 2] (px) from the U(0, 1) draws: object i in the middle half of the i-th of n vertical
    bands, at a random height, so that its whole path (and its anti-aliased edge) stays in the frame (the nearest
    place that does, when the band is too narrow for it)."""
    n = sc["n"]
    reach = np.minimum(_reach(sc, motions) + 1.0, S / 2)
    lo = np.maximum((np.arange(n) + 0.25) * S / n, reach[:, 0])
    hi = np.minimum((np.arange(n) + 0.75) * S / n, S - reach[:, 0])
    x = np.where(lo <= hi, lo + sc["anchor"][:, 0] * (hi - lo), np.clip((np.arange(n) + 0.5) * S / n,
                                                                          reach[:, 0], S - reach[:, 0]))
    y = reach[:, 1] + sc["anchor"][:, 1] * (S - 2 * reach[:, 1])
    return np.stack([x, y], axis=1)


def _render_scene(
    rng: np.random.Generator,
    size: int,
    frame_ids: np.ndarray,
    fps: float,
    motions,
    *,
    n_objects=_N_OBJECTS,
    radius=_OBJ_RADIUS,
    bands: bool = False,
    amplitude: float = 1.0,
    return_mask: bool = False,
    boxes: bool = False,
    draw: bool = True,
    only=None,
    background: int | None = None,
) -> dict:
    """The frames ``frame_ids`` (float64 [T]) of the video ``rng`` draws; its draws do not depend on them.

    ``motions``: one name of CLASS_NAMES for every object (the motions set), or per object a tuple of
    motions (then there are exactly that many objects; "still" is none). ``bands``: objects placed by
    `_place_in_bands` instead of anywhere; ``amplitude`` scales the orbits' radii and the shakes'
    amplitudes. ``draw=False`` computes only the boxes; ``only``: the indices of the objects drawn (all
    by default; the boxes are those of every object). Returns {"frames": uint8 [T, size, size, 3] (if
    ``draw``), "mask": the drawn objects' coverage float32 [T, size, size] (if ``return_mask``), "boxes":
    float64 [T, n, 4] (if ``boxes``): each object's own pixels of coverage > 0.5 inside the frame, as
    x1, y1, x2, y2 in [0, 1] (pixel edges), NaN where it has none}. ``background``: see `_draw_scene`.
    """
    S = float(size)
    f32 = np.float32
    t = frame_ids / float(fps)  # seconds, [T]
    num_frames = len(frame_ids)
    T3 = (num_frames, 1, 1)
    if isinstance(motions, str):
        sc = _draw_scene(rng, S, t, n_objects, radius, not bands, background)
        motions = [(motions,)] * sc["n"]
    else:
        motions = [tuple(m) for m in motions]
        sc = _draw_scene(rng, S, t, (len(motions), len(motions)), radius, not bands, background)
    n, R = sc["n"], sc["R"]
    if amplitude != 1.0:
        sc["orbit_r"] = sc["orbit_r"] * amplitude
        sc["shake_a"] = sc["shake_a"] * amplitude
    anchor = _place_in_bands(sc, S, motions) if bands else sc["anchor"]

    def moving(name):
        return np.array([name in m for m in motions])[:, None]  # [n, 1]

    phase = sc["phase"]
    cx = np.repeat(anchor[:, :1], num_frames, 1)  # [n, T]
    cy = np.repeat(anchor[:, 1:], num_frames, 1)
    angle = np.repeat(sc["angle0"][:, None], num_frames, 1)
    scale = np.ones((n, num_frames))
    visible = np.ones((n, num_frames))
    margin = _EXTENT * _PULSE_MAX * R[:, None]
    present = {name for m in motions for name in m}
    if "slide" in present:
        cx = np.where(moving("slide"), _wrap(cx + sc["side"] * sc["speed"] * t, -margin, S + margin), cx)
    if "fall" in present:
        cy = np.where(moving("fall"), _wrap(cy + sc["speed"] * t, -margin, S + margin), cy)
    if "rise" in present:
        cy = np.where(moving("rise"), _wrap(cy - sc["speed"] * t, -margin, S + margin), cy)
    if "orbit" in present:
        on = moving("orbit")
        cx, cy = (np.where(on, cx + sc["orbit_r"] * np.cos(sc["orbit_w"] * t + phase), cx),
                  np.where(on, cy + sc["orbit_r"] * np.sin(sc["orbit_w"] * t + phase), cy))
    if "spin" in present:
        angle = np.where(moving("spin"), angle + sc["spin_w"] * t, angle)
    if "pulse" in present:
        scale = np.where(moving("pulse"), 1.0 + _PULSE_DEPTH * np.sin(sc["pulse_w"] * t + phase), scale)
    if "blink" in present:
        visible = np.where(moving("blink"), np.clip(0.5 + 2.0 * np.sin(sc["blink_w"] * t + phase), 0.0, 1.0),
                           visible)
    if "shake" in present:
        cx = np.where(moving("shake"), cx + sc["shake_a"] * np.sin(sc["shake_w"] * t + phase), cx)
    if "bob" in present:
        cy = np.where(moving("bob"), cy + sc["shake_a"] * np.sin(sc["shake_w"] * t + phase), cy)

    # ---- compose on a canvas padded so that every object window fits ------------
    # Background on the visible frame only; objects are drawn on a canvas padded so that
    # the window around an object entering or leaving the frame always fits.
    pad = int(math.ceil(2 * float(margin.max()))) + 2
    P = size + 2 * pad
    inner = (slice(None), slice(pad, pad + size), slice(pad, pad + size))
    shp = (num_frames, size, size)
    tmp = np.empty(shp, f32)
    if draw:
        coords = np.arange(size, dtype=f32) + f32(0.5)  # pixel centres
        xn = (coords / f32(S) - f32(0.5))[None, None, :]
        yn = (coords / f32(S) - f32(0.5))[None, :, None]
        tex = np.zeros(shp, f32)
        for k in range(_N_WAVES):
            kx = (2 * np.pi * sc["w_freq"][k] * np.cos(sc["w_theta"][k])).astype(f32).reshape(T3)
            ky = (2 * np.pi * sc["w_freq"][k] * np.sin(sc["w_theta"][k])).astype(f32).reshape(T3)
            ax = kx * xn + sc["w_phase"][k].astype(f32).reshape(T3)  # [T, 1, W]
            ay = ky * yn  # [T, H, 1]
            np.multiply(np.sin(ax), np.cos(ay), out=tmp)
            tex += tmp
            np.multiply(np.cos(ax), np.sin(ay), out=tmp)
            tex += tmp
        tex *= f32(_TEXTURE_CONTRAST / _N_WAVES)
        tex += f32(0.5)
        np.clip(tex, 0.0, 1.0, out=tex)
        img = np.zeros((3, num_frames, P, P), f32)
        bg_rgb = sc["bg_rgb"]
        c0 = bg_rgb[0].T.reshape(3, num_frames, 1, 1)
        dc = (bg_rgb[1] - bg_rgb[0]).T.reshape(3, num_frames, 1, 1)
        for ch in range(3):
            np.multiply(tex, dc[ch], out=tmp)
            tmp += c0[ch]
            img[ch][inner] = tmp
    cover = np.zeros((num_frames, P, P), f32) if return_mask else None
    found = np.full((num_frames, n, 4), np.nan) if boxes else None

    # Each object is drawn in a small window that follows it: [T, W, W] instead of the full frame.
    ti = np.arange(num_frames)[:, None, None]
    for i in range(n):
        drawn = only is None or i in only
        if not (drawn and (draw or return_mask)) and not boxes:
            continue
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
        alpha = np.clip(f32(0.5) - _shape_sdf(SHAPES[sc["shape_ids"][i]], px, py, r), 0.0, 1.0)
        alpha = alpha * visible[i].astype(f32).reshape(T3)
        if boxes:
            found[:, i] = _tight_boxes(alpha > 0.5, rows - pad, cols - pad, size)
        if not drawn:
            continue
        if draw:
            col = _hsv_to_rgb(sc["obj_h"][i], sc["obj_s"][i], sc["obj_v"][i]).T.reshape(3, num_frames, 1, 1)
            for ch in range(3):
                win = img[ch][ti, rows, cols]
                img[ch][ti, rows, cols] = win + alpha * (col[ch] - win)
        if cover is not None:
            cw = cover[ti, rows, cols]
            cover[ti, rows, cols] = cw + alpha * (1.0 - cw)

    out = {}
    if draw:
        g = sc["gain"].astype(f32).reshape(T3) * f32(255.0)
        frames = np.empty((num_frames, size, size, 3), np.uint8)
        for ch in range(3):
            v = img[ch][inner] * g
            np.rint(v, out=v)
            np.clip(v, 0.0, 255.0, out=v)
            frames[..., ch] = v
        out["frames"] = frames
    if return_mask:
        out["mask"] = cover[inner]
    if boxes:
        out["boxes"] = found
    return out


def _tight_boxes(inside: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """[T, 4] x1, y1, x2, y2 in [0, 1] of the pixels `inside` (bool [T, W, W]) of a window whose frame pixel
    indices are `rows` [T, W, 1] and `cols` [T, 1, W], counting only pixels inside the frame; NaN where none."""
    inside = inside & (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    in_col = inside.any(axis=1)  # [T, W]
    in_row = inside.any(axis=2)
    W = inside.shape[-1]
    first_c, last_c = np.argmax(in_col, axis=1), W - 1 - np.argmax(in_col[:, ::-1], axis=1)
    first_r, last_r = np.argmax(in_row, axis=1), W - 1 - np.argmax(in_row[:, ::-1], axis=1)
    tt = np.arange(inside.shape[0])
    out = np.stack([cols[tt, 0, first_c], rows[tt, first_r, 0], cols[tt, 0, last_c] + 1,
                    rows[tt, last_r, 0] + 1], axis=1).astype(np.float64) / size
    out[~in_col.any(axis=1)] = np.nan
    return out


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

KINDS = ("motions", "charades", "ava", "biased")
BIASED_VERSION = "stjax-synthetic-biased-v1"
BIASED_FILES = {"backgrounds": "backgrounds.json"}  # {relpath: background class index}, every video
# `generate`'s arguments for the scene-biased set the `synthetic_biased` dataset renders by default (the motions
# set's sizes); `bias`: the chance that a train video has its own class's background.
BIASED_DEFAULTS = dict(num_train=2000, num_test=500, size=64, seconds=2.0, fps=25.0, seed=0, bias=0.8)
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

AVA_VERSION = "stjax-synthetic-ava-v1"
# The AVA-like set's actions, AVA action ids 1.. in this order: each object has one movement (the first four)
# and, with probability _AVA_CHANGE_P, one change (the last two), constant over its video.
AVA_ACTIONS: tuple[str, ...] = ("stand", "orbit", "shake", "bob", "spin", "pulse")
AVA_MOVEMENTS, AVA_CHANGES = AVA_ACTIONS[:4], AVA_ACTIONS[4:]
AVA_SPLITS = ("train", "val")
_AVA_SPLIT_IDS = {"train": 0, "val": 1}
AVA_FILES = {"train": "ava_train_v2.2.csv", "val": "ava_val_v2.2.csv", "actions": "ava_action_list_v2.2.pbtxt",
             "evaluated": "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
             "train_proposals": "ava_train_predicted_boxes.csv", "val_proposals": "ava_val_predicted_boxes.csv",
             "val_excluded": "ava_val_excluded_timestamps_v2.2.csv", "videos": "videos_15min"}
AVA_OFFSET = 900  # the movie second at time 0 of a videos_15min/ file
AVA_VALID_SECONDS = (902, 1798)  # the keyframes AVA annotates
# `generate`'s arguments for the AVA-like set the `synthetic_ava` dataset renders by default (num_test: val videos).
AVA_DEFAULTS = dict(num_train=240, num_test=80, size=64, seconds=6.0, fps=30.0, seed=0, objects=(2, 3))
_AVA_RADIUS = (0.13, 0.16)  # smaller than the motions set's, so that 2-3 objects side by side overlap little
_AVA_AMPLITUDE = 0.75  # orbit radii and shake amplitudes, of the motions set's: the paths fit in the frame
_AVA_CHANGE_P = 2.0 / 3.0
_AVA_MAX_OBJECTS = 4
# The simulated person detector of the *_predicted_boxes.csv files.
_DETECT_P, _DETECT_JITTER, _DETECT_SCORE = 0.92, 0.08, (0.8, 1.0)  # a GT box found: jitter of its w / h
_FALSE_P, _FALSE_SIZE, _FALSE_SCORE = 0.3, (0.12, 0.4), (0.5, 0.95)  # one random box per keyframe
_DUPLICATE_P, _DUPLICATE_SCORE = 0.5, (0.1, 0.6)  # one low-score duplicate of a GT box per keyframe


def _num_frames(seconds: float, fps: float) -> int:
    return max(1, int(round(seconds * fps)))


def _build_meta(num_train, num_test, size, seconds, fps, seed, kind="motions", segments=(2, 4),
                objects=(2, 3), bias=0.8) -> dict:
    args = {"num_train": int(num_train), "num_test": int(num_test), "size": int(size),
            "seconds": float(seconds), "fps": float(fps), "seed": int(seed)}
    if kind == "motions":  # as it has always been written: a folder made before `kind` existed still matches
        return {"version": VERSION, "generator": "stjax.data.make_synthetic", "args": args,
                "num_frames": _num_frames(seconds, fps), "classes": list(CLASS_NAMES),
                "splits": {"train": int(num_train), "test": int(num_test)}, "encoding": dict(CODEC)}
    if kind == "biased":
        return {"version": BIASED_VERSION, "generator": "stjax.data.make_synthetic",
                "args": {**args, "kind": kind, "bias": float(bias)},
                "num_frames": _num_frames(seconds, fps), "classes": list(CLASS_NAMES),
                "splits": {"train": int(num_train), "test": int(num_test)},
                "backgrounds": BIASED_FILES["backgrounds"], "encoding": dict(CODEC)}
    if kind == "ava":
        return {"version": AVA_VERSION, "generator": "stjax.data.make_synthetic",
                "args": {**args, "kind": kind, "objects": [int(o) for o in objects]},
                "num_frames": _num_frames(seconds, fps), "classes": list(AVA_ACTIONS),
                "splits": {"train": int(num_train), "val": int(num_test)},
                "keyframes": list(ava_keyframes(seconds)), "encoding": dict(CODEC)}
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


def biased_background(seed: int, split: str, index: int, class_index: int, bias: float) -> int:
    """The background class (an index of CLASS_NAMES) of video `index` of the scene-biased set, whose motion
    class is `class_index`: in `train` the class's own with probability `bias`, else one of the other nine,
    uniformly; in `test` any of the ten, uniformly, whatever the class. Its own random stream; every draw is
    made, used or not."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index, 4])
    own, other, anywhere = rng.random() < bias, int(rng.integers(0, len(CLASS_NAMES) - 1)), \
        int(rng.integers(0, len(CLASS_NAMES)))
    if split == "test":
        return anywhere
    return class_index if own else (class_index + 1 + other) % len(CLASS_NAMES)


def _biased_list(num_train: int, num_test: int, seed: int, bias: float) -> list[tuple[str, int, tuple, str]]:
    """(split, index, (class_index, background class), relpath) for every video of the scene-biased set: the
    motions set's classes and paths, each with its background (`biased_background`)."""
    return [(split, i, (schedule[0][0], biased_background(seed, split, i, schedule[0][0], bias)), rel)
            for split, i, schedule, rel in _video_list(num_train, num_test)]


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


def ava_keyframes(seconds: float) -> tuple[int, ...]:
    """The keyframes (movie seconds) of an AVA-like video of `seconds` s: 902 … 900 + floor(seconds) − 1, the
    integer seconds AVA annotates (902–1798) whose frame the video has; none for videos under 3 s."""
    last = min(AVA_VALID_SECONDS[1], AVA_OFFSET + int(math.floor(seconds)) - 1)
    return tuple(range(AVA_VALID_SECONDS[0], last + 1))


def ava_keyframe_index(timestamp: int, fps: float) -> int:
    """The frame of a videos_15min/ file (from 0) that keyframe `timestamp` (movie seconds) shows."""
    return int(round((timestamp - AVA_OFFSET) * fps))


def ava_id(split: str, index: int) -> str:
    """`syntr00000`, `synva00000`: the video id of an AVA-like video."""
    return f"syn{split[:2]}{index:05d}"


def ava_actions(seed: int, split: str, index: int, objects: tuple[int, int]) -> tuple[tuple[int, ...], ...]:
    """Per object of one AVA-like video, its AVA action ids (1–6, ascending; see AVA_ACTIONS): one movement
    and, with probability 2/3, one change; k ∈ `objects` (inclusive) objects. Its own random stream."""
    rng = np.random.default_rng([seed, _AVA_SPLIT_IDS[split], index, 2])
    n = int(rng.integers(objects[0], objects[1] + 1))
    out = []
    for _ in range(n):  # the same draws for every object, whatever they give
        movement = int(rng.integers(0, len(AVA_MOVEMENTS)))
        changes = bool(rng.random() < _AVA_CHANGE_P)
        change = int(rng.integers(0, len(AVA_CHANGES)))
        ids = (1 + movement,) + ((1 + len(AVA_MOVEMENTS) + change,) if changes else ())
        out.append(ids)
    return tuple(out)


def _ava_motions(actions) -> list[tuple[str, ...]]:
    """Per object, the motions (names of CLASS_NAMES) its action ids make it do; `stand` is no motion."""
    return [tuple(AVA_ACTIONS[a - 1] for a in ids if AVA_ACTIONS[a - 1] != "stand") for ids in actions]


def render_ava_video(actions, rng: np.random.Generator, size: int, frame_ids, fps: float, *, boxes: bool = False,
                     draw: bool = True, only=None, return_mask: bool = False) -> dict:
    """Frames `frame_ids` (ints) of the AVA-like video whose objects do `actions` (`ava_actions`), drawn by
    `rng` (its background, lighting and hue drift as `render_video` draws them; the objects smaller, one per
    vertical band, their paths inside the frame). Returns {"frames": uint8 [T, size, size, 3] (if `draw`),
    "boxes": float64 [T, n, 4] (if `boxes`): each object's tight box (its coverage > 0.5), x1, y1, x2, y2 in
    [0, 1], NaN where none, "mask": float32 [T, size, size] (if `return_mask`)}; `only`: the objects drawn."""
    return _render_scene(rng, size, np.asarray(frame_ids, np.float64), fps, _ava_motions(actions),
                         radius=_AVA_RADIUS, bands=True, amplitude=_AVA_AMPLITUDE, boxes=boxes, draw=draw,
                         only=only, return_mask=return_mask)


def _ava_rng_key(seed: int, split: str, index: int) -> list[int]:
    return [seed, _AVA_SPLIT_IDS[split], index]


def ava_boxes(seed: int, split: str, index: int, actions, size: int, fps: float,
              keyframes) -> np.ndarray:
    """float64 [K, n, 4]: the GT boxes of one AVA-like video's objects at its `keyframes` (NaN: none)."""
    frame_ids = [ava_keyframe_index(k, fps) for k in keyframes]
    return render_ava_video(actions, np.random.default_rng(_ava_rng_key(seed, split, index)), size, frame_ids,
                            fps, boxes=True, draw=False)["boxes"]


def _jitter(rng, box, amount: float) -> np.ndarray:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return np.clip(np.asarray(box) + rng.uniform(-amount, amount, 4) * np.array([w, h, w, h]), 0.0, 1.0)


def ava_proposals(seed: int, split: str, index: int, boxes: np.ndarray) -> list[list[tuple[np.ndarray, float]]]:
    """A simulated person detector on one video's keyframes (GT `boxes` [K, n, 4], NaN: none): per keyframe
    [(box, score), ...] by descending score. Each GT box is found with probability 0.92 (each coordinate moved
    by up to ±8 % of the box's width / height, score U(0.8, 1)); with probability 0.3 one false positive (a
    random box of an object's size, score U(0.5, 0.95)); with probability 0.5 one low-score duplicate of a GT
    box (jittered the same way, score U(0.1, 0.6)). Its own random stream; every draw is made, used or not."""
    rng = np.random.default_rng([seed, _AVA_SPLIT_IDS[split], index, 3])
    out = []
    for frame in boxes:
        found = []
        present = [b for b in frame if np.isfinite(b).all()]
        for box in frame:
            hit, moved, score = rng.random() < _DETECT_P, _jitter(rng, np.nan_to_num(box), _DETECT_JITTER), \
                rng.uniform(*_DETECT_SCORE)
            if hit and np.isfinite(box).all():
                found.append((moved, score))
        hit, (w, h), (u, v), score = rng.random() < _FALSE_P, rng.uniform(*_FALSE_SIZE, 2), rng.uniform(0, 1, 2), \
            rng.uniform(*_FALSE_SCORE)
        if hit:
            x1, y1 = u * (1.0 - w), v * (1.0 - h)
            found.append((np.array([x1, y1, x1 + w, y1 + h]), score))
        hit, pick = rng.random() < _DUPLICATE_P, rng.random()
        moved = _jitter(rng, present[int(pick * len(present))] if present else np.zeros(4), _DETECT_JITTER)
        score = rng.uniform(*_DUPLICATE_SCORE)
        if hit and present:
            found.append((moved, score))
        out.append(sorted(found, key=lambda item: -item[1]))
    return out


def _ava_list(num_train: int, num_test: int, seed: int, objects) -> list[tuple[str, int, tuple, str]]:
    out = []
    for split, n in (("train", num_train), ("val", num_test)):
        for i in range(n):
            rel = f"{AVA_FILES['videos']}/{ava_id(split, i)}.mp4"
            out.append((split, i, ava_actions(seed, split, i, objects), rel))
    return out


def _box_text(box) -> str | None:
    """x1,y1,x2,y2 with 3 decimals, or None when they do not make a box 0 <= x1 < x2 <= 1, 0 <= y1 < y2 <= 1."""
    x1, y1, x2, y2 = (round(float(v), 3) for v in box)
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        return None
    return f"{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f}"


def _ava_index_files(videos, size: int, fps: float, seconds: float, seed: int) -> dict[str, str]:
    """{file name: text}: the AVA v2.2 annotation files of the AVA-like videos (GT, proposals, label maps)."""
    keyframes = ava_keyframes(seconds)
    gt = {split: [] for split in AVA_SPLITS}
    detected = {split: [] for split in AVA_SPLITS}
    for split, index, actions, _ in videos:
        video = ava_id(split, index)
        boxes = ava_boxes(seed, split, index, actions, size, fps, keyframes)
        for timestamp, frame, proposals in zip(keyframes, boxes, ava_proposals(seed, split, index, boxes)):
            for person, (box, ids) in enumerate(zip(frame, actions)):
                text = _box_text(box) if np.isfinite(box).all() else None
                if text is not None:  # degenerate at this frame: not in this keyframe
                    gt[split] += [f"{video},{timestamp:04d},{text},{a},{person}\n" for a in ids]
            for box, score in proposals:
                text = _box_text(box)
                if text is not None:
                    detected[split].append(f"{video},{timestamp:04d},{text},,{score:.6f}\n")
    names = list(enumerate(AVA_ACTIONS, start=1))
    return {
        AVA_FILES["actions"]: "".join(
            f'label {{\n  name: "{name}"\n  label_id: {i}\n  label_type: PERSON_MOVEMENT\n}}\n' for i, name in names),
        AVA_FILES["evaluated"]: "".join(f'item {{\n  name: "{name}"\n  id: {i}\n}}\n' for i, name in names),
        AVA_FILES["train"]: "".join(gt["train"]), AVA_FILES["val"]: "".join(gt["val"]),
        AVA_FILES["train_proposals"]: "".join(detected["train"]),
        AVA_FILES["val_proposals"]: "".join(detected["val"]),
        AVA_FILES["val_excluded"]: "",
    }


def _make_one(job) -> str:
    out_dir, split, index, schedule, rel, size, num_frames, fps, seed, kind = job
    path = Path(out_dir) / rel
    if path.exists():  # complete: files only appear under their final name when done
        return rel
    if kind == "ava":  # schedule: the objects' actions
        frames = render_ava_video(schedule, np.random.default_rng(_ava_rng_key(seed, split, index)), size,
                                  np.arange(num_frames), fps)["frames"]
    elif kind == "biased":  # schedule: (class, background class); the stream of the motions set's video
        frames = render_video(schedule[0], np.random.default_rng([seed, _SPLIT_IDS[split], index]), size,
                              num_frames, fps, background=schedule[1])
    else:
        frames = _render(schedule, [seed, _SPLIT_IDS[split], index], size, num_frames, fps)
    write_mp4(path, frames, fps)
    return rel


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _index_names(kind: str) -> list[str]:
    """The names of the files that list the videos of a `kind` (written after them)."""
    if kind == "motions":
        return [f"{split}.txt" for split in SPLITS]
    if kind == "biased":
        return [f"{split}.txt" for split in SPLITS] + [BIASED_FILES["backgrounds"]]
    if kind == "charades":
        return [CHARADES_FILES[k] for k in ("classes", "train", "test")]
    return [name for key, name in AVA_FILES.items() if key != "videos"]


def _index_files(kind: str, videos, fps: float, seconds: float, size: int, seed: int) -> dict[str, str]:
    """{file name: text} of the files that list the videos (written after them)."""
    if kind == "ava":
        return _ava_index_files(videos, size, fps, seconds, seed)
    if kind in ("motions", "biased"):
        files = {f"{split}.txt": "".join(rel + "\n" for s, _, _, rel in videos if s == split) for split in SPLITS}
        if kind == "biased":
            files[BIASED_FILES["backgrounds"]] = json.dumps({rel: bg for _, _, (_, bg), rel in videos}, indent=1) + "\n"
        return files
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


def _is_complete(out: Path, videos, index_names) -> bool:
    if not all((out / name).is_file() for name in index_names):
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
    objects: tuple[int, int] = (2, 3),
    bias: float = 0.8,
) -> dict:
    """Generate the dataset into ``out_dir`` and return its meta dict.

    ``kind``: "motions" (the built-in set, class-per-folder with train.txt / test.txt), "charades"
    (several actions per video one after the other, `segments` = (fewest, most), in the Charades v1
    layout that the `charades` builder reads) or "ava" (`objects` = (fewest, most) objects per video, each
    with its own actions and boxes at 1 Hz keyframes, in the AVA v2.2 layout that the `ava` builder reads;
    `num_test` videos make its `val` split) or "biased" (the motions set with each class's own typical
    background in a fraction `bias` of its train videos and backgrounds independent of the class in test;
    `backgrounds.json` names each video's); see the module docstring.

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
    objects = tuple(int(o) for o in objects)
    if len(objects) != 2 or not 1 <= objects[0] <= objects[1] <= _AVA_MAX_OBJECTS:
        raise ValueError(f"objects={objects!r} is invalid: (fewest, most) objects per video, "
                         f"1 <= fewest <= most <= {_AVA_MAX_OBJECTS}")
    if not 0.0 <= float(bias) <= 1.0:
        raise ValueError(f"bias={bias!r} is invalid: the chance that a train video has its class's own background, "
                         f"in [0, 1] (0.1 = 1/10: none)")
    if kind == "ava" and not ava_keyframes(seconds):
        raise ValueError(f"seconds={seconds} is invalid for kind='ava': its keyframes are the movie seconds "
                         f"902 … 900 + floor(seconds) − 1, so it needs seconds >= 3")
    out = Path(out_dir)
    meta = _build_meta(num_train, num_test, size, seconds, fps, seed, kind, segments, objects, bias)
    nf = meta["num_frames"]
    if kind == "motions":
        videos = _video_list(num_train, num_test)
    elif kind == "biased":
        videos = _biased_list(num_train, num_test, seed, float(bias))
    elif kind == "charades":
        videos = _charades_list(num_train, num_test, nf, seed, segments)
    else:
        videos = _ava_list(num_train, num_test, seed, objects)
    index_names = _index_names(kind)
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
        if _is_complete(out, videos, index_names):
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

    jobs = [(str(out), s, i, schedule, rel, int(size), nf, float(fps), int(seed), kind)
            for s, i, schedule, rel in videos]
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

    for name, text in _index_files(kind, videos, fps, seconds, size, seed).items():
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
                   help="motions: one class per video; charades: several actions per video (Charades v1 layout); "
                        "ava: several objects per video with their own actions and boxes (AVA v2.2 layout); "
                        "biased: the motions set with a class-typical background in train (--bias)")
    p.add_argument("--segments", type=int, nargs=2, default=(2, 4), metavar=("FEWEST", "MOST"),
                   help="--kind charades: actions per video")
    p.add_argument("--objects", type=int, nargs=2, default=(2, 3), metavar=("FEWEST", "MOST"),
                   help="--kind ava: objects per video")
    p.add_argument("--bias", type=float, default=0.8,
                   help="--kind biased: the chance that a train video has its class's own background (0.1: none)")
    a = p.parse_args(argv)
    generate(a.out, num_train=a.num_train, num_test=a.num_test, size=a.size, seconds=a.seconds,
             fps=a.fps, seed=a.seed, workers=a.workers, progress=not a.quiet, kind=a.kind,
             segments=tuple(a.segments), objects=tuple(a.objects), bias=a.bias)


if __name__ == "__main__":
    main()
