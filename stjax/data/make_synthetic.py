"""Deterministic generator of the built-in synthetic video dataset ("synthetic shapes").

Run as::

    python -m stjax.data.make_synthetic --out DIR [--num_train 2000] [--num_test 500]
        [--size 64] [--seconds 3.0] [--fps 25] [--seed 0] [--workers N]

Output (real H.264 mp4 files, libx264 / yuv420p, written with PyAV)::

    DIR/<class_name>/<split>_<index:06d>.mp4
    DIR/train.txt, DIR/test.txt       one relative path per line
    DIR/synthetic_meta.json           generator arguments, class list, version (written last)

Why it looks like this
----------------------
The rho-framework objectives (rho-SimCLR/MoCo/BYOL/SwAV) treat clips taken at
*different times of the same video* as positives, so they learn whatever persists
over time in a video. This set is built so that exactly the class persists:

* Class = object shape x kind of motion (5 shapes x {straight-line bounce, circular
  orbit} = 10 classes). Both are constant through a video.
* Nuisances drift *within* a video and are drawn from the same distributions for
  every class (the random stream for them does not depend on the class at all):
  object hue rotates at 0.25-0.6 cycles/s, the background is a smooth plane-wave
  texture whose two colours drift in hue (0.15-0.45 cycles/s) and whose wave directions/phases rotate,
  global brightness fluctuates, and a soft class-agnostic blob wanders and
  fades in and out. Speed, size, start position/phase and a slow spin of the shape
  are random per video. The object is large (radius 0.20-0.26 of the frame):
  v1 used 0.12-0.17 and 3 blobs, on which a supervised r3d_tiny reached only
  0.17 test top-1 after 200 steps without augmentation (v2: 0.32).

Consequence: two clips taken at the same time (timespan 0) share colours and
texture, so a contrastive model can "cheat" by matching colour; clips far apart in
time share only shape and motion, so longer timespans should improve a linear
probe on the class.

Each video's random stream is ``np.random.default_rng([seed, split_id, index])``,
so the output is independent of the worker count. The encoder runs with one
thread so the files are byte-for-byte reproducible on a given libx264 build.

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

VERSION = "stjax-synthetic-v2"
META_NAME = "synthetic_meta.json"
PARTIAL_NAME = ".synthetic_meta.partial.json"  # marks a run in progress (for resuming)
SPLITS = ("train", "test")
_SPLIT_IDS = {"train": 0, "test": 1}

SHAPES = ("disk", "square", "triangle", "cross", "ring")
MOTIONS = ("bounce", "orbit")
# Class index c -> shape SHAPES[c // 2], motion MOTIONS[c % 2].
CLASS_NAMES: tuple[str, ...] = tuple(f"{s}_{m}" for s in SHAPES for m in MOTIONS)

CODEC = {"codec": "libx264", "pix_fmt": "yuv420p", "crf": 20, "preset": "veryfast"}

# Geometry, all relative to the frame size.
_OBJ_RADIUS = (0.2, 0.26)  # nominal object radius R
_EXTENT = 1.25  # every shape fits inside a circle of radius _EXTENT * R
_SPEED = (0.35, 0.65)  # object speed, frame sizes per second (both motions)
_ORBIT_RADIUS = (0.10, 0.16)
_N_BLOBS = 1
_N_WAVES = 3


# ----------------------------------------------------------------------------- rendering


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB; h in cycles (any real), s, v in [0, 1]. Returns [..., 3]."""
    h = np.asarray(h, np.float32)[..., None]
    s = np.asarray(s, np.float32)[..., None]
    v = np.asarray(v, np.float32)[..., None]
    n = np.array([5.0, 3.0, 1.0], np.float32)
    k = np.mod(n + 6.0 * h, 6.0)
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _reflect(u, lo, hi):
    """Fold the unbounded coordinate u into [lo, hi] by reflection (bouncing)."""
    length = hi - lo
    w = np.mod(u - lo, 2.0 * length)
    return lo + length - np.abs(w - length)


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
    """Signed distance (pixels) to a shape of nominal radius r centred at the origin."""
    if shape == "disk":
        return np.hypot(px, py) - r
    if shape == "square":
        return _sd_box(px, py, 0.85 * r, 0.85 * r)
    if shape == "triangle":
        return _sd_triangle(px, py, 1.05 * r)
    if shape == "cross":
        return np.minimum(_sd_box(px, py, 1.1 * r, 0.36 * r), _sd_box(px, py, 0.36 * r, 1.1 * r))
    if shape == "ring":
        return np.abs(np.hypot(px, py) - 0.72 * r) - 0.28 * r
    raise ValueError(f"unknown shape {shape!r}")


def _signed_uniform(rng, lo, hi, size=None):
    return rng.uniform(lo, hi, size) * rng.choice([-1.0, 1.0], size)


def render_video(
    class_index: int,
    rng: np.random.Generator,
    size: int,
    num_frames: int,
    fps: float,
    *,
    return_mask: bool = False,
):
    """Render one video of class ``class_index``: uint8 array [T, size, size, 3].

    All random draws happen in a fixed order that does not depend on the class, so
    the same rng state gives the same nuisances (colours, background, lighting,
    blobs, size, speed, start positions) for every class; only the shape and the
    motion kind differ. With ``return_mask=True`` also returns the object's
    coverage in [0, 1], float32 [T, size, size].
    """
    if not 0 <= class_index < len(CLASS_NAMES):
        raise ValueError(f"class_index {class_index} out of range [0, {len(CLASS_NAMES)})")
    shape = SHAPES[class_index // len(MOTIONS)]
    motion = MOTIONS[class_index % len(MOTIONS)]
    S = float(size)
    f32 = np.float32
    t = (np.arange(num_frames, dtype=np.float64) / float(fps))  # seconds, [T]
    T3 = (num_frames, 1, 1)

    # ---- nuisances (class-independent draws) ----------------------------------
    # Background: two colours whose hues drift, mixed by a texture of plane waves
    # whose directions rotate and phases drift.
    bg_h = rng.uniform(0.0, 1.0, 2)[:, None] + _signed_uniform(rng, 0.15, 0.45, 2)[:, None] * t
    bg_s = rng.uniform(0.3, 0.9, 2)
    bg_v = np.array([rng.uniform(0.08, 0.28), rng.uniform(0.3, 0.55)])
    bg_rgb = _hsv_to_rgb(bg_h, bg_s[:, None], bg_v[:, None])  # [2, T, 3]
    w_amp = rng.uniform(0.5, 1.0, _N_WAVES)
    w_freq = rng.uniform(0.8, 2.5, _N_WAVES)  # cycles per frame width
    w_theta = rng.uniform(0.0, 2 * np.pi, _N_WAVES)[:, None] + _signed_uniform(rng, 0.4, 1.2, _N_WAVES)[:, None] * t
    w_phase = rng.uniform(0.0, 2 * np.pi, _N_WAVES)[:, None] + _signed_uniform(rng, 1.0, 4.0, _N_WAVES)[:, None] * t
    # Object colour: hue rotates substantially within about a second.
    obj_h = rng.uniform(0.0, 1.0) + _signed_uniform(rng, 0.25, 0.6) * t
    obj_s = rng.uniform(0.5, 1.0)
    obj_v = rng.uniform(0.8, 1.0)
    # Global lighting fluctuation.
    gain = 1.0 + rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 2 * np.pi))
    # Distractor blobs: soft, small, drifting, fading in and out, colour drifting.
    b_sigma = rng.uniform(0.035, 0.06, _N_BLOBS) * S
    b_pos0 = rng.uniform(0.0, S, (_N_BLOBS, 2))
    b_vel = _signed_uniform(rng, 0.05, 0.2, (_N_BLOBS, 2)) * S
    b_h = rng.uniform(0.0, 1.0, _N_BLOBS)[:, None] + _signed_uniform(rng, 0.1, 0.5, _N_BLOBS)[:, None] * t
    b_v = rng.uniform(0.4, 0.9, _N_BLOBS)
    b_alpha = 0.7 * np.maximum(
        0.0, np.sin(2 * np.pi * rng.uniform(0.15, 0.5, _N_BLOBS)[:, None] * t + rng.uniform(0, 2 * np.pi, _N_BLOBS)[:, None])
    )
    # ---- object geometry (drawn for every class, used according to the class) --
    R = rng.uniform(*_OBJ_RADIUS) * S
    margin = _EXTENT * R
    angle = rng.uniform(0.0, 2 * np.pi) + _signed_uniform(rng, 0.2, 1.0) * t  # slow spin
    speed = rng.uniform(*_SPEED) * S
    # bounce
    p0 = rng.uniform(margin, S - margin, 2)
    heading = rng.uniform(0.0, 2 * np.pi)
    # orbit
    orb_r = rng.uniform(*_ORBIT_RADIUS) * S
    orb_c = rng.uniform(orb_r + margin, S - orb_r - margin, 2)
    orb_phase = rng.uniform(0.0, 2 * np.pi)
    orb_dir = rng.choice([-1.0, 1.0])

    if motion == "bounce":
        cx = _reflect(p0[0] + speed * math.cos(heading) * t, margin, S - margin)
        cy = _reflect(p0[1] + speed * math.sin(heading) * t, margin, S - margin)
    else:
        a = orb_phase + orb_dir * (speed / orb_r) * t
        cx = orb_c[0] + orb_r * np.cos(a)
        cy = orb_c[1] + orb_r * np.sin(a)

    # ---- compose (channel-first, in place: this is the hot loop) ---------------
    coords = np.arange(size, dtype=f32) + f32(0.5)  # pixel centres
    X = coords[None, None, :]
    Y = coords[None, :, None]
    shp = (num_frames, size, size)
    tmp = np.empty(shp, f32)
    # background texture in [0, 1]: sum of plane waves, sin(a + b) split into x and y parts
    xn, yn = X / f32(S) - f32(0.5), Y / f32(S) - f32(0.5)
    tex = np.zeros(shp, f32)
    for k in range(_N_WAVES):
        kx = (2 * np.pi * w_freq[k] * np.cos(w_theta[k])).astype(f32).reshape(T3)
        ky = (2 * np.pi * w_freq[k] * np.sin(w_theta[k])).astype(f32).reshape(T3)
        ax = kx * xn + w_phase[k].astype(f32).reshape(T3)  # [T, 1, W]
        ay = ky * yn  # [T, H, 1]
        amp = f32(w_amp[k])
        np.multiply(np.sin(ax) * amp, np.cos(ay), out=tmp)
        tex += tmp
        np.multiply(np.cos(ax) * amp, np.sin(ay), out=tmp)
        tex += tmp
    tex *= f32(0.8) / f32(w_amp.sum())
    tex += f32(0.5)
    np.clip(tex, 0.0, 1.0, out=tex)

    img = np.empty((3,) + shp, f32)
    c0 = bg_rgb[0].T.reshape(3, num_frames, 1, 1)
    dc = (bg_rgb[1] - bg_rgb[0]).T.reshape(3, num_frames, 1, 1)
    for ch in range(3):
        np.multiply(tex, dc[ch], out=img[ch])
        img[ch] += c0[ch]

    def blend(alpha, rgb):
        """img <- img * (1 - alpha) + alpha * rgb, alpha [T, H, W], rgb [T, 3]."""
        one_minus = np.subtract(f32(1.0), alpha, out=tex)  # tex is free now
        col = rgb.T.reshape(3, num_frames, 1, 1)
        for ch in range(3):
            img[ch] *= one_minus
            np.multiply(alpha, col[ch], out=tmp)
            img[ch] += tmp

    for k in range(_N_BLOBS):
        bx = _reflect(b_pos0[k, 0] + b_vel[k, 0] * t, 0.0, S).astype(f32).reshape(T3)
        by = _reflect(b_pos0[k, 1] + b_vel[k, 1] * t, 0.0, S).astype(f32).reshape(T3)
        inv = f32(-0.5 / b_sigma[k] ** 2)
        gx = np.exp((X - bx) ** 2 * inv) * b_alpha[k].astype(f32).reshape(T3)  # [T, 1, W]
        gy = np.exp((Y - by) ** 2 * inv)  # [T, H, 1]
        blend(gx * gy, _hsv_to_rgb(b_h[k], 0.8, b_v[k]))

    # object: rotate pixel offsets into the shape's frame, anti-aliased coverage
    dx = X - cx.astype(f32).reshape(T3)
    dy = Y - cy.astype(f32).reshape(T3)
    ca = np.cos(angle).astype(f32).reshape(T3)
    sa = np.sin(angle).astype(f32).reshape(T3)
    px = ca * dx + sa * dy
    py = ca * dy - sa * dx
    mask = np.clip(f32(0.5) - _shape_sdf(shape, px, py, f32(R)), 0.0, 1.0).astype(f32)
    blend(mask, _hsv_to_rgb(obj_h, obj_s, obj_v))

    g = gain.astype(f32).reshape(T3) * f32(255.0)
    frames = np.empty(shp + (3,), np.uint8)
    for ch in range(3):
        v = img[ch]
        v *= g
        np.rint(v, out=v)
        np.clip(v, 0.0, 255.0, out=v)
        frames[..., ch] = v
    if return_mask:
        return frames, mask
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


def _num_frames(seconds: float, fps: float) -> int:
    return max(1, int(round(seconds * fps)))


def _build_meta(num_train, num_test, size, seconds, fps, seed) -> dict:
    return {
        "version": VERSION,
        "generator": "stjax.data.make_synthetic",
        "args": {
            "num_train": int(num_train),
            "num_test": int(num_test),
            "size": int(size),
            "seconds": float(seconds),
            "fps": float(fps),
            "seed": int(seed),
        },
        "num_frames": _num_frames(seconds, fps),
        "classes": list(CLASS_NAMES),
        "splits": {"train": int(num_train), "test": int(num_test)},
        "encoding": dict(CODEC),
    }


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


def _video_list(num_train: int, num_test: int) -> list[tuple[str, int, int, str]]:
    """(split, index, class_index, relpath) for every video; classes round-robin."""
    out = []
    for split, n in (("train", num_train), ("test", num_test)):
        for i in range(n):
            c = i % len(CLASS_NAMES)
            out.append((split, i, c, f"{CLASS_NAMES[c]}/{split}_{i:06d}.mp4"))
    return out


def _make_one(job) -> str:
    out_dir, split, index, class_index, rel, size, num_frames, fps, seed = job
    path = Path(out_dir) / rel
    if path.exists():  # complete: files only appear under their final name when done
        return rel
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    frames = render_video(class_index, rng, size, num_frames, fps)
    write_mp4(path, frames, fps)
    return rel


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _is_complete(out: Path, videos) -> bool:
    for split in SPLITS:
        if not (out / f"{split}.txt").is_file():
            return False
    return all((out / rel).is_file() for _, _, _, rel in videos)


def generate(
    out_dir,
    num_train: int = 2000,
    num_test: int = 500,
    size: int = 64,
    seconds: float = 3.0,
    fps: float = 25.0,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Generate the dataset into ``out_dir`` and return its meta dict.

    Idempotent: if ``out_dir`` already holds a complete dataset with the same meta,
    returns at once. Raises ``ValueError`` if it holds one made with different
    arguments, or ``FileExistsError`` if it is a non-empty folder that is not a
    synthetic dataset. An interrupted run (same arguments) is resumed.
    """
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    if num_train < 0 or num_test < 0 or seconds <= 0 or fps <= 0 or seed < 0:
        raise ValueError("num_train/num_test must be >= 0, seconds/fps > 0, seed >= 0")
    out = Path(out_dir)
    meta = _build_meta(num_train, num_test, size, seconds, fps, seed)
    videos = _video_list(num_train, num_test)
    meta_path, partial_path = out / META_NAME, out / PARTIAL_NAME

    def check(existing_path: Path) -> None:
        existing = json.loads(existing_path.read_text())
        diffs = _diff_meta(existing, meta)
        if diffs:
            raise ValueError(
                f"synthetic dataset meta mismatch in {out}: it was generated with different "
                f"arguments; refusing to overwrite. Differences: " + "; ".join(diffs)
            )

    if meta_path.exists():
        check(meta_path)
        if _is_complete(out, videos):
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
    for name in CLASS_NAMES:
        d = out / name
        d.mkdir(exist_ok=True)
        for stale in d.glob(".*.mp4.tmp-*"):  # leftovers of a killed run
            stale.unlink()

    nf = meta["num_frames"]
    jobs = [(str(out), s, i, c, rel, int(size), nf, float(fps), int(seed)) for s, i, c, rel in videos]
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

    for split in SPLITS:
        lines = [rel for s, _, _, rel in videos if s == split]
        _write_text_atomic(out / f"{split}.txt", "".join(line + "\n" for line in lines))
    _write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")  # completion marker
    partial_path.unlink(missing_ok=True)
    if progress:
        print(f"[make_synthetic] wrote {len(todo)} videos ({len(videos)} total, "
              f"{len(CLASS_NAMES)} classes) to {out} in {elapsed:.1f}s with {workers} worker(s)")
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num_train", type=int, default=2000)
    p.add_argument("--num_test", type=int, default=500)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="default: os.cpu_count()")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    a = p.parse_args(argv)
    generate(a.out, num_train=a.num_train, num_test=a.num_test, size=a.size, seconds=a.seconds,
             fps=a.fps, seed=a.seed, workers=a.workers, progress=not a.quiet)


if __name__ == "__main__":
    main()
