"""Classification metrics of class scores, single-label or multi-label, in NumPy (one implementation for
the kNN monitor, the linear probe and fine-tuning).

Conventions:
* scores: float [N, C]. labels: int [N] (single-label; -1 marks a padding row, ignored) or {0, 1} [N, C]
  (multi-hot; a row with any entry < 0 is padding, ignored).
* Ties: the prediction (top-1, confusion) is the first class with the largest score (`argmax`); a top-k hit
  for k > 1 is "fewer than k classes score strictly higher than the true class".
* AP of a class is one-vs-rest average precision as scikit-learn's `average_precision_score` defines it
  (step-wise sum over distinct score thresholds); NaN for a class without a positive, and mAP is the mean over
  the classes with at least one positive.
"""
from __future__ import annotations

import numpy as np


def label_kind(labels) -> str:
    """'single' for int labels [N], 'multi' for multi-hot labels [N, C]."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return "single"
    if labels.ndim == 2:
        return "multi"
    raise ValueError(f"labels must be [N] (single-label) or [N, C] (multi-hot); got shape {labels.shape}")


def average_precision(scores, positives) -> float:
    """AP of one class: scores float [N], positives bool/{0,1} [N]; NaN without a positive."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    positives = np.asarray(positives).reshape(-1) > 0
    if positives.shape != scores.shape:
        raise ValueError(f"scores {scores.shape} and positives {positives.shape} differ in length")
    if not positives.any():
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positives[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each distinct threshold
    tps = np.cumsum(y)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores, targets) -> tuple[float, np.ndarray]:
    """(mAP, per-class AP [C]) of scores [N, C] against multi-hot targets [N, C]; NaN classes excluded."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.ndim != 2 or targets.shape != scores.shape:
        raise ValueError(f"scores and targets must both be [N, C]; got {scores.shape} and {targets.shape}")
    ap = np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])
    valid = ~np.isnan(ap)
    return (float(ap[valid].mean()) if valid.any() else float("nan")), ap


def classification_metrics(scores, labels, *, ks=(1, 5)) -> dict:
    """Metrics of class scores [N, C] against labels (see the module docstring).

    single-label: top{k} for each k in ks (k capped at C, key keeps the asked k), per_class_top1 (float [C],
      NaN where a class has no example), mean_per_class_top1 (mean over classes with examples), confusion
      (int [C, C], rows = true, columns = predicted), mAP, per_class_ap, num (rows counted).
    multi-label: mAP, per_class_ap (NaN for classes without positives), top1 (precision@1: the share of rows
      whose highest-scored class is positive), num.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, C]; got shape {scores.shape}")
    n, c = scores.shape
    kind = label_kind(labels)
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} score rows")
    if kind == "multi":
        if labels.shape[1] != c:
            raise ValueError(f"multi-hot labels have {labels.shape[1]} classes but scores have {c}")
        keep = ~np.any(labels < 0, axis=1)
        scores, labels = scores[keep], labels[keep] > 0
        if len(scores) == 0:
            raise ValueError("no labelled rows (all padding)")
        mean_ap, ap = mean_average_precision(scores, labels)
        pred = scores.argmax(axis=1)
        return {"mAP": mean_ap, "per_class_ap": ap, "top1": float(labels[np.arange(len(pred)), pred].mean()),
                "num": int(len(scores))}
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"single labels must be integers; got dtype {labels.dtype}")
    keep = labels >= 0
    scores, labels = scores[keep], labels[keep].astype(np.int64)
    if len(scores) == 0:
        raise ValueError("no labelled rows (all padding)")
    if labels.max() >= c:
        raise ValueError(f"labels must lie in [0, {c}) (the score columns); got up to {labels.max()}")
    pred = scores.argmax(axis=1)
    true_score = np.take_along_axis(scores, labels[:, None], axis=1)
    higher = (scores > true_score).sum(axis=1)
    out = {f"top{int(k)}": float(np.mean(pred == labels if int(k) == 1 else higher < min(int(k), c)))
           for k in ks}
    confusion = np.zeros((c, c), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    counts = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, np.diag(confusion) / np.maximum(counts, 1), np.nan)
    mean_ap, ap = mean_average_precision(scores, labels[:, None] == np.arange(c)[None, :])
    out.update(per_class_top1=per_class, mean_per_class_top1=float(np.nanmean(per_class)), confusion=confusion,
               mAP=mean_ap, per_class_ap=ap, num=int(len(scores)))
    return out


def reported_metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """The test metrics a protocol reports of class scores [N, num_classes]
    (`classification_metrics`): against int labels [N] {top1, top5, per_class_top1,
    confusion} (top-k capped at the class count, per-class top-1 NaN for absent classes, confusion [true,
    predicted], label -1 = padding, ignored); against multi-hot labels [N, C] {mAP, top1 (precision@1),
    per_class_ap}."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(f"scores must be [N, num_classes={num_classes}]; got shape {scores.shape}")
    m = classification_metrics(scores, labels, ks=(1, 5))
    keys = ("top1", "top5", "per_class_top1", "confusion") if label_kind(labels) == "single" else \
        ("mAP", "top1", "per_class_ap")
    return {key: m[key] for key in keys}
