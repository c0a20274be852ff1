"""The scene / motion clip transforms of Background Erasing (BE) and DSM, pure JAX, one draw per clip.

  background_erase             BE's distracting clip: x̃_t = (1 − λ)·x_t + λ·x_k, one static frame k of the clip
                               added to every frame (the scene grows, the motion x_t − x_{t−1} only shrinks)
  spatial_local_disturbance    DSM's positive (SLD): a smooth local warp of 1–3 points, the same for every
                               frame (the scene's layout moves, the motion is kept)
  temporal_local_disturbance   DSM's negative (TLD): frames inserted and swapped inside the clip (the scene is
                               kept, the motion's order broken)

Each op is its draws (`*_draws(rng, ...)`: the random numbers, per clip) and a pure transform given them, so the
host and the device (and a test) get the same clip from the same draws. Clips are float [..., T, H, W, C]
(any leading dims: [B, ρ] in a train step); the draws have the leading dims. Defaults are the official code's
(`../shared/specs/background_erasing.md` §1, `dsm.md` §1–2), the pixel constants of DSM's warp scaled from 224².
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# DSM's warp for 224² crops: centres U{60..139}, shifts U{10..19} px -> fractions of the side
SLD_CENTRE = (60 / 224, 140 / 224)
SLD_SHIFT = (10 / 224, 20 / 224)
SLD_POINTS = (1, 3)


def _check_range(name: str, value, low: float, high: float) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name}={tuple(value)!r} is invalid; valid values: (lo, hi) with {low} <= lo <= hi <= "
                         f"{high}")
    return lo, hi


# ----------------------------------------------------------------------------- background erasing

def background_erasing_draws(rng, batch_shape: tuple, num_frames: int, max_lambda: float = 0.3,
                             per_clip: bool = False) -> dict:
    """{'lam': float32 batch_shape, 'frame': int32 batch_shape}: λ = max_lambda · U(0, 1), one for every clip
    (the official code's one per batch) or, with `per_clip`, one each; the static frame k ~ U{0 … T − 1} of
    each clip."""
    if not 0.0 <= max_lambda <= 1.0:
        raise ValueError(f"max_lambda={max_lambda!r} is invalid; valid values: numbers in [0, 1]")
    lam_rng, frame_rng = jax.random.split(rng)
    lam = jax.random.uniform(lam_rng, batch_shape if per_clip else ()) * max_lambda
    return {"lam": jnp.broadcast_to(lam, batch_shape).astype(jnp.float32),
            "frame": jax.random.randint(frame_rng, batch_shape, 0, num_frames, jnp.int32)}


def background_erase(clips: jnp.ndarray, lam: jnp.ndarray, frame: jnp.ndarray) -> jnp.ndarray:
    """(1 − λ)·x_t + λ·x_k of clips [..., T, H, W, C] with λ = `lam` and k = `frame` ([...] each)."""
    lead = clips.ndim - 4
    static = jnp.take_along_axis(clips, frame.reshape(frame.shape + (1,) * 4).astype(jnp.int32), axis=lead)
    lam = lam.reshape(lam.shape + (1,) * 4).astype(clips.dtype)
    return (1 - lam) * clips + lam * static


# ----------------------------------------------------------------------------- spatial local disturbance

def sld_draws(rng, batch_shape: tuple, height: int, width: int, num_points=SLD_POINTS, centre=SLD_CENTRE,
              shift=SLD_SHIFT) -> dict:
    """{'centres', 'shifts': float32 [..., P, 2] (x, y) pixels, 'active': bool [..., P]} of DSM's warp, per
    clip: n ~ U{num_points} active points of P = num_points[1], each centre uniform in `centre` × the side
    and shift uniform in `shift` × the side (both axes independently)."""
    lo, hi = (int(v) for v in num_points)
    if not 1 <= lo <= hi:
        raise ValueError(f"num_points={tuple(num_points)!r} is invalid; valid values: (fewest, most), 1 <= fewest "
                         "<= most")
    c_lo, c_hi = _check_range("centre", centre, 0.0, 1.0)
    s_lo, s_hi = _check_range("shift", shift, 0.0, 1.0)
    k_n, k_c, k_s = jax.random.split(rng, 3)
    side = jnp.asarray([width, height], jnp.float32)
    shape = tuple(batch_shape) + (hi, 2)
    centres = jax.random.uniform(k_c, shape, minval=c_lo, maxval=c_hi) * side
    shifts = jax.random.uniform(k_s, shape, minval=s_lo, maxval=s_hi) * side
    count = jax.random.randint(k_n, tuple(batch_shape), lo, hi + 1)
    active = jnp.arange(hi) < count[..., None]
    return {"centres": centres, "shifts": shifts, "active": active}


def sld_source_coordinates(height: int, width: int, centres, shifts, active) -> jnp.ndarray:
    """float32 [H, W, 2] (x, y): where each output pixel of one clip's warp samples its input, for the draws
    of that clip ([P, 2], [P, 2], [P]). Warp i moves the content around c_i + s_i: a pixel p within
    |p − c_i| < 3·s_i (per axis) samples p − w·s_i, w = 0.5 / (3·(‖p − (c_i + s_i)‖ / ‖s_i‖)⁴ + 1); the warps
    apply one after another (the official code's order), so the coordinates go through them last first."""
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                          indexing="ij")
    q = jnp.stack([xs, ys], axis=-1)  # output pixel (integer positions, as the official code)
    for i in reversed(range(centres.shape[0])):
        c, s = centres[i], shifts[i]
        inside = jnp.all(jnp.abs(q - c) < 3 * s, axis=-1, keepdims=True)
        r = jnp.linalg.norm(q - (c + s), axis=-1, keepdims=True) / jnp.maximum(jnp.linalg.norm(s), 1e-6)
        w = 0.5 / (3 * r ** 4 + 1)
        q = jnp.where(inside & active[i], q - w * s, q)
    return jnp.stack([jnp.clip(q[..., 0], 0, width - 1), jnp.clip(q[..., 1], 0, height - 1)], axis=-1)


def _bilinear(frames: jnp.ndarray, coords: jnp.ndarray) -> jnp.ndarray:
    """frames [T, H, W, C] sampled at coords [H', W', 2] (x, y; inside the frame) → [T, H', W', C]."""
    x, y = coords[..., 0], coords[..., 1]
    x0, y0 = jnp.floor(x), jnp.floor(y)
    fx, fy = (x - x0)[None, ..., None], (y - y0)[None, ..., None]
    h, w = frames.shape[1:3]
    x0i, y0i = x0.astype(jnp.int32), y0.astype(jnp.int32)
    x1i, y1i = jnp.minimum(x0i + 1, w - 1), jnp.minimum(y0i + 1, h - 1)
    top = frames[:, y0i, x0i] * (1 - fx) + frames[:, y0i, x1i] * fx
    bottom = frames[:, y1i, x0i] * (1 - fx) + frames[:, y1i, x1i] * fx
    return top * (1 - fy) + bottom * fy


def spatial_local_disturbance(clips: jnp.ndarray, centres, shifts, active) -> jnp.ndarray:
    """clips [..., T, H, W, C] warped by `sld_draws`' draws ([..., P, 2], [..., P, 2], [..., P]): one warp per
    clip, the same for all its frames, sampled bilinearly (the official code truncates to integers)."""
    h, w = clips.shape[-3:-1]
    lead = clips.shape[:-4]
    flat = clips.reshape((-1,) + clips.shape[-4:])
    n = flat.shape[0]

    def one(frames, c, s, a):
        return _bilinear(frames, sld_source_coordinates(h, w, c, s, a)).astype(frames.dtype)

    out = jax.vmap(one)(flat, centres.reshape(n, -1, 2), shifts.reshape(n, -1, 2), active.reshape(n, -1))
    return out.reshape(lead + clips.shape[-4:])


# ----------------------------------------------------------------------------- temporal local disturbance

def tld_draws(rng, batch_shape: tuple, num_frames: int, insert_rounds: int = 2, swap_rounds: int = 2,
              fraction: float = 0.1) -> dict:
    """{'indices': int32 [..., T]}: the frame each output frame shows, per clip: `insert_rounds` rounds of
    random insertion (a copy of the frame at a random position goes in at a random position, later frames move
    on, the last drops) then `swap_rounds` rounds of random swaps of two distinct positions, n = max(1,
    ⌊fraction·T⌋) per round (the official in-clip "EDA": T = 8 → 2 insertions, 2 swaps). Draws that would
    leave the clip as it was (e.g. two swaps undoing each other: 13 % of draws at T = 2, none seen at T = 8)
    get one more swap, so the order always changes."""
    if insert_rounds < 0 or swap_rounds < 0 or insert_rounds + swap_rounds < 1:
        raise ValueError(f"insert_rounds={insert_rounds}, swap_rounds={swap_rounds} are invalid; valid values: "
                         "integers >= 0, at least one of them > 0")
    if num_frames < 2:
        raise ValueError(f"num_frames={num_frames} is invalid: a temporal disturbance needs clips of >= 2 frames")
    per_round = max(1, math.floor(fraction * num_frames))
    t = num_frames
    positions = jnp.arange(t)

    def insert(indices, key):  # indices [T]
        k_a, k_b = jax.random.split(key)
        a = jax.random.randint(k_a, (), 0, t)
        b = jax.random.randint(k_b, (), 0, t)
        shifted = jnp.where(positions > b, jnp.roll(indices, 1), indices)  # positions after b move on by one
        return jnp.where(positions == b, indices[a], shifted)

    def swap(indices, key):
        k_a, k_b = jax.random.split(key)
        a = jax.random.randint(k_a, (), 0, t)
        b = (a + jax.random.randint(k_b, (), 1, t)) % t  # b != a
        return indices.at[a].set(indices[b]).at[b].set(indices[a])

    def one(key):
        indices = positions.astype(jnp.int32)
        keys = jax.random.split(key, (insert_rounds + swap_rounds) * per_round + 1)
        for i in range(insert_rounds * per_round):
            indices = insert(indices, keys[i])
        for i in range(insert_rounds * per_round, len(keys) - 1):
            indices = swap(indices, keys[i])
        unchanged = jnp.all(indices == positions)
        return jnp.where(unchanged, swap(indices, keys[-1]), indices)

    n = math.prod(batch_shape)
    indices = jax.vmap(one)(jax.random.split(rng, max(n, 1)))[:n]
    return {"indices": indices.reshape(tuple(batch_shape) + (t,))}


def temporal_local_disturbance(clips: jnp.ndarray, indices: jnp.ndarray) -> jnp.ndarray:
    """clips [..., T, H, W, C] with output frame t showing frame indices[..., t] (`tld_draws`)."""
    lead = clips.ndim - 4
    return jnp.take_along_axis(clips, indices.reshape(indices.shape + (1,) * 3).astype(jnp.int32), axis=lead)


__all__ = ["SLD_CENTRE", "SLD_POINTS", "SLD_SHIFT", "background_erase", "background_erasing_draws",
           "sld_draws", "sld_source_coordinates", "spatial_local_disturbance", "temporal_local_disturbance",
           "tld_draws"]
