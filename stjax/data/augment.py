"""Per-clip spatial and colour augmentation for video self-supervised pretraining.

Follows the recipe of "A Large-Scale Study on Unsupervised Spatiotemporal
Representation Learning" (Feichtenhofer et al. 2021; PySlowFast contrastive_ssl
configs): random resized crop, horizontal flip, colour jitter (p=0.8),
grayscale (p=0.2) and Gaussian blur (p=0.5), in that order. The crop is
written here; the per-clip ops after it are the registry's
(`stjax.data.augment_ops`), run in the order `AugmentConfig.ops` lists.

DMVR style: every random parameter is drawn ONCE PER CLIP and applied
identically to all T frames of the clip. All randomness is stateless: each
function takes a ``seed`` tensor of shape [2] (int32 or int64) and derives
everything from it with ``tf.random.stateless_*`` ops, so the same seed always
gives the same output and works inside ``tf.data.Dataset.map`` and
``tf.function``. There is no Python-side random state.

Everything here is TensorFlow graph code with static output shapes; the whole
clip is processed as one [T, H, W, 3] batch (no per-frame Python loops).
"""

from __future__ import annotations

import functools
import math

import tensorflow as tf

from stjax.data import augment_ops
from stjax.data.augment_config import AugmentConfig
from stjax.data.augment_ops import blur_radius  # noqa: F401 (public here since before the registry)

__all__ = [
    "AugmentConfig",
    "sample_crop_window",
    "decode_and_crop_frames",
    "crop_and_resize_frames",
    "sample_clip_params",
    "augment_clip",
    "random_resized_clip",
    "random_resized_crop",
    "pack_clip_params",
    "blur_radius",
]

# Number of box proposals before falling back to a central crop (torchvision).
_CROP_ATTEMPTS = 10



# ----------------------------------------------------------------------------------------------
# Seeds.


def _split_seed(seed, num: int) -> tf.Tensor:
    """[num, 2] independent int64 child seeds of a [2] seed.

    The seed is cast to int64 first so int32 and int64 seeds with the same values
    give the same draws (stateless_split itself depends on the seed dtype).
    """
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return tf.random.experimental.stateless_split(seed, num=num)


# ----------------------------------------------------------------------------------------------
# Crop window.


def sample_crop_window(seed, frame_height, frame_width, area_range, aspect_range) -> tf.Tensor:
    """Random-resized-crop box, int32 [4] = (offset_y, offset_x, crop_h, crop_w).

    Same algorithm as torchvision's ``RandomResizedCrop.get_params``: up to 10
    proposals with area fraction ~ U(area_range) and aspect w/h log-uniform in
    aspect_range, h and w rounded half-to-even; the first proposal that fits in
    the frame wins and its offset is uniform over all positions inside the
    frame. If none fits, a central crop of the whole frame clamped to the aspect
    range is used (its area may then exceed area_range[1]). The 10 proposals are
    drawn in one vectorised op.

    ``frame_height``/``frame_width`` are scalar (int) tensors or Python ints, so
    the window can be computed from the stored frame size and fed to
    ``tf.image.decode_and_crop_jpeg`` before decoding. The box always lies inside
    the frame and has h, w >= 1.
    """
    area_lo, area_hi = (float(v) for v in area_range)
    ratio_lo, ratio_hi = (float(v) for v in aspect_range)
    height_i = tf.cast(frame_height, tf.int32)
    width_i = tf.cast(frame_width, tf.int32)
    height = tf.cast(height_i, tf.float32)
    width = tf.cast(width_i, tf.float32)

    seeds = _split_seed(seed, 3)
    u_area = tf.random.stateless_uniform([_CROP_ATTEMPTS], seeds[0], minval=area_lo, maxval=area_hi)
    u_logr = tf.random.stateless_uniform(
        [_CROP_ATTEMPTS], seeds[1], minval=math.log(ratio_lo), maxval=math.log(ratio_hi))
    u_off = tf.random.stateless_uniform([2], seeds[2])

    target_area = height * width * u_area
    ratio = tf.exp(u_logr)
    ws = tf.round(tf.sqrt(target_area * ratio))
    hs = tf.round(tf.sqrt(target_area / ratio))
    valid = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
    first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)  # first True (0 if none)
    any_valid = tf.reduce_any(valid)

    # torchvision fallback: whole frame, clamped to the aspect range, centred.
    in_ratio = width / height
    fb_w = tf.where(in_ratio > ratio_hi, tf.round(height * ratio_hi), width)
    fb_h = tf.where(in_ratio < ratio_lo, tf.round(width / ratio_lo), height)

    crop_h = tf.where(any_valid, tf.gather(hs, first), fb_h)
    crop_w = tf.where(any_valid, tf.gather(ws, first), fb_w)
    crop_h = tf.cast(tf.clip_by_value(crop_h, 1.0, height), tf.int32)
    crop_w = tf.cast(tf.clip_by_value(crop_w, 1.0, width), tf.int32)

    room_y = height_i - crop_h
    room_x = width_i - crop_w
    rand_y = tf.cast(tf.floor(u_off[0] * tf.cast(room_y + 1, tf.float32)), tf.int32)
    rand_x = tf.cast(tf.floor(u_off[1] * tf.cast(room_x + 1, tf.float32)), tf.int32)
    off_y = tf.where(any_valid, tf.minimum(rand_y, room_y), room_y // 2)
    off_x = tf.where(any_valid, tf.minimum(rand_x, room_x), room_x // 2)
    return tf.stack([off_y, off_x, crop_h, crop_w])


# ----------------------------------------------------------------------------------------------
# Decode / crop / resize.


def _resize_to_uint8(frames: tf.Tensor, out_size: int) -> tf.Tensor:
    """Bilinear resize of [T, h, w, 3] to [T, out, out, 3] uint8 (round + saturate)."""
    out = tf.image.resize(frames, [out_size, out_size], method="bilinear", antialias=False)
    out = tf.saturate_cast(tf.round(out), tf.uint8)
    return tf.ensure_shape(out, [None, out_size, out_size, 3])


def decode_and_crop_frames(encoded_frames, window, out_size: int) -> tf.Tensor:
    """Decode tf.string [T] JPEGs cropped to ``window`` and resize to uint8 [T, out, out, 3].

    Uses ``tf.image.decode_and_crop_jpeg`` (channels=3) per frame, which only
    decodes the needed part of each image. With subsampled chroma (4:2:0,
    4:2:2) libjpeg treats the crop's right edge, and its left edge when that is
    MCU-aligned, as an image edge when upsampling chroma, changing that column
    by up to ~30 levels. To get exactly the pixels of a full decode + crop, one
    extra column is decoded on each side (where the frame has one) and dropped.
    All frames must have the size of the first one.
    """
    window = tf.cast(window, tf.int32)
    frame_width = tf.image.extract_jpeg_shape(encoded_frames[0], output_type=tf.int32)[1]
    crop_x, crop_w = window[1], window[3]
    dec_x = tf.maximum(crop_x - 1, 0)
    dec_end = tf.minimum(crop_x + crop_w + 1, frame_width)
    dec_window = tf.stack([window[0], dec_x, window[2], dec_end - dec_x])
    left = crop_x - dec_x

    def decode_one(encoded):
        img = tf.image.decode_and_crop_jpeg(encoded, dec_window, channels=3)
        return tf.ensure_shape(img[:, left:left + crop_w], [None, None, 3])

    frames = tf.map_fn(
        decode_one, encoded_frames,
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return _resize_to_uint8(frames, out_size)


def crop_and_resize_frames(frames, window, out_size: int) -> tf.Tensor:
    """Crop decoded uint8 [T, H, W, 3] frames to ``window`` and resize to uint8 [T, out, out, 3]."""
    window = tf.cast(window, tf.int32)
    frames = tf.convert_to_tensor(frames)
    cropped = tf.image.crop_to_bounding_box(frames, window[0], window[1], window[2], window[3])
    return _resize_to_uint8(cropped, out_size)


# ----------------------------------------------------------------------------------------------
# Clip-level photometric augmentation: the ops of `config.ops`, from the registry `augment_ops.OPS`.


def sample_clip_params(seed, config: AugmentConfig) -> dict[str, tf.Tensor]:
    """The per-clip draws used by :func:`augment_clip`: {name: float32 scalar} in `config.draw_names` order.

    One U[0, 1) per slot from one `stateless_uniform` call, each op turning its slots into its draws
    (`augment_ops.Op.sample`): booleans as 0/1 (``flip``, ``jitter``, ``grayscale``, ``blur``), factors
    (``brightness``, ``contrast``, ``saturation``), ``hue`` (shift, in turns), ``order_0..3`` (the colour-jitter
    op applied i-th: brightness 0, contrast 1, saturation 2, hue 3), ``sigma`` (blur, in pixels).
    """
    names = config.draw_names
    u = tf.random.stateless_uniform([len(names)], _split_seed(seed, 1)[0])
    draws, i = {}, 0
    for name in config.ops:
        op = augment_ops.OPS[name]
        draws.update(op.sample(u[i:i + len(op.draws)], config))
        i += len(op.draws)
    return {name: draws[name] for name in names}


def augment_clip(frames, seed, config: AugmentConfig, jit: bool = True) -> tf.Tensor:
    """The per-clip ops of ``config.ops`` on a uint8 [T, S, S, 3] clip, in that order; returns uint8, same shape.

    One set of draws per clip (see :func:`sample_clip_params`), applied to every frame. The default list,
    the paper recipe (`stjax.data.augment_ops` has each op's contract):

    * ``flip``: horizontal flip with p=flip_prob;
    * ``color_jitter`` with p=color_jitter_prob: brightness / contrast /
      saturation factors ~ U[max(0, 1-s), 1+s], hue shift ~ U[-hue, hue], the
      four applied in a random per-clip order, torchvision semantics
      (brightness multiplies; contrast blends with the mean luma of the whole
      clip; saturation blends with the per-pixel luma; hue rotates hue), with a
      clip to [0, 1] after each;
    * ``grayscale`` with p=grayscale_prob (ITU-R 601 luma in all 3 channels);
    * ``blur``: Gaussian blur with p=blur_prob, sigma ~ U(blur_sigma_range) pixels,
      separable, kernel radius ceil(3 * sigma) (:func:`blur_radius`), reflect
      padding (the radius is capped at S - 1 when S is static and smaller;
      frames with dynamic S must be larger than ceil(3 * sigma_max)).

    Works in float32 in [0, 1] (after the leading uint8-exact ops, e.g. the flip); the result is rounded back
    to uint8. Ops that are not drawn are skipped (tf.cond), so with all probabilities 0 this is the identity.

    The draws are TensorFlow ops; with ``jit`` (the default) the arithmetic then
    runs as one XLA-compiled function (``tf.function(jit_compile=True)``), which
    fuses the blur taps and the jitter steps into a few passes over the clip:
    ~2x faster on CPU than op by op, the same draws, and outputs within one
    uint8 level of ``jit=False`` (float rounding differs where ops are fused).
    """
    frames = tf.ensure_shape(tf.convert_to_tensor(frames), [None, None, None, 3])
    params = sample_clip_params(seed, config)
    apply = _jitted_apply(config) if jit else functools.partial(_apply_params, config=config)
    return tf.ensure_shape(apply(frames, params), frames.shape)


@functools.lru_cache(maxsize=None)
def _jitted_apply(config: AugmentConfig):
    return tf.function(functools.partial(_apply_params, config=config), jit_compile=True)


def _apply_params(frames: tf.Tensor, params: dict[str, tf.Tensor], config: AugmentConfig) -> tf.Tensor:
    """`augment_clip` with its draws `params` (see `sample_clip_params`) given: each op's `apply_tf`."""
    static_shape = frames.shape
    x, is_float = frames, False
    for name in config.ops:
        op = augment_ops.OPS[name]
        if not is_float and not op.on_uint8:
            x, is_float = tf.cast(x, tf.float32) * (1.0 / 255.0), True
        x = tf.ensure_shape(op.apply_tf(x, {d: params[d] for d in op.draws}, config), static_shape)
    if not is_float:  # only exact uint8 ops (or none): x is already the clip
        return tf.ensure_shape(x, static_shape)
    x = tf.clip_by_value(x, 0.0, 1.0)
    out = tf.cast(tf.round(x * 255.0), tf.uint8)
    return tf.ensure_shape(out, static_shape)


def pack_clip_params(params: dict[str, tf.Tensor]) -> tf.Tensor:
    """`sample_clip_params`'s draws as float32 [len(params)], in their order (`AugmentConfig.draw_names`)."""
    if not params:  # an empty op list
        return tf.zeros([0], tf.float32)
    return tf.stack([tf.cast(v, tf.float32) for v in params.values()])


def _crop_with_seed(encoded_frames, frame_height, frame_width, seed, config: AugmentConfig):
    """(the clip's random resized crop, uint8 [T, crop, crop, 3]; the seed left for its augmentation)."""
    seeds = _split_seed(seed, 2)
    window = sample_crop_window(seeds[0], frame_height, frame_width, config.area_range, config.aspect_range)
    return decode_and_crop_frames(encoded_frames, window, config.crop_size), seeds[1]


def random_resized_crop(encoded_frames, frame_height, frame_width, seed,
                        config: AugmentConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """JPEG frames tf.string [T] -> (uint8 [T, crop, crop, 3] not yet augmented, its draws float32 [D]).

    D = len(config.draw_names) (13 for the default ops).

    The first half of :func:`random_resized_clip`, for augmentation on the accelerator:
    `stjax.data.device_augment.augment_clips(frames, params, config)` finishes the clip there.
    """
    frames, augment_seed = _crop_with_seed(encoded_frames, frame_height, frame_width, seed, config)
    return frames, pack_clip_params(sample_clip_params(augment_seed, config))


def random_resized_clip(encoded_frames, frame_height, frame_width, seed, config: AugmentConfig) -> tf.Tensor:
    """JPEG frames tf.string [T] -> augmented uint8 [T, crop, crop, 3].

    Splits ``seed`` into a crop seed and an augmentation seed, samples one crop
    window for the clip, decodes only that window of every frame, resizes to
    ``config.crop_size`` and applies :func:`augment_clip`.
    """
    frames, augment_seed = _crop_with_seed(encoded_frames, frame_height, frame_width, seed, config)
    return augment_clip(frames, augment_seed, config)
