"""ρSwAV: the code of one clip is predicted from the prototype scores of the other clips.

Per the paper recipe: projector MLP 2048→2048→BN→ReLU→2048→BN→ReLU→128 with
(Sync)BN, L2-normalised projections scored against 1000 unit-norm prototypes;
codes by Sinkhorn-Knopp over the global batch (ε = 0.05, 3 iterations, float32,
no gradient), swapped prediction at temperature 0.1 (`losses.swav_loss`) over
the positive pairs of the ρ clips; prototypes frozen for the first
`freeze_prototypes_epochs` epochs; no queue. (The official code assigns codes
to the first two clips only; here every clip gets a code and the pairing says
which clips predict it, as for the other frameworks.)

Unit-norm prototypes by weight normalisation. SwAV rescales the prototype
matrix to unit columns after every optimiser step, a side effect on the
parameters that a pure optax update has no place for. Here `models.Prototypes`
divides its free kernel v by its column norms in the forward instead. This is
equivalent where it matters: (1) the loss sees exactly unit-norm prototypes in
both, and depends on their directions only; (2) the gradient w.r.t. v is the
gradient w.r.t. the unit prototype with its radial part removed (scaled by
1/‖v‖), and the radial part of SwAV's step is exactly what its renormalisation
throws away, so the directions move alike (to first order in the learning
rate, for ‖v‖ = 1; under LARS, the recipe's optimiser, the step is also
invariant to a common scale of v). Weight decay only shrinks ‖v‖, which changes nothing the loss
sees. The same argument makes the frozen epoch exact: with zero gradient,
weight decay and momentum move v only radially, so the normalised prototypes
stay fixed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from stjax import configlib, models
from stjax.objectives import base, losses


class SwAV(base.Framework):
    name = "swav"

    def __init__(self, config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: float | None = None):
        del total_steps
        cfg = config.swav
        configlib.require_choice("swav.pairing", cfg.pairing, losses.PAIRINGS)
        for field in ("temperature", "epsilon"):
            configlib.require(cfg[field] > 0, f"swav.{field}", cfg[field], "numbers > 0")
        for field in ("num_prototypes", "sinkhorn_iterations"):
            configlib.require(cfg[field] >= 1, f"swav.{field}", cfg[field], "integers >= 1")
        configlib.require(cfg.freeze_prototypes_epochs >= 0, "swav.freeze_prototypes_epochs",
                          cfg.freeze_prototypes_epochs, "numbers >= 0")
        if cfg.freeze_prototypes_epochs > 0 and steps_per_epoch is None:
            raise ValueError(
                f"swav.freeze_prototypes_epochs={cfg.freeze_prototypes_epochs} needs the epoch length: "
                "call create_framework(config, total_steps, steps_per_epoch), or set swav.freeze_prototypes_epochs=0"
            )
        self.backbone = base.backbone_from_config(config)
        self.projector = models.MLP(hidden_dims=tuple(cfg.projector_hidden), out_dim=cfg.projector_out,
                                    use_bn=True, hidden_bias=False)
        self.prototypes = models.Prototypes(cfg.num_prototypes)
        self.temperature = cfg.temperature
        self.epsilon = cfg.epsilon
        self.sinkhorn_iterations = cfg.sinkhorn_iterations
        self.pairing = cfg.pairing
        self.freeze_steps = round(cfg.freeze_prototypes_epochs * steps_per_epoch) if cfg.freeze_prototypes_epochs \
            else 0

    def init(self, rng, clips):
        rngs = jax.random.split(rng, 3)
        bb_params, bb_stats, feats = base.init_variables(self.backbone, rngs[0], base.flatten_clips(clips))
        pj_params, pj_stats, proj = base.init_variables(self.projector, rngs[1], feats)
        pt_params, _, _ = base.init_variables(self.prototypes, rngs[2], proj)
        return ({"backbone": bb_params, "projector": pj_params, "prototypes": pt_params},
                {"backbone": bb_stats, "projector": pj_stats}, {})

    def loss(self, params, batch_stats, extra, clips, rng, step):
        del rng
        b, rho = clips.shape[:2]
        feats, bb = base.apply_with_stats(self.backbone, params["backbone"], batch_stats["backbone"],
                                          base.flatten_clips(clips), True)
        proj, pj = base.apply_with_stats(self.projector, params["projector"], batch_stats["projector"], feats, True)
        prototypes = params["prototypes"]
        if self.freeze_steps:
            frozen = step < self.freeze_steps
            prototypes = jax.tree.map(lambda v: jnp.where(frozen, jax.lax.stop_gradient(v), v), prototypes)
        scores = self.prototypes.apply({"params": prototypes}, losses.l2_normalize(proj))
        loss = losses.swav_loss(scores.reshape(b, rho, -1), losses.positive_pairs(rho, self.pairing),
                                self.temperature, self.epsilon, self.sinkhorn_iterations)
        return loss, ({"backbone": bb, "projector": pj}, extra, {"loss": loss})
