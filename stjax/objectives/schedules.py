"""Momentum schedules and the exponential moving average of parameters."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def cosine_momentum(base: float, step, total_steps: int) -> jnp.ndarray:
    """BYOL's target momentum: 1 − (1 − base)·(cos(π·step/total) + 1)/2, base at step 0 → 1 at the end."""
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def ema_update(target, online, momentum):
    """target ← momentum·target + (1 − momentum)·online, leaf by leaf."""
    return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)
