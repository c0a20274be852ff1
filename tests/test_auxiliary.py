"""`Framework.embed`: the pooled online-backbone features, the same for every framework."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax import objectives
from stjax.objectives import base
from test_frameworks import CLIPS_SHAPE, _config, _key


@pytest.mark.parametrize("name", ["moco", "simclr", "swav"])
def test_embed_is_the_online_backbone_features(name):
    framework = objectives.create_framework(_config(name), total_steps=10, steps_per_epoch=2)
    clips = jax.random.uniform(_key(1), CLIPS_SHAPE)
    params, batch_stats, extra = framework.init(_key(0), clips)
    feats, stats = framework.embed(params, batch_stats, extra, clips, _key(2), train=False)
    expected = framework.backbone.apply(framework.backbone_variables(params, batch_stats),
                                        base.flatten_clips(clips), train=False)
    assert feats.dtype == jnp.float32 and feats.shape[:2] == CLIPS_SHAPE[:2]
    np.testing.assert_allclose(np.asarray(feats).reshape(-1, feats.shape[-1]), np.asarray(expected), rtol=1e-6)
    assert jax.tree.structure(stats) == jax.tree.structure(batch_stats)
    _, trained = framework.embed(params, batch_stats, extra, clips, _key(2), train=True)
    assert set(trained) == set(batch_stats)


# Auxiliary terms (stjax/objectives/auxiliary.py): added to any framework from `config.auxiliary`.

import math  # noqa: E402

import ml_collections  # noqa: E402

from stjax import configlib  # noqa: E402
from stjax.objectives import auxiliary  # noqa: E402
from stjax.train import mesh as mesh_lib  # noqa: E402
from stjax.train import step as step_lib  # noqa: E402
from test_frameworks import _batch, _on, _train_setup  # noqa: E402

BYOL = dict(projector_hidden=(32,), projector_out=16, predictor_hidden=(32,), base_momentum=0.99, pairing="all")


def _with_arrow(name, weight=0.5):
    return _config(name, byol=BYOL, auxiliary=ml_collections.ConfigDict(dict(arrow_of_time=dict(weight=weight))))


def _bce(logits, labels):
    """Binary cross-entropy of sigmoid(logits), written out."""
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    return float(np.mean(-labels * np.log(p) - (1 - labels) * np.log(1 - p)))


def test_reversal_plays_flagged_clips_backwards_and_leaves_the_others():
    term = auxiliary.ArrowOfTime({})
    clips = jax.random.uniform(_key(1), (64, 2, 4, 3, 3, 3))
    reversed_, flags = term.reverse(clips, _key(2))
    clips, reversed_, flags = map(np.asarray, (clips, reversed_, flags))
    assert flags.shape == (64, 2) and set(np.unique(flags)) == {0.0, 1.0}
    assert 0.3 < flags.mean() < 0.7  # 128 fair coins
    for b, r in np.ndindex(64, 2):
        np.testing.assert_array_equal(reversed_[b, r], clips[b, r, ::-1] if flags[b, r] else clips[b, r])


@pytest.mark.parametrize("name", ["byol", "simclr"])
def test_the_loss_is_the_base_loss_plus_the_weighted_term(name):
    weight = 0.5
    framework = objectives.create_framework(_with_arrow(name, weight), total_steps=10, steps_per_epoch=2)
    plain = objectives.create_framework(_config(name, byol=BYOL), total_steps=10, steps_per_epoch=2)
    assert isinstance(framework, auxiliary.WithAuxiliary) and type(plain) is type(framework.base)
    clips = jax.random.uniform(_key(1), CLIPS_SHAPE)
    params, batch_stats, extra = framework.init(_key(0), clips)
    head = params["auxiliary"]["arrow_of_time"]
    assert head["kernel"].shape == (framework.embed(params, batch_stats, extra, clips, _key(0), False)[0].shape[-1], 1)
    rng, step = _key(3), jnp.int32(0)
    loss, (stats, _, metrics) = framework.loss(params, batch_stats, extra, clips, rng, step)
    base_params = {k: v for k, v in params.items() if k != "auxiliary"}
    base_rng, term_rng = jax.random.split(rng)
    base_loss, (base_stats, _, base_metrics) = plain.loss(base_params, batch_stats, extra, clips, base_rng, step)
    # the term from its definition: the clips reversed as drawn, the base's embedding, a linear head, BCE
    _, term_rng = jax.random.split(term_rng)
    reverse_rng, embed_rng = jax.random.split(term_rng)
    reversed_, flags = auxiliary.ArrowOfTime({}).reverse(clips, reverse_rng)
    feats, _ = plain.embed(base_params, base_stats, extra, reversed_, embed_rng, train=True)
    logits = np.asarray(feats) @ np.asarray(head["kernel"])[:, 0] + float(head["bias"][0])
    expected = _bce(logits, np.asarray(flags))
    assert float(metrics["aux/arrow_of_time"]) == pytest.approx(expected, rel=1e-5)
    assert float(loss) == pytest.approx(float(base_loss) + weight * expected, rel=1e-5)
    assert float(metrics["aux/arrow_of_time_accuracy"]) == pytest.approx(np.mean((logits > 0) == np.asarray(flags)))
    assert set(base_metrics) < set(metrics)
    # the term's backbone pass in train mode moves the running statistics once more
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), stats["backbone"], base_stats["backbone"])
    assert max(jax.tree.leaves(moved)) > 0


def test_the_terms_gradient_reaches_its_head_and_the_backbone_only():
    framework = objectives.create_framework(_with_arrow("simclr"), total_steps=10, steps_per_epoch=2)
    clips = jax.random.uniform(_key(1), CLIPS_SHAPE)
    params, batch_stats, extra = framework.init(_key(0), clips)
    rng, step = _key(3), jnp.int32(0)

    def term_only(p):  # the wrapped loss less the base loss on the same draws: weight × term
        base = {k: v for k, v in p.items() if k != "auxiliary"}
        total = framework.loss(p, batch_stats, extra, clips, rng, step)[0]
        return total - framework.base.loss(base, batch_stats, extra, clips, jax.random.split(rng)[0], step)[0]

    grads = jax.jit(jax.grad(term_only))(params)
    largest = {k: max(float(jnp.abs(g).max()) for g in jax.tree.leaves(v)) for k, v in grads.items()}
    assert largest["auxiliary"] > 0 and largest["backbone"] > 0
    assert largest["projector"] < 1e-6 * largest["backbone"]


def test_settings_are_checked_naming_the_field():
    cases = {
        "nope": (dict(nope=dict(weight=1.0)), "auxiliary.nope is invalid; valid values: arrow_of_time"),
        "negative": (dict(arrow_of_time=dict(weight=-1.0)), "auxiliary.arrow_of_time.weight=-1.0 is invalid"),
        "string": (dict(arrow_of_time=dict(weight="0.1")), "auxiliary.arrow_of_time.weight='0.1' is invalid"),
        "bool": (dict(arrow_of_time=dict(weight=True)), "auxiliary.arrow_of_time.weight=True is invalid"),
        "inf": (dict(arrow_of_time=dict(weight=math.inf)), "auxiliary.arrow_of_time.weight=inf is invalid"),
        "missing": (dict(arrow_of_time=dict()), "auxiliary.arrow_of_time.weight=None is invalid"),
        "field": (dict(arrow_of_time=dict(weight=1.0, speed=2)),
                  "auxiliary.arrow_of_time.speed is invalid; valid fields: weight"),
        "not a block": (dict(arrow_of_time=0.1), "auxiliary.arrow_of_time=0.1 is invalid"),
    }
    for block, message in cases.values():
        config = _config("simclr", auxiliary=ml_collections.ConfigDict(block))
        with pytest.raises(ValueError) as error:
            objectives.create_framework(config, total_steps=10, steps_per_epoch=2)
        assert message in str(error.value)
    off = objectives.create_framework(_with_arrow("simclr", 0.0), total_steps=10, steps_per_epoch=2)
    assert not isinstance(off, auxiliary.WithAuxiliary)  # weight 0: the plain framework, the same params


def test_the_pretrain_config_has_a_block_per_registered_term_off_by_default():
    config = configlib.load_config_file("configs/pretrain.py", "demo")
    assert sorted(config.auxiliary) == sorted(auxiliary.AUXILIARY)
    assert all(block.weight == 0 for block in config.auxiliary.values())
    config.auxiliary.arrow_of_time.weight = 0.1  # as --config.auxiliary.arrow_of_time.weight=0.1 sets it
    assert set(auxiliary.create_terms(config.auxiliary)) == {"arrow_of_time"}


def test_train_step_on_8_devices_with_the_term_has_the_1_device_loss():
    config = _with_arrow("swav")
    eight = mesh_lib.create_mesh(8)
    fw, state, step = _train_setup(config, eight)
    assert fw.project == fw.base.project  # what the base offers besides the interface stays reachable
    before = jax.device_get(state)
    batch, rng = _batch(0), _key(1)
    single = jax.device_put((before.params, before.batch_stats, before.extra,
                             step_lib.normalize_clips(batch["clips"])), jax.devices()[0])
    loss1, _ = jax.jit(fw.loss)(*single, jax.random.fold_in(rng, 0), jnp.int32(0))
    state, metrics = step(state, _on(eight, batch), rng)
    metrics = jax.device_get(metrics)
    assert metrics["loss"] == pytest.approx(float(loss1), rel=1e-5)
    assert math.isfinite(metrics["aux/arrow_of_time"]) and 0 <= metrics["aux/arrow_of_time_accuracy"] <= 1
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), jax.device_get(state.params["auxiliary"]),
                         before.params["auxiliary"])
    assert max(jax.tree.leaves(moved)) > 0
