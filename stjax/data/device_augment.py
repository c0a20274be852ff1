"""The per-clip flip, colour jitter, grayscale and blur of `stjax.data.augment`, in JAX, on the accelerator.

With `data.augment_on="device"` the tf.data pipeline does only the random resized
crop and sends each clip's random draws along (`batch["augment"]`, float32
[B, ρ, 13], see `augment_config.CLIP_PARAM_NAMES`); the train step finishes the
clips with :func:`augment_clips` before normalising them. The draws are the ones
the host would have used (same seeds, `augment.sample_clip_params`) and the
arithmetic is `augment._apply_params`' (torchvision semantics: brightness
multiplies, contrast blends with the clip's mean luma, saturation with the
pixel's luma, hue rotates in HSV; a clip to [0, 1] after each; blur radius
ceil(3σ) with reflect padding), so a clip comes out within one uint8 level of
the host's. Imports JAX and dm-pix, not TensorFlow.
"""
from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp

from stjax.data.augment_config import CLIP_PARAM_NAMES, LUMA, AugmentConfig, max_blur_radius

_INDEX = {name: i for i, name in enumerate(CLIP_PARAM_NAMES)}


def _luma(x: jnp.ndarray) -> jnp.ndarray:
    r, g, b = LUMA
    return x[..., 0:1] * r + x[..., 1:2] * g + x[..., 2:3] * b


def _blend(a: jnp.ndarray, b: jnp.ndarray, factor: jnp.ndarray) -> jnp.ndarray:
    return jnp.clip(b + factor * (a - b), 0.0, 1.0)


def _color_jitter(x: jnp.ndarray, p, config: AugmentConfig) -> jnp.ndarray:
    """Brightness, contrast, saturation and hue of float [T, H, W, 3] in the clip's drawn order."""
    ops = (
        (lambda img: jnp.clip(img * p("brightness"), 0.0, 1.0), config.brightness > 0),
        (lambda img: _blend(img, jnp.mean(_luma(img)), p("contrast")), config.contrast > 0),
        (lambda img: _blend(img, _luma(img), p("saturation")), config.saturation > 0),
        (lambda img: jnp.clip(dm_pix.adjust_hue(img, p("hue")), 0.0, 1.0), config.hue > 0),
    )
    if not any(enabled for _, enabled in ops):
        return x
    branches = [fn if enabled else (lambda img: img) for fn, enabled in ops]
    for step in range(4):
        x = jax.lax.switch(p(f"order_{step}").astype(jnp.int32), branches, x)
    return x


def _blur_axis(x: jnp.ndarray, kernel: jnp.ndarray, axis: int) -> jnp.ndarray:
    """Symmetric 1-D convolution along `axis` with reflect padding; kernel [2R + 1]."""
    radius = (kernel.shape[0] - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    xp = jnp.pad(x, pad, mode="reflect")
    size = x.shape[axis]
    out = kernel[radius] * jax.lax.slice_in_dim(xp, radius, radius + size, axis=axis)
    for i in range(radius):
        out += kernel[i] * (jax.lax.slice_in_dim(xp, i, i + size, axis=axis)
                            + jax.lax.slice_in_dim(xp, 2 * radius - i, 2 * radius - i + size, axis=axis))
    return out


def _gaussian_blur_fixed_radius(x: jnp.ndarray, sigma: jnp.ndarray, radius: int) -> jnp.ndarray:
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * jnp.square(taps / sigma))
    kernel = kernel / jnp.sum(kernel)
    return _blur_axis(_blur_axis(x, kernel, 1), kernel, 2)


def _gaussian_blur(x: jnp.ndarray, sigma: jnp.ndarray, max_radius: int) -> jnp.ndarray:
    """Separable Gaussian blur of [T, H, W, C] with radius clip(ceil(3σ), 1, max_radius), one branch per radius."""
    if max_radius == 0:
        return x
    radius = jnp.clip(jnp.ceil(3.0 * sigma), 1, max_radius).astype(jnp.int32)
    branches = [functools.partial(_gaussian_blur_fixed_radius, radius=r) for r in range(1, max_radius + 1)]
    return jax.lax.switch(radius - 1, branches, x, sigma)


def augment_clip(frames: jnp.ndarray, params: jnp.ndarray, config: AugmentConfig) -> jnp.ndarray:
    """uint8 [T, H, W, 3] and its draws float32 [13] → the augmented uint8 [T, H, W, 3]."""
    def p(name):
        return params[_INDEX[name]]

    def maybe(name, prob, fn, img):
        """fn(img) where the clip drew the op: a real branch per clip under `lax.map`, a select under vmap."""
        return jax.lax.cond(p(name) > 0.5, fn, lambda im: im, img) if prob > 0 else img

    frames = maybe("flip", config.flip_prob, lambda f: f[:, :, ::-1], frames)
    x = frames.astype(jnp.float32) * (1.0 / 255.0)
    x = maybe("jitter", config.color_jitter_prob, lambda img: _color_jitter(img, p, config), x)
    x = maybe("grayscale", config.grayscale_prob, lambda img: jnp.broadcast_to(_luma(img), img.shape), x)
    max_radius = max_blur_radius(config, x.shape[1], x.shape[2])
    x = maybe("blur", config.blur_prob, lambda img: _gaussian_blur(img, p("sigma"), max_radius), x)
    return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def augment_clips(clips: jnp.ndarray, params: jnp.ndarray, config: AugmentConfig) -> jnp.ndarray:
    """uint8 [..., T, H, W, 3] clips and their draws float32 [..., 13] → augmented uint8 clips, same shape."""
    if params.shape[-1] != len(CLIP_PARAM_NAMES) or params.shape[:-1] != clips.shape[:-4]:
        raise ValueError(f"augment params must be [..., {len(CLIP_PARAM_NAMES)}] matching clips "
                         f"{clips.shape[:-4]}; got {params.shape}")
    flat = clips.reshape((-1,) + clips.shape[-4:])
    # One clip at a time (`lax.map`, not vmap): each clip runs only the ops it drew, in its own order,
    # where a vmapped switch would run all four jitter ops at each of the four steps for every clip.
    out = jax.lax.map(lambda args: augment_clip(*args, config=config), (flat, params.reshape(-1, params.shape[-1])))
    return out.reshape(clips.shape)
