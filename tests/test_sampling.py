"""Clip sampling: ρ, T, τ and the timespan bound, over many random draws."""
import math

import numpy as np
import pytest
import tensorflow as tf

from stjax.data import sampling


def _draws(n, video_frames, fps, rho, num_frames, stride, timespan, seed=0):
    fn = tf.function(lambda s: sampling.sample_clip_indices(s, video_frames, fps, rho, num_frames, stride, timespan))
    out = [fn(tf.constant([seed, i], tf.int64)) for i in range(n)]
    return np.stack([o[0].numpy() for o in out]), np.stack([o[1].numpy() for o in out])


@pytest.mark.parametrize("rho,num_frames,stride", [(1, 8, 8), (2, 8, 2), (4, 4, 3), (8, 1, 1)])
@pytest.mark.parametrize("timespan", [0.0, 0.5, 1.7, math.inf])
def test_clips_respect_rho_t_stride_and_timespan(rho, num_frames, stride, timespan):
    video_frames, fps = 200, 25.0
    indices, starts = _draws(150, video_frames, fps, rho, num_frames, stride, timespan)
    assert indices.shape == (150, rho, num_frames)
    assert starts.shape == (150, rho)
    # every clip is T frames at stride τ from its start, all inside the video
    np.testing.assert_array_equal(np.diff(indices, axis=-1), stride)
    np.testing.assert_array_equal(indices[..., 0], starts)
    assert indices.min() >= 0 and indices.max() < video_frames
    # the gap between any two clip starts is at most the timespan bound
    gaps = starts.max(axis=1) - starts.min(axis=1)
    limit = math.floor(timespan * fps) if math.isfinite(timespan) else video_frames
    assert gaps.max() <= limit
    if timespan == 0:
        assert (gaps == 0).all()
    if rho > 1 and timespan >= 1.7:
        # the bound is used, not just respected: gaps reach most of it
        assert gaps.max() >= 0.5 * min(limit, video_frames - sampling.clip_span(num_frames, stride))


def test_unbounded_starts_cover_the_video_uniformly():
    video_frames, span = 100, sampling.clip_span(8, 2)
    _, starts = _draws(400, video_frames, 25.0, 2, 8, 2, math.inf)
    last = video_frames - span
    assert starts.min() == 0 or starts.min() <= 3
    assert starts.max() >= last - 3
    # roughly uniform: each quarter of the start range gets 15–35 % of the draws
    hist, _ = np.histogram(starts.ravel(), bins=4, range=(0, last + 1))
    assert (hist > 0.15 * starts.size).all() and (hist < 0.35 * starts.size).all()


def test_short_videos_loop():
    indices, starts = _draws(20, 5, 25.0, 2, 8, 3, math.inf)
    assert (starts == 0).all()
    np.testing.assert_array_equal(indices[0, 0], (np.arange(8) * 3) % 5)
    one_frame, _ = _draws(3, 1, 25.0, 3, 4, 2, 1.0)
    assert (one_frame == 0).all()


def test_same_seed_same_indices_different_seed_different():
    a, _ = _draws(10, 300, 30.0, 4, 8, 8, math.inf, seed=1)
    b, _ = _draws(10, 300, 30.0, 4, 8, 8, math.inf, seed=1)
    c, _ = _draws(10, 300, 30.0, 4, 8, 8, math.inf, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_uniform_test_views():
    starts = sampling.uniform_clip_starts(tf.constant(100), 10, sampling.clip_span(8, 8)).numpy()
    assert starts[0] == 0 and starts[-1] == 100 - 57
    assert (np.diff(starts) > 0).all()
    centre = sampling.uniform_clip_starts(tf.constant(100), 1, 57).numpy()
    assert centre.tolist() == [22]
    assert sampling.uniform_clip_starts(tf.constant(10), 3, 57).numpy().tolist() == [0, 0, 0]
