"""Supervised fine-tuning as a framework: backbone → dropout → linear classifier, cross-entropy.

It plugs into the same generic train step and loop as the self-supervised frameworks; the
labels come from the batch through `batch_inputs`: int [B] (softmax cross-entropy) or multi-hot
{0, 1} [B, C] (sigmoid binary cross-entropy). Every clip of a video ([B, ρ, ...]; ρ = 1
gives two augmentations of one clip) is a training example with the video's label.
`config.supervised`: num_classes, dropout (the paper's UCF101/HMDB51 recipe: 0.8), freeze_backbone
(the linear protocol: the backbone runs in eval mode, its BatchNorm statistics and, with no gradient
and no weight decay, its weights stay as they were).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from stjax import configlib, models
from stjax.objectives import base


def classification_loss(logits: jnp.ndarray, labels: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(loss, top-1) of logits [N, C]: int labels [N] -> softmax cross-entropy and accuracy; multi-hot {0, 1}
    labels [N, C] -> sigmoid binary cross-entropy (mean over rows and classes) and precision@1."""
    if labels.ndim == 1:
        labels = labels.astype(jnp.int32)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        return loss, jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    if labels.shape != logits.shape:
        raise ValueError(f"multi-hot labels must be [N, num_classes={logits.shape[-1]}]; got shape {labels.shape}")
    labels = labels.astype(jnp.float32)
    loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
    top1 = jnp.mean(jnp.take_along_axis(labels, jnp.argmax(logits, axis=-1)[:, None], axis=-1))
    return loss, top1


class Supervised(base.Framework):
    name = "supervised"

    def __init__(self, config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: float | None = None):
        del total_steps, steps_per_epoch
        cfg = config.supervised
        configlib.require(cfg.num_classes >= 2, "supervised.num_classes", cfg.num_classes, "integers >= 2")
        configlib.require(0.0 <= cfg.dropout < 1.0, "supervised.dropout", cfg.dropout, "numbers in [0, 1)")
        self.backbone = base.backbone_from_config(config)
        self.head = models.Linear(num_classes=cfg.num_classes, dropout_rate=cfg.dropout)
        self.freeze_backbone = bool(cfg.get("freeze_backbone", False))

    def batch_inputs(self, batch) -> dict:
        return {"labels": batch["label"]}

    def init(self, rng, clips):
        bb_rng, head_rng = jax.random.split(rng)
        bb_params, bb_stats, feats = base.init_variables(self.backbone, bb_rng, base.flatten_clips(clips))
        head_params, _, _ = base.init_variables(self.head, head_rng, feats)
        return {"backbone": bb_params, "head": head_params}, {"backbone": bb_stats}, {}

    def loss(self, params, batch_stats, extra, clips, rng, step, labels=None):
        del step
        b, rho = clips.shape[:2]
        feats, bb = base.apply_with_stats(self.backbone, params["backbone"], batch_stats["backbone"],
                                          base.flatten_clips(clips), train=not self.freeze_backbone)
        if self.freeze_backbone:
            feats = jax.lax.stop_gradient(feats)
        logits = self.head.apply({"params": params["head"]}, feats, train=True, rngs={"dropout": rng})
        loss, top1 = classification_loss(logits, jnp.repeat(labels, rho, axis=0))  # video-major, as flatten_clips
        return loss, ({"backbone": bb}, extra, {"loss": loss, "train_top1": top1})

    def classify(self, params, features: jnp.ndarray) -> jnp.ndarray:
        """Logits [N, C] of backbone features [N, D] (eval mode: no dropout)."""
        return self.head.apply({"params": params["head"]}, features, train=False)
