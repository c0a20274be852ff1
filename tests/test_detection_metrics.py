"""stjax.eval.detection (AVA frame mAP): hand-computed toy cases, a brute-force reference on seeded random
problems, a scikit-learn cross-check of the PR curve, and the label-map / exclusions / CSV readers."""
import math

import numpy as np
import pytest

from stjax.eval import detection

sk = pytest.importorskip("sklearn.metrics")

A, B, C = "vidA,0902", "vidA,0903", "vidB,1000"
BOX = [0.1, 0.1, 0.4, 0.6]
FAR = [0.6, 0.6, 0.9, 0.9]


def gt(*rows):
    """groundtruth value of (box, label) rows."""
    return (np.array([r[0] for r in rows], float).reshape(-1, 4), np.array([r[1] for r in rows], int))


def det(*rows):
    """detections value of (box, label, score) rows."""
    return (np.array([r[0] for r in rows], float).reshape(-1, 4), np.array([r[1] for r in rows], int),
            np.array([r[2] for r in rows], float))


def ap_of(groundtruth, detections, class_ids=(1,), **kw):
    return detection.frame_ap(groundtruth, detections, class_ids, **kw)


# ---------------------------------------------------------------- toy cases, APs computed by hand


def test_iou_known_values_without_the_plus_one_pixel_term():
    a = np.array([[0.0, 0.0, 1.0, 1.0]])
    b = np.array([[0.5, 0.0, 1.5, 1.0], [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0], [0.25, 0.25, 0.75, 0.75]])
    np.testing.assert_allclose(detection.iou(a, b), [[1 / 3, 1.0, 0.0, 0.25]])
    assert detection.iou(np.zeros((0, 4)), b).shape == (0, 4)
    assert detection.iou([[0.2, 0.2, 0.2, 0.2]], [[0.2, 0.2, 0.2, 0.2]])[0, 0] == 0.0  # empty union
    with pytest.raises(ValueError, match="boxes_a"):
        detection.iou(np.zeros((2, 3)), b)


def test_one_tp_and_one_fp_in_both_score_orders():
    g = {A: gt((BOX, 1))}
    tp_first = ap_of(g, {A: det((BOX, 1, 0.9), (FAR, 1, 0.8))})
    assert tp_first["per_class_ap"][1] == pytest.approx(1.0)  # P = [1, 1/2] at R = [1, 1]
    fp_first = ap_of(g, {A: det((BOX, 1, 0.8), (FAR, 1, 0.9))})
    assert fp_first["per_class_ap"][1] == pytest.approx(0.5)  # P = [0, 1/2], R = [0, 1]
    assert fp_first["mAP"] == pytest.approx(0.5)
    assert fp_first["num_gt"] == {1: 1} and fp_first["num_detections"] == {1: 2}


def test_a_duplicate_detection_of_one_gt_box_is_a_false_positive():
    other = [0.5, 0.1, 0.9, 0.6]
    g = {A: gt((BOX, 1), (other, 1))}
    dup = [0.11, 0.1, 0.41, 0.6]
    m = ap_of(g, {A: det((BOX, 1, 0.9), (dup, 1, 0.8), (other, 1, 0.7))})
    # TP, FP, TP of 2 boxes: P = [1, 1/2, 2/3], R = [1/2, 1/2, 1] -> 1/2 * 1 + 1/2 * 2/3
    assert m["per_class_ap"][1] == pytest.approx(0.5 + 1 / 3)


def test_two_gt_boxes_in_one_frame_and_the_best_box_already_matched_rule():
    g1, g2 = [0.0, 0.0, 0.5, 1.0], [0.2, 0.0, 0.7, 1.0]
    g = {A: gt((g1, 1), (g2, 1))}
    assert ap_of(g, {A: det((g1, 1, 0.9), (g2, 1, 0.8))})["per_class_ap"][1] == pytest.approx(1.0)
    # the second detection overlaps g1 by 0.818 (taken) and g2 by 0.538 (free): its best box is matched, so
    # it is a false positive (the TF object detection API's rule), not a match to g2
    d2 = [0.05, 0.0, 0.55, 1.0]
    np.testing.assert_allclose(detection.iou([d2], [g1, g2]), [[0.45 / 0.55, 0.35 / 0.65]])
    m = ap_of(g, {A: det((g1, 1, 0.9), (d2, 1, 0.8))})
    assert m["per_class_ap"][1] == pytest.approx(0.5)  # TP, FP of 2 boxes: R = 1/2 at P = 1


def test_iou_at_threshold_just_below_and_above():
    g = {A: gt(([0.0, 0.0, 1.0, 1.0], 1))}
    for width, expected in [(0.49, 0.0), (0.5, 1.0), (0.51, 1.0)]:  # IoU = width; >= 0.5 is a match
        m = ap_of(g, {A: det(([0.0, 0.0, width, 1.0], 1, 0.7))})
        assert m["per_class_ap"][1] == expected, width
    assert ap_of(g, {A: det(([0.0, 0.0, 0.6, 1.0], 1, 0.7))}, iou_threshold=0.65)["per_class_ap"][1] == 0.0


def test_excluded_keys_are_removed_on_both_sides():
    g = {A: gt((BOX, 1)), B: gt((BOX, 1))}
    d = {A: det((FAR, 1, 0.9)), B: det((BOX, 1, 0.5))}
    full = ap_of(g, d)
    assert full["per_class_ap"][1] == pytest.approx(0.25)  # FP, TP of 2 boxes: R = 1/2 at P = 1/2
    m = ap_of(g, d, excluded_keys={A})
    assert m["per_class_ap"][1] == pytest.approx(1.0)
    assert m["num_gt"] == {1: 1} and m["num_detections"] == {1: 1}


def test_a_class_without_gt_is_nan_and_left_out_of_the_mean_and_one_without_detections_is_zero():
    g = {A: gt((BOX, 1), (BOX, 3))}
    d = {A: det((BOX, 1, 0.9), (BOX, 2, 0.8), (FAR, 5, 0.3))}
    m = ap_of(g, d, class_ids=(1, 2, 3))
    assert m["per_class_ap"][1] == 1.0 and math.isnan(m["per_class_ap"][2]) and m["per_class_ap"][3] == 0.0
    assert m["mAP"] == pytest.approx(0.5)  # (1 + 0) / 2: class 2 has no GT box
    assert m["num_gt"] == {1: 1, 2: 0, 3: 1} and m["num_detections"] == {1: 1, 2: 1, 3: 0}  # label 5 ignored
    assert math.isnan(ap_of({A: gt()}, d, class_ids=(2,))["mAP"])


def test_detections_on_frames_without_groundtruth():
    g = {A: gt((BOX, 1)), B: gt()}  # B: an annotated keyframe without boxes
    d = {A: det((BOX, 1, 0.5)), C: det((BOX, 1, 0.9))}  # C: not in the ground truth at all
    assert ap_of(g, d)["per_class_ap"][1] == pytest.approx(0.5)  # default: C's detection is a FP
    ignored = ap_of(g, d, unlisted_frames="ignore")
    assert ignored["per_class_ap"][1] == 1.0 and ignored["num_detections"] == {1: 1}
    on_empty = {A: det((BOX, 1, 0.5)), B: det((BOX, 1, 0.9))}  # an annotated empty frame: FP in both modes
    for mode in detection.UNLISTED_FRAMES:
        assert ap_of(g, on_empty, unlisted_frames=mode)["per_class_ap"][1] == pytest.approx(0.5)
    # a frame whose GT rows are all of other classes is annotated too
    g3 = {A: gt((BOX, 1)), C: gt((BOX, 2))}
    assert ap_of(g3, d, unlisted_frames="ignore")["per_class_ap"][1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unlisted_frames"):
        ap_of(g, d, unlisted_frames="drop")


def test_tied_scores_keep_the_input_order():
    g = {A: gt((BOX, 1))}
    assert ap_of(g, {A: det((BOX, 1, 0.7), (FAR, 1, 0.7))})["per_class_ap"][1] == 1.0
    assert ap_of(g, {A: det((FAR, 1, 0.7), (BOX, 1, 0.7))})["per_class_ap"][1] == 0.5
    # across frames: the order of the frames in `detections`
    g2 = {A: gt((BOX, 1)), B: gt((BOX, 1))}
    assert ap_of(g2, {B: det((FAR, 1, 0.7)), A: det((BOX, 1, 0.7))})["per_class_ap"][1] == pytest.approx(0.25)
    assert ap_of(g2, {A: det((BOX, 1, 0.7)), B: det((FAR, 1, 0.7))})["per_class_ap"][1] == pytest.approx(0.5)
    # ties among detections of the same kind do not depend on the order
    d = [(BOX, 1, 0.7), ([0.1, 0.1, 0.41, 0.6], 1, 0.7), (FAR, 1, 0.7)]
    assert ap_of(g, {A: det(*d)})["per_class_ap"][1] == ap_of(g, {A: det(d[1], d[0], d[2])})["per_class_ap"][1]


def test_matching_follows_the_score_rank_not_the_row_order_and_invalid_boxes_are_dropped():
    g = {A: gt((BOX, 1))}
    near = [0.12, 0.1, 0.4, 0.6]
    # rows out of score order: the higher-scored (second) row takes the box, the first row is the duplicate
    m = ap_of(g, {A: det((near, 1, 0.3), (BOX, 1, 0.9))})
    assert m["per_class_ap"][1] == 1.0
    invalid = [0.5, 0.5, 0.4, 0.9]  # x2 < x1: dropped, neither TP nor FP
    m = ap_of(g, {A: det((invalid, 1, 0.95), (BOX, 1, 0.5))})
    assert m["per_class_ap"][1] == 1.0 and m["num_detections"] == {1: 1}


def test_max_per_frame_keeps_the_highest_scores_of_the_evaluated_classes():
    g = {A: gt((BOX, 1))}
    d = {A: det((FAR, 1, 0.9), ([0.0, 0.0, 0.2, 0.2], 2, 0.95), (BOX, 1, 0.5))}
    assert ap_of(g, d)["per_class_ap"][1] == 0.5
    m = ap_of(g, d, max_per_frame=1)  # class 2 is not evaluated, so the cap keeps the FAR box
    assert m["per_class_ap"][1] == 0.0 and m["num_detections"] == {1: 1}
    assert ap_of(g, d, class_ids=(1, 2), max_per_frame=2)["per_class_ap"][1] == 0.0
    with pytest.raises(ValueError, match="max_per_frame"):
        ap_of(g, d, max_per_frame=0)


def test_bad_inputs_are_named():
    g = {A: gt((BOX, 1))}
    with pytest.raises(ValueError, match="vidA,0902.*scores"):
        ap_of(g, {A: (np.array([BOX]), np.array([1]), np.array([0.1, 0.2]))})
    with pytest.raises(ValueError, match="groundtruth"):
        ap_of({A: (np.array([BOX]),)}, {})
    with pytest.raises(ValueError, match="class_ids"):
        ap_of(g, {}, class_ids=())


# ---------------------------------------------------------------- random problems vs a brute-force reference


def _overlap(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_frame_ap(groundtruth, detections, class_ids, threshold, excluded, unlisted):
    """Per-class AP by explicit loops: all detections ranked by (score desc, input position); each one's
    best same-class GT box of its frame; AP = sum over the TPs of (max precision at this rank or later) / G."""
    gt_rows = {key: [(tuple(b), int(lab)) for b, lab in zip(*value) if int(lab) in class_ids]
               for key, value in groundtruth.items() if key not in excluded}
    ranked, position = [], 0
    for key, (boxes, labels, scores) in detections.items():
        if key in excluded or (unlisted == "ignore" and key not in gt_rows):
            continue
        for b, lab, s in zip(boxes, labels, scores):
            position += 1
            if int(lab) in class_ids and b[2] > b[0] and b[3] > b[1]:
                ranked.append((-float(s), position, key, tuple(b), int(lab)))
    ranked.sort()
    out = {}
    for c in class_ids:
        boxes_of = {key: [b for b, lab in rows if lab == c] for key, rows in gt_rows.items()}
        taken = {key: [False] * len(v) for key, v in boxes_of.items()}
        flags = []
        for _, _, key, b, lab in ranked:
            if lab != c:
                continue
            best, best_j = -1.0, None
            for j, g in enumerate(boxes_of.get(key, [])):
                if _overlap(b, g) > best:
                    best, best_j = _overlap(b, g), j
            ok = best_j is not None and best >= threshold and not taken[key][best_j]
            if ok:
                taken[key][best_j] = True
            flags.append(ok)
        n_gt = sum(len(v) for v in boxes_of.values())
        if n_gt == 0:
            out[c] = float("nan")
            continue
        precision, hits = [], 0
        for i, f in enumerate(flags):
            hits += f
            precision.append(hits / (i + 1))
        out[c] = sum(max(precision[i:]) for i, f in enumerate(flags) if f) / n_gt
    return out


def random_problem(rng):
    classes = [1, 3, 4, 7, 9]  # 9 never has GT; label 2 appears but is not evaluated
    keys = [detection.frame_key(f"v{v}", 902 + t) for v in range(2) for t in range(int(rng.integers(3, 7)))]
    groundtruth, detections = {}, {}
    for key in keys:
        boxes, labels = [], []
        n_boxes = int(rng.integers(0, 4))
        xy = rng.uniform(0, 0.6, (n_boxes, 2))
        base = np.concatenate([xy, xy + rng.uniform(0.15, 0.4, (n_boxes, 2))], axis=1)
        box_labels = []
        for box in base:
            box_labels.append(rng.choice([1, 2, 3, 4, 7], size=int(rng.integers(1, 4)), replace=False).tolist())
            for lab in box_labels[-1]:
                boxes.append(box)
                labels.append(int(lab))
        if rng.random() < 0.85:
            groundtruth[key] = (np.array(boxes).reshape(-1, 4), np.array(labels, int))
        d_boxes, d_labels = [], []
        for box, own in zip(base, box_labels):
            for _ in range(int(rng.integers(0, 3))):  # jittered copies: IoUs on both sides of 0.5, duplicates
                d_boxes.append(box + rng.normal(0, 0.04, 4))
                d_labels.append(int(rng.choice(own if rng.random() < 0.7 else classes + [2])))
        for _ in range(int(rng.integers(0, 4))):
            xy = rng.uniform(0, 0.8, 2)
            d_boxes.append(np.concatenate([xy, xy + rng.uniform(-0.05, 0.3, 2)]))  # some invalid (x2 < x1)
            d_labels.append(int(rng.choice(classes + [2])))
        scores = rng.random(len(d_boxes))
        scores[rng.random(len(scores)) < 0.3] = 0.5  # ties
        detections[key] = (np.array(d_boxes).reshape(-1, 4), np.array(d_labels, int), scores)
    detections["v9,0902"] = detections.pop(keys[0])  # a frame only on the detection side
    excluded = set(rng.choice(keys, size=2, replace=False).tolist())
    return groundtruth, detections, classes, excluded


@pytest.mark.parametrize("seed", range(20))
def test_random_problems_match_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    groundtruth, detections, classes, excluded = random_problem(rng)
    for mode in detection.UNLISTED_FRAMES:
        m = detection.frame_ap(groundtruth, detections, classes, 0.5, excluded, unlisted_frames=mode)
        ref = reference_frame_ap(groundtruth, detections, classes, 0.5, excluded, mode)
        assert list(m["per_class_ap"]) == classes
        np.testing.assert_allclose(list(m["per_class_ap"].values()), list(ref.values()), rtol=0, atol=1e-9)
        assert math.isnan(m["per_class_ap"][9])
        valid = [v for v in ref.values() if not math.isnan(v)]
        assert m["mAP"] == pytest.approx(np.mean(valid), abs=1e-9)


def test_the_random_problems_exercise_partial_aps():
    values = []
    for seed in range(20):
        groundtruth, detections, classes, excluded = random_problem(np.random.default_rng(seed))
        values += list(detection.frame_ap(groundtruth, detections, classes, 0.5, excluded)["per_class_ap"].values())
    values = np.array(values)
    values = values[~np.isnan(values)]
    assert np.mean((values > 0) & (values < 1)) > 0.5  # not all 0 or 1: the reference comparison has teeth


# ---------------------------------------------------------------- scikit-learn cross-check


@pytest.mark.parametrize("seed", range(5))
def test_copies_and_far_boxes_match_the_envelope_of_sklearns_pr_curve(seed):
    """Every GT box detected once by an exact copy, every other detection far from all GT boxes, distinct
    scores: each detection's TP flag is known, recall ends at 1 and VOC AP is the area under the
    monotone envelope of sklearn's precision-recall curve (and never below sklearn's non-interpolated AP)."""
    rng = np.random.default_rng(seed)
    groundtruth, detections, flags, scores = {}, {}, [], []
    for f in range(6):
        key = detection.frame_key("v", 902 + f)
        xy = rng.uniform(0, 0.3, (3, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.2, (3, 2))], axis=1)  # inside [0, 0.5]^2
        groundtruth[key] = (boxes, np.ones(3, int))
        xy = rng.uniform(0.6, 0.8, (int(rng.integers(0, 4)), 2))
        far = np.concatenate([xy, xy + 0.1], axis=1)  # inside [0.6, 0.9]^2
        d_boxes = np.concatenate([boxes, far])
        s = rng.random(len(d_boxes))
        detections[key] = (d_boxes, np.ones(len(d_boxes), int), s)
        flags += [True] * 3 + [False] * len(far)
        scores += s.tolist()
    flags, scores = np.array(flags), np.array(scores)
    ap = detection.frame_ap(groundtruth, detections, [1])["per_class_ap"][1]
    precision, recall, _ = sk.precision_recall_curve(flags, scores)
    levels = np.unique(recall[recall > 0])
    expected = sum((r - prev) * precision[recall >= r].max() for prev, r in zip(np.r_[0.0, levels[:-1]], levels))
    assert ap == pytest.approx(expected, abs=1e-12)
    assert ap >= sk.average_precision_score(flags, scores) - 1e-12
    assert detection.voc_average_precision(scores, flags, flags.sum()) == pytest.approx(ap, abs=1e-12)


# ---------------------------------------------------------------- detections from a head's scores


def test_detections_from_scores_one_entry_per_valid_box_and_evaluated_class():
    rng = np.random.default_rng(0)
    boxes = rng.random((3, 4, 4))
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]], bool)
    scores = rng.random((3, 4, 80))
    keys = [A, B, A]
    out = detection.detections_from_scores(keys, boxes, mask, scores, detection.AVA_V22_EVAL_CLASSES)
    assert set(out) == {A, B}
    b, lab, s = out[A]
    assert b.shape == (4 * 60, 4) and lab.shape == s.shape == (240,)
    assert len(out[B][0]) == 0
    np.testing.assert_array_equal(b[60:120], np.repeat(boxes[0, 1:2], 60, axis=0))
    np.testing.assert_array_equal(lab[:60], detection.AVA_V22_EVAL_CLASSES)
    assert s[59] == scores[0, 0, 79] and s[0] == scores[0, 0, 0] and s[1] == scores[0, 0, 2]  # id 3 -> column 2
    assert s[180 + 1] == scores[2, 3, 2]  # third row, box 3
    with pytest.raises(ValueError, match="class_ids"):
        detection.detections_from_scores(keys, boxes, mask, scores[..., :40], detection.AVA_V22_EVAL_CLASSES)


def test_the_60_evaluated_classes():
    assert len(detection.AVA_V22_EVAL_CLASSES) == 60 and list(detection.AVA_V22_EVAL_CLASSES) == sorted(
        set(detection.AVA_V22_EVAL_CLASSES))
    left_out = {2, 16, 18, 19, 21, 23, 25, 31, 32, 33, 35, 39, 40, 42, 44, 50, 53, 55, 71, 75}
    assert set(range(1, 81)) - set(detection.AVA_V22_EVAL_CLASSES) == left_out


# ---------------------------------------------------------------- readers

LABEL_MAP = """item {
  name: "bend/bow (at the waist)"
  id: 1
}
item {
  name: "carry/hold (an object)"
  id: 17
  label_type: OBJECT_MANIPULATION
}
# a comment
label {
  name: "talk to (e.g., self, a person, a group)"
  label_id: 79
  label_type: PERSON_INTERACTION
}
item { name: "dance" id: 4 }
"""


def test_read_label_map(tmp_path):
    path = tmp_path / "ava_action_list.pbtxt"
    path.write_text(LABEL_MAP)
    assert detection.read_label_map(path) == {1: "bend/bow (at the waist)", 17: "carry/hold (an object)",
                                              79: "talk to (e.g., self, a person, a group)", 4: "dance"}
    path.write_text(LABEL_MAP + 'item {\n  name: "stand"\n  id: 4\n}\n')
    with pytest.raises(ValueError, match="id 4 appears twice"):
        detection.read_label_map(path)
    path.write_text('item {\n  name: "stand"\n}\n')
    with pytest.raises(ValueError, match="item 1 needs"):
        detection.read_label_map(path)


def test_read_excluded_timestamps_and_frame_key(tmp_path):
    path = tmp_path / "excluded.csv"
    path.write_text("-5KQ66BBWC4,0902\n-5KQ66BBWC4,1000\nabc,905\n\n")
    assert detection.read_excluded_timestamps(path) == {"-5KQ66BBWC4,0902", "-5KQ66BBWC4,1000", "abc,0905"}
    assert detection.frame_key("x", 902) == "x,0902" == detection.frame_key("x", "902") == detection.frame_key(
        "x", 902.0)
    with pytest.raises(ValueError, match="whole number"):
        detection.frame_key("x", 902.5)
    path.write_text("a,0902,extra\n")
    with pytest.raises(ValueError, match=":1: expected 2 columns"):
        detection.read_excluded_timestamps(path)


def test_read_boxes_csv_and_evaluate(tmp_path):
    gt_path, det_path = tmp_path / "gt.csv", tmp_path / "det.csv"
    gt_path.write_text("vidA,0902,0.1,0.1,0.4,0.6,1,0\n"
                       "vidA,0902,0.1,0.1,0.4,0.6,2,0\n"   # class 2: not evaluated
                       "vidA,0903\n"                       # an annotated keyframe without boxes
                       "vidB,1000,0.1,0.1,0.4,0.6,2,4\n")  # only a class that is not evaluated
    det_path.write_text("vidA,0902,0.1,0.1,0.4,0.6,1,0.4\n"
                        "vidA,0903,0.1,0.1,0.4,0.6,1,0.9\n"
                        "vidB,1000,0.6,0.6,0.9,0.9,1,0.8\n"
                        "vidC,0902,0.6,0.6,0.9,0.9,1,0.95\n")  # not in the ground truth file
    g = detection.read_boxes_csv(gt_path, detection.AVA_V22_EVAL_CLASSES)
    assert list(g) == ["vidA,0902", "vidA,0903", "vidB,1000"]
    np.testing.assert_array_equal(g["vidA,0902"][0], [[0.1, 0.1, 0.4, 0.6]])
    np.testing.assert_array_equal(g["vidA,0902"][1], [1])
    assert g["vidA,0903"][0].shape == (0, 4) and g["vidB,1000"][1].shape == (0,)
    d = detection.read_boxes_csv(det_path, with_scores=True)
    np.testing.assert_array_equal(d["vidB,1000"][2], [0.8])
    classes = detection.AVA_V22_EVAL_CLASSES
    # ranked: vidC FP (0.95), vidA,0903 FP (0.9), vidB FP (0.8), vidA,0902 TP (0.4): P = 1/4 at R = 1
    assert detection.frame_ap(g, d, classes)["per_class_ap"][1] == pytest.approx(0.25)
    ignored = detection.frame_ap(g, d, classes, unlisted_frames="ignore")
    assert ignored["per_class_ap"][1] == pytest.approx(1 / 3) and ignored["num_gt"][1] == 1
    assert ignored["mAP"] == pytest.approx(1 / 3)  # the 59 other classes have no GT: NaN, left out
    with pytest.raises(ValueError, match="8 \\(with a score\\)"):
        detection.read_boxes_csv(gt_path, with_scores=True)
