"""The augmentation recipe's settings (`AugmentConfig`), without TensorFlow.

Shared by the tf.data augmentation (`stjax.data.augment`) and its accelerator
counterpart (`stjax.data.device_augment`), which must import without TensorFlow.
The per-clip ops and their settings are declared in `stjax.data.augment_ops`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from stjax.data import augment_ops
from stjax.data.augment_ops import DEFAULT_OPS, LUMA, max_blur_radius  # noqa: F401 (re-exported)

# Where the per-clip ops (`AugmentConfig.ops`) run (the crop and resize always run on the host).
AUGMENT_ON = ("host", "device")

# The packed per-clip draws of the default op list (`augment_ops.draw_names(DEFAULT_OPS)`; booleans as 0/1,
# `order_i` the colour-jitter op applied i-th, `hue` in turns, `sigma` in pixels). Another list packs
# `AugmentConfig.draw_names`.
CLIP_PARAM_NAMES = augment_ops.draw_names(DEFAULT_OPS)

_as_pair = augment_ops.as_pair


class _Checks:
    """`AugmentConfig`'s validation and derived names (the dataclass itself is built from the registry)."""

    def __post_init__(self):
        # crop_size: a positive integer.
        if isinstance(self.crop_size, bool) or not isinstance(self.crop_size, int) or self.crop_size < 1:
            raise ValueError(f"AugmentConfig.crop_size must be an integer >= 1; got {self.crop_size!r}")

        # Ranges: coerce lists (e.g. from YAML) to tuples of floats, then check order.
        for name in ("area_range", "aspect_range"):
            object.__setattr__(self, name, _as_pair(name, getattr(self, name)))
        lo, hi = self.area_range
        if not (0.0 < lo <= hi <= 1.0):
            raise ValueError(
                f"AugmentConfig.area_range must satisfy 0 < low <= high <= 1; got {self.area_range!r}")
        lo, hi = self.aspect_range
        if not (0.0 < lo <= hi) or not math.isfinite(hi):
            raise ValueError(
                f"AugmentConfig.aspect_range must satisfy 0 < low <= high < inf; got {self.aspect_range!r}")

        # Every registered op's settings (also of ops not in the list: they are fields all the same).
        for op in augment_ops.OPS.values():
            for setting in op.settings:
                object.__setattr__(self, setting.name, setting.check(setting.name, getattr(self, setting.name)))
        object.__setattr__(self, "ops", augment_ops.check_ops(self.ops))

    @property
    def draw_names(self) -> tuple[str, ...]:
        """The packed draw vector's slots for `ops` (float32 [len(draw_names)] per clip)."""
        return augment_ops.draw_names(self.ops)


# Fields: the crop's, then every registered op's settings (registration order), then the op list.
AugmentConfig = dataclasses.make_dataclass(
    "AugmentConfig",
    [("crop_size", int, dataclasses.field(default=224)),  # output H = W
     ("area_range", tuple, dataclasses.field(default=(0.2, 0.766))),  # fraction of the stored frame's area
     ("aspect_range", tuple, dataclasses.field(default=(3 / 4, 4 / 3))),  # w/h, sampled log-uniformly
     *[(s.name, Any, dataclasses.field(default=s.default)) for op in augment_ops.OPS.values() for s in op.settings],
     ("ops", tuple, dataclasses.field(default=DEFAULT_OPS))],  # the per-clip ops, in the order they run
    bases=(_Checks,), frozen=True)
AugmentConfig.__module__ = __name__
AugmentConfig.__doc__ = (
    "Augmentation hyper-parameters (defaults: the paper's contrastive recipe): crop_size, area_range, "
    "aspect_range (the random resized crop), every registered op's settings (`augment_ops.OPS`: flip_prob, "
    "color_jitter_prob, brightness, contrast, saturation, hue, grayscale_prob, blur_prob, blur_sigma_range) "
    "and `ops`, the names of the per-clip ops in the order they run (an op not listed is off).")


def from_config(config) -> AugmentConfig:
    """`AugmentConfig` of a run config's `data.augmentation` block (a field it lacks takes its default, e.g.
    `ops` in a config written before the list); errors name the field as `config.data.augmentation.<field>`."""
    a = config.data.augmentation
    names = [f.name for f in dataclasses.fields(AugmentConfig)]
    try:
        return AugmentConfig(**{name: a[name] for name in names if name in a})
    except ValueError as e:
        raise ValueError(f"config.{str(e).replace('AugmentConfig.', 'data.augmentation.', 1)}") from None
