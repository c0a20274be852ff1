"""Inputs from the compressed stream for objectives such as CMD: future motion windows and keyframes.

A dataset built with motion vectors (`VideoFolderConfig.motion_vectors`) stores, per stored frame,
`motion` (int8 [N, h, w, 2]: the codec's forward content motion on a `block`-pixel grid, in quarter stored
pixels per frame) and `keyframes` (bool [N], I-frames). With `data.inputs` naming them, the training
pipeline adds per clip (`pipeline.pretrain_dataset`):

motion    int8 [ρ, 1+N, T_m, m, m, 2], m = crop_size // block: window 0 is the motion of the T_m frames
          that start `future_interval` frames after the clip's last frame (CMD's "near future"; frames past
          the video's end repeat its last), windows 1..N are T_m-frame windows of the same video that do
          not overlap window 0 (hard negatives; overlapping only when the video is too short for any
          other). Window 0 is cropped with the clip's own crop box and flipped with it; each negative has
          its own random crop and flip. Units: quarter pixels of the network's crop per frame (the stored
          motion scaled by crop_size / box size), dx negated on a flip (the official code does neither:
          it keeps the stored values and does not negate dx).
keyframe  uint8 [ρ, S, S, 3]: per clip, a stored frame that shows an I-frame: one drawn uniformly among
          those within `keyframe_window` frames of the clip (CMD's rule), else the nearest one to the clip's
          middle (earlier on a tie; a stream with one I-frame, like the synthetic set's, gives its first
          frame), else the clip's first frame when the video flags none; augmented on its own (its own
          random resized crop and the clip ops of `data.augmentation`, always on the host).

The clip starts are drawn so that window 0 fits in the video when it can (the sampled span is the clip's
plus `future_interval + future_frames`). Everything is stateless TensorFlow, seeded per example.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from stjax.data import augment
from stjax.data.augment_config import AugmentConfig

INPUTS = ("motion", "keyframe")  # what `data.inputs` may name
UNITS_PER_PIXEL = 4.0  # stored and batched motion: int8 = round(4 × pixels per frame)


@dataclasses.dataclass(frozen=True)
class MotionSpec:
    """`config.data.motion`: the future motion window, its negatives and the keyframe rule.

    Attributes:
      future_frames: T_m, frames of each motion window (consecutive stored frames).
      future_interval: stored frames between the clip's last frame and window 0.
      num_negatives: N, windows of other times of the same video.
      block: the motion grid's cell in pixels (the dataset's `motion_block`); m = crop_size // block.
      keyframe_window: a keyframe within this many frames of the clip is drawn uniformly (CMD: 5).
    """

    future_frames: int = 8
    future_interval: int = 2
    num_negatives: int = 3
    block: int = 4
    keyframe_window: int = 5

    def __post_init__(self):
        for field, low in (("future_frames", 1), ("future_interval", 0), ("num_negatives", 0), ("block", 1),
                           ("keyframe_window", 0)):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < low:
                raise ValueError(f"data.motion.{field} must be an integer >= {low}, got {getattr(self, field)!r}")

    def extra_span(self) -> int:
        """Stored frames after a clip's last frame that its motion window 0 needs."""
        return self.future_interval + self.future_frames

    def map_size(self, crop_size: int) -> int:
        if crop_size < self.block:
            raise ValueError(f"data.motion.block ({self.block}) must be at most the crop size ({crop_size})")
        return crop_size // self.block


def window_starts(seed, video_frames, clip_last, spec: MotionSpec) -> tf.Tensor:
    """int32 [1+N] first frames of one clip's motion windows: window 0 at clip_last + interval + 1, then N
    uniform starts in [0, F − T_m] whose windows do not overlap window 0 (any start when none is left)."""
    frames = tf.cast(video_frames, tf.int32)
    tm = spec.future_frames
    positive = clip_last + spec.future_interval + 1
    last_start = tf.maximum(frames - tm, 0)
    # starts that overlap window 0: [positive − tm + 1, positive + tm − 1] ∩ [0, last_start]
    lo = tf.clip_by_value(positive - tm + 1, 0, last_start + 1)
    hi = tf.clip_by_value(positive + tm - 1, lo - 1, last_start)
    excluded = hi - lo + 1
    valid = last_start + 1 - excluded
    u = tf.random.stateless_uniform([spec.num_negatives], seed=seed, dtype=tf.float32)
    pick = tf.minimum(tf.cast(tf.floor(u * tf.cast(tf.maximum(valid, 1), tf.float32)), tf.int32),
                      tf.maximum(valid, 1) - 1)
    disjoint = tf.where(pick < lo, pick, pick + excluded)
    anywhere = tf.minimum(tf.cast(tf.floor(u * tf.cast(last_start + 1, tf.float32)), tf.int32), last_start)
    negatives = tf.where(valid > 0, disjoint, anywhere)
    return tf.concat([positive[None], negatives], axis=0)


def window_indices(starts, video_frames, spec: MotionSpec) -> tf.Tensor:
    """int32 [..., T_m] frame indices of windows starting at `starts` [...]; frames past the end repeat the last."""
    offsets = tf.range(spec.future_frames, dtype=tf.int32)
    return tf.minimum(starts[..., None] + offsets, tf.cast(video_frames, tf.int32) - 1)


def pick_keyframe(seed, keyframes, clip_first, clip_last, spec: MotionSpec) -> tf.Tensor:
    """int32 scalar: the stored frame to use as a clip's keyframe (see the module docstring)."""
    flagged = tf.cast(tf.where(keyframes)[:, 0], tf.int32)  # [K]
    count = tf.size(flagged)
    inside = (flagged >= clip_first - spec.keyframe_window) & (flagged <= clip_last + spec.keyframe_window)
    fallback = tf.reshape(tf.cast(clip_first, tf.int32), [1])  # keeps the gathers below from empty tensors
    candidates = tf.concat([tf.boolean_mask(flagged, inside), fallback], axis=0)
    n_inside = tf.size(candidates) - 1
    u = tf.random.stateless_uniform([], seed=seed, dtype=tf.float32)
    chosen = tf.gather(candidates, tf.minimum(tf.cast(u * tf.cast(tf.maximum(n_inside, 1), tf.float32), tf.int32),
                                              tf.maximum(n_inside, 1) - 1))
    middle2 = clip_first + clip_last  # twice the middle, so ties are exact
    padded = tf.concat([flagged, fallback], axis=0)
    cost = tf.abs(2 * padded - middle2) * 2 + tf.cast(2 * padded > middle2, tf.int32)  # earlier wins a tie
    nearest = tf.gather(padded, tf.argmin(cost[:tf.maximum(count, 1)], output_type=tf.int32))
    return tf.where(n_inside > 0, chosen, tf.where(count > 0, nearest, clip_first))


def clip_geometry(seed, frame_height, frame_width, config: AugmentConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """(crop window int32 [4] (y, x, h, w), flip float32 0/1) that `augment.random_resized_clip` draws from
    `seed` for a clip: the same split of the seed, so the motion follows its clip exactly."""
    seeds = augment._split_seed(seed, 2)
    window = augment.sample_crop_window(seeds[0], frame_height, frame_width, config.area_range, config.aspect_range)
    if "flip" not in config.ops:
        return window, tf.constant(0.0)
    return window, augment.sample_clip_params(seeds[1], config)["flip"]


def crop_motion(motion, window, flip, frame_height, frame_width, out_size: int) -> tf.Tensor:
    """int8 [T, h, w, 2] stored motion (grid over a frame_height × frame_width frame) → int8 [T, m, m, 2]: the
    crop box `window` (stored pixels) resampled bilinearly onto an m × m grid, values converted to pixels of
    the crop resized to m·block (= the network's crop), dx negated and the x axis reversed when `flip` is 1."""
    t, gh, gw = tf.shape(motion)[0], tf.shape(motion)[1], tf.shape(motion)[2]
    window = tf.cast(window, tf.float32)
    oy, ox, ch, cw = window[0], window[1], window[2], window[3]
    height, width = tf.cast(frame_height, tf.float32), tf.cast(frame_width, tf.float32)
    block_y, block_x = height / tf.cast(gh, tf.float32), width / tf.cast(gw, tf.float32)
    # sample i of m sits at pixel oy + (i + 1/2)·ch/m, i.e. grid coordinate pixel / block − 1/2
    def box(o, c, blk, g):
        first = (o + 0.5 * c / out_size) / blk - 0.5
        last = (o + (out_size - 0.5) * c / out_size) / blk - 0.5
        span = tf.maximum(tf.cast(g, tf.float32) - 1.0, 1.0)
        return tf.clip_by_value(first / span, 0.0, 1.0), tf.clip_by_value(last / span, 0.0, 1.0)

    y1, y2 = box(oy, ch, block_y, gh)
    x1, x2 = box(ox, cw, block_x, gw)
    pixels = tf.cast(motion, tf.float32) / UNITS_PER_PIXEL
    boxes = tf.tile(tf.stack([y1, x1, y2, x2])[None], [t, 1])
    resized = tf.image.crop_and_resize(pixels, boxes, tf.range(t), [out_size, out_size], method="bilinear")
    crop_px = out_size * tf.stack([block_x / cw, block_y / ch])  # network pixels per stored pixel (x, y)
    resized = resized * crop_px
    flipped = tf.reverse(resized, axis=[2]) * tf.constant([-1.0, 1.0])
    resized = tf.where(flip > 0.5, flipped, resized)
    return tf.saturate_cast(tf.round(tf.clip_by_value(resized * UNITS_PER_PIXEL, -127.0, 127.0)), tf.int8)


def select(seed, example, starts, clip_span: int, inputs: tuple[str, ...], spec: MotionSpec) -> dict:
    """What the ρ clips starting at `starts` (int32 [ρ], each `clip_span` frames) need of a stored example,
    before the shuffle: 'motion' (their windows' raw motion, int8 [ρ, 1+N, T_m, h, w, 2]) with
    'motion_seeds' ([ρ, N, 2], the negatives' crops), 'keyframe' (JPEG bytes [ρ]) with 'keyframe_seeds'."""
    out = {}
    seeds = tf.random.experimental.stateless_split(seed, 4 * starts.shape[0])
    frames = example["num_frames"]
    for r in range(starts.shape[0]):
        first, last = starts[r], starts[r] + clip_span - 1
        if "motion" in inputs:
            rows = window_indices(window_starts(seeds[4 * r], frames, last, spec), frames, spec)  # [1+N, T_m]
            out.setdefault("motion", []).append(tf.gather(example["motion"], rows))
            out.setdefault("motion_seeds", []).append(
                tf.random.experimental.stateless_split(seeds[4 * r + 1], spec.num_negatives))
        if "keyframe" in inputs:
            index = pick_keyframe(seeds[4 * r + 2], example["keyframes"], first, last, spec)
            out.setdefault("keyframe", []).append(example["frames"][index])
            out.setdefault("keyframe_seeds", []).append(seeds[4 * r + 3])
    return {k: tf.stack(v) for k, v in out.items()}


def finish(selected: dict, augmentation: AugmentConfig, inputs: tuple[str, ...], spec: MotionSpec) -> dict:
    """`select`'s output (with the clips' own 'seeds' [ρ, 2] and the frame 'height' / 'width') → the batch's
    'motion' (window 0 cropped and flipped with its clip, the negatives on their own) and 'keyframe'
    (decoded and augmented)."""
    h, w = selected["height"], selected["width"]
    out = {}
    if "motion" in inputs:
        size = spec.map_size(augmentation.crop_size)

        def one_clip(args):
            windows, clip_seed, negative_seeds = args
            geometry = [clip_geometry(clip_seed, h, w, augmentation)]
            geometry += [clip_geometry(negative_seeds[n], h, w, augmentation) for n in range(spec.num_negatives)]
            return tf.stack([crop_motion(windows[j], g[0], g[1], h, w, size) for j, g in enumerate(geometry)])

        out["motion"] = tf.map_fn(
            one_clip, (selected["motion"], selected["seeds"], selected["motion_seeds"]),
            fn_output_signature=tf.TensorSpec([1 + spec.num_negatives, spec.future_frames, size, size, 2], tf.int8))
    if "keyframe" in inputs:
        out["keyframe"] = tf.map_fn(
            lambda args: augment.random_resized_clip(args[0][None], h, w, args[1], augmentation)[0],
            (selected["keyframe"], selected["keyframe_seeds"]),
            fn_output_signature=tf.TensorSpec([augmentation.crop_size, augmentation.crop_size, 3], tf.uint8))
    return out
