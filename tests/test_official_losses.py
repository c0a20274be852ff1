"""stjax's losses against PySlowFast's forms (tests/pyslowfast_losses.py, float64 PyTorch): values and gradients,
on fixed random inputs, for every ρ the official code runs and both pairings. The constants are the documented
ones: ρMoCo, ρSimCLR `consecutive` and ρSwAV `consecutive` are PySlowFast's losses exactly (factor 1); ρBYOL is
2ρ + 2T × PySlowFast's (T = 0.5: the same gradient)."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from stjax.objectives import losses
from stjax.objectives.moco import MoCo

torch = pytest.importorskip("torch")
import pyslowfast_losses as official  # noqa: E402  (tests/ is on sys.path; needs torch)

def _inputs(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _official(fn, *arrays, **kwargs):
    """(value, gradient w.r.t. the first array) of an official loss in float64."""
    tensors = [torch.tensor(a, dtype=torch.float64) for a in arrays]
    tensors[0].requires_grad_(True)
    value = fn(*tensors, **kwargs)
    value.backward()
    return float(value), tensors[0].grad.numpy()


def _ours(fn, *arrays):
    value, grad = jax.jit(jax.value_and_grad(fn))(*[jnp.asarray(a) for a in arrays])
    return float(value), np.asarray(grad)


@pytest.mark.parametrize("rho", [2, 3, 4])
def test_moco_is_pyslowfasts_loss_summed_over_the_query_clips(rho):
    q, k = _inputs(rho, (2, 6, rho, 8))
    queue = _inputs(100 + rho, (16, 8))
    queue /= np.linalg.norm(queue, axis=1, keepdims=True)  # the official queue holds normalised keys
    pairs = losses.positive_pairs(rho, "all")
    value, grad = _ours(lambda q_: losses.info_nce_loss(q_, k, queue, pairs, 0.1), q)
    ref_value, ref_grad = _official(official.moco, q, k, queue, temperature=0.1)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rho", [2, 3, 4])
def test_byol_is_an_affine_map_of_pyslowfasts_loss_with_its_gradient_at_t_half(rho):
    p, z = _inputs(10 + rho, (2, 5, rho, 8))
    value, grad = _ours(lambda p_: losses.byol_loss(p_, z, losses.positive_pairs(rho, "all")), p)
    ref_value, ref_grad = _official(official.byol, p, z, temperature=0.5)
    np.testing.assert_allclose(value, 2 * rho + 2 * 0.5 * ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rho", [2, 3, 4])
def test_simclr_consecutive_is_pyslowfasts_sum_of_pair_losses(rho):
    z = _inputs(20 + rho, (6, rho, 8))
    value, grad = _ours(lambda z_: losses.nt_xent_consecutive_loss(z_, 0.1), z)
    ref_value, ref_grad = _official(official.simclr, z, temperature=0.1)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
    general, _ = _ours(lambda z_: losses.nt_xent_loss(z_, losses.positive_pairs(rho, "all"), 0.1), z)
    if rho == 2:  # the paper's general form coincides at ρ = 2
        assert general == pytest.approx(ref_value, rel=1e-5)
    else:  # its denominators hold the video's other clips too
        assert abs(general - ref_value) > 1e-2


def test_simclr_consecutive_keeps_a_videos_non_adjacent_clips_out_of_each_others_denominators():
    """Clip 0's gradient does not depend on clip 2 in the official form; in the paper's `all` form with
    consecutive positives it does (clip 2 is in clip 0's denominator)."""
    z = _inputs(7, (4, 3, 8))
    moved = z.copy()
    moved[:, 2] = _inputs(8, (4, 8))
    consecutive = jax.jit(jax.grad(lambda a: losses.nt_xent_consecutive_loss(a, 0.1)))
    global_denominators = jax.jit(jax.grad(
        lambda a: losses.nt_xent_loss(a, losses.positive_pairs(3, "consecutive"), 0.1)))
    np.testing.assert_allclose(consecutive(z)[:, 0], consecutive(moved)[:, 0], rtol=1e-5, atol=1e-7)
    assert not np.allclose(global_denominators(z)[:, 0], global_denominators(moved)[:, 0], rtol=1e-3)


@pytest.mark.parametrize("rho", [2, 3, 4])
def test_swav_consecutive_is_pyslowfasts_sum_of_pair_losses(rho):
    rng = np.random.default_rng(30 + rho)
    x = rng.normal(size=(8, rho, 6))
    protos = rng.normal(size=(5, 6))
    scores = (x / np.linalg.norm(x, axis=-1, keepdims=True)) @ (protos / np.linalg.norm(protos, axis=-1,
                                                                                         keepdims=True)).T
    scores = scores.astype(np.float32)
    pairs = losses.positive_pairs(rho, "consecutive")
    value, grad = _ours(lambda s: losses.swav_loss(s, pairs, 0.1, 0.05, 3, reduction="per_pair"), scores)
    ref_value, ref_grad = _official(official.swav, scores, temperature=0.1, epsilon=0.05, iterations=3)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
    general, _ = _ours(lambda s: losses.swav_loss(s, losses.positive_pairs(rho, "all"), 0.1, 0.05, 3), scores)
    if rho == 2:
        assert general == pytest.approx(ref_value, rel=1e-5)


def test_pair_weights_reductions():
    pairs = losses.positive_pairs(4, "consecutive")
    np.testing.assert_allclose(losses.pair_weights(pairs, "mean").sum(), 1.0)
    np.testing.assert_allclose(losses.pair_weights(pairs, "per_query").sum(axis=1), np.ones(4))
    np.testing.assert_allclose(losses.pair_weights(pairs, "per_pair").sum(), 3.0)  # ρ − 1 pairs
    two = losses.positive_pairs(2)
    np.testing.assert_allclose(losses.pair_weights(two, "mean"), losses.pair_weights(two, "per_pair"))
    np.testing.assert_allclose(losses.pair_weights(two, "per_query"), 2 * losses.pair_weights(two, "mean"))
    with pytest.raises(ValueError, match="valid values: mean, per_query, per_pair"):
        losses.pair_weights(pairs, "sum")
    with pytest.raises(ValueError, match="symmetric"):
        losses.pair_weights(np.triu(losses.positive_pairs(3)), "per_pair")


@pytest.mark.parametrize("epsilon", [0.05, 0.02, 0.01, 0.005])
def test_sinkhorn_is_finite_and_exact_for_a_prototype_far_from_every_sample(epsilon):
    rng = np.random.default_rng(40)
    direction = rng.normal(size=8)
    direction /= np.linalg.norm(direction)
    x = direction + 0.05 * rng.normal(size=(64, 8))  # samples around one direction
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    protos = rng.normal(size=(6, 8))
    protos[0], protos[1] = -direction, direction  # prototype 0 opposite to all of them, 1 beside them
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    scores = (x @ protos.T).astype(np.float32)
    # exp(scores / ε) of column 0 is below float32's range relative to the largest for ε <= 0.02: the former
    # exp-domain Sinkhorn returned NaN there (0/0 in the first normalisation).
    assert scores[:, 0].max() < -0.95 and scores.max() > 0.99
    codes = np.asarray(jax.jit(losses.sinkhorn, static_argnums=(1, 2))(scores, epsilon, 3))
    reference = official.sinkhorn(torch.tensor(scores, dtype=torch.float64), epsilon, 3).numpy()
    assert np.isfinite(codes).all()
    np.testing.assert_allclose(codes, reference, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(codes.sum(axis=1), np.ones(len(scores)), rtol=1e-5)


def _moco_config(queue_size, batch_size, queue_fill_steps=None):
    config = ml_collections.ConfigDict(dict(
        batch_size=batch_size, rho=2,
        model=dict(backbone="r3d_micro", dtype="float32"),
        moco=dict(projector_hidden=(16,), projector_out=8, temperature=0.1, base_momentum=0.99,
                  queue_size=queue_size, bn_groups=1, pairing="all")))
    config.moco.queue_fill_steps = queue_fill_steps
    return config


@pytest.mark.parametrize("queue_len,batch_per_shard,num_shards,steps_per_epoch",
                         [(65536, 64, 8, 468), (4096, 32, 1, 50), (65536, 32, 1, 50), (8192, 64, 8, 10)])
def test_moco_queue_fill_steps_follow_pyslowfasts_rule(queue_len, batch_per_shard, num_shards, steps_per_epoch):
    batch = batch_per_shard * num_shards
    moco = MoCo(_moco_config(queue_len, batch), total_steps=10 * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    for step in range(3 * steps_per_epoch):
        epoch, cur_iter = divmod(step, steps_per_epoch)
        skipped = official.parameter_update_skipped(cur_iter, epoch + cur_iter / steps_per_epoch, queue_len,
                                                    batch_per_shard, num_shards)
        assert bool(moco.updates_params(jnp.int32(step))) is not skipped, step
    assert MoCo(_moco_config(0, batch), 100, 10.0).updates_params(jnp.int32(0)) is True  # no queue: no skip
    assert MoCo(_moco_config(queue_len, batch, 0), 100, 10.0).updates_params(jnp.int32(0)) is True
    with pytest.raises(ValueError, match="moco.queue_fill_steps"):
        MoCo(_moco_config(queue_len, batch, -1), 100, 10.0)


def test_skipped_updates_keep_parameters_and_momentum_and_advance_the_schedule():
    import optax

    from stjax.train import step as step_lib

    params = {"w": jnp.ones((3,))}
    tx = optax.sgd(optax.linear_schedule(1.0, 0.0, 10), momentum=0.9)
    opt_state = tx.init(params)
    grads = {"w": jnp.full((3,), 0.5)}
    updates, new_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    kept_params, kept_state = step_lib.skip_update_unless(jnp.bool_(False), (new_params, new_state),
                                                          (params, opt_state))
    np.testing.assert_array_equal(kept_params["w"], params["w"])
    counts = [leaf for leaf in jax.tree.leaves(kept_state) if jnp.issubdtype(leaf.dtype, jnp.integer)]
    floats = [leaf for leaf in jax.tree.leaves(kept_state) if not jnp.issubdtype(leaf.dtype, jnp.integer)]
    assert counts and all(int(c) == 1 for c in counts)
    assert floats and all(float(jnp.abs(f).max()) == 0.0 for f in floats)  # the momentum did not move
    applied_params, _ = step_lib.skip_update_unless(jnp.bool_(True), (new_params, new_state), (params, opt_state))
    assert not math.isclose(float(applied_params["w"][0]), 1.0)
