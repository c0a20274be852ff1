"""ρSwAV: the code of one clip is predicted from the prototype scores of the other clips.

Per the paper recipe: projector MLP 2048→2048→BN→ReLU→2048→BN→ReLU→128 with
(Sync)BN, L2-normalised projections scored against 1000 unit-norm prototypes;
codes by Sinkhorn-Knopp over the global batch (ε = 0.05, 3 iterations, float32,
no gradient), swapped prediction at temperature 0.1 (`losses.swav_loss`) over
the positive pairs of the ρ clips; prototypes frozen for the first
`freeze_prototypes_epochs` epochs (`inf`: kept at their random initialisation
for the whole run); no queue. Every clip gets a code and `swav.pairing` says
which clips predict it: `consecutive` is PySlowFast's form (one two-clip loss
½(ℓ(s_k, q_{k+1}) + ℓ(s_{k+1}, q_k)) per consecutive pair, summed over the ρ − 1
pairs), `all` the paper's general form (the mean over all ordered pairs); they
coincide at ρ = 2, the official config's ρ.

Queue (optional, `swav.queue_size` > 0; the recipe has none). SwAV's remedy for
small batches: Sinkhorn partitions N samples over K prototypes, and with
N ≪ K every code is spread over at least K/N prototypes, so the codes carry
little that the other clip could predict and the predictions drift to uniform
(the loss pinned at ln K; measured in the demo, issue 4). As in the official
code, from `queue_start_epochs` on, each step's normalised projections are
pushed (per clip index, newest first, no gradient) into a FIFO of `queue_size`
rows kept in `extra`; once it is full, its rows are scored against the current
prototypes and stacked before the batch for Sinkhorn (`losses.swav_codes`);
only the batch's own codes enter the loss. The queue holds the global batch's
projections, so results do not depend on the number of devices.

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

import math

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
        for field in ("freeze_prototypes_epochs", "queue_start_epochs", "queue_size"):
            configlib.require(cfg.get(field, 0) >= 0, f"swav.{field}", cfg.get(field), "numbers >= 0")
        for field in ("freeze_prototypes_epochs", "queue_start_epochs"):
            if cfg.get(field, 0) > 0 and not math.isinf(cfg[field]) and steps_per_epoch is None:
                raise ValueError(
                    f"swav.{field}={cfg[field]} needs the epoch length: "
                    f"call create_framework(config, total_steps, steps_per_epoch), or set swav.{field}=0"
                )
        self.backbone = base.backbone_from_config(config)
        self.projector = models.MLP(hidden_dims=tuple(cfg.projector_hidden), out_dim=cfg.projector_out,
                                    use_bn=True, hidden_bias=False)
        self.prototypes = models.Prototypes(cfg.num_prototypes)
        self.temperature = cfg.temperature
        self.epsilon = cfg.epsilon
        self.sinkhorn_iterations = cfg.sinkhorn_iterations
        self.pairing = cfg.pairing
        # PySlowFast sums one two-clip loss per consecutive pair; the paper's general form averages all pairs.
        self.reduction = "per_pair" if cfg.pairing == "consecutive" else "mean"
        self.freeze_steps = self._epochs_to_steps(cfg.freeze_prototypes_epochs, steps_per_epoch)
        self.queue_size = cfg.get("queue_size", 0)
        self.queue_start_step = self._epochs_to_steps(cfg.get("queue_start_epochs", 0), steps_per_epoch)
        if "batch_size" in config:
            self._check_queue(config.batch_size)

    def _check_queue(self, batch_size: int) -> None:
        if self.queue_size:
            configlib.require(self.queue_size >= batch_size, "swav.queue_size", self.queue_size,
                              f"0 (no queue) or integers >= the batch size {batch_size}")

    @staticmethod
    def _epochs_to_steps(epochs, steps_per_epoch):
        """Steps in `epochs` (0 for 0; inf stays inf: for the whole run)."""
        if not epochs or math.isinf(epochs):
            return epochs or 0
        return round(epochs * steps_per_epoch)

    def init(self, rng, clips):
        rngs = jax.random.split(rng, 3)
        bb_params, bb_stats, feats = base.init_variables(self.backbone, rngs[0], base.flatten_clips(clips))
        pj_params, pj_stats, proj = base.init_variables(self.projector, rngs[1], feats)
        pt_params, _, _ = base.init_variables(self.prototypes, rngs[2], proj)
        extra = {}
        if self.queue_size:
            b, rho = clips.shape[:2]
            self._check_queue(b)
            extra = {"queue": jnp.zeros((rho, self.queue_size, proj.shape[-1]), jnp.float32),
                     "queue_count": jnp.zeros((), jnp.int32)}
        return ({"backbone": bb_params, "projector": pj_params, "prototypes": pt_params},
                {"backbone": bb_stats, "projector": pj_stats}, extra)

    def project(self, params, batch_stats, clips):
        """Unit-norm projections [B, ρ, D] of clips [B, ρ, T, H, W, 3] (BN in training mode), and the
        new batch_stats."""
        b, rho = clips.shape[:2]
        feats, bb = base.apply_with_stats(self.backbone, params["backbone"], batch_stats["backbone"],
                                          base.flatten_clips(clips), True)
        proj, pj = base.apply_with_stats(self.projector, params["projector"], batch_stats["projector"], feats, True)
        return losses.l2_normalize(proj).reshape(b, rho, -1), {"backbone": bb, "projector": pj}

    def loss(self, params, batch_stats, extra, clips, rng, step):
        del rng
        b, rho = clips.shape[:2]
        embeddings, new_stats = self.project(params, batch_stats, clips)
        prototypes = params["prototypes"]
        if self.freeze_steps:
            frozen = True if math.isinf(self.freeze_steps) else step < self.freeze_steps
            prototypes = jax.tree.map(lambda v: jnp.where(frozen, jax.lax.stop_gradient(v), v), prototypes)
        scores = self.prototypes.apply({"params": prototypes}, embeddings)  # [B, ρ, K]
        if self.queue_size:
            codes, extra = self._codes_with_queue(scores, embeddings, prototypes, extra, step)
        else:
            codes = losses.swav_codes(scores, self.epsilon, self.sinkhorn_iterations)
        loss = losses.swapped_prediction_loss(scores, codes, losses.positive_pairs(rho, self.pairing),
                                              self.temperature, reduction=self.reduction)
        # Collapse monitors (nats): both tend to ln K when the predictions become uniform.
        metrics = {"loss": loss, "code_entropy": losses.mean_entropy(codes),
                   "prediction_entropy": losses.mean_entropy(jax.nn.softmax(scores / self.temperature))}
        return loss, (new_stats, extra, metrics)

    def _codes_with_queue(self, scores, embeddings, prototypes, extra, step):
        """Codes [B, ρ, K] of the batch, from Sinkhorn over the queue and the batch once the queue is
        full (over the batch alone before), and `extra` with this step's embeddings [B, ρ, D] pushed
        into the queue from `queue_start_step` on."""
        queue, count = extra["queue"], extra["queue_count"]
        queue_scores = self.prototypes.apply({"params": jax.lax.stop_gradient(prototypes)}, queue)  # [ρ, Q, K]
        codes = jax.lax.cond(
            count >= self.queue_size,
            lambda: losses.swav_codes(scores, self.epsilon, self.sinkhorn_iterations, queue_scores),
            lambda: losses.swav_codes(scores, self.epsilon, self.sinkhorn_iterations),
        )
        b = scores.shape[0]
        pushed = jnp.concatenate([jnp.swapaxes(jax.lax.stop_gradient(embeddings), 0, 1), queue[:, :-b]], axis=1)
        started = step >= self.queue_start_step
        return codes, {"queue": jnp.where(started, pushed, queue),
                       "queue_count": jnp.where(started, jnp.minimum(count + b, self.queue_size), count)}
