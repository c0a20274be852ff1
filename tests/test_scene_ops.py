"""stjax.data.scene_ops (JAX) and stjax.data.scene_ops_tf (host): BE's and DSM's clip transforms give the same
clips from the same draws, do what the methods say (checked against NumPy computations of the formulas), draw
in their ranges, refuse bad settings; `stjax.data.show` draws them."""
import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

import jax
import jax.numpy as jnp

from stjax import configlib
from stjax.data import scene_ops as S
from stjax.data import scene_ops_tf as H
from stjax.data import show

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLD_KEYS = ("centres", "shifts", "active")

# jitted: one compile per shape instead of op-by-op dispatch (the suite's time); the ops themselves unchanged
_be_draws = jax.jit(S.background_erasing_draws, static_argnums=(1, 2, 3, 4))
_sld_draws = jax.jit(S.sld_draws, static_argnums=(1, 2, 3, 4, 5, 6))
_tld_draws = jax.jit(S.tld_draws, static_argnums=(1, 2, 3, 4, 5))
_be = jax.jit(S.background_erase)
_sld = jax.jit(S.spatial_local_disturbance)
_tld = jax.jit(S.temporal_local_disturbance)
_coords = jax.jit(S.sld_source_coordinates, static_argnums=(0, 1))


def _clips(lead, t=5, h=14, w=18, seed=0):
    """float32 uint8-range clips [*lead, T, H, W, 3]: smooth blobs plus noise (distinct frames)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(lead))
    small = rng.uniform(0, 255, (n * t, 4, 5, 3)).astype(np.float32)
    big = tf.image.resize(small, [h, w], method="bilinear").numpy()
    noisy = np.clip(big + rng.normal(0, 10, big.shape), 0, 255).astype(np.float32)
    return noisy.reshape(tuple(lead) + (t, h, w, 3))


def _per_clip(fn, clips, draws, keys):
    """The host twin `fn` applied clip by clip over the leading dims (clips [*lead, T, H, W, C])."""
    lead = clips.shape[:-4]
    flat = clips.reshape((-1,) + clips.shape[-4:])
    parts = [np.asarray(draws[k]).reshape((flat.shape[0],) + np.asarray(draws[k]).shape[len(lead):]) for k in keys]
    out = [fn(tf.constant(flat[i]), *(p[i] for p in parts)).numpy() for i in range(flat.shape[0])]
    return np.stack(out).reshape(clips.shape)


def _ramp_image(h, w, a=3.0, b=-2.0, c=100.0):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return a * xs + b * ys + c


def _consecutive_mad(clips):
    """Mean |x_t − x_{t−1}| over frames and pixels, per clip: [...]."""
    return np.abs(np.diff(clips, axis=-4)).mean(axis=(-4, -3, -2, -1))


# ----------------------------------------------------------------------------- host twin == JAX op

LEADS = [(), (3,), (2, 2)]


@pytest.mark.parametrize("lead", LEADS, ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_background_erase_host_equals_device(lead, seed):
    clips = _clips(lead, seed=seed)
    draws = _be_draws(jax.random.PRNGKey(seed), lead, clips.shape[-4], 0.3, per_clip=seed == 1)
    device = np.asarray(_be(jnp.asarray(clips), **draws))
    host = _per_clip(H.background_erase, clips, draws, ("lam", "frame"))
    np.testing.assert_allclose(host, device, rtol=0, atol=1e-5)
    assert not np.allclose(host, clips, atol=1e-3)  # something was blended in


@pytest.mark.parametrize("lead", LEADS, ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sld_host_equals_device(lead, seed):
    clips = _clips(lead, h=17 + seed, w=23 - seed, seed=seed)
    h, w = clips.shape[-3:-1]
    draws = _sld_draws(jax.random.PRNGKey(seed), lead, h, w)
    device = np.asarray(_sld(jnp.asarray(clips), **draws))
    host = _per_clip(H.spatial_local_disturbance, clips, draws, SLD_KEYS)
    # XLA's float32 norm is one ulp off the exact rounding (measured ~1e-6 px in the coordinates, TF's equals
    # NumPy's), which a pixel gradient of up to ~255/px turns into < 1e-3 on uint8-range noise; almost all
    # pixels agree to 1e-5
    np.testing.assert_allclose(host, device, rtol=0, atol=2e-3)
    assert np.mean(np.abs(host - device) > 1e-5) < 0.02
    flat = {k: np.asarray(v).reshape((-1,) + np.asarray(v).shape[len(lead):]) for k, v in draws.items()}
    for i in range(flat["active"].shape[0]):
        coords_jax = np.asarray(_coords(h, w, *(flat[k][i] for k in SLD_KEYS)))
        coords_tf = H.sld_source_coordinates(h, w, *(flat[k][i] for k in SLD_KEYS)).numpy()
        np.testing.assert_allclose(coords_tf, coords_jax, rtol=0, atol=1e-5)
    assert not np.allclose(host, clips, atol=1e-3)  # the warp moved something


def test_sld_host_equals_device_where_the_warp_reaches_the_border():
    """Points near the top-left corner with large shifts: sources left of / above the frame are clamped."""
    clips = _clips((4,), h=21, w=19, seed=9)
    draws = _sld_draws(jax.random.PRNGKey(9), (4,), 21, 19, centre=(0.0, 0.1), shift=(0.2, 0.35))
    coords = np.stack([np.asarray(_coords(21, 19, *(draws[k][i] for k in SLD_KEYS)))
                       for i in range(4)])
    assert np.mean(coords == 0) > 0.01  # the clamp is in use
    device = np.asarray(_sld(jnp.asarray(clips), **draws))
    host = _per_clip(H.spatial_local_disturbance, clips, draws, SLD_KEYS)
    np.testing.assert_allclose(host, device, rtol=0, atol=2e-3)


@pytest.mark.parametrize("lead", LEADS, ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tld_host_equals_device(lead, seed):
    clips = _clips(lead, t=8, seed=seed)
    draws = _tld_draws(jax.random.PRNGKey(seed), lead, 8)
    device = np.asarray(_tld(jnp.asarray(clips), **draws))
    host = _per_clip(H.temporal_local_disturbance, clips, draws, ("indices",))
    np.testing.assert_array_equal(host, device)


def test_host_twins_run_inside_a_tf_data_map_with_dynamic_shapes():
    """Graph mode, H, W, T and P unknown when traced: the same clips as the JAX ops."""
    clips = _clips((3,), t=6, h=15, w=19, seed=7)
    be = _be_draws(jax.random.PRNGKey(1), (3,), 6, per_clip=True)
    sld = _sld_draws(jax.random.PRNGKey(2), (3,), 15, 19)
    tld = _tld_draws(jax.random.PRNGKey(3), (3,), 6)
    numpy = lambda d: {k: np.asarray(v) for k, v in d.items()}  # noqa: E731
    ds = tf.data.Dataset.from_tensor_slices((clips, numpy(be), numpy(sld), numpy(tld)))

    def transform(clip, be, sld, tld):
        return (H.background_erase(clip, be["lam"], be["frame"]), H.spatial_local_disturbance(clip, **sld),
                H.temporal_local_disturbance(clip, tld["indices"]))

    spec = (tf.TensorSpec([None, None, None, 3], tf.float32),
            {"lam": tf.TensorSpec([], tf.float32), "frame": tf.TensorSpec([], tf.int32)},
            {"centres": tf.TensorSpec([None, 2], tf.float32), "shifts": tf.TensorSpec([None, 2], tf.float32),
             "active": tf.TensorSpec([None], tf.bool)},
            {"indices": tf.TensorSpec([None], tf.int32)})
    traced = tf.function(transform, input_signature=spec)
    out = [tuple(x.numpy() for x in traced(*args)) for args in ds]
    out_map = list(ds.map(transform).as_numpy_iterator())
    x = jnp.asarray(clips)
    expected = (_be(x, **be), _sld(x, **sld),
                _tld(x, **tld))
    for i in range(3):
        for got in (out[i], out_map[i]):
            for g, e, atol in zip(got, expected, (1e-5, 2e-3, 0)):
                np.testing.assert_allclose(g, np.asarray(e[i]), rtol=0, atol=atol)


# ----------------------------------------------------------------------------- background erasing

def test_background_erase_is_the_formula():
    clips = _clips((2,), t=4, seed=3)
    lam, frame = np.array([0.25, 0.1], np.float32), np.array([3, 0], np.int32)
    got = np.asarray(_be(jnp.asarray(clips), jnp.asarray(lam), jnp.asarray(frame)))
    x = clips.astype(np.float64)
    for b in range(2):
        expected = (1 - lam[b]) * x[b] + lam[b] * x[b, frame[b]][None]
        np.testing.assert_allclose(got[b], expected, rtol=0, atol=1e-3)
        np.testing.assert_allclose(H.background_erase(clips[b], lam[b], frame[b]).numpy(), expected, atol=1e-3)
        # the temporal derivative is scaled by (1 − λ), not destroyed
        np.testing.assert_allclose(np.diff(got[b], axis=0), (1 - lam[b]) * np.diff(x[b], axis=0), atol=1e-3)
    # λ = 0 is the identity
    zero = _be(jnp.asarray(clips), jnp.zeros(2), jnp.asarray(frame))
    np.testing.assert_array_equal(np.asarray(zero), clips)
    np.testing.assert_array_equal(H.background_erase(clips[0], 0.0, 2).numpy(), clips[0])


def test_background_erasing_draws_ranges():
    rng = jax.random.PRNGKey(0)
    d = _be_draws(rng, (64, 2), 6, max_lambda=0.3)
    lam, frame = np.asarray(d["lam"]), np.asarray(d["frame"])
    assert lam.shape == frame.shape == (64, 2) and lam.dtype == np.float32 and frame.dtype == np.int32
    assert np.all(lam == lam.flat[0]) and 0 <= lam.flat[0] <= 0.3  # one λ for the batch (the official code)
    assert frame.min() >= 0 and frame.max() <= 5 and len(np.unique(frame)) == 6
    lams = [float(_be_draws(jax.random.PRNGKey(i), (), 6, 0.3)["lam"]) for i in range(40)]
    assert 0 <= min(lams) and max(lams) <= 0.3 and np.std(lams) > 0.03
    per = np.asarray(_be_draws(rng, (256,), 6, max_lambda=0.5, per_clip=True)["lam"])
    assert 0 <= per.min() and per.max() <= 0.5 and len(np.unique(per)) > 200
    assert abs(per.mean() - 0.25) < 0.05  # max_lambda · U(0, 1)
    assert np.all(np.asarray(_be_draws(rng, (8,), 6, max_lambda=0.0)["lam"]) == 0)


# ----------------------------------------------------------------------------- spatial local disturbance

def _boxes_mask(h, w, centres, shifts, active):
    """bool [H, W]: pixels inside some active point's box |p − c| < 3·s (NumPy)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    mask = np.zeros((h, w), bool)
    for c, s, a in zip(np.asarray(centres, np.float64), np.asarray(shifts, np.float64), np.asarray(active)):
        if a:
            mask |= (np.abs(xs - c[0]) < 3 * s[0]) & (np.abs(ys - c[1]) < 3 * s[1])
    return mask


def test_sld_one_warp_for_all_frames():
    h, w = 20, 26
    draws = _sld_draws(jax.random.PRNGKey(4), (2,), h, w)
    clips = _clips((2,), t=4, h=h, w=w, seed=4)
    out = np.asarray(_sld(jnp.asarray(clips), **draws))
    for b in range(2):
        for t in range(4):  # each frame alone gets the same warp
            single = _sld(jnp.asarray(clips[b, t:t + 1]), *(draws[k][b] for k in SLD_KEYS))
            np.testing.assert_allclose(out[b, t], np.asarray(single)[0], atol=1e-4)
    # a static clip stays static (its frame differences stay zero); frames that differ by a constant keep it
    static = np.repeat(clips[:, :1], 4, axis=1)
    warped = np.asarray(_sld(jnp.asarray(static), **draws))
    assert np.all(warped == warped[:, :1])
    assert not np.allclose(warped, static, atol=1e-2)
    shifted = static + np.arange(4, dtype=np.float32)[None, :, None, None, None] * 10
    warped = np.asarray(_sld(jnp.asarray(shifted), **draws))
    np.testing.assert_allclose(np.diff(warped, axis=1), 10.0, atol=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sld_leaves_pixels_far_from_every_point_unchanged(seed):
    h, w = 40, 33
    draws = _sld_draws(jax.random.PRNGKey(seed), (), h, w, shift=(0.05, 0.12))
    clip = _clips((), t=3, h=h, w=w, seed=seed)
    mask = _boxes_mask(h, w, *(draws[k] for k in SLD_KEYS))
    assert 0 < mask.mean() < 1
    for out in (np.asarray(_sld(jnp.asarray(clip), **draws)),
                H.spatial_local_disturbance(clip, *(np.asarray(draws[k]) for k in SLD_KEYS)).numpy()):
        np.testing.assert_array_equal(out[:, ~mask], clip[:, ~mask])
        assert np.abs(out[:, mask] - clip[:, mask]).max() > 1.0


def test_sld_moves_content_near_a_point_by_w_times_s():
    """One point on a linear image (bilinear sampling is exact on it): output p shows input p − w(p)·s with
    w = 0.5 / (3·(‖p − (c + s)‖ / ‖s‖)⁴ + 1) inside the box, computed here in float64."""
    h, w = 48, 56
    centre, shift = np.array([[24.3, 21.7]]), np.array([[4.6, 3.2]])
    image = _ramp_image(h, w)
    clip = np.repeat(image[None, ..., None], 2, axis=0).astype(np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    d = np.stack([xs, ys], -1) - (centre[0] + shift[0])
    weight = 0.5 / (3 * (np.linalg.norm(d, axis=-1) / np.linalg.norm(shift[0])) ** 4 + 1)
    inside = _boxes_mask(h, w, centre, shift, [True])
    src_x = np.clip(np.where(inside, xs - weight * shift[0, 0], xs), 0, w - 1)
    src_y = np.clip(np.where(inside, ys - weight * shift[0, 1], ys), 0, h - 1)
    expected = 3.0 * src_x - 2.0 * src_y + 100.0
    args = (centre.astype(np.float32), shift.astype(np.float32), np.array([True]))
    for out in (np.asarray(_sld(jnp.asarray(clip), *(jnp.asarray(a) for a in args))),
                H.spatial_local_disturbance(clip, *args).numpy()):
        np.testing.assert_allclose(out[..., 0], np.broadcast_to(expected, (2, h, w)), atol=1e-3)
        # at the pixel nearest c + s the content came from about 0.5·s back: moved by about w·s, w ≈ 0.5
        px, py = np.round(centre[0] + shift[0]).astype(int)
        moved = (image[py, px] - out[0, py, px, 0]) / (3.0 * shift[0, 0] - 2.0 * shift[0, 1])
        assert 0.4 < moved <= 0.5
    # an inactive point does nothing
    still = H.spatial_local_disturbance(clip, args[0], args[1], np.array([False])).numpy()
    np.testing.assert_array_equal(still, clip)


def test_sld_draws_ranges():
    h, w = 40, 100
    d = _sld_draws(jax.random.PRNGKey(0), (500,), h, w)
    centres, shifts, active = (np.asarray(d[k]) for k in SLD_KEYS)
    assert centres.shape == shifts.shape == (500, 3, 2) and active.shape == (500, 3) and active.dtype == bool
    counts = active.sum(-1)
    assert set(np.unique(counts)) == {1, 2, 3}
    assert np.all(active == (np.arange(3) < counts[:, None]))  # the first n points are the active ones
    side = np.array([w, h], np.float64)
    for values, (lo, hi) in ((centres, S.SLD_CENTRE), (shifts, S.SLD_SHIFT)):
        frac = values / side
        assert frac.min() >= lo - 1e-6 and frac.max() <= hi + 1e-6
        assert frac.min() < lo + 0.02 and frac.max() > hi - 0.02  # spread over the range, both axes scaled
    assert centres[..., 0].max() > 0.55 * w and centres[..., 1].max() < 0.63 * h
    # the official 224² constants: centres in [60, 140), shifts in [10, 20) px
    d224 = _sld_draws(jax.random.PRNGKey(1), (200,), 224, 224)
    assert 60 <= np.asarray(d224["centres"]).min() and np.asarray(d224["centres"]).max() < 140
    assert 10 <= np.asarray(d224["shifts"]).min() and np.asarray(d224["shifts"]).max() < 20
    two = _sld_draws(jax.random.PRNGKey(2), (50,), h, w, num_points=(2, 2))
    assert np.asarray(two["active"]).shape == (50, 2) and np.all(np.asarray(two["active"]))


# ----------------------------------------------------------------------------- temporal local disturbance

def test_tld_shows_input_frames_in_another_order():
    t = 8
    clips = _clips((64,), t=t, h=6, w=7, seed=5)
    draws = _tld_draws(jax.random.PRNGKey(5), (64,), t)
    indices = np.asarray(draws["indices"])
    assert indices.shape == (64, t) and indices.min() >= 0 and indices.max() < t
    out = np.asarray(_tld(jnp.asarray(clips), **draws))
    for b in range(64):  # every output frame is some input frame: the one its index names
        for j in range(t):
            matches = [i for i in range(t) if np.array_equal(out[b, j], clips[b, i])]
            assert matches == [indices[b, j]]
    changed = ~np.all(indices == np.arange(t), axis=-1)
    assert changed.all()
    repeats = np.array([len(set(row)) < t for row in indices])
    assert repeats.mean() > 0.8  # insertions repeat a frame (and drop another)
    many = np.concatenate([np.asarray(_tld_draws(jax.random.PRNGKey(100 + i), (64,), t)["indices"])
                           for i in range(20)])
    assert not np.any(np.all(many == np.arange(t), axis=-1))  # the identity is never drawn
    for frames in (2, 3):  # where rounds often undo each other, an extra swap still changes the order
        short = np.asarray(_tld_draws(jax.random.PRNGKey(7), (2000,), frames)["indices"])
        assert not np.any(np.all(short == np.arange(frames), axis=-1))


def test_tld_swaps_only_keep_the_frames():
    t = 10
    clips = _clips((32,), t=t, h=6, w=7, seed=6)
    draws = _tld_draws(jax.random.PRNGKey(7), (32,), t, insert_rounds=0, swap_rounds=3)
    indices = np.asarray(draws["indices"])
    assert np.all(np.sort(indices, axis=-1) == np.arange(t))  # a permutation
    out = np.asarray(_tld(jnp.asarray(clips), **draws))
    means_in, means_out = clips.mean(axis=(2, 3, 4)), out.mean(axis=(2, 3, 4))
    np.testing.assert_allclose(np.sort(means_out, -1), np.sort(means_in, -1), atol=1e-3)
    assert np.mean(np.any(indices != np.arange(t), axis=-1)) > 0.9


def test_tld_breaks_the_frame_order_and_sld_keeps_it():
    """The issue's example: on a smooth temporal ramp (x_t = pattern + 12·t) consecutive frames differ by 12;
    TLD's jumps make that statistic grow, SLD (a spatial warp) keeps it."""
    t, n, h, w = 8, 64, 16, 16
    pattern = _clips((n,), t=1, h=h, w=w, seed=8) * 0.5
    ramp = (pattern + 12.0 * np.arange(t, dtype=np.float32)[None, :, None, None, None]).astype(np.float32)
    before = _consecutive_mad(ramp)
    np.testing.assert_allclose(before, 12.0, atol=1e-3)
    tld = _tld(jnp.asarray(ramp), **_tld_draws(jax.random.PRNGKey(9), (n,), t))
    sld = _sld(jnp.asarray(ramp), **_sld_draws(jax.random.PRNGKey(9), (n,), h, w))
    after_tld, after_sld = _consecutive_mad(np.asarray(tld)), _consecutive_mad(np.asarray(sld))
    assert after_tld.mean() > 1.5 * before.mean()
    np.testing.assert_allclose(after_sld, before, atol=1e-2)


# ----------------------------------------------------------------------------- bad settings

@pytest.mark.parametrize("call, field", [
    (lambda: S.background_erasing_draws(jax.random.PRNGKey(0), (2,), 4, max_lambda=1.5), "max_lambda"),
    (lambda: S.background_erasing_draws(jax.random.PRNGKey(0), (2,), 4, max_lambda=-0.1), "max_lambda"),
    (lambda: S.sld_draws(jax.random.PRNGKey(0), (2,), 8, 8, num_points=(0, 2)), "num_points"),
    (lambda: S.sld_draws(jax.random.PRNGKey(0), (2,), 8, 8, num_points=(3, 1)), "num_points"),
    (lambda: S.sld_draws(jax.random.PRNGKey(0), (2,), 8, 8, centre=(0.7, 0.3)), "centre"),
    (lambda: S.sld_draws(jax.random.PRNGKey(0), (2,), 8, 8, centre=(-0.1, 0.5)), "centre"),
    (lambda: S.sld_draws(jax.random.PRNGKey(0), (2,), 8, 8, shift=(0.1, 1.2)), "shift"),
    (lambda: S.tld_draws(jax.random.PRNGKey(0), (2,), 8, insert_rounds=-1), "insert_rounds"),
    (lambda: S.tld_draws(jax.random.PRNGKey(0), (2,), 8, insert_rounds=0, swap_rounds=0), "swap_rounds"),
    (lambda: S.tld_draws(jax.random.PRNGKey(0), (2,), 1), ">= 2 frames"),
], ids=["lambda_high", "lambda_low", "points_zero", "points_order", "centre_order", "centre_low", "shift_high",
        "insert_negative", "no_rounds", "one_frame"])
def test_bad_settings_raise_naming_the_field(call, field):
    with pytest.raises(ValueError, match=field) as info:
        call()
    assert "valid values" in str(info.value) or "frames" in str(info.value)


# ----------------------------------------------------------------------------- the viewer

def _uint8_clips(n=2, t=4, s=24):
    return np.clip(_clips((n,), t=t, h=s, w=s, seed=11), 0, 255).astype(np.uint8)


def test_apply_scene_ops_uses_the_jax_ops_and_settings(tmp_path):
    clips = _uint8_clips()
    result = show.apply_scene_ops(clips, seed=3, settings={"max_lambda": 0.5, "num_points": (2, 2)})
    draws = result["draws"]
    x = jnp.asarray(clips, jnp.float32)
    expected = np.round(np.clip(np.asarray(S.background_erase(x, **draws["background_erasing"])), 0, 255))
    np.testing.assert_array_equal(result["background_erasing"], expected.astype(np.uint8))
    assert np.all(draws["background_erasing"]["lam"] <= 0.5)
    assert np.all(draws["spatial_local_disturbance"]["active"].sum(-1) == 2)
    for name in ("background_erasing", "spatial_local_disturbance", "temporal_local_disturbance"):
        assert result[name].shape == clips.shape and result[name].dtype == np.uint8
    again = show.apply_scene_ops(clips, seed=3, settings={"max_lambda": 0.5, "num_points": (2, 2)})
    np.testing.assert_array_equal(again["spatial_local_disturbance"], result["spatial_local_disturbance"])

    config = ml_collections.ConfigDict({"auxiliary": {"background_erasing": {"weight": 1.0, "max_lambda": 0.2},
                                                      "dsm": {"weight": 1.0, "swap_rounds": 5}}})
    settings = show.scene_op_settings(config)
    assert settings["max_lambda"] == 0.2 and settings["swap_rounds"] == 5 and settings["insert_rounds"] == 2
    assert show.scene_op_settings(ml_collections.ConfigDict())["num_points"] == S.SLD_POINTS

    out = tmp_path / "scene.png"
    show.render_scene_ops_png(clips, str(out), "title", seed=0, labels=["a", "b"])
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_show_scene_ops_on_the_synthetic_set(tmp_path):
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), "demo")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.manual_dir = str(tmp_path / "videos")
    config.data.synthetic.update(num_train=2, num_test=1, size=32, seconds=1.0)
    config.data.augmentation.crop_size = 24
    config.data.shuffle_buffer = 4
    out = show.show_scene_ops(config, str(tmp_path / "scene_ops.png"), num_videos=2)
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
