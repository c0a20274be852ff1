"""Optimisers (optax) and learning-rate schedules, with the LR–batch scaling rule explicit.

    lr = base_lr × global_batch_size / base_batch_size      (linear scaling rule)

`base_lr` is the learning rate the recipe uses at `base_batch_size` videos per
step; the rule is applied here, once, and the resulting peak LR is logged, so a
run on fewer accelerators with a smaller batch reproduces the recipe's
per-example schedule.
"""
from __future__ import annotations

import jax
import optax

OPTIMIZERS = ("sgd", "lars", "adamw")
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


def decay_mask(params):
    """True for weights that get weight decay (and LARS adaptation): not biases or norm scales."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) not in NO_DECAY_NAMES, params
    )


def create_optimizer(config, batch_size: int, total_steps: int,
                     steps_per_epoch: float) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optax transformation, LR schedule) from `config.optimizer`:

    name (sgd|lars|adamw), base_lr, base_batch_size, warmup_epochs, weight_decay,
    momentum, nesterov, trust_coefficient (LARS).
    """
    opt = config.optimizer
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={opt.name!r} is invalid; valid values: {', '.join(OPTIMIZERS)}")
    peak = peak_learning_rate(opt.base_lr, opt.base_batch_size, batch_size)
    schedule = learning_rate_schedule(peak, total_steps, round(opt.warmup_epochs * steps_per_epoch))
    if opt.name == "lars":
        tx = optax.lars(
            schedule, weight_decay=opt.weight_decay, weight_decay_mask=decay_mask,
            trust_coefficient=opt.trust_coefficient, trust_ratio_mask=decay_mask,
            momentum=opt.momentum, nesterov=opt.nesterov,
        )
    elif opt.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
            optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov),
        )
    else:
        tx = optax.adamw(schedule, weight_decay=opt.weight_decay, mask=decay_mask)
    return tx, schedule
