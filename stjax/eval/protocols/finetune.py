"""`finetune`: the whole backbone and a linear classifier trained with labels (`config.finetune`), and
the training half of `linear` with `linear.augmented` (the classifier alone, `config.linear`).

Both build a pretraining-style config of the `supervised` framework (`finetune_config`) and run it
through the generic train loop (`stjax.train.setup.build`, `stjax.train.loop.train`) in
DIR/<protocol>/<checkpoint>/, resumable; the test views' features are pooled (`pool`) and classified.
"""
from __future__ import annotations

import os

import numpy as np

from stjax.eval.protocols import base

SCORES_FILE = "test_scores.npz"


class Finetune(base.Protocol):
    name = "finetune"
    default_block = "finetune"
    label_types = ("single", "multi_hot")  # softmax or sigmoid cross-entropy, by the batch labels' rank

    def trains(self, config):
        return True

    def train_and_score(self, spec, variables, config, directory, mesh, num_classes, num_train):
        return finetune(spec, variables, config, directory, mesh, num_classes, num_train, frozen=False)


def finetune_config(spec: dict, init_path: str, config, num_classes: int, num_train: int, frozen: bool = False):
    """The pretraining-style config that trains a classifier on backbone `spec` from `init_path`: the whole
    network (`config.finetune`), or with `frozen` only the classifier on the frozen backbone, from augmented
    clips (`config.linear`, the paper's linear protocol)."""
    import ml_collections

    ft = config.linear if frozen else config.finetune
    c = ml_collections.ConfigDict()
    c.seed, c.framework, c.rho = config.seed, "supervised", 1  # ρ = 1: two augmentations of a clip per video
    c.batch_size = ft.batch_size
    c.model = ml_collections.ConfigDict(dict(backbone=spec["backbone"], overrides=dict(spec.get("overrides", {})),
                                             dtype=ft.dtype, remat=False, init_from=init_path))
    c.supervised = ml_collections.ConfigDict(dict(num_classes=num_classes, dropout=ft.dropout,
                                                  freeze_backbone=frozen))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", base_lr=ft.base_lr, base_batch_size=ft.base_batch_size, warmup_epochs=ft.warmup_epochs,
        weight_decay=0.0 if frozen else ft.weight_decay, momentum=0.9, nesterov=True, trust_coefficient=0.001,
        schedule=ft.get("schedule", "cosine"), decay_epochs=tuple(ft.get("decay_epochs", ())),
        decay_factor=ft.get("decay_factor", 0.1)))
    c.log_every = ft.log_every
    c.checkpoint_every = ft.checkpoint_every
    c.keep_checkpoints = 1
    c.data = ml_collections.ConfigDict(config.data.to_dict())
    # The recipes name colour jitter and grayscale only: no blur; no jitter at all at strength 0.
    c.data.augmentation.update(brightness=ft.color_jitter, contrast=ft.color_jitter, saturation=ft.color_jitter,
                               grayscale_prob=ft.grayscale_prob, blur_prob=0.0,
                               color_jitter_prob=c.data.augmentation.color_jitter_prob if ft.color_jitter else 0.0)
    c.total_steps = max(1, round(ft.epochs * num_train / ft.batch_size))
    return c


def finetune(spec: dict, variables: dict, config, directory: str, mesh, num_classes: int, num_train: int,
             frozen: bool = False) -> tuple[dict, int, int]:
    """Fine-tunes the whole backbone + a linear classifier (with `frozen`, the classifier alone);
    (test metrics, #train, #test videos).

    Each test view is classified and a video's score is the `pool` (mean or max) of its views' logits (the
    study's "max-pool prediction scores" for Charades; the mean of the logits is the logits of the mean
    feature). The metrics of both pools are reported too, as `<metric>_view_<pool>` (e.g. mAP_view_max), and the
    test videos' pooled logits [N, C] and labels are saved in DIRECTORY/test_scores.npz (`logits_mean`,
    `logits_max`, `labels`).
    """
    import jax

    from stjax.eval import features as eval_features
    from stjax.eval import metrics as metrics_lib
    from stjax.train import loop, setup
    from stjax.train import mesh as mesh_lib
    from stjax.train import workdir as workdir_lib

    init_path = save_start(spec, variables, directory)
    c = finetune_config(spec, init_path, config, num_classes, num_train, frozen)
    eval_per_process = mesh_lib.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    run = setup.build(c, mesh, batch_field="linear.batch_size" if frozen else "finetune.batch_size",
                      num_train=num_train)
    framework = run.framework
    # resumed only with the settings that wrote its checkpoints (DIRECTORY/config.json; `evaluate.run` holds
    # the evaluation's workdir)
    workdir_lib.check_config(directory, c, workdir_lib.PRETRAIN_MAY_CHANGE)
    result = loop.train(run, directory)
    if result.preempted:
        raise loop.Preempted(f"fine-tuning stopped at step {result.steps} of {c.total_steps}")
    pool = (config.linear if frozen else config.finetune).get("pool", "mean")

    def pooled_logits(params, feats):  # [B, V, D] -> [B, 2C]: the views' logits, mean | max
        b, v, d = feats.shape
        logits = framework.classify(params, feats.reshape(b * v, d)).reshape(b, v, -1)
        return jax.numpy.concatenate([logits.mean(axis=1), logits.max(axis=1)], axis=-1)

    features = eval_features.make_feature_extractor(framework.backbone, c, mesh, eval_per_process,
                                                    views_head=pooled_logits)
    both, test_y = features(framework.backbone_variables(result.state.params, result.state.batch_stats),
                            c.data.eval_split, head_params=result.state.params)
    pooled = dict(zip(("mean", "max"), np.split(np.asarray(both), 2, axis=1)))
    if jax.process_index() == 0:  # the scores the metrics are of (e.g. for an official evaluation script)
        np.savez(os.path.join(directory, SCORES_FILE), labels=test_y, **{f"logits_{p}": s for p, s in pooled.items()})
    by_pool = {p: metrics_lib.reported_metrics(logits, test_y, num_classes) for p, logits in pooled.items()}
    metrics = dict(by_pool[pool])
    for p, values in by_pool.items():
        metrics.update({f"{k}_view_{p}": v for k, v in values.items() if isinstance(v, float)})
    return metrics, num_train, len(test_y)


def save_start(spec: dict, variables: dict, directory: str) -> str:
    """DIRECTORY/init.npz, the backbone weights a training protocol starts from: written by process 0 (all
    processes wait for it), or, when a resumed run wrote it, checked to hold `variables`."""
    import jax

    from stjax import export

    os.makedirs(directory, exist_ok=True)
    init_path = os.path.join(directory, "init.npz")
    if os.path.exists(init_path):  # a resumed run: it must start from these weights too
        _check_same_start(init_path, variables, directory)
    elif jax.process_index() == 0:
        export.save_backbone(variables, spec, "npz", init_path)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"stjax: {init_path} written")
    return init_path


def _check_same_start(init_path: str, variables: dict, directory: str) -> None:
    """ConfigMismatchError unless `init_path` (the weights a fine-tuning in `directory` started from) holds
    `variables`: its checkpoints continue only that fine-tuning."""
    from stjax import export
    from stjax.train import workdir as workdir_lib

    _, started = export.load_backbone(init_path)
    before, now = export.flatten_variables(started), export.flatten_variables(variables)
    if sorted(before) != sorted(now) or any(not np.array_equal(before[k], np.asarray(now[k])) for k in before):
        raise workdir_lib.ConfigMismatchError(
            f"{directory} holds a fine-tuning that started from other backbone weights ({init_path}) than this "
            "evaluation's checkpoint (another init_from or step?); nothing was written. Give this evaluation "
            "another --workdir, or the init_from and steps that started it.")
