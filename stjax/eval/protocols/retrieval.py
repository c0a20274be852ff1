"""`retrieval`: test clips query the train split by cosine similarity, R@k (`config.retrieval.ks`)."""
from __future__ import annotations

from stjax.eval.protocols import base


class Retrieval(base.Protocol):
    name = "retrieval"
    default_block = "retrieval"

    def validate(self, config, label_type=None):
        super().validate(config, label_type)
        from stjax import configlib

        ks = tuple(config.retrieval.ks)
        configlib.require(bool(ks) and all(int(k) >= 1 for k in ks), "retrieval.ks", ks,
                          "a non-empty tuple of integers >= 1")

    def score(self, train, test, num_classes, config):
        from stjax.eval import knn

        (train_x, train_y), (test_x, test_y) = train, test
        return knn.retrieval_recall(train_x, train_y, test_x, test_y, ks=tuple(config.retrieval.ks))
