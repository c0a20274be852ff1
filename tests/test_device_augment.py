"""stjax.data.device_augment: the accelerator's augmentation gives the host's clips from the host's draws, op by op
over the registry (a newly registered op gets these tests by registration) and for whole lists."""
import numpy as np
import pytest
import tensorflow as tf

import jax
import jax.numpy as jnp

from stjax.data import augment as A
from stjax.data import augment_ops, device_augment
from stjax.data.augment_config import CLIP_PARAM_NAMES

ALL_ON = dict(flip_prob=1.0, color_jitter_prob=1.0, grayscale_prob=1.0, blur_prob=1.0)


def _frames(t, h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (t, max(2, h // 6), max(2, w // 6), 3)).astype(np.float32)
    big = tf.image.resize(small, [h, w], method="bilinear").numpy()
    return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


def _host_and_device(config, n=24, t=3, size=20, salt=0, jit=False):
    """(host-augmented clips, device-augmented clips, packed draws) for n seeds."""
    frames = np.stack([_frames(t, size, size, seed=i) for i in range(n)])
    host, params = [], []
    for i in range(n):
        seed = tf.constant([i, salt], tf.int64)
        host.append(A.augment_clip(frames[i], seed, config, jit=jit).numpy())
        params.append(A.pack_clip_params(A.sample_clip_params(seed, config)).numpy())
    params = np.stack(params).reshape(n, len(config.draw_names))
    device = jax.jit(lambda c, p: device_augment.augment_clips(c, p, config))(frames, params)
    return np.stack(host), np.asarray(device), params


def _always(op):
    """The settings that make `op` run on every clip: each of its probabilities at 1."""
    return {s.name: 1.0 for s in op.settings if s.check is augment_ops.probability}


@pytest.mark.parametrize("jit", [False, True], ids=["op_by_op", "jitted"])
@pytest.mark.parametrize("drawn", ["always", "recipe"])
@pytest.mark.parametrize("name", list(augment_ops.OPS))
def test_each_registered_op_matches_host_within_one_level(name, drawn, jit):
    """Every op of the registry alone: its `apply_jax` gives its `apply_tf`'s clips from the same draws."""
    op = augment_ops.OPS[name]
    config = A.AugmentConfig(crop_size=20, ops=(name,), **(_always(op) if drawn == "always" else {}))
    host, device, params = _host_and_device(config, n=12, salt=len(name), jit=jit)
    diff = np.abs(host.astype(int) - device.astype(int))
    assert diff.max() <= 1, diff.max()
    assert (diff > 0).mean() < 0.01
    frames = np.stack([_frames(3, 20, 20, seed=i) for i in range(12)])
    changed = [not np.array_equal(h, f) for h, f in zip(host, frames)]
    if drawn == "always":
        assert np.mean(changed) > 0.5  # the op did something (a blur of σ ≈ 0.1 px may round to the clip)
    assert params.shape == (12, len(op.draws))


@pytest.mark.parametrize("overrides", [
    {},                                                        # the recipe's probabilities
    ALL_ON,                                                    # every op on every clip
    dict(ALL_ON, grayscale_prob=0.0, blur_sigma_range=(0.1, 3.0)),  # colour kept; radii 1..6 (capped at 9)
    dict(ALL_ON, hue=0.0, brightness=0.0, grayscale_prob=0.0),  # disabled jitter ops are identities
    dict(flip_prob=0.0, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0),
    dict(ALL_ON, ops=("blur", "grayscale", "color_jitter", "flip")),  # another order: flip on floats
    dict(ALL_ON, ops=()),                                      # no op: the crop alone
])
def test_device_augmentation_matches_host_within_one_level(overrides):
    config = A.AugmentConfig(crop_size=20, **overrides)
    host, device, params = _host_and_device(config)
    diff = np.abs(host.astype(int) - device.astype(int))
    assert diff.max() <= 1, diff.max()
    assert (diff > 0).mean() < 0.01
    if overrides.get("flip_prob", 1.0) != 0.0 and "flip" in config.ops:
        assert 0 < params[:, config.draw_names.index("flip")].sum() <= len(params)


def test_device_augmentation_matches_jitted_host():
    config = A.AugmentConfig(crop_size=20)
    host, device, _ = _host_and_device(config, n=12, salt=5, jit=True)
    assert np.abs(host.astype(int) - device.astype(int)).max() <= 1


def test_batch_shapes_and_errors():
    config = A.AugmentConfig(crop_size=8)
    clips = jnp.zeros((2, 3, 4, 8, 8, 3), jnp.uint8)
    params = jnp.zeros((2, 3, len(CLIP_PARAM_NAMES)))
    assert device_augment.augment_clips(clips, params, config).shape == clips.shape
    with pytest.raises(ValueError, match=r"augment params must be \[..., 13\] \(the draws of data.augmentation.ops="):
        device_augment.augment_clips(clips, params[:, :2], config)
    short = A.AugmentConfig(crop_size=8, ops=("flip", "blur"))
    assert device_augment.augment_clips(clips, params[..., :3], short).shape == clips.shape


def test_packed_params_follow_names():
    config = A.AugmentConfig()
    seed = tf.constant([3, 4], tf.int64)
    params = A.sample_clip_params(seed, config)
    packed = A.pack_clip_params(params).numpy()
    assert packed.shape == (len(CLIP_PARAM_NAMES),)
    assert list(params) == list(CLIP_PARAM_NAMES) == list(config.draw_names)
    for name in CLIP_PARAM_NAMES:
        assert packed[CLIP_PARAM_NAMES.index(name)] == float(params[name])
    order = [packed[CLIP_PARAM_NAMES.index(f"order_{i}")] for i in range(4)]
    assert sorted(order) == [0, 1, 2, 3]
