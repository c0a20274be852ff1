"""Evaluation config: `--config configs/eval.py:PROTOCOL|TASK[,key=value,...] --config.init_from=RUN_OR_FILE`.

Protocols (stjax/eval/protocols/, one module each, registered in `PROTOCOLS` there):
  linear     a linear classifier on the frozen backbone: with `linear.augmented` (the default for
             data=k400_r50) the paper's protocol, trained from augmented clips (crop + flip), 60 epochs
             cosine, warm-up 8, lr 4.0 at 512, no weight decay, test views' logits averaged; otherwise
             the fast probe on cached features of the test views (`config.probe`)
  knn        weighted kNN on the frozen features (k=200, temperature 0.07)
  retrieval  test clips query the train split by cosine similarity: R@1/5/10/20
  finetune   all layers + a linear classifier trained with labels (`config.finetune`: the paper's
             UCF101/HMDB51 recipe: cosine, dropout 0.8, weight decay 0, colour jitter 0.4,
             grayscale 0.2; 200 epochs, 10 for the demo data), test views' logits averaged
  detection  action detection on keyframes with person boxes (label type `boxes`: ava, synthetic_ava): the
             backbone with res5 at stride 1, dilation 2 and a RoI head trained on the GT boxes, scored on
             the detector's proposals (`data.keyframes.score_threshold`): frame mAP@0.5 (`config.detection`)

Downstream tasks (a protocol with the task's dataset and recipe; `data_from_run=False`: the clips are the
task's):
  charades   `finetune` on Charades (data=k400_r50; built from `data.manual_dir`) or, with data=demo, on the
             Charades-like synthetic set (`synthetic_charades`, rendered on first use): sigmoid BCE,
             training clips labelled by the actions in their time window (data.clip_labels=window), dropout
             0.5, SGD lr 0.2 at 64 videos, ×0.1 at epochs 40 and 50 of 60, warm-up 5, weight decay 1e-4,
             16×8 clips, 10×3 test views whose scores are max-pooled; mAP (the demo: 8×2 clips, 20 epochs
             at lr 0.1, 5 test views)
  ava        `detection` on AVA v2.2 (data=k400_r50; built from `data.manual_dir`) or, with data=demo, on the
             AVA-like synthetic set (`synthetic_ava`): 8×8 clips centred on the keyframes, short side
             256-320 + 224 crops + flips, SGD lr 0.3 at 64, ×0.1 at epochs 16, 24, 28 of 32, warm-up 5,
             weight decay 1e-7, dropout 0.5; val proposals of score >= 0.8, frame mAP@0.5 over the 60
             evaluated classes (the demo: 8×2 clips of 64², res5 and res4 at stride 1 (1/16), 36 epochs
             at lr 0.1, ×0.1 at 24 and 32)

`init_from` is a pretraining run's workdir or one checkpoint (`python -m stjax.export` output, or a
PySlowFast / torchvision file). For a run, `steps` picks checkpoints: last (default), all, or N,M
(`steps=N+M` inside the config argument, since commas separate arguments there), and the data
settings (dataset, clip length, crop, test views) are the run's own unless `data_from_run=False`.

Every protocol's block but `detection`'s (one clip per keyframe) has `pool`: how a video's test-view features become one, `mean` (the default) or
`max` (per feature), e.g. `--config.knn.pool=max`; `linear` reads `config.probe` (fast probe) or
`config.linear` (augmented), `finetune` pools the features it classifies.

Datasets with the official 3 splits (ucf101, hmdb51): `folds=all` (or `folds=1+3`) runs the protocol on
each fold's dataset (NAME/fold1..3, built from `data.manual_dir` when missing) into DIR/fold<k>/ and
writes the per-fold results and their mean to DIR/results.json and DIR/report.md.

Arguments: data=demo|k400_r50 (the data block of that pretraining preset), dataset=NAME[/CONFIG],
steps=..., folds=all|N+M, seed=N. Any field can be overridden with `--config.a.b=value`.
"""
import os

import ml_collections
from ml_collections.config_dict import placeholder

from stjax import configlib
from stjax.eval.protocols import PROTOCOLS as REGISTERED  # numpy only: no TensorFlow, no JAX

PROTOCOLS = tuple(REGISTERED)
TASKS = ("charades", "ava")


def get_config(arg=None):
    args = configlib.parse_arg(arg, PROTOCOLS + TASKS, data=str, dataset=str, steps=str, folds=str, seed=int)
    configlib.require_choice("data", args.get("data", "demo"), ("demo", "k400_r50"))
    pretrain = configlib.load_config_file(os.path.join(os.path.dirname(__file__), "pretrain.py"),
                                          args.get("data", "demo"))
    config = ml_collections.ConfigDict()
    config.job = "eval"
    config.protocol = args["preset"]
    config.init_from = ""
    config.steps = args.get("steps", "last")
    config.folds = args.get("folds", "")  # "" (the dataset as named), "all" or "N+M": the mean over official folds
    config.data_from_run = True
    config.seed = args.get("seed", 0)
    config.data = pretrain.data
    config.data.dataset = args.get("dataset", config.data.dataset)
    config.eval_batch_size = pretrain.eval_batch_size
    config.probe = pretrain.probe
    paper_scale = args.get("data") == "k400_r50"
    config.linear = ml_collections.ConfigDict(dict(
        augmented=paper_scale, epochs=60.0, batch_size=pretrain.eval_batch_size, base_lr=4.0, base_batch_size=512,
        warmup_epochs=8.0, dropout=0.0, color_jitter=0.0, grayscale_prob=0.0, dtype="float32",
        log_every=pretrain.log_every, checkpoint_every=pretrain.checkpoint_every, pool="mean",
    ))
    config.knn = pretrain.knn  # k=200, temperature 0.07, pool
    config.retrieval = ml_collections.ConfigDict(dict(ks=(1, 5, 10, 20), pool="mean"))
    # The learning rate is not part of the recipe page (REFERENCE.md): SGD + Nesterov 0.9, 0.1 at 64 videos,
    # scaled linearly, warm-up then cosine.
    config.finetune = ml_collections.ConfigDict(dict(
        epochs=200.0 if paper_scale else 10.0, batch_size=pretrain.eval_batch_size,
        base_lr=0.1, base_batch_size=64, warmup_epochs=1.0, weight_decay=0.0, dropout=0.8,
        color_jitter=0.4, grayscale_prob=0.2, dtype="float32", log_every=pretrain.log_every,
        checkpoint_every=pretrain.checkpoint_every, pool="mean", schedule="cosine", decay_epochs=(), decay_factor=0.1,
    ))
    # Action detection (protocol `detection`; the `ava` task sets the study's recipe). The learning rate is
    # the study's for unsupervised initialisations: 0.3 at 64 keyframes.
    config.detection = ml_collections.ConfigDict(dict(
        epochs=32.0, batch_size=pretrain.eval_batch_size, base_lr=0.3, base_batch_size=64, warmup_epochs=5.0,
        weight_decay=1e-7, dropout=0.5, schedule="steps", decay_epochs=(16.0, 24.0, 28.0), decay_factor=0.1,
        roi_output_size=(7, 7), roi_method="gather", dtype="float32",
        log_every=pretrain.log_every, checkpoint_every=pretrain.checkpoint_every,
    ))
    # None (typed, settable from the command line): res5 at stride 1 only / exact RoIAlign sampling
    config.detection.output_stride = placeholder(int)
    config.detection.roi_max_sampling = placeholder(int)
    # The keyframe clips and boxes of `detection` (stjax.data.keyframes), PySlowFast's AVA recipe: short side
    # 256-320 then a 224 crop and flips in training; the full frame at short side 256 in evaluation; proposals
    # of score >= 0.8 (the study; PySlowFast's default is 0.9).
    config.data.keyframes = ml_collections.ConfigDict(dict(
        scale_range=(256 / 224, 320 / 224), flip=True, box_jitter=0.0, max_boxes=32, test_short_side=256,
        test_aspect=16 / 9, score_threshold=0.8))
    if args["preset"] == "charades":
        _charades(config, paper_scale, args)
    elif args["preset"] == "ava":
        _ava(config, paper_scale, args)
    return config


def _charades(config, paper_scale: bool, args) -> None:
    """The study's Charades fine-tuning (`../shared/specs/charades.md` §3), or its CPU-sized form on the
    Charades-like synthetic set."""
    config.protocol = "finetune"
    config.data_from_run = False  # the task's clips, not the pretraining run's
    data = config.data
    data.clip_labels = "window"  # PySlowFast's rule: a clip's targets are the actions in its time window
    data.eval_split = "test"     # the official test set, which papers call validation
    config.finetune.update(dropout=0.5, weight_decay=1e-4, color_jitter=0.0, grayscale_prob=0.0, pool="max",
                           schedule="steps", decay_factor=0.1, base_batch_size=64)
    if paper_scale:
        data.dataset = args.get("dataset", "charades")
        data.num_frames, data.stride = 16, 8  # twice the pretraining duration (+~3 mAP in the study)
        data.test_views.update(temporal=10, spatial=3, short_side=256)
        config.finetune.update(epochs=60.0, base_lr=0.2, warmup_epochs=5.0, decay_epochs=(40.0, 50.0))
    else:
        data.dataset = args.get("dataset", "synthetic_charades")
        from stjax.data import make_synthetic  # numpy only

        data.synthetic = ml_collections.ConfigDict(dict(make_synthetic.CHARADES_DEFAULTS))
        data.test_views.update(temporal=5, spatial=1)
        config.finetune.update(epochs=20.0, base_lr=0.1, warmup_epochs=1.0, decay_epochs=(14.0, 18.0))


def _ava(config, paper_scale: bool, args) -> None:
    """The study's AVA v2.2 detection fine-tuning (`../shared/specs/ava.md` §4), or its CPU-sized form on the
    AVA-like synthetic set."""
    config.protocol = "detection"
    config.data_from_run = False
    data = config.data
    data.eval_split = "val"
    if paper_scale:
        data.dataset = args.get("dataset", "ava")
        data.num_frames, data.stride = 8, 8
        data.augmentation.crop_size = 224
        config.detection.update(batch_size=64)
    else:
        data.dataset = args.get("dataset", "synthetic_ava")
        from stjax.data import make_synthetic  # numpy only

        data.synthetic = ml_collections.ConfigDict(dict(make_synthetic.AVA_DEFAULTS))
        data.num_frames, data.stride = 8, 2
        data.augmentation.crop_size = 64
        data.keyframes.update(test_short_side=64, test_aspect=1.0, box_jitter=0.05, max_boxes=8)
        config.detection.update(epochs=36.0, base_lr=0.1, warmup_epochs=2.0, decay_epochs=(24.0, 32.0),
                                output_stride=16, weight_decay=1e-4)
