"""CMD, Context and Motion Decoupling (Huang et al., CVPR 2021): two contrastive tasks on one video backbone.

Inputs (`batch_inputs`, from a dataset stored with motion vectors and `config.data.inputs=("motion",
"keyframe")`, see `stjax.data.motion_inputs`), per clip (b, r) of the ρ clips of each video b:
  motion    int8 [B, ρ, 1+N, T_m, h, w, 2]: window 0 the codec motion of the T_m frames that follow the clip
            (after a gap), windows 1..N other times of the same video (hard negatives); int8 = 4 × pixels per
            frame of the crop, (dx, dy). Turned into the motion encoder's input by `motion_to_float`.
  keyframe  float [B, ρ, S, S, 3]: an I-frame of the video near the clip, augmented on its own; uint8 in the
            batch, normalised by the train step like the clips (`pixel_inputs`).

Networks (`config.cmd`; `stjax.models.cmd_nets`):
  f    the video backbone (`config.model`; `params['backbone']`, what evaluation uses). The predictor's source
       tokens (`source_tokens`): with `cmd.skip` (the official form) the second-to-last stage's output with
       pairs of time steps folded into channels [Bρ, T₃/2, H₃, W₃, 2C₃], plus the last stage's map
       nearest-resized to that size (the official `layer3` + upsampled `layer4`: 2×7×7 tokens for 16×112²
       clips; r3d_tiny at 56²: 4×2×2); without, the last stage's map alone. The context feature is the
       last map's global average.
  g_m  the motion encoder (`cmd.motion_backbone`, a 3D ResNet on the 2-channel motion clip): its map, averaged
       over time and adaptively average-pooled to `cmd.motion_grid` (gh, gw), gives P = gh·gw target tokens.
  g_i  the keyframe encoder (`cmd.keyframe_backbone`, a 2D ResNet), globally pooled.
  the motion predictor: `cmd_nets.MotionPredictor`, a DETR-style transformer (`hidden_dim`, `heads`, `ffn_dim`,
       `encoder_layers`, `decoder_layers`, `dropout`) from the clip tokens to P predicted tokens.
  heads h_mq (predicted tokens), h_mk (motion tokens), h_iq (pooled clip feature), h_ik (keyframe feature):
       Dense(head_hidden, no bias) → BN → ReLU → Dense(head_out, no bias) → BN (without scale: `models.MLP`'s
       final BN), then L2 normalisation (in the losses).

Loss: weight_motion · `motion_prediction_loss` + weight_context · `context_matching_loss`, temperature τ,
over the global batch (SyncBN: every BatchNorm normalises over the global batch under jit). Both target
encoders are trained by backprop: no momentum encoder, no stop-gradient, `extra` = {}. A branch of weight 0
is not computed (its networks get no gradient and keep their BN statistics; its metrics are absent).

Metrics: motion_loss, motion_accuracy (top-1 of a predicted token among all B·ρ·(1+N)·P motion tokens of the
batch; chance 1/(B·ρ·(1+N)·P)), context_loss, context_accuracy (the top-1 keyframe is one of the video's ρ;
chance 1/B).

With ρ ≥ 2 (the ρ-framework study) every clip is a CMD sample with its own future motion and keyframe; the
video's ρ keyframes are all positives of each of its clips. ρ = 1 with one clip per video is the paper's form.
"""
from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stjax import configlib, models
from stjax.models import cmd_nets
from stjax.objectives import base, losses

# The batch's int8 motion is in quarter pixels per frame (stjax.data.motion_inputs.UNITS_PER_PIXEL; not
# imported: objectives do not import the data room, which imports TensorFlow).
MOTION_UNITS_PER_PIXEL = 4.0
HEADS = ("motion_query", "motion_key", "context_query", "context_key")
# ResNet3D fields of `config.model` that the motion and keyframe encoders take too (not `overrides`,
# which are the video backbone's own, nor remat)
ENCODER_OPTIONS = ("dtype", "lowering", "batch_norm", "stem_pad_channels", "zero_init_residual")


def motion_to_float(motion: jnp.ndarray, mv_clip: float) -> jnp.ndarray:
    """int8 motion [..., 2] (4 × pixels per frame) → float32 in [−1, 1]: pixels per frame clamped to
    ±mv_clip, divided by mv_clip (the official normalisation, clamp ±10 px then / 10)."""
    pixels = motion.astype(jnp.float32) / MOTION_UNITS_PER_PIXEL
    return jnp.clip(pixels, -mv_clip, mv_clip) / mv_clip


def motion_prediction_loss(queries: jnp.ndarray, keys: jnp.ndarray, temperature: float
                           ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """CMD's motion-prediction InfoNCE: (loss, top-1 accuracy), float32 scalars.

    For each clip c = (b, r) and target position p, the query q_{c,p} is scored against every key k_{c',n,p'}
    of the batch (all B·ρ clips c', all 1+N motion windows n, all P positions p'); the positive is the same
    clip's window 0 at the same position, k_{c,0,p}. Loss: the softmax cross-entropy over those B·ρ·(1+N)·P
    logits q·k/τ at the positive, averaged over (b, r, p); accuracy: how often the largest logit is the
    positive's. All vectors are L2-normalised here; gradients flow into queries and keys.

    Args:
      queries: predicted motion embeddings, float [B, ρ, P, D].
      keys: motion-encoder embeddings, float [B, ρ, 1+N, P, D]; window 0 is each clip's true future.
      temperature: τ (0.1 in the official recipe).
    """
    b, rho, p, d = queries.shape
    if keys.ndim != 5 or keys.shape[:2] != (b, rho) or keys.shape[3:] != (p, d):
        raise ValueError(f"keys must be [B={b}, ρ={rho}, 1+N, P={p}, D={d}], got shape {keys.shape}")
    windows = keys.shape[2]
    q = losses.l2_normalize(queries.astype(jnp.float32))
    k = losses.l2_normalize(keys.astype(jnp.float32))
    positive = jnp.sum(q * k[:, :, 0], axis=-1) / temperature                       # [B, ρ, P]
    logits = q.reshape(-1, d) @ k.reshape(-1, d).T / temperature                    # [BρP, Bρ(1+N)P]
    loss = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - positive.reshape(-1))
    target = (np.arange(b * rho)[:, None] * windows * p + np.arange(p)[None, :]).reshape(-1)
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == target).astype(jnp.float32))
    return loss, accuracy


def context_matching_loss(clips: jnp.ndarray, keyframes: jnp.ndarray, temperature: float
                          ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """CMD's context matching, clip → keyframe InfoNCE with several positives: (loss, top-1 accuracy).

    Logits u_{b,r}·v_c/τ of each clip (b, r) against all B·ρ keyframes c of the batch; the positives of clip
    (b, r) are the keyframes of all ρ clips of video b. Loss: mean over (b, r) of the mean over the positives
    (b, r') of −log softmax_c(logits)[(b, r')]; with ρ = 1 the paper's L_C. Accuracy: how often the largest
    logit is one of the positives. All vectors are L2-normalised here; gradients flow into both sides.

    Args:
      clips: clip embeddings u, float [B, ρ, D].
      keyframes: keyframe embeddings v, float [B, ρ, D].
      temperature: τ (0.1 in the official recipe).
    """
    b, rho, d = clips.shape
    if keyframes.shape != clips.shape:
        raise ValueError(f"keyframes must be [B={b}, ρ={rho}, D={d}] like the clips, got shape {keyframes.shape}")
    u = losses.l2_normalize(clips.astype(jnp.float32)).reshape(-1, d)
    v = losses.l2_normalize(keyframes.astype(jnp.float32)).reshape(-1, d)
    logits = u @ v.T / temperature                                                  # [Bρ, Bρ]
    log_p = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    same_video = np.kron(np.eye(b, dtype=np.float32), np.ones((rho, rho), np.float32))
    loss = -jnp.sum(log_p * same_video) / (b * rho * rho)
    accuracy = jnp.mean(jnp.asarray(same_video)[np.arange(b * rho), jnp.argmax(logits, axis=-1)])
    return loss, accuracy


def _apply(module, params, batch_stats, *args, **kwargs):
    """`base.apply_with_stats` in train mode with keyword arguments (pooled=False, rngs): (output, batch_stats)."""
    out, updates = module.apply({"params": params, "batch_stats": batch_stats}, *args, train=True,
                                mutable=["batch_stats"], **kwargs)
    return out, updates["batch_stats"]


def _init(module, rng, x, **kwargs):
    """(params, batch_stats, output) of `module` freshly initialised on x (eval mode)."""
    variables = module.init(rng, x, train=False, **kwargs)
    return variables["params"], variables.get("batch_stats", {}), module.apply(variables, x, train=False, **kwargs)


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def validate(config) -> None:
    """ValueError naming the field (and the valid values) for an invalid `config.cmd` or `config.data.motion`."""
    cfg = config.cmd
    require = configlib.require
    require(_real(cfg.temperature) and cfg.temperature > 0, "cmd.temperature", cfg.temperature, "numbers > 0")
    for field in ("hidden_dim", "heads", "ffn_dim", "decoder_layers", "head_hidden", "head_out"):
        require(_integer(cfg[field], 1), f"cmd.{field}", cfg[field], "integers >= 1")
    require(_integer(cfg.encoder_layers, 0), "cmd.encoder_layers", cfg.encoder_layers, "integers >= 0")
    require(cfg.hidden_dim % cfg.heads == 0, "cmd.heads", cfg.heads,
            f"divisors of cmd.hidden_dim={cfg.hidden_dim}")
    require(_real(cfg.dropout) and 0 <= cfg.dropout < 1, "cmd.dropout", cfg.dropout, "numbers in [0, 1)")
    require(_real(cfg.mv_clip) and cfg.mv_clip > 0, "cmd.mv_clip", cfg.mv_clip, "numbers > 0 (pixels per frame)")
    grid = tuple(cfg.motion_grid) if isinstance(cfg.motion_grid, (tuple, list)) else ()
    require(len(grid) == 2 and all(_integer(g, 1) for g in grid), "cmd.motion_grid", cfg.motion_grid,
            "(rows, columns), integers >= 1")
    for field in ("weight_motion", "weight_context"):
        require(_real(cfg[field]) and cfg[field] >= 0, f"cmd.{field}", cfg[field], "finite numbers >= 0 (0: off)")
    require(cfg.weight_motion + cfg.weight_context > 0, "cmd.weight_motion", cfg.weight_motion,
            "numbers > 0 when cmd.weight_context is 0 (one of the two tasks must be on)")
    require(isinstance(cfg.get("skip", True), bool), "cmd.skip", cfg.get("skip"),
            "True (the official skip from the second-to-last stage) or False (the last stage alone)")
    configlib.require_choice("cmd.motion_backbone", cfg.motion_backbone, cmd_nets.MOTION_ENCODERS)
    configlib.require_choice("cmd.keyframe_backbone", cfg.keyframe_backbone, cmd_nets.KEYFRAME_ENCODERS)
    data = config.get("data") or {}
    motion = data.get("motion") if hasattr(data, "get") else None
    if motion is None:
        raise ValueError("data.motion is missing: framework=cmd takes the motion windows' shape from it, e.g. "
                         "data.motion = dict(future_frames=8, future_interval=2, num_negatives=3, block=4)")
    for field, low in (("future_frames", 1), ("num_negatives", 0), ("block", 1)):
        require(_integer(motion.get(field), low), f"data.motion.{field}", motion.get(field), f"integers >= {low}")


class CMD(base.Framework):
    name = "cmd"
    pixel_inputs = ("keyframe",)

    def __init__(self, config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: float | None = None):
        del total_steps, steps_per_epoch
        validate(config)
        cfg = config.cmd
        self.temperature = float(cfg.temperature)
        self.weight_motion, self.weight_context = float(cfg.weight_motion), float(cfg.weight_context)
        self.mv_clip = float(cfg.mv_clip)
        self.motion_grid = tuple(int(g) for g in cfg.motion_grid)
        motion = config.data.motion
        self.future_frames, self.num_negatives, self.block = (int(motion.future_frames), int(motion.num_negatives),
                                                              int(motion.block))
        self.dropout = float(cfg.dropout)
        self.skip = bool(cfg.get("skip", True))
        self.backbone = base.backbone_from_config(config)
        options = {k: v for k, v in models.backbone_options(config.model).items() if k in ENCODER_OPTIONS}
        self.motion_encoder = cmd_nets.encoder(cfg.motion_backbone, **options)
        self.keyframe_encoder = cmd_nets.encoder(cfg.keyframe_backbone, **options)
        self.predictor = cmd_nets.MotionPredictor(
            num_queries=self.motion_grid[0] * self.motion_grid[1], hidden=cfg.hidden_dim, heads=cfg.heads,
            ffn=cfg.ffn_dim, encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers,
            dropout=self.dropout)
        self.heads = {name: models.MLP(hidden_dims=(cfg.head_hidden,), out_dim=cfg.head_out, use_bn=True,
                                       hidden_bias=False, out_bias=False, final_bn=True) for name in HEADS}

    def batch_inputs(self, batch):
        return {"motion": batch["motion"], "keyframe": batch["keyframe"]}

    # ------------------------------------------------------------------ networks

    def source_tokens(self, params, batch_stats, clips, train: bool):
        """(predictor source tokens [Bρ, L, C], the last map [Bρ, T', H', W', D], the backbone's batch_stats) of
        float clips [B, ρ, T, H, W, 3] (see the module docstring, `cmd.skip`)."""
        x = base.flatten_clips(clips)
        variables = {"params": params, "batch_stats": batch_stats}
        if not self.skip:
            if train:
                fmap, stats = _apply(self.backbone, params, batch_stats, x, pooled=False)
            else:
                fmap, stats = self.backbone.apply(variables, x, train=False, pooled=False), batch_stats
            return fmap.reshape(fmap.shape[0], -1, fmap.shape[-1]), fmap, stats
        target = self._skip_stage()
        fmap, state = self.backbone.apply(
            variables, x, train=train, pooled=False, mutable=["batch_stats", "intermediates"] if train else
            ["intermediates"], capture_intermediates=lambda module, method: module.name == target)
        stats = state["batch_stats"] if train else batch_stats
        x3 = state["intermediates"][target]["__call__"][0].astype(jnp.float32)   # [N, T3, H3, W3, C3]
        n, t3, h3, w3, c3 = x3.shape
        if t3 % 2 or 2 * c3 != fmap.shape[-1]:
            raise ValueError(f"cmd.skip=True needs the second-to-last stage ({target}: {t3} time steps, {c3} "
                             f"channels) to have an even number of time steps and half the last stage's "
                             f"{fmap.shape[-1]} channels; valid values here: False")
        folded = jnp.concatenate([x3[:, 0::2], x3[:, 1::2]], axis=-1)            # [N, T3/2, H3, W3, 2·C3]
        upsampled = jax.image.resize(fmap, (n,) + folded.shape[1:4] + (fmap.shape[-1],), method="nearest")
        tokens = folded + upsampled
        return tokens.reshape(n, -1, tokens.shape[-1]), fmap, stats

    def _skip_stage(self) -> str:
        """The name of the backbone's last block before its last stage (ResNet3D: res{s}_{b})."""
        depths = tuple(self.backbone.stage_depths)
        if len(depths) < 2:
            raise ValueError("cmd.skip=True needs a backbone with at least two stages; valid values here: False")
        return f"res{len(depths)}_{depths[-2] - 1}"

    def _motion_tokens(self, fmap):
        """Motion-encoder map [M, t, h', w', C] → tokens [M·P, C]: averaged over time, adaptively average-pooled
        to `motion_grid`, row-major positions."""
        grid = cmd_nets.adaptive_avg_pool2d(jnp.mean(fmap, axis=1), self.motion_grid)   # [M, gh, gw, C]
        return grid.reshape(-1, grid.shape[-1])

    def _dummy_inputs(self, clips):
        """Zero motion [B, ρ, 1+N, T_m, h, w, 2] and keyframes [B, ρ, H, W, 3] for clips [B, ρ, T, H, W, 3]."""
        b, rho, _, h, w = clips.shape[:5]
        if h // self.block < 1 or w // self.block < 1:
            raise ValueError(f"data.motion.block={self.block} is invalid; valid values: integers <= the crop size "
                             f"{min(h, w)}")
        motion = jnp.zeros((b, rho, 1 + self.num_negatives, self.future_frames, h // self.block, w // self.block, 2),
                           jnp.int8)
        return motion, jnp.zeros((b, rho, h, w, 3), jnp.float32)

    def init(self, rng, clips):
        clips = clips[:1]  # parameter shapes do not depend on the batch size: initialise on one video
        motion, keyframe = self._dummy_inputs(clips)
        rngs = dict(zip(("backbone", "motion_encoder", "keyframe_encoder", "predictor", *HEADS),
                        jax.random.split(rng, 4 + len(HEADS))))
        params, batch_stats = {}, {}
        variables = self.backbone.init(rngs["backbone"], base.flatten_clips(clips), train=False)
        params["backbone"], batch_stats["backbone"] = variables["params"], variables.get("batch_stats", {})
        tokens, fmap, _ = self.source_tokens(params["backbone"], batch_stats["backbone"], clips, train=False)
        params["motion_encoder"], batch_stats["motion_encoder"], motion_map = _init(
            self.motion_encoder, rngs["motion_encoder"],
            motion_to_float(motion.reshape((-1,) + motion.shape[3:]), self.mv_clip), pooled=False)
        params["keyframe_encoder"], batch_stats["keyframe_encoder"], keyframe_feats = _init(
            self.keyframe_encoder, rngs["keyframe_encoder"], keyframe.reshape((-1, 1) + keyframe.shape[2:]))
        params["predictor"] = self.predictor.init(rngs["predictor"], tokens, train=False)["params"]
        predicted = self.predictor.apply({"params": params["predictor"]}, tokens, train=False)
        inputs = {"motion_query": predicted.reshape(-1, predicted.shape[-1]),
                  "motion_key": self._motion_tokens(motion_map),
                  "context_query": jnp.mean(fmap, axis=(1, 2, 3)), "context_key": keyframe_feats}
        params["heads"], batch_stats["heads"] = {}, {}
        for name in HEADS:
            params["heads"][name], batch_stats["heads"][name], _ = _init(self.heads[name], rngs[name], inputs[name])
        return params, batch_stats, {}

    def _head(self, params, batch_stats, new_stats, name, x):
        out, stats = _apply(self.heads[name], params["heads"][name], batch_stats["heads"][name], x)
        new_stats["heads"][name] = stats
        return out

    # ------------------------------------------------------------------ loss

    def loss(self, params, batch_stats, extra, clips, rng, step, motion, keyframe):
        del step
        b, rho = clips.shape[:2]
        if motion.ndim != 7 or motion.shape[:2] != (b, rho) or motion.shape[-1] != 2:
            raise ValueError(f"motion must be [B={b}, ρ={rho}, 1+N, T_m, h, w, 2], got shape {motion.shape}")
        if keyframe.ndim != 5 or keyframe.shape[:2] != (b, rho) or keyframe.shape[-1] != 3:
            raise ValueError(f"keyframe must be [B={b}, ρ={rho}, S, S, 3], got shape {keyframe.shape}")
        new_stats = {**batch_stats, "heads": dict(batch_stats["heads"])}
        tokens, fmap, new_stats["backbone"] = self.source_tokens(params["backbone"], batch_stats["backbone"], clips,
                                                                 train=True)     # [Bρ, L, C], [Bρ, T', H', W', D]
        total = jnp.zeros((), jnp.float32)
        metrics = {}
        if self.weight_motion > 0:
            rngs = {"dropout": rng} if self.dropout > 0 else None
            predicted = self.predictor.apply({"params": params["predictor"]}, tokens, train=True, rngs=rngs)
            p = predicted.shape[1]
            q = self._head(params, batch_stats, new_stats, "motion_query", predicted.reshape(b * rho * p, -1))
            motion_map, new_stats["motion_encoder"] = _apply(
                self.motion_encoder, params["motion_encoder"], batch_stats["motion_encoder"],
                motion_to_float(motion.reshape((-1,) + motion.shape[3:]), self.mv_clip), pooled=False)
            k = self._head(params, batch_stats, new_stats, "motion_key", self._motion_tokens(motion_map))
            value, accuracy = motion_prediction_loss(q.reshape(b, rho, p, -1), k.reshape(b, rho, -1, p, k.shape[-1]),
                                                     self.temperature)
            total = total + self.weight_motion * value
            metrics.update(motion_loss=value, motion_accuracy=accuracy)
        if self.weight_context > 0:
            u = self._head(params, batch_stats, new_stats, "context_query", jnp.mean(fmap, axis=(1, 2, 3)))
            feats, new_stats["keyframe_encoder"] = _apply(
                self.keyframe_encoder, params["keyframe_encoder"], batch_stats["keyframe_encoder"],
                keyframe.reshape((b * rho, 1) + keyframe.shape[2:]))
            v = self._head(params, batch_stats, new_stats, "context_key", feats)
            value, accuracy = context_matching_loss(u.reshape(b, rho, -1), v.reshape(b, rho, -1), self.temperature)
            total = total + self.weight_context * value
            metrics.update(context_loss=value, context_accuracy=accuracy)
        return total, (new_stats, extra, {"loss": total, **metrics})
