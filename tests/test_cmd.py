"""CMD (framework=cmd): its two losses against direct NumPy computations, its networks' shapes, its config
checks, and real train steps through stjax.train on the 8 fake devices.

Tiny everything (r3d_micro on 4×32² clips, micro encoders on 4-frame 8×8 motion maps, a 16-wide predictor,
32→16 heads) so that the file runs in well under a minute on 2 CPU cores. Keys are `rbg` keys (see
tests/test_frameworks.py).
"""
import math
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from stjax import configlib, objectives
from stjax.models import cmd_nets
from stjax.objectives import auxiliary, cmd
from stjax.train import mesh as mesh_lib
from stjax.train import optimizer as optimizer_lib
from stjax.train import step as step_lib
from stjax.train.state import StateFactory

B, RHO, T, S = 8, 2, 4, 32
NEGATIVES, FUTURE, BLOCK = 1, 4, 4
CLIPS_SHAPE = (B, RHO, T, S, S, 3)
MOTION_SHAPE = (B, RHO, 1 + NEGATIVES, FUTURE, S // BLOCK, S // BLOCK, 2)
KEYFRAME_SHAPE = (B, RHO, S, S, 3)
TAU = 0.1
PRETRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "pretrain.py")


def _key(seed):
    return jax.random.key(seed, impl="rbg")


def _config(**cmd_overrides):
    config = ml_collections.ConfigDict(dict(
        seed=0, framework="cmd", rho=RHO, batch_size=B,
        model=dict(backbone="r3d_micro"),
        cmd=dict(temperature=TAU, hidden_dim=16, heads=2, ffn_dim=16, encoder_layers=1, decoder_layers=1,
                 dropout=0.0, head_hidden=32, head_out=16, motion_grid=(2, 2), mv_clip=10.0, weight_motion=1.0,
                 weight_context=1.0, motion_backbone="r3d_micro_2ch", keyframe_backbone="r2d_micro"),
        data=dict(motion=dict(future_frames=FUTURE, future_interval=2, num_negatives=NEGATIVES, block=BLOCK)),
        optimizer=dict(name="lars", base_lr=4.8, base_batch_size=512, warmup_epochs=0.0, weight_decay=1e-6,
                       momentum=0.9, nesterov=True, trust_coefficient=0.001),
    ))
    config.cmd.update(cmd_overrides)
    return config


def _batch(seed):
    """A batch whose future motion is the clip's own motion: each clip is a bright square that moves by
    (dx, dy) pixels a frame, and window 0 of its motion is that (dx, dy) everywhere; the negatives are still."""
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 64, size=CLIPS_SHAPE, dtype=np.uint8)
    motion = np.zeros(MOTION_SHAPE, np.int8)
    for b in range(B):
        for r in range(RHO):
            dx, dy = rng.integers(-2, 3, size=2)
            for t in range(T):
                y, x = 8 + dy * t, 8 + dx * t
                clips[b, r, t, y:y + 8, x:x + 8] = 255
            motion[b, r, 0, ..., 0], motion[b, r, 0, ..., 1] = 4 * dx, 4 * dy
    keyframe = rng.integers(0, 256, size=KEYFRAME_SHAPE, dtype=np.uint8)
    return {"clips": clips, "motion": motion, "keyframe": keyframe}


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- the losses


def _motion_loss_numpy(q, k, tau):
    """Direct loops: for each (b, r, p), −log softmax over all keys (c, n, p') at (b, r, 0, p)."""
    q, k = _unit(np.asarray(q, np.float64)), _unit(np.asarray(k, np.float64))
    b, rho, p, _ = q.shape
    keys = k.reshape(-1, k.shape[-1])
    losses, hits = [], []
    for i in range(b):
        for r in range(rho):
            for j in range(p):
                logits = keys @ q[i, r, j] / tau
                positive = q[i, r, j] @ k[i, r, 0, j] / tau
                losses.append(np.log(np.sum(np.exp(logits))) - positive)
                best = np.unravel_index(np.argmax(logits), k.shape[:-1])
                hits.append(best == (i, r, 0, j))
    return np.mean(losses), np.mean(hits)


def _context_loss_numpy(u, v, tau):
    """Direct loops: for each clip (b, r), the mean over r' of −log softmax over all B·ρ keyframes at (b, r')."""
    u, v = _unit(np.asarray(u, np.float64)), _unit(np.asarray(v, np.float64))
    b, rho, _ = u.shape
    keys = v.reshape(b * rho, -1)
    losses, hits = [], []
    for i in range(b):
        for r in range(rho):
            logits = keys @ u[i, r] / tau
            log_z = np.log(np.sum(np.exp(logits)))
            losses.append(np.mean([log_z - u[i, r] @ v[i, s] / tau for s in range(rho)]))
            hits.append(np.argmax(logits) // rho == i)
    return np.mean(losses), np.mean(hits)


def test_motion_prediction_loss_matches_numpy():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(3, 2, 4, 5)), rng.normal(size=(3, 2, 3, 4, 5))
    k[..., 0, :, :] += 2.0 * q  # some positives win, some do not: an accuracy strictly between 0 and 1
    loss, accuracy = cmd.motion_prediction_loss(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), TAU)
    expected_loss, expected_accuracy = _motion_loss_numpy(q, k, TAU)
    assert 0 < expected_accuracy < 1
    assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
    assert float(accuracy) == pytest.approx(expected_accuracy)
    # scale-free: the loss normalises its inputs
    assert float(cmd.motion_prediction_loss(3 * jnp.asarray(q), jnp.asarray(k) / 7, TAU)[0]) == pytest.approx(
        float(loss), rel=1e-5)


def test_motion_prediction_loss_at_its_minimum_and_at_chance():
    b, rho, n1, p = 2, 2, 3, 4
    keys = b * rho * n1 * p
    # every key a distinct basis vector, each query its positive: logit 1/τ at the positive, 0 elsewhere
    k = np.eye(keys, dtype=np.float32).reshape(b, rho, n1, p, keys)
    q = k[:, :, 0]
    loss, accuracy = cmd.motion_prediction_loss(jnp.asarray(q), jnp.asarray(k), TAU)
    assert float(loss) == pytest.approx(math.log(1 + (keys - 1) * math.exp(-1 / TAU)), rel=1e-4)
    assert float(loss) < 0.01 and float(accuracy) == 1.0
    # random unit vectors in many dimensions: logits ≈ 0, the loss ≈ log(number of keys)
    rng = np.random.default_rng(1)
    loss, _ = cmd.motion_prediction_loss(jnp.asarray(rng.normal(size=(b, rho, p, 4096)), jnp.float32),
                                         jnp.asarray(rng.normal(size=(b, rho, n1, p, 4096)), jnp.float32), TAU)
    assert float(loss) == pytest.approx(math.log(keys), abs=0.05)


def test_only_window_0_at_the_same_position_is_the_positive():
    b, rho, n1, p = 2, 2, 3, 4
    keys = b * rho * n1 * p
    k = np.eye(keys, dtype=np.float32).reshape(b, rho, n1, p, keys)
    exact = float(cmd.motion_prediction_loss(jnp.asarray(k[:, :, 0]), jnp.asarray(k), TAU)[0])
    wrong = {"a hard negative (window 1)": k[:, :, 1], "another position": np.roll(k[:, :, 0], 1, axis=2),
             "another clip of the video": k[:, ::-1, 0], "another video": k[::-1, :, 0]}
    for name, q in wrong.items():
        loss, accuracy = cmd.motion_prediction_loss(jnp.asarray(q), jnp.asarray(k), TAU)
        # the positive's logit is 0 and the matched key's 1/τ: loss ≈ 1/τ, never a hit
        assert float(accuracy) == 0.0, name
        assert float(loss) == pytest.approx(1 / TAU + math.log(1 + (keys - 1) * math.exp(-1 / TAU)), rel=1e-4), name
        assert float(loss) > exact + 9, name


def test_context_matching_loss_has_every_clip_of_the_video_as_positive():
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=(4, 2, 6)), rng.normal(size=(4, 2, 6))
    v += 1.5 * u[:, ::-1]  # the other clip's keyframe leans to each clip: positives from both r' count
    loss, accuracy = cmd.context_matching_loss(jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32), TAU)
    expected_loss, expected_accuracy = _context_loss_numpy(u, v, TAU)
    assert 0 < expected_accuracy
    assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
    assert float(accuracy) == pytest.approx(expected_accuracy)
    # ρ = 1: the paper's L_C, a plain InfoNCE over the B keyframes
    u1, v1 = u[:, :1], v[:, :1]
    logits = _unit(u1[:, 0]) @ _unit(v1[:, 0]).T / TAU
    plain = np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits))
    assert float(cmd.context_matching_loss(jnp.asarray(u1), jnp.asarray(v1), TAU)[0]) == pytest.approx(plain, rel=1e-5)


def test_context_matching_loss_at_its_minimum_and_at_chance():
    b, rho = 4, 2
    # each video's clips and keyframes the same basis vector: the ρ positives share the mass, loss ≈ log ρ
    e = np.repeat(np.eye(b, dtype=np.float32)[:, None], rho, axis=1)
    loss, accuracy = cmd.context_matching_loss(jnp.asarray(e), jnp.asarray(e), TAU)
    assert float(loss) == pytest.approx(math.log(rho + (b - 1) * rho * math.exp(-1 / TAU)), rel=1e-4)
    assert float(accuracy) == 1.0
    # the top-1 keyframe being the video's other clip's is a hit too
    k = np.eye(b * rho, dtype=np.float32).reshape(b, rho, -1)
    assert float(cmd.context_matching_loss(jnp.asarray(k[:, ::-1]), jnp.asarray(k), TAU)[1]) == 1.0
    assert float(cmd.context_matching_loss(jnp.asarray(k[::-1]), jnp.asarray(k), TAU)[1]) == 0.0
    rng = np.random.default_rng(3)
    loss, _ = cmd.context_matching_loss(jnp.asarray(rng.normal(size=(b, rho, 4096)), jnp.float32),
                                        jnp.asarray(rng.normal(size=(b, rho, 4096)), jnp.float32), TAU)
    assert float(loss) == pytest.approx(math.log(b * rho), abs=0.05)


def test_motion_units_and_adaptive_pooling():
    # int8 = 4 × pixels per frame; clamped to ±mv_clip pixels, divided by mv_clip
    motion = jnp.asarray([0, 4, -8, 40, 41, 127, -128], jnp.int8)
    np.testing.assert_allclose(cmd.motion_to_float(motion, 10.0), [0, 0.1, -0.2, 1, 1, 1, -1], atol=1e-6)
    # PyTorch's AdaptiveAvgPool bins: 7 → 4 cells averages [0, 2), [1, 4), [3, 6), [5, 7)
    m = cmd_nets.adaptive_pool_matrix(7, 4)
    expected = np.zeros((4, 7))
    for i, (lo, hi) in enumerate([(0, 2), (1, 4), (3, 6), (5, 7)]):
        expected[i, lo:hi] = 1 / (hi - lo)
    np.testing.assert_allclose(m, expected, atol=1e-7)
    x = np.arange(2 * 7 * 6 * 3, dtype=np.float32).reshape(2, 7, 6, 3)
    pooled = cmd_nets.adaptive_avg_pool2d(jnp.asarray(x), (4, 3))
    np.testing.assert_allclose(pooled[:, 1, 2], x[:, 1:4, 4:6].mean(axis=(1, 2)), rtol=1e-6)


# ----------------------------------------------------------------------------- the framework


def test_networks_shapes_and_state():
    framework = objectives.create_framework(_config(), total_steps=10)
    assert isinstance(framework, cmd.CMD) and framework.pixel_inputs == ("keyframe",)
    params, stats, extra = jax.eval_shape(framework.init, _key(0), jax.ShapeDtypeStruct(CLIPS_SHAPE, jnp.float32))
    assert set(params) == {"backbone", "motion_encoder", "keyframe_encoder", "predictor", "heads"} and extra == {}
    assert set(stats) == {"backbone", "motion_encoder", "keyframe_encoder", "heads"}  # the predictor: LayerNorm
    assert set(params["heads"]) == set(stats["heads"]) == set(cmd.HEADS)
    # r3d_micro at 4×32²: res4 4×1×1 with its time pairs folded (cmd.skip) plus res5: 2 source tokens; the 2×2
    # motion grid: 4 query tokens
    assert params["predictor"]["k_embedding"].shape == (2, 16)
    assert params["predictor"]["q_embedding"].shape == (4, 16)
    for name in cmd.HEADS:
        assert params["heads"][name]["out"]["kernel"].shape == (32, 16)
    batch = _batch(0)
    clips = step_lib.normalize_clips(batch["clips"])
    keyframe = step_lib.normalize_clips(batch["keyframe"])
    loss, (new_stats, new_extra, metrics) = jax.eval_shape(
        lambda p, s: framework.loss(p, s, {}, clips, None, 0, motion=batch["motion"], keyframe=keyframe),
        params, stats)
    assert loss.shape == () and new_extra == {}
    assert set(metrics) == {"loss", "motion_loss", "motion_accuracy", "context_loss", "context_accuracy"}
    assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
    assert framework.batch_inputs(batch) == {"motion": batch["motion"], "keyframe": batch["keyframe"]}
    with pytest.raises(ValueError, match=re.escape("motion must be [B=8, ρ=2, 1+N, T_m, h, w, 2], got shape")):
        jax.eval_shape(lambda p, s: framework.loss(p, s, {}, clips, None, 0, motion=batch["motion"][:, 0],
                                                   keyframe=keyframe), params, stats)
    # a task at weight 0 is not computed
    context_only = objectives.create_framework(_config(weight_motion=0.0), total_steps=10)
    _, (_, _, metrics) = jax.eval_shape(
        lambda p, s: context_only.loss(p, s, {}, clips, None, 0, motion=batch["motion"], keyframe=keyframe),
        params, stats)
    assert set(metrics) == {"loss", "context_loss", "context_accuracy"}


@pytest.mark.parametrize("field,value,message", [
    ("temperature", 0.0, "cmd.temperature=0.0 is invalid; valid values: numbers > 0"),
    ("heads", 3, "cmd.heads=3 is invalid; valid values: divisors of cmd.hidden_dim=16"),
    ("hidden_dim", 0, "cmd.hidden_dim=0 is invalid; valid values: integers >= 1"),
    ("decoder_layers", 0, "cmd.decoder_layers=0 is invalid; valid values: integers >= 1"),
    ("encoder_layers", -1, "cmd.encoder_layers=-1 is invalid; valid values: integers >= 0"),
    ("dropout", 1.0, "cmd.dropout=1.0 is invalid; valid values: numbers in [0, 1)"),
    ("mv_clip", -1.0, "cmd.mv_clip=-1.0 is invalid; valid values: numbers > 0"),
    ("motion_grid", (4,), "cmd.motion_grid=(4,) is invalid; valid values: (rows, columns), integers >= 1"),
    ("weight_context", -0.5, "cmd.weight_context=-0.5 is invalid; valid values: finite numbers >= 0 (0: off)"),
    ("motion_backbone", "r3d18", "cmd.motion_backbone='r3d18' is invalid; valid values: r3d10_2ch, r3d_micro_2ch"),
    ("keyframe_backbone", "r3d10_2ch", "cmd.keyframe_backbone='r3d10_2ch' is invalid; valid values: r2d10, "
                                       "r2d_micro"),
])
def test_invalid_settings_name_the_field(field, value, message):
    config = _config()
    config.cmd[field] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        objectives.create_framework(config, total_steps=10)


def test_invalid_motion_block_and_weights_name_the_field():
    config = _config(weight_motion=0.0, weight_context=0.0)
    with pytest.raises(ValueError, match=re.escape("cmd.weight_motion=0.0 is invalid; valid values: numbers > 0 "
                                                   "when cmd.weight_context is 0")):
        objectives.create_framework(config, total_steps=10)
    config = _config()
    config.data.motion.num_negatives = -1
    with pytest.raises(ValueError, match=re.escape("data.motion.num_negatives=-1 is invalid; valid values: "
                                                   "integers >= 0")):
        objectives.create_framework(config, total_steps=10)
    config = _config()
    del config.data["motion"]
    with pytest.raises(ValueError, match="data.motion is missing"):
        objectives.create_framework(config, total_steps=10)
    config = _config()
    config.data.motion.block = 64
    framework = objectives.create_framework(config, total_steps=10)
    with pytest.raises(ValueError, match=re.escape("data.motion.block=64 is invalid; valid values: integers <= the "
                                                   "crop size 32")):
        jax.eval_shape(framework.init, _key(0), jax.ShapeDtypeStruct(CLIPS_SHAPE, jnp.float32))


def test_pretrain_config_presets():
    for preset in ("demo", "k400_r50"):
        config = configlib.load_config_file(PRETRAIN, f"{preset},framework=cmd")
        assert config.data.inputs == ("motion", "keyframe")
        framework = objectives.create_framework(config, total_steps=100, steps_per_epoch=10)
        assert isinstance(framework, cmd.CMD)
        assert configlib.load_config_file(PRETRAIN, preset).data.inputs == ()
    demo = configlib.load_config_file(PRETRAIN, "demo,framework=cmd")
    assert demo.data.dataset == "synthetic/motion" and demo.cmd.dropout == 0.0
    official = configlib.load_config_file(PRETRAIN, "k400_r50,framework=cmd")
    assert (official.cmd.temperature, official.cmd.hidden_dim, official.cmd.heads, official.cmd.encoder_layers,
            official.cmd.decoder_layers, official.cmd.head_hidden, official.cmd.head_out,
            tuple(official.cmd.motion_grid), official.cmd.dropout) == (0.1, 512, 8, 2, 4, 2048, 512, (7, 7), 0.1)
    assert (official.optimizer.name, official.optimizer.nesterov, official.optimizer.weight_decay) == ("sgd", True,
                                                                                                      1e-3)
    assert official.optimizer.base_lr / official.optimizer.base_batch_size == pytest.approx(5e-4)


def test_auxiliary_wrapper_forwards_the_pixel_inputs():
    config = _config()
    config.auxiliary = ml_collections.ConfigDict(dict(arrow_of_time=dict(weight=0.1)))
    framework = objectives.create_framework(config, total_steps=10)
    assert isinstance(framework, auxiliary.WithAuxiliary)
    assert framework.pixel_inputs == ("keyframe",)
    assert framework.batch_inputs(_batch(0)).keys() == {"motion", "keyframe"}


def test_train_steps_on_8_devices():
    """Real generic train steps on 8 devices: the first step's loss equals the 1-device loss on the normalised
    clips and keyframes (SyncBN and both softmaxes span the global batch; the step normalises the keyframes,
    `pixel_inputs`); every network learns; the loss stays finite and changes."""
    config = _config()
    mesh = mesh_lib.create_mesh(8)
    framework = objectives.create_framework(config, total_steps=10, steps_per_epoch=2)
    tx, _ = optimizer_lib.create_optimizer(config, config.batch_size, 10, 2)
    factory = StateFactory(framework, tx, CLIPS_SHAPE, mesh)
    state = factory.create(_key(0))
    step = step_lib.jit_train_step(framework, tx, factory.shardings, mesh_lib.batch_sharding(mesh),
                                   mesh_lib.replicated_sharding(mesh))
    before = jax.device_get(state)
    batch, rng = _batch(0), _key(1)
    single = jax.jit(lambda p, s, c, m, k: framework.loss(p, s, {}, c, None, 0, motion=m, keyframe=k))
    loss1, (stats1, _, metrics1) = single(before.params, before.batch_stats, step_lib.normalize_clips(batch["clips"]),
                                          batch["motion"], step_lib.normalize_clips(batch["keyframe"]))
    losses = []
    for i in range(3):
        state, metrics = step(state, jax.device_put(_batch(i), mesh_lib.batch_sharding(mesh)), rng)
        metrics = jax.device_get(metrics)
        if i == 0:
            assert metrics["loss"] == pytest.approx(float(loss1), rel=1e-4)
            assert metrics["motion_loss"] == pytest.approx(float(metrics1["motion_loss"]), rel=1e-4)
            for a, b in zip(jax.tree.leaves(jax.device_get(state.batch_stats)), jax.tree.leaves(stats1), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        assert all(math.isfinite(metrics[k]) for k in ("loss", "motion_loss", "context_loss", "grad_norm"))
        assert 0 <= metrics["motion_accuracy"] <= 1 and 0 <= metrics["context_accuracy"] <= 1
        assert metrics["loss"] == pytest.approx(metrics["motion_loss"] + metrics["context_loss"], rel=1e-5)
        losses.append(float(metrics["loss"]))
    assert len(set(losses)) == 3
    after = jax.device_get(state.params)
    for name in ("backbone", "motion_encoder", "keyframe_encoder", "predictor", "heads"):
        change = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(after[name]),
                                                                 jax.tree.leaves(before.params[name])))
        assert change > 0, name
    assert jax.device_get(state.extra) == {}


def test_predictor_dropout_draws_from_the_loss_rng():
    predictor = cmd_nets.MotionPredictor(num_queries=3, hidden=8, heads=2, ffn=8, encoder_layers=1, decoder_layers=1,
                                         dropout=0.5)
    tokens = jnp.asarray(np.random.default_rng(4).normal(size=(2, 5, 6)), jnp.float32)
    params = predictor.init(_key(0), tokens, train=False)["params"]
    run = jax.jit(lambda rng, train: predictor.apply({"params": params}, tokens, train=train, rngs={"dropout": rng}),
                  static_argnums=1)
    assert run(_key(1), True).shape == (2, 3, 8)
    assert float(jnp.abs(run(_key(1), True) - run(_key(2), True)).max()) > 1e-3
    np.testing.assert_array_equal(run(_key(1), False), run(_key(2), False))
    # the framework hands its loss rng to the predictor's dropout (None would fail)
    framework = objectives.create_framework(_config(dropout=0.1), total_steps=10)
    params, stats, _ = jax.eval_shape(framework.init, _key(0), jax.ShapeDtypeStruct(CLIPS_SHAPE, jnp.float32))
    batch = _batch(0)
    loss, _ = jax.eval_shape(lambda p, s: framework.loss(p, s, {}, jnp.zeros(CLIPS_SHAPE), _key(3), 0,
                                                         motion=batch["motion"], keyframe=jnp.zeros(KEYFRAME_SHAPE)),
                             params, stats)
    assert loss.shape == ()


def test_skip_tokens_fold_time_pairs_and_add_the_upsampled_last_map():
    """cmd.skip: the predictor's tokens are the second-to-last stage with time pairs folded into channels plus
    the last map nearest-resized to it (the official layer3 + upsampled layer4)."""
    config = _config()
    framework = objectives.create_framework(config, total_steps=10)
    clips = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 4, 64, 64, 3))
    params, batch_stats, _ = framework.init(_key(1), clips)
    tokens, fmap, _ = framework.source_tokens(params["backbone"], batch_stats["backbone"], clips, train=False)
    variables = {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}
    _, state = framework.backbone.apply(variables, clips.reshape((-1,) + clips.shape[2:]), train=False, pooled=False,
                                        capture_intermediates=True, mutable=["intermediates"])
    x3 = np.asarray(state["intermediates"]["res4_0"]["__call__"][0])  # r3d_micro at 64²: [4, 4, 2, 2, 32]
    assert x3.shape == (4, 4, 2, 2, 32) and fmap.shape == (4, 4, 1, 1, 64)
    folded = np.concatenate([x3[:, 0::2], x3[:, 1::2]], axis=-1)  # [4, 2, 2, 2, 64]: (t0|t1), (t2|t3)
    upsampled = np.asarray(jax.image.resize(fmap, (4, 2, 2, 2, 64), method="nearest"))
    np.testing.assert_allclose(upsampled[:, :, 0, 0], upsampled[:, :, 1, 1])  # 1×1 spread over 2×2
    np.testing.assert_allclose(np.asarray(tokens), (folded + upsampled).reshape(4, 8, 64), rtol=1e-5, atol=1e-5)
    config.cmd.skip = False
    tokens, _, _ = objectives.create_framework(config, total_steps=10).source_tokens(
        params["backbone"], batch_stats["backbone"], clips, train=False)
    assert tokens.shape == (4, 4, 64)  # the last map alone: T' × 1 × 1
    with pytest.raises(ValueError, match="cmd.skip"):
        objectives.create_framework(_config(skip="yes"), total_steps=10)
