"""`knn`: weighted kNN on frozen features (Wu et al. 2018; k, temperature, pool in `config.knn`)."""
from __future__ import annotations

from stjax.eval.protocols import base


class KNN(base.Protocol):
    name = "knn"
    default_block = "knn"

    def validate(self, config, label_type=None):
        super().validate(config, label_type)
        from stjax import configlib

        configlib.require(int(config.knn.k) >= 1, "knn.k", config.knn.k, "integers >= 1")
        configlib.require(config.knn.temperature > 0, "knn.temperature", config.knn.temperature, "numbers > 0")

    def score(self, train, test, num_classes, config):
        from stjax.eval import knn, metrics

        (train_x, train_y), (test_x, test_y) = train, test
        scores = knn.knn_classify(train_x, train_y, test_x, num_classes, k=config.knn.k,
                                  temperature=config.knn.temperature)
        return metrics.reported_metrics(scores, test_y, num_classes)
