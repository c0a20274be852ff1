"""ρMoCo: each clip's query against the momentum-encoder keys of the other clips and a queue of past keys.

Per the paper recipe: query encoder = backbone + projector MLP
2048→2048→ReLU→2048→ReLU→128 without BN; key encoder = EMA of both, momentum
cosine-scheduled from 0.994 to 1; InfoNCE at temperature 0.1 against the
positive key and a queue of 65536 past keys (`losses.info_nce_loss`, over the
positive pairs of the ρ clips: per query clip the mean over its positive keys,
summed over the ρ queries, exactly PySlowFast's ρMoCo); all ρ keys of every step
are enqueued. As in PySlowFast, the first `moco.queue_fill_steps` steps (default:
queue_size // batch_size, within the first epoch; 128 in the recipe) apply no
optimiser update while the queue fills with real keys (`updates_params`).

`moco.queue_size=0` drops the queue: the negatives are then the keys of the
other videos of the (global) batch, MoCo v3's form. The demo uses it: in a
500-step run every queue we tried (64 to 4096 keys, key momentum 0 to 0.999)
let the embeddings collapse, while the batch's keys gave a linear probe of
0.29 against 0.11 at random initialisation (issue 4 has the runs).

Queue placement. The queue (unit-norm keys, [K, D]) and its write pointer live
in `extra` beside the key encoder. `loss` computes this step's keys, uses the
queue as it was before this step for the negatives (as MoCo does), and returns
the queue with this step's B·ρ keys written at the pointer (FIFO, overwriting
the oldest, wrapping around) in its new `extra`; `after_update` then moves the
key encoder only. The train loop stays generic: it just threads `extra`.

BatchNorm without a leak (shuffle-BN, device-independent). With BatchNorm over
the global batch (SyncBN) in both encoders, a query and its in-batch positive
key are both normalised with the statistics of the current batch, while the
queue keys carry statistics of older batches and older key encoders: the
network can pick the positive out by that batch signature instead of by
content (MoCo §3.3). MoCo v2 computes BN per GPU and shuffles the key batch
across GPUs, so a query and its positive key are normalised over two different
subsets of the batch. The equivalent here, under `jax.jit` on any mesh:

  - both encoders compute the backbone's BN statistics in `moco.bn_groups`
    groups of B·ρ/G clips (`base.apply_with_group_stats`, a vmap over a group
    axis; the projector has no BN);
  - the query groups are contiguous blocks of whole videos (MoCo's per-GPU
    batches);
  - the key encoder's clips are permuted by a random permutation drawn from the
    step rng before grouping, and un-permuted after it.

So each key is normalised over a random subset of the batch, not the block its
query was normalised over. Grouping the keys alone would not be enough: a
query normalised over the whole batch carries the current batch's signature,
of which every key group is a sample and the queue keys are not. Groups are
formed from positions in the global batch, so a step gives the same result on
any number of devices (per-GPU BN would not). Running statistics (for
evaluation) are the mean of the groups' updates. `bn_groups=1` is plain SyncBN
in both encoders with no shuffle, i.e. no guard.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from stjax import configlib, models
from stjax.objectives import base, losses, schedules


def enqueue(queue: jnp.ndarray, ptr: jnp.ndarray, keys: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """FIFO write of keys [N, D] into queue [K, D] (N ≤ K) at rows ptr, ptr+1, … mod K.

    Returns (new queue, new pointer (ptr + N) mod K, int32 scalar).
    """
    n, k = keys.shape[0], queue.shape[0]
    rows = (ptr + jnp.arange(n, dtype=jnp.int32)) % k
    return queue.at[rows].set(keys.astype(queue.dtype)), ((ptr + n) % k).astype(jnp.int32)


class MoCo(base.Framework):
    name = "moco"

    def __init__(self, config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: float | None = None):
        cfg = config.moco
        configlib.require_choice("moco.pairing", cfg.pairing, losses.PAIRINGS)
        configlib.require(cfg.temperature > 0, "moco.temperature", cfg.temperature, "numbers > 0")
        configlib.require(0 <= cfg.base_momentum <= 1, "moco.base_momentum", cfg.base_momentum, "numbers in [0, 1]")
        configlib.require(cfg.queue_size >= 0, "moco.queue_size", cfg.queue_size,
                          "0 (negatives from the batch) or integers >= batch_size·ρ")
        configlib.require(cfg.bn_groups >= 1, "moco.bn_groups", cfg.bn_groups, "integers >= 1")
        if "batch_size" in config:
            self._check_batch(config.batch_size, max(config.get("rho", 2), 2), cfg.queue_size, cfg.bn_groups)
        self.backbone = base.backbone_from_config(config)
        self.projector = models.MLP(hidden_dims=tuple(cfg.projector_hidden), out_dim=cfg.projector_out,
                                    use_bn=False, hidden_bias=True)
        self.temperature = cfg.temperature
        self.base_momentum = cfg.base_momentum
        self.queue_size = cfg.queue_size
        self.bn_groups = cfg.bn_groups
        self.pairing = cfg.pairing
        self.total_steps = total_steps
        self.queue_fill_steps = self._queue_fill_steps(cfg.get("queue_fill_steps"), cfg.queue_size,
                                                       config.get("batch_size"), steps_per_epoch)

    @staticmethod
    def _queue_fill_steps(setting, queue_size, batch_size, steps_per_epoch) -> int:
        """Steps at the start without an optimiser update, while the queue fills with real keys.

        None: PySlowFast's rule (`contrastive_parameter_surgery`), queue_size // batch_size steps (it counts
        videos, not the ρ keys each enqueues), only within the first epoch; 0 without a queue."""
        if setting is not None:
            configlib.require(setting >= 0, "moco.queue_fill_steps", setting,
                              "None (PySlowFast's rule: queue_size // batch_size steps of the first epoch) "
                              "or integers >= 0")
            return int(setting)
        if not queue_size or not batch_size:
            return 0
        steps = queue_size // batch_size
        return steps if steps_per_epoch is None else min(steps, math.ceil(steps_per_epoch))

    @staticmethod
    def _check_batch(batch_size: int, rho: int, queue_size: int, bn_groups: int) -> None:
        divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
        configlib.require(bn_groups in divisors, "moco.bn_groups", bn_groups,
                          f"divisors of the batch size {batch_size}: {', '.join(map(str, divisors))}")
        configlib.require(queue_size == 0 or queue_size >= batch_size * rho, "moco.queue_size", queue_size,
                          f"0 (negatives from the batch) or integers >= batch_size·ρ = {batch_size * rho} "
                          "(one step's keys)")
        configlib.require(queue_size > 0 or batch_size >= 2, "batch_size", batch_size,
                          "integers >= 2 when moco.queue_size=0 (the other videos' keys are the negatives)")

    def init(self, rng, clips):
        b, rho = clips.shape[:2]
        self._check_batch(b, rho, self.queue_size, self.bn_groups)
        rngs = jax.random.split(rng, 3)
        bb_params, bb_stats, feats = base.init_variables(self.backbone, rngs[0], base.flatten_clips(clips))
        pj_params, _, _ = base.init_variables(self.projector, rngs[1], feats)
        params = {"backbone": bb_params, "projector": pj_params}
        batch_stats = {"backbone": bb_stats}
        target = jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats})
        if not self.queue_size:
            return params, batch_stats, {"target": target}
        queue = losses.l2_normalize(jax.random.normal(rngs[2], (self.queue_size, self.projector.out_dim)))
        return params, batch_stats, {"target": target, "queue": queue, "queue_ptr": jnp.zeros((), jnp.int32)}

    def _encode(self, params, batch_stats, x):
        """Projections [N, D] of clips x [N, ...] with grouped BN, and the new batch_stats."""
        feats, bb = base.apply_with_group_stats(self.backbone, params["backbone"], batch_stats["backbone"], x,
                                                self.bn_groups)
        return self.projector.apply({"params": params["projector"]}, feats, train=True), {"backbone": bb}

    def encode_keys(self, target, clips, rng):
        """Unit-norm keys [B, ρ, D] of clips [B, ρ, T, H, W, 3] by the key encoder `target`
        ({'params', 'batch_stats'}), its clips shuffled across BN groups by a permutation from `rng`;
        and the key encoder's new batch_stats."""
        b, rho = clips.shape[:2]
        x = base.flatten_clips(clips)
        if self.bn_groups == 1:
            keys, stats = self._encode(target["params"], target["batch_stats"], x)
        else:
            perm = jax.random.permutation(rng, b * rho)
            shuffled, stats = self._encode(target["params"], target["batch_stats"], x[perm])
            keys = shuffled[jnp.argsort(perm)]
        keys = losses.l2_normalize(jax.lax.stop_gradient(keys))
        return keys.reshape(b, rho, -1), stats

    def loss(self, params, batch_stats, extra, clips, rng, step):
        del step
        b, rho = clips.shape[:2]
        self._check_batch(b, rho, self.queue_size, self.bn_groups)
        queries, online_stats = self._encode(params, batch_stats, base.flatten_clips(clips))
        keys, target_stats = self.encode_keys(extra["target"], clips, rng)
        queue = extra.get("queue")
        loss = losses.info_nce_loss(queries.reshape(b, rho, -1), keys, queue,
                                    losses.positive_pairs(rho, self.pairing), self.temperature)
        new_extra = {"target": {"params": extra["target"]["params"], "batch_stats": target_stats}}
        if queue is not None:
            new_extra["queue"], new_extra["queue_ptr"] = enqueue(queue, extra["queue_ptr"], keys.reshape(b * rho, -1))
        return loss, (online_stats, new_extra, {"loss": loss, **self._similarities(queries, keys, queue)})

    def _similarities(self, queries, keys, queue):
        """Monitors: mean cosine of a query to its positive keys and to its negatives (the queue, or the
        other videos' keys). A gap that closes while the loss rises towards ln(1 + K) means the
        embeddings are collapsing."""
        b, rho = keys.shape[:2]
        q = losses.l2_normalize(jax.lax.stop_gradient(queries)).reshape(b, rho, -1)
        pairs = jnp.asarray(losses.positive_pairs(rho, self.pairing), jnp.float32)
        positive = jnp.sum(jnp.einsum("bid,bjd->bij", q, keys) * pairs) / (b * jnp.sum(pairs))
        if queue is None:
            per_video = jnp.sum(keys, axis=1)                                        # [B, D]
            others = (jnp.sum(per_video, axis=0) - per_video) / ((b - 1) * rho)      # mean of the other videos' keys
            negative = jnp.mean(jnp.einsum("bid,bd->bi", q, others))
        else:
            negative = jnp.mean(q @ jnp.mean(losses.l2_normalize(queue), axis=0))
        return {"positive_cosine": positive, "negative_cosine": negative}

    def updates_params(self, step):
        """False for the first `queue_fill_steps` steps (the queue's random initial keys are not negatives
        worth learning from); the key encoder, the queue and the BN statistics still advance."""
        return True if not self.queue_fill_steps else step >= self.queue_fill_steps

    def after_update(self, params, batch_stats, extra, step):
        momentum = schedules.cosine_momentum(self.base_momentum, step, self.total_steps)
        target = extra["target"]
        return dict(extra, target={"params": schedules.ema_update(target["params"], params, momentum),
                                   "batch_stats": target["batch_stats"]})
