"""ρMoCo, ρSimCLR and ρSwAV as plug-ins: real jitted train steps through stjax.train on the fake-device mesh.

Tiny everything (r3d_micro, 2×16² clips, 32-wide heads, a 40-key queue, 10
prototypes) so that the file runs in about a minute on 2 CPU cores. Keys are
`rbg` keys: XLA:CPU compiles the default threefry initialisers of a backbone
~7× more slowly, and the objectives do not depend on the PRNG implementation.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from stjax import models, objectives
from stjax.objectives import base, losses
from stjax.train import mesh as mesh_lib
from stjax.train import optimizer as optimizer_lib
from stjax.train import step as step_lib
from stjax.train.state import StateFactory

CLIPS_SHAPE = (8, 2, 2, 16, 16, 3)
QUEUE = 40  # not a multiple of the 16 keys per step, so writes wrap mid-step


def _key(seed):
    return jax.random.key(seed, impl="rbg")


def _config(framework, **overrides):
    config = ml_collections.ConfigDict(dict(
        seed=0, framework=framework, rho=2, batch_size=8,
        model=dict(backbone="r3d_micro"),
        moco=dict(projector_hidden=(32, 32), projector_out=16, temperature=0.1, base_momentum=0.99,
                  queue_size=QUEUE, bn_groups=2, pairing="all"),
        simclr=dict(projector_hidden=(32, 32), projector_out=16, temperature=0.1, pairing="all"),
        swav=dict(projector_hidden=(32, 32), projector_out=16, num_prototypes=10, temperature=0.1, epsilon=0.05,
                  sinkhorn_iterations=3, freeze_prototypes_epochs=1.0, pairing="all"),
        optimizer=dict(name="lars", base_lr=48.0, base_batch_size=512, warmup_epochs=0.0, weight_decay=1e-6,
                       momentum=0.9, nesterov=True, trust_coefficient=0.001),
    ))
    config.update(overrides)
    return config


def _batch(seed):
    rng = np.random.default_rng(seed)
    return {"clips": rng.integers(0, 256, size=CLIPS_SHAPE, dtype=np.uint8)}


def _train_setup(config, mesh, state=None, steps_per_epoch=2, total_steps=10):
    """(framework, state on `mesh`, jitted generic train step); `state` (from another mesh) is moved over."""
    framework = objectives.create_framework(config, total_steps, steps_per_epoch)
    tx, _ = optimizer_lib.create_optimizer(config, config.batch_size, total_steps, steps_per_epoch)
    factory = StateFactory(framework, tx, CLIPS_SHAPE, mesh)
    state = factory.create(_key(0)) if state is None else jax.device_put(state, factory.shardings)
    step = step_lib.jit_train_step(framework, tx, factory.shardings, mesh_lib.batch_sharding(mesh),
                                   mesh_lib.replicated_sharding(mesh))
    return framework, state, step


def _on(mesh, batch):
    return jax.device_put(batch, mesh_lib.batch_sharding(mesh))


def _assert_trees_close(a, b, rtol=1e-4, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_registry_and_construction_errors():
    assert sorted(objectives.FRAMEWORKS) == ["byol", "cmd", "detection", "dsm", "moco", "simclr", "supervised",
                                            "swav"]
    objectives.create_framework(_config("byol", byol=dict(projector_hidden=(8,), projector_out=4,
                                                          predictor_hidden=(8,), base_momentum=0.99,
                                                          pairing="all")), total_steps=10)
    objectives.create_framework(_config("simclr"), total_steps=10)  # total_steps alone still works
    with pytest.raises(ValueError, match="swav.freeze_prototypes_epochs=1.0 needs the epoch length"):
        objectives.create_framework(_config("swav"), total_steps=10)
    objectives.create_framework(_config("swav"), 10, steps_per_epoch=2)
    config = _config("swav")
    config.swav.queue_size = 4
    with pytest.raises(ValueError, match="swav.queue_size=4 is invalid; valid values: 0 .no queue. or integers >= "
                                         "the batch size 8"):
        objectives.create_framework(config, 10, 2)
    for framework in ("moco", "simclr", "swav"):
        config = _config(framework)
        config[framework].pairing = "every"
        with pytest.raises(ValueError, match=f"{framework}.pairing='every' is invalid; valid values: all, consecutive"):
            objectives.create_framework(config, 10, 2)
    config = _config("moco")
    config.moco.bn_groups = 3
    with pytest.raises(ValueError, match="moco.bn_groups=3 is invalid; valid values: divisors of the batch size 8: "
                                         "1, 2, 4, 8"):
        objectives.create_framework(config, 10)
    config = _config("moco")
    config.moco.queue_size = 12
    with pytest.raises(ValueError,
                       match=r"moco.queue_size=12 is invalid; valid values: 0 \(negatives from the batch\) or "
                             "integers >= batch_size·ρ = 16"):
        objectives.create_framework(config, 10)
    config = _config("moco", batch_size=1)
    config.moco.update(queue_size=0, bn_groups=1)
    with pytest.raises(ValueError, match="batch_size=1 is invalid; valid values: integers >= 2 when moco.queue_size=0"):
        objectives.create_framework(config, 10)


def test_swav_prototypes_frozen_for_the_whole_run():
    """freeze_prototypes_epochs=inf needs no epoch length and gives the prototypes no gradient at any step."""
    config = _config("swav")
    config.swav.freeze_prototypes_epochs = math.inf
    framework = objectives.create_framework(config, total_steps=10)
    clips = jax.random.normal(_key(0), CLIPS_SHAPE)
    params, batch_stats, extra = jax.jit(framework.init)(_key(1), clips)
    grad = jax.jit(jax.grad(lambda p, step: framework.loss(p, batch_stats, extra, clips, None, step)[0]))
    for step in (0, 10**6):
        grads = grad(params, jnp.int32(step))
        assert float(jnp.abs(grads["prototypes"]["kernel"]).max()) == 0.0
        assert float(jnp.abs(grads["projector"]["out"]["kernel"]).max()) > 0.0


def test_prototypes_are_unit_norm_and_scale_free():
    head = models.Prototypes(num_prototypes=5)
    x = jax.random.normal(_key(0), (4, 6))
    params = head.init(_key(1), x)["params"]
    kernel = params["kernel"]
    unit = kernel / jnp.linalg.norm(kernel, axis=0, keepdims=True)
    np.testing.assert_allclose(head.apply({"params": params}, x), x @ unit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head.apply({"params": {"kernel": 3.0 * kernel}}, x), x @ unit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(models.normalized_prototypes(kernel), axis=0), np.ones(5), rtol=1e-6)


class _DenseBN(nn.Module):
    """A toy 'backbone': flatten → Dense → BatchNorm, so BN statistics are visible in the output."""

    @nn.compact
    def __call__(self, x, train):
        x = nn.Dense(5)(x.reshape(x.shape[0], -1))
        return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)


def test_group_stats_normalise_each_group_on_its_own():
    module = _DenseBN()
    x = jax.random.normal(_key(0), (12, 3))
    params, stats, _ = base.init_variables(module, _key(1), x)
    out, new_stats = base.apply_with_group_stats(module, params, stats, x, groups=3)
    per_group = [base.apply_with_stats(module, params, stats, x[4 * g:4 * (g + 1)], True) for g in range(3)]
    np.testing.assert_allclose(out, jnp.concatenate([o for o, _ in per_group]), rtol=1e-5, atol=1e-6)
    mean_update = jax.tree.map(lambda *s: sum(s) / 3, *[s for _, s in per_group])
    _assert_trees_close(new_stats, mean_update, rtol=1e-5)
    global_out, _ = base.apply_with_group_stats(module, params, stats, x, groups=1)
    assert float(jnp.abs(global_out - out).max()) > 1e-3


def test_moco_keys_use_bn_statistics_of_shuffled_groups():
    """Each key is the key encoder's output for its own clip, normalised over the group of clips that the
    step's permutation put it in; the queries are normalised over contiguous blocks of videos."""
    framework = objectives.create_framework(_config("moco", moco=dict(
        projector_hidden=(6,), projector_out=4, temperature=0.1, base_momentum=0.99, queue_size=QUEUE,
        bn_groups=2, pairing="all")), total_steps=10)
    framework.backbone = _DenseBN()
    clips = jax.random.normal(_key(0), (8, 2, 3))
    params, batch_stats, extra = framework.init(_key(1), clips)
    rng = _key(2)
    keys, _ = framework.encode_keys(extra["target"], clips, rng)
    perm = np.asarray(jax.random.permutation(rng, 16))
    x = clips.reshape(16, 3)
    expected = np.zeros((16, 4), np.float32)
    for group in (perm[:8], perm[8:]):
        feats, _ = base.apply_with_stats(framework.backbone, params["backbone"], batch_stats["backbone"], x[group],
                                         True)
        out = framework.projector.apply({"params": params["projector"]}, feats, train=True)
        expected[group] = losses.l2_normalize(out)
    np.testing.assert_allclose(keys.reshape(16, 4), expected, rtol=1e-5, atol=1e-6)
    blocks = [set(range(8)), set(range(8, 16))]
    assert set(perm[:8].tolist()) not in blocks  # this draw: key groups differ from the query blocks
    queries, _ = framework._encode(params, batch_stats, x)
    for block in (slice(0, 8), slice(8, 16)):
        feats, _ = base.apply_with_stats(framework.backbone, params["backbone"], batch_stats["backbone"], x[block],
                                         True)
        np.testing.assert_allclose(queries[block], framework.projector.apply({"params": params["projector"]}, feats,
                                                                             train=True), rtol=1e-5, atol=1e-6)
    other, _ = framework.encode_keys(extra["target"], clips, _key(3))
    assert float(jnp.abs(other - keys).max()) > 1e-4  # a different shuffle, different statistics
    # Groups are positions in the global batch, so the loss does not depend on the number of devices.
    loss = jax.jit(framework.loss)
    variables = (params, batch_stats, extra)
    single = loss(*jax.device_put(variables, jax.devices()[0]), clips, rng, 0)
    eight = mesh_lib.create_mesh(8)
    sharded = loss(*jax.device_put(variables, mesh_lib.replicated_sharding(eight)),
                   jax.device_put(clips, mesh_lib.batch_sharding(eight)), rng, 0)
    assert float(sharded[0]) == pytest.approx(float(single[0]), rel=1e-5)
    _assert_trees_close(jax.device_get(sharded[1]), jax.device_get(single[1]), rtol=1e-5)


def test_moco_queue_is_a_fifo_of_each_steps_keys():
    """Four real train steps on 8 devices: 64 keys through a 40-key queue (wrapping twice mid-step)."""
    config = _config("moco", optimizer=dict(name="sgd", base_lr=0.4, base_batch_size=512, warmup_epochs=0.0,
                                            weight_decay=1e-4, momentum=0.9, nesterov=True))
    mesh = mesh_lib.create_mesh()
    framework, state, step = _train_setup(config, mesh)
    rng = _key(7)
    encode = jax.jit(lambda target, clips, i: framework.encode_keys(
        target, step_lib.normalize_clips(clips), jax.random.fold_in(rng, i))[0])
    query = jax.jit(lambda p, s, clips: framework._encode(p, s, base.flatten_clips(step_lib.normalize_clips(clips)))[0])
    queue = np.array(jax.device_get(state.extra["queue"]))
    np.testing.assert_allclose(np.linalg.norm(queue, axis=1), np.ones(QUEUE), rtol=1e-5)
    ptr = 0
    for i in range(4):
        batch = _on(mesh, _batch(i))
        keys = np.asarray(encode(state.extra["target"], batch["clips"], state.step)).reshape(16, -1)
        target_before = jax.device_get(state.extra["target"]["params"])
        queue_before = np.asarray(jax.device_get(state.extra["queue"]))
        queries = np.asarray(query(state.params, state.batch_stats, batch["clips"]))
        queries = queries / np.linalg.norm(queries, axis=-1, keepdims=True)
        state, metrics = step(state, batch, rng)
        assert math.isfinite(float(metrics["loss"]))
        pairs = keys.reshape(8, 2, -1)[:, ::-1].reshape(16, -1)  # ρ = 2: each clip's positive is the other
        assert float(metrics["positive_cosine"]) == pytest.approx(np.mean(np.sum(queries * pairs, -1)), abs=1e-5)
        assert float(metrics["negative_cosine"]) == pytest.approx(np.mean(queries @ queue_before.T), abs=1e-5)
        for key in keys:  # FIFO: overwrite the oldest row, wrap around
            queue[ptr] = key
            ptr = (ptr + 1) % QUEUE
        assert int(state.extra["queue_ptr"]) == ptr == (16 * (i + 1)) % QUEUE
        np.testing.assert_allclose(jax.device_get(state.extra["queue"]), queue, rtol=1e-4, atol=1e-5)
        if i == 0:  # the key encoder follows the EMA of the updated query encoder, momentum at step 0
            m = 0.99
            online = jax.device_get(state.params)
            expected = jax.tree.map(lambda t, o: m * t + (1 - m) * o, target_before, online)
            _assert_trees_close(jax.device_get(state.extra["target"]["params"]), expected, rtol=1e-5, atol=1e-7)
    assert set(state.batch_stats) == {"backbone"} and set(state.extra) == {"target", "queue", "queue_ptr"}


@pytest.mark.parametrize("framework", ["simclr", "swav", "moco_batch_negatives"])
def test_train_step_on_8_devices_has_the_1_device_loss(framework):
    """One generic train step on 8 devices. The loss is over the global batch (NT-Xent negatives, Sinkhorn
    marginals, SyncBN, MoCo's batch keys as negatives and its BN groups), so it and the new BN statistics
    equal the loss on 1 device. For SwAV the run goes on: the prototypes the loss sees stay fixed during the
    frozen first epoch (2 steps) although weight decay and LARS shrink the raw kernel, and move afterwards."""
    config = _config(framework.split("_")[0])
    if framework == "moco_batch_negatives":
        config.moco.queue_size = 0
    eight = mesh_lib.create_mesh(8)
    fw, state, step = _train_setup(config, eight)
    before = jax.device_get(state)
    batch, rng = _batch(0), _key(1)
    single = jax.device_put((before.params, before.batch_stats, before.extra,
                             step_lib.normalize_clips(batch["clips"])), jax.devices()[0])
    loss1, (stats1, _, _) = jax.jit(fw.loss)(*single, jax.random.fold_in(rng, 0), jnp.int32(0))
    state, metrics = step(state, _on(eight, batch), rng)
    metrics = jax.device_get(metrics)
    assert math.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    assert metrics["loss"] == pytest.approx(float(loss1), rel=1e-5)
    _assert_trees_close(jax.device_get(state.batch_stats), jax.device_get(stats1))
    changed = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), jax.device_get(state.params["backbone"]),
                           before.params["backbone"])
    assert max(jax.tree.leaves(changed)) > 0
    if framework == "simclr":
        assert set(state.params) == {"backbone", "projector"} and state.extra == {}
        return
    if framework == "moco_batch_negatives":
        assert set(state.extra) == {"target"} and -1 <= metrics["negative_cosine"] <= metrics["positive_cosine"] <= 1
        return
    kernels = [before.params["prototypes"]["kernel"], jax.device_get(state.params["prototypes"]["kernel"])]
    for i in range(1, 3):
        state, _ = step(state, _on(eight, _batch(i)), rng)
        kernels.append(jax.device_get(state.params["prototypes"]["kernel"]))
    unit = [np.asarray(models.normalized_prototypes(k)) for k in kernels]
    np.testing.assert_allclose(unit[1], unit[0], atol=1e-6)  # after step 0: frozen
    np.testing.assert_allclose(unit[2], unit[0], atol=1e-6)  # after step 1: frozen
    assert np.abs(kernels[2] - kernels[0]).max() > 1e-5      # ... although the raw kernel shrank
    assert np.abs(unit[3] - unit[2]).max() > 1e-5            # after step 2: the prototypes learn


def test_swav_queue_is_a_fifo_of_projections_used_once_full():
    """Real train steps on 8 devices, 8 videos a step, a 24-row queue per clip index filled from step 1
    (queue_start_epochs=0.5 of a 2-step epoch): rows are the projections of the last three steps, newest
    first; the codes use the queue only once it is full (from step 4), as Sinkhorn over queue + batch."""
    config = _config("swav")
    config.swav.update(queue_size=24, queue_start_epochs=0.5)
    mesh = mesh_lib.create_mesh()
    framework, state, step = _train_setup(config, mesh)
    embed = jax.jit(lambda p, s, clips: framework.project(p, s, step_lib.normalize_clips(clips))[0])
    loss_at = jax.jit(lambda st, clips, i: framework.loss(st.params, st.batch_stats, st.extra,
                                                          step_lib.normalize_clips(clips), None, i)[0])
    rng, pushed = _key(3), []
    for i in range(6):
        batch = _on(mesh, _batch(i))
        z = np.asarray(embed(state.params, state.batch_stats, batch["clips"]))  # [8, 2, 16]
        queue = np.asarray(jax.device_get(state.extra["queue"]))
        scores = np.asarray(z @ models.normalized_prototypes(state.params["prototypes"]["kernel"]))
        if i < 4:  # not full: Sinkhorn over the batch alone
            codes = np.stack([_sinkhorn(scores[:, c]) for c in range(2)], axis=1)
        else:
            queue_scores = queue @ np.asarray(models.normalized_prototypes(state.params["prototypes"]["kernel"]))
            codes = np.stack([_sinkhorn(np.concatenate([queue_scores[c], scores[:, c]]))[-8:] for c in range(2)],
                             axis=1)
        expected = losses.swapped_prediction_loss(scores, codes, losses.positive_pairs(2), 0.1)
        assert float(loss_at(state, batch["clips"], jnp.int32(i))) == pytest.approx(float(expected), rel=1e-4)
        state, metrics = step(state, batch, rng)
        assert math.isfinite(float(metrics["loss"])) and 0 < metrics["code_entropy"] <= np.log(10) + 1e-5
        if i >= 1:
            pushed.insert(0, z)
        rows = np.concatenate([np.swapaxes(p, 0, 1) for p in pushed[:3]], axis=1) if pushed else np.zeros((2, 0, 16))
        expected_queue = np.concatenate([rows, np.zeros((2, 24 - rows.shape[1], 16))], axis=1)
        np.testing.assert_allclose(jax.device_get(state.extra["queue"]), expected_queue, rtol=1e-4, atol=1e-5)
        assert int(state.extra["queue_count"]) == min(8 * len(pushed), 24)


def _sinkhorn(scores):
    return np.asarray(losses.sinkhorn(jnp.asarray(scores), 0.05, 3))


def test_moco_applies_no_update_while_its_queue_fills():
    """PySlowFast's rule: queue_size // batch_size = 40 // 8 = 5 steps without an optimiser step (within the first
    epoch); the queue, the key encoder's BN statistics and the online BN statistics still move."""
    mesh = mesh_lib.create_mesh()
    framework, state, step = _train_setup(_config("moco"), mesh, steps_per_epoch=10, total_steps=20)
    assert framework.queue_fill_steps == 5
    initial = jax.device_get(state)
    for i in range(6):
        previous = jax.device_get(state)
        state, metrics = step(state, _on(mesh, _batch(i)), _key(1))
        now = jax.device_get(state)
        assert float(metrics["params_updated"]) == (1.0 if i == 5 else 0.0)
        assert not np.allclose(now.extra["queue"], previous.extra["queue"])
        assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(now.batch_stats),
                                                          jax.tree.leaves(previous.batch_stats)))
        if i < 5:
            _assert_trees_close(now.params, initial.params, rtol=0, atol=0)
            # the key encoder's EMA m·t + (1−m)·o of t == o is t up to float rounding (exact only where the
            # compiler fuses it into one multiply-add)
            _assert_trees_close(now.extra["target"]["params"], initial.params, rtol=1e-6, atol=1e-9)
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(now.params), jax.tree.leaves(initial.params)))
