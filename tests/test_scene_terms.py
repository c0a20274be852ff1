"""Background Erasing and DSM as auxiliary terms (`config.auxiliary.background_erasing`, `.dsm`): the composed
loss is the base loss plus weight × the term written out here, any framework takes them, bad settings fail
before any compute, and a composed config trains on 8 devices with the 1-device loss."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from stjax import configlib, objectives
from stjax.data import scene_ops
from stjax.objectives import auxiliary
from stjax.train import mesh as mesh_lib
from stjax.train import step as step_lib
from test_frameworks import CLIPS_SHAPE, _batch, _config, _key, _on, _train_setup

BYOL = dict(projector_hidden=(32,), projector_out=16, predictor_hidden=(32,), base_momentum=0.99, pairing="all")
DSM = dict(margin=0.5, num_points=(1, 3), centre=(60 / 224, 140 / 224), shift=(10 / 224, 20 / 224),
           insert_rounds=2, swap_rounds=2)


def _with(name, term, weight=0.5, **settings):
    defaults = {"background_erasing": dict(max_lambda=0.3, per_clip=False), "dsm": DSM}[term]
    block = {term: dict(weight=weight, **{**defaults, **settings})}
    return _config(name, byol=BYOL, auxiliary=ml_collections.ConfigDict(block))


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _term_inputs(framework, plain, clips, rng, step):
    """The base loss, and what the term sees: its rng, the base's params and batch_stats after the base loss."""
    params, batch_stats, extra = framework.init(_key(0), clips)
    base_params = {k: v for k, v in params.items() if k != "auxiliary"}
    base_rng, rest = jax.random.split(rng)
    base_loss, (base_stats, _, _) = plain.loss(base_params, batch_stats, extra, clips, base_rng, step)
    _, term_rng = jax.random.split(rest)
    return params, batch_stats, extra, base_params, base_stats, float(base_loss), term_rng


@pytest.mark.parametrize("name", ["moco", "byol"])
def test_background_erasing_adds_the_weighted_pull_of_the_distracting_clip(name):
    weight = 0.5
    framework = objectives.create_framework(_with(name, "background_erasing", weight), 10, 2)
    plain = objectives.create_framework(_config(name, byol=BYOL), 10, 2)
    clips, rng, step = jax.random.uniform(_key(1), CLIPS_SHAPE), _key(3), jnp.int32(0)
    params, batch_stats, extra, base_params, base_stats, base_loss, term_rng = _term_inputs(
        framework, plain, clips, rng, step)
    loss, (_, _, metrics) = framework.loss(params, batch_stats, extra, clips, rng, step)
    # the term written out: one λ for the batch, a frame k per clip, (1 − λ)x + λx_k, 2 − 2 cos to the clean clip
    draw_rng, embed_rng = jax.random.split(term_rng)
    draws = scene_ops.background_erasing_draws(draw_rng, CLIPS_SHAPE[:2], CLIPS_SHAPE[2], 0.3)
    lam, k = np.asarray(draws["lam"]), np.asarray(draws["frame"])
    assert np.all(lam == lam.flat[0]) and 0 <= lam.flat[0] <= 0.3
    x = np.asarray(clips)
    static = x[np.arange(8)[:, None], np.arange(2)[None], k][:, :, None]
    mixed = (1 - lam[..., None, None, None, None]) * x + lam[..., None, None, None, None] * static
    feats, _ = plain.embed(base_params, base_stats, extra, jnp.concatenate([clips, jnp.asarray(mixed, jnp.float32)],
                                                                           1), embed_rng, train=True)
    clean, distracted = _unit(feats[:, :2]), _unit(feats[:, 2:])
    expected = float(np.mean(2 - 2 * np.sum(clean * distracted, -1)))
    assert float(metrics["aux/background_erasing"]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert float(loss) == pytest.approx(base_loss + weight * expected, rel=1e-5)
    assert float(metrics["aux/background_erasing_lambda"]) == pytest.approx(float(lam.flat[0]))


def test_dsm_adds_the_weighted_triplets_of_the_disturbed_clips():
    weight = 0.7
    framework = objectives.create_framework(_with("simclr", "dsm", weight), 10, 2)
    plain = objectives.create_framework(_config("simclr"), 10, 2)
    clips, rng, step = jax.random.uniform(_key(1), CLIPS_SHAPE), _key(4), jnp.int32(0)
    params, batch_stats, extra, base_params, base_stats, base_loss, term_rng = _term_inputs(
        framework, plain, clips, rng, step)
    loss, (_, _, metrics) = framework.loss(params, batch_stats, extra, clips, rng, step)
    embed_rng, disturb_rng = jax.random.split(term_rng)
    sld_rng, tld_rng = jax.random.split(disturb_rng)
    sld = scene_ops.sld_draws(sld_rng, (8, 2), 16, 16, (1, 3), DSM["centre"], DSM["shift"])
    tld = scene_ops.tld_draws(tld_rng, (8, 2), 2, 2, 2)
    scene = scene_ops.spatial_local_disturbance(clips, **sld)
    motion = np.asarray(clips)[np.arange(8)[:, None, None], np.arange(2)[None, :, None], np.asarray(tld["indices"])]
    feats, _ = plain.embed(base_params, base_stats, extra,
                           jnp.concatenate([scene, clips, jnp.asarray(motion)], 1), embed_rng, train=True)
    f = _unit(feats)
    a, p, n = f[:, :2], f[:, 2:4][:, ::-1], f[:, 4:]  # positive: the video's other clip (ρ = 2)

    def tm(a, p, n):
        return np.mean(np.maximum(np.linalg.norm(a - p, axis=-1) - np.linalg.norm(a - n, axis=-1) + 0.5, 0))

    expected = tm(a, p, n) + tm(a, p, n[::-1])
    assert float(metrics["aux/dsm"]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert float(loss) == pytest.approx(base_loss + weight * expected, rel=1e-5)


def test_bad_settings_fail_naming_the_field_before_any_compute():
    cases = [
        (("background_erasing", dict(max_lambda=1.5)), "auxiliary.background_erasing.max_lambda=1.5 is invalid"),
        (("background_erasing", dict(max_lambda=-0.1)), "valid values: numbers in [0, 1]"),
        (("background_erasing", dict(weight=-1.0)), "auxiliary.background_erasing.weight=-1.0 is invalid"),
        (("dsm", dict(margin=-1.0)), "auxiliary.dsm.margin=-1.0 is invalid"),
        (("dsm", dict(centre=(0.8, 0.2))), "auxiliary.dsm.centre=(0.8, 0.2) is invalid"),
        (("dsm", dict(shift=(0.1, 1.5))), "auxiliary.dsm.shift=(0.1, 1.5) is invalid"),
        (("dsm", dict(num_points=(0, 2))), "auxiliary.dsm.num_points=(0, 2) is invalid"),
        (("dsm", dict(insert_rounds=0, swap_rounds=0)), "insert_rounds + swap_rounds must be >= 1"),
        (("dsm", dict(lambda_=1)), "auxiliary.dsm.lambda_ is invalid; valid fields: weight, centre, insert_rounds"),
    ]
    for (term, settings), message in cases:
        weight = settings.pop("weight", 0.5)
        config = _with("simclr", term, weight, **settings)
        with pytest.raises(ValueError) as error:
            objectives.create_framework(config, 10, 2)
        assert message in str(error.value), str(error.value)
    nope = _config("simclr", auxiliary=ml_collections.ConfigDict(dict(be=dict(weight=1.0))))
    with pytest.raises(ValueError, match="auxiliary.be is invalid; valid values: arrow_of_time, background_erasing, "
                                         "dsm"):
        objectives.create_framework(nope, 10, 2)


def test_the_pretrain_config_offers_both_off_with_the_official_defaults():
    config = configlib.load_config_file("configs/pretrain.py", "demo")
    assert config.auxiliary.background_erasing.to_dict() == dict(weight=0.0, max_lambda=0.3, per_clip=False)
    assert config.auxiliary.dsm.margin == 0.5 and tuple(config.auxiliary.dsm.num_points) == (1, 3)
    config.auxiliary.background_erasing.weight = 1.0
    config.auxiliary.dsm.weight = 0.5
    assert set(auxiliary.create_terms(config.auxiliary)) == {"background_erasing", "dsm"}


def test_rho_simclr_plus_be_and_dsm_trains_on_8_devices_with_the_1_device_loss():
    config = _config("simclr", auxiliary=ml_collections.ConfigDict(dict(
        background_erasing=dict(weight=1.0, max_lambda=0.3, per_clip=True), dsm=dict(weight=0.5, **DSM))))
    eight = mesh_lib.create_mesh(8)
    fw, state, step = _train_setup(config, eight)
    before = jax.device_get(state)
    batch, rng = _batch(0), _key(1)
    single = jax.device_put((before.params, before.batch_stats, before.extra,
                             step_lib.normalize_clips(batch["clips"])), jax.devices()[0])
    loss1, _ = jax.jit(fw.loss)(*single, jax.random.fold_in(rng, 0), jnp.int32(0))
    for i in range(2):
        state, metrics = step(state, _on(eight, batch), rng)
        metrics = jax.device_get(metrics)
        if i == 0:
            assert metrics["loss"] == pytest.approx(float(loss1), rel=1e-4)
        assert all(math.isfinite(metrics[k]) for k in ("loss", "aux/background_erasing", "aux/dsm"))
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), jax.device_get(state.params["backbone"]),
                         before.params["backbone"])
    assert max(jax.tree.leaves(moved)) > 0


def test_dsm_alone_is_the_triplet_term_on_its_projection():
    config = _config("dsm", dsm=ml_collections.ConfigDict(dict(projector_out=8, **DSM)))
    framework = objectives.create_framework(config, 10, 2)
    clips, rng = jax.random.uniform(_key(1), CLIPS_SHAPE), _key(5)
    params, batch_stats, extra = framework.init(_key(0), clips)
    assert params["projector"]["out"]["kernel"].shape[-1] == 8 and extra == {}
    loss, (stats, _, metrics) = framework.loss(params, batch_stats, extra, clips, rng, jnp.int32(0))

    def embed(x):  # the backbone then the linear projection, written out
        b, n = x.shape[:2]
        feats, bb = framework.backbone.apply({"params": params["backbone"], "batch_stats": batch_stats["backbone"]},
                                             x.reshape((-1,) + x.shape[2:]), train=True, mutable=["batch_stats"])
        w = params["projector"]["out"]
        return (feats @ w["kernel"] + w["bias"]).reshape(b, n, -1), {"backbone": bb["batch_stats"]}

    expected, _, _ = auxiliary.DecoupleSceneMotion({**DSM}).triplets(embed, clips, rng)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert 0 < float(loss) and math.isfinite(float(metrics["negative_distance"]))
    grads = jax.grad(lambda p: framework.loss(p, batch_stats, extra, clips, rng, jnp.int32(0))[0])(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    bad = _config("dsm", dsm=ml_collections.ConfigDict(dict(projector_out=8, **{**DSM, "margin": -1.0})))
    with pytest.raises(ValueError, match=r"^dsm.margin=-1.0 is invalid"):
        objectives.create_framework(bad, 10, 2)
