"""The detection pipeline: keyframe examples (AVA's, label type `boxes`) → one clip centred on the keyframe
with its person boxes.

READ this process's slice (JPEGs left encoded) → the clip's T frames at stride τ centred on the keyframe
(PySlowFast's `get_sequence`: frames k − ⌊T·τ/2⌋ + i·τ, clamped to the stored window) → training: SHUFFLE,
DECODE, scale jitter (short side uniform in `scale_range` × crop), a random square crop and a horizontal
flip applied to the frames and the boxes together (boxes clipped to the crop; those left under a pixel wide
or high are masked out and zeroed, like padding), the GT boxes optionally jittered first → BATCH.
Evaluation: the whole frame resized to fit a fixed canvas (`test_short_side` × `test_long_side`, padded at the bottom / right), the detector's
proposals with score ≥ `score_threshold` (highest first) and the GT boxes.

Training batches: {'clips': uint8 [b, 1, T, S, S, 3], 'boxes': float32 [b, M, 4] (x1, y1, x2, y2 in [0, 1]
of the clip's frame), 'box_mask': bool [b, M], 'label': int32 [b, M, C] multi-hot}, M = `max_boxes` (an
example's boxes past it are dropped).
Evaluation batches add to 'clips' [b, 1, T, Hc, Wc, 3], 'boxes' / 'box_mask' (the proposals, canvas
coordinates), 'box_frame' (the same boxes in [0, 1] of the source frame, for the evaluator), 'box_scores',
'gt_boxes' / 'gt_frame' / 'gt_mask' / 'gt_label' (the GT boxes likewise, and their [M, C] labels),
'excluded', 'mask' (False: padding), 'video_id' (bytes), 'timestamp' and 'dropped' (boxes past M).
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from stjax.data import pipeline, targets

# PySlowFast's AVA recipe: short side in [256, 320] for a 224 crop (the ratios kept for any crop size).
DEFAULT_SCALE_RANGE = (256 / 224, 320 / 224)


@dataclasses.dataclass(frozen=True)
class KeyframeSpec:
    """The clip and the boxes of a keyframe example.

    Attributes:
      num_frames, stride: T frames at stride τ (stored frames), centred on the keyframe.
      crop_size: training crop S (pixels, square).
      scale_range: training short side, uniform in [lo, hi] × crop_size (PySlowFast: 256–320 for 224).
      flip: random horizontal flips in training.
      box_jitter: each GT box coordinate moves by up to ± this fraction of the box's width / height (training).
      max_boxes: boxes per example in a batch (M); more are dropped (evaluation counts them in `dropped`).
      test_short_side: evaluation canvas height (the frame's short side after resizing).
      test_aspect: canvas width / height; wider frames are shrunk to fit (AVA's movies: 16/9 covers most).
      score_threshold: proposals below it are not evaluated (the study: 0.8; PySlowFast: 0.9).
    """

    num_frames: int = 8
    stride: int = 8
    crop_size: int = 224
    scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE
    flip: bool = True
    box_jitter: float = 0.0
    max_boxes: int = 32
    test_short_side: int = 256
    test_aspect: float = 16 / 9
    score_threshold: float = 0.8

    def __post_init__(self):
        for field in ("num_frames", "stride", "crop_size", "max_boxes", "test_short_side"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        lo, hi = self.scale_range
        if not 1.0 <= lo <= hi:
            raise ValueError(f"scale_range must be (lo, hi) with 1 <= lo <= hi (short side / crop), got "
                             f"{self.scale_range}")
        if not 0.0 <= self.box_jitter < 0.5:
            raise ValueError(f"box_jitter must be in [0, 0.5), got {self.box_jitter}")
        if not self.test_aspect >= 1.0:
            raise ValueError(f"test_aspect must be >= 1 (width / height of the canvas), got {self.test_aspect}")

    @property
    def canvas(self) -> tuple[int, int]:
        """(height, width) of the evaluation canvas."""
        return self.test_short_side, int(math.ceil(self.test_short_side * self.test_aspect - 1e-6))


def clip_indices(keyframe_index, window_frames, num_frames: int, stride: int) -> tf.Tensor:
    """int32 [T]: keyframe_index − ⌊T·τ/2⌋ + i·τ, clamped to the stored window [0, window_frames − 1]."""
    first = tf.cast(keyframe_index, tf.int32) - (num_frames * stride) // 2
    indices = first + tf.range(num_frames, dtype=tf.int32) * stride
    return tf.clip_by_value(indices, 0, tf.maximum(tf.cast(window_frames, tf.int32) - 1, 0))


def _decode(encoded) -> tf.Tensor:
    return tf.map_fn(lambda x: tf.io.decode_jpeg(x, channels=3), encoded, fn_output_signature=tf.uint8)


def _resize(frames, height, width) -> tf.Tensor:
    """float32 [T, height, width, 3] of uint8 frames (bilinear, antialiased when shrinking)."""
    return tf.image.resize(frames, tf.stack([height, width]), method="bilinear", antialias=True)


def _to_uint8(x) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


def _pad(x, size: int, value=0):
    """x [N, ...] → [size, ...]: its first `size` rows, padded with `value`."""
    x = x[:size]
    pad = [[0, size - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.pad(x, pad, constant_values=value)


def jitter_boxes(boxes, amount: float, seed) -> tf.Tensor:
    """boxes float32 [M, 4] in [0, 1] with each coordinate moved by U(−amount, amount) × the box's width
    (x) or height (y), clipped to [0, 1] and put back in order (x1 <= x2, y1 <= y2)."""
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    if amount == 0:
        return boxes
    size = tf.tile(boxes[:, 2:] - boxes[:, :2], [1, 2])
    moved = boxes + tf.random.stateless_uniform(tf.shape(boxes), seed, -amount, amount) * size
    moved = tf.clip_by_value(moved, 0.0, 1.0)
    return tf.concat([tf.minimum(moved[:, :2], moved[:, 2:]), tf.maximum(moved[:, :2], moved[:, 2:])], axis=1)


def crop_boxes(boxes, scaled_height, scaled_width, y0, x0, crop_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(boxes float32 [M, 4] in [0, 1] of the crop, valid bool [M]) of boxes in [0, 1] of a frame resized to
    scaled_height × scaled_width and cropped to crop_size² at (y0, x0): clipped to the crop; valid when at
    least one pixel wide and high there."""
    scale = tf.cast(tf.stack([scaled_width, scaled_height] * 2), tf.float32)
    offset = tf.cast(tf.stack([x0, y0] * 2), tf.float32)
    px = tf.clip_by_value(boxes * scale - offset, 0.0, float(crop_size))
    valid = (px[:, 2] - px[:, 0] >= 1.0) & (px[:, 3] - px[:, 1] >= 1.0)
    return px / float(crop_size), valid


def flip_boxes(boxes) -> tf.Tensor:
    """Normalised boxes [M, 4] of the horizontally flipped frame: x1, x2 → 1 − x2, 1 − x1."""
    return tf.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)


def train_example(encoded, boxes, label, seed, spec: KeyframeSpec, num_classes: int) -> dict:
    """One augmented training example (module docstring) of a clip's T JPEG frames `encoded` tf.string [T],
    its GT `boxes` [M, 4] and their stored `label` (ragged [M, (k)] class ids); `seed` int64 [2]."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    frames = _decode(encoded)
    shape = tf.shape(frames)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    s = spec.crop_size
    short = tf.random.stateless_uniform([], seeds[0], spec.scale_range[0] * s, spec.scale_range[1] * s)
    scale = short / tf.minimum(h, w)
    sh = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), s)
    sw = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), s)
    y0 = tf.random.stateless_uniform([], seeds[1], 0, sh - s + 1, dtype=tf.int32)
    x0 = tf.random.stateless_uniform([], seeds[2], 0, sw - s + 1, dtype=tf.int32)
    clip = _to_uint8(_resize(frames, sh, sw)[:, y0:y0 + s, x0:x0 + s])
    boxes = jitter_boxes(boxes, spec.box_jitter, seeds[3])
    boxes, valid = crop_boxes(boxes, sh, sw, y0, x0, s)
    if spec.flip:
        flipped = tf.random.stateless_uniform([], seeds[4]) < 0.5
        clip = tf.cond(flipped, lambda: tf.reverse(clip, axis=[2]), lambda: clip)
        boxes = tf.cond(flipped, lambda: flip_boxes(boxes), lambda: boxes)
    labels = targets.box_labels(label, num_classes) * tf.cast(valid, tf.int32)[:, None]  # a masked box: padding
    boxes = boxes * tf.cast(valid, tf.float32)[:, None]
    m = spec.max_boxes
    return {"clips": tf.reshape(clip, [1, spec.num_frames, s, s, 3]), "boxes": tf.reshape(_pad(boxes, m), [m, 4]),
            "box_mask": tf.reshape(_pad(valid, m, False), [m]),
            "label": tf.reshape(_pad(labels, m), [m, num_classes])}


def _check(builder, dataset: str) -> int:
    """The class count of a keyframe dataset; ValueError unless its label type is `boxes`."""
    kind = targets.stored_kind(builder.info.features["label"])
    if kind != "boxes" or "keyframe_index" not in builder.info.features:
        raise ValueError(f"data.dataset={dataset!r} has {kind} labels, not keyframes with person boxes: the "
                         f"keyframe (detection) pipeline reads datasets like ava and synthetic_ava")
    return len(targets.class_names(builder.info.features["label"]))


def train_dataset(dataset: str, *, batch_size: int, spec: KeyframeSpec, seed: int = 0, split: str = "train",
                  data_dir: str | None = None, process_index: int = 0, process_count: int = 1,
                  shuffle_buffer: int = 1024, deterministic: bool = True, num_parallel_calls=tf.data.AUTOTUNE,
                  prefetch: int = 2, start_batch: int = 0) -> tf.data.Dataset:
    """Endless shuffled training batches of keyframe examples for this process (module docstring); resumes
    at `start_batch` exactly like `pipeline.pretrain_dataset`. Each example's draws come from
    stateless_fold_in((seed, process_index), its position in the stream)."""
    ds, builder, host_split = pipeline._read(dataset, data_dir, split, process_index, process_count,
                                             shuffle_seed=seed)
    num_classes = _check(builder, dataset)
    base_seed = tf.constant([seed, process_index], tf.int64)

    def select(position, example):  # the clip's JPEGs only, before the shuffle buffer
        indices = clip_indices(example["keyframe_index"], example["num_frames"], spec.num_frames, spec.stride)
        return {"encoded": tf.gather(example["frames"], indices), "boxes": example["boxes"],
                "label": example["label"], "seed": tf.random.experimental.stateless_fold_in(base_seed, position)}

    def augment(kept):
        return train_example(kept["encoded"], kept["boxes"], kept["label"], kept["seed"], spec, num_classes)

    ds = pipeline.shuffled_epochs(ds, builder, host_split, split, process_count, select, base_seed, shuffle_buffer,
                                  start_batch * batch_size, num_parallel_calls, deterministic)
    ds = ds.map(augment, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(prefetch).with_options(pipeline._options(deterministic))


def eval_example(example, spec: KeyframeSpec, num_classes: int) -> dict:
    """One evaluation example (module docstring) of a decoded keyframe example."""
    indices = clip_indices(example["keyframe_index"], example["num_frames"], spec.num_frames, spec.stride)
    frames = _decode(tf.gather(example["frames"], indices))
    shape = tf.shape(frames)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    ch, cw = spec.canvas
    scale = tf.minimum(ch / h, cw / w)  # a landscape frame's short side to ch, unless it is wider than the canvas
    rh = tf.clip_by_value(tf.cast(tf.round(h * scale), tf.int32), 1, ch)
    rw = tf.clip_by_value(tf.cast(tf.round(w * scale), tf.int32), 1, cw)
    clip = _to_uint8(_resize(frames, rh, rw))
    clip = tf.pad(clip, [[0, 0], [0, ch - rh], [0, cw - rw], [0, 0]])
    to_canvas = tf.stack([tf.cast(rw, tf.float32) / cw, tf.cast(rh, tf.float32) / ch] * 2)

    scores = tf.reshape(tf.cast(example["proposal_scores"], tf.float32), [-1])
    proposals = tf.reshape(tf.cast(example["proposals"], tf.float32), [-1, 4])
    kept = scores >= spec.score_threshold
    scores, proposals = tf.boolean_mask(scores, kept), tf.boolean_mask(proposals, kept)
    order = tf.argsort(scores, direction="DESCENDING", stable=True)
    scores, proposals = tf.gather(scores, order), tf.gather(proposals, order)
    gt = tf.reshape(tf.cast(example["boxes"], tf.float32), [-1, 4])
    m = spec.max_boxes
    dropped = tf.maximum(tf.shape(proposals)[0] - m, 0) + tf.maximum(tf.shape(gt)[0] - m, 0)

    def boxes_of(b, mask_value):
        return {"frame": tf.reshape(_pad(b, m), [m, 4]), "canvas": tf.reshape(_pad(b * to_canvas, m), [m, 4]),
                "mask": tf.reshape(_pad(tf.ones_like(b[:, 0], tf.bool), m, mask_value), [m])}

    p, g = boxes_of(proposals, False), boxes_of(gt, False)
    return {"clips": tf.reshape(clip, [1, spec.num_frames, ch, cw, 3]),
            "boxes": p["canvas"], "box_frame": p["frame"], "box_mask": p["mask"],
            "box_scores": tf.reshape(_pad(scores, m), [m]),
            "gt_boxes": g["canvas"], "gt_frame": g["frame"], "gt_mask": g["mask"],
            "gt_label": tf.reshape(_pad(targets.box_labels(example["label"], num_classes), m), [m, num_classes]),
            "excluded": tf.cast(example["excluded"], tf.bool), "mask": tf.constant(True),
            "video_id": example["video_id"], "timestamp": tf.cast(example["timestamp"], tf.int32),
            "dropped": dropped}


def eval_dataset(dataset: str, *, batch_size: int, spec: KeyframeSpec, split: str = "val",
                 data_dir: str | None = None, process_index: int = 0, process_count: int = 1,
                 num_parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
    """One pass over this process's slice of `split` (module docstring); every process yields the same number
    of batches (the largest slice's, padded with mask False examples) so that global batches line up."""
    ds, builder, _ = pipeline._read(dataset, data_dir, split, process_index, process_count, shuffle_seed=None)
    num_classes = _check(builder, dataset)
    total = builder.info.splits[split].num_examples
    num_batches = max(1, math.ceil(math.ceil(total / process_count) / batch_size))
    ds = ds.map(lambda e: eval_example(e, spec, num_classes), num_parallel_calls=num_parallel_calls,
                deterministic=True)
    padding = tf.data.Dataset.from_tensors(tf.nest.map_structure(
        lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec)).repeat()
    ds = ds.concatenate(padding).take(num_batches * batch_size).batch(batch_size, drop_remainder=True)
    return ds.prefetch(2).with_options(pipeline._options(True))


def spec_from_config(config) -> KeyframeSpec:
    """The KeyframeSpec of a config's `data` block (its `keyframes` sub-block: scale_range, flip, box_jitter,
    max_boxes, test_short_side, test_aspect, score_threshold); ValueError naming the field."""
    data = config.data
    k = data.get("keyframes", {})
    try:
        return KeyframeSpec(
            num_frames=data.num_frames, stride=data.stride, crop_size=data.augmentation.crop_size,
            scale_range=tuple(k.get("scale_range", DEFAULT_SCALE_RANGE)), flip=bool(k.get("flip", True)),
            box_jitter=float(k.get("box_jitter", 0.0)), max_boxes=int(k.get("max_boxes", 32)),
            test_short_side=int(k.get("test_short_side", 256)), test_aspect=float(k.get("test_aspect", 16 / 9)),
            score_threshold=float(k.get("score_threshold", 0.8)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.data.keyframes: {e}") from None


__all__ = ["KeyframeSpec", "clip_indices", "crop_boxes", "eval_dataset", "flip_boxes", "jitter_boxes",
           "spec_from_config", "train_dataset"]
