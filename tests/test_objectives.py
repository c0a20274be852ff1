"""Losses against straightforward NumPy, and the momentum schedule and EMA against their formulas."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax.objectives import losses, schedules


def _numpy_byol(p, z, pairs):
    """Loop form: for each video and query i, mean over positives j of 2 − 2 cos(p_i, z_j), summed over i."""
    total = 0.0
    for b in range(p.shape[0]):
        for i in range(p.shape[1]):
            terms = []
            for j in range(p.shape[1]):
                if pairs[i, j]:
                    cos = p[b, i] @ z[b, j] / (np.linalg.norm(p[b, i]) * np.linalg.norm(z[b, j]))
                    terms.append(2 - 2 * cos)
            total += np.mean(terms)
    return total / p.shape[0]


@pytest.mark.parametrize("rho", [2, 3, 4])
@pytest.mark.parametrize("pairing", ["all", "consecutive"])
def test_byol_loss_matches_numpy(rho, pairing):
    rng = np.random.default_rng(rho)
    p, z = rng.normal(size=(2, 5, rho, 7)).astype(np.float32)
    pairs = losses.positive_pairs(rho, pairing)
    np.testing.assert_allclose(losses.byol_loss(p, z, pairs), _numpy_byol(p, z, pairs), rtol=1e-5)


def test_byol_rho2_is_the_symmetric_image_loss():
    rng = np.random.default_rng(0)
    p, z = rng.normal(size=(2, 6, 2, 8)).astype(np.float32)

    def mse_normalized(a, b):
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        b = b / np.linalg.norm(b, axis=-1, keepdims=True)
        return np.sum((a - b) ** 2, axis=-1)

    image_form = np.mean(mse_normalized(p[:, 0], z[:, 1]) + mse_normalized(p[:, 1], z[:, 0]))
    np.testing.assert_allclose(losses.byol_loss(p, z, losses.positive_pairs(2)), image_form, rtol=1e-5)


def test_byol_loss_is_invariant_to_batch_order_and_stops_target_gradients():
    rng = np.random.default_rng(1)
    p, z = rng.normal(size=(2, 8, 3, 5)).astype(np.float32)
    pairs = losses.positive_pairs(3)
    perm = rng.permutation(8)
    np.testing.assert_allclose(losses.byol_loss(p, z, pairs), losses.byol_loss(p[perm], z[perm], pairs), rtol=1e-6)
    grad_z = jax.grad(lambda z_: losses.byol_loss(jnp.asarray(p), z_, pairs))(jnp.asarray(z))
    assert float(jnp.abs(grad_z).max()) == 0.0


def test_positive_pairs():
    assert losses.positive_pairs(3, "all").tolist() == [[False, True, True], [True, False, True], [True, True, False]]
    assert losses.positive_pairs(4, "consecutive").sum(axis=1).tolist() == [1, 2, 2, 1]
    with pytest.raises(ValueError, match="valid values: all, consecutive"):
        losses.positive_pairs(2, "every")


def test_cosine_momentum_and_ema_follow_their_formulas():
    total = 100
    for step in [0, 1, 25, 50, 99, 100, 150]:
        expected = 1 - (1 - 0.996) * (math.cos(math.pi * min(step, total) / total) + 1) / 2
        assert float(schedules.cosine_momentum(0.996, step, total)) == pytest.approx(expected, abs=1e-7)
    assert float(schedules.cosine_momentum(0.996, 0, total)) == pytest.approx(0.996)
    assert float(schedules.cosine_momentum(0.996, total, total)) == pytest.approx(1.0)
    target = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    online = {"w": jnp.array([0.0, 4.0]), "b": jnp.array(-1.0)}
    out = schedules.ema_update(target, online, 0.9)
    np.testing.assert_allclose(out["w"], [0.9, 2.2], rtol=1e-6)
    np.testing.assert_allclose(out["b"], 2.6, rtol=1e-6)


# ----------------------------------------------------------------------------- ρMoCo, ρSimCLR, ρSwAV losses
# NumPy references in float64 with explicit loops over videos, clips and pairs. The losses are called
# jitted (one compilation is ~5× faster on CPU than running their many small ops eagerly).

def _info_nce(q, k, queue, pairs, temperature=0.1):
    return jax.jit(lambda *a: losses.info_nce_loss(*a, pairs, temperature))(q, k, queue)


def _nt_xent(z, pairs, temperature=0.1):
    return jax.jit(lambda a: losses.nt_xent_loss(a, pairs, temperature))(z)


def _swav(scores, pairs, temperature=0.1, epsilon=0.05, iterations=3):
    return jax.jit(lambda a: losses.swav_loss(a, pairs, temperature, epsilon, iterations))(scores)


def _unit(x):
    return x / np.linalg.norm(x)


def _log_sum_exp(values):
    values = np.asarray(values, np.float64)
    top = values.max()
    return top + np.log(np.sum(np.exp(values - top)))


def _numpy_info_nce(q, k, queue, pairs, temperature):
    """Mean over videos of: for each query clip i the mean over its positives j of
    −log softmax([q_i·k_j, q_i·n_1, …]/T)[0], summed over i; the negatives n are the queue, or (queue None)
    every clip's key of the other videos."""
    per_video = []
    for b in range(q.shape[0]):
        negatives = queue if queue is not None else [k[c, l] for c in range(q.shape[0]) if c != b
                                                     for l in range(q.shape[1])]
        total = 0.0
        for i in range(q.shape[1]):
            terms = []
            for j in range(q.shape[1]):
                if pairs[i, j]:
                    query = _unit(q[b, i])
                    logits = [query @ _unit(k[b, j])] + [query @ _unit(n) for n in negatives]
                    logits = np.array(logits) / temperature
                    terms.append(_log_sum_exp(logits) - logits[0])
            total += np.mean(terms)
        per_video.append(total)
    return np.mean(per_video)


def _numpy_nt_xent(z, pairs, temperature):
    """Mean over anchors (b, i) and their positives j of −log(exp(s_ap) / Σ_{c ≠ a} exp(s_ac))."""
    b_size, rho = z.shape[:2]
    flat = [_unit(z[b, i]) for b in range(b_size) for i in range(rho)]
    terms = []
    for b in range(b_size):
        for i in range(rho):
            anchor = b * rho + i
            others = [flat[anchor] @ flat[c] / temperature for c in range(len(flat)) if c != anchor]
            for j in range(rho):
                if pairs[i, j]:
                    terms.append(_log_sum_exp(others) - flat[anchor] @ flat[b * rho + j] / temperature)
    return np.mean(terms)


def _numpy_sinkhorn(scores, epsilon, iterations):
    """SwAV's algorithm in its own [K, N] layout, normalising prototype rows and sample columns by loops."""
    q = np.exp(np.asarray(scores, np.float64) / epsilon).T
    q /= q.sum()
    k, n = q.shape
    for _ in range(iterations):
        for row in range(k):
            q[row] /= q[row].sum() * k
        for col in range(n):
            q[:, col] /= q[:, col].sum() * n
    return (q * n).T


def _numpy_softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _numpy_swav(scores, pairs, temperature, epsilon, iterations):
    """Codes per clip index over the batch; mean over videos and pairs (i, j) of −Σ q_j log softmax(s_i / T)."""
    codes = np.stack([_numpy_sinkhorn(scores[:, i], epsilon, iterations) for i in range(scores.shape[1])], axis=1)
    terms = []
    for b in range(scores.shape[0]):
        for i in range(scores.shape[1]):
            for j in range(scores.shape[1]):
                if pairs[i, j]:
                    terms.append(-np.sum(codes[b, j] * np.log(_numpy_softmax(scores[b, i] / temperature))))
    return np.mean(terms)


def _cosine_scores(rng, shape, num_prototypes):
    z = rng.normal(size=shape)
    protos = rng.normal(size=(num_prototypes, shape[-1]))
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    protos /= np.linalg.norm(protos, axis=-1, keepdims=True)
    return (z @ protos.T).astype(np.float32)


@pytest.mark.parametrize("rho", [3, 4])  # ρ = 2: test_rho2_losses_are_the_image_framework_losses
@pytest.mark.parametrize("pairing", ["all", "consecutive"])
def test_contrastive_losses_match_numpy(rho, pairing):
    rng = np.random.default_rng(10 + rho)
    q, k = rng.normal(size=(2, 5, rho, 6)).astype(np.float32)
    queue = rng.normal(size=(7, 6)).astype(np.float32)
    pairs = losses.positive_pairs(rho, pairing)
    np.testing.assert_allclose(_info_nce(q, k, queue, pairs), _numpy_info_nce(q, k, queue, pairs, 0.1), rtol=1e-5)
    np.testing.assert_allclose(_info_nce(q, k, None, pairs), _numpy_info_nce(q, k, None, pairs, 0.1), rtol=1e-5)
    np.testing.assert_allclose(_nt_xent(q, pairs), _numpy_nt_xent(q, pairs, 0.1), rtol=1e-5)
    scores = _cosine_scores(rng, (6, rho, 5), num_prototypes=4)
    np.testing.assert_allclose(_swav(scores, pairs), _numpy_swav(scores, pairs, 0.1, 0.05, 3), rtol=1e-5)


def test_sinkhorn_matches_numpy_and_has_equal_partition_marginals():
    rng = np.random.default_rng(3)
    n, k = 48, 12
    scores = _cosine_scores(rng, (n, 8), num_prototypes=k)
    codes = jax.jit(losses.sinkhorn, static_argnums=(1, 2))(scores, 0.05, 3)
    assert codes.dtype == jnp.float32
    np.testing.assert_allclose(codes, _numpy_sinkhorn(scores, 0.05, 3), rtol=1e-4, atol=1e-7)
    # Each sample's code is a distribution (exact: the last normalisation); each prototype receives
    # N/K in the limit, the deviation shrinking with every iteration (after 3 it is still ~40% here).
    deviations = []
    for iterations in (1, 3, 10, 30, 100):
        codes = jax.jit(losses.sinkhorn, static_argnums=(1, 2))(scores, 0.05, iterations)
        np.testing.assert_allclose(codes.sum(axis=1), np.ones(n), rtol=1e-5)
        deviations.append(float(jnp.max(jnp.abs(codes.sum(axis=0) / (n / k) - 1))))
    assert deviations == sorted(deviations, reverse=True) and deviations[-1] < 1e-5, deviations
    grads = jax.grad(lambda s: jnp.sum(losses.sinkhorn(s, 0.05, 3) * jnp.arange(k)))(jnp.asarray(scores))
    assert float(jnp.abs(grads).max()) == 0.0
    half = losses.sinkhorn(jnp.asarray(scores, jnp.bfloat16), 0.05, 3)
    assert half.dtype == jnp.float32


def test_rho2_losses_are_the_image_framework_losses():
    rng = np.random.default_rng(4)
    n, t = 6, 0.1
    z = rng.normal(size=(n, 2, 8)).astype(np.float32)
    k = rng.normal(size=(n, 2, 8)).astype(np.float32)
    queue = rng.normal(size=(9, 8)).astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    for pairing in ("all", "consecutive"):
        pairs = losses.positive_pairs(2, pairing)

        # SimCLR: the classic 2N-sample NT-Xent on views [x₁; x₂] with positives i ↔ i ± N.
        out = unit(np.concatenate([z[:, 0], z[:, 1]]).astype(np.float64))
        sim = np.exp(out @ out.T / t)
        denominator = sim.sum(axis=1) - np.diag(sim)
        positive = np.exp(np.sum(out[:n] * out[n:], axis=1) / t)
        classic = np.mean(-np.log(np.concatenate([positive, positive]) / denominator))
        np.testing.assert_allclose(_nt_xent(z, pairs, t), classic, rtol=1e-5)

        # MoCo: the sum of the two one-sided InfoNCE losses, q₁ against k₂ and q₂ against k₁ (PySlowFast's).
        def one_sided(q_view, k_view):
            q_, k_, n_ = (unit(v.astype(np.float64)) for v in (q_view, k_view, queue))
            logits = np.concatenate([np.sum(q_ * k_, axis=1, keepdims=True), q_ @ n_.T], axis=1) / t
            log_prob = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            return -np.mean(log_prob[:, 0])

        symmetric = one_sided(z[:, 0], k[:, 1]) + one_sided(z[:, 1], k[:, 0])
        np.testing.assert_allclose(_info_nce(z, k, queue, pairs, t), symmetric, rtol=1e-5)

        # SwAV: the two-crop swapped prediction ½(ℓ(s₁, q₂) + ℓ(s₂, q₁)).
        scores = _cosine_scores(rng, (n, 2, 8), num_prototypes=5)
        q1, q2 = (_numpy_sinkhorn(scores[:, v], 0.05, 3) for v in (0, 1))
        log_p1, log_p2 = (np.log(np.stack([_numpy_softmax(s / t) for s in scores[:, v]])) for v in (0, 1))
        two_crop = np.mean(-np.sum(q2 * log_p1, axis=1) - np.sum(q1 * log_p2, axis=1)) / 2
        np.testing.assert_allclose(_swav(scores, pairs, t), two_crop, rtol=1e-5)


def test_new_losses_are_invariant_to_batch_order_and_route_gradients():
    rng = np.random.default_rng(5)
    q, k = rng.normal(size=(2, 8, 3, 6)).astype(np.float32)
    queue = rng.normal(size=(10, 6)).astype(np.float32)
    scores = _cosine_scores(rng, (8, 3, 6), num_prototypes=5)
    pairs = losses.positive_pairs(3)
    perm = rng.permutation(8)
    np.testing.assert_allclose(_info_nce(q, k, queue, pairs), _info_nce(q[perm], k[perm], queue, pairs), rtol=1e-6)
    np.testing.assert_allclose(_info_nce(q, k, None, pairs), _info_nce(q[perm], k[perm], None, pairs), rtol=1e-6)
    np.testing.assert_allclose(_nt_xent(q, pairs), _nt_xent(q[perm], pairs), rtol=1e-6)
    np.testing.assert_allclose(_swav(scores, pairs), _swav(scores[perm], pairs), rtol=1e-6)
    grad_k, grad_queue = jax.jit(jax.grad(lambda k_, n_: losses.info_nce_loss(q, k_, n_, pairs, 0.1),
                                          argnums=(0, 1)))(k, queue)
    assert float(jnp.abs(grad_k).max()) == 0.0 and float(jnp.abs(grad_queue).max()) == 0.0
    for grad in (jax.jit(jax.grad(lambda z: losses.nt_xent_loss(z, pairs, 0.1)))(q),
                 jax.jit(jax.grad(lambda s: losses.swav_loss(s, pairs, 0.1, 0.05, 3)))(scores)):
        assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0.0
    with pytest.raises(ValueError, match="needs ρ >= 2 clips"):
        losses.nt_xent_loss(q[:, :1], losses.positive_pairs(1), 0.1)


def test_swav_codes_with_a_queue_are_the_batch_rows_of_sinkhorn_over_queue_and_batch():
    rng = np.random.default_rng(21)
    b, rho, q_len, k = 4, 3, 10, 6
    scores = _cosine_scores(rng, (b, rho, 8), num_prototypes=k)
    queue_scores = _cosine_scores(rng, (rho, q_len, 8), num_prototypes=k)
    codes = jax.jit(lambda s, q: losses.swav_codes(s, 0.05, 3, q))(scores, queue_scores)
    for i in range(rho):
        expected = _numpy_sinkhorn(np.concatenate([queue_scores[i], scores[:, i]]), 0.05, 3)[-b:]
        np.testing.assert_allclose(codes[:, i], expected, rtol=1e-4, atol=1e-7)
        assert not np.allclose(codes[:, i], _numpy_sinkhorn(scores[:, i], 0.05, 3), atol=1e-3)
    np.testing.assert_allclose(codes.sum(axis=-1), np.ones((b, rho)), rtol=1e-5)


def test_mean_entropy_in_nats():
    uniform, one_hot = np.full((3, 5), 0.2), np.eye(5)[:3]
    half = np.array([[0.5, 0.5, 0.0, 0.0]])
    assert float(losses.mean_entropy(uniform)) == pytest.approx(np.log(5), rel=1e-6)
    assert float(losses.mean_entropy(one_hot)) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.mean_entropy(np.concatenate([half, half]))) == pytest.approx(np.log(2), rel=1e-6)
