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

A framework class is built as `cls(config, total_steps, steps_per_epoch=None)`
(see `stjax.objectives.create_framework`); it reads its own config block
`config.<name>` and fails there, naming the field, on invalid settings.
"""
from __future__ import annotations

import abc
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stjax import models

PyTree = Any


class Framework(abc.ABC):
    """A self-supervised objective with its networks. Subclasses are registered by name."""

    name: str = ""
    backbone: nn.Module
    # Batch inputs (names of `batch_inputs`) that are uint8 pixels [..., 3]: the train step normalises them like
    # the clips (`stjax.train.step.normalize_clips`) before `loss` sees them (e.g. CMD's keyframes).
    pixel_inputs: tuple[str, ...] = ()

    @abc.abstractmethod
    def init(self, rng: jax.Array, clips: jnp.ndarray) -> tuple[PyTree, PyTree, PyTree]:
        """(params, batch_stats, extra) for float clips [B, ρ, T, H, W, 3]."""

    @abc.abstractmethod
    def loss(self, params, batch_stats, extra, clips, rng, step, **batch_inputs
             ) -> tuple[jnp.ndarray, tuple[PyTree, PyTree, dict]]:
        """Scalar loss and (new batch_stats, new extra, metrics) for one batch; pure. `batch_inputs` are
        what `batch_inputs(batch)` takes from the batch besides the clips (none for self-supervision)."""

    def batch_inputs(self, batch: dict) -> dict:
        """Keyword arguments of `loss` taken from the batch (e.g. labels); self-supervised: none."""
        del batch
        return {}

    def updates_params(self, step) -> jnp.ndarray | bool:
        """Whether the optimiser update of this step is applied: True (always, the default) or a traced bool
        of the int32 `step`. On a skipped step the parameters and the optimiser's momentum stay as they
        were (`stjax.train.step.skip_update_unless`); batch_stats and `extra` change as `loss` returns them,
        then `after_update` runs as usual."""
        del step
        return True

    def after_update(self, params, batch_stats, extra, step) -> PyTree:
        """`extra` after the optimiser step (e.g. the EMA target); default: unchanged."""
        del params, batch_stats, step
        return extra

    def with_backbone(self, params, batch_stats, extra, variables: dict) -> tuple[PyTree, PyTree, PyTree]:
        """(params, batch_stats, extra) with the online backbone set to `variables` ({'params', 'batch_stats'},
        e.g. imported weights). A momentum target kept as ``extra['target']`` = {'params': {'backbone': ...},
        'batch_stats': {'backbone': ...}} (BYOL, MoCo) starts from the same weights."""
        params = {**params, "backbone": variables["params"]}
        batch_stats = {**batch_stats, "backbone": variables["batch_stats"]}
        if isinstance(extra, dict) and "target" in extra:
            target = extra["target"]
            extra = {**extra, "target": {
                "params": {**target["params"], "backbone": jax.tree.map(jnp.copy, variables["params"])},
                "batch_stats": {**target["batch_stats"],
                                "backbone": jax.tree.map(jnp.copy, variables["batch_stats"])}}}
        return params, batch_stats, extra

    def embed(self, params, batch_stats, extra, clips, rng, train: bool) -> tuple[jnp.ndarray, PyTree]:
        """Pooled online-backbone features [B, ρ, D] float32 (before any projector) of float clips
        [B, ρ, T, H, W, 3], and batch_stats with the backbone's updated in train mode (unchanged otherwise)."""
        del extra, rng
        b, rho = clips.shape[:2]
        feats, bb = apply_with_stats(self.backbone, params["backbone"], batch_stats["backbone"],
                                     flatten_clips(clips), train)
        return feats.astype(jnp.float32).reshape(b, rho, -1), {**batch_stats, "backbone": bb}

    def backbone_variables(self, params, batch_stats) -> dict:
        """Variables of the online backbone, for `self.backbone.apply`."""
        return {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}


def backbone_from_config(config) -> nn.Module:
    """The backbone named by `config.model.backbone`, computing in `config.model.dtype`, with per-block
    rematerialisation if `config.model.remat`, and `config.model.overrides` (ResNet3D fields) if any."""
    return models.create_backbone(config.model.backbone, **models.backbone_options(config.model))


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


def apply_with_group_stats(module: nn.Module, params, batch_stats, x, groups: int):
    """`apply_with_stats` in train mode with BatchNorm statistics per group of samples.

    x [N, ...] is split into `groups` contiguous groups of N/groups samples; each
    group is normalised with its own batch statistics (`jax.vmap` over a group
    axis, so it is the same on any number of devices). The new running
    statistics are the mean over the groups of each group's update. `groups=1`
    is plain (global, i.e. synchronised) BatchNorm.

    Returns (output [N, ...], new batch_stats).
    """
    if groups < 1 or x.shape[0] % groups:
        raise ValueError(f"{groups} BatchNorm groups do not divide a batch of {x.shape[0]} samples")
    if groups == 1:
        return apply_with_stats(module, params, batch_stats, x, True)
    grouped = x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
    out, stats = jax.vmap(lambda xg: apply_with_stats(module, params, batch_stats, xg, True))(grouped)
    return out.reshape((x.shape[0],) + out.shape[2:]), jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)


def init_variables(module: nn.Module, rng, x) -> tuple[PyTree, PyTree, jnp.ndarray]:
    """(params, batch_stats, output) of a freshly initialised module on input x."""
    variables = module.init(rng, x, train=False)
    out = module.apply(variables, x, train=False)
    return variables["params"], variables.get("batch_stats", {}), out
