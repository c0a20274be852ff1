"""Models: 3D-ResNet backbones (channels-last video → pooled features) and heads.

``create_backbone(name, **overrides)`` builds a registered backbone; overrides are
``ResNet3D`` fields (e.g. ``dtype=jnp.bfloat16``, ``lowering="native"``).
Framework- and data-agnostic: nothing here knows about losses or input pipelines.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

from .conv import LOWERINGS, Conv3D, conv3d, resolve_lowering
from .heads import MLP, Linear, Prototypes, normalized_prototypes
from .resnet3d import BasicBlock, BottleneckBlock, ResNet3D, r3d_18, r3d_micro, r3d_tiny, slow_r50

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "slow_r50": slow_r50,     # official Slow R-50 8×8; 2048-d, 31.6 M params
    "r3d_18": r3d_18,         # torchvision R3D-18 layout; 512-d, 33.2 M params
    "r3d_tiny": r3d_tiny,     # CPU demo; 128-d
    "r3d_micro": r3d_micro,   # CPU tests / smoke runs; 64-d
}


def create_backbone(name: str, **overrides) -> nn.Module:
    """Builds the backbone registered as ``name`` with ResNet3D field overrides."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**overrides)


__all__ = ["BACKBONES", "create_backbone", "ResNet3D", "BasicBlock", "BottleneckBlock", "Conv3D", "conv3d",
           "LOWERINGS", "resolve_lowering", "MLP", "Linear", "Prototypes",
           "normalized_prototypes", "slow_r50", "r3d_18", "r3d_tiny", "r3d_micro"]
