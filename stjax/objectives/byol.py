"""ρBYOL: an online network predicts the momentum target's projection of the other clips.

Per the paper recipe: projector MLP 2048→4096 (no bias) →BN→ReLU→256,
predictor 256→4096→BN→ReLU→256, target = EMA of backbone + projector with
momentum cosine-scheduled from 0.996 to 1; loss `losses.byol_loss` over the
positive pairs of the ρ clips.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from stjax import configlib, models
from stjax.objectives import base, losses, schedules


class BYOL(base.Framework):
    name = "byol"

    def __init__(self, config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: float | None = None):
        del steps_per_epoch
        cfg = config.byol
        configlib.require_choice("byol.pairing", cfg.pairing, losses.PAIRINGS)
        self.backbone = base.backbone_from_config(config)
        self.projector = models.MLP(hidden_dims=tuple(cfg.projector_hidden), out_dim=cfg.projector_out,
                                    use_bn=True, hidden_bias=False)
        self.predictor = models.MLP(hidden_dims=tuple(cfg.predictor_hidden), out_dim=cfg.projector_out,
                                    use_bn=True, hidden_bias=False)
        self.base_momentum = cfg.base_momentum
        self.total_steps = total_steps
        self.pairing = cfg.pairing

    def init(self, rng, clips):
        x = base.flatten_clips(clips)
        rngs = jax.random.split(rng, 3)
        bb_params, bb_stats, feats = base.init_variables(self.backbone, rngs[0], x)
        pj_params, pj_stats, proj = base.init_variables(self.projector, rngs[1], feats)
        pd_params, pd_stats, _ = base.init_variables(self.predictor, rngs[2], proj)
        params = {"backbone": bb_params, "projector": pj_params, "predictor": pd_params}
        batch_stats = {"backbone": bb_stats, "projector": pj_stats, "predictor": pd_stats}
        target = {
            "params": {"backbone": bb_params, "projector": pj_params},
            "batch_stats": {"backbone": bb_stats, "projector": pj_stats},
        }
        return params, batch_stats, {"target": jax.tree.map(jnp.copy, target)}

    def _project(self, params, batch_stats, x):
        feats, bb = base.apply_with_stats(self.backbone, params["backbone"], batch_stats["backbone"], x, True)
        proj, pj = base.apply_with_stats(self.projector, params["projector"], batch_stats["projector"], feats, True)
        return proj, {"backbone": bb, "projector": pj}

    def loss(self, params, batch_stats, extra, clips, rng, step):
        del rng
        b, rho = clips.shape[:2]
        x = base.flatten_clips(clips)
        proj, online_stats = self._project(params, batch_stats, x)
        pred, pd = base.apply_with_stats(self.predictor, params["predictor"], batch_stats["predictor"], proj, True)
        target = extra["target"]
        target_proj, target_stats = self._project(target["params"], target["batch_stats"], x)
        pairs = losses.positive_pairs(rho, self.pairing)
        loss = losses.byol_loss(pred.reshape(b, rho, -1), target_proj.reshape(b, rho, -1), pairs)
        new_stats = dict(online_stats, predictor=pd)
        new_extra = {"target": {"params": target["params"], "batch_stats": target_stats}}
        return loss, (new_stats, new_extra, {"loss": loss})

    def after_update(self, params, batch_stats, extra, step):
        momentum = schedules.cosine_momentum(self.base_momentum, step, self.total_steps)
        target = extra["target"]
        online = {"backbone": params["backbone"], "projector": params["projector"]}
        return {"target": {"params": schedules.ema_update(target["params"], online, momentum),
                           "batch_stats": target["batch_stats"]}}
