"""Batch normalisation (optionally with the ReLU after it) with a hand-written backward pass.

``BatchNorm`` has the variables of ``flax.linen.BatchNorm`` (params ``scale``, ``bias``; batch_stats
``mean``, ``var``; running averages ``m·old + (1-m)·batch``, biased batch variance, statistics in
float32) so checkpoints are interchangeable, and computes the same function. What differs is the
training-mode gradient: instead of autodiff through the mean, the mean of squares, the rsqrt and the
ReLU as separate operations, the backward pass is two per-channel reductions over ``(dy, x)`` and one
elementwise pass

    s1 = Σ dy,  s2 = Σ dy·(x - μ)                       (one fused reduction, float32)
    dx = a·dy + k·x + c                                  (one elementwise pass, in x's dtype)

with per-channel ``a = γ·rstd``, ``k``, ``c`` (below), and ``dγ = rstd·s2``, ``dβ = s1``. With
``relu=True`` the ReLU's mask is recomputed from ``x`` (``a·x + b > 0``) instead of being read back
from the output. These memory-bound passes over conv-output-sized activations are much of a 3D ResNet's
step time on a GPU: on an H100 this took a bf16 Slow R-50 step from 40.9 to 38.8 ms (bench/RESULTS.md).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("fused", "flax")


def _stats(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-channel mean and biased variance of x [..., C] over all other axes, in float32."""
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axes)
    var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
    return mean, var


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float, relu: bool):
    """Training-mode batch norm of x [..., C] with batch statistics: (y, mean, var).

    y = γ·(x - μ)/√(σ² + ε) + β (then max(·, 0) if `relu`) in x's dtype; μ, σ² [C] float32 (σ² biased).
    scale γ and bias β are [C] float32.
    """
    return _forward(x, scale, bias, epsilon, relu)[0]


def _affine(scale, bias, mean, var, epsilon):
    """Per-channel (a, b, rstd) with BN(x) = a·x + b, rstd = 1/√(σ² + ε)."""
    rstd = jax.lax.rsqrt(var + epsilon)
    a = scale * rstd
    return a, bias - mean * a, rstd


def _normalize(x, a, b, relu: bool, dtype):
    """a·x + b (then max(·, 0) if `relu`), computed in float32, returned in `dtype`."""
    y = x.astype(jnp.float32) * a + b
    return (jnp.maximum(y, 0.0) if relu else y).astype(dtype)


def _forward(x, scale, bias, epsilon, relu):
    mean, var = _stats(x)
    a, b, rstd = _affine(scale, bias, mean, var, epsilon)
    return (_normalize(x, a, b, relu, x.dtype), mean, var), (x, scale, mean, rstd, a, b)


def _bwd(epsilon, relu, residuals, cotangents):
    del epsilon
    x, scale, mean, rstd, a, b = residuals
    dy, dmean, dvar = cotangents
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    xf = x.astype(jnp.float32)
    dyf = dy.astype(jnp.float32)
    if relu:
        dyf = jnp.where(xf * a + b > 0, dyf, 0.0)
    s1 = jnp.sum(dyf, axes)
    s2 = jnp.sum(dyf * (xf - mean), axes)
    # dx = a·dy − a·s1/n − a·rstd²·s2/n·(x−μ) + dμ/n + 2·dσ²/n·(x−μ)   (μ, σ² are outputs too)
    k = (2.0 * dvar - a * rstd * rstd * s2) / n
    c = (dmean - a * s1) / n - k * mean
    dx = (dyf * a + xf * k + c).astype(x.dtype)
    return dx, (rstd * s2).astype(scale.dtype), s1.astype(scale.dtype)


batch_norm_train.defvjp(_forward, _bwd)


class BatchNorm(nn.Module):
    """Batch norm over all axes but the last, with flax.linen.BatchNorm's variables and running averages.

    x [..., C] → [..., C] in `dtype` (default: x's). In training (``use_running_average=False``) it
    normalises with the batch statistics (over the global batch under jit: synchronised across devices)
    and updates ``batch_stats``; otherwise it uses the running averages. ``relu=True`` applies a ReLU
    to the output, fused into the same passes.
    """

    use_running_average: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = None
    relu: bool = False
    scale_init: Callable = nn.initializers.ones
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        features = x.shape[-1]
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        bias = self.param("bias", self.bias_init, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (features,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (features,))
        if self.use_running_average:
            a, b, _ = _affine(scale, bias, ra_mean.value, ra_var.value, self.epsilon)
            return _normalize(x, a, b, self.relu, dtype)
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, self.relu)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
        return y


def batch_norm(implementation: str, train: bool, dtype: Any, name: str, relu: bool = False,
               zero_scale: bool = False) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """x → BN(x) (→ ReLU) as a submodule called `name` of the calling compact module; momentum 0.9, ε 1e-5.

    `implementation` "fused" is `BatchNorm` above; "flax" is flax.linen.BatchNorm followed by nn.relu
    (same variables, autodiff backward pass), for comparison. `zero_scale` initialises γ to 0.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown batch_norm implementation {implementation!r}; valid choices: "
                         f"{', '.join(IMPLEMENTATIONS)}")
    options = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name,
                   scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones)
    if implementation == "fused":
        return BatchNorm(relu=relu, **options)
    norm = nn.BatchNorm(**options)
    return (lambda x: nn.relu(norm(x))) if relu else norm
