"""The keyframe (detection) pipeline on a tiny AVA layout whose frames paint each GT box in its own grey.

A box's pixels must stay under the box through the scale jitter, crop and flip of training and the letterboxed
canvas of evaluation: the frames are the independent reference of the box transforms.
"""
import numpy as np
import pytest

from keyframe_layout import GREYS, GT, PROPOSALS, build_layout


@pytest.fixture(scope="module")
def keyframe_set(tmp_path_factory):
    return build_layout(tmp_path_factory.mktemp("ava_boxes"), tmp_path_factory.mktemp("ava_boxes_tfds"))


def _spec(**kw):
    from stjax.data import keyframes

    return keyframes.KeyframeSpec(**{**dict(num_frames=4, stride=2, crop_size=40, scale_range=(1.0, 1.5),
                                            max_boxes=3, test_short_side=32, test_aspect=2.0), **kw})


def _mean_inside(img, box, margin=2.0):
    """Mean grey of the pixels at least `margin` px inside normalised `box` of img [H, W, 3] (None if none)."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = box[0] * w + margin, box[1] * h + margin, box[2] * w - margin, box[3] * h - margin
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    inside = ((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]
    return float(img[inside].mean()) if inside.any() else None


def _outside_all(img, boxes, margin=2.0):
    h, w = img.shape[:2]
    ys, xs = np.arange(h)[:, None] + 0.5, np.arange(w)[None, :] + 0.5
    near = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in boxes:
        near |= (ys >= y1 * h - margin) & (ys <= y2 * h + margin) & (xs >= x1 * w - margin) & (xs <= x2 * w + margin)
    return img[~near]


def test_a_layout_with_its_own_label_map_has_its_classes(keyframe_set):
    from stjax.data import builders

    builder = builders.load_builder("ava/boxes", keyframe_set)
    assert builders.class_names(builder) == tuple(f"a{i}" for i in range(1, 7))
    assert builder.info.metadata["evaluated_classes"] == list(range(6))


def test_clip_indices_are_pyslowfasts_sequence_clamped_to_the_window():
    from stjax.data import keyframes

    for centre, window, t, tau in [(11, 23, 8, 2), (3, 23, 4, 4), (20, 23, 8, 8), (0, 1, 8, 8), (33, 67, 8, 8)]:
        expected = np.clip(np.arange(centre - t * tau // 2, centre + t * tau // 2, tau), 0, window - 1)
        np.testing.assert_array_equal(keyframes.clip_indices(centre, window, t, tau).numpy(), expected)


def test_training_boxes_follow_their_pixels_through_scale_crop_and_flip(keyframe_set):
    from stjax.data import keyframes

    spec = _spec(max_boxes=3)
    ds = keyframes.train_dataset("ava/boxes", batch_size=1, spec=spec, data_dir=keyframe_set, seed=3,
                                 shuffle_buffer=4)
    checked = 0
    for batch in ds.take(24).as_numpy_iterator():
        clip, boxes, mask, labels = batch["clips"][0, 0], batch["boxes"][0], batch["box_mask"][0], batch["label"][0]
        assert clip.shape == (4, 40, 40, 3) and boxes.shape == (3, 4) and labels.shape == (3, 6)  # 6: the label map's
        frame = clip[2].astype(np.float32)  # the keyframe's own frame (index T/2 of the clip)
        grey_of = {}
        for box, valid in zip(boxes, mask):
            if valid:
                value = _mean_inside(frame, box)
                if value is not None:
                    grey_of[tuple(box)] = value
                    checked += 1
        for value in grey_of.values():
            assert min(abs(value - g) for g in GREYS) < 12, (value, boxes)
        assert np.all(_outside_all(frame, boxes[mask]) < 12)
        # the GT labels travel with their boxes: the big-grey box of vidA,902 has actions 1 and 5
        for box, valid, label in zip(boxes, mask, labels):
            if valid and label.sum():
                assert set(np.flatnonzero(label) + 1) in ({1, 5}, {2}, {3}, {2, 4}, {6})
        assert np.all(labels[~mask] == 0) and np.all(boxes[~mask] == 0)
    assert checked >= 24


def test_flips_happen_and_mirror_the_boxes_with_the_pixels(keyframe_set):
    from stjax.data import keyframes

    spec = _spec(scale_range=(1.0, 1.0), crop_size=48)  # the crop spans the frame's height: only x moves
    seen = set()  # whether the 250-grey box is left of the 140-grey one (it is, in the source frames)
    for seed in range(6):
        ds = keyframes.train_dataset("ava/boxes", batch_size=3, spec=spec, data_dir=keyframe_set, seed=seed,
                                     shuffle_buffer=1)
        batch = next(ds.as_numpy_iterator())
        for clip, boxes, mask in zip(batch["clips"][:, 0, 2].astype(float), batch["boxes"], batch["box_mask"]):
            centre = {}
            for box, valid in zip(boxes, mask):
                value = _mean_inside(clip, box) if valid else None
                if value is not None:
                    centre[min(GREYS, key=lambda g: abs(g - value))] = (box[0] + box[2]) / 2
            if len(centre) == 2:
                seen.add(centre[250] < centre[140])
    assert seen == {True, False}


def test_box_jitter_moves_each_side_within_its_share_of_the_box():
    import tensorflow as tf

    from stjax.data import keyframes

    boxes = tf.constant([[0.2, 0.3, 0.6, 0.5], [0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(keyframes.jitter_boxes(boxes, 0.0, tf.constant([1, 2], tf.int64)).numpy(),
                                  boxes.numpy())
    moved = np.stack([keyframes.jitter_boxes(boxes, 0.1, tf.constant([s, 0], tf.int64)).numpy() for s in range(50)])
    size = np.array([0.4, 0.2, 0.4, 0.2])
    assert np.all(np.abs(moved[:, 0] - boxes.numpy()[0]) <= 0.1 * size + 1e-6)
    assert np.abs(moved[:, 0] - boxes.numpy()[0]).max() > 0.05 * 0.4  # it does move
    assert np.all((moved >= 0) & (moved <= 1))
    assert np.all(moved[..., 2] >= moved[..., 0]) and np.all(moved[..., 3] >= moved[..., 1])


def test_crop_boxes_clip_and_mask_boxes_outside_the_crop():
    from stjax.data import keyframes

    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.05, 0.05], [0.4, 0.4, 0.9, 0.9]], np.float32)
    out, valid = keyframes.crop_boxes(boxes, 100, 200, 10, 30, 50)  # frame 100×200 px, crop 50² at (10, 30)
    px = boxes * [200, 100, 200, 100] - [30, 10, 30, 10]
    np.testing.assert_allclose(out.numpy(), np.clip(px, 0, 50) / 50, atol=1e-6)
    np.testing.assert_array_equal(valid.numpy(), [True, False, False])  # box 1 left of, box 2 below-right of it


def test_evaluation_letterboxes_the_frame_and_keeps_proposals_above_the_threshold(keyframe_set):
    from stjax.data import keyframes

    spec = _spec(score_threshold=0.8)
    ds = keyframes.eval_dataset("ava/boxes", batch_size=2, spec=spec, split="val", data_dir=keyframe_set)
    rows = [b for b in ds.as_numpy_iterator()]
    seen = {}
    for batch in rows:
        assert batch["clips"].shape == (2, 1, 4, 32, 64, 3)
        for i in np.flatnonzero(batch["mask"]):
            key = (batch["video_id"][i].decode(), int(batch["timestamp"][i]))
            seen[key] = i
            frame = batch["clips"][i, 0, 2].astype(np.float32)
            # 48×80 → 32×53 (short side 32), padded to 32×64 on the right
            assert np.all(frame[:, 55:] == 0)
            gt = batch["gt_frame"][i][batch["gt_mask"][i]]
            expected = sorted(tuple(np.float32(v) for v in box) for box, _ in GT[key])
            assert sorted(map(tuple, gt)) == expected
            for j, (canvas, framebox) in enumerate(zip(batch["gt_boxes"][i], batch["gt_frame"][i])):
                if batch["gt_mask"][i][j]:
                    np.testing.assert_allclose(canvas, framebox * [53 / 64, 1, 53 / 64, 1], atol=1e-6)
                    assert abs(_mean_inside(frame, canvas, 1.5) - GREYS[j]) < 12
            scores = batch["box_scores"][i][batch["box_mask"][i]]
            want = sorted((s for _, s in PROPOSALS.get(key, []) if s >= 0.8), reverse=True)
            np.testing.assert_allclose(scores, want, atol=1e-6)
            assert batch["dropped"][i] == 0
    assert set(seen) == set(GT)
    assert sum(int(b["mask"].sum()) for b in rows) == 3 and len(rows) == 2  # one padding example


def test_max_boxes_truncates_and_counts_what_it_dropped(keyframe_set):
    from stjax.data import keyframes

    spec = _spec(max_boxes=1, score_threshold=0.0)
    batch = next(keyframes.eval_dataset("ava/boxes", batch_size=4, spec=spec, split="val",
                                        data_dir=keyframe_set).as_numpy_iterator())
    for i in np.flatnonzero(batch["mask"]):
        key = (batch["video_id"][i].decode(), int(batch["timestamp"][i]))
        over = max(len(PROPOSALS.get(key, [])) - 1, 0) + max(len(GT[key]) - 1, 0)
        assert batch["dropped"][i] == over
        if PROPOSALS.get(key):
            assert batch["box_scores"][i][0] == pytest.approx(max(s for _, s in PROPOSALS[key]))


def test_a_dataset_without_boxes_is_refused_naming_the_pipeline(tmp_path):
    from stjax.data import config as data_config
    from stjax.data import keyframes

    with pytest.raises(ValueError, match="data.pipeline"):
        import ml_collections

        c = ml_collections.ConfigDict(dict(seed=0, data=dict(pipeline="boxes", dataset="synthetic")))
        data_config.train_dataset(c, 1)
    with pytest.raises(ValueError, match="scale_range"):
        keyframes.KeyframeSpec(scale_range=(0.5, 1.0))


def test_show_draws_the_keyframe_clips_with_their_boxes(keyframe_set, tmp_path):
    from stjax.data import keyframes, show

    ds = keyframes.train_dataset("ava/boxes", batch_size=2, spec=_spec(), data_dir=keyframe_set, shuffle_buffer=1)
    path = tmp_path / "keyframes.png"
    show.render_keyframes_png(next(ds.as_numpy_iterator()), [f"a{i}" for i in range(1, 7)], str(path), "t")
    from PIL import Image

    with Image.open(path) as image:
        assert image.size[0] > 400 and image.size[1] > 200
