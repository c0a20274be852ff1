"""Pure loss functions on clip embeddings `[B, ρ, D]` (B videos, ρ clips each).

Nothing here knows about models, optimisers or devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

PAIRINGS = ("all", "consecutive")


def positive_pairs(rho: int, pairing: str = "all") -> np.ndarray:
    """bool [ρ, ρ]: entry (i, j) says clip j is a positive target for query clip i.

    `all`: every other clip (the paper's form); `consecutive`: clip i+1, the last
    clip pairing with the one before it ((0,1), (1,2), … as in the official code,
    symmetrised so each clip is a query). ρ = 1 pairs the clip with itself (two
    augmentations are then needed to make it meaningful, see the frameworks).
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing={pairing!r} is invalid; valid values: {', '.join(PAIRINGS)}")
    if rho < 1:
        raise ValueError(f"rho={rho} is invalid; valid values: integers >= 1")
    if rho == 1:
        return np.ones((1, 1), bool)
    if pairing == "all":
        return ~np.eye(rho, dtype=bool)
    pairs = np.zeros((rho, rho), bool)
    for i in range(rho - 1):
        pairs[i, i + 1] = pairs[i + 1, i] = True
    return pairs


def l2_normalize(x: jnp.ndarray, axis: int = -1, eps: float = 1e-12) -> jnp.ndarray:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=axis, keepdims=True), eps))


def byol_loss(predictions: jnp.ndarray, targets: jnp.ndarray, pairs: np.ndarray) -> jnp.ndarray:
    """ρBYOL loss, a scalar.

    For each query clip i: mean over its positive targets j of 2 − 2·cos(p_i, z_j);
    summed over the queries, averaged over the B videos. With ρ = 2 this is the
    symmetric BYOL loss ‖p̂₁ − ẑ₂‖² + ‖p̂₂ − ẑ₁‖².

    Args:
      predictions: online predictor outputs p, float [B, ρ, D].
      targets: target projections z, float [B, ρ, D]; no gradient flows into them.
      pairs: bool [ρ, ρ], see `positive_pairs`.
    """
    p = l2_normalize(predictions.astype(jnp.float32))
    z = l2_normalize(jax.lax.stop_gradient(targets).astype(jnp.float32))
    cos = jnp.einsum("bid,bjd->bij", p, z)  # [B, ρ, ρ]
    weights = jnp.asarray(pairs, jnp.float32)
    weights = weights / jnp.maximum(weights.sum(axis=1, keepdims=True), 1.0)
    per_video = jnp.sum(weights * (2.0 - 2.0 * cos), axis=(1, 2))
    return jnp.mean(per_video)
