"""AVA frame-level action detection mAP (PASCAL VOC average precision at IoU 0.5 per class), in NumPy.

The metric of the official AVA evaluation (ActivityNet `get_ava_performance.py` on the TF object detection
API's `PascalDetectionEvaluator`, copied by PySlowFast as `ava_evaluation/`), written anew from its
documented behaviour; `frame_ap` states the rules.

Conventions:
* A key names one keyframe: "<video_id>,<timestamp as %04d>" (`frame_key`), e.g. "1j20qq1JyX4,0902".
* boxes: float [N, 4] as (x1, y1, x2, y2), normalised to [0, 1] as in the AVA CSVs. IoU is the plain area
  ratio, without VOC's +1 pixel term (the official `np_box_ops` uses none; on normalised boxes it would be
  meaningless). The evaluator's own [y1, x1, y2, x2] order gives the same IoU.
* groundtruth: {key: (boxes [N, 4], labels int [N])}, one row per (box, action) as in the CSV: a box with k
  actions appears k times. A key with no rows is an annotated keyframe without boxes.
* detections: {key: (boxes [M, 4], labels int [M], scores float [M])}; `detections_from_scores` makes them
  from a detection head's per-box class scores (one entry per box and evaluated class).
* Class ids are AVA's, starting at 1; `AVA_V22_EVAL_CLASSES` are the 60 that AVA v2.1/v2.2 evaluate.
"""
from __future__ import annotations

import csv
import re

import numpy as np

# ava_action_list_v2.2_for_activitynet_2019.pbtxt (the same 60 ids as the 2018 v2.1 list): models predict
# all 80 classes, only these are scored.
AVA_V22_EVAL_CLASSES = (
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37, 38, 41, 43,
    45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 72, 73, 74, 76,
    77, 78, 79, 80)

UNLISTED_FRAMES = ("false_positive", "ignore")


def frame_key(video_id, timestamp) -> str:
    """The key of one keyframe: "<video_id>,<%04d timestamp>"; timestamp an integer number of seconds."""
    try:
        seconds = float(timestamp)
    except (TypeError, ValueError):
        raise ValueError(f"timestamp must be a whole number of seconds; got {timestamp!r}") from None
    if not seconds.is_integer():
        raise ValueError(f"timestamp must be a whole number of seconds; got {timestamp!r}")
    return f"{video_id},{int(seconds):04d}"


def iou(boxes_a, boxes_b) -> np.ndarray:
    """Pairwise intersection over union [A, B] of boxes [A, 4] and [B, 4] given as (x1, y1, x2, y2).

    Area-based, no +1 pixel term; 0 where the union is empty (two degenerate boxes)."""
    a, b = _boxes(boxes_a, "boxes_a"), _boxes(boxes_b, "boxes_b")
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def voc_average_precision(scores, true_positive, num_gt: int) -> float:
    """VOC AP of one class: detections' scores float [K] and TP flags bool [K] against num_gt GT boxes.

    Detections ranked by score, highest first (stable: ties keep the given order); precision and recall after
    each; recall padded with 0 and 1, precision with 0 and 0; precision made non-increasing from the right;
    AP = sum over the recall steps of (step width) x (precision there). NaN when num_gt == 0; 0.0 without
    detections."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    tp = np.asarray(true_positive, bool).reshape(-1)
    if tp.shape != scores.shape:
        raise ValueError(f"scores {scores.shape} and true_positive {tp.shape} differ in length")
    if num_gt < 0 or tp.sum() > num_gt:
        raise ValueError(f"num_gt={num_gt} must be >= 0 and >= the number of true positives ({tp.sum()})")
    if num_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    hits = np.cumsum(tp[np.argsort(-scores, kind="stable")])
    recall = np.concatenate([[0.0], hits / num_gt, [1.0]])
    precision = np.concatenate([[0.0], hits / np.arange(1, len(hits) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(np.diff(recall)) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def frame_ap(groundtruth, detections, class_ids, iou_threshold: float = 0.5, excluded_keys=(), *,
             unlisted_frames: str = "false_positive", max_per_frame: int | None = None) -> dict:
    """AVA frame-level AP per class and their mean (the official `PascalBoxes_Precision/mAP@0.5IOU`).

    groundtruth, detections: dicts keyed by frame (module docstring). The rules:
    1. Rows whose label is not in `class_ids` (the label map) are dropped on both sides, and so are the
       frames in `excluded_keys` (the excluded-timestamps file).
    2. Per frame, detections are ranked by score, highest first (stable); with `max_per_frame` only the first
       that many are kept (ActivityNet's evaluator keeps 50 per keyframe since 2019; PySlowFast's copy keeps
       all: None, the default); then detections with x2 <= x1 or y2 <= y1 are dropped (as the official code).
    3. In that order, a detection of class c is matched to the GT box of class c in its frame with which its
       IoU is highest (the first one on ties): a true positive if that IoU >= iou_threshold and the box is
       not yet matched, else a false positive -- also when its best box is already matched and another,
       unmatched one overlaps it by >= iou_threshold (the TF object detection API's rule).
    4. Detections of a frame absent from `groundtruth`: unlisted_frames="false_positive" (default) counts
       them as false positives, as PySlowFast's copy and ActivityNet's evaluator of the excluded-timestamps
       era (AVA v2.1/v2.2) do (the frame has no GT box); "ignore" drops them, as ActivityNet's evaluator
       since 2020 does (its GT CSV lists every annotated keyframe, empty ones as "video_id,timestamp" rows;
       `read_boxes_csv` keeps those keys). A key of `groundtruth` without rows of `class_ids` is an annotated
       frame: its detections are false positives either way.
    5. Per class: the detections of all frames ranked by score (stable: ties keep the order of the frames in
       `detections`, then the rank of rule 2; the official code's order of ties is argsort's) and scored by
       `voc_average_precision`. A class without GT box has AP NaN and is left out of the mean (as the
       official `nanmean`); a class with GT boxes but no detection has AP 0.

    Known difference: PySlowFast's in-memory evaluation does not rank a frame's detections by score before
    matching (it matches in box order), which changes rule 3 when two detections of one class in a frame
    share their best GT box; ActivityNet's CSV reader ranks them, as here.

    Returns {"mAP": float (NaN if no class has GT), "per_class_ap": {class_id: float},
    "num_gt": {class_id: int}, "num_detections": {class_id: int (detections scored, after rules 1-4)}}.
    """
    classes = _class_ids(class_ids)
    if unlisted_frames not in UNLISTED_FRAMES:
        raise ValueError(f"unlisted_frames must be one of {UNLISTED_FRAMES}; got {unlisted_frames!r}")
    if max_per_frame is not None and (not float(max_per_frame).is_integer() or max_per_frame < 1):
        raise ValueError(f"max_per_frame must be None or a positive integer; got {max_per_frame!r}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1]; got {iou_threshold}")
    excluded = set(excluded_keys)

    gt = {}
    for key, value in groundtruth.items():
        if key in excluded:
            continue
        boxes, labels = _rows(key, value, "groundtruth", 2)
        keep = np.isin(labels, classes)
        gt[key] = (boxes[keep], labels[keep])
    gt_labels = np.concatenate([labels for _, labels in gt.values()] + [np.zeros(0, np.int64)])

    all_scores, all_labels, all_tp = [], [], []
    for key, value in detections.items():
        if key in excluded or (key not in gt and unlisted_frames == "ignore"):
            continue
        boxes, labels, scores = _rows(key, value, "detections", 3)
        keep = np.isin(labels, classes)
        boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")
        if max_per_frame is not None:
            order = order[:int(max_per_frame)]
        boxes, labels, scores = boxes[order], labels[order], scores[order]
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels, scores = boxes[valid], labels[valid], scores[valid]
        frame_gt = gt.get(key, (np.zeros((0, 4)), np.zeros(0, np.int64)))
        all_tp.append(_match(boxes, labels, *frame_gt, float(iou_threshold)))
        all_scores.append(scores)
        all_labels.append(labels)
    scores = np.concatenate(all_scores + [np.zeros(0)])
    labels = np.concatenate(all_labels + [np.zeros(0, np.int64)])
    tp = np.concatenate(all_tp + [np.zeros(0, bool)])

    per_class_ap, num_gt, num_det = {}, {}, {}
    for c in classes.tolist():
        mine = labels == c
        num_gt[c] = int(np.sum(gt_labels == c))
        num_det[c] = int(np.sum(mine))
        per_class_ap[c] = voc_average_precision(scores[mine], tp[mine], num_gt[c])
    aps = np.array(list(per_class_ap.values()))
    valid_aps = aps[~np.isnan(aps)]
    return {"mAP": float(valid_aps.mean()) if len(valid_aps) else float("nan"), "per_class_ap": per_class_ap,
            "num_gt": num_gt, "num_detections": num_det}


def detections_from_scores(keys, boxes, box_mask, scores, class_ids, *, first_class_id: int = 1) -> dict:
    """Detections for `frame_ap` from a detection head: one (box, class, score) entry per valid box and class.

    keys: N frame keys; boxes float [N, M, 4] (x1, y1, x2, y2); box_mask bool [N, M] (False: padding);
    scores float [N, M, C], column j the score of class id j + first_class_id (AVA: ids from 1, C = 80).
    Returns {key: (boxes [K, 4], labels [K], scores [K])} with K = valid boxes x len(class_ids), box by box,
    classes in the order given; rows of a key that appears several times are concatenated in order."""
    classes = _class_ids(class_ids)
    boxes = np.asarray(boxes, np.float64)
    box_mask = np.asarray(box_mask, bool)
    scores = np.asarray(scores, np.float64)
    keys = list(keys)
    n = len(keys)
    if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be [N={n}, M, 4]; got shape {boxes.shape}")
    if box_mask.shape != boxes.shape[:2]:
        raise ValueError(f"box_mask must be [N, M] = {boxes.shape[:2]}; got shape {box_mask.shape}")
    if scores.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise ValueError(f"scores must be [N, M, C] with [N, M] = {boxes.shape[:2]}; got shape {scores.shape}")
    columns = np.asarray(classes) - first_class_id
    if columns.min() < 0 or columns.max() >= scores.shape[2]:
        raise ValueError(f"class_ids must lie in [{first_class_id}, {first_class_id + scores.shape[2] - 1}] "
                         f"(the {scores.shape[2]} score columns); got {classes.min()}..{classes.max()}")
    parts: dict = {}
    for i, key in enumerate(keys):
        valid = np.flatnonzero(box_mask[i])
        k = len(columns)
        entry = (np.repeat(boxes[i, valid], k, axis=0), np.tile(classes, len(valid)),
                 scores[i][valid][:, columns].reshape(-1))
        parts.setdefault(key, []).append(entry)
    return {key: tuple(np.concatenate([p[j] for p in entries]) for j in range(3)) for key, entries in parts.items()}


def read_label_map(path) -> dict[int, str]:
    """{class id: name} of a label map in the official .pbtxt text form:
    `item { name: "bend/bow (at the waist)" id: 1 }`, one field a line or not; `label { ... }` blocks and
    `label_id` for `id` accepted (the 80-class list); other fields (`label_type`) and # comments ignored."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"#]+|#[^\n]*', text)
    tokens = [t for t in tokens if not t.startswith("#")]
    out: dict[int, str] = {}
    i, item = 0, 0
    while i < len(tokens):
        if tokens[i] not in ("item", "label") or tokens[i + 1:i + 2] != ["{"]:
            raise ValueError(f"{path}: expected 'item {{' (or 'label {{') at token {i}; got {tokens[i:i + 2]}")
        item += 1
        i += 2
        fields = {}
        while i < len(tokens) and tokens[i] != "}":
            if i + 2 >= len(tokens) or tokens[i + 1] != ":":
                raise ValueError(f"{path}: item {item}: expected 'field: value'; got {tokens[i:i + 3]}")
            value = tokens[i + 2]
            fields[tokens[i]] = value[1:-1].replace('\\"', '"') if value.startswith('"') else value
            i += 3
        if i >= len(tokens):
            raise ValueError(f"{path}: item {item} is not closed by '}}'")
        i += 1
        raw_id = fields.get("id", fields.get("label_id"))
        if raw_id is None or "name" not in fields:
            raise ValueError(f"{path}: item {item} needs a name and an id (or label_id); got {sorted(fields)}")
        try:
            class_id = int(raw_id)
        except ValueError:
            raise ValueError(f"{path}: item {item}: id must be an integer; got {raw_id!r}") from None
        if class_id in out:
            raise ValueError(f"{path}: class id {class_id} appears twice")
        out[class_id] = fields["name"]
    return out


def read_excluded_timestamps(path) -> set[str]:
    """Frame keys of an excluded-timestamps CSV (rows "video_id,timestamp")."""
    excluded = set()
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 2 columns (video_id, timestamp); got {len(row)}")
            excluded.add(frame_key(row[0].strip(), row[1].strip()))
    return excluded


def read_boxes_csv(path, class_ids=None, *, with_scores: bool = False) -> dict:
    """Ground truth or detections of an AVA CSV as `frame_ap` takes them.

    Rows "video_id, timestamp, x1, y1, x2, y2, action_id[, person_id or score]"; a 2-column row
    "video_id,timestamp" is an annotated keyframe without boxes (its key is kept, with no rows), and so is a
    frame whose rows all have actions outside class_ids (None: keep all). with_scores: column 8 is the score
    (detections) and the values are (boxes, labels, scores); else (boxes, labels), column 8 ignored."""
    rows: dict = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) not in (2, 7, 8) or (with_scores and len(row) != 8):
                want = "8 (with a score)" if with_scores else "2, 7 or 8"
                raise ValueError(f"{path}:{line}: expected {want} columns; got {len(row)}")
            entries = rows.setdefault(frame_key(row[0].strip(), row[1].strip()), [])
            if len(row) == 2:
                continue
            label = int(row[6])
            if class_ids is not None and label not in class_ids:
                continue
            entries.append([float(v) for v in row[2:6]] + [label] + ([float(row[7])] if with_scores else []))
    out = {}
    for key, entries in rows.items():
        table = np.asarray(entries, np.float64).reshape(len(entries), 5 + with_scores)
        value = (table[:, :4], table[:, 4].astype(np.int64))
        out[key] = value + ((table[:, 5],) if with_scores else ())
    return out


def _class_ids(class_ids) -> np.ndarray:
    classes = np.asarray(list(class_ids))
    if classes.ndim != 1 or len(classes) == 0 or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"class_ids must be a non-empty sequence of integers; got {class_ids!r}")
    if len(np.unique(classes)) != len(classes):
        raise ValueError(f"class_ids must be distinct; got {class_ids!r}")
    return classes.astype(np.int64)


def _boxes(boxes, field: str) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{field} must be [N, 4] (x1, y1, x2, y2); got shape {boxes.shape}")
    return boxes


def _rows(key, value, side: str, arity: int):
    names = ("boxes", "labels", "scores")[:arity]
    if len(value) != arity:
        raise ValueError(f"{side}[{key!r}] must be ({', '.join(names)}); got {len(value)} arrays")
    boxes = _boxes(value[0], f"{side}[{key!r}] boxes")
    rest = [np.asarray(v).reshape(-1) if np.size(v) == 0 else np.asarray(v) for v in value[1:]]
    for name, array in zip(names[1:], rest):
        if array.shape != (len(boxes),):
            raise ValueError(f"{side}[{key!r}] {name} must be [{len(boxes)}] (one per box); got {array.shape}")
    labels = rest[0]
    if len(labels) and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{side}[{key!r}] labels must be integers; got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if arity == 2:
        return boxes, labels
    scores = rest[1].astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{side}[{key!r}] scores must be finite")
    return boxes, labels, scores


def _match(boxes, labels, gt_boxes, gt_labels, threshold: float) -> np.ndarray:
    """TP flags bool [K] of one frame's detections, ranked already (rule 3 of `frame_ap`)."""
    tp = np.zeros(len(boxes), bool)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return tp
    overlap = np.where(labels[:, None] == gt_labels[None, :], iou(boxes, gt_boxes), -1.0)
    best = overlap.argmax(axis=1)
    hit = np.flatnonzero(overlap[np.arange(len(boxes)), best] >= threshold)
    # a GT box goes to the first detection (in rank order) whose best box it is; later ones are FPs
    _, first = np.unique(best[hit], return_index=True)
    tp[hit[first]] = True
    return tp
