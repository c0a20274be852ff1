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


AUXILIARY = {cls.name: cls for cls in (ArrowOfTime,)}


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
