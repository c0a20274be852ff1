"""The supervised objective's loss chooses softmax or sigmoid cross-entropy from its labels."""
import jax
import ml_collections
import numpy as np
import optax
import pytest

from stjax.objectives import base
from stjax.objectives.supervised import Supervised, classification_loss

B, RHO, C = 4, 2, 5


@pytest.fixture(scope="module")
def model():
    """A frozen-backbone, dropout-free classifier on r3d_micro: its loss logits are `classify` of eval features."""
    config = ml_collections.ConfigDict(dict(model=dict(backbone="r3d_micro"),
                                            supervised=dict(num_classes=C, dropout=0.0, freeze_backbone=True)))
    framework = Supervised(config, total_steps=1)
    clips = np.random.default_rng(0).integers(0, 256, (B, RHO, 2, 16, 16, 3), np.uint8)
    params, stats, extra = framework.init(jax.random.key(0, impl="rbg"), clips)
    feats = framework.backbone.apply({"params": params["backbone"], "batch_stats": stats["backbone"]},
                                     base.flatten_clips(clips), train=False)
    logits = np.asarray(framework.classify(params, feats))
    return framework, params, stats, extra, clips, logits


def _loss(model, labels):
    framework, params, stats, extra, clips, _ = model
    loss, (_, _, metrics) = framework.loss(params, stats, extra, clips, jax.random.key(1, impl="rbg"), 0, labels)
    return float(loss), float(metrics["train_top1"])


def test_multi_hot_labels_give_optax_sigmoid_cross_entropy(model):
    logits = model[-1]
    labels = (np.random.default_rng(1).random((B, C)) < 0.4).astype(np.int32)
    targets = np.repeat(labels, RHO, axis=0).astype(np.float32)  # every clip of a video has its labels
    want = float(np.mean(optax.sigmoid_binary_cross_entropy(logits, targets)))
    loss, top1 = _loss(model, labels)
    assert loss == pytest.approx(want, rel=1e-5)
    assert top1 == pytest.approx(targets[np.arange(B * RHO), logits.argmax(1)].mean())


def test_int_labels_give_optax_softmax_cross_entropy(model):
    logits = model[-1]
    labels = np.array([0, 3, 1, 4], np.int32)
    targets = np.repeat(labels, RHO)
    want = float(np.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets)))
    loss, top1 = _loss(model, labels)
    assert loss == pytest.approx(want, rel=1e-5)
    assert top1 == pytest.approx(np.mean(logits.argmax(1) == targets))
    with pytest.raises(ValueError, match="multi-hot labels must be"):
        classification_loss(logits, np.zeros((B * RHO, C + 1)))
