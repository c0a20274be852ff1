"""Pure loss functions on clip embeddings `[B, ρ, D]` (B videos, ρ clips each).

Nothing here knows about models, optimisers or devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

PAIRINGS = ("all", "consecutive")
REDUCTIONS = ("mean", "per_query", "per_pair")


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


def pair_weights(pairs: np.ndarray, reduction: str) -> np.ndarray:
    """float64 [ρ, ρ]: the weight of each (query i, positive j) loss term in a video's loss, a weighted sum.

      mean       the mean over the positive pairs (the paper's general form);
      per_query  each query clip's mean over its positives, summed over the ρ queries (PySlowFast's
                 ρBYOL and ρMoCo: one loss per query clip averaging its ρ − 1 keys, the ρ losses summed);
      per_pair   the mean of each unordered pair's two directions, summed over the pairs (PySlowFast's
                 ρSwAV: one two-clip loss per consecutive pair, the ρ − 1 losses summed).

    At ρ = 2 `mean` and `per_pair` coincide and `per_query` is twice them (a sum over the two queries).
    `pairs` must be symmetric for `per_pair`.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is invalid; valid values: {', '.join(REDUCTIONS)}")
    weights = np.asarray(pairs, np.float64)
    if reduction == "mean":
        return weights / max(weights.sum(), 1.0)
    if reduction == "per_query":
        return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
    if not np.array_equal(weights, weights.T):
        raise ValueError("reduction='per_pair' needs symmetric pairs (each pair in both directions)")
    return weights / (1.0 if weights.shape[0] == 1 else 2.0)


def l2_normalize(x: jnp.ndarray, axis: int = -1, eps: float = 1e-12) -> jnp.ndarray:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=axis, keepdims=True), eps))


def byol_loss(predictions: jnp.ndarray, targets: jnp.ndarray, pairs: np.ndarray) -> jnp.ndarray:
    """ρBYOL loss, a scalar.

    For each query clip i: mean over its positive targets j of 2 − 2·cos(p_i, z_j);
    summed over the queries, averaged over the B videos. With ρ = 2 this is the
    symmetric BYOL loss ‖p̂₁ − ẑ₂‖² + ‖p̂₂ − ẑ₁‖².

    PySlowFast's ρBYOL (its `all` pairing, every other clip) computes, per query, −mean(p̂·ẑ)/T
    (T = 0.5): this loss is 2ρ + 2T × that one, the same gradient at the official T = 0.5.

    Args:
      predictions: online predictor outputs p, float [B, ρ, D].
      targets: target projections z, float [B, ρ, D]; no gradient flows into them.
      pairs: bool [ρ, ρ], see `positive_pairs`.
    """
    p = l2_normalize(predictions.astype(jnp.float32))
    z = l2_normalize(jax.lax.stop_gradient(targets).astype(jnp.float32))
    cos = jnp.einsum("bid,bjd->bij", p, z)  # [B, ρ, ρ]
    weights = jnp.asarray(pair_weights(pairs, "per_query"), jnp.float32)
    per_video = jnp.sum(weights * (2.0 - 2.0 * cos), axis=(1, 2))
    return jnp.mean(per_video)


def info_nce_loss(queries: jnp.ndarray, keys: jnp.ndarray, queue: jnp.ndarray | None, pairs: np.ndarray,
                  temperature: float) -> jnp.ndarray:
    """ρMoCo InfoNCE, a scalar (nats).

    For each video b and positive pair (i, j): cross-entropy of the logits
    [q_i·k_j, q_i·n_1, …, q_i·n_K] / temperature with the positive as the class,
    all vectors L2-normalised; for each query clip i the mean over its positives
    j, summed over the ρ queries, averaged over the B videos (`pair_weights`
    'per_query'). This is PySlowFast's ρMoCo exactly (one loss per query clip,
    each the mean over its ρ − 1 keys and the batch, the ρ losses summed); with
    ρ = 2 it is the sum of the two one-sided MoCo losses (q₁ vs k₂, q₂ vs k₁).

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
    weights = jnp.asarray(pair_weights(pairs, "per_query"), jnp.float32)
    return jnp.mean(jnp.sum(weights * cross_entropy, axis=(1, 2)))


def nt_xent_loss(embeddings: jnp.ndarray, pairs: np.ndarray, temperature: float) -> jnp.ndarray:
    """ρSimCLR NT-Xent over the whole batch, a scalar (nats).

    Each of the N = B·ρ clips is an anchor; for each positive pair (i, j) of a
    video: −log softmax over the N − 1 other clips of the batch (every clip but
    the anchor itself, the other positives included) at the positive, with
    cosine-similarity logits / temperature. Averaged over the pairs and the B
    videos. With ρ = 2 this is the classic 2N-sample NT-Xent of SimCLR; for
    ρ > 2 with every other clip as positive it is the paper's general form
    (`simclr.pairing=all`). PySlowFast's form is `nt_xent_consecutive_loss`.

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
    weights = jnp.asarray(pair_weights(pairs, "mean"), jnp.float32)
    labels = jnp.einsum("bc,ij->bicj", jnp.eye(b), weights).reshape(b * rho, b * rho)
    others = ~jnp.eye(b * rho, dtype=bool)
    return jnp.sum(optax.softmax_cross_entropy(logits, labels, where=others)) / b


def nt_xent_consecutive_loss(embeddings: jnp.ndarray, temperature: float) -> jnp.ndarray:
    """ρSimCLR as PySlowFast computes it (`simclr.pairing=consecutive`), a scalar (nats).

    For each consecutive pair of clips (k, k+1), k = 0 … ρ−2: the classic 2B-sample NT-Xent of the B
    videos' clips k and k+1 (`nt_xent_loss` at ρ = 2: each clip's negatives are the other 2B − 2 clips
    of that pair of clip indices, never the video's other clips); the ρ − 1 pair losses summed. At
    ρ = 2 it equals `nt_xent_loss`.

    Args:
      embeddings: projections z, float [B, ρ, D], ρ ≥ 2.
      temperature: softmax temperature (0.1 in the paper recipe).
    """
    rho = embeddings.shape[1]
    if rho < 2:
        raise ValueError("nt_xent_consecutive_loss needs ρ >= 2 clips per video: a clip cannot be its own positive")
    pairs = jnp.stack([embeddings[:, :-1], embeddings[:, 1:]], axis=2)              # [B, ρ−1, 2, D]
    per_pair = jax.vmap(lambda z: nt_xent_loss(z, positive_pairs(2), temperature), in_axes=1)(pairs)
    return jnp.sum(per_pair)


def sinkhorn(scores: jnp.ndarray, epsilon: float, iterations: int) -> jnp.ndarray:
    """SwAV codes by Sinkhorn-Knopp: an equal partition of N samples over K prototypes.

    Q = exp(scores / ε), scaled to total mass 1, then `iterations` times: each
    prototype's mass ← 1/K, each sample's mass ← 1/N; finally scaled by N so each
    sample's code sums to 1 (and each prototype receives ≈ N/K, exactly in the
    limit of many iterations). Computed in float32 with no gradient. The sums
    over samples run over the whole (global) batch.

    The iterations run on log Q (the normalisations become logsumexp shifts), so
    no exp under- or overflows: any ε > 0 works, also where a prototype is far from
    every sample (scores / ε ≪ 0 for a whole column), which with exp(scores / ε)
    in float32 gives 0/0 from ε ≈ 0.02 on.

    Args:
      scores: cosine similarities of samples to prototypes, float [N, K], in [−1, 1].
      epsilon: entropic regularisation (0.05 in the paper recipe).
      iterations: Sinkhorn iterations (3 in the paper recipe).
    Returns:
      codes, float32 [N, K], rows summing to 1.
    """
    log_q = jax.lax.stop_gradient(scores).astype(jnp.float32) / epsilon
    log_q = log_q - jax.nn.logsumexp(log_q)  # total mass 1
    n, k = log_q.shape

    def normalise(_, log_q):
        log_q = log_q - jax.nn.logsumexp(log_q, axis=0, keepdims=True) - jnp.log(k)   # prototypes: 1/K each
        return log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - jnp.log(n)  # samples: 1/N each

    return jnp.exp(jax.lax.fori_loop(0, iterations, normalise, log_q)) * n


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
                            temperature: float, reduction: str = "mean") -> jnp.ndarray:
    """SwAV's swapped prediction, a scalar (nats).

    For each positive pair (i, j): −Σ_k q_j[k] · log softmax(s_i / temperature)[k],
    clip i predicting the code of clip j; combined over the pairs as `reduction`
    says (`pair_weights`: 'mean' over the pairs, or 'per_pair', PySlowFast's sum
    over consecutive pairs of each pair's two-clip loss), averaged over the B videos.

    Args:
      scores: float [B, ρ, K], as for `swav_codes`.
      codes: float [B, ρ, K], rows summing to 1 (`swav_codes`); no gradient flows into them.
      pairs: bool [ρ, ρ], see `positive_pairs`.
      temperature: softmax temperature of the predictions (0.1 in the paper recipe).
    """
    scores = scores.astype(jnp.float32)
    codes = jax.lax.stop_gradient(codes).astype(jnp.float32)
    cross_entropy = optax.softmax_cross_entropy(scores[:, :, None, :] / temperature, codes[:, None, :, :])
    weights = jnp.asarray(pair_weights(pairs, reduction), jnp.float32)
    return jnp.mean(jnp.sum(weights * cross_entropy, axis=(1, 2)))


def swav_loss(scores: jnp.ndarray, pairs: np.ndarray, temperature: float, epsilon: float,
              iterations: int, reduction: str = "mean") -> jnp.ndarray:
    """ρSwAV loss, a scalar (nats): `swapped_prediction_loss` of the `swav_codes` of the batch.

    With ρ = 2 this is SwAV's two-crop loss ½(ℓ(s₁, q₂) + ℓ(s₂, q₁)).

    Args:
      scores: cosine similarities of normalised projections to normalised
        prototypes, float [B, ρ, K].
      pairs: bool [ρ, ρ], see `positive_pairs`.
      temperature: softmax temperature of the predictions (0.1 in the paper recipe).
      epsilon, iterations: of `sinkhorn` (0.05 and 3 in the paper recipe).
      reduction: over the pairs, see `swapped_prediction_loss`.
    """
    scores = scores.astype(jnp.float32)
    return swapped_prediction_loss(scores, swav_codes(scores, epsilon, iterations), pairs, temperature, reduction)


def mean_entropy(probabilities: jnp.ndarray) -> jnp.ndarray:
    """Mean entropy (nats) of the distributions along the last axis of `probabilities` [..., K]."""
    p = probabilities.astype(jnp.float32)
    return jnp.mean(-jnp.sum(p * jnp.log(jnp.where(p > 0, p, 1.0)), axis=-1))  # 0 · log 0 = 0
