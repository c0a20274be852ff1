"""How each label type is stored in a prepared dataset and carried in batches: one entry per type.

A builder declares its type (`VideoDatasetBuilder.LABEL_TYPE`, one of `base.LABEL_TYPES`); the stored
`label` feature then has that type's form, and the pipeline turns it into the batch's `label`:

=========  ===========================================  ==========================================
type       stored `label` feature                       batch `label` (per video)
=========  ===========================================  ==========================================
single     ClassLabel: one class id, -1 unlabelled      int32 [] (-1: unlabelled or padding)
multi_hot  Sequence(ClassLabel): the video's ids        int32 [C] in {0, 1} (all -1: padding)
boxes      Sequence(Sequence(ClassLabel)): per box      not batched here (the detection pipeline's);
           (the example's M boxes, stored beside it     `box_labels` gives the multi-hot [M, C]
           as `boxes` [M, 4]) its class ids, [M, (k)]
=========  ===========================================  ==========================================

The metrics (`stjax.eval.metrics`), the linear probe and the supervised loss tell the two batch forms
apart by rank: softmax for [N] labels, sigmoid for [N, C]. `boxes` is AVA's (`builders/ava.py`: one
example per keyframe, M ≥ 0 person boxes, each with any number of the 80 actions); `per_frame` is a
declared type whose storage comes with the first dataset that has it (activity segmentation).
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

CARRIED = ("single", "multi_hot", "boxes")  # the label types a prepared dataset can store today


def check_carried(kind: str, owner: str) -> None:
    """ValueError unless the pipeline can store and batch label type `kind` (`owner` names the declaration)."""
    if kind not in CARRIED:
        raise ValueError(f"{owner}: label type {kind!r} cannot be stored yet; types the pipeline carries: "
                         f"{', '.join(CARRIED)}")


def feature(kind: str, classes: Sequence[str] | None) -> tfds.features.FeatureConnector:
    """The `label` feature of a dataset of label type `kind` (classes None: restored from prepared files)."""
    check_carried(kind, "feature")
    label = tfds.features.ClassLabel(names=list(classes)) if classes is not None else tfds.features.ClassLabel()
    if kind == "boxes":
        return tfds.features.Sequence(tfds.features.Sequence(label))
    return label if kind == "single" else tfds.features.Sequence(label)


def stored_kind(label_feature: tfds.features.FeatureConnector) -> str:
    """The label type a prepared dataset's `label` feature holds."""
    if isinstance(label_feature, tfds.features.ClassLabel):
        return "single"
    if isinstance(label_feature, tfds.features.Sequence):
        inner = label_feature.feature
        if isinstance(inner, tfds.features.ClassLabel):
            return "multi_hot"
        if isinstance(inner, tfds.features.Sequence) and isinstance(inner.feature, tfds.features.ClassLabel):
            return "boxes"
    raise ValueError(f"the dataset's `label` feature is a {type(label_feature).__name__}; the pipeline reads "
                     f"a ClassLabel (single), a Sequence of ClassLabel (multi_hot) or a Sequence of those (boxes)")


def class_names(label_feature: tfds.features.FeatureConnector) -> tuple[str, ...]:
    """The class names, in id order, of a prepared dataset's `label` feature (any stored form)."""
    label = label_feature
    for _ in range(CARRIED.index(stored_kind(label_feature))):  # single: 0 levels, multi_hot: 1, boxes: 2
        label = label.feature
    return tuple(label.names)


def stored_value(kind: str, label, owner: str = "label"):
    """What a builder writes for a video's annotated label: `single` takes a class name or None (stored -1);
    `multi_hot` a sequence of class names (empty or None: no class), written sorted and without repeats;
    `boxes` one such sequence per box (empty or None: no box)."""
    if kind == "single":
        return -1 if label is None else label
    if isinstance(label, str):
        raise ValueError(f"{owner}: a {kind} label is a sequence of class names, got the string {label!r}")
    if kind == "boxes":
        return [stored_value("multi_hot", box, f"{owner}, box {i}") for i, box in enumerate(label or ())]
    return sorted(set(label or ()))


def unknown_classes(kind: str, label, classes: set[str]) -> list[str]:
    """The names in an annotated `label` that are not in `classes`."""
    if label is None:
        return []
    names = [label] if kind == "single" else [n for box in label for n in box] if kind == "boxes" else list(label)
    return [name for name in names if name not in classes]


def batch_label(kind: str, stored: tf.Tensor, num_classes: int) -> tf.Tensor:
    """The batch's per-video `label` (see the table above) from the decoded stored feature."""
    if kind == "boxes":
        raise ValueError("label type 'boxes' (one label per person box) is batched by the detection pipeline, "
                         "not as a per-video label; targets.box_labels gives an example's [M, C]")
    if kind == "single":
        return tf.cast(stored, tf.int32)
    ids = tf.cast(tf.reshape(stored, [-1]), tf.int32)
    return tf.minimum(tf.reduce_sum(tf.one_hot(ids, num_classes, dtype=tf.int32), axis=0), 1)


def box_labels(stored: tf.RaggedTensor, num_classes: int) -> tf.Tensor:
    """The multi-hot int32 [M, C] in {0, 1} of an example's boxes from its decoded `boxes` label (a ragged
    [M, (k)] of class ids; M may be 0)."""
    ids = tf.cast(stored, tf.int32)
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.RaggedTensor.from_tensor(tf.reshape(ids, [tf.shape(ids)[0], -1]))
    rows = tf.cast(ids.value_rowids(), tf.int32)
    hits = tf.stack([rows, ids.flat_values], axis=1)
    dense = tf.scatter_nd(hits, tf.ones_like(rows), tf.stack([ids.nrows(out_type=tf.int32), num_classes]))
    return tf.minimum(dense, 1)


CLIP_LABELS = ("video", "window")  # a training clip's target: its video's label, or the actions in its window


def window_label(actions: dict, clip_starts: tf.Tensor, clip_seconds: tf.Tensor, num_classes: int) -> tf.Tensor:
    """The multi-hot target of clips from time-stamped actions: class c is on iff an action of c overlaps the
    time window of one of the clips (Charades' rule: a clip that misses an action does not get its label).

    Args:
      actions: {'class_id': int [S], 'start': float [S], 'end': float [S]} in seconds (S may be 0).
      clip_starts: float32 [ρ] seconds; each window is [start, start + clip_seconds].
      clip_seconds: float32 scalar, a clip's duration.
    Returns int32 [C] in {0, 1}: the union over the ρ windows.
    """
    starts = tf.reshape(tf.cast(clip_starts, tf.float32), [-1, 1])  # [ρ, 1]
    ends = starts + tf.cast(clip_seconds, tf.float32)
    overlaps = (tf.cast(actions["start"], tf.float32)[None] <= ends) & (tf.cast(actions["end"], tf.float32)[None] >= starts)
    hit = tf.reduce_any(overlaps, axis=0)  # [S]: the action overlaps some clip
    ids = tf.boolean_mask(tf.cast(actions["class_id"], tf.int32), hit)
    return tf.minimum(tf.reduce_sum(tf.one_hot(ids, num_classes, dtype=tf.int32), axis=0), 1)


def padding_label(kind: str, num_classes: int) -> tf.Tensor:
    """The `label` of a padding example (masked out of every metric)."""
    if kind == "single":
        return tf.constant(-1, tf.int32)
    return tf.fill([num_classes], tf.constant(-1, tf.int32))


def label_text(label, class_names: Sequence[str] | None) -> str:
    """A batch label (int, or a multi-hot row) as text for figures: class names joined by '+'."""
    import numpy as np

    label = np.asarray(label)
    ids = [int(label)] if label.ndim == 0 else np.flatnonzero(label > 0).tolist()
    if not ids:
        return "(none)"
    return "+".join(class_names[i] if class_names and 0 <= i < len(class_names) else str(i) for i in ids)
