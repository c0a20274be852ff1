"""Networks of CMD (Context and Motion Decoupling, Huang et al., CVPR 2021) besides the video backbone: the
motion-vector encoder, the keyframe encoder (both ResNet3D layouts, registered by name), adaptive average
pooling, and the motion predictor (a DETR-style transformer encoder-decoder).

Framework-agnostic: the objective (`stjax.objectives.cmd`) picks the networks and computes the losses.

Encoders (`MOTION_ENCODERS`, `KEYFRAME_ENCODERS`; `ResNet3D` field dicts, built by `encoder`):
  r3d10_2ch   the official motion encoder's layout: 3D ResNet-10 (one basic block per stage, widths
              64..512) on 2-channel motion clips, stem 3×7×7 at spatial stride 1 then a 3×3 max-pool.
              stjax's motion maps are at block resolution (crop / 4: 28² for a 112² crop, where the
              official resizes them to the crop), so the stages stride space (1, 2, 1, 1): the map is at
              1/16 of the crop as the official (7² for 112²); time strides (1, 2, 2, 2): 8 frames → 1.
  r3d_micro_2ch  a CPU-sized one (tests, demo): widths (8, 16, 32), stem 3×3×3 stride 1, no pool,
              space strides (2, 1, 1), time strides (2, 2, 2).
  r2d10       the official keyframe encoder's layout: 2D ResNet-10 (torchvision's resnet18 with one
              block per stage), as a ResNet3D whose kernels have temporal size 1, on [N, 1, S, S, 3].
  r2d_micro   a CPU-sized one: r3d_micro's layout (stem 1×5×5 stride 4, widths 8..64) in 2D.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from .resnet3d import ResNet3D

MOTION_ENCODERS: dict[str, dict] = {
    "r3d10_2ch": dict(block="basic", stage_depths=(1, 1, 1, 1), widths=(64, 128, 256, 512),
                      temporal_kernels=(3, 3, 3, 3), spatial_strides=(1, 2, 1, 1), temporal_strides=(1, 2, 2, 2),
                      stem_features=64, stem_kernel=(3, 7, 7), stem_strides=(1, 1, 1), stem_pool=True),
    "r3d_micro_2ch": dict(block="basic", stage_depths=(1, 1, 1), widths=(8, 16, 32), temporal_kernels=(3, 3, 3),
                          spatial_strides=(2, 1, 1), temporal_strides=(2, 2, 2), stem_features=8,
                          stem_kernel=(3, 3, 3), stem_strides=(1, 1, 1), stem_pool=False),
}

KEYFRAME_ENCODERS: dict[str, dict] = {
    "r2d10": dict(block="basic", stage_depths=(1, 1, 1, 1), widths=(64, 128, 256, 512),
                  temporal_kernels=(1, 1, 1, 1), spatial_strides=(1, 2, 2, 2), temporal_strides=(1, 1, 1, 1),
                  stem_features=64, stem_kernel=(1, 7, 7), stem_strides=(1, 2, 2), stem_pool=True),
    "r2d_micro": dict(block="basic", stage_depths=(1, 1, 1, 1), widths=(8, 16, 32, 64),
                      temporal_kernels=(1, 1, 1, 1), spatial_strides=(2, 2, 2, 2), temporal_strides=(1, 1, 1, 1),
                      stem_features=8, stem_kernel=(1, 5, 5), stem_strides=(1, 4, 4), stem_pool=False),
}


def encoder(name: str, **overrides) -> ResNet3D:
    """The motion or keyframe encoder registered as `name`, with ResNet3D field `overrides` (dtype, lowering,
    batch_norm, ...)."""
    layouts = {**MOTION_ENCODERS, **KEYFRAME_ENCODERS}
    if name not in layouts:
        raise ValueError(f"unknown CMD encoder {name!r}; valid names: {', '.join(sorted(layouts))}")
    return ResNet3D(**{**layouts[name], **overrides})


def adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
    """float32 [out, size]: row i averages input cells floor(i·size/out) … ceil((i+1)·size/out) − 1 (PyTorch's
    AdaptiveAvgPool bins; `out` > `size` repeats cells)."""
    m = np.zeros((out, size), np.float32)
    for i in range(out):
        lo, hi = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool2d(x: jnp.ndarray, grid: tuple[int, int]) -> jnp.ndarray:
    """[N, H, W, C] → [N, gh, gw, C], PyTorch's AdaptiveAvgPool2d (as two small matrix products)."""
    gh, gw = grid
    rows, cols = adaptive_pool_matrix(x.shape[1], gh), adaptive_pool_matrix(x.shape[2], gw)
    return jnp.einsum("ih,jw,nhwc->nijc", rows, cols, x)


class _Attention(nn.Module):
    """Multi-head attention with separate query, key and value inputs (DETR: q and k carry the positional
    embeddings, v does not)."""

    heads: int
    dropout: float

    @nn.compact
    def __call__(self, q, k, v, train: bool):
        return nn.MultiHeadDotProductAttention(num_heads=self.heads, dropout_rate=self.dropout,
                                               deterministic=not train, name="attention")(q, k, v)


class _FeedForward(nn.Module):
    hidden: int
    ffn: int
    dropout: float

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Dense(self.ffn, name="linear1")(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.hidden, name="linear2")(x)


class EncoderLayer(nn.Module):
    """DETR's post-norm encoder layer: src = LN(src + Drop(SelfAttn(src + pos, src + pos, src)));
    src = LN(src + Drop(FFN(src)))."""

    heads: int
    ffn: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, src, pos, train: bool):
        drop = nn.Dropout(self.dropout, deterministic=not train)
        y = _Attention(self.heads, self.dropout, name="self_attention")(src + pos, src + pos, src, train)
        src = nn.LayerNorm(name="norm1")(src + drop(y))
        y = _FeedForward(src.shape[-1], self.ffn, self.dropout, name="ffn")(src, train)
        return nn.LayerNorm(name="norm2")(src + drop(y))


class DecoderLayer(nn.Module):
    """DETR's post-norm decoder layer: self-attention over the queries (tgt + query_pos as q and k), then
    cross-attention (q: tgt + query_pos, k: memory + pos, v: memory), then the FFN; each followed by
    dropout, the residual and LayerNorm."""

    heads: int
    ffn: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, tgt, memory, pos, query_pos, train: bool):
        drop = nn.Dropout(self.dropout, deterministic=not train)
        y = _Attention(self.heads, self.dropout, name="self_attention")(tgt + query_pos, tgt + query_pos, tgt, train)
        tgt = nn.LayerNorm(name="norm1")(tgt + drop(y))
        y = _Attention(self.heads, self.dropout, name="cross_attention")(tgt + query_pos, memory + pos, memory,
                                                                          train)
        tgt = nn.LayerNorm(name="norm2")(tgt + drop(y))
        y = _FeedForward(tgt.shape[-1], self.ffn, self.dropout, name="ffn")(tgt, train)
        return nn.LayerNorm(name="norm3")(tgt + drop(y))


class MotionPredictor(nn.Module):
    """CMD's motion predictor: source tokens [N, L, D] → `num_queries` predicted tokens [N, Q, hidden].

    Dense(D → hidden, no bias) on each source token; learned positional embeddings of the L source tokens
    (`k_embedding`, [L, hidden]: L is fixed at initialisation) and of the Q targets (`q_embedding`,
    [Q, hidden]); `encoder_layers` `EncoderLayer`s over the memory, then `decoder_layers` `DecoderLayer`s whose
    input is zeros with the query embeddings as positional embeddings, then a final LayerNorm (DETR's
    `decoder_norm`). Float32. Dropout (rate `dropout`) needs the 'dropout' rng when `train` and dropout > 0.
    """

    num_queries: int
    hidden: int = 512
    heads: int = 8
    ffn: int = 512
    encoder_layers: int = 2
    decoder_layers: int = 4
    dropout: float = 0.0

    @nn.compact
    def __call__(self, tokens: jnp.ndarray, train: bool) -> jnp.ndarray:
        if tokens.ndim != 3:
            raise ValueError(f"tokens must be [N, L, D], got shape {tokens.shape}")
        n, length = tokens.shape[:2]
        init = nn.initializers.normal(0.02)
        pos = self.param("k_embedding", init, (length, self.hidden), jnp.float32)[None]
        query_pos = self.param("q_embedding", init, (self.num_queries, self.hidden), jnp.float32)[None]
        memory = nn.Dense(self.hidden, use_bias=False, name="input_proj")(tokens.astype(jnp.float32))
        for i in range(self.encoder_layers):
            memory = EncoderLayer(self.heads, self.ffn, self.dropout, name=f"encoder_{i}")(memory, pos, train)
        tgt = jnp.zeros((n, self.num_queries, self.hidden), jnp.float32)
        for i in range(self.decoder_layers):
            tgt = DecoderLayer(self.heads, self.ffn, self.dropout, name=f"decoder_{i}")(tgt, memory, pos, query_pos,
                                                                                      train)
        return nn.LayerNorm(name="decoder_norm")(tgt)
