"""ρSimCLR: every clip of the batch against every other, NT-Xent over the global batch.

Per the paper recipe: projector MLP 2048→2048→BN→ReLU→2048→BN→ReLU→128 with
(Sync)BN over the global batch, temperature 0.1. `simclr.pairing` picks the loss:

  all          the paper's general form, `losses.nt_xent_loss`: every other clip of
               the video a positive, every other clip of the batch in the denominator;
  consecutive  PySlowFast's form (its SimCLR config: ρ = 4), `losses.nt_xent_consecutive_loss`:
               one 2B-sample NT-Xent per pair of consecutive clips (k, k+1), summed.

Both are the classic SimCLR loss at ρ = 2.
"""
from __future__ import annotations

import jax
import ml_collections

from stjax import configlib, models
from stjax.objectives import base, losses


class SimCLR(base.Framework):
    name = "simclr"

    def __init__(self, config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: float | None = None):
        del total_steps, steps_per_epoch
        cfg = config.simclr
        configlib.require_choice("simclr.pairing", cfg.pairing, losses.PAIRINGS)
        configlib.require(cfg.temperature > 0, "simclr.temperature", cfg.temperature, "numbers > 0")
        self.backbone = base.backbone_from_config(config)
        self.projector = models.MLP(hidden_dims=tuple(cfg.projector_hidden), out_dim=cfg.projector_out,
                                    use_bn=True, hidden_bias=False)
        self.temperature = cfg.temperature
        self.pairing = cfg.pairing

    def init(self, rng, clips):
        bb_rng, pj_rng = jax.random.split(rng)
        bb_params, bb_stats, feats = base.init_variables(self.backbone, bb_rng, base.flatten_clips(clips))
        pj_params, pj_stats, _ = base.init_variables(self.projector, pj_rng, feats)
        return ({"backbone": bb_params, "projector": pj_params},
                {"backbone": bb_stats, "projector": pj_stats}, {})

    def loss(self, params, batch_stats, extra, clips, rng, step):
        del rng, step
        b, rho = clips.shape[:2]
        feats, bb = base.apply_with_stats(self.backbone, params["backbone"], batch_stats["backbone"],
                                          base.flatten_clips(clips), True)
        proj, pj = base.apply_with_stats(self.projector, params["projector"], batch_stats["projector"], feats, True)
        proj = proj.reshape(b, rho, -1)
        if self.pairing == "consecutive":
            loss = losses.nt_xent_consecutive_loss(proj, self.temperature)
        else:
            loss = losses.nt_xent_loss(proj, losses.positive_pairs(rho, self.pairing), self.temperature)
        return loss, ({"backbone": bb, "projector": pj}, extra, {"loss": loss})

