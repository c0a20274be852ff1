"""stjax.data.augment_ops: the registry of per-clip ops, the list that configures them, and each op's TF half
against the formula it implements (the host-vs-device equality per op is in test_device_augment)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from stjax import configlib
from stjax.data import augment as A
from stjax.data import augment_ops
from stjax.data.augment_config import CLIP_PARAM_NAMES, from_config
from test_augment import _numpy_blur

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The packed draw format before the registry (the demo's figures and resumed runs depend on the same draws).
LEGACY_SLOTS = ("flip", "jitter", "brightness", "contrast", "saturation", "hue", "order_0", "order_1",
                "order_2", "order_3", "grayscale", "blur", "sigma")


def _pretrain(arg="demo"):
    return configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), arg)


def test_default_list_keeps_the_legacy_draw_layout():
    assert augment_ops.DEFAULT_OPS == ("flip", "color_jitter", "grayscale", "blur")
    assert augment_ops.draw_names(augment_ops.DEFAULT_OPS) == LEGACY_SLOTS == CLIP_PARAM_NAMES
    assert A.AugmentConfig().ops == augment_ops.DEFAULT_OPS
    assert A.AugmentConfig(ops=("blur", "flip")).draw_names == ("blur", "sigma", "flip")
    assert A.AugmentConfig(ops=()).draw_names == ()


@pytest.mark.parametrize("overrides", [{}, dict(brightness=1.5, hue=0.5, blur_sigma_range=(0.3, 0.9))])
def test_default_draws_are_the_legacy_formulas_bit_for_bit(overrides):
    """The draws of the default list from 13 uniforms of the clip's seed, as before the registry."""
    cfg = A.AugmentConfig(**overrides)
    for s in range(20):
        seed = tf.constant([s, 11], tf.int64)
        u = tf.random.stateless_uniform([13], tf.random.experimental.stateless_split(seed, 1)[0]).numpy()
        factor = lambda v, st: np.float32(max(0.0, 1 - st)) + np.float32((1 + st) - max(0.0, 1 - st)) * v
        want = [u[0] < cfg.flip_prob, u[1] < cfg.color_jitter_prob, factor(u[2], cfg.brightness),
                factor(u[3], cfg.contrast), factor(u[4], cfg.saturation),
                np.float32(cfg.hue) * (np.float32(2) * u[5] - np.float32(1)), *np.argsort(u[6:10], kind="stable"),
                u[10] < cfg.grayscale_prob, u[11] < cfg.blur_prob,
                np.float32(cfg.blur_sigma_range[0]) + np.float32(np.diff(cfg.blur_sigma_range)[0]) * u[12]]
        got = A.pack_clip_params(A.sample_clip_params(seed, cfg)).numpy()
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, np.asarray(want, np.float32), err_msg=f"seed {s}")


def _settings(**overrides):
    return A.AugmentConfig(crop_size=16, **overrides)


def _clip(seed=0, shape=(3, 16, 20, 3)):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _apply(name, x, draws, settings):
    op = augment_ops.OPS[name]
    return op.apply_tf(tf.constant(x), {d: tf.constant(v, tf.float32) for d, v in draws.items()}, settings).numpy()


def _luma(x):
    return x[..., 0:1] * np.float32(0.299) + x[..., 1:2] * np.float32(0.587) + x[..., 2:3] * np.float32(0.114)


def test_flip_and_grayscale_are_their_formulas():
    x = _clip(1)
    cfg = _settings()
    np.testing.assert_array_equal(_apply("flip", x, {"flip": 1}, cfg), x[:, :, ::-1])
    u8 = (x * 255).astype(np.uint8)
    np.testing.assert_array_equal(_apply("flip", u8, {"flip": 1}, cfg), u8[:, :, ::-1])  # exact on uint8
    np.testing.assert_allclose(_apply("grayscale", x, {"grayscale": 1}, cfg), np.repeat(_luma(x), 3, -1), atol=1e-6)
    # against tf.image's own conversion (its weights are rounded to 4 digits)
    np.testing.assert_allclose(_apply("grayscale", x, {"grayscale": 1}, cfg)[..., :1],
                               tf.image.rgb_to_grayscale(x).numpy(), atol=2e-4)


@pytest.mark.parametrize("sub,formula", [
    ("brightness", lambda x, f: np.clip(x * f, 0, 1)),
    ("contrast", lambda x, f: np.clip(_luma(x).mean() + f * (x - _luma(x).mean()), 0, 1)),  # mean of the clip
    ("saturation", lambda x, f: np.clip(_luma(x) + f * (x - _luma(x)), 0, 1)),
    ("hue", lambda x, f: np.clip(tf.image.adjust_hue(x, f).numpy(), 0, 1)),
])
def test_color_jitter_ops_are_torchvision_formulas(sub, formula):
    """Each jitter op alone (the others at strength 0) is its torchvision formula, whatever step it runs at."""
    x = _clip(2)
    strengths = {**dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0), sub: 0.4}
    cfg = _settings(color_jitter_prob=1.0, **strengths)
    factor = 0.13 if sub == "hue" else 1.3
    index = ("brightness", "contrast", "saturation", "hue").index(sub)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        draws = {"jitter": 1, "brightness": 1, "contrast": 1, "saturation": 1, "hue": 0, sub: factor,
                 **{f"order_{i}": o for i, o in enumerate(order)}}
        np.testing.assert_allclose(_apply("color_jitter", x, draws, cfg), formula(x, np.float32(factor)),
                                   atol=2e-6, err_msg=f"order {order}")
        assert index in order
    np.testing.assert_array_equal(_apply("color_jitter", x, dict(draws, jitter=0), cfg), x)  # not drawn


def test_color_jitter_runs_in_the_drawn_order():
    x = _clip(3)
    cfg = _settings(color_jitter_prob=1.0)
    base = {"jitter": 1, "brightness": 1.4, "contrast": 0.7, "saturation": 1.2, "hue": 0.1}
    bright = lambda v: np.clip(v * np.float32(1.4), 0, 1)
    contrast = lambda v: np.clip(_luma(v).mean() + np.float32(0.7) * (v - _luma(v).mean()), 0, 1)
    sat = lambda v: np.clip(_luma(v) + np.float32(1.2) * (v - _luma(v)), 0, 1)
    hue = lambda v: np.clip(tf.image.adjust_hue(v, 0.1).numpy(), 0, 1)
    fns = (bright, contrast, sat, hue)
    for order in ([0, 1, 2, 3], [2, 0, 3, 1]):
        want = x
        for o in order:
            want = fns[o](want)
        got = _apply("color_jitter", x, {**base, **{f"order_{i}": o for i, o in enumerate(order)}}, cfg)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_blur_is_a_separable_gaussian_with_radius_ceil_3_sigma():
    x = _clip(4)
    cfg = _settings(blur_prob=1.0, blur_sigma_range=(0.1, 2.0))
    for sigma in (0.2, 0.7, 1.3, 1.95):
        radius = max(1, int(np.ceil(3 * np.float32(sigma))))
        np.testing.assert_allclose(_apply("blur", x, {"blur": 1, "sigma": sigma}, cfg),
                                   _numpy_blur(x.astype(np.float64), np.float32(sigma), radius), atol=2e-6)
    np.testing.assert_array_equal(_apply("blur", x, {"blur": 0, "sigma": 1.0}, cfg), x)


@pytest.mark.parametrize("name", sorted(augment_ops.OPS))
def test_every_op_declares_a_complete_entry(name):
    op = augment_ops.OPS[name]
    assert op.draws and all(s.name in A.AugmentConfig.__dataclass_fields__ for s in op.settings)
    cfg = A.AugmentConfig()
    draws = op.sample(tf.random.stateless_uniform([len(op.draws)], [1, 2]), cfg)
    assert list(draws) == list(op.draws) and all(v.dtype == tf.float32 and v.shape == () for v in draws.values())
    # Not drawn (every 0/1 draw at 0): the identity.
    off = {d: tf.constant(0.0) for d in op.draws}
    x = _clip(5)
    np.testing.assert_array_equal(op.apply_tf(tf.constant(x), off, cfg).numpy(), x)


def test_the_list_turns_ops_off_and_sets_their_order():
    frames = (_clip(6, (2, 16, 16, 3)) * 255).astype(np.uint8)
    on = dict(flip_prob=1.0, color_jitter_prob=1.0, grayscale_prob=1.0, blur_prob=1.0)
    seed = tf.constant([3, 1])
    np.testing.assert_array_equal(A.augment_clip(frames, seed, _settings(ops=(), **on)).numpy(), frames)
    np.testing.assert_array_equal(A.augment_clip(frames, seed, _settings(ops=("flip",), **on)).numpy(),
                                  frames[:, :, ::-1])
    gray = A.augment_clip(frames, seed, _settings(ops=("grayscale",), **on)).numpy().astype(int)
    assert (gray[..., 0] == gray[..., 2]).all() and np.abs(gray[..., 0] - _luma(frames / 255.0)[..., 0] * 255).max() <= 1
    # jitter after grayscale colours the clip again; the recipe's order (grayscale last but blur) keeps it gray
    recipe = A.augment_clip(frames, seed, _settings(ops=("color_jitter", "grayscale"), **on)).numpy()
    swapped = A.augment_clip(frames, seed, _settings(ops=("grayscale", "color_jitter"), **on)).numpy()
    assert (recipe[..., 0] == recipe[..., 1]).all() and not np.array_equal(recipe, swapped)


@pytest.mark.parametrize("ops,message", [
    (("flip", "sharpen"), r"config.data.augmentation.ops: unknown op 'sharpen'; valid names: flip, color_jitter, "
                          r"grayscale, blur"),
    (("flip", "flip"), r"config.data.augmentation.ops lists an op twice"),
])
def test_unknown_or_repeated_op_fails_naming_the_field(ops, message):
    config = _pretrain()
    config.data.augmentation.ops = ops
    with pytest.raises(ValueError, match=message):
        from_config(config)


def test_config_block_holds_the_list_and_every_setting():
    config = _pretrain()
    a = config.data.augmentation
    assert a.ops == augment_ops.DEFAULT_OPS
    assert {s.name for op in augment_ops.OPS.values() for s in op.settings} <= set(a.keys())
    assert (a.blur_sigma_range, a.brightness, a.flip_prob) == ((0.1, 0.5), 0.6, 0.5)  # the demo's, the recipe's
    configlib.set_fields(config, {"data.augmentation.ops": ("flip", "blur"), "data.augmentation.brightness": 0.4})
    cfg = from_config(config)
    assert cfg.ops == ("flip", "blur") and cfg.brightness == 0.4 and cfg.draw_names == ("flip", "blur", "sigma")
    # A config written before the list (no `ops`) gets the recipe's list.
    del config.data.augmentation["ops"]
    assert from_config(config).ops == augment_ops.DEFAULT_OPS
    config.data.augmentation.flip_prob = 1.5
    with pytest.raises(ValueError, match=r"config.data.augmentation.flip_prob must be a probability in \[0, 1\]"):
        from_config(config)


@pytest.mark.parametrize("flag,ops", [("('color_jitter','flip')", ("color_jitter", "flip")),
                                       ("flip,blur", ("flip", "blur")), ("()", ())])
def test_command_line_list(flag, ops):
    """`--config.data.augmentation.ops` takes a tuple literal or comma-separated names on the command line
    (ml_collections' flags, as `stjax.main` parses them, in a child: they register on absl's global FLAGS)."""
    code = ("import sys\n"
            "from absl import flags\n"
            "from ml_collections import config_flags\n"
            "from stjax.data.augment_config import from_config\n"
            "config_flags.DEFINE_config_file('config', None, 'config file')\n"
            "flags.FLAGS(sys.argv)\n"
            "cfg = from_config(flags.FLAGS.config)\n"
            "print(repr((cfg.ops, cfg.hue)))\n")
    argv = [f"--config={os.path.join(ROOT, 'configs', 'pretrain.py')}:demo",
            f"--config.data.augmentation.ops={flag}", "--config.data.augmentation.hue=0.1"]
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == repr((ops, 0.1))


def test_register_refuses_clashes():
    flip = augment_ops.OPS["flip"]
    with pytest.raises(ValueError, match="registered already"):
        augment_ops.register(flip)
    with pytest.raises(ValueError, match="settings"):
        augment_ops.register(augment_ops.Op("flip2", flip.settings, ("flip2",), flip.sample, flip.apply_tf,
                                            flip.apply_jax))
    with pytest.raises(ValueError, match="draws"):
        augment_ops.register(augment_ops.Op("flip2", (), ("sigma",), flip.sample, flip.apply_tf, flip.apply_jax))
    assert "flip2" not in augment_ops.OPS


def test_device_side_imports_without_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "import numpy as np\n"
            "from stjax.data import augment_config, device_augment\n"
            "cfg = augment_config.AugmentConfig(crop_size=8)\n"
            "out = device_augment.augment_clips(np.zeros((2, 3, 8, 8, 3), np.uint8), np.zeros((2, 13), np.float32), cfg)\n"
            "assert out.shape == (2, 3, 8, 8, 3)\n"
            "import stjax.train.step\n"
            "print('ok')")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
