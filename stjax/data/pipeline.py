"""The tf.data pipeline: prepared TFDS video datasets → batches of clips (NumPy, uint8).

READ (this process's slice of the split, JPEG frames left encoded) → SAMPLE
frame indices (ρ clips per video, timespan rule; or V test views) and keep
only those JPEGs → SHUFFLE (training; the buffer holds the kept frames, not
whole videos) → DECODE only those frames (cropping while decoding) → AUGMENT
each clip with one draw for all its frames (XLA-compiled arithmetic) → BATCH.
`stjax.data.device` turns the batches into global `jax.Array`s on the mesh.

Training batches: {'clips': uint8 [b, ρ, T, S, S, 3] (ρ = 2 clips of one start when ρ = 1), 'label': int32 [b]
(multi-hot int32 [b, C] for a multi_hot dataset, `stjax.data.targets`),
'clip_starts': float32 [b, ρ] (seconds)}, plus what `inputs` names from a dataset stored with motion
vectors (`stjax.data.motion_inputs`): 'motion' int8 [b, ρ, 1+N, T_m, m, m, 2], 'keyframe' uint8 [b, ρ, S, S, 3].
Evaluation batches: {'clips': uint8 [b, V, T, S, S, 3], 'label': int32 [b] (or [b, C]),
'mask': bool [b]} with V = temporal × spatial views (temporal-major) and the
last batch padded (mask False) so every example is seen exactly once.

Determinism: with the same seed and the same process layout, the same batches
come out in the same order; each example's randomness is
`stateless_fold_in((seed, process_index), position in the stream)`.
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf
import tensorflow_datasets as tfds

from stjax import configlib
from stjax.data import augment, inputs, motion_inputs, sampling, targets
from stjax.data.augment_config import AUGMENT_ON
from stjax.data.builders import load_builder


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What one training example holds: ρ clips of T frames at stride τ.

    ρ = 1 is the study's baseline "two crops of one clip": it yields 2 clips
    with the same start (`num_clips`, `timespan`), so every objective still
    compares two augmentations.

    Attributes:
      rho: clips per video (ρ ≥ 1).
      num_frames: frames per clip (T).
      stride: stored frames between consecutive clip frames (τ).
      max_timespan: largest gap between clip starts in seconds (math.inf: unbounded).
    """

    rho: int = 2
    num_frames: int = 8
    stride: int = 8
    max_timespan: float = math.inf

    def __post_init__(self):
        for field in ("rho", "num_frames", "stride"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if not self.max_timespan >= 0:
            raise ValueError(f"max_timespan must be >= 0 seconds or inf, got {self.max_timespan}")

    @property
    def num_clips(self) -> int:
        """Clips per example: ρ, or 2 augmentations of one clip when ρ = 1."""
        return max(self.rho, 2)

    @property
    def timespan(self) -> float:
        """The timespan bound actually applied (0 when ρ = 1)."""
        return 0.0 if self.rho == 1 else self.max_timespan


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """Test-time views: `temporal` clips evenly spaced × `spatial` crops along the long side.

    Frames are resized to short side `short_side` (default: `crop_size`, so a crop spans the
    short side) before cropping; `short_side=256, crop_size=224` is the "resize 256, centre
    224" view whose area fraction (0.766) is the top of the recipe's training crop range.
    """

    num_frames: int = 8
    stride: int = 8
    crop_size: int = 224
    temporal: int = 10
    spatial: int = 3
    short_side: int | None = None

    def __post_init__(self):
        for field in ("num_frames", "stride", "crop_size", "temporal"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.spatial not in (1, 3):
            raise ValueError(f"spatial views must be 1 (centre) or 3 (left/centre/right), got {self.spatial}")
        if self.short_side is not None and self.short_side < self.crop_size:
            raise ValueError(f"short_side ({self.short_side}) must be >= crop_size ({self.crop_size}) or None")

    @property
    def num_views(self) -> int:
        return self.temporal * self.spatial


class KeepFramesEncoded(tfds.decode.SkipDecoding):
    """`tfds.decode.SkipDecoding` for a `Sequence` of images: the frames stay tf.string [N] JPEGs.

    TFDS applies a feature's decoder to a sequence one element at a time
    (`tf.map_fn`), so plain `SkipDecoding` on the frames copies every JPEG of
    the video through a TensorList twice: ~5 ms per 9 MB Kinetics-like video,
    as much as reading it. Here the whole sequence is passed through.
    """

    def decode_batch_example(self, serialized_frames):
        return serialized_frames


def _read(dataset: str, data_dir, split: str, process_index: int, process_count: int,
          shuffle_seed: int | None) -> tuple[tf.data.Dataset, tfds.core.DatasetBuilder, str]:
    """This process's slice of `split`, frames still JPEG-encoded."""
    builder = load_builder(dataset, data_dir)
    sizes = {name: s.num_examples for name, s in builder.info.splits.items()}
    try:
        inputs.split_parts(split, sizes)
    except (KeyError, ValueError):
        raise ValueError(f"split {split!r} not in {dataset!r}; valid choices: {sorted(sizes)}, or a TFDS slice "
                         "of one such as 'train[:80%]'") from None
    host_split = tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]
    read_config = tfds.ReadConfig(
        shuffle_seed=shuffle_seed, interleave_cycle_length=16 if shuffle_seed is not None else 1
    )
    ds = builder.as_dataset(
        split=host_split, shuffle_files=shuffle_seed is not None, read_config=read_config,
        decoders={"frames": KeepFramesEncoded()},
    )
    return ds, builder, host_split


def _label_form(builder: tfds.core.DatasetBuilder) -> tuple[str, int]:
    """(label type, class count) of a prepared dataset's stored `label` (`stjax.data.targets`)."""
    feature = builder.info.features["label"]
    return targets.stored_kind(feature), len(targets.class_names(feature))


def examples_per_epoch(builder: tfds.core.DatasetBuilder, host_split) -> int:
    """Examples in `host_split` (a split name or a `tfds.even_splits` slice of one)."""
    return builder.info.splits[host_split].num_examples


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    options.threading.private_threadpool_size = 0
    return options


def check_crop_fits(builder: tfds.core.DatasetBuilder, crop_size: int, field: str = "crop_size",
                    split: str | None = None):
    """A crop larger than the stored frames (of every video of `split`, when sizes vary) is an error before
    any work; larger than only some videos', a warning (`inputs.check_crop`)."""
    info = builder.info
    plan = inputs.DatasetPlan(
        "/".join(info.full_name.split("/")[:2]), f"prepared in {builder.data_dir}", builder.data_dir,
        {name: s.num_examples for name, s in info.splits.items()},
        short_side=info.metadata.get("storage", {}).get("short_side"))
    recorded = inputs.read_report(builder.data_dir).get("stored_short_sides")
    if recorded is not None:
        plan.short_sides = {s: {int(side): n for side, n in counts.items()} for s, counts in recorded.items()}
    inputs.check_crop(crop_size, field, plan, [split] if split else list(plan.splits))


def shuffled_epochs(ds: tf.data.Dataset, builder, host_split, split: str, process_count: int, select, base_seed,
                    shuffle_buffer: int, start: int, num_parallel_calls, deterministic: bool) -> tf.data.Dataset:
    """The endless stream of `select(position, example)` over epochs of `ds` (this process's slice), from
    element `start` on: epoch e is the slice in its read order at positions e·n … (e+1)·n − 1, shuffled with
    a seed of its own (from `base_seed`).

    The shuffle comes after `select`, so the buffer holds what it keeps (a clip's frames: ~16 of a Kinetics
    video's 300 JPEGs at 30 fps, so a 1024-video buffer takes ~0.5 GB instead of ~8 GB). Resuming at element
    i reads from epoch i // n on and skips i % n of it: no earlier epoch is read.
    """
    n = examples_per_epoch(builder, host_split)
    configlib.require(n >= 1, "data.num_shards", process_count,
                      f"at most the {builder.info.splits[split].num_examples} examples of split {split!r}")

    def epoch(e):
        one = tf.data.Dataset.zip((tf.data.Dataset.range(e * n, (e + 1) * n), ds))
        one = one.map(select, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
        epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, -1 - e)[0]
        return one.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)

    return tf.data.Dataset.range(start // n, tf.int64.max).flat_map(epoch).skip(start % n)


def pretrain_dataset(
    dataset: str,
    *,
    batch_size: int,
    clips: ClipSpec,
    augmentation: augment.AugmentConfig,
    seed: int = 0,
    split: str = "train",
    data_dir: str | None = None,
    process_index: int = 0,
    process_count: int = 1,
    shuffle_buffer: int = 1024,
    deterministic: bool = True,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    prefetch: int = 2,
    start_batch: int = 0,
    augment_on: str = "host",
    clip_labels: str = "video",
    inputs: tuple[str, ...] = (),
    motion: motion_inputs.MotionSpec | None = None,
) -> tf.data.Dataset:
    """Endless batches of ρ augmented clips for this process.

    Args:
      dataset: prepared dataset name, `NAME` or `NAME/CONFIG`.
      batch_size: examples (videos) per batch on this process.
      clips: ρ, T, τ and the timespan bound.
      augmentation: crop size and the per-clip augmentation recipe.
      seed: data seed (file order, shuffle, sampling and augmentation).
      process_index, process_count: this host's slice of the split.
      start_batch: batches already consumed (resuming): the stream continues
        exactly where an uninterrupted one would be; only the current epoch's
        earlier examples are read again (never decoded), no earlier epoch.
      augment_on: "host" augments here; "device" only crops and resizes here and adds
        each clip's draws as `augment` (float32 [b, ρ, D], D = len(augmentation.draw_names))
        for the train step to apply on the accelerator (`stjax.data.device_augment`): the same clips within one
        uint8 level, at about half the host's work per clip.
      clip_labels: "video" gives each example its video's `label`; "window" (datasets with time-stamped
        `actions`, e.g. Charades) the multi-hot of the actions that overlap its clips' time windows
        (`targets.window_label`).
      inputs: more per-clip inputs, of `motion_inputs.INPUTS`: "motion" (future motion windows and their
        negatives) and "keyframe" (an I-frame near each clip), from a dataset stored with motion vectors;
        `motion` (a `motion_inputs.MotionSpec`, default one) says how they are drawn.
    """
    configlib.require_choice("data.augment_on", augment_on, AUGMENT_ON)
    configlib.require_choice("data.clip_labels", clip_labels, targets.CLIP_LABELS)
    ds, builder, host_split = _read(dataset, data_dir, split, process_index, process_count, shuffle_seed=seed)
    check_crop_fits(builder, augmentation.crop_size, "augmentation.crop_size", split)
    label_kind, num_classes = _label_form(builder)
    if clip_labels == "window" and "actions" not in builder.info.features:
        raise ValueError(f"data.clip_labels='window' needs time-stamped actions, which {dataset!r} does not store "
                         f"(Charades does); valid choices here: video")
    inputs = tuple(inputs)
    for name in inputs:
        configlib.require_choice("data.inputs", name, motion_inputs.INPUTS)
    motion = motion or motion_inputs.MotionSpec()
    if inputs and "motion" not in builder.info.features:
        raise ValueError(f"data.inputs={inputs} needs a dataset stored with motion vectors; {dataset!r} was built "
                         "without them. Build one with `python -m stjax.data.build ... --with_motion_vectors` "
                         "(the synthetic set's is `synthetic/motion`)")
    base_seed = tf.constant([seed, process_index], tf.int64)
    span = sampling.clip_span(clips.num_frames, clips.stride)
    start_span = span + (motion.extra_span() if "motion" in inputs else 0)  # room for the future window

    def select_frames(position, example):
        """The ρ clips' JPEG frames of one video: a few hundred KB, where the video holds MBs."""
        example_seed = tf.random.experimental.stateless_fold_in(base_seed, position)
        seeds = tf.random.experimental.stateless_split(example_seed, clips.num_clips + 1)
        starts = sampling.sample_clip_starts(
            seeds[0], example["num_frames"], example["fps"], clips.num_clips, start_span, clips.timespan
        )
        indices = sampling.clip_indices(starts, example["num_frames"], clips.num_frames, clips.stride)
        clip_starts = tf.cast(starts, tf.float32) / example["fps"]
        if clip_labels == "window":
            label = targets.window_label(example["actions"], clip_starts, span / example["fps"], num_classes)
        else:
            label = targets.batch_label(label_kind, example["label"], num_classes)
        selected = {
            "encoded": tf.gather(example["frames"], indices),  # [ρ, T] JPEG bytes
            "seeds": seeds[1:],
            "height": example["height"],
            "width": example["width"],
            "label": label,
            "clip_starts": clip_starts,
        }
        if inputs:  # seeds of their own: the clips' draws stay those of a run without them
            selected.update(motion_inputs.select(
                tf.random.experimental.stateless_fold_in(example_seed, 0x5EED), example, starts, span, inputs, motion))
        return selected

    clip_signature = tf.TensorSpec([clips.num_frames, augmentation.crop_size, augmentation.crop_size, 3], tf.uint8)

    def decode_clips(selected):
        # One clip after another (not ρ at once): a clip's working set stays in cache (ρ=8: 29 -> 50 clips/s).
        def one_clip(args):
            return augment.random_resized_clip(args[0], selected["height"], selected["width"], args[1], augmentation)

        def one_crop(args):
            return augment.random_resized_crop(args[0], selected["height"], selected["width"], args[1], augmentation)

        fn, signature = ((one_clip, clip_signature) if augment_on == "host" else
                         (one_crop, (clip_signature, tf.TensorSpec([len(augmentation.draw_names)], tf.float32))))
        decoded = tf.map_fn(fn, (selected["encoded"], selected["seeds"]), parallel_iterations=1,
                            fn_output_signature=signature)
        example = {"label": selected["label"], "clip_starts": selected["clip_starts"]}
        if inputs:
            example.update(motion_inputs.finish(selected, augmentation, inputs, motion))
        if augment_on == "host":
            return dict(example, clips=decoded)
        return dict(example, clips=decoded[0], augment=decoded[1])

    ds = shuffled_epochs(ds, builder, host_split, split, process_count, select_frames, base_seed, shuffle_buffer,
                         start_batch * batch_size, num_parallel_calls, deterministic)
    ds = ds.map(decode_clips, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(prefetch).with_options(_options(deterministic))


def eval_dataset(
    dataset: str,
    *,
    batch_size: int,
    views: ViewSpec,
    split: str = "test",
    data_dir: str | None = None,
    process_index: int = 0,
    process_count: int = 1,
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """One pass over this process's slice of `split`, V deterministic views per video.

    Every process yields the same number of batches (the largest slice's, padded
    with masked examples) so that global batches line up across hosts.
    """
    ds, builder, _ = _read(dataset, data_dir, split, process_index, process_count, shuffle_seed=None)
    check_crop_fits(builder, views.crop_size, "views.crop_size", split)
    label_kind, num_classes = _label_form(builder)
    total = builder.info.splits[split].num_examples
    largest_slice = math.ceil(total / process_count)
    num_batches = max(1, math.ceil(largest_slice / batch_size))
    span = sampling.clip_span(views.num_frames, views.stride)

    def make_example(example):
        starts = sampling.uniform_clip_starts(example["num_frames"], views.temporal, span)
        indices = sampling.clip_indices(starts, example["num_frames"], views.num_frames, views.stride)
        encoded = tf.reshape(tf.gather(example["frames"], indices), [-1])
        frames = tf.map_fn(
            lambda x: tf.io.decode_jpeg(x, channels=3), encoded, fn_output_signature=tf.uint8
        )
        frames = _resize_short_side(frames, views.short_side or views.crop_size)
        crops = _spatial_crops(frames, views.crop_size, views.spatial)  # [spatial, vT, S, S, 3]
        crops = tf.reshape(
            crops, [views.spatial, views.temporal, views.num_frames, views.crop_size, views.crop_size, 3]
        )
        clips_ = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]),
                            [views.num_views, views.num_frames, views.crop_size, views.crop_size, 3])
        return {"clips": clips_, "label": targets.batch_label(label_kind, example["label"], num_classes), "mask": tf.constant(True)}

    ds = ds.map(make_example, num_parallel_calls=num_parallel_calls, deterministic=True)
    padding = tf.data.Dataset.from_tensors({
        "clips": tf.zeros([views.num_views, views.num_frames, views.crop_size, views.crop_size, 3], tf.uint8),
        "label": targets.padding_label(label_kind, num_classes),
        "mask": tf.constant(False),
    }).repeat()
    ds = ds.concatenate(padding).take(num_batches * batch_size).batch(batch_size, drop_remainder=True)
    return ds.prefetch(2).with_options(_options(True))


def _resize_short_side(frames, short_side: int):
    """uint8 [N, H, W, 3] → uint8 [N, H', W', 3] with min(H', W') = short_side."""
    shape = tf.shape(frames)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    scale = short_side / tf.minimum(h, w)
    new_hw = tf.maximum(tf.cast(tf.round(tf.stack([h * scale, w * scale])), tf.int32), short_side)
    resized = tf.image.resize(frames, new_hw, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _spatial_crops(frames, size: int, count: int):
    """uint8 [N, H, W, 3] (short side >= size) → [count, N, size, size, 3]: centred, or
    start/centre/end along the long side (centred on the short side)."""
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    fractions = [0.5] if count == 1 else [0.0, 0.5, 1.0]
    crops = []
    tall = h > w
    for fraction in fractions:
        fy = tf.where(tall, fraction, 0.5)
        fx = tf.where(tall, 0.5, fraction)
        y = tf.cast(tf.round(tf.cast(h - size, tf.float32) * fy), tf.int32)
        x = tf.cast(tf.round(tf.cast(w - size, tf.float32) * fx), tf.int32)
        crops.append(frames[:, y:y + size, x:x + size, :])
    return tf.stack(crops)
