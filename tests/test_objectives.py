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
