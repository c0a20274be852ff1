"""Models: 3D-ResNet backbones (channels-last video → pooled features, or the last feature map) and heads
(projectors, prototypes, classifiers, the RoI head of action detection with its RoIAlign).

``create_backbone(name, **overrides)`` builds a registered backbone; overrides are
``ResNet3D`` fields (e.g. ``dtype=jnp.bfloat16``, ``lowering="native"``).
Framework- and data-agnostic: nothing here knows about losses or input pipelines.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from .conv import LOWERINGS, Conv3D, conv3d, resolve_input_channel_padding, resolve_lowering
from .heads import MLP, Linear, Prototypes, RoIHead, normalized_prototypes
from .norm import IMPLEMENTATIONS as BATCH_NORMS
from .resnet3d import (REMAT_POLICIES, BasicBlock, BottleneckBlock, R2Plus1DBlock, ResNet3D, r2plus1d_18, r3d_18,
                       r3d_micro, r3d_tiny, slow_r50, slow_r101)
from .roi_align import METHODS as ROI_ALIGN_METHODS
from .roi_align import roi_align

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "slow_r50": slow_r50,     # official Slow R-50 (8×8 or 16×4: the sampling is set in config.data); 2048-d, 31.6 M
    "slow_r101": slow_r101,   # official Slow R-101; 2048-d
    "r3d_18": r3d_18,         # torchvision R3D-18 layout; 512-d, 33.2 M params
    "r2plus1d_18": r2plus1d_18,  # torchvision R(2+1)D-18 layout; 512-d
    "r3d_tiny": r3d_tiny,     # CPU demo; 128-d
    "r3d_micro": r3d_micro,   # CPU tests / smoke runs; 64-d
}


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def backbone_options(model_config) -> dict:
    """ResNet3D overrides from a `config.model` block: `dtype` (name in COMPUTE_DTYPES), `remat`,
    `remat_policy` (one of REMAT_POLICIES), `lowering` (of the 3D convolutions, one of LOWERINGS), `batch_norm`
    (one of BATCH_NORMS), `stem_pad_channels` (None: auto), `zero_init_residual` (the last BN scale of each
    residual branch starts at 0; default True) and `overrides` (any other ResNet3D field)."""
    options = dict(model_config.get("overrides", {}) or {})
    lowering = model_config.get("lowering", "auto")
    if lowering not in LOWERINGS:
        raise ValueError(f"model.lowering={lowering!r} is not supported; valid choices: {', '.join(LOWERINGS)}")
    options.setdefault("lowering", lowering)
    norm = model_config.get("batch_norm", "fused")
    if norm not in BATCH_NORMS:
        raise ValueError(f"model.batch_norm={norm!r} is not supported; valid choices: {', '.join(BATCH_NORMS)}")
    options.setdefault("batch_norm", norm)
    dtype = model_config.get("dtype", "float32")
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"model.dtype={dtype!r} is not supported; valid choices: {', '.join(COMPUTE_DTYPES)}")
    options.setdefault("dtype", COMPUTE_DTYPES[dtype])
    options.setdefault("remat", bool(model_config.get("remat", False)))
    policy = model_config.get("remat_policy", "blocks")
    if policy not in REMAT_POLICIES:
        raise ValueError(f"model.remat_policy={policy!r} is not supported; valid choices: {', '.join(REMAT_POLICIES)}")
    options.setdefault("remat_policy", policy)
    stem_pad = model_config.get("stem_pad_channels")
    resolve_input_channel_padding(stem_pad, field="model.stem_pad_channels")  # validates
    options.setdefault("stem_pad_channels", stem_pad)
    options.setdefault("zero_init_residual", bool(model_config.get("zero_init_residual", True)))
    return options


def create_backbone(name: str, **overrides) -> nn.Module:
    """Builds the backbone registered as ``name`` with ResNet3D field overrides."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**overrides)


def detection_overrides(name: str, output_stride: int | None = None) -> dict:
    """ResNet3D overrides of backbone `name` for action detection: PySlowFast's AVA layout, the last stage at
    spatial stride 1 with its 3×3 kernels dilated by 2 (Slow R-50: res5 at 1/16 of the frame).
    `output_stride` (a power of 2) sets more strides to 1, last stages first, each later stage dilated by
    the strides removed before it (DeepLab's rule), until the last map is at 1/output_stride of the frame
    (r3d_tiny: 1/32 by PySlowFast's rule; 16 also sets res4's stride to 1, dilation 2, res5's dilation 4).
    ValueError when the layout would not take the backbone's weights unchanged (a shortcut projection that
    exists only for a stride) or `output_stride` is out of reach."""
    probe = create_backbone(name)
    strides, dilations = list(probe.spatial_strides), [1] * len(probe.stage_depths)
    stem = probe.stem_strides[1] * (2 if probe.stem_pool else 1)
    target = stem * math.prod(strides[:-1]) if output_stride is None else output_stride
    reachable = [stem * math.prod(strides[:i]) for i in range(len(strides), -1, -1)]
    if target not in reachable or (output_stride is not None and output_stride & (output_stride - 1)):
        raise ValueError(f"output_stride={output_stride} is invalid for {name}; valid values: "
                         f"{', '.join(map(str, sorted(set(reachable))))} (powers of 2; None: res5 at stride 1)")
    for i in range(len(strides) - 1, -1, -1):
        if stem * math.prod(strides) <= target:
            break
        strides[i] = 1
    for i in range(len(strides)):  # a stage at or after a removed stride sees a grid that much finer
        dilations[i] = math.prod(p for s, p in zip(strides[:i + 1], probe.spatial_strides[:i + 1]) if s != p)
    overrides = {"spatial_strides": tuple(strides), "spatial_dilations": tuple(dilations)}
    _check_same_weights(name, overrides)
    return overrides


def _check_same_weights(name: str, overrides: dict) -> None:
    """ValueError unless backbone `name` with `overrides` has the same variables (names and shapes)."""
    import jax

    x = jnp.zeros((1, 2, 32, 32, 3))
    key = jax.random.key(0)

    def shapes(module):
        tree = jax.eval_shape(lambda k: module.init(k, x, train=False), key)
        return {"/".join(str(getattr(p, "key", p)) for p in path): leaf.shape
                for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}

    before, after = shapes(create_backbone(name)), shapes(create_backbone(name, **overrides))
    if before != after:
        changed = sorted(set(before) ^ set(after))[:4]
        raise ValueError(f"{name} with {overrides} does not take {name}'s weights unchanged (a shortcut "
                         f"projection exists only for a stride): {', '.join(changed)}; choose a larger output_stride")


__all__ = ["BACKBONES", "BATCH_NORMS", "COMPUTE_DTYPES", "REMAT_POLICIES", "backbone_options", "create_backbone",
           "ResNet3D", "BasicBlock", "BottleneckBlock", "R2Plus1DBlock", "Conv3D", "conv3d", "LOWERINGS",
           "resolve_lowering", "resolve_input_channel_padding", "MLP", "Linear", "Prototypes", "normalized_prototypes",
           "RoIHead", "ROI_ALIGN_METHODS", "detection_overrides", "roi_align",
           "slow_r50", "slow_r101", "r3d_18", "r2plus1d_18", "r3d_tiny", "r3d_micro"]
