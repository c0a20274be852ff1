"""The interface between a self-supervised framework and the generic train loop.

A framework owns its networks (a backbone from `stjax.models` plus heads), its
loss and its own state (momentum target, queue, prototypes, ...). The train
loop only ever calls the methods below, so adding a framework never touches
`stjax/train/`.

Variables are split three ways:
  params       trainable pytree, updated by the optimiser; `params['backbone']`
               is the backbone that evaluation and export use.
  batch_stats  BatchNorm running statistics of the online networks;
               `batch_stats['backbone']` goes with `params['backbone']`.
  extra        everything else the framework carries from step to step.
"""
from __future__ import annotations

import abc
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any


class Framework(abc.ABC):
    """A self-supervised objective with its networks. Subclasses are registered by name."""

    name: str = ""
    backbone: nn.Module

    @abc.abstractmethod
    def init(self, rng: jax.Array, clips: jnp.ndarray) -> tuple[PyTree, PyTree, PyTree]:
        """(params, batch_stats, extra) for float clips [B, ρ, T, H, W, 3]."""

    @abc.abstractmethod
    def loss(self, params, batch_stats, extra, clips, rng, step) -> tuple[jnp.ndarray, tuple[PyTree, PyTree, dict]]:
        """Scalar loss and (new batch_stats, new extra, metrics) for one batch; pure."""

    def after_update(self, params, batch_stats, extra, step) -> PyTree:
        """`extra` after the optimiser step (e.g. the EMA target); default: unchanged."""
        del params, batch_stats, step
        return extra

    def backbone_variables(self, params, batch_stats) -> dict:
        """Variables of the online backbone, for `self.backbone.apply`."""
        return {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}


def flatten_clips(clips: jnp.ndarray) -> jnp.ndarray:
    """[B, ρ, T, H, W, C] → [B·ρ, T, H, W, C] (video-major)."""
    return clips.reshape((-1,) + clips.shape[2:])


def apply_with_stats(module: nn.Module, params, batch_stats, x, train: bool):
    """Runs `module` and returns (output, new batch_stats); in eval mode stats are unchanged."""
    if train:
        out, updates = module.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return out, updates["batch_stats"]
    return module.apply({"params": params, "batch_stats": batch_stats}, x, train=False), batch_stats


def init_variables(module: nn.Module, rng, x) -> tuple[PyTree, PyTree, jnp.ndarray]:
    """(params, batch_stats, output) of a freshly initialised module on input x."""
    variables = module.init(rng, x, train=False)
    out = module.apply(variables, x, train=False)
    return variables["params"], variables.get("batch_stats", {}), out
