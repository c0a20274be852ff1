"""The CMD inputs of the training pipeline: motion windows, negatives, keyframe choice, motion crops."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from stjax.data import augment, motion_inputs
from stjax.data.augment_config import AugmentConfig

SPEC = motion_inputs.MotionSpec(future_frames=4, future_interval=2, num_negatives=3, block=4, keyframe_window=5)


def _seed(i):
    return tf.constant([i, 7], tf.int64)


@pytest.mark.parametrize("frames,last", [(50, 10), (50, 30), (40, 0)])
def test_window_zero_follows_the_clip_and_negatives_do_not_overlap_it(frames, last):
    seen = set()
    for i in range(60):
        starts = motion_inputs.window_starts(_seed(i), frames, tf.constant(last), SPEC).numpy()
        assert starts[0] == last + SPEC.future_interval + 1
        for s in starts[1:]:
            assert 0 <= s <= frames - SPEC.future_frames
            assert abs(int(s) - int(starts[0])) >= SPEC.future_frames  # disjoint windows
            seen.add(int(s))
    # the negatives spread over the allowed starts (both sides of window 0 when there is room)
    allowed = [s for s in range(frames - SPEC.future_frames + 1) if abs(s - (last + 3)) >= SPEC.future_frames]
    assert len(seen) > len(allowed) // 3
    assert min(seen) < last + 3 or last + 3 - SPEC.future_frames < 0


def test_too_short_video_gives_overlapping_negatives_inside_it():
    frames = 6  # one window of 4 fits at starts 0..2, all overlap window 0
    for i in range(20):
        starts = motion_inputs.window_starts(_seed(i), frames, tf.constant(0), SPEC).numpy()
        assert np.all((starts[1:] >= 0) & (starts[1:] <= 2))
        rows = motion_inputs.window_indices(tf.constant(starts), frames, SPEC).numpy()
        assert rows.max() == frames - 1 and rows.min() >= 0  # past the end: the last frame repeats
        np.testing.assert_array_equal(rows[0], [3, 4, 5, 5])  # window 0 at 0 + 2 + 1, clamped


def test_keyframe_drawn_among_those_near_the_clip():
    flags = np.zeros(100, bool)
    flags[[0, 12, 24, 36, 48, 60]] = True
    picked = {int(motion_inputs.pick_keyframe(_seed(i), tf.constant(flags), tf.constant(20), tf.constant(34),
                                              SPEC)) for i in range(80)}
    assert picked == {24, 36}  # 12 is 8 frames before the clip (window 5), 24 inside, 36 two after


def test_keyframe_fallbacks():
    one = np.zeros(50, bool)
    one[0] = True  # the synthetic set's streams: one I-frame
    assert int(motion_inputs.pick_keyframe(_seed(0), tf.constant(one), tf.constant(30), tf.constant(44), SPEC)) == 0
    two = np.zeros(60, bool)
    two[[10, 50]] = True  # clip 24..36: middle 30, both 20 away; the earlier wins
    assert int(motion_inputs.pick_keyframe(_seed(0), tf.constant(two), tf.constant(24), tf.constant(36), SPEC)) == 10
    none = np.zeros(60, bool)
    assert int(motion_inputs.pick_keyframe(_seed(0), tf.constant(none), tf.constant(24), tf.constant(36), SPEC)) == 24


def _uniform_field(t, gh, gw, dx, dy):
    field = np.zeros((t, gh, gw, 2), np.int8)
    field[..., 0], field[..., 1] = round(4 * dx), round(4 * dy)
    return field


@pytest.mark.parametrize("window,scale", [((0, 0, 32, 32), 1.0), ((0, 0, 64, 64), 0.5), ((8, 16, 16, 16), 2.0)])
def test_crop_motion_rescales_to_the_crop_and_negates_dx_on_flip(window, scale):
    field = _uniform_field(3, 16, 16, 2.0, -1.0)  # a 64×64 frame, 4-px blocks
    for flip, sign in ((0.0, 1.0), (1.0, -1.0)):
        out = motion_inputs.crop_motion(tf.constant(field), tf.constant(window), tf.constant(flip), 64, 64, 8).numpy()
        assert out.shape == (3, 8, 8, 2) and out.dtype == np.int8
        np.testing.assert_array_equal(out[..., 0], np.full((3, 8, 8), round(4 * 2.0 * scale * sign)))
        np.testing.assert_array_equal(out[..., 1], np.full((3, 8, 8), round(4 * -1.0 * scale)))


def test_crop_motion_takes_the_box_and_reverses_x_on_flip():
    field = np.zeros((1, 16, 16, 2), np.int8)
    field[0, :, 8:, 1] = 8  # the right half moves down 2 px/frame
    left = motion_inputs.crop_motion(tf.constant(field), tf.constant([0, 0, 64, 32]), tf.constant(0.0), 64, 64, 8)
    right = motion_inputs.crop_motion(tf.constant(field), tf.constant([0, 32, 64, 32]), tf.constant(0.0), 64, 64, 8)
    assert np.all(left.numpy()[..., 1] == 0)
    assert np.all(right.numpy()[..., 1] > 0)
    whole = motion_inputs.crop_motion(tf.constant(field), tf.constant([0, 0, 64, 64]), tf.constant(0.0), 64, 64, 8)
    flipped = motion_inputs.crop_motion(tf.constant(field), tf.constant([0, 0, 64, 64]), tf.constant(1.0), 64, 64, 8)
    np.testing.assert_array_equal(flipped.numpy()[..., 1], whole.numpy()[:, :, ::-1, 1])
    assert whole.numpy()[0, 0, -1, 1] > 0 and whole.numpy()[0, 0, 0, 1] == 0


def test_clip_geometry_is_the_clips_own_crop_and_flip():
    """A clip whose pixels encode their column: the crop and flip `clip_geometry` reports reproduce it."""
    height, width = 48, 64
    columns = np.tile(np.linspace(0, 255, width).astype(np.uint8)[None, :, None], (height, 1, 3))
    buffer = io.BytesIO()
    Image.fromarray(columns).save(buffer, format="JPEG", quality=100)
    encoded = tf.constant([buffer.getvalue()] * 2)
    config = AugmentConfig(crop_size=16, area_range=(0.2, 0.8), ops=("flip",), flip_prob=0.5)
    flips = set()
    for i in range(12):
        seed = _seed(i)
        clip = augment.random_resized_clip(encoded, height, width, seed, config).numpy()
        window, flip = motion_inputs.clip_geometry(seed, height, width, config)
        expected = augment.crop_and_resize_frames(tf.io.decode_jpeg(encoded[0])[None], window, 16).numpy()
        if float(flip) > 0.5:
            expected = expected[:, :, ::-1]
        np.testing.assert_array_equal(clip[:1], expected)
        flips.add(float(flip))
    assert flips == {0.0, 1.0}


def test_spec_errors_name_the_field():
    with pytest.raises(ValueError, match="data.motion.future_frames"):
        motion_inputs.MotionSpec(future_frames=0)
    with pytest.raises(ValueError, match="data.motion.block"):
        SPEC.map_size(2)


def test_motion_colours_and_the_motion_png(tmp_path):
    from stjax.data import show

    motion = np.zeros((1, 1, 4, 2), np.int8)
    motion[0, 0, 0] = (8, 0)    # right: red
    motion[0, 0, 1] = (0, -8)   # up on screen: hue 1/4 (yellow-green)
    motion[0, 0, 2] = (-4, 0)   # left, half the speed: cyan, half as bright
    rgb = show.motion_colours(motion)[0, 0].astype(int)
    np.testing.assert_array_equal(rgb[0], [255, 0, 0])
    assert rgb[1, 1] == 255 and rgb[1, 2] == 0 and 120 < rgb[1, 0] < 135
    np.testing.assert_array_equal(rgb[2], [0, 128, 128])
    np.testing.assert_array_equal(rgb[3], [0, 0, 0])  # still: black
    rng = np.random.default_rng(0)
    batch = {"clips": rng.integers(0, 255, (2, 2, 3, 16, 16, 3), dtype=np.uint8),
             "keyframe": rng.integers(0, 255, (2, 2, 16, 16, 3), dtype=np.uint8),
             "motion": rng.integers(-20, 20, (2, 2, 3, 4, 4, 4, 2), dtype=np.int8), "label": np.array([0, 1])}
    path = tmp_path / "m" / "motion.png"
    show.render_motion_png(batch, ["a", "b"], str(path), "title")
    assert path.stat().st_size > 1000
