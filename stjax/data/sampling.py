"""Which frames to decode: ρ training clips per video, and test-time views.

Frame indices refer to the stored frames of a video (a constant rate, `fps`).
A clip is T frames at stride τ, spanning L = (T − 1)·τ + 1 stored frames.

Training (`sample_clip_starts`): the ρ clip starts are drawn so that no two
are more than `max_timespan` seconds apart. A window of D = ⌊max_timespan·fps⌋
frames is placed uniformly in the video, then each start is drawn uniformly
inside it; with D = ∞ the starts are independent and uniform over the video,
with D = 0 all clips start at the same frame (ρ augmentations of one clip).

Short videos: a video with fewer than L frames loops (index mod num_frames),
so every video, even a 1-frame one, yields full clips.

All randomness is stateless (`seed`: int32/int64 [2]), so the same seed gives the
same indices inside any tf.data pipeline.
"""
from __future__ import annotations

import math

import tensorflow as tf


def clip_span(num_frames_per_clip: int, stride: int) -> int:
    """Number of stored frames a clip covers, first to last inclusive."""
    return (num_frames_per_clip - 1) * stride + 1


def sample_clip_starts(seed, video_frames, fps, rho: int, span: int, max_timespan: float) -> tf.Tensor:
    """Start frames of ρ clips, int32 [ρ], each in [0, max(video_frames − span, 0)].

    Args:
      seed: stateless seed, int [2].
      video_frames: stored frames in the video, int scalar tensor (≥ 1).
      fps: stored frames per second, float scalar tensor.
      rho: number of clips (static).
      span: frames covered by one clip (static), see `clip_span`.
      max_timespan: largest allowed gap between two clip starts, in seconds;
        `math.inf` for no bound, 0 for identical starts.
    """
    last_start = tf.maximum(tf.cast(video_frames, tf.int32) - span, 0)
    if math.isinf(max_timespan):
        window = last_start
    else:
        window = tf.minimum(
            tf.cast(tf.floor(max_timespan * tf.cast(fps, tf.float32) + 1e-6), tf.int32), last_start
        )
    window_seed, starts_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    window_start = _uniform_int(window_seed, [], last_start - window)
    return window_start + _uniform_int(starts_seed, [rho], window)


def clip_indices(starts, video_frames, num_frames_per_clip: int, stride: int) -> tf.Tensor:
    """Frame indices int32 [..., T] of clips beginning at `starts` [...]; short videos loop."""
    offsets = tf.range(num_frames_per_clip, dtype=tf.int32) * stride
    return (starts[..., None] + offsets) % tf.cast(video_frames, tf.int32)


def sample_clip_indices(seed, video_frames, fps, rho: int, num_frames_per_clip: int, stride: int,
                        max_timespan: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(indices int32 [ρ, T], starts int32 [ρ]) of ρ random clips of one video."""
    starts = sample_clip_starts(
        seed, video_frames, fps, rho, clip_span(num_frames_per_clip, stride), max_timespan
    )
    return clip_indices(starts, video_frames, num_frames_per_clip, stride), starts


def uniform_clip_starts(video_frames, num_clips: int, span: int) -> tf.Tensor:
    """Test-time starts int32 [num_clips]: evenly spaced from the first to the last
    possible start (one clip: the centre one), as in the multi-view test protocol."""
    last_start = tf.cast(tf.maximum(tf.cast(video_frames, tf.int32) - span, 0), tf.float32)
    if num_clips == 1:
        positions = tf.constant([0.5])
    else:
        positions = tf.linspace(0.0, 1.0, num_clips)
    return tf.cast(tf.round(positions * last_start), tf.int32)


def _uniform_int(seed, shape, max_inclusive) -> tf.Tensor:
    """Uniform integers in [0, max_inclusive] (a scalar tensor ≥ 0)."""
    count = tf.cast(max_inclusive, tf.float32) + 1.0
    u = tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)
    return tf.minimum(tf.cast(tf.floor(u * count), tf.int32), tf.cast(max_inclusive, tf.int32))
