"""Heads: MLP projector / predictor, SwAV prototypes, a linear classifier (probe / fine-tune) and the
detection RoI head (AVA)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .roi_align import METHODS as ROI_ALIGN_METHODS
from .roi_align import roi_align


def _bn(train: bool, dtype: Any, name: str, use_scale: bool = True) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_scale=use_scale,
                        dtype=dtype, name=name)


class MLP(nn.Module):
    """Projector / predictor: Dense → [BN] → ReLU repeated, then a final Dense.

    BYOL projector 2048→4096→BN→ReLU→256: ``MLP((4096,), 256)``; MoCo's 3-layer MLP
    without BN: ``MLP((2048, 2048), 128, use_bn=False, hidden_bias=True)``.
    Params are fp32; computation in ``dtype``; the output is float32.
    """

    hidden_dims: tuple[int, ...]
    out_dim: int
    use_bn: bool = True          # BN after each hidden Dense
    hidden_bias: bool = False    # hidden Dense bias (redundant when followed by BN)
    out_bias: bool = True
    final_bn: bool = False       # BN without scale on the output
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = x.astype(self.dtype)
        for i, h in enumerate(self.hidden_dims):
            x = nn.Dense(h, use_bias=self.hidden_bias, dtype=self.dtype, name=f"hidden_{i}")(x)
            if self.use_bn:
                x = _bn(train, self.dtype, f"hidden_bn_{i}")(x)
            x = nn.relu(x)
        x = nn.Dense(self.out_dim, use_bias=self.out_bias, dtype=self.dtype, name="out")(x)
        if self.final_bn:
            x = _bn(train, self.dtype, "out_bn", use_scale=False)(x)
        return x.astype(jnp.float32)


class Prototypes(nn.Module):
    """SwAV prototypes: scores of embeddings against K unit-norm prototypes, ``[N, D] → [N, K]``.

    Weight-normalised: the parameter ``kernel`` [D, K] is free, the forward uses
    its columns divided by their L2 norms, so the prototypes the loss sees are
    always unit vectors (see ``stjax.objectives.swav`` for why this stands in for
    SwAV's renormalisation after every step). No bias. With L2-normalised inputs
    the scores are cosine similarities in [−1, 1]. ``train`` is unused (no BN or
    dropout); it is accepted so that every head has the same call signature.
    """

    num_prototypes: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.num_prototypes),
                            jnp.float32)
        return x.astype(jnp.float32) @ normalized_prototypes(kernel)


def normalized_prototypes(kernel: jnp.ndarray) -> jnp.ndarray:
    """The unit-norm prototypes [D, K] that ``Prototypes`` uses, from its ``kernel`` [D, K]."""
    return kernel * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(kernel), axis=0, keepdims=True), 1e-12))


class Linear(nn.Module):
    """Dropout → Dense classifier for linear probes and fine-tuning.

    Weights ~ N(0, 0.01²), zero bias (PySlowFast head init). Dropout needs the
    ``'dropout'`` rng when ``train`` and ``dropout_rate > 0``.
    """

    num_classes: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = x.astype(self.dtype)
        if self.dropout_rate > 0:
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.normal(0.01),
                     bias_init=nn.initializers.zeros, name="fc")(x)
        return x.astype(jnp.float32)


class RoIHead(nn.Module):
    """Per-box classifier on a backbone's last feature map (PySlowFast ``ResNetRoIHead``, one pathway).

    features: [B, T, H, W, C] (``ResNet3D(..., pooled=False)``); boxes: [B, M, 4] (x1, y1, x2, y2) normalised
    to [0, 1] of the input frame (padding boxes allowed: finite logits; masking them is the caller's).
    Mean over T → RoIAlign ``output_size`` (boxes × (W, H) in map pixels, aligned, adaptive sampling) → max over
    the bins → dropout → Dense(num_classes), weights ~ N(0, 0.01²), zero bias. Returns float32 logits
    [B, M, num_classes] (no sigmoid). Dropout needs the ``'dropout'`` rng when ``train`` and ``dropout_rate > 0``.
    """

    num_classes: int
    dropout_rate: float = 0.5
    output_size: tuple[int, int] = (7, 7)
    max_sampling: int | tuple[int, int] | None = None  # roi_align's: None = exact for boxes inside the frame
    roi_method: str = "gather"                         # roi_align's implementation: ROI_ALIGN_METHODS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, boxes: jnp.ndarray, train: bool) -> jnp.ndarray:
        if features.ndim != 5:
            raise ValueError(f"features must be [B, T, H, W, C], got shape {features.shape}")
        if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
            raise ValueError(f"boxes must be [B={features.shape[0]}, M, 4], got shape {boxes.shape}")
        if self.roi_method not in ROI_ALIGN_METHODS:
            raise ValueError(f"roi_method={self.roi_method!r} is not supported; valid choices: "
                             f"{', '.join(ROI_ALIGN_METHODS)}")
        h, w = features.shape[2:4]
        fmap = jnp.mean(features.astype(self.dtype), axis=1)  # [B, H, W, C]
        scale = jnp.asarray([w, h, w, h], jnp.float32)
        x = roi_align(fmap, boxes.astype(jnp.float32) * scale, self.output_size, 1.0, sampling_ratio=0,
                      aligned=True, max_sampling=self.max_sampling, method=self.roi_method)  # [B, M, oh, ow, C]
        x = jnp.max(x, axis=(2, 3))
        if self.dropout_rate > 0:
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.normal(0.01),
                     bias_init=nn.initializers.zeros, name="fc")(x)
        return x.astype(jnp.float32)
