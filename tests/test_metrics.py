"""stjax.eval.metrics against scikit-learn on seeded random inputs, and its tie / padding / k > C rules."""
import numpy as np
import pytest

from stjax.eval import metrics

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_label_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, c = 60, 7
    scores = rng.normal(size=(n, c))
    labels = rng.integers(0, c - 1, n)  # class c-1 has no example
    m = metrics.classification_metrics(scores, labels, ks=(1, 5, 10))
    cls = np.arange(c)
    assert m["top1"] == pytest.approx(sk.top_k_accuracy_score(labels, scores, k=1, labels=cls))
    assert m["top5"] == pytest.approx(sk.top_k_accuracy_score(labels, scores, k=5, labels=cls))
    assert m["top10"] == 1.0  # k > C: capped at C
    np.testing.assert_array_equal(m["confusion"], sk.confusion_matrix(labels, scores.argmax(1), labels=cls))
    recall = sk.recall_score(labels, scores.argmax(1), labels=cls[:-1], average=None, zero_division=0)
    np.testing.assert_allclose(m["per_class_top1"][:-1], recall)
    assert np.isnan(m["per_class_top1"][-1])
    assert m["mean_per_class_top1"] == pytest.approx(sk.balanced_accuracy_score(labels, scores.argmax(1)))
    onehot = labels[:, None] == cls
    ap = [sk.average_precision_score(onehot[:, k], scores[:, k]) for k in range(c - 1)]
    np.testing.assert_allclose(m["per_class_ap"][:-1], ap)
    assert np.isnan(m["per_class_ap"][-1]) and m["mAP"] == pytest.approx(np.mean(ap))


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_hot_matches_sklearn_with_ties_and_padding(seed):
    rng = np.random.default_rng(seed)
    n, c = 50, 6
    scores = rng.integers(0, 4, size=(n, c)).astype(np.float32)  # many tied scores
    targets = (rng.random((n, c)) < 0.3).astype(np.int32)
    targets[:, 2] = 0  # a class without positives
    padded_scores = np.concatenate([scores, rng.normal(size=(3, c))])
    padded = np.concatenate([targets, -np.ones((3, c), np.int32)])
    m = metrics.classification_metrics(padded_scores, padded)
    keep = [k for k in range(c) if k != 2]
    ap = [sk.average_precision_score(targets[:, k], scores[:, k]) for k in keep]
    np.testing.assert_allclose(m["per_class_ap"][keep], ap)
    assert np.isnan(m["per_class_ap"][2])
    assert m["mAP"] == pytest.approx(np.mean(ap))
    assert m["mAP"] == pytest.approx(sk.average_precision_score(targets[:, keep], scores[:, keep], average="macro"))
    assert m["top1"] == pytest.approx(targets[np.arange(n), scores.argmax(1)].mean()) and m["num"] == n


def test_ties_padding_and_label_kind():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    labels = np.array([1, 2, 0, -1])  # the last row is padding
    m = metrics.classification_metrics(scores, labels, ks=(1, 2))
    assert m["num"] == 3
    assert m["top1"] == pytest.approx(1 / 3)  # argmax picks the first tied class: rows 0, 1 miss
    assert m["top2"] == 1.0  # a tie with the true class is not "strictly higher"
    np.testing.assert_array_equal(m["confusion"], [[1, 0, 0], [1, 0, 0], [0, 1, 0]])
    ap = sk.average_precision_score(labels[:3] == 1, scores[:3, 1])
    assert m["per_class_ap"][1] == pytest.approx(ap)
    assert metrics.label_kind(labels) == "single" and metrics.label_kind(np.zeros((2, 3))) == "multi"
    with pytest.raises(ValueError, match="labels must be"):
        metrics.label_kind(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metrics.classification_metrics(scores, np.array([0, 1, 3, 0]))
