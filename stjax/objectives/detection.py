"""Action detection as a framework: backbone feature map → RoIHead per person box, sigmoid cross-entropy.

It plugs into the generic train step and loop like `supervised`; the batches are the keyframe pipeline's
(`stjax.data.keyframes`: clips [B, 1, T, S, S, 3], boxes [B, M, 4] in [0, 1], box_mask [B, M], label
multi-hot [B, M, C]), taken by `batch_inputs`. The backbone returns its last feature map (`pooled=False`;
for PySlowFast's AVA layout give it res5 stride 1 and dilation 2 through `model.overrides`,
`stjax.models.detection_overrides`), the head (`stjax.models.RoIHead`) pools each box's region of it.
`config.detection`: num_classes, dropout (0.5), roi_output_size ((7, 7)), roi_max_sampling (None: exact),
roi_method ("gather").

Loss: binary cross-entropy of every (valid box, class) pair, averaged over the classes and the valid boxes of
the batch (PySlowFast's `bce` on the boxes it keeps); padded boxes take no part.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from stjax import configlib, models
from stjax.objectives import base


def box_loss(logits: jnp.ndarray, labels: jnp.ndarray, box_mask: jnp.ndarray) -> tuple[jnp.ndarray, dict]:
    """(loss, metrics) of per-box logits [B, M, C] against multi-hot labels [B, M, C] on boxes where box_mask
    [B, M] is True: the mean over classes and valid boxes of the sigmoid binary cross-entropy (0 when no box
    is valid). Metrics: `loss`, `boxes` (valid boxes in the batch), `train_top1` (the share of valid boxes
    whose highest-scoring class is one of theirs)."""
    if logits.ndim != 3 or labels.shape != logits.shape or box_mask.shape != logits.shape[:2]:
        raise ValueError(f"box_loss needs logits and labels [B, M, C] and box_mask [B, M]; got {logits.shape}, "
                         f"{labels.shape}, {box_mask.shape}")
    weight = box_mask.astype(jnp.float32)
    count = jnp.sum(weight)
    per_box = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)), axis=-1)
    loss = jnp.sum(per_box * weight) / jnp.maximum(count, 1.0)
    hit = jnp.take_along_axis(labels, jnp.argmax(logits, axis=-1)[..., None], axis=-1)[..., 0] > 0
    top1 = jnp.sum(hit * weight) / jnp.maximum(count, 1.0)
    return loss, {"loss": loss, "boxes": count, "train_top1": top1}


class Detection(base.Framework):
    name = "detection"

    def __init__(self, config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: float | None = None):
        del total_steps, steps_per_epoch
        cfg = config.detection
        configlib.require(cfg.num_classes >= 1, "detection.num_classes", cfg.num_classes, "integers >= 1")
        configlib.require(0.0 <= cfg.dropout < 1.0, "detection.dropout", cfg.dropout, "numbers in [0, 1)")
        configlib.require_choice("detection.roi_method", cfg.get("roi_method", "gather"), models.ROI_ALIGN_METHODS)
        size = tuple(cfg.get("roi_output_size", (7, 7)))
        configlib.require(len(size) == 2 and min(size) >= 1, "detection.roi_output_size", size,
                          "(height, width) with both >= 1")
        self.backbone = base.backbone_from_config(config)
        self.head = models.RoIHead(num_classes=cfg.num_classes, dropout_rate=cfg.dropout, output_size=size,
                                   max_sampling=cfg.get("roi_max_sampling"), roi_method=cfg.get("roi_method",
                                                                                                "gather"))

    def batch_inputs(self, batch) -> dict:
        return {"boxes": batch["boxes"], "box_mask": batch["box_mask"], "labels": batch["label"]}

    def _feature_map(self, params, batch_stats, clips, train: bool):
        """(float32 [B, T', H', W', D] of clips [B, 1, T, H, W, 3], new backbone batch_stats)."""
        if clips.shape[1] != 1:
            raise ValueError(f"detection takes one clip per keyframe: clips [B, 1, T, H, W, 3], got {clips.shape}")
        variables = {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}
        x = base.flatten_clips(clips)
        if train:
            fmap, updates = self.backbone.apply(variables, x, train=True, pooled=False, mutable=["batch_stats"])
            return fmap, updates["batch_stats"]
        return self.backbone.apply(variables, x, train=False, pooled=False), batch_stats["backbone"]

    def init(self, rng, clips):
        bb_rng, head_rng = jax.random.split(rng)
        x = base.flatten_clips(clips)
        variables = self.backbone.init(bb_rng, x, train=False)
        fmap = self.backbone.apply(variables, x, train=False, pooled=False)
        boxes = jnp.tile(jnp.asarray([[[0.25, 0.25, 0.75, 0.75]]], jnp.float32), (x.shape[0], 1, 1))
        head = self.head.init(head_rng, fmap, boxes, train=False)
        return ({"backbone": variables["params"], "head": head["params"]},
                {"backbone": variables.get("batch_stats", {})}, {})

    def loss(self, params, batch_stats, extra, clips, rng, step, boxes=None, box_mask=None, labels=None):
        del step
        fmap, bb = self._feature_map(params, batch_stats, clips, train=True)
        logits = self.head.apply({"params": params["head"]}, fmap, boxes, train=True, rngs={"dropout": rng})
        loss, metrics = box_loss(logits, labels, box_mask)
        return loss, ({"backbone": bb}, extra, metrics)

    def detect(self, params, batch_stats, clips, boxes) -> jnp.ndarray:
        """Per-box logits float32 [B, M, C] of clips [B, 1, T, H, W, 3] (normalised) and boxes [B, M, 4] in
        [0, 1] of their frames (eval mode: no dropout, running BatchNorm statistics)."""
        fmap, _ = self._feature_map(params, batch_stats, clips, train=False)
        return self.head.apply({"params": params["head"]}, fmap, boxes, train=False)
