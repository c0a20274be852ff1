"""Datasets stored with motion vectors (`--with_motion_vectors`) and the pipeline's CMD inputs from them."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import write_video
from stjax.data import build, builders, pipeline
from stjax.data.augment_config import AugmentConfig
from stjax.data.motion_inputs import MotionSpec

SPEED = 3  # conftest.write_video rolls its noise 3 px per frame to the right


@pytest.fixture(scope="module")
def motion_dataset(tmp_path_factory):
    """video_folder/mv: 2 classes × 3 videos (40×32 px, 25 fps, 2 s) stored with motion vectors, plus one MJPEG
    file (a codec without motion vectors). Returns (data_dir, manual_dir, build report)."""
    root = tmp_path_factory.mktemp("mv_videos")
    train, test = [], []
    for c, name in enumerate(["left", "right"]):
        (root / name).mkdir()
        for i in range(3):
            rel = f"{name}/v{i}.mp4"
            write_video(root / rel, num_frames=50, seed=10 * c + i)
            (test if i == 2 else train).append(rel)
    write_video(root / "left" / "intra.avi", num_frames=20, codec="mjpeg", pix_fmt="yuvj420p")
    train.append("left/intra.avi")
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    data_dir = tmp_path_factory.mktemp("mv_tfds")
    report = build.build("video_folder", manual_dir=str(root), data_dir=str(data_dir), config="mv", fps=25,
                         short_side=32, workers=1, verbose=False, motion_vectors=True)
    return str(data_dir), str(root), report


def test_motion_is_stored_per_frame_and_a_codec_without_it_is_skipped(motion_dataset):
    data_dir, _, report = motion_dataset
    assert report["written"] == 6 and report["skipped"] == 1
    reason = report["skipped_files"][0]["reason"]
    assert report["skipped_files"][0]["path"] == "left/intra.avi" and "mjpeg" in reason.lower()
    builder = builders.load_builder("video_folder/mv", data_dir)
    assert builder.info.metadata["storage"]["motion_vectors"] is True
    examples = list(tfds.as_numpy(builder.as_dataset(split="train", decoders={"frames": tfds.decode.SkipDecoding()})))
    assert len(examples) == 4
    for ex in examples:
        motion, keyframes = ex["motion"], ex["keyframes"]
        assert motion.dtype == np.int8 and motion.shape == (ex["num_frames"], 8, 10, 2)
        assert keyframes.shape == (ex["num_frames"],) and keyframes[0]
        moving = motion[~keyframes][:, 2:-2, 2:-2]  # inner cells of the predicted frames
        assert np.median(moving[..., 0]) == pytest.approx(4 * SPEED, abs=1)  # rightwards, quarter pixels
        assert np.median(np.abs(moving[..., 1])) <= 1


def test_default_storage_has_no_motion_features(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    features = builders.load_builder("video_folder/tiny", data_dir).info.features
    assert "motion" not in features and "keyframes" not in features


def _batch(data_dir, inputs=("motion", "keyframe"), flip_prob=0.0, rho=2):
    augmentation = AugmentConfig(crop_size=16, area_range=(1.0, 1.0), aspect_range=(1.25, 1.25), ops=("flip",),
                                 flip_prob=flip_prob)
    ds = pipeline.pretrain_dataset("video_folder/mv", batch_size=2, data_dir=data_dir, seed=3,
                                   clips=pipeline.ClipSpec(rho=rho, num_frames=4, stride=2),
                                   augmentation=augmentation, inputs=inputs,
                                   motion=MotionSpec(future_frames=4, future_interval=2, num_negatives=2))
    return next(iter(ds.as_numpy_iterator()))


def test_pipeline_adds_future_motion_and_keyframes_that_follow_the_clip(motion_dataset):
    data_dir = motion_dataset[0]
    batch = _batch(data_dir)
    assert batch["clips"].shape == (2, 2, 4, 16, 16, 3)
    assert batch["motion"].shape == (2, 2, 3, 4, 4, 4, 2) and batch["motion"].dtype == np.int8
    assert batch["keyframe"].shape == (2, 2, 16, 16, 3) and batch["keyframe"].dtype == np.uint8
    # the whole 40-px frame resized to 16 px: 3 stored px per frame → 1.2 crop px per frame → 4.8 quarter px
    inner = batch["motion"][..., 1:-1, 1:-1, :]
    assert np.median(inner[..., 0]) == pytest.approx(4 * SPEED * 16 / 40, abs=1)
    flipped = _batch(data_dir, flip_prob=1.0)
    assert np.median(flipped["motion"][..., 1:-1, 1:-1, 0]) == pytest.approx(-4 * SPEED * 16 / 40, abs=1)
    # clip starts leave room for window 0: last frame + 2 + 4 <= 50 frames
    last = np.round(batch["clip_starts"] * 25).astype(int) + (4 - 1) * 2
    assert np.all(last + 2 + 4 <= 49)


def test_the_clips_are_those_of_a_run_without_motion_inputs(motion_dataset):
    """Adding the inputs changes the clip starts' range (room for the future window) but not the crops' draws:
    with only keyframes asked, the clips are exactly those of a run without inputs."""
    data_dir = motion_dataset[0]
    np.testing.assert_array_equal(_batch(data_dir, inputs=("keyframe",))["clips"], _batch(data_dir, inputs=())["clips"])


def test_inputs_from_a_dataset_without_motion_are_refused(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    with pytest.raises(ValueError, match="with_motion_vectors"):
        pipeline.pretrain_dataset("video_folder/tiny", batch_size=2, data_dir=data_dir,
                                  clips=pipeline.ClipSpec(rho=2, num_frames=4, stride=2),
                                  augmentation=AugmentConfig(crop_size=16), inputs=("motion",))
    with pytest.raises(ValueError, match="data.inputs"):
        pipeline.pretrain_dataset("video_folder/tiny", batch_size=2, data_dir=data_dir,
                                  clips=pipeline.ClipSpec(rho=2, num_frames=4, stride=2),
                                  augmentation=AugmentConfig(crop_size=16), inputs=("flow",))


def test_synthetic_has_a_predefined_motion_config():
    from stjax.data.build import _resolve_config

    config = _resolve_config(builders.Synthetic, None, {"motion_vectors": True})
    assert config.name == "motion" and config.motion_vectors and config.fps == 25.0
    with pytest.raises(ValueError, match="new --config name"):
        _resolve_config(builders.VideoFolder, None, {"motion_vectors": True})
