"""The augmentation recipe's settings (`AugmentConfig`), without TensorFlow.

Shared by the tf.data augmentation (`stjax.data.augment`) and its accelerator
counterpart (`stjax.data.device_augment`), which must import without TensorFlow.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

# ITU-R BT.601 luma weights (same as tf.image.rgb_to_grayscale and PIL "L").
LUMA = (0.299, 0.587, 0.114)

# Where the per-clip flip / colour jitter / grayscale / blur run (the crop and resize always run on the host).
AUGMENT_ON = ("host", "device")

# The per-clip random draws of the augmentation, packed in this order into one float32 vector per clip
# when the augmentation runs on the device (`augment.pack_clip_params`): booleans as 0/1, `order_i` the
# colour-jitter op applied i-th (brightness 0, contrast 1, saturation 2, hue 3), `hue` in turns,
# `sigma` in pixels.
CLIP_PARAM_NAMES = ("flip", "jitter", "brightness", "contrast", "saturation", "hue", "order_0", "order_1",
                    "order_2", "order_3", "grayscale", "blur", "sigma")


def _as_pair(name: str, value: Any) -> tuple[float, float]:
    try:
        pair = tuple(float(v) for v in value)
    except TypeError:
        raise ValueError(f"AugmentConfig.{name} must be a pair (low, high); got {value!r}") from None
    if len(pair) != 2:
        raise ValueError(f"AugmentConfig.{name} must be a pair (low, high); got {value!r}")
    return pair  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation hyper-parameters (defaults: the paper's contrastive recipe)."""

    crop_size: int = 224  # output H = W
    area_range: tuple[float, float] = (0.2, 0.766)  # fraction of the stored frame's area
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3)  # w/h, sampled log-uniformly
    flip_prob: float = 0.5
    color_jitter_prob: float = 0.8
    brightness: float = 0.6
    contrast: float = 0.6
    saturation: float = 0.6
    hue: float = 0.15
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma_range: tuple[float, float] = (0.1, 2.0)  # pixels at crop_size resolution

    def __post_init__(self):
        # crop_size: a positive integer.
        if isinstance(self.crop_size, bool) or not isinstance(self.crop_size, int) or self.crop_size < 1:
            raise ValueError(f"AugmentConfig.crop_size must be an integer >= 1; got {self.crop_size!r}")

        # Ranges: coerce lists (e.g. from YAML) to tuples of floats, then check order.
        for name in ("area_range", "aspect_range", "blur_sigma_range"):
            object.__setattr__(self, name, _as_pair(name, getattr(self, name)))
        lo, hi = self.area_range
        if not (0.0 < lo <= hi <= 1.0):
            raise ValueError(
                f"AugmentConfig.area_range must satisfy 0 < low <= high <= 1; got {self.area_range!r}")
        lo, hi = self.aspect_range
        if not (0.0 < lo <= hi) or not math.isfinite(hi):
            raise ValueError(
                f"AugmentConfig.aspect_range must satisfy 0 < low <= high < inf; got {self.aspect_range!r}")
        lo, hi = self.blur_sigma_range
        if not (0.0 < lo <= hi) or not math.isfinite(hi):
            raise ValueError(
                f"AugmentConfig.blur_sigma_range must satisfy 0 < low <= high < inf; "
                f"got {self.blur_sigma_range!r}")

        for name in ("flip_prob", "color_jitter_prob", "grayscale_prob", "blur_prob"):
            p = getattr(self, name)
            if not isinstance(p, (int, float)) or isinstance(p, bool) or not (0.0 <= p <= 1.0):
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1]; got {p!r}")
        for name in ("brightness", "contrast", "saturation"):
            s = getattr(self, name)
            if not isinstance(s, (int, float)) or isinstance(s, bool) or not (0.0 <= s < math.inf):
                raise ValueError(f"AugmentConfig.{name} must be a finite number >= 0; got {s!r}")
        if not isinstance(self.hue, (int, float)) or isinstance(self.hue, bool) or not (0.0 <= self.hue <= 0.5):
            raise ValueError(f"AugmentConfig.hue must be in [0, 0.5]; got {self.hue!r}")


def max_blur_radius(config: AugmentConfig, height: int | None, width: int | None) -> int:
    """Largest blur kernel radius for `config` on frames of this (static) size: ceil(3 σ_max), at least 1, capped
    at size − 1 (reflect padding needs pad < size)."""
    radius = max(1, int(math.ceil(3.0 * config.blur_sigma_range[1])))
    for dim in (height, width):
        if dim is not None:
            radius = max(0, min(radius, dim - 1))
    return radius


def from_config(config) -> AugmentConfig:
    """`AugmentConfig` of a run config's `data.augmentation` block; errors name the block."""
    a = config.data.augmentation
    try:
        return AugmentConfig(
            crop_size=a.crop_size, area_range=tuple(a.area_range), aspect_range=tuple(a.aspect_range),
            flip_prob=a.flip_prob, color_jitter_prob=a.color_jitter_prob, brightness=a.brightness,
            contrast=a.contrast, saturation=a.saturation, hue=a.hue, grayscale_prob=a.grayscale_prob,
            blur_prob=a.blur_prob, blur_sigma_range=tuple(a.blur_sigma_range),
        )
    except ValueError as e:
        raise ValueError(f"config.data.augmentation: {e}") from None
