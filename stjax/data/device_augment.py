"""The per-clip ops of `stjax.data.augment`, in JAX, on the accelerator.

With `data.augment_on="device"` the tf.data pipeline does only the random resized
crop and sends each clip's random draws along (`batch["augment"]`, float32
[B, ρ, D], D = len(`AugmentConfig.draw_names`), 13 for the default ops); the train
step finishes the clips with :func:`augment_clips` before normalising them. The
draws are the ones the host would have used (same seeds, `augment.sample_clip_params`)
and each op's arithmetic is its registry entry's `apply_jax`
(`stjax.data.augment_ops`), the twin of the host's `apply_tf`, so a clip comes out
within one uint8 level of the host's (tested per op). Imports JAX and dm-pix, not
TensorFlow.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from stjax.data import augment_ops
from stjax.data.augment_config import AugmentConfig


def augment_clip(frames: jnp.ndarray, params: jnp.ndarray, config: AugmentConfig) -> jnp.ndarray:
    """uint8 [T, H, W, 3] and its draws float32 [D] → the augmented uint8 [T, H, W, 3] (`config.ops` in order)."""
    x, is_float = frames, False
    for op, draws in augment_ops.split_draws(config.ops, params):
        if not is_float and not op.on_uint8:
            x, is_float = x.astype(jnp.float32) * (1.0 / 255.0), True
        x = op.apply_jax(x, draws, config)
    if not is_float:  # only exact uint8 ops (or none)
        return x
    return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def augment_clips(clips: jnp.ndarray, params: jnp.ndarray, config: AugmentConfig) -> jnp.ndarray:
    """uint8 [..., T, H, W, 3] clips and their draws float32 [..., D] → augmented uint8 clips, same shape."""
    num_draws = len(config.draw_names)
    if params.shape[-1] != num_draws or params.shape[:-1] != clips.shape[:-4]:
        raise ValueError(f"augment params must be [..., {num_draws}] (the draws of data.augmentation.ops="
                         f"{config.ops}) matching clips {clips.shape[:-4]}; got {params.shape}")
    flat = clips.reshape((-1,) + clips.shape[-4:])
    # One clip at a time (`lax.map`, not vmap): each clip runs only the ops it drew, in its own order,
    # where a vmapped switch would run all four jitter ops at each of the four steps for every clip.
    out = jax.lax.map(lambda args: augment_clip(*args, config=config), (flat, params.reshape(flat.shape[0], num_draws)))
    return out.reshape(clips.shape)
