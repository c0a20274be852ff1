"""`detection`: AVA-style action detection (`config.detection`), the protocol of `configs/eval.py:ava`.

The backbone in its detection layout (`stjax.models.detection_overrides`: res5 stride 1, dilation 2) and a
`RoIHead` are trained on the GT person boxes of the train split's keyframes (the `detection` framework
through the generic train loop, in DIR/detection/<checkpoint>/, resumable; clips from `stjax.data.keyframes`),
then every keyframe of the eval split is scored on the detector's proposals with score ≥
`data.keyframes.score_threshold` and on its GT boxes: frame-level mAP at IoU 0.5 over the dataset's evaluated
classes (`stjax.eval.detection.frame_ap`, the official AVA evaluation's rules; excluded keyframes skipped).

Metrics: `mAP` (proposals: the reported number), `mAP_gt_boxes` (the same head on the GT boxes: the
classification part alone), `per_class_ap` [C] (NaN: not evaluated or no GT box), `evaluated_classes`, and
`counts` (keyframes, GT boxes, proposals scored, excluded keyframes).
DIR/detection/<checkpoint>/detections.csv holds the scored proposals in the official format (video_id,
timestamp, x1, y1, x2, y2, action_id, score) for the official evaluator.
"""
from __future__ import annotations

import csv
import math
import os

import numpy as np

from stjax.eval.protocols import base

DETECTIONS_FILE = "detections.csv"


class Detection(base.Protocol):
    name = "detection"
    default_block = "detection"
    label_types = ("boxes",)
    example_unit = "keyframes"

    def trains(self, config):
        return True

    def pool(self, config) -> str:
        return "mean"  # one clip per keyframe: nothing to pool

    def validate(self, config, label_type=None) -> None:
        from stjax import configlib
        from stjax.data import keyframes

        d = config.detection
        configlib.require(d.epochs > 0, "detection.epochs", d.epochs, "numbers > 0")
        configlib.require(0.0 <= d.dropout < 1.0, "detection.dropout", d.dropout, "numbers in [0, 1)")
        configlib.require_choice("detection.schedule", d.get("schedule", "steps"), ("cosine", "steps"))
        keyframes.spec_from_config(config)
        if label_type is not None and label_type not in self.label_types:
            raise ValueError(f"protocol={self.name!r} scores person boxes (label type boxes: ava, synthetic_ava); "
                             f"data.dataset={config.data.dataset!r} has {label_type} labels")

    def train_and_score(self, spec, variables, config, directory, mesh, num_classes, num_train):
        return detect(spec, variables, config, directory, mesh, num_classes, num_train)


def detection_config(spec: dict, init_path: str, config, num_classes: int, num_train: int):
    """The pretraining-style config of the `detection` framework that trains backbone `spec` (from
    `init_path`, in its detection layout) and a RoI head on the keyframes (`config.detection`)."""
    import ml_collections

    from stjax import models

    d = config.detection
    c = ml_collections.ConfigDict()
    c.seed, c.framework, c.rho = config.seed, "detection", 1
    c.batch_size = d.batch_size
    overrides = {**dict(spec.get("overrides", {})),
                 **models.detection_overrides(spec["backbone"], d.get("output_stride"))}
    c.model = ml_collections.ConfigDict(dict(backbone=spec["backbone"], overrides=overrides, dtype=d.dtype,
                                             remat=False, init_from=init_path))
    c.detection = ml_collections.ConfigDict(dict(
        num_classes=num_classes, dropout=d.dropout, roi_output_size=tuple(d.get("roi_output_size", (7, 7))),
        roi_max_sampling=d.get("roi_max_sampling"), roi_method=d.get("roi_method", "gather")))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", base_lr=d.base_lr, base_batch_size=d.base_batch_size, warmup_epochs=d.warmup_epochs,
        weight_decay=d.weight_decay, momentum=0.9, nesterov=True, trust_coefficient=0.001,
        schedule=d.get("schedule", "steps"), decay_epochs=tuple(d.get("decay_epochs", ())),
        decay_factor=d.get("decay_factor", 0.1)))
    c.log_every = d.log_every
    c.checkpoint_every = d.checkpoint_every
    c.keep_checkpoints = 1
    c.data = ml_collections.ConfigDict(config.data.to_dict())
    c.data.pipeline = "keyframes"
    c.total_steps = max(1, round(d.epochs * num_train / d.batch_size))
    return c


def detect(spec: dict, variables: dict, config, directory: str, mesh, num_classes: int,
           num_train: int) -> tuple[dict, int, int]:
    """Trains the detection head (and the backbone) from backbone `variables`; (eval split metrics, #train,
    #eval keyframes)."""
    import jax

    from stjax.data import builders
    from stjax.eval.protocols import finetune as finetune_lib
    from stjax.train import loop, setup
    from stjax.train import mesh as mesh_lib
    from stjax.train import workdir as workdir_lib

    init_path = finetune_lib.save_start(spec, variables, directory)
    c = detection_config(spec, init_path, config, num_classes, num_train)
    eval_per_process = mesh_lib.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    run = setup.build(c, mesh, batch_field="detection.batch_size", num_train=num_train)
    workdir_lib.check_config(directory, c, workdir_lib.PRETRAIN_MAY_CHANGE)
    result = loop.train(run, directory)
    if result.preempted:
        raise loop.Preempted(f"detection training stopped at step {result.steps} of {c.total_steps}")
    builder = builders.load_builder(c.data.dataset, c.data.data_dir)
    evaluated = builder.info.metadata.get("evaluated_classes") or list(range(num_classes))
    outputs = score_keyframes(run.framework, result.state.params, result.state.batch_stats, c, mesh,
                              eval_per_process, c.data.eval_split)
    metrics = keyframe_metrics(outputs, [int(i) for i in evaluated], num_classes)
    if jax.process_index() == 0:
        write_detections(os.path.join(directory, DETECTIONS_FILE), outputs, [int(i) for i in evaluated])
    return metrics, num_train, int(outputs["mask"].sum())


def score_keyframes(framework, params, batch_stats, config, mesh, batch_size_per_process: int, split: str) -> dict:
    """Sigmoid scores of every keyframe of `split` on its proposals and its GT boxes; the host arrays of the
    whole split (every process gets all of them): the eval batches' fields (`stjax.data.keyframes`) less the
    clips, plus `scores` [N, M, C] (proposals) and `gt_scores` [N, M, C], padding rows included (`mask`)."""
    import jax
    import jax.numpy as jnp

    from stjax.data import device as device_lib
    from stjax.data import keyframes
    from stjax.eval import linear_probe
    from stjax.train import mesh as mesh_lib
    from stjax.train import step as step_lib

    spec = keyframes.spec_from_config(config)
    sharding = mesh_lib.batch_sharding(mesh)
    m = spec.max_boxes

    @jax.jit
    def predict(params, batch_stats, clips, boxes, gt_boxes):
        logits = framework.detect(params, batch_stats, step_lib.normalize_clips(clips),
                                  jnp.concatenate([boxes, gt_boxes], axis=1))
        return jax.nn.sigmoid(logits)

    ds = keyframes.eval_dataset(config.data.dataset, batch_size=batch_size_per_process, spec=spec, split=split,
                                data_dir=config.data.data_dir, process_index=jax.process_index(),
                                process_count=jax.process_count())
    parts: dict[str, list] = {}
    for batch in ds.as_numpy_iterator():
        on_mesh = device_lib.to_global({k: batch[k] for k in ("clips", "boxes", "gt_boxes")}, sharding)
        scores = linear_probe._to_host(predict(params, batch_stats, on_mesh["clips"], on_mesh["boxes"],
                                               on_mesh["gt_boxes"]))
        host = _gather_host({k: v for k, v in batch.items() if k != "clips"})
        host["scores"], host["gt_scores"] = scores[:, :m], scores[:, m:]
        for k, v in host.items():
            parts.setdefault(k, []).append(v)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    dropped = int(out["dropped"][out["mask"]].sum())
    if dropped and jax.process_index() == 0:
        print(f"warning: {dropped} boxes of split {split!r} were past data.keyframes.max_boxes={m} and were not "
              f"scored; raise it", flush=True)
    return out


def _gather_host(batch: dict) -> dict:
    """The host fields of every process's slice of one eval batch (video ids as bytes), concatenated."""
    import jax

    if jax.process_count() == 1:
        return dict(batch)
    from jax.experimental import multihost_utils

    ids = batch.pop("video_id")
    width = 128
    encoded = np.zeros((len(ids), width), np.uint8)
    for i, v in enumerate(ids):
        raw = bytes(v)[:width]
        encoded[i, :len(raw)] = np.frombuffer(raw, np.uint8)
    gathered = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in batch.items()}
    ids = np.asarray(multihost_utils.process_allgather(encoded, tiled=True))
    gathered["video_id"] = np.array([bytes(row).rstrip(b"\0") for row in ids], dtype=object)
    return gathered


def _key(video_id, timestamp) -> str:
    from stjax.eval import detection

    name = video_id.decode() if isinstance(video_id, bytes) else str(video_id)
    return detection.frame_key(name, int(timestamp))


def keyframe_metrics(outputs: dict, evaluated: list[int], num_classes: int) -> dict:
    """Frame mAP at IoU 0.5 over label ids `evaluated` (AVA class id = label id + 1) on the proposals and
    on the GT boxes (module docstring)."""
    from stjax.eval import detection

    real = np.flatnonzero(outputs["mask"])
    keys = [_key(outputs["video_id"][i], outputs["timestamp"][i]) for i in real]
    groundtruth = {}
    for key, i in zip(keys, real):
        valid = outputs["gt_mask"][i]
        boxes, labels = outputs["gt_frame"][i][valid], outputs["gt_label"][i][valid]
        rows, ids = np.nonzero(labels > 0)
        groundtruth[key] = (boxes[rows], ids + 1)
    excluded = [k for k, i in zip(keys, real) if outputs["excluded"][i]]
    class_ids = [c + 1 for c in evaluated]
    results = {}
    for name, boxes, mask, scores in (("mAP", "box_frame", "box_mask", "scores"),
                                      ("mAP_gt_boxes", "gt_frame", "gt_mask", "gt_scores")):
        dets = detection.detections_from_scores(keys, outputs[boxes][real], outputs[mask][real],
                                                outputs[scores][real], class_ids)
        results[name] = detection.frame_ap(groundtruth, dets, class_ids, 0.5, excluded)
    per_class = np.full(num_classes, math.nan)
    for c, ap in results["mAP"]["per_class_ap"].items():
        per_class[c - 1] = ap
    return {"mAP": results["mAP"]["mAP"], "mAP_gt_boxes": results["mAP_gt_boxes"]["mAP"],
            "per_class_ap": per_class, "evaluated_classes": list(evaluated),
            "counts": {"keyframes": len(real), "gt_boxes": int(outputs["gt_mask"][real].sum()),
                       "proposals": int(outputs["box_mask"][real].sum()), "excluded_keyframes": len(excluded)}}


def write_detections(path: str, outputs: dict, evaluated: list[int]) -> None:
    """The scored proposals as the official evaluator reads them: `video_id,timestamp,x1,y1,x2,y2,action_id,
    score`, one row per (proposal, evaluated class)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        for i in np.flatnonzero(outputs["mask"]):
            video, timestamp = _key(outputs["video_id"][i], outputs["timestamp"][i]).split(",")
            for box, score in zip(outputs["box_frame"][i][outputs["box_mask"][i]],
                                  outputs["scores"][i][outputs["box_mask"][i]]):
                for c in evaluated:
                    writer.writerow([video, timestamp, *(f"{v:.3f}" for v in box), c + 1, f"{score[c]:.6f}"])
    os.replace(tmp, path)
