"""Heads: MLP projector / predictor, SwAV prototypes, and a linear classifier (probe / fine-tune)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


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
