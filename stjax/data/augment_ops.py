"""The per-clip augmentation ops, each declared once: a registry of named ops run in a configured order.

An op (`Op`) is one registry entry holding everything about it:

* `name`, the name `data.augmentation.ops` lists (the list's order is the order the ops run in);
* `settings`: its fields of `AugmentConfig` / `data.augmentation` (name, default, check);
* `draws`: the names of its per-clip random numbers, one float32 slot each;
* `sample(u, settings)`: its uniforms u (float32 [len(draws)], U[0, 1)) → {draw: float32 scalar}, TensorFlow,
  run on the host with the pipeline's seeds (`augment.sample_clip_params`);
* `apply_tf(x, draws, settings)` (tf.data, on the host: `augment.augment_clip`) and
  `apply_jax(x, draws, settings)` (in the train step: `device_augment.augment_clips`): [T, H, W, 3] → same
  shape, float32 in [0, 1], uint8 too where `on_uint8` (an exact pixel permutation, run before the float
  conversion while every op before it is one too).

A clip's draws travel as one float32 vector: the concatenation of its ops' draws in list order
(`draw_names`). The host draws one U[0, 1) per slot in one `stateless_uniform` call, so the paper recipe's
list (`DEFAULT_OPS`) takes exactly the draws it took before there was a registry; another list lays the slots
out anew (changing a setting never moves a draw; changing the list does).

Why both implementations sit here, side by side: an op is then written (and reviewed, and tested: the equality
tests run over `OPS`) in one place. The module imports neither TensorFlow nor JAX: `tf`, `jnp`, `lax` and
`dm_pix` below are loaded on first use, so the train step (`device_augment`) imports it on a machine without
TensorFlow, and the config (`configs/pretrain.py`) reads the declarations without either.

Adding an op: write its entry (`register(Op(...))`) below. Its settings appear under `data.augmentation`,
its draws in the packed vector, its name among the valid `ops`, and the host-vs-device tests cover it.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from typing import Any, Callable


class _Lazy:
    """A module imported on first attribute access (keeps TensorFlow off the device side, JAX off tf.data)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


tf = _Lazy("tensorflow")
jnp = _Lazy("jax.numpy")
lax = _Lazy("jax.lax")
dm_pix = _Lazy("dm_pix")

# ITU-R BT.601 luma weights (same as tf.image.rgb_to_grayscale and PIL "L").
LUMA = (0.299, 0.587, 0.114)

# The paper recipe's ops, in its order (after the random resized crop, which always runs on the host).
DEFAULT_OPS = ("flip", "color_jitter", "grayscale", "blur")

# AugmentConfig's own fields (the crop and the list), which no op may declare.
RESERVED = ("crop_size", "area_range", "aspect_range", "ops")


# ----------------------------------------------------------------------------------------------
# Declarations.


@dataclasses.dataclass(frozen=True)
class Setting:
    """One field of `AugmentConfig` (and of `data.augmentation`): `check(name, value)` returns the value
    coerced (e.g. a list to a tuple) or raises ValueError naming `AugmentConfig.<name>`."""

    name: str
    default: Any
    check: Callable[[str, Any], Any]


@dataclasses.dataclass(frozen=True)
class Op:
    """A named per-clip augmentation op (see the module docstring for the contract of each member)."""

    name: str
    settings: tuple[Setting, ...]
    draws: tuple[str, ...]
    sample: Callable[[Any, Any], dict]
    apply_tf: Callable[[Any, dict, Any], Any]
    apply_jax: Callable[[Any, dict, Any], Any]
    on_uint8: bool = False


OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Adds `op` to `OPS`; its name, settings and draws must not clash with another op's or `RESERVED`."""
    taken_settings = set(RESERVED) | {s.name for o in OPS.values() for s in o.settings}
    taken_draws = {d for o in OPS.values() for d in o.draws}
    names = [s.name for s in op.settings]
    if op.name in OPS:
        raise ValueError(f"augmentation op {op.name!r} is registered already")
    if clash := (set(names) & taken_settings) or len(set(names)) < len(names):
        raise ValueError(f"augmentation op {op.name!r}: settings {clash or names} are taken or repeated")
    if clash := (set(op.draws) & taken_draws) or len(set(op.draws)) < len(op.draws):
        raise ValueError(f"augmentation op {op.name!r}: draws {clash or op.draws} are taken or repeated")
    OPS[op.name] = op
    return op


def check_ops(ops: Any) -> tuple[str, ...]:
    """`ops` as a tuple of registered names, each at most once; ValueError naming `AugmentConfig.ops` and the
    valid names otherwise. A string is read as comma-separated names, also inside the list (the command line's
    `--config.data.augmentation.ops=flip,blur` gives `("flip,blur",)`)."""
    if isinstance(ops, str):
        ops = [ops]
    try:
        ops = tuple(n.strip() for item in ops for n in (item.split(",") if isinstance(item, str) else [item])
                    if not isinstance(n, str) or n.strip())
    except TypeError:
        raise ValueError(f"AugmentConfig.ops must be a list of op names; got {ops!r}; valid names: "
                         f"{', '.join(OPS)}") from None
    for name in ops:
        if name not in OPS:
            raise ValueError(f"AugmentConfig.ops: unknown op {name!r}; valid names: {', '.join(OPS)}")
    if len(set(ops)) < len(ops):
        raise ValueError(f"AugmentConfig.ops lists an op twice: {ops!r}")
    return ops


def draw_names(ops) -> tuple[str, ...]:
    """The packed draw vector's slot names for the op list `ops`: each op's draws, in list order."""
    return tuple(d for name in ops for d in OPS[name].draws)


def default_settings() -> dict[str, Any]:
    """{setting: default} of every registered op, in registration order."""
    return {s.name: s.default for op in OPS.values() for s in op.settings}


def split_draws(ops, values) -> list[tuple[Op, dict]]:
    """[(op, {draw: values[i]})] in list order, from a packed vector (or anything indexable by slot)."""
    out, i = [], 0
    for name in ops:
        op = OPS[name]
        out.append((op, {d: values[i + k] for k, d in enumerate(op.draws)}))
        i += len(op.draws)
    return out


# ----------------------------------------------------------------------------------------------
# Setting checks.


def as_pair(name: str, value: Any) -> tuple[float, float]:
    try:
        pair = tuple(float(v) for v in value)
    except TypeError:
        raise ValueError(f"AugmentConfig.{name} must be a pair (low, high); got {value!r}") from None
    if len(pair) != 2:
        raise ValueError(f"AugmentConfig.{name} must be a pair (low, high); got {value!r}")
    return pair  # type: ignore[return-value]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def probability(name: str, p: Any):
    if not _is_number(p) or not (0.0 <= p <= 1.0):
        raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1]; got {p!r}")
    return p


def strength(name: str, s: Any):
    if not _is_number(s) or not (0.0 <= s < math.inf):
        raise ValueError(f"AugmentConfig.{name} must be a finite number >= 0; got {s!r}")
    return s


def hue_shift(name: str, h: Any):
    if not _is_number(h) or not (0.0 <= h <= 0.5):
        raise ValueError(f"AugmentConfig.{name} must be in [0, 0.5]; got {h!r}")
    return h


def positive_range(name: str, value: Any) -> tuple[float, float]:
    lo, hi = pair = as_pair(name, value)
    if not (0.0 < lo <= hi) or not math.isfinite(hi):
        raise ValueError(f"AugmentConfig.{name} must satisfy 0 < low <= high < inf; got {pair!r}")
    return pair


# ----------------------------------------------------------------------------------------------
# Shared pieces of the TensorFlow and JAX halves.


def _tf_when(draw, prob: float, fn, x):
    """fn(x) where the clip drew the op (draw 1), else x; statically x when the op can never be drawn."""
    if prob <= 0.0:
        return x
    return tf.ensure_shape(tf.cond(draw > 0.5, lambda: fn(x), lambda: x), x.shape)


def _jax_when(draw, prob: float, fn, x):
    """fn(x) where the clip drew the op: a real branch per clip under `lax.map`, a select under vmap."""
    return lax.cond(draw > 0.5, fn, lambda im: im, x) if prob > 0 else x


def _drawn(u, prob: float):
    """float32 1 with probability `prob` from a uniform u, else 0."""
    return tf.cast(u < prob, tf.float32)


def _luma(x):
    """[..., 3] → [..., 1] ITU-R 601 luma (slices: much faster than a reduce on CPU; works on tf and jnp)."""
    r, g, b = LUMA
    return x[..., 0:1] * r + x[..., 1:2] * g + x[..., 2:3] * b


# ----------------------------------------------------------------------------------------------
# flip: horizontal flip with p = flip_prob.


def _flip_tf(x, d, s):
    def flip(frames):
        """Reverse the W axis of [T, H, W, C] (3-D reverse: ~4x faster than 4-D on CPU)."""
        shape = tf.shape(frames)
        flat = tf.reshape(frames, tf.concat([[-1], shape[2:]], axis=0))
        return tf.ensure_shape(tf.reshape(tf.reverse(flat, axis=[1]), shape), frames.shape)
    return _tf_when(d["flip"], s.flip_prob, flip, x)


register(Op(
    name="flip",
    settings=(Setting("flip_prob", 0.5, probability),),
    draws=("flip",),
    sample=lambda u, s: {"flip": _drawn(u[0], s.flip_prob)},
    apply_tf=_flip_tf,
    apply_jax=lambda x, d, s: _jax_when(d["flip"], s.flip_prob, lambda f: f[:, :, ::-1], x),
    on_uint8=True,  # flips the uint8 frames: 4x less memory traffic than float
))


# ----------------------------------------------------------------------------------------------
# color_jitter: with p = color_jitter_prob, brightness / contrast / saturation factors ~ U[max(0, 1-s), 1+s]
# and a hue shift ~ U[-hue, hue] turns, the four in a random per-clip order (order_i: the op applied i-th,
# brightness 0, contrast 1, saturation 2, hue 3), torchvision semantics, a clip to [0, 1] after each.


def _factor(u, strength_: float):
    lo = max(0.0, 1.0 - strength_)
    hi = 1.0 + strength_
    return lo + (hi - lo) * u


def _sample_jitter(u, s):
    order = tf.cast(tf.cast(tf.argsort(u[5:9]), tf.int32), tf.float32)
    return {"jitter": _drawn(u[0], s.color_jitter_prob), "brightness": _factor(u[1], s.brightness),
            "contrast": _factor(u[2], s.contrast), "saturation": _factor(u[3], s.saturation),
            "hue": s.hue * (2.0 * u[4] - 1.0), **{f"order_{i}": order[i] for i in range(4)}}


def _jitter_branches(s, brightness, contrast, saturation, hue):
    """The four jitter ops in order-index order; an op of zero strength is the identity (None: all are)."""
    ops = ((brightness, s.brightness > 0), (contrast, s.contrast > 0), (saturation, s.saturation > 0),
           (hue, s.hue > 0))
    if not any(enabled for _, enabled in ops):
        return None
    return [fn if enabled else (lambda img: img) for fn, enabled in ops]


def _tf_blend(a, b, factor):
    """torchvision _blend for float images: clip(factor * a + (1 - factor) * b, 0, 1)."""
    return tf.clip_by_value(b + factor * (a - b), 0.0, 1.0)


def _jitter_tf(x, d, s):
    def jitter(x):
        branches = _jitter_branches(
            s,
            lambda img: tf.clip_by_value(img * d["brightness"], 0.0, 1.0),
            # Mean grey level over the WHOLE CLIP (PySlowFast runs torchvision's ColorJitter on the clip
            # viewed as one tall image), not per frame.
            lambda img: _tf_blend(img, tf.reduce_mean(_luma(img)), d["contrast"]),
            lambda img: _tf_blend(img, _luma(img), d["saturation"]),
            lambda img: tf.clip_by_value(tf.image.adjust_hue(img, d["hue"]), 0.0, 1.0))
        if branches is None:
            return x
        shape = x.shape
        for step in range(4):
            x = tf.switch_case(tf.cast(d[f"order_{step}"], tf.int32), [lambda fn=fn: fn(x) for fn in branches])
            x = tf.ensure_shape(x, shape)
        return x
    return _tf_when(d["jitter"], s.color_jitter_prob, jitter, x)


def _jitter_jax(x, d, s):
    def blend(a, b, factor):
        return jnp.clip(b + factor * (a - b), 0.0, 1.0)

    def jitter(x):
        branches = _jitter_branches(
            s,
            lambda img: jnp.clip(img * d["brightness"], 0.0, 1.0),
            lambda img: blend(img, jnp.mean(_luma(img)), d["contrast"]),
            lambda img: blend(img, _luma(img), d["saturation"]),
            lambda img: jnp.clip(dm_pix.adjust_hue(img, d["hue"]), 0.0, 1.0))
        if branches is None:
            return x
        for step in range(4):
            x = lax.switch(d[f"order_{step}"].astype(jnp.int32), branches, x)
        return x
    return _jax_when(d["jitter"], s.color_jitter_prob, jitter, x)


register(Op(
    name="color_jitter",
    settings=(Setting("color_jitter_prob", 0.8, probability), Setting("brightness", 0.6, strength),
              Setting("contrast", 0.6, strength), Setting("saturation", 0.6, strength),
              Setting("hue", 0.15, hue_shift)),
    draws=("jitter", "brightness", "contrast", "saturation", "hue", "order_0", "order_1", "order_2", "order_3"),
    sample=_sample_jitter,
    apply_tf=_jitter_tf,
    apply_jax=_jitter_jax,
))


# ----------------------------------------------------------------------------------------------
# grayscale: with p = grayscale_prob, ITU-R 601 luma in all 3 channels.


register(Op(
    name="grayscale",
    settings=(Setting("grayscale_prob", 0.2, probability),),
    draws=("grayscale",),
    sample=lambda u, s: {"grayscale": _drawn(u[0], s.grayscale_prob)},
    apply_tf=lambda x, d, s: _tf_when(d["grayscale"], s.grayscale_prob,
                                      lambda img: tf.tile(_luma(img), [1, 1, 1, 3]), x),
    apply_jax=lambda x, d, s: _jax_when(d["grayscale"], s.grayscale_prob,
                                        lambda img: jnp.broadcast_to(_luma(img), img.shape), x),
))


# ----------------------------------------------------------------------------------------------
# blur: with p = blur_prob, a separable Gaussian blur, sigma ~ U(blur_sigma_range) pixels, kernel radius
# ceil(3 sigma) (`blur_radius`, capped at `max_blur_radius`), reflect padding. The radius follows sigma (one
# compiled branch per radius), so a small sigma pays for few taps; the taps beyond 3 sigma that this drops
# carry < 0.3 % of the kernel's weight.


def max_blur_radius(settings, height: int | None, width: int | None) -> int:
    """Largest blur kernel radius for `settings` on frames of this (static) size: ceil(3 σ_max), at least 1,
    capped at size − 1 (reflect padding needs pad < size)."""
    radius = max(1, int(math.ceil(3.0 * settings.blur_sigma_range[1])))
    for dim in (height, width):
        if dim is not None:
            radius = max(0, min(radius, dim - 1))
    return radius


def blur_radius(sigma, max_radius: int):
    """int32 kernel radius for ``sigma`` pixels: ceil(3 * sigma), in [1, max_radius] (0 when max_radius is 0)."""
    radius = tf.cast(tf.math.ceil(3.0 * tf.cast(sigma, tf.float32)), tf.int32)
    return tf.clip_by_value(radius, min(1, max_radius), max_radius)


def _blur_rows_tf(x, kernel, radius: int):
    """1-D symmetric convolution of [T, H, W, C] along H, reflect padding.

    A sum of shifted slices (the kernel is symmetric, so taps are paired); on CPU this is several times
    faster than depthwise_conv2d.
    """
    h = tf.shape(x)[1]
    xp = tf.pad(x, [[0, 0], [radius, radius], [0, 0], [0, 0]], mode="REFLECT")
    acc = kernel[radius] * xp[:, radius:radius + h]
    for i in range(radius):
        acc += kernel[i] * (xp[:, i:i + h] + xp[:, 2 * radius - i:2 * radius - i + h])
    return acc


def _blur_columns_tf(x, kernel, radius: int):
    """1-D symmetric convolution of [T, H, W, C] along W, reflect padding.

    Works on the frames viewed as [T, H, W * C], where a shift of one pixel is a shift of C values along the
    last axis: XLA vectorises these slices, where shifted [..., W, C] slices run ~2x slower.
    """
    shape = tf.shape(x)
    t, h, w, c = shape[0], shape[1], shape[2], shape[3]
    xp = tf.pad(x, [[0, 0], [0, 0], [radius, radius], [0, 0]], mode="REFLECT")
    xp = tf.reshape(xp, [t, h, (w + 2 * radius) * c])

    def shifted(i):
        return xp[:, :, i * c:(i + w) * c]

    acc = kernel[radius] * shifted(radius)
    for i in range(radius):
        acc += kernel[i] * (shifted(i) + shifted(2 * radius - i))
    return tf.reshape(acc, shape)


def _blur_fixed_radius_tf(x, sigma, radius: int):
    """Separable Gaussian blur of [T, H, W, C], kernel size 2 * radius + 1 (normalised), reflect padding."""
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    return tf.ensure_shape(_blur_columns_tf(_blur_rows_tf(x, kernel, radius), kernel, radius), x.shape)


def gaussian_blur_tf(x, sigma, max_radius: int):
    """Separable Gaussian blur of [T, H, W, C] with radius `blur_radius(sigma, max_radius)`, reflect padding."""
    if max_radius == 0:
        return x
    branches = [functools.partial(_blur_fixed_radius_tf, x, sigma, r) for r in range(1, max_radius + 1)]
    return tf.ensure_shape(tf.switch_case(blur_radius(sigma, max_radius) - 1, branches), x.shape)


def _blur_axis_jax(x, kernel, axis: int):
    """Symmetric 1-D convolution along `axis` with reflect padding; kernel [2R + 1]."""
    radius = (kernel.shape[0] - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    xp = jnp.pad(x, pad, mode="reflect")
    size = x.shape[axis]
    out = kernel[radius] * lax.slice_in_dim(xp, radius, radius + size, axis=axis)
    for i in range(radius):
        out += kernel[i] * (lax.slice_in_dim(xp, i, i + size, axis=axis)
                            + lax.slice_in_dim(xp, 2 * radius - i, 2 * radius - i + size, axis=axis))
    return out


def _blur_fixed_radius_jax(x, sigma, radius: int):
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * jnp.square(taps / sigma))
    kernel = kernel / jnp.sum(kernel)
    return _blur_axis_jax(_blur_axis_jax(x, kernel, 1), kernel, 2)


def gaussian_blur_jax(x, sigma, max_radius: int):
    """Separable Gaussian blur of [T, H, W, C] with radius clip(ceil(3σ), 1, max_radius), one branch per radius."""
    if max_radius == 0:
        return x
    radius = jnp.clip(jnp.ceil(3.0 * sigma), 1, max_radius).astype(jnp.int32)
    branches = [functools.partial(_blur_fixed_radius_jax, radius=r) for r in range(1, max_radius + 1)]
    return lax.switch(radius - 1, branches, x, sigma)


def _blur_tf(x, d, s):
    shape = x.shape
    max_radius = max_blur_radius(s, shape[1] if shape.rank else None, shape[2] if shape.rank else None)
    return _tf_when(d["blur"], s.blur_prob, lambda img: gaussian_blur_tf(img, d["sigma"], max_radius), x)


def _blur_jax(x, d, s):
    max_radius = max_blur_radius(s, x.shape[1], x.shape[2])
    return _jax_when(d["blur"], s.blur_prob, lambda img: gaussian_blur_jax(img, d["sigma"], max_radius), x)


def _sample_blur(u, s):
    lo, hi = s.blur_sigma_range
    return {"blur": _drawn(u[0], s.blur_prob), "sigma": lo + (hi - lo) * u[1]}


register(Op(
    name="blur",
    settings=(Setting("blur_prob", 0.5, probability),
              Setting("blur_sigma_range", (0.1, 2.0), positive_range)),  # pixels at crop_size resolution
    draws=("blur", "sigma"),
    sample=_sample_blur,
    apply_tf=_blur_tf,
    apply_jax=_blur_jax,
))
