"""Pure loss functions on clip embeddings `[B, ρ, D]` (B videos, ρ clips each).

Nothing here knows about models, optimisers or devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def _pair_weights(pairs: np.ndarray) -> jnp.ndarray:
    """float [ρ, ρ]: `pairs` scaled to sum to 1, so a per-video sum over pairs is the mean over pairs."""
    weights = jnp.asarray(pairs, jnp.float32)
    return weights / jnp.maximum(weights.sum(), 1.0)


def info_nce_loss(queries: jnp.ndarray, keys: jnp.ndarray, queue: jnp.ndarray | None, pairs: np.ndarray,
                  temperature: float) -> jnp.ndarray:
    """ρMoCo InfoNCE, a scalar (nats).

    For each video b and positive pair (i, j): cross-entropy of the logits
    [q_i·k_j, q_i·n_1, …, q_i·n_K] / temperature with the positive as the class,
    all vectors L2-normalised; averaged over the pairs and the B videos. With
    ρ = 2 this is the mean of the two one-sided MoCo losses (q₁ vs k₂, q₂ vs k₁).

    The negatives n are the `queue` (MoCo v1/v2), or with `queue=None` the keys of
    the other B − 1 videos of the batch, all ρ clips of each (MoCo v3's form; the
    batch is the global one under jit on a mesh, as for NT-Xent).

    The per-pair cross-entropy is logaddexp(pos, logsumexp(neg)) − pos with the
    negatives' logsumexp computed once per query: identical to the softmax
    cross-entropy over 1 + K logits, without materialising [B, ρ, ρ, 1 + K].

    Args:
      queries: online projections q, float [B, ρ, D].
      keys: momentum-encoder projections k, float [B, ρ, D]; no gradient flows into them.
      queue: negative keys n, float [K, D], or None; no gradient flows into them.
      pairs: bool [ρ, ρ], see `positive_pairs`.
      temperature: softmax temperature (0.1 in the paper recipe).
    """
    b = queries.shape[0]
    q = l2_normalize(queries.astype(jnp.float32))
    k = l2_normalize(jax.lax.stop_gradient(keys).astype(jnp.float32))
    positive = jnp.einsum("bid,bjd->bij", q, k) / temperature                      # [B, ρ, ρ]
    if queue is None:
        if b < 2:
            raise ValueError(f"InfoNCE with the batch's keys as negatives needs >= 2 videos, got {b}")
        logits = jnp.einsum("bid,ced->bice", q, k) / temperature                   # [B, ρ, B, ρ]
        other_video = ~np.eye(b, dtype=bool)[:, None, :, None]
        negative = jax.nn.logsumexp(logits, axis=(2, 3), where=np.broadcast_to(other_video, logits.shape))
    else:
        n = l2_normalize(jax.lax.stop_gradient(queue).astype(jnp.float32))
        negative = jax.nn.logsumexp(jnp.einsum("bid,kd->bik", q, n) / temperature, axis=-1)  # [B, ρ]
    cross_entropy = jnp.logaddexp(positive, negative[:, :, None]) - positive
    return jnp.mean(jnp.sum(_pair_weights(pairs) * cross_entropy, axis=(1, 2)))


def nt_xent_loss(embeddings: jnp.ndarray, pairs: np.ndarray, temperature: float) -> jnp.ndarray:
    """ρSimCLR NT-Xent over the whole batch, a scalar (nats).

    Each of the N = B·ρ clips is an anchor; for each positive pair (i, j) of a
    video: −log softmax over the N − 1 other clips of the batch (every clip but
    the anchor itself, the other positives included) at the positive, with
    cosine-similarity logits / temperature. Averaged over the pairs and the B
    videos. With ρ = 2 this is the classic 2N-sample NT-Xent of SimCLR.

    `embeddings` is the global batch: under `jax.jit` with sharded inputs the
    similarity matrix spans all devices, so the negatives are the global batch.

    Args:
      embeddings: projections z, float [B, ρ, D].
      pairs: bool [ρ, ρ] without self-pairs (ρ ≥ 2), see `positive_pairs`.
      temperature: softmax temperature (0.1 in the paper recipe).
    """
    pairs = np.asarray(pairs, bool)
    if pairs.diagonal().any():
        raise ValueError("nt_xent_loss needs ρ >= 2 clips per video: a clip cannot be its own positive")
    b, rho, _ = embeddings.shape
    z = l2_normalize(embeddings.astype(jnp.float32)).reshape(b * rho, -1)
    logits = z @ z.T / temperature                                                  # [N, N]
    labels = jnp.einsum("bc,ij->bicj", jnp.eye(b), _pair_weights(pairs)).reshape(b * rho, b * rho)
    others = ~jnp.eye(b * rho, dtype=bool)
    return jnp.sum(optax.softmax_cross_entropy(logits, labels, where=others)) / b


def sinkhorn(scores: jnp.ndarray, epsilon: float, iterations: int) -> jnp.ndarray:
    """SwAV codes by Sinkhorn-Knopp: an equal partition of N samples over K prototypes.

    Q = exp(scores / ε), scaled to total mass 1, then `iterations` times: each
    prototype's mass ← 1/K, each sample's mass ← 1/N; finally scaled by N so each
    sample's code sums to 1 (and each prototype receives ≈ N/K, exactly in the
    limit of many iterations). Computed in float32 with no gradient. The sums
    over samples run over the whole (global) batch.

    Args:
      scores: cosine similarities of samples to prototypes, float [N, K], in [−1, 1].
      epsilon: entropic regularisation (0.05 in the paper recipe).
      iterations: Sinkhorn iterations (3 in the paper recipe).
    Returns:
      codes, float32 [N, K], rows summing to 1.
    """
    logits = jax.lax.stop_gradient(scores).astype(jnp.float32) / epsilon
    q = jnp.exp(logits - jnp.max(logits))  # a global shift, cancelled by the first normalisation
    q = q / jnp.sum(q)
    n, k = q.shape

    def normalise(_, q):
        q = q / (k * jnp.sum(q, axis=0, keepdims=True))
        return q / (n * jnp.sum(q, axis=1, keepdims=True))

    return jax.lax.fori_loop(0, iterations, normalise, q) * n


def swav_codes(scores: jnp.ndarray, epsilon: float, iterations: int,
               queue_scores: jnp.ndarray | None = None) -> jnp.ndarray:
    """SwAV codes of every clip, float32 [B, ρ, K], no gradient: `sinkhorn` run separately for
    each clip index over the B videos of the batch (as SwAV does per crop).

    With `queue_scores`, the scores of Q stored past projections are stacked before the
    batch's for each clip index, Sinkhorn partitions all Q + B samples, and the codes of
    the batch's B are returned (SwAV's queue for small batches).

    Args:
      scores: cosine similarities of normalised projections to normalised prototypes, float [B, ρ, K].
      epsilon, iterations: of `sinkhorn` (0.05 and 3 in the paper recipe).
      queue_scores: optional, float [ρ, Q, K].
    """
    b = scores.shape[0]
    if queue_scores is None:
        return jax.vmap(lambda s: sinkhorn(s, epsilon, iterations), in_axes=1, out_axes=1)(scores)

    def with_queue(s, queued):
        return sinkhorn(jnp.concatenate([queued.astype(s.dtype), s]), epsilon, iterations)[-b:]

    return jax.vmap(with_queue, in_axes=(1, 0), out_axes=1)(scores, queue_scores)


def swapped_prediction_loss(scores: jnp.ndarray, codes: jnp.ndarray, pairs: np.ndarray,
                            temperature: float) -> jnp.ndarray:
    """SwAV's swapped prediction, a scalar (nats).

    For each positive pair (i, j): −Σ_k q_j[k] · log softmax(s_i / temperature)[k],
    clip i predicting the code of clip j; averaged over the pairs and the B videos.

    Args:
      scores: float [B, ρ, K], as for `swav_codes`.
      codes: float [B, ρ, K], rows summing to 1 (`swav_codes`); no gradient flows into them.
      pairs: bool [ρ, ρ], see `positive_pairs`.
      temperature: softmax temperature of the predictions (0.1 in the paper recipe).
    """
    scores = scores.astype(jnp.float32)
    codes = jax.lax.stop_gradient(codes).astype(jnp.float32)
    cross_entropy = optax.softmax_cross_entropy(scores[:, :, None, :] / temperature, codes[:, None, :, :])
    return jnp.mean(jnp.sum(_pair_weights(pairs) * cross_entropy, axis=(1, 2)))


def swav_loss(scores: jnp.ndarray, pairs: np.ndarray, temperature: float, epsilon: float,
              iterations: int) -> jnp.ndarray:
    """ρSwAV loss, a scalar (nats): `swapped_prediction_loss` of the `swav_codes` of the batch.

    With ρ = 2 this is SwAV's two-crop loss ½(ℓ(s₁, q₂) + ℓ(s₂, q₁)).

    Args:
      scores: cosine similarities of normalised projections to normalised
        prototypes, float [B, ρ, K].
      pairs: bool [ρ, ρ], see `positive_pairs`.
      temperature: softmax temperature of the predictions (0.1 in the paper recipe).
      epsilon, iterations: of `sinkhorn` (0.05 and 3 in the paper recipe).
    """
    scores = scores.astype(jnp.float32)
    return swapped_prediction_loss(scores, swav_codes(scores, epsilon, iterations), pairs, temperature)


def mean_entropy(probabilities: jnp.ndarray) -> jnp.ndarray:
    """Mean entropy (nats) of the distributions along the last axis of `probabilities` [..., K]."""
    p = probabilities.astype(jnp.float32)
    return jnp.mean(-jnp.sum(p * jnp.log(jnp.where(p > 0, p, 1.0)), axis=-1))  # 0 · log 0 = 0
