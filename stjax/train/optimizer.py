"""Optimisers (optax) and learning-rate schedules, with the LR–batch scaling rule explicit.

    lr = base_lr × global_batch_size / base_batch_size      (linear scaling rule)

`base_lr` is the learning rate the recipe uses at `base_batch_size` videos per
step; the rule is applied here, once, and the resulting peak LR is logged, so a
run on fewer accelerators with a smaller batch reproduces the recipe's
per-example schedule.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULES = ("cosine", "steps")  # after the linear warm-up: cosine to 0, or ×decay_factor at each of decay_epochs
NO_DECAY_NAMES = ("bias", "scale")  # biases and BatchNorm/LayerNorm scales: no weight decay, no LARS


def peak_learning_rate(base_lr: float, base_batch_size: int, batch_size: int) -> float:
    return base_lr * batch_size / base_batch_size


def learning_rate_schedule(peak_lr: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then cosine to 0 at `total_steps`."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=0.0,
    )


def step_schedule(peak_lr: float, warmup_steps: int, boundaries: Sequence[int], factor: float) -> optax.Schedule:
    """Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then `peak_lr · factor^k` after the k-th of
    `boundaries` (steps, e.g. PySlowFast's `steps_with_relative_lrs`)."""
    bounds = jnp.asarray(sorted(int(b) for b in boundaries) or [2**31 - 1], jnp.int32)

    def schedule(step):
        decayed = peak_lr * jnp.power(factor, jnp.sum(step >= bounds).astype(jnp.float32))
        return jnp.where(step < warmup_steps, peak_lr * step / max(warmup_steps, 1), decayed)

    return schedule


def decay_mask(params):
    """True for weights that get weight decay (and LARS adaptation): not biases or norm scales."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) not in NO_DECAY_NAMES, params
    )


def squared_norms(arrays: Sequence[jax.Array]) -> jax.Array:
    """float32 [N]: the sum of squares of each of the N arrays.

    The N reductions meet in one `stack`, so XLA:GPU's horizontal input fusion can compute those
    of same-shaped arrays in one kernel; a separate consumer per reduction (optax's per-leaf norms)
    costs one kernel launch per parameter array (hundreds per step for a ResNet-50). The barrier
    keeps the stack: XLA rewrites sum(stack(...)) back into a chain of scalar adds."""
    if not arrays:
        return jnp.zeros((0,), jnp.float32)
    return jax.lax.optimization_barrier(jnp.stack([jnp.sum(jnp.square(a.astype(jnp.float32))) for a in arrays]))


def global_norm(tree) -> jax.Array:
    """float32 scalar: the L2 norm of all leaves of `tree` together (optax.global_norm, fused)."""
    return jnp.sqrt(jnp.sum(squared_norms(jax.tree.leaves(tree))))


def scale_by_trust_ratio(trust_coefficient: float) -> optax.GradientTransformation:
    """LARS's layer-wise trust ratio, as `optax.scale_by_trust_ratio` (eps 0, no minimum norm): each
    update u of parameter p becomes u · trust_coefficient · ‖p‖ / ‖u‖, or stays u where ‖p‖ or ‖u‖
    is 0. All norms come from two `squared_norms` calls (see there)."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_trust_ratio needs the parameters: call update(updates, state, params)")
        update_leaves, treedef = jax.tree.flatten(updates)
        param_norms = jnp.sqrt(squared_norms(treedef.flatten_up_to(params)))
        update_norms = jnp.sqrt(squared_norms(update_leaves))
        ratios = jnp.where((param_norms == 0) | (update_norms == 0), 1.0,
                           trust_coefficient * param_norms / jnp.where(update_norms == 0, 1.0, update_norms))
        scaled = [u * ratios[i].astype(u.dtype) for i, u in enumerate(update_leaves)]
        return jax.tree.unflatten(treedef, scaled), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def lars(learning_rate: optax.ScalarOrSchedule, weight_decay: float, trust_coefficient: float, momentum: float,
         nesterov: bool, mask=decay_mask) -> optax.GradientTransformation:
    """`optax.lars` (eps 0) with its trust ratio from `scale_by_trust_ratio` above, whose norms XLA can
    compute together: the same updates and the same optimiser-state structure (checkpoints of either
    restore into the other)."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=mask),
        optax.masked(scale_by_trust_ratio(trust_coefficient), mask),
        optax.scale_by_learning_rate(learning_rate),
        optax.trace(decay=momentum, nesterov=nesterov),
    )


def create_optimizer(config, batch_size: int, total_steps: int,
                     steps_per_epoch: float) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optax transformation, LR schedule) from `config.optimizer`:

    name (sgd|lars|adamw), base_lr, base_batch_size, warmup_epochs, weight_decay,
    momentum, nesterov, trust_coefficient (LARS); schedule (SCHEDULES, default cosine) with, for
    "steps", decay_epochs and decay_factor.
    """
    opt = config.optimizer
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={opt.name!r} is invalid; valid values: {', '.join(OPTIMIZERS)}")
    peak = peak_learning_rate(opt.base_lr, opt.base_batch_size, batch_size)
    warmup_steps = round(opt.warmup_epochs * steps_per_epoch)
    kind = opt.get("schedule", "cosine")
    if kind not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={kind!r} is invalid; valid values: {', '.join(SCHEDULES)}")
    if kind == "cosine":
        schedule = learning_rate_schedule(peak, total_steps, warmup_steps)
    else:
        epochs = tuple(opt.get("decay_epochs", ()))
        if any(e <= 0 for e in epochs):
            raise ValueError(f"optimizer.decay_epochs={epochs!r} is invalid: epochs > 0")
        schedule = step_schedule(peak, min(warmup_steps, max(total_steps - 1, 0)),
                                 [round(e * steps_per_epoch) for e in epochs], opt.get("decay_factor", 0.1))
    if opt.name == "lars":
        tx = lars(schedule, weight_decay=opt.weight_decay, trust_coefficient=opt.trust_coefficient,
                  momentum=opt.momentum, nesterov=opt.nesterov)
    elif opt.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
            optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov),
        )
    else:
        tx = optax.adamw(schedule, weight_decay=opt.weight_decay, mask=decay_mask)
    return tx, schedule
