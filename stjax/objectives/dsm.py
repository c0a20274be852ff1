"""DSM alone (`framework=dsm`): the triplet objective of `auxiliary.DecoupleSceneMotion` on a projection of the
backbone features, no queue and no momentum encoder (the official `dsm_triplet`: GAP → Linear → L2).

`config.dsm`: projector_out (128), margin (0.5), num_points, centre, shift (the spatial local disturbance),
insert_rounds, swap_rounds (the temporal local disturbance); the same fields and checks as the auxiliary
term's block `config.auxiliary.dsm`, which adds the same loss to another framework instead.
"""
from __future__ import annotations

import jax
import ml_collections

from stjax import configlib, models
from stjax.objectives import auxiliary, base

TERM_FIELDS = ("margin", "num_points", "centre", "shift", "insert_rounds", "swap_rounds")


class DSM(base.Framework):
    name = "dsm"

    def __init__(self, config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: float | None = None):
        del total_steps, steps_per_epoch
        cfg = config.dsm
        configlib.require(cfg.projector_out >= 1, "dsm.projector_out", cfg.projector_out, "integers >= 1")
        settings = {**auxiliary.DecoupleSceneMotion.defaults, **{k: cfg[k] for k in TERM_FIELDS if k in cfg}}
        try:
            self.term = auxiliary.DecoupleSceneMotion(settings)
        except ValueError as e:  # the term names its block: here it is config.dsm
            raise ValueError(str(e).replace("auxiliary.dsm.", "dsm.")) from None
        self.backbone = base.backbone_from_config(config)
        self.projector = models.MLP(hidden_dims=(), out_dim=cfg.projector_out, use_bn=False)

    def init(self, rng, clips):
        bb_rng, pj_rng = jax.random.split(rng)
        bb_params, bb_stats, feats = base.init_variables(self.backbone, bb_rng, base.flatten_clips(clips))
        pj_params, _, _ = base.init_variables(self.projector, pj_rng, feats)
        return {"backbone": bb_params, "projector": pj_params}, {"backbone": bb_stats}, {}

    def loss(self, params, batch_stats, extra, clips, rng, step):
        del step

        def embed(x):
            b, n = x.shape[:2]
            feats, bb = base.apply_with_stats(self.backbone, params["backbone"], batch_stats["backbone"],
                                              base.flatten_clips(x), True)
            proj = self.projector.apply({"params": params["projector"]}, feats, train=True)
            return proj.reshape(b, n, -1), {"backbone": bb}

        loss, new_stats, metrics = self.term.triplets(embed, clips, rng)
        return loss, (new_stats, extra, {"loss": loss, **{k.replace("aux/dsm_", ""): v for k, v in metrics.items()}})
