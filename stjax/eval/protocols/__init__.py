"""Evaluation protocols, registered by name (`PROTOCOLS`), one module each.

    protocol = protocols.get("knn")
    metrics, num_train, num_test = protocols.evaluate_features(protocol, make_features, variables, config,
                                                               num_classes)

A new protocol is a `base.Protocol` subclass in its own module, an entry in `PROTOCOLS` and its config
block in configs/eval.py (with a `pool` field); `stjax.eval.evaluate`, the kNN monitor and the final probe
of `stjax.main` need no change.
"""
from __future__ import annotations

from stjax.eval.protocols.base import POOLS, Protocol, evaluate_features
from stjax.eval.protocols.detection import Detection
from stjax.eval.protocols.finetune import Finetune
from stjax.eval.protocols.knn import KNN
from stjax.eval.protocols.linear import Linear
from stjax.eval.protocols.retrieval import Retrieval

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (Linear(), KNN(), Retrieval(), Finetune(), Detection())}


def get(name: str) -> Protocol:
    """The protocol registered as `name`; ValueError naming `protocol` and the valid values."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol={name!r} is invalid; valid values: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


__all__ = ["POOLS", "PROTOCOLS", "Protocol", "evaluate_features", "get"]
