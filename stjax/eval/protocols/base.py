"""The interface of an evaluation protocol, and the one path that runs it on a backbone's features.

A protocol reads its settings from one config block (`block(config)`: `config.knn`, `config.probe`, ...),
including `pool`, how a video's test-view features become one (`mean` or `max`). It either scores frozen
features (`score`), or trains through the generic train loop (`trains(config)` True: `train_and_score`).
The periodic kNN monitor and the end-of-pretraining probe (`stjax.main`) and the evaluation job
(`stjax.eval.evaluate`) all go through `evaluate_features`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

POOLS = ("mean", "max")  # over a video's test views (stjax.eval.features.make_feature_extractor)
Features = tuple[np.ndarray, np.ndarray]  # (float32 [N, D], labels int [N] or multi-hot [N, C])


class Protocol:
    """A named evaluation of a backbone. Subclasses set `name`, `label_types` and `block`, and implement
    `score` (frozen features) or `train_and_score` (with `trains` True)."""

    name: str = ""
    label_types: tuple[str, ...] = ("single",)  # the builders' LABEL_TYPES it can score
    default_block: str = ""
    example_unit: str = "videos"  # what one example of its datasets is, for reports

    def block(self, config) -> str:
        """The config block holding this protocol's settings (its `pool` among them)."""
        return self.default_block

    def settings(self, config):
        return config[self.block(config)]

    def pool(self, config) -> str:
        return self.settings(config).get("pool", "mean")

    def trains(self, config) -> bool:
        """Whether it trains through the generic train loop (then `train_and_score`, not `score`)."""
        del config
        return False

    def validate(self, config, label_type: str | None = None) -> None:
        """ValueError naming the field and the valid values, before any work. `label_type`: the dataset's
        (None: not known yet)."""
        from stjax import configlib

        configlib.require_choice(f"{self.block(config)}.pool", self.pool(config), POOLS)
        if label_type is not None and label_type not in self.label_types:
            raise ValueError(f"protocol={self.name!r} scores {' or '.join(self.label_types)} labels; "
                             f"data.dataset={config.data.dataset!r} has {label_type} labels")

    def score(self, train: Features, test: Features, num_classes: int, config) -> dict:
        """Metrics of the test split's features given the train split's."""
        raise NotImplementedError(f"protocol {self.name} trains the backbone: use train_and_score")

    def train_and_score(self, spec: dict, variables: dict, config, directory: str, mesh, num_classes: int,
                        num_train: int) -> tuple[dict, int, int]:
        """(test metrics, #train, #test videos) after training from backbone `variables` in `directory`."""
        raise NotImplementedError(f"protocol {self.name} scores frozen features: use score")


def evaluate_features(protocol: Protocol, make_features: Callable[[str], Callable], variables, config,
                      num_classes: int) -> tuple[dict, int, int]:
    """(metrics, #train, #test videos) of `protocol` on backbone `variables`: the train and eval splits of
    `config.data` embedded by `make_features(pool)(variables, split)`, then `protocol.score`."""
    features = make_features(protocol.pool(config))
    train = features(variables, config.data.train_split)
    test = features(variables, config.data.eval_split)
    return protocol.score(train, test, num_classes, config), len(train[1]), len(test[1])
