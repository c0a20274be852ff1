"""Auxiliary terms added to any framework from `config.auxiliary`, without subclassing it.

`config.auxiliary` maps a term name (a key of `AUXILIARY`) to `{weight: float, ...settings}`; a term
with weight 0 (the default of every registered term) is off:

    --config.auxiliary.arrow_of_time.weight=0.1

`WithAuxiliary(base, terms)` is itself a `Framework`: its loss is the base loss plus
Σ weight·term, each term computed from `base.embed`; each term's head lives under
`params['auxiliary'][name]`; every other method delegates to the base.

A term is a class with `name`, `defaults` (its settings besides `weight`), `__init__(settings)`,
`init(rng, features [B, ρ, D]) -> head params` and `loss(head_params, framework, params, batch_stats,
extra, clips, rng) -> (scalar, batch_stats, metrics)`; registering it in `AUXILIARY` (and its block in
configs/pretrain.py) is all a new one takes.
"""
from __future__ import annotations

import math
import numbers

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from stjax.objectives import base as base_lib


class ArrowOfTime:
    """Arrow of time (Wei et al., CVPR 2018, "Learning and Using the Arrow of Time"): each clip is played
    backwards with probability 0.5 and a linear head on its backbone features predicts whether it was
    (sigmoid binary cross-entropy). Cost: one more backbone forward/backward per step, whose BatchNorm
    statistics also update the running ones."""

    name = "arrow_of_time"
    defaults = {}

    def __init__(self, settings):
        del settings
        self.head = nn.Dense(1)

    def init(self, rng, features):
        return self.head.init(rng, features)["params"]

    def reverse(self, clips, rng):
        """(clips with the time axis of each clip reversed where `flags`, flags float [B, ρ])."""
        flags = jax.random.bernoulli(rng, 0.5, clips.shape[:2])
        mask = flags.reshape(flags.shape + (1,) * (clips.ndim - 2))
        return jnp.where(mask, jnp.flip(clips, axis=2), clips), flags.astype(jnp.float32)

    def loss(self, head_params, framework, params, batch_stats, extra, clips, rng):
        rev_rng, embed_rng = jax.random.split(rng)
        clips, flags = self.reverse(clips, rev_rng)
        feats, batch_stats = framework.embed(params, batch_stats, extra, clips, embed_rng, train=True)
        logits = self.head.apply({"params": head_params}, feats)[..., 0]
        loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, flags))
        accuracy = jnp.mean(((logits > 0).astype(jnp.float32) == flags).astype(jnp.float32))
        return loss, batch_stats, {f"aux/{self.name}_accuracy": accuracy}


def _unit(x):
    """x / ‖x‖ along the last axis, with a finite gradient at x = 0."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), 1e-12))


def _distance(a, b):
    """‖a − b‖₂ along the last axis, with a finite gradient where a = b (PyTorch's pairwise_distance adds
    eps = 1e-6 to the difference for the same reason)."""
    return jnp.sqrt(jnp.sum(jnp.square(a - b), axis=-1) + 1e-12)


def _range(name: str, value, low: float, high: float) -> tuple[float, float]:
    """(lo, hi) of a setting `auxiliary.name` that must be a pair low <= lo <= hi <= high."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo, hi = math.nan, math.nan
    if not low <= lo <= hi <= high:
        raise ValueError(f"auxiliary.{name}={value!r} is invalid; valid values: (lo, hi) with {low} <= lo <= hi "
                         f"<= {high}")
    return lo, hi


class BackgroundErasing:
    """Background Erasing (Wang et al., CVPR 2021): each clip's distracting copy, a static frame of it blended
    into every frame (`stjax.data.scene_ops.background_erase`, λ = max_lambda·U(0, 1), one λ per batch as the
    official code or per clip), is pulled to the clip's own embedding: 2 − 2·cos(f(x̃), sg(f(x))) (the paper's
    "pull the distracting video's feature to the original's", as a term any framework can take; the released
    MoCo code instead makes x̃ the query of MoCo's own loss). Cost: one backbone pass over 2× the clips."""

    name = "background_erasing"
    defaults = {"max_lambda": 0.3, "per_clip": False}

    def __init__(self, settings):
        lam = settings["max_lambda"]
        if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not 0.0 <= lam <= 1.0:
            raise ValueError(f"auxiliary.background_erasing.max_lambda={lam!r} is invalid; valid values: numbers in "
                             "[0, 1] (the mixing weight's upper bound; the official 0.3)")
        self.max_lambda = float(lam)
        self.per_clip = bool(settings["per_clip"])

    def init(self, rng, features):
        del rng, features
        return {}

    def loss(self, head_params, framework, params, batch_stats, extra, clips, rng):
        from stjax.data import scene_ops

        del head_params
        draw_rng, embed_rng = jax.random.split(rng)
        b, rho, t = clips.shape[:3]
        draws = scene_ops.background_erasing_draws(draw_rng, (b, rho), t, self.max_lambda, self.per_clip)
        both = jnp.concatenate([clips, scene_ops.background_erase(clips, **draws)], axis=1)
        feats, batch_stats = framework.embed(params, batch_stats, extra, both, embed_rng, train=True)
        clean, mixed = _unit(jax.lax.stop_gradient(feats[:, :rho])), _unit(feats[:, rho:])
        loss = jnp.mean(2.0 - 2.0 * jnp.sum(clean * mixed, axis=-1))
        return loss, batch_stats, {f"aux/{self.name}_lambda": jnp.mean(draws["lam"])}


def triplet_margin(anchor, positive, negative, margin: float) -> jnp.ndarray:
    """mean over rows of max(‖a − p‖₂ − ‖a − n‖₂ + margin, 0) (PyTorch's TripletMarginLoss, p = 2)."""
    return jnp.mean(jnp.maximum(_distance(anchor, positive) - _distance(anchor, negative) + margin, 0.0))


class DecoupleSceneMotion:
    """DSM (Wang et al., AAAI 2021), its triplet form: the anchor is a clip with its scene disturbed (spatial
    local disturbance: one smooth local warp for all frames), the positive another clip of its video (the
    next of its ρ; with ρ = 1 the other augmentation), the negatives the anchor's clip with its motion broken
    (temporal local disturbance: frames inserted and swapped) and those of the other videos (the batch
    reversed); L = TM(a, p, n) + TM(a, p, n_rev) on L2-normalised backbone features, margin 0.5 (the
    official `dsm_triplet`). The official negative "the same video at another time" is not used: with ρ ≥ 2
    it is a ρ positive. Cost: one backbone pass over 3× the clips."""

    name = "dsm"
    defaults = {"margin": 0.5, "num_points": (1, 3), "centre": (60 / 224, 140 / 224), "shift": (10 / 224, 20 / 224),
                "insert_rounds": 2, "swap_rounds": 2}

    def __init__(self, settings):
        margin = settings["margin"]
        if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0.0 <= margin < float("inf"):
            raise ValueError(f"auxiliary.dsm.margin={margin!r} is invalid; valid values: finite numbers >= 0")
        self.margin = float(margin)
        lo, hi = _range("dsm.num_points", settings["num_points"], 1, 64)
        if lo != int(lo) or hi != int(hi):
            raise ValueError(f"auxiliary.dsm.num_points={settings['num_points']!r} is invalid; valid values: "
                             "(fewest, most) integers >= 1")
        self.num_points = (int(lo), int(hi))
        self.centre = _range("dsm.centre", settings["centre"], 0.0, 1.0)
        self.shift = _range("dsm.shift", settings["shift"], 0.0, 1.0)
        for field in ("insert_rounds", "swap_rounds"):
            value = settings[field]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"auxiliary.dsm.{field}={value!r} is invalid; valid values: integers >= 0")
        if settings["insert_rounds"] + settings["swap_rounds"] < 1:
            raise ValueError("auxiliary.dsm.insert_rounds + swap_rounds must be >= 1: the negative needs its motion "
                             "broken")
        self.insert_rounds, self.swap_rounds = int(settings["insert_rounds"]), int(settings["swap_rounds"])

    def init(self, rng, features):
        del rng, features
        return {}

    def disturb(self, clips, rng):
        """(scene-disturbed, motion-disturbed) copies of clips [B, ρ, T, H, W, C]."""
        from stjax.data import scene_ops

        sld_rng, tld_rng = jax.random.split(rng)
        b, rho, t, h, w = clips.shape[:5]
        sld = scene_ops.sld_draws(sld_rng, (b, rho), h, w, self.num_points, self.centre, self.shift)
        tld = scene_ops.tld_draws(tld_rng, (b, rho), t, self.insert_rounds, self.swap_rounds)
        return scene_ops.spatial_local_disturbance(clips, **sld), scene_ops.temporal_local_disturbance(clips, **tld)

    def loss(self, head_params, framework, params, batch_stats, extra, clips, rng):
        del head_params
        embed_rng, rng = jax.random.split(rng)
        return self.triplets(lambda x: framework.embed(params, batch_stats, extra, x, embed_rng, train=True),
                             clips, rng)

    def triplets(self, embed, clips, rng):
        """(loss, new batch_stats, metrics) with `embed(x [B, 3ρ, ...]) -> (features [B, 3ρ, D], batch_stats)`
        the features the triplets are of (the backbone's here; `framework=dsm` adds its projector)."""
        rho = clips.shape[1]
        scene, motion = self.disturb(clips, rng)
        feats, batch_stats = embed(jnp.concatenate([scene, clips, motion], 1))
        feats = _unit(feats)
        anchor, positive, negative = feats[:, :rho], jnp.roll(feats[:, rho:2 * rho], -1, axis=1), feats[:, 2 * rho:]
        loss = (triplet_margin(anchor, positive, negative, self.margin)
                + triplet_margin(anchor, positive, jnp.flip(negative, axis=0), self.margin))
        d_pos = jnp.mean(_distance(anchor, positive))
        d_neg = jnp.mean(_distance(anchor, negative))
        return loss, batch_stats, {f"aux/{self.name}_positive_distance": d_pos,
                                   f"aux/{self.name}_negative_distance": d_neg}


AUXILIARY = {cls.name: cls for cls in (ArrowOfTime, BackgroundErasing, DecoupleSceneMotion)}


def create_terms(auxiliary) -> dict:
    """{name: (term, weight)} of the terms with weight > 0 in the `config.auxiliary` block; ValueError naming
    the field (and the valid values) when a name, weight or setting is invalid."""
    terms = {}
    for name in auxiliary.keys():
        if name not in AUXILIARY:
            raise ValueError(f"auxiliary.{name} is invalid; valid values: {', '.join(sorted(AUXILIARY))}")
        settings = auxiliary[name]
        if not hasattr(settings, "keys"):
            raise ValueError(f"auxiliary.{name}={settings!r} is invalid: a block with a weight, e.g. "
                             f"auxiliary.{name}.weight=0.1")
        cls = AUXILIARY[name]
        unknown = sorted(set(settings.keys()) - {"weight"} - set(cls.defaults))
        if unknown:
            raise ValueError(f"auxiliary.{name}.{unknown[0]} is invalid; valid fields: "
                             f"{', '.join(['weight', *sorted(cls.defaults)])}")
        weight = settings.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0 <= weight < float("inf"):
            raise ValueError(f"auxiliary.{name}.weight={weight!r} is invalid; valid values: finite numbers >= 0 "
                             "(0: off)")
        if weight > 0:
            terms[name] = (cls({**cls.defaults, **{k: settings[k] for k in settings.keys() if k != "weight"}}),
                           float(weight))
    return terms


class WithAuxiliary(base_lib.Framework):
    """`base` with auxiliary `terms` ({name: (term, weight)}) added to its loss."""

    def __init__(self, base: base_lib.Framework, terms: dict):
        self.base = base
        self.terms = terms
        self.name = base.name
        self.backbone = base.backbone
        self.pixel_inputs = base.pixel_inputs  # a class attribute of Framework: __getattr__ would not forward it

    def __getattr__(self, attribute):  # anything else the base framework offers (e.g. SwAV.project)
        if attribute == "base":
            raise AttributeError(attribute)
        return getattr(self.base, attribute)

    def init(self, rng, clips):
        base_rng, rng = jax.random.split(rng)
        params, batch_stats, extra = self.base.init(base_rng, clips)
        feats, _ = self.base.embed(params, batch_stats, extra, clips, rng, train=False)
        heads = {}
        for name, (term, _) in self.terms.items():
            rng, head_rng = jax.random.split(rng)
            heads[name] = term.init(head_rng, feats)
        return {**params, "auxiliary": heads}, batch_stats, extra

    @staticmethod
    def _base_params(params):
        return {k: v for k, v in params.items() if k != "auxiliary"}

    def loss(self, params, batch_stats, extra, clips, rng, step, **batch_inputs):
        base_rng, rng = jax.random.split(rng)
        base_params = self._base_params(params)
        loss, (new_stats, new_extra, metrics) = self.base.loss(base_params, batch_stats, extra, clips, base_rng,
                                                              step, **batch_inputs)
        metrics = dict(metrics)
        for name, (term, weight) in self.terms.items():
            rng, term_rng = jax.random.split(rng)
            value, new_stats, term_metrics = term.loss(params["auxiliary"][name], self.base, base_params,
                                                       new_stats, extra, clips, term_rng)
            loss = loss + weight * value
            metrics[f"aux/{name}"] = value
            metrics.update(term_metrics)
        return loss, (new_stats, new_extra, metrics)

    def batch_inputs(self, batch):
        return self.base.batch_inputs(batch)

    def updates_params(self, step):
        return self.base.updates_params(step)

    def after_update(self, params, batch_stats, extra, step):
        return self.base.after_update(self._base_params(params), batch_stats, extra, step)

    def with_backbone(self, params, batch_stats, extra, variables):
        base_params, batch_stats, extra = self.base.with_backbone(self._base_params(params), batch_stats, extra,
                                                                  variables)
        return {**base_params, "auxiliary": params["auxiliary"]}, batch_stats, extra

    def embed(self, params, batch_stats, extra, clips, rng, train):
        return self.base.embed(self._base_params(params), batch_stats, extra, clips, rng, train)

    def backbone_variables(self, params, batch_stats):
        return self.base.backbone_variables(self._base_params(params), batch_stats)
