"""`linear`: a linear classifier on the frozen backbone.

Two forms, by `config.linear.augmented`: False (and in pretraining configs, which have no `linear`
block) the fast probe on cached test-view features (`config.probe`, softmax for single labels, sigmoid
for multi-hot, `stjax.eval.linear_probe`); True the paper's protocol, the classifier alone trained
through the generic train loop from augmented clips (`config.linear`, `stjax.eval.protocols.finetune`).
"""
from __future__ import annotations

import numpy as np

from stjax.eval.protocols import base

class Linear(base.Protocol):
    name = "linear"
    label_types = ("single", "multi_hot")

    def trains(self, config):
        return bool(config.get("linear") and config.linear.get("augmented", False))

    def block(self, config):
        return "linear" if self.trains(config) else "probe"

    def validate(self, config, label_type=None):
        super().validate(config, label_type)
        if not self.trains(config):
            self.probe_config(config).validate()

    @staticmethod
    def probe_config(config):
        import dataclasses

        from stjax.eval import linear_probe

        fields = {f.name for f in dataclasses.fields(linear_probe.ProbeConfig)} - {"seed"}  # config.probe less pool
        return linear_probe.ProbeConfig(**{k: v for k, v in config.probe.items() if k in fields}, seed=config.seed)

    def score(self, train, test, num_classes, config):
        from stjax.eval import linear_probe

        (train_x, train_y), (test_x, test_y) = train, test
        result = linear_probe.train_linear_probe(train_x, train_y, test_x, test_y, num_classes,
                                                 self.probe_config(config))
        if "per_class_ap" in result:  # multi-hot labels: mAP and per-class AP
            return {k: result[k] for k in ("mAP", "top1", "train_mAP", "train_top1")} | {
                "per_class_ap": np.asarray(result["per_class_ap"], np.float64)}
        return {"top1": result["top1"], "top5": result["top5"], "train_top1": result["train_top1"],
                "per_class_top1": np.asarray(result["per_class_top1"], np.float64),
                "confusion": np.asarray(result["confusion"])}

    def train_and_score(self, spec, variables, config, directory, mesh, num_classes, num_train):
        from stjax.eval.protocols import finetune

        return finetune.finetune(spec, variables, config, directory, mesh, num_classes, num_train, frozen=True)
