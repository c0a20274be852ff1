"""The host (TensorFlow) twins of `stjax.data.scene_ops`: BE's and DSM's clip transforms for ONE clip.

  background_erase             (1 − λ)·x_t + λ·x_k: a static frame k of the clip blended into every frame
  spatial_local_disturbance    DSM's smooth local warp of 1–3 points, the same for every frame (bilinear)
  temporal_local_disturbance   frame t of the output shows frame indices[t] (insertions and swaps)

Each takes a float32 clip [T, H, W, C] and that clip's draws (NumPy or tf; from the `*_draws` functions of
`scene_ops`, indexed at the clip) and computes what the JAX op computes: the same formulas, the same order of
the sequential warps, the same bilinear sampling and clamping, so a clip comes out the same on both sides
(within float32 rounding; tested in tests/test_scene_ops.py). Graph-compatible (usable inside a tf.data map;
H, W and the number of points P may be dynamic); imports no JAX.
"""
from __future__ import annotations

import tensorflow as tf


def background_erase(clip: tf.Tensor, lam, frame) -> tf.Tensor:
    """(1 − λ)·x_t + λ·x_k of a clip [T, H, W, C] with λ = `lam` (scalar) and k = `frame` (scalar int)."""
    clip = tf.convert_to_tensor(clip)
    lam = tf.cast(lam, clip.dtype)
    static = tf.gather(clip, tf.cast(frame, tf.int32), axis=0)[None]
    return (1 - lam) * clip + lam * static


def sld_source_coordinates(height, width, centres, shifts, active) -> tf.Tensor:
    """float32 [H, W, 2] (x, y): where each output pixel samples its input for one clip's warp draws
    (centres, shifts [P, 2] (x, y) px, active [P] bool); the warps in `scene_ops.sld_source_coordinates`' order
    (the coordinates go through them last first), then clamped to the frame."""
    centres = tf.cast(centres, tf.float32)
    shifts = tf.cast(shifts, tf.float32)
    active = tf.cast(active, tf.bool)
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    q = tf.stack([xs, ys], axis=-1)  # output pixel, integer positions

    def warp(i, q):
        c, s = centres[i], shifts[i]
        inside = tf.reduce_all(tf.abs(q - c) < 3 * s, axis=-1, keepdims=True)
        d = q - (c + s)
        s_norm = tf.sqrt(tf.reduce_sum(s * s))
        r = tf.sqrt(tf.reduce_sum(d * d, axis=-1, keepdims=True)) / tf.maximum(s_norm, 1e-6)
        r2 = r * r
        w = 0.5 / (3 * (r2 * r2) + 1)
        return i - 1, tf.where(tf.logical_and(inside, active[i]), q - w * s, q)

    _, q = tf.while_loop(lambda i, q: i >= 0, warp, (tf.shape(centres)[0] - 1, q))
    x = tf.clip_by_value(q[..., 0], 0.0, tf.cast(width - 1, tf.float32))
    y = tf.clip_by_value(q[..., 1], 0.0, tf.cast(height - 1, tf.float32))
    return tf.stack([x, y], axis=-1)


def _bilinear(frames: tf.Tensor, coords: tf.Tensor) -> tf.Tensor:
    """frames [T, H, W, C] sampled at coords [H, W, 2] (x, y; inside the frame) → [T, H, W, C]."""
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    x, y = coords[..., 0], coords[..., 1]
    x0, y0 = tf.floor(x), tf.floor(y)
    fx = tf.cast((x - x0)[None, ..., None], frames.dtype)
    fy = tf.cast((y - y0)[None, ..., None], frames.dtype)
    x0i, y0i = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1i, y1i = tf.minimum(x0i + 1, w - 1), tf.minimum(y0i + 1, h - 1)
    flat = tf.reshape(frames, tf.stack([shape[0], h * w, shape[3]]))

    def at(yi, xi):
        return tf.gather(flat, yi * w + xi, axis=1)  # [T, H, W, C]

    top = at(y0i, x0i) * (1 - fx) + at(y0i, x1i) * fx
    bottom = at(y1i, x0i) * (1 - fx) + at(y1i, x1i) * fx
    return top * (1 - fy) + bottom * fy


def spatial_local_disturbance(clip: tf.Tensor, centres, shifts, active) -> tf.Tensor:
    """A clip [T, H, W, C] warped by one clip's `sld_draws` (centres, shifts [P, 2] (x, y) px, active [P] bool):
    one warp for all its frames, sampled bilinearly."""
    clip = tf.convert_to_tensor(clip)
    shape = tf.shape(clip)
    coords = sld_source_coordinates(shape[1], shape[2], centres, shifts, active)
    return tf.cast(_bilinear(clip, coords), clip.dtype)


def temporal_local_disturbance(clip: tf.Tensor, indices) -> tf.Tensor:
    """A clip [T, H, W, C] whose output frame t shows frame indices[t] (indices [T] int, `tld_draws`)."""
    return tf.gather(tf.convert_to_tensor(clip), tf.cast(indices, tf.int32), axis=0)


__all__ = ["background_erase", "sld_source_coordinates", "spatial_local_disturbance",
           "temporal_local_disturbance"]
