"""The generic train step and loop: sharding invariance, schedules, resume, NaN handling."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from stjax import objectives
from stjax.train import mesh as mesh_lib
from stjax.train import optimizer as optimizer_lib
from stjax.train import pretrain as pretrain_lib
from stjax.train import step as step_lib
from stjax.train.state import StateFactory

CLIPS_SHAPE = (8, 2, 4, 16, 16, 3)


def _config(**overrides):
    config = ml_collections.ConfigDict(dict(
        seed=0, framework="byol", rho=2, batch_size=8,
        model=dict(backbone="r3d_micro"),
        byol=dict(projector_hidden=(32,), projector_out=16, predictor_hidden=(32,), base_momentum=0.99,
                  pairing="all"),
        optimizer=dict(name="lars", base_lr=4.8, base_batch_size=512, warmup_epochs=1.0, weight_decay=1e-6,
                       momentum=0.9, nesterov=True, trust_coefficient=0.001),
        log_every=2, checkpoint_every=3, keep_checkpoints=2,
    ))
    config.update(overrides)
    return config


def _batch(seed, shape=CLIPS_SHAPE):
    rng = np.random.default_rng(seed)
    return {"clips": rng.integers(0, 256, size=shape, dtype=np.uint8),
            "label": rng.integers(0, 3, size=shape[:1]).astype(np.int32)}


def _make_batches(start, num_shards=1):
    step = start
    while True:
        yield _batch(step)
        step += 1


def _loss_and_grads_on(num_devices, **model):
    config = _config()
    config.model.update(model)
    mesh = mesh_lib.create_mesh(num_devices)
    framework = objectives.create_framework(config, total_steps=10)
    tx, _ = optimizer_lib.create_optimizer(config, config.batch_size, 10, steps_per_epoch=2)
    factory = StateFactory(framework, tx, CLIPS_SHAPE, mesh)
    state = factory.create(jax.random.key(0))
    step = step_lib.jit_train_step(framework, tx, factory.shardings, mesh_lib.batch_sharding(mesh),
                                   mesh_lib.replicated_sharding(mesh))
    batch = jax.device_put(_batch(1), mesh_lib.batch_sharding(mesh))
    new_state, metrics = step(state, batch, jax.random.key(1))
    return jax.device_get(metrics), jax.device_get(new_state.params), jax.device_get(new_state.batch_stats)


def test_one_step_on_8_devices_equals_1_device():
    m8, p8, s8 = _loss_and_grads_on(8)
    m1, p1, s1 = _loss_and_grads_on(1)
    assert m8["loss"] == pytest.approx(m1["loss"], rel=1e-5)
    assert m8["grad_norm"] == pytest.approx(m1["grad_norm"], rel=1e-4)
    for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # BatchNorm statistics are over the global batch (SyncBN), so they agree too
    for a, b in zip(jax.tree.leaves(s8), jax.tree.leaves(s1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bf16_and_remat_step_on_8_devices():
    """model.dtype=bfloat16 and model.remat=True through the real sharded step: float32 parameters, a loss and
    gradient norm close to float32's (that remat alone changes nothing is in test_models)."""
    m32, p32, _ = _loss_and_grads_on(8)
    m16, p16, _ = _loss_and_grads_on(8, dtype="bfloat16", remat=True)
    assert {leaf.dtype for leaf in jax.tree.leaves(p16)} == {np.dtype(np.float32)}
    assert np.isfinite(m16["loss"]) and m16["loss"] == pytest.approx(m32["loss"], rel=0.05)
    assert m16["grad_norm"] == pytest.approx(m32["grad_norm"], rel=0.1)
    assert m16["loss"] != m32["loss"]  # the backbone really ran in bf16


def test_learning_rate_schedule_and_scaling_rule():
    assert optimizer_lib.peak_learning_rate(4.8, 512, 64) == pytest.approx(0.6)
    schedule = optimizer_lib.learning_rate_schedule(peak_lr=1.0, total_steps=100, warmup_steps=10)
    for step in [0, 5, 10]:
        assert float(schedule(step)) == pytest.approx(step / 10)
    for step in [10, 40, 70, 100]:
        expected = 0.5 * (1 + math.cos(math.pi * (step - 10) / 90))
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-6)
    mask = optimizer_lib.decay_mask({"conv": {"kernel": 0, "bias": 0}, "bn": {"scale": 0, "bias": 0}})
    assert mask == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False, "bias": False}}
    with pytest.raises(ValueError, match="optimizer.name='adam' is invalid; valid values: sgd, lars, adamw"):
        optimizer_lib.create_optimizer(_config(optimizer=dict(name="adam")), 8, 10, 1)


def test_lars_matches_optax_lars_and_keeps_its_state_structure():
    """stjax's LARS (norms gathered into one array per kind) against optax.lars over 3 steps: the same
    parameters, and an optimiser state of the same structure (checkpoints restore across the two)."""
    rng = np.random.default_rng(0)
    params = {"conv": {"kernel": rng.normal(size=(3, 3, 4, 8)), "bias": rng.normal(size=8)},
              "bn": {"scale": rng.normal(size=8), "bias": np.zeros(8)},
              "dense": {"kernel": np.zeros((8, 2))},  # zero norm: the trust ratio is 1
              "head": {"kernel": rng.normal(size=(8, 2))}}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params) for _ in range(3)]
    schedule = optimizer_lib.learning_rate_schedule(peak_lr=0.5, total_steps=10, warmup_steps=2)
    ours = optimizer_lib.lars(schedule, weight_decay=1e-2, trust_coefficient=0.001, momentum=0.9, nesterov=True)
    theirs = optax.lars(schedule, weight_decay=1e-2, weight_decay_mask=optimizer_lib.decay_mask,
                        trust_coefficient=0.001, trust_ratio_mask=optimizer_lib.decay_mask, momentum=0.9, nesterov=True)
    results = []
    for tx in (ours, theirs):
        p, state = params, tx.init(params)
        for g in grads:
            updates, state = jax.jit(tx.update)(g, state, p)
            p = optax.apply_updates(p, updates)
        results.append((p, state))
    (p_ours, s_ours), (p_theirs, s_theirs) = results
    assert jax.tree.structure(s_ours) == jax.tree.structure(s_theirs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p_ours, p_theirs)
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), p_ours, params)
    assert all(jax.tree.leaves(moved))
    assert float(optimizer_lib.global_norm(grads[0])) == pytest.approx(float(optax.global_norm(grads[0])), rel=1e-6)
    assert optimizer_lib.squared_norms([]).shape == (0,)

def test_target_network_follows_the_ema_formula():
    config = _config()
    framework = objectives.create_framework(config, total_steps=10)
    mesh = mesh_lib.create_mesh(1)
    tx = optax.sgd(0.1)
    factory = StateFactory(framework, tx, CLIPS_SHAPE, mesh)
    state = factory.create(jax.random.key(0))
    step = step_lib.jit_train_step(framework, tx, factory.shardings, mesh_lib.batch_sharding(mesh),
                                   mesh_lib.replicated_sharding(mesh))
    before = jax.device_get(state.extra["target"]["params"])
    state, _ = step(state, _batch(0), jax.random.key(0))
    m = float(1 - (1 - 0.99) * (math.cos(0.0) + 1) / 2)  # step 0 of 10
    online = jax.device_get(state.params)
    after = jax.device_get(state.extra["target"]["params"])
    for name in ("backbone", "projector"):
        for t0, o, t1 in zip(jax.tree.leaves(before[name]), jax.tree.leaves(online[name]),
                             jax.tree.leaves(after[name])):
            np.testing.assert_allclose(t1, m * t0 + (1 - m) * o, rtol=1e-5, atol=1e-7)
    assert "predictor" not in after


def _run(workdir, total_steps, stop_after=None, num_devices=None):
    config = _config()
    framework = objectives.create_framework(config, total_steps=total_steps)
    return pretrain_lib.pretrain(config, str(workdir), framework, _make_batches, CLIPS_SHAPE, total_steps,
                                 steps_per_epoch=2, mesh=mesh_lib.create_mesh(num_devices), stop_after=stop_after)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The state after 7 uninterrupted steps on 8 devices, which every resumed run must end at."""
    return jax.device_get(_run(tmp_path_factory.mktemp("whole"), total_steps=7).state)


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, uninterrupted):
    first = _run(tmp_path / "split", total_steps=7, stop_after=4)
    assert int(first.state.step) == 4
    second = _run(tmp_path / "split", total_steps=7)
    assert second.resumed_from == 4 and int(second.state.step) == 7
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(jax.device_get(second.state))):
        np.testing.assert_array_equal(a, b)
    records = pretrain_lib.stack_loss_history(str(tmp_path / "split"))
    assert [s for s, _ in records] == [2, 3, 4, 6, 7]  # every 2 steps, at checkpoints (3, 6) and at the end


def test_checkpoint_of_4_devices_resumes_on_8_with_the_same_global_batch(tmp_path, uninterrupted):
    # (8 -> 4 through the command line, after a SIGTERM: tests/test_scale_out.py)
    _run(tmp_path / "split", total_steps=7, stop_after=2, num_devices=4)
    second = _run(tmp_path / "split", total_steps=7, num_devices=8)
    assert second.resumed_from == 2
    assert all(s.num_devices == 8 for s in jax.tree.leaves(jax.tree.map(lambda x: x.sharding, second.state)))
    # 2 steps summed over 4 devices, then 5 over 8: float32 sums in another order (seen: 1.1e-6 absolute)
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(jax.device_get(second.state))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sigterm_stops_at_a_step_boundary_after_a_checkpoint_and_the_run_resumes(tmp_path, uninterrupted):
    import os
    import signal

    def batches_then_sigterm(start, num_shards=1):
        for i, batch in enumerate(_make_batches(start, num_shards)):
            if start == 0 and i == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal to this process, as a scheduler sends it
            yield batch

    config = _config(checkpoint_every=100)
    framework = objectives.create_framework(config, total_steps=7)

    def run(workdir):
        return pretrain_lib.pretrain(config, str(workdir), framework, batches_then_sigterm, CLIPS_SHAPE, 7,
                                     steps_per_epoch=2, mesh=mesh_lib.create_mesh())

    handler = signal.getsignal(signal.SIGTERM)
    stopped = run(tmp_path / "run")
    assert signal.getsignal(signal.SIGTERM) is handler  # the loop's handler is gone with the loop
    assert stopped.preempted and 1 <= stopped.steps < 7 and int(stopped.state.step) == stopped.steps
    resumed = run(tmp_path / "run")
    assert resumed.resumed_from == stopped.steps and not resumed.preempted
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(jax.device_get(resumed.state))):
        np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_naming_the_step_and_last_checkpoint(tmp_path):
    config = _config(log_every=1)
    framework = objectives.create_framework(config, total_steps=8)
    original = framework.loss

    def poisoned(params, batch_stats, extra, clips, rng, step):
        loss, aux = original(params, batch_stats, extra, clips, rng, step)
        return jnp.where(step >= 4, jnp.nan, loss), aux  # the 5th step's loss is NaN

    framework.loss = poisoned
    with pytest.raises(pretrain_lib.NonFiniteLossError,
                       match=r"loss is nan at step 5; stopping. Last good checkpoint: step 3 in .*checkpoints"):
        pretrain_lib.pretrain(config, str(tmp_path), framework, _make_batches, CLIPS_SHAPE, 8, steps_per_epoch=2,
                              mesh=mesh_lib.create_mesh())


def test_step_augments_batches_that_carry_draws():
    """A batch with 'augment' draws is augmented in the step: the same update as the host-augmented batch."""
    from stjax.data import device_augment
    from stjax.data.augment_config import CLIP_PARAM_NAMES, AugmentConfig

    config = _config()
    augmentation = AugmentConfig(crop_size=16, flip_prob=1.0, color_jitter_prob=1.0, grayscale_prob=0.0,
                                 blur_prob=1.0)
    mesh = mesh_lib.create_mesh(8)
    framework = objectives.create_framework(config, total_steps=10)
    tx, _ = optimizer_lib.create_optimizer(config, config.batch_size, 10, steps_per_epoch=2)
    factory = StateFactory(framework, tx, CLIPS_SHAPE, mesh)
    step = step_lib.jit_train_step(framework, tx, factory.shardings, mesh_lib.batch_sharding(mesh),
                                   mesh_lib.replicated_sharding(mesh), augmentation=augmentation)
    rng = np.random.default_rng(0)
    raw = _batch(2)
    draws = np.zeros(CLIPS_SHAPE[:2] + (len(CLIP_PARAM_NAMES),), np.float32)
    names = {n: i for i, n in enumerate(CLIP_PARAM_NAMES)}
    draws[..., names["flip"]] = rng.integers(0, 2, CLIPS_SHAPE[:2])
    draws[..., names["jitter"]] = 1
    draws[..., names["brightness"]] = rng.uniform(0.4, 1.6, CLIPS_SHAPE[:2])
    draws[..., [names["contrast"], names["saturation"]]] = 1
    draws[..., names["hue"]] = rng.uniform(-0.15, 0.15, CLIPS_SHAPE[:2])
    draws[..., [names[f"order_{i}"] for i in range(4)]] = [3, 0, 2, 1]
    draws[..., names["blur"]] = 1
    draws[..., names["sigma"]] = rng.uniform(0.1, 2.0, CLIPS_SHAPE[:2])
    augmented = dict(raw, clips=np.asarray(device_augment.augment_clips(raw["clips"], draws, augmentation)))
    assert not np.array_equal(augmented["clips"], raw["clips"])
    results = []
    for batch in (dict(raw, augment=draws), augmented):
        state = factory.create(jax.random.key(0))
        new_state, metrics = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(1))
        results.append((float(metrics["loss"]), jax.device_get(new_state.params)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), results[0][1], results[1][1])

    plain = step_lib.jit_train_step(framework, tx, factory.shardings, mesh_lib.batch_sharding(mesh),
                                    mesh_lib.replicated_sharding(mesh))
    with pytest.raises(ValueError, match="no AugmentConfig"):
        plain(factory.create(jax.random.key(0)), jax.device_put(dict(raw, augment=draws),
                                                                 mesh_lib.batch_sharding(mesh)), jax.random.key(1))


@pytest.mark.parametrize("written_by_replicas", [True, False])
def test_checkpoint_restores_whichever_way_its_replicated_arrays_were_written(tmp_path, written_by_replicas):
    """`checkpoint.use_replica_parallel_saving` (off except on TPUs) does not change what is on disk."""
    import orbax.checkpoint as ocp
    from jax.sharding import NamedSharding, PartitionSpec

    from stjax.train import checkpoint as checkpoint_lib
    from stjax.train.state import TrainState

    mesh = mesh_lib.create_mesh()
    assert mesh.devices.size == 8
    replicated, sharded = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    values = np.arange(8 * 3 * 5, dtype=np.float32).reshape(8, 3, 5)
    state = TrainState(step=jax.device_put(np.int32(5), replicated),
                       params={"w": jax.device_put(values, replicated), "b": jax.device_put(values[0, 0], replicated)},
                       batch_stats={"mean": jax.device_put(values[:, 0] + 1, replicated)},
                       extra={"queue": jax.device_put(values * 2, sharded)},
                       opt_state={"m": jax.device_put(-values, replicated)})
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path))
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    assert handler._use_replica_parallel is False and handler._array_metadata_store is not None  # on CPUs
    try:
        checkpoint_lib.use_replica_parallel_saving(written_by_replicas)
        checkpointer.save(state, {"data_batches_consumed": 5}, force=True)
        checkpointer.wait()
        checkpoint_lib.use_replica_parallel_saving(not written_by_replicas)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        restored, meta = checkpointer.restore(abstract)
    finally:
        checkpoint_lib.use_replica_parallel_saving(False)
        checkpointer.close()
    assert meta == {"data_batches_consumed": 5}
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        assert a.sharding == b.sharding
        np.testing.assert_array_equal(jax.device_get(a), jax.device_get(b))


# --- non-finite steps: found on the device at every step, never saved ------------------------------------------

def _poisoned(framework, loss_nan_at=None, grad_nan_at=None):
    """`framework` whose loss and gradients are NaN at 0-based step `loss_nan_at`, or whose loss stays finite
    while its gradients are NaN at `grad_nan_at` (so the update, not the loss, makes the weights non-finite)."""
    original = framework.loss

    @jax.custom_vjp
    def nan_gradient_if(x, bad):
        return x

    nan_gradient_if.defvjp(lambda x, bad: (x, bad),
                           lambda bad, g: (jnp.where(bad > 0, jnp.nan, g), jnp.zeros_like(bad)))

    def loss(params, batch_stats, extra, clips, rng, step):
        value, aux = original(params, batch_stats, extra, clips, rng, step)
        if loss_nan_at is not None:
            value = value * jnp.where(step == loss_nan_at, jnp.nan, 1.0)
        if grad_nan_at is not None:
            value = nan_gradient_if(value, (step == grad_nan_at).astype(jnp.float32))
        return value, aux

    framework.loss = loss
    return framework


def test_the_first_non_finite_step_is_named_though_it_was_not_logged(tmp_path):
    """A NaN at step 5, logged every 2 steps: named as step 5 (the loop used to name step 6, where it looked)."""
    from stjax.train import metrics as metrics_lib

    config = _config(log_every=2, checkpoint_every=3)
    framework = _poisoned(objectives.create_framework(config, total_steps=8), loss_nan_at=4)  # the 5th step only
    with pytest.raises(pretrain_lib.NonFiniteLossError,
                       match=r"^loss is nan at step 5; stopping. Last good checkpoint: step 3 in .*checkpoints "
                             r"\(seen at step 6; the steps after 5 changed nothing\)$"):
        pretrain_lib.pretrain(config, str(tmp_path), framework, _make_batches, CLIPS_SHAPE, 8, steps_per_epoch=2,
                              mesh=mesh_lib.create_mesh())
    assert [r["step"] for r in metrics_lib.read_metrics(str(tmp_path))] == [2, 3, 4]


def test_a_state_made_non_finite_by_its_update_is_never_checkpointed(tmp_path):
    """NaN gradients at a checkpoint step (4) with a finite loss: nothing is saved at 4, and the good checkpoint
    of step 2 survives `keep_checkpoints=1` (the loop used to save step 4's NaN weights over it, calling them good)."""
    from stjax.train import checkpoint as checkpoint_lib

    config = _config(log_every=100, checkpoint_every=2, keep_checkpoints=1)
    framework = _poisoned(objectives.create_framework(config, total_steps=8), grad_nan_at=3)
    with pytest.raises(pretrain_lib.NonFiniteLossError,
                       match=r"^the gradient norm is nan at step 4 \(loss [0-9.]+\); stopping. Last good checkpoint: "
                             r"step 2 in .*checkpoints$"):
        pretrain_lib.pretrain(config, str(tmp_path), framework, _make_batches, CLIPS_SHAPE, 8, steps_per_epoch=2,
                              mesh=mesh_lib.create_mesh())
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2]
    # the good checkpoint is what the same command resumes from; a diverged one is refused there, not trained on
    factory = StateFactory(framework, optimizer_lib.create_optimizer(config, 8, 8, 2)[0], CLIPS_SHAPE,
                           mesh_lib.create_mesh())
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=2)
    state, meta = checkpointer.restore(factory.abstract)
    assert bool(step_lib.all_finite(state))
    poisoned = state.replace(step=state.step + 1,
                             params=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.inf), state.params))
    checkpointer.save(poisoned, meta, force=True)  # as an older stjax could leave it
    checkpointer.close()
    with pytest.raises(pretrain_lib.NonFiniteLossError,
                       match=r"the checkpoint of step 3 in .*checkpoints holds non-finite values"):
        pretrain_lib.pretrain(config, str(tmp_path), objectives.create_framework(config, total_steps=8),
                              _make_batches, CLIPS_SHAPE, 8, steps_per_epoch=2, mesh=mesh_lib.create_mesh())


def test_the_guarded_step_keeps_the_state_from_the_first_non_finite_step_on():
    config = _config()
    framework = objectives.create_framework(config, total_steps=10)
    original = framework.loss

    def nan_on_white_clips(params, batch_stats, extra, clips, rng, step):
        value, aux = original(params, batch_stats, extra, clips, rng, step)
        return jnp.where(jnp.mean(clips) > 2.0, jnp.nan, value), aux  # all-255 clips normalise to 2.44

    framework.loss = nan_on_white_clips
    mesh = mesh_lib.create_mesh(1)
    tx, _ = optimizer_lib.create_optimizer(config, config.batch_size, 10, steps_per_epoch=2)
    factory = StateFactory(framework, tx, CLIPS_SHAPE, mesh)
    step = step_lib.jit_guarded_train_step(framework, tx, factory.shardings, mesh_lib.batch_sharding(mesh),
                                           mesh_lib.replicated_sharding(mesh))
    state = factory.create(jax.random.key(0))
    divergence = jax.device_put(step_lib.no_divergence(), mesh_lib.replicated_sharding(mesh))  # as the loop does
    white = dict(_batch(1), clips=np.full(CLIPS_SHAPE, 255, np.uint8))
    seen = []
    for batch in (_batch(0), white, _batch(2)):  # finite, NaN, then a finite loss again: the state stays at step 1
        state, metrics = step(state, divergence, jax.device_put(batch, mesh_lib.batch_sharding(mesh)),
                              jax.random.key(1))
        divergence = metrics["divergence"]
        seen.append(jax.device_get((state, divergence, metrics["loss"])))
    (after_1, ok, _), (after_2, bad, _), (after_3, still, loss_3) = seen
    assert int(ok["step"]) == 0 and int(bad["step"]) == 2 and np.isnan(bad["loss"]) and int(still["step"]) == 2
    assert np.isfinite(loss_3)
    assert int(after_1.step) == int(after_2.step) == int(after_3.step) == 1
    for a, b, c in zip(jax.tree.leaves(after_1), jax.tree.leaves(after_2), jax.tree.leaves(after_3)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


# --- metrics.jsonl: atomic lines, a torn tail tolerated, one record per step ----------------------------------

def test_metrics_with_torn_lines_are_read_and_repaired(tmp_path, capsys):
    from stjax import main as main_lib
    from stjax.train import metrics as metrics_lib

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "lo\n{"step": 2, "loss": 2.5}\n'
                    '{"step": 3, "loss": 2.0}\n{"step": 4, "loss": 1.5}\n{"step": 5, "lo')
    assert [r["step"] for r in metrics_lib.read_metrics(str(tmp_path))] == [1, 2, 3, 4]
    err = capsys.readouterr().err
    assert f"warning: {path}, line 2: not a complete record; skipped" in err
    assert f"warning: {path}, line 6: its last line, torn by an interrupted write; skipped" in err
    assert main_lib._last_loss(str(tmp_path)) == 1.5  # what the end of a run reads (it used to fail on the tail)

    # a session resuming from step 3: the records of steps 4.. (trained again) and the torn lines go
    writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False, start_step=3)
    assert writer.dropped == 3  # step 4, and the two torn lines
    assert "dropped 1 records of steps after 3" in capsys.readouterr().out
    writer.write(4, {"loss": 1.25})
    writer.close()
    assert path.read_text() == ('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n{"step": 3, "loss": 2.0}\n'
                                '{"step": 4, "loss": 1.25}\n')
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left

    writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False, start_step=4)
    assert writer.dropped == 0  # nothing to drop: the file is not rewritten
    writer.close()


def test_each_record_is_one_write_of_a_whole_line(tmp_path, monkeypatch):
    import os

    from stjax.train import metrics as metrics_lib

    import fcntl

    writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False, start_step=0)
    assert fcntl.fcntl(writer._fd, fcntl.F_GETFL) & os.O_APPEND  # every write lands at the end of the file
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(bytes(data)) or real_write(fd, data))
    writer.write(7, {"loss": 0.5, "grad_norm": 2.0})
    writer.close()
    assert writes == [b'{"step": 7, "loss": 0.5, "grad_norm": 2.0}\n']
    assert (tmp_path / "metrics.jsonl").read_bytes() == writes[0]
