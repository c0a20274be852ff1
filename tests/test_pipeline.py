"""The tf.data pipeline: batch layout, determinism, per-host slices, sharding on 8 devices."""
import math

import jax
import numpy as np
import pytest

from stjax.data import augment, device, pipeline
from stjax.train import mesh as mesh_lib

AUG = augment.AugmentConfig(crop_size=24, blur_sigma_range=(0.1, 0.5))


def _batches(data_dir, n, **kwargs):
    kwargs = dict(dict(batch_size=4, clips=pipeline.ClipSpec(rho=3, num_frames=4, stride=2),
                       augmentation=AUG, seed=0), **kwargs)
    ds = pipeline.pretrain_dataset("video_folder/tiny", data_dir=data_dir, **kwargs)
    it = ds.as_numpy_iterator()
    return [next(it) for _ in range(n)]


def test_pretrain_batch_layout(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    (batch,) = _batches(data_dir, 1)
    assert batch["clips"].shape == (4, 3, 4, 24, 24, 3)
    assert batch["clips"].dtype == np.uint8
    assert batch["label"].shape == (4,) and set(batch["label"]) <= {0, 1, 2}
    assert batch["clip_starts"].shape == (4, 3)
    # the clips of a video differ (independent crops, colours and times)
    clips = batch["clips"].astype(np.int32)
    assert all(np.abs(clips[:, 0] - clips[:, r]).mean() > 1 for r in (1, 2))


def test_same_seed_same_batches(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    a = _batches(data_dir, 4, seed=3)
    b = _batches(data_dir, 4, seed=3)
    c = _batches(data_dir, 4, seed=4)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(not np.array_equal(x["clips"], z["clips"]) for x, z in zip(a, c))


def test_timespan_zero_gives_one_start_per_video(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    for batch in _batches(data_dir, 3, clips=pipeline.ClipSpec(rho=3, num_frames=4, stride=2, max_timespan=0.0)):
        assert (batch["clip_starts"] == batch["clip_starts"][:, :1]).all()
    spans = [b["clip_starts"].max(1) - b["clip_starts"].min(1)
             for b in _batches(data_dir, 6, clips=pipeline.ClipSpec(rho=3, num_frames=4, stride=2, max_timespan=0.5))]
    assert np.concatenate(spans).max() <= 0.5 + 1e-6


def test_each_host_reads_its_own_slice(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    views = pipeline.ViewSpec(num_frames=4, stride=2, crop_size=24, temporal=1, spatial=1)
    seen = []
    for index in range(2):
        ds = pipeline.eval_dataset("video_folder/tiny", data_dir=data_dir, split="train", batch_size=2,
                                   views=views, process_index=index, process_count=2)
        batches = list(ds.as_numpy_iterator())
        assert len(batches) == 3  # ceil(ceil(9 / 2) / 2) on both hosts, padded
        seen.append(np.concatenate([b["clips"][b["mask"]] for b in batches]))
    assert len(seen[0]) + len(seen[1]) == 9
    # no video is read by both hosts
    flat = [c.reshape(len(c), -1) for c in seen]
    assert not any((row == flat[1]).all(axis=1).any() for row in flat[0])


def test_eval_views(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    views = pipeline.ViewSpec(num_frames=4, stride=2, crop_size=24, temporal=5, spatial=3)
    batches = list(pipeline.eval_dataset("video_folder/tiny", data_dir=data_dir, split="test", batch_size=2,
                                         views=views).as_numpy_iterator())
    assert [b["clips"].shape for b in batches] == [(2, 15, 4, 24, 24, 3)] * 2
    assert np.concatenate([b["mask"] for b in batches]).tolist() == [True, True, True, False]
    clips = batches[0]["clips"].astype(int)
    # temporal-major: views 0..2 are the 3 spatial crops of the first clip, and they differ
    assert np.abs(clips[0, 0] - clips[0, 2]).mean() > 1
    # the 5 temporal views of a 1 s+ video start at different frames
    assert np.abs(clips[0, 1] - clips[0, 13]).mean() > 1


def test_eval_views_short_side(tiny_video_dataset):
    """short_side resizes before cropping: at the native short side (32) the crops are plain
    windows of the frame, centred on the short side and spread along the long side."""
    data_dir, _ = tiny_video_dataset

    def first_clip(views):
        ds = pipeline.eval_dataset("video_folder/tiny", data_dir=data_dir, split="test", batch_size=1, views=views)
        return next(ds.as_numpy_iterator())["clips"][0].astype(int)

    full = first_clip(pipeline.ViewSpec(num_frames=4, stride=2, crop_size=32, temporal=1, spatial=1))
    three = first_clip(pipeline.ViewSpec(num_frames=4, stride=2, crop_size=24, temporal=1, spatial=3, short_side=32))
    # the frame is 40 wide: `full` spans columns 4..36; crops start at columns 0, 8, 16 and row 4
    np.testing.assert_array_equal(three[1], full[0][:, 4:28, 4:28])
    np.testing.assert_array_equal(three[2][:, :, :20], full[0][:, 4:28, 12:32])
    np.testing.assert_array_equal(three[0][:, :, 4:], full[0][:, 4:28, 0:20])
    with pytest.raises(ValueError, match="short_side"):
        pipeline.ViewSpec(crop_size=24, short_side=20)


def test_batches_land_on_8_devices_sharded_over_data(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    mesh = mesh_lib.create_mesh()
    assert mesh.devices.size == 8
    per_host = mesh_lib.check_batch_size(8, mesh)
    batches = _batches(data_dir, 2, batch_size=per_host, clips=pipeline.ClipSpec(rho=2, num_frames=4, stride=2))
    sharding = mesh_lib.batch_sharding(mesh)
    out = list(device.prefetch_to_mesh(iter(batches), sharding, size=2))
    assert len(out) == 2
    clips = out[0]["clips"]
    assert isinstance(clips, jax.Array) and clips.dtype == np.uint8
    assert clips.shape == (8, 2, 4, 24, 24, 3)
    assert clips.sharding == sharding
    assert len(clips.addressable_shards) == 8
    for shard in clips.addressable_shards:
        assert shard.data.shape == (1, 2, 4, 24, 24, 3)
        np.testing.assert_array_equal(np.asarray(shard.data), batches[0]["clips"][shard.index])
    with pytest.raises(ValueError, match="batch_size=12 must be a positive multiple of the number of devices"):
        mesh_lib.check_batch_size(12, mesh)


def test_bad_settings_fail_early(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    with pytest.raises(ValueError, match="rho must be >= 1"):
        pipeline.ClipSpec(rho=0)
    with pytest.raises(ValueError, match="max_timespan"):
        pipeline.ClipSpec(max_timespan=-1.0)
    with pytest.raises(ValueError, match=r"augmentation.crop_size=64 is larger than the stored short side \(32\)"):
        _batches(data_dir, 1, augmentation=augment.AugmentConfig(crop_size=64))
    with pytest.raises(ValueError, match="valid choices: \\['test', 'train'\\]"):
        _batches(data_dir, 1, split="validation")
    assert math.isinf(pipeline.ClipSpec().max_timespan)


def test_resuming_continues_the_stream(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    whole = _batches(data_dir, 5, seed=7)
    resumed = _batches(data_dir, 2, seed=7, start_batch=3)
    for x, y in zip(whole[3:], resumed):
        np.testing.assert_array_equal(x["clips"], y["clips"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_rho_one_is_two_crops_of_one_clip(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    (batch,) = _batches(data_dir, 1, clips=pipeline.ClipSpec(rho=1, num_frames=4, stride=2))
    assert batch["clips"].shape[1] == 2
    assert (batch["clip_starts"][:, 0] == batch["clip_starts"][:, 1]).all()
    assert np.abs(batch["clips"][:, 0].astype(int) - batch["clips"][:, 1]).mean() > 1


def test_frames_stay_encoded_without_a_per_frame_loop(tiny_video_dataset):
    """KeepFramesEncoded returns what SkipDecoding does, with no tf.map_fn over the frames (which
    TFDS's default sequence decoding adds, copying every JPEG of the video)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    data_dir, _ = tiny_video_dataset
    builder = pipeline.load_builder("video_folder/tiny", data_dir)
    plain = builder.as_dataset(split="train", decoders={"frames": tfds.decode.SkipDecoding()})
    kept = builder.as_dataset(split="train", decoders={"frames": pipeline.KeepFramesEncoded()})
    for a, b in zip(tfds.as_numpy(plain), tfds.as_numpy(kept)):
        assert b["frames"].dtype == object and len(b["frames"]) == a["num_frames"]
        assert list(a["frames"]) == list(b["frames"])

    def loops(decoder):
        fn = tf.function(lambda record: builder.info.features.deserialize_example(
            record, decoders={"frames": decoder}))
        graph = fn.get_concrete_function(tf.TensorSpec([], tf.string)).graph
        return [op.type for op in graph.get_operations() if "While" in op.type]

    assert not loops(pipeline.KeepFramesEncoded())


def test_augment_on_device_gives_the_host_clips(tiny_video_dataset):
    from stjax.data import device_augment
    from stjax.data.augment_config import CLIP_PARAM_NAMES

    data_dir, _ = tiny_video_dataset
    config = augment.AugmentConfig(crop_size=24, flip_prob=0.5, color_jitter_prob=0.8, grayscale_prob=0.3,
                                   blur_prob=0.5, blur_sigma_range=(0.1, 1.5))
    host = _batches(data_dir, 2, augmentation=config)
    sent = _batches(data_dir, 2, augmentation=config, augment_on="device")
    for h, s in zip(host, sent):
        assert s["augment"].shape == (4, 3, len(CLIP_PARAM_NAMES)) and s["augment"].dtype == np.float32
        np.testing.assert_array_equal(h["label"], s["label"])
        assert not np.array_equal(h["clips"], s["clips"])  # what is sent is not yet augmented
        finished = np.asarray(jax.jit(lambda c, p: device_augment.augment_clips(c, p, config))(
            s["clips"], s["augment"]))
        assert np.abs(finished.astype(int) - h["clips"].astype(int)).max() <= 1
    with pytest.raises(ValueError, match="data.augment_on='gpu'.*host, device"):
        _batches(data_dir, 1, augment_on="gpu")
