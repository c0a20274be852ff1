"""Tests for stjax.data.augment: per-clip, stateless, graph-mode video augmentation."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from stjax.data import augment as A

AREA = (0.2, 0.766)
ASPECT = (3 / 4, 4 / 3)
OFF = dict(flip_prob=0.0, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
ALL_ON = dict(flip_prob=1.0, color_jitter_prob=1.0, grayscale_prob=1.0, blur_prob=1.0)


def _seeds(n, salt=0):
    return tf.stack([tf.range(n, dtype=tf.int64), tf.fill([n], tf.constant(salt, tf.int64))], axis=1)


def _smooth_frames(t, h, w, seed=0):
    """uint8 [t, h, w, 3]: smooth colourful images (JPEG-friendly), distinct per frame."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (t, max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    big = tf.image.resize(small, [h, w], method="bilinear").numpy()
    return np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)


def _encode(frames, chroma_downsampling=True, quality=90):
    return tf.stack([tf.io.encode_jpeg(f, quality=quality, chroma_downsampling=chroma_downsampling)
                     for f in frames])


def _map_seeds(fn, seeds, dtype=tf.uint8):
    """Apply fn(seed) for every seed inside one tf.function (graph mode, fast)."""
    return tf.function(lambda s: tf.map_fn(fn, s, fn_output_signature=dtype))(seeds).numpy()


# --------------------------------------------------------------------------------------------
# AugmentConfig


@pytest.mark.parametrize("field,value", [
    ("crop_size", 0),
    ("crop_size", 2.5),
    ("area_range", (0.8, 0.2)),
    ("area_range", (0.0, 0.5)),
    ("area_range", (0.5, 1.5)),
    ("area_range", (0.5,)),
    ("aspect_range", (4 / 3, 3 / 4)),
    ("aspect_range", (-1.0, 1.0)),
    ("blur_sigma_range", (2.0, 0.1)),
    ("blur_sigma_range", (0.0, 1.0)),
    ("flip_prob", 1.5),
    ("color_jitter_prob", -0.1),
    ("grayscale_prob", 2.0),
    ("blur_prob", -1.0),
    ("brightness", -0.1),
    ("contrast", -1.0),
    ("saturation", float("inf")),
    ("hue", 0.6),
    ("hue", -0.1),
    ("ops", ("flip", "sharpen")),
    ("ops", ("blur", "blur")),
    ("ops", 3),
])
def test_config_validation_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        A.AugmentConfig(**{field: value})


def test_config_defaults_and_coercion():
    cfg = A.AugmentConfig()
    assert cfg.crop_size == 224 and cfg.area_range == (0.2, 0.766)
    assert cfg.aspect_range == (3 / 4, 4 / 3) and cfg.blur_sigma_range == (0.1, 2.0)
    cfg = A.AugmentConfig(area_range=[0.3, 1], aspect_range=[1, 1])
    assert cfg.area_range == (0.3, 1.0) and cfg.aspect_range == (1.0, 1.0)
    hash(cfg)  # still a frozen, hashable dataclass
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.crop_size = 3  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Crop windows


def _windows(height, width, n, area=AREA, aspect=ASPECT, salt=0):
    fn = lambda s: A.sample_crop_window(s, tf.constant(height, tf.int64), tf.constant(width),
                                        area, aspect)
    return _map_seeds(fn, _seeds(n, salt), tf.int32)


def _fallback(height, width, aspect):
    in_ratio = width / height
    w, h = width, height
    if in_ratio < aspect[0]:
        h = round(w / aspect[0])
    elif in_ratio > aspect[1]:
        w = round(h * aspect[1])
    return np.array([(height - h) // 2, (width - w) // 2, h, w])


@pytest.mark.parametrize("height,width", [(97, 61), (61, 97), (256, 341), (224, 224), (120, 203)])
def test_crop_window_inside_and_in_range(height, width):
    n = 400
    win = _windows(height, width, n)
    y, x, h, w = win.T
    assert win.dtype == np.int32 and win.shape == (n, 4)
    assert (y >= 0).all() and (x >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (y + h <= height).all() and (x + w <= width).all()

    # Each box was proposed with area in AREA and aspect in ASPECT, then h and w were
    # rounded to integers (+-0.5 px), unless all 10 proposals missed and the central
    # fallback was used.
    frame_area = height * width
    in_range = (((h - 0.5) * (w - 0.5) <= AREA[1] * frame_area + 1e-6)
                & ((h + 0.5) * (w + 0.5) >= AREA[0] * frame_area - 1e-6)
                & ((w - 0.5) / (h + 0.5) <= ASPECT[1] + 1e-6)
                & ((w + 0.5) / (h - 0.5) >= ASPECT[0] - 1e-6))
    is_fallback = (win == _fallback(height, width, ASPECT)).all(axis=1)
    assert (in_range | is_fallback).all(), win[~(in_range | is_fallback)]
    # The range is feasible for these frames, so the fallback is rare.
    assert is_fallback.mean() < 0.05
    # Boxes really vary: many distinct sizes and offsets.
    assert len({tuple(r) for r in win}) > n // 2
    area_frac = h * w / frame_area
    assert area_frac.min() < AREA[0] + 0.1 and area_frac.max() > AREA[1] - 0.1


def test_crop_window_offsets_cover_frame():
    win = _windows(64, 64, 300, area=(0.25, 0.25), aspect=(1.0, 1.0))
    assert (win[:, 2:] == 32).all()  # 0.25 * 64^2 = 32^2, exactly
    for axis in (0, 1):
        off = win[:, axis]
        assert off.min() <= 2
        assert off.max() >= 30 and off.max() <= 32
        assert len(np.unique(off)) > 25


def test_crop_window_fallback_when_infeasible():
    # Aspect >= 3 cannot fit a crop of >= 50% of a square frame: always the fallback,
    # a central crop of the whole frame clamped to the aspect range.
    win = _windows(50, 50, 20, area=(0.5, 0.9), aspect=(3.0, 4.0))
    assert (win == np.array([(50 - 17) // 2, 0, 17, 50])).all()
    win = _windows(61, 97, 20, area=(0.95, 1.0), aspect=(0.5, 0.6))
    assert (win == _fallback(61, 97, (0.5, 0.6))).all()
    # A very wide frame: even the full-height 4:3 box is < 20% of the frame.
    win = _windows(33, 240, 20)
    assert (win == np.array([0, (240 - 44) // 2, 33, 44])).all()


def test_crop_window_seeded():
    a = _windows(97, 61, 20)
    b = _windows(97, 61, 20)
    c = _windows(97, 61, 20, salt=1)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(r) for r in a}) > 1  # not all equal across seeds
    assert not np.array_equal(a, c)
    # int32 seeds work and agree with int64 seeds.
    w32 = A.sample_crop_window(tf.constant([3, 0], tf.int32), 97, 61, AREA, ASPECT)
    np.testing.assert_array_equal(w32.numpy(), a[3])


# --------------------------------------------------------------------------------------------
# Decode / crop / resize


@pytest.mark.parametrize("height,width", [(97, 61), (61, 97)])
@pytest.mark.parametrize("chroma_downsampling", [True, False])
def test_decode_and_crop_matches_crop_of_decoded(height, width, chroma_downsampling):
    frames = _smooth_frames(3, height, width, seed=height)
    encoded = _encode(frames, chroma_downsampling)
    decoded = tf.stack([tf.io.decode_jpeg(e, channels=3) for e in encoded])
    fn_a = tf.function(lambda w: A.decode_and_crop_frames(encoded, w, 24))
    fn_b = tf.function(lambda w: A.crop_and_resize_frames(decoded, w, 24))
    rng = np.random.default_rng(0)
    windows = [[0, 0, height, width], [0, 16, 20, 16], [1, 15, 9, 18], [height - 5, width - 7, 5, 7]]
    windows += list(_windows(height, width, 16, area=(0.05, 1.0), aspect=(0.3, 3.0)))
    for _ in range(8):
        h, w = rng.integers(1, height + 1), rng.integers(1, width + 1)
        windows.append([rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w])
    for window in windows:
        window = tf.constant(np.asarray(window, np.int32))
        a, b = fn_a(window), fn_b(window)
        assert a.shape == (3, 24, 24, 3) and a.dtype == tf.uint8
        # Exact: decode_and_crop decodes a 1-column margin to avoid libjpeg's chroma edge effects.
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=str(window.numpy()))


def test_full_window_resize_is_identity():
    frames = _smooth_frames(2, 40, 40)
    out = A.crop_and_resize_frames(frames, [0, 0, 40, 40], 40)
    np.testing.assert_array_equal(out.numpy(), frames)
    encoded = _encode(frames, chroma_downsampling=False, quality=100)
    decoded = tf.stack([tf.io.decode_jpeg(e, channels=3) for e in encoded]).numpy()
    np.testing.assert_array_equal(A.decode_and_crop_frames(encoded, [0, 0, 40, 40], 40).numpy(), decoded)


def test_crop_resize_picks_the_window():
    # A crop + same-size "resize" is a plain slice.
    frames = np.random.default_rng(1).integers(0, 256, (2, 30, 20, 3), dtype=np.uint8)
    out = A.crop_and_resize_frames(frames, [5, 3, 12, 12], 12).numpy()
    np.testing.assert_array_equal(out, frames[:, 5:17, 3:15])


# --------------------------------------------------------------------------------------------
# augment_clip


def test_identity_when_all_probabilities_zero():
    cfg = A.AugmentConfig(crop_size=32, **OFF)
    frames = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    for s in range(3):
        out = A.augment_clip(frames, tf.constant([s, 9]), cfg)
        np.testing.assert_array_equal(out.numpy(), frames)
    # Full-frame crop + zero probabilities through the whole decode path is the identity too.
    encoded = _encode(frames, chroma_downsampling=False, quality=100)
    decoded = tf.stack([tf.io.decode_jpeg(e, channels=3) for e in encoded]).numpy()
    cfg = A.AugmentConfig(crop_size=32, area_range=(1.0, 1.0), aspect_range=(1.0, 1.0), **OFF)
    out = A.random_resized_clip(encoded, 32, 32, tf.constant([0, 1]), cfg)
    np.testing.assert_array_equal(out.numpy(), decoded)


@pytest.mark.parametrize("overrides", [ALL_ON, {}], ids=["all_on", "defaults"])
def test_one_draw_per_clip_identical_frames(overrides):
    """A clip of T identical frames stays T identical frames (crop, flip, colour, blur shared)."""
    cfg = A.AugmentConfig(crop_size=32, **overrides)
    frame = _smooth_frames(1, 61, 97, seed=5)
    encoded = _encode(np.repeat(frame, 4, axis=0))
    out = _map_seeds(lambda s: A.random_resized_clip(encoded, 61, 97, s, cfg), _seeds(40, 3))
    assert out.shape == (40, 4, 32, 32, 3)
    np.testing.assert_array_equal(out, np.repeat(out[:, :1], 4, axis=1))
    # ... and the clips themselves differ from seed to seed.
    assert len({o[0].tobytes() for o in out}) == 40


def test_parameters_do_not_depend_on_frame():
    """Augmenting [a, b] equals augmenting [a] and [b] alone with the same seed.

    contrast=0 because the contrast reference (mean luma) is taken over the whole clip.
    """
    cfg = A.AugmentConfig(crop_size=24, contrast=0.0, **ALL_ON)
    frames = _smooth_frames(2, 24, 24, seed=7)
    for s in range(5):
        seed = tf.constant([s, 0])
        both = A.augment_clip(frames, seed, cfg).numpy()
        a = A.augment_clip(frames[:1], seed, cfg).numpy()
        b = A.augment_clip(frames[1:], seed, cfg).numpy()
        np.testing.assert_array_equal(both, np.concatenate([a, b]))


def _rate(cfg, frames, changed, n=200, salt=0):
    out = _map_seeds(lambda s: A.augment_clip(frames, s, cfg), _seeds(n, salt))
    return float(np.mean([changed(o) for o in out]))


def test_rates_follow_probabilities():
    frames = _smooth_frames(1, 12, 12, seed=11)
    # Binomial(200, p) has sd <= 0.036; bounds are ~4 sd and exclude p in {0, 1}.
    flip = _rate(A.AugmentConfig(crop_size=12, **{**OFF, "flip_prob": 0.5}), frames,
                 lambda o: np.array_equal(o, frames[:, :, ::-1]))
    assert 0.35 < flip < 0.65
    gray = _rate(A.AugmentConfig(crop_size=12, **{**OFF, "grayscale_prob": 0.2}), frames,
                 lambda o: (o[..., 0] == o[..., 1]).all() and (o[..., 1] == o[..., 2]).all())
    assert 0.08 < gray < 0.32
    jitter = _rate(A.AugmentConfig(crop_size=12, **{**OFF, "color_jitter_prob": 0.8}), frames,
                   lambda o: not np.array_equal(o, frames))
    assert 0.68 < jitter < 0.92
    blur = _rate(A.AugmentConfig(crop_size=12, blur_sigma_range=(1.0, 2.0),
                                 **{**OFF, "blur_prob": 0.5}), frames,
                 lambda o: not np.array_equal(o, frames))
    assert 0.35 < blur < 0.65
    for p in (0.0, 1.0):
        all_or_none = _rate(A.AugmentConfig(crop_size=12, **{**OFF, "flip_prob": p}), frames,
                            lambda o: np.array_equal(o, frames[:, :, ::-1]), n=20)
        assert all_or_none == p


def test_sampled_parameters_ranges_and_independence():
    cfg = A.AugmentConfig()
    keys = list(cfg.draw_names)
    fn = tf.function(lambda s: tf.map_fn(
        lambda x: [A.sample_clip_params(x, cfg)[k] for k in keys], s,
        fn_output_signature=[tf.float32] * len(keys)))
    out = dict(zip(keys, (v.numpy() for v in fn(_seeds(500)))))
    out["order"] = np.stack([out[f"order_{i}"] for i in range(4)], axis=1).astype(int)
    for k in ("flip", "grayscale", "jitter", "blur"):
        assert set(np.unique(out[k])) == {0.0, 1.0}
    for k in ("brightness", "contrast", "saturation"):
        assert (out[k] >= 0.4).all() and (out[k] <= 1.6).all()
        assert out[k].min() < 0.5 and out[k].max() > 1.5
    assert (np.abs(out["hue"]) <= 0.15).all() and out["hue"].min() < -0.13 and out["hue"].max() > 0.13
    assert (out["sigma"] >= 0.1).all() and (out["sigma"] <= 2.0).all()
    assert (np.sort(out["order"], axis=1) == np.arange(4)).all()  # permutations
    assert len({tuple(o) for o in out["order"]}) == 24  # all orders occur
    assert len(np.unique(out["brightness"])) == 500
    # Independent draws: the flip and grayscale decisions are uncorrelated.
    assert abs(np.corrcoef(out["flip"], out["grayscale"])[0, 1]) < 0.2
    assert abs(np.corrcoef(out["brightness"], out["contrast"])[0, 1]) < 0.2
    # Strength >= 1 floors the factor at 0 (torchvision's max(0, 1 - s)).
    strong = A.sample_clip_params(tf.constant([0, 0]), A.AugmentConfig(brightness=1.5))
    assert 0.0 <= float(strong["brightness"]) <= 2.5


def test_same_seed_same_output_and_graph_modes():
    cfg = A.AugmentConfig(crop_size=32)
    frames = _smooth_frames(4, 61, 97, seed=3)
    encoded = _encode(frames)
    eager = [A.random_resized_clip(encoded, 61, 97, tf.constant([s, 5], tf.int64), cfg).numpy()
             for s in range(3)]
    again = A.random_resized_clip(encoded, 61, 97, tf.constant([0, 5], tf.int64), cfg).numpy()
    np.testing.assert_array_equal(eager[0], again)
    assert not np.array_equal(eager[0], eager[1]) and not np.array_equal(eager[1], eager[2])

    # tf.function with an unknown number of frames keeps the static spatial shape.
    fn = tf.function(lambda e, s: A.random_resized_clip(e, 61, 97, s, cfg),
                     input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([2], tf.int64)])
    out = fn(encoded, tf.constant([1, 5], tf.int64))
    np.testing.assert_array_equal(out.numpy(), eager[1])
    assert fn.get_concrete_function().structured_outputs.shape.as_list() == [None, 32, 32, 3]

    # Inside tf.data.Dataset.map (parallel), with per-element seeds and frame sizes as tensors.
    ds = tf.data.Dataset.from_tensor_slices(
        {"frames": tf.stack([encoded] * 3), "seed": _seeds(3, 5),
         "height": tf.constant([61] * 3), "width": tf.constant([97] * 3)})
    ds = ds.map(lambda ex: A.random_resized_clip(ex["frames"], ex["height"], ex["width"],
                                                 ex["seed"], cfg),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    assert ds.element_spec.shape.as_list() == [4, 32, 32, 3]
    for got, want in zip(ds.as_numpy_iterator(), eager):
        np.testing.assert_array_equal(got, want)


def test_grayscale_has_equal_channels():
    frames = _smooth_frames(3, 20, 20, seed=4)
    cfg = A.AugmentConfig(crop_size=20, **{**OFF, "grayscale_prob": 1.0})
    out = A.augment_clip(frames, tf.constant([0, 0]), cfg).numpy().astype(int)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    luma = frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out[..., 0] - luma).max() <= 1
    # Still gray after jitter and blur (grayscale comes after jitter; blur is per channel).
    out = A.augment_clip(frames, tf.constant([1, 0]), A.AugmentConfig(crop_size=20, **ALL_ON)).numpy()
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def _hf_energy(x):
    x = x.astype(np.float64)
    return np.mean(np.diff(x, axis=1) ** 2) + np.mean(np.diff(x, axis=2) ** 2)


def test_blur_reduces_high_frequencies_and_keeps_constants():
    rng = np.random.default_rng(6)
    noise = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    cfg = A.AugmentConfig(crop_size=32, blur_sigma_range=(1.0, 2.0), **{**OFF, "blur_prob": 1.0})
    out = A.augment_clip(noise, tf.constant([0, 0]), cfg).numpy()
    assert _hf_energy(out) < 0.2 * _hf_energy(noise)
    assert abs(out.astype(float).mean() - noise.astype(float).mean()) < 2.0
    # A constant clip stays constant (normalised kernel, reflect padding).
    flat = np.full((2, 32, 32, 3), 77, np.uint8)
    np.testing.assert_array_equal(A.augment_clip(flat, tf.constant([0, 0]), cfg).numpy(), flat)


def _numpy_blur(x, sigma, radius):
    """Separable Gaussian of float [T, H, W, C], kernel radius `radius`, reflect padding."""
    taps = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (taps / sigma) ** 2)
    k /= k.sum()
    h, w = x.shape[1:3]
    x = np.pad(x, [(0, 0), (radius, radius), (0, 0), (0, 0)], mode="reflect")
    x = sum(k[i] * x[:, i:i + h] for i in range(len(k)))
    x = np.pad(x, [(0, 0), (0, 0), (radius, radius), (0, 0)], mode="reflect")
    return sum(k[i] * x[:, :, i:i + w] for i in range(len(k)))


@pytest.mark.parametrize("jit", [True, False])
def test_blur_matches_numpy_with_radius_following_sigma(jit):
    """Every radius bucket 1..6 against NumPy on non-square frames (H and W passes differ)."""
    noise = np.random.default_rng(9).integers(0, 256, (2, 20, 27, 3), dtype=np.uint8)
    cfg = A.AugmentConfig(crop_size=20, blur_sigma_range=(0.1, 2.0), **{**OFF, "blur_prob": 1.0})
    radii = set()
    for s in range(40):
        seed = tf.constant([s, 5])
        sigma = float(A.sample_clip_params(seed, cfg)["sigma"])
        radius = int(A.blur_radius(sigma, 6))
        assert radius == max(1, math.ceil(3 * sigma))
        radii.add(radius)
        out = A.augment_clip(noise, seed, cfg, jit=jit).numpy().astype(float)
        want = np.round(np.clip(_numpy_blur(noise / 255.0, sigma, radius), 0, 1) * 255)
        assert np.abs(out - want).max() <= 1
        # Dropping the taps beyond 3 sigma moves no pixel by more than a level.
        assert np.abs(out - np.round(np.clip(_numpy_blur(noise / 255.0, sigma, 6), 0, 1) * 255)).max() <= 1
    assert radii == {1, 2, 3, 4, 5, 6}


def test_blur_radius_is_capped():
    assert int(A.blur_radius(1.9, 3)) == 3
    assert int(A.blur_radius(0.01, 6)) == 1
    assert int(A.blur_radius(1.0, 0)) == 0


def test_blur_on_tiny_frames():
    # Kernel radius (6) larger than the frame: radius is capped, still a valid blur.
    frames = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    cfg = A.AugmentConfig(crop_size=4, **ALL_ON)
    out = A.augment_clip(frames, tf.constant([0, 0]), cfg)
    assert out.shape == (2, 4, 4, 3)


def test_color_jitter_matches_torchvision_formulas():
    frames = _smooth_frames(2, 16, 16, seed=8)
    x = frames.astype(np.float64) / 255
    seed = tf.constant([4, 2])

    def run(**strengths):
        base = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
        cfg = A.AugmentConfig(crop_size=16, **{**OFF, "color_jitter_prob": 1.0}, **{**base, **strengths})
        params = A.sample_clip_params(seed, cfg)
        return A.augment_clip(frames, seed, cfg).numpy().astype(float), params

    def luma(v):
        return v @ np.array([0.299, 0.587, 0.114])

    out, p = run(brightness=0.6)
    assert np.abs(out - np.round(np.clip(x * float(p["brightness"]), 0, 1) * 255)).max() <= 1
    out, p = run(saturation=0.6)
    f, g = float(p["saturation"]), luma(x)[..., None]
    assert np.abs(out - np.round(np.clip(g + f * (x - g), 0, 1) * 255)).max() <= 1
    out, p = run(contrast=0.6)
    f, m = float(p["contrast"]), luma(x).mean()  # mean over the whole clip
    assert np.abs(out - np.round(np.clip(m + f * (x - m), 0, 1) * 255)).max() <= 1
    out, p = run(hue=0.15)
    want = tf.image.adjust_hue(tf.constant(x, tf.float32), float(p["hue"])).numpy()
    assert np.abs(out - np.round(np.clip(want, 0, 1) * 255)).max() <= 1
    assert not np.array_equal(out, frames)


def test_jitted_augmentation_matches_op_by_op_within_one_level():
    """The XLA-compiled arithmetic (the default) takes the same draws as op-by-op TensorFlow; only float
    rounding may differ where XLA fuses ops."""
    rng = np.random.default_rng(7)
    frames = tf.constant(rng.integers(0, 256, (3, 24, 30, 3)), tf.uint8)
    cfg = A.AugmentConfig(crop_size=24, **{**ALL_ON, "flip_prob": 0.5})
    for s in range(6):
        seed = tf.constant([s, 3])
        jitted = A.augment_clip(frames, seed, cfg).numpy().astype(int)
        plain = A.augment_clip(frames, seed, cfg, jit=False).numpy().astype(int)
        assert np.abs(jitted - plain).max() <= 1
        assert np.mean(jitted != plain) < 0.05
        assert np.abs(jitted - frames.numpy()).max() > 10  # the augmentation did something
