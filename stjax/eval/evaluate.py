"""The evaluation job: protocols on frozen features of one or more checkpoints.

    python -m stjax.main --config configs/eval.py:PROTOCOL --config.init_from=RUN_OR_FILE --workdir DIR

`init_from` is a pretraining run's workdir (its checkpoints are chosen with `steps`: last, all, or
N,M,...) or a single exported / PySlowFast / torchvision checkpoint (`python -m stjax.export`).
For every checkpoint the backbone embeds the train and test splits (test views averaged per video),
then the protocol (PROTOCOLS) runs on those features; `finetune` instead trains the whole backbone
with a linear classifier (the `supervised` framework through the generic train loop, in
DIR/finetune/<checkpoint>/, resumable) and classifies the test views (logits averaged), and
`linear` with `linear.augmented` trains the classifier alone on the frozen backbone from augmented
clips the same way (the paper's protocol; otherwise the fast probe on cached features). DIR gets results.json, report.md and PNGs:
per-class accuracy and the confusion matrix (≤ 101 classes) of the last checkpoint, and the metrics
against the pretraining step when several checkpoints were evaluated.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from typing import Callable

import numpy as np

from stjax import provenance
from stjax.export import is_run  # a pretraining run's workdir: config.json and checkpoints/
from stjax.eval import knn as knn_lib

PROTOCOLS = ("linear", "knn", "retrieval", "finetune")
MAX_CONFUSION_CLASSES = 101


@dataclasses.dataclass
class Target:
    """One checkpoint to evaluate: `load()` gives (backbone spec, variables)."""
    name: str
    step: int | None
    load: Callable[[], tuple[dict, dict]]


def parse_steps(steps: str) -> str | list[int]:
    """'last' | 'all' | 'N,M' (also 'N+M', for use inside a config argument) -> 'last', 'all' or [N, M]."""
    steps = str(steps).strip()
    if steps in ("last", "all"):
        return steps
    parts = [p for p in steps.replace("+", ",").split(",") if p.strip()]
    if not parts or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"steps={steps!r} is invalid; valid values: last, all, or checkpoint steps N,M,...")
    return sorted({int(p) for p in parts})


def resolve_targets(init_from: str, steps: str) -> list[Target]:
    from stjax import export

    if not init_from:
        raise ValueError("init_from='' is invalid; valid values: a pretraining run's workdir, or a checkpoint file "
                         "or directory written by `python -m stjax.export`, or a PySlowFast / torchvision file")
    if not os.path.exists(init_from):
        raise ValueError(f"init_from={init_from!r} does not exist")
    wanted = parse_steps(steps)
    if is_run(init_from):
        from stjax.train import checkpoint

        available = checkpoint.saved_steps(init_from)
        if not available:
            raise ValueError(f"init_from={init_from!r} has no finished checkpoint")
        chosen = available[-1:] if wanted == "last" else available if wanted == "all" else wanted
        missing = sorted(set(chosen) - set(available))
        if missing:
            raise ValueError(f"steps={steps!r}: no checkpoint at step(s) {missing} in {init_from}; valid "
                             f"values: last, all, or steps among {available}")
        return [Target(f"step {s}", s, lambda s=s: export.run_backbone(init_from, s)[:2]) for s in chosen]
    if wanted != "last":
        raise ValueError(f"steps={steps!r} needs init_from to be a pretraining run; {init_from} is one checkpoint")
    return [Target(os.path.basename(os.path.normpath(init_from)), None, lambda: export.load_backbone(init_from))]


def fold_datasets(dataset: str, folds: str) -> list[tuple[int, str]]:
    """[(k, dataset of fold k)] for `folds` ('' = none, 'all' = 1, 2, 3, or 'N+M'): 'ucf101' and fold 2 →
    'ucf101/fold2'; a custom fold config keeps its suffix ('ucf101/fold1_s128' → 'ucf101/fold2_s128')."""
    from stjax.data import builders

    folds = str(folds or "").strip()
    if not folds:
        return []
    if folds == "all":
        chosen = [1, 2, 3]
    else:
        parts = [p.strip() for p in folds.replace(",", "+").split("+") if p.strip()]
        if not parts or not all(p in ("1", "2", "3") for p in parts):
            raise ValueError(f"folds={folds!r} is invalid; valid values: all, or folds among 1, 2, 3 as N+M")
        chosen = sorted({int(p) for p in parts})
    name, config_name = builders.split_name(dataset)
    match = re.fullmatch(r"fold[123](.*)", config_name)
    if match is None:
        raise ValueError(f"folds={folds!r} needs a dataset with the official 3 splits (ucf101, hmdb51: configs "
                         f"fold1..fold3); data.dataset={dataset!r} has none")
    return [(k, f"{name}/fold{k}{match.group(1)}") for k in chosen]


def fold_mean(per_fold: dict[int, dict]) -> dict:
    """Results of several folds: each fold's, and per checkpoint the mean of every metric over the folds."""
    first = next(iter(per_fold.values()))
    mean = []
    for i, record in enumerate(first["checkpoints"]):
        metrics = [k for k, v in record.items() if isinstance(v, float)]
        rows = [fold["checkpoints"][i] for fold in per_fold.values()]
        mean.append({"checkpoint": record["checkpoint"], "step": record["step"],
                     **{m: float(np.mean([r[m] for r in rows])) for m in metrics}})
    return {"protocol": first["protocol"], "init_from": first["init_from"], "folds": sorted(per_fold),
            "datasets": {k: r["dataset"] for k, r in per_fold.items()}, "mean": mean,
            "per_fold": {k: r["checkpoints"] for k, r in per_fold.items()}, "provenance": first.get("provenance")}


def _write_fold_outputs(workdir: str, results: dict) -> None:
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    metric_names = [k for k, v in results["mean"][0].items() if isinstance(v, float)]
    lines = [f"# {results['protocol']} evaluation of {results['init_from']}: mean over folds "
             f"{', '.join(map(str, results['folds']))}", "",
             "Datasets: " + ", ".join(f"fold {k}: `{d}`" for k, d in results["datasets"].items())
             + ". Each fold's report, per-class accuracy and confusion matrix are in `fold<k>/`.", "",
             "| checkpoint | fold | " + " | ".join(metric_names) + " |", "|---|---|" + "---|" * len(metric_names)]
    for i, mean in enumerate(results["mean"]):
        for k, records in results["per_fold"].items():
            lines.append(f"| {mean['checkpoint']} | {k} | " + " | ".join(f"{records[i][m]:.4f}" for m in metric_names)
                         + " |")
        lines.append(f"| {mean['checkpoint']} | **mean** | " + " | ".join(f"**{mean[m]:.4f}**" for m in metric_names)
                     + " |")
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    print(f"wrote {os.path.join(workdir, 'results.json')} and report.md")


def run_protocol(protocol: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 num_classes: int, config) -> dict:
    """Metrics of `protocol` on (features, labels) of the train and test splits."""
    (train_x, train_y), (test_x, test_y) = train, test
    if protocol == "linear":
        from stjax.eval import linear_probe

        probe = linear_probe.ProbeConfig(**config.probe.to_dict(), seed=config.seed)
        result = linear_probe.train_linear_probe(train_x, train_y, test_x, test_y, num_classes, probe)
        return {"top1": result["top1"], "top5": result["top5"], "train_top1": result["train_top1"],
                "per_class_top1": np.asarray(result["per_class_top1"], np.float64),
                "confusion": np.asarray(result["confusion"])}
    if protocol == "knn":
        scores = knn_lib.knn_classify(train_x, train_y, test_x, num_classes, k=config.knn.k,
                                      temperature=config.knn.temperature)
        return knn_lib.accuracy_metrics(scores, test_y, num_classes)
    if protocol == "retrieval":
        return knn_lib.retrieval_recall(train_x, train_y, test_x, test_y, ks=tuple(config.retrieval.ks))
    raise ValueError(f"protocol={protocol!r} is invalid; valid values: {', '.join(PROTOCOLS)}")


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
        weight_decay=0.0 if frozen else ft.weight_decay, momentum=0.9, nesterov=True, trust_coefficient=0.001))
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

    The linear classifier of the mean test-view feature equals the mean of the test views' logits.
    """
    import jax

    from stjax import export
    from stjax.eval import features as eval_features
    from stjax.train import loop, setup
    from stjax.train import mesh as mesh_lib
    from stjax.train import workdir as workdir_lib

    os.makedirs(directory, exist_ok=True)
    init_path = os.path.join(directory, "init.npz")
    if os.path.exists(init_path):  # a resumed fine-tune: it must start from these weights too
        _check_same_start(init_path, variables, directory)
    elif jax.process_index() == 0:
        export.save_backbone(variables, spec, "npz", init_path)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"stjax: {init_path} written")
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
    features = eval_features.make_feature_extractor(framework.backbone, c, mesh, eval_per_process)
    test_x, test_y = features(framework.backbone_variables(result.state.params, result.state.batch_stats),
                              c.data.eval_split)
    logits = np.asarray(framework.classify(jax.device_get(result.state.params), test_x))
    metrics = knn_lib.accuracy_metrics(logits, test_y, num_classes)
    return metrics, num_train, len(test_y)


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


def _scalars(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (float, int, np.floating))}


def _trains(config) -> bool:
    """Whether the protocol trains through the generic train loop (fine-tuning, the augmented linear protocol)."""
    return config.protocol == "finetune" or (config.protocol == "linear" and config.linear.augmented)


def validate(config) -> None:
    """The settings `run` checks, all checked before any work (`python -m stjax.main` does, to print them as
    `error: ...`): protocol, init_from and steps, the dataset and folds, test views, and the batch sizes on this
    mesh. ValueError naming the field and the valid values; `config` is left as it was."""
    from stjax import configlib
    from stjax.data import builders
    from stjax.data import config as data_config
    from stjax.train import mesh as mesh_lib
    from stjax.train import workdir as workdir_lib

    configlib.require_choice("protocol", config.protocol, PROTOCOLS)
    resolve_targets(config.init_from, config.steps)
    config = config.copy_and_resolve_references()
    if config.data_from_run and is_run(config.init_from):
        config.data = type(config.data)(workdir_lib.run_config(config.init_from)["data"])
    configlib.require_choice("data.dataset", builders.split_name(config.data.dataset)[0], sorted(builders.BUILDERS))
    folds = fold_datasets(config.data.dataset, config.get("folds", ""))
    data_config.view_spec(config)
    for dataset in [d for _, d in folds] or [config.data.dataset]:  # its splits, frames and source folder
        fold = config.copy_and_resolve_references()
        fold.data.dataset = dataset
        data_config.check_dataset(fold)
    mesh = mesh_lib.create_mesh()
    mesh_lib.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    if _trains(config):
        field = "finetune" if config.protocol == "finetune" else "linear"
        mesh_lib.check_batch_size(config[field].batch_size, mesh, f"{field}.batch_size")


def run(config, workdir: str) -> dict:
    """Evaluates every target of `config.init_from`; returns the results dict (also WORKDIR/results.json)."""
    import jax

    from stjax import configlib
    from stjax.data import builders
    from stjax.train import workdir as workdir_lib

    configlib.require_choice("protocol", config.protocol, PROTOCOLS)
    targets = resolve_targets(config.init_from, config.steps)
    if config.data_from_run and is_run(config.init_from):
        # the clips, crops and test views the run was made for (where its data is now, if it moved)
        config.data = type(config.data)(workdir_lib.run_config(config.init_from)["data"])
    configlib.require_choice("data.dataset", builders.split_name(config.data.dataset)[0], sorted(builders.BUILDERS))
    folds = fold_datasets(config.data.dataset, config.get("folds", ""))
    with workdir_lib.hold(workdir):  # one evaluation per workdir (fine-tuning resumes from its checkpoints)
        if not folds:
            return _evaluate(config, targets, workdir)
        per_fold = {}
        for k, dataset in folds:
            fold_config = config.copy_and_resolve_references()
            fold_config.data.dataset = dataset
            if jax.process_index() == 0:
                print(f"fold {k} of {len(folds)}: {dataset}", flush=True)
            per_fold[k] = _evaluate(fold_config, targets, os.path.join(workdir, f"fold{k}"))
        results = fold_mean(per_fold)
        if jax.process_index() == 0:
            _write_fold_outputs(workdir, results)
        return results


def _evaluate(config, targets: list[Target], workdir: str) -> dict:
    """`run` on one dataset: every target, the protocol, and WORKDIR's results.json / report.md / PNGs."""
    import jax

    from stjax import export
    from stjax.data import builders
    from stjax.data import config as data_config
    from stjax.eval import features as eval_features
    from stjax.eval import report
    from stjax.train import mesh as mesh_lib
    from stjax.train import preemption

    data_config.view_spec(config)
    mesh = mesh_lib.create_mesh()
    eval_per_process = mesh_lib.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    os.makedirs(workdir, exist_ok=True)
    data_config.ensure_built(config)
    builder = builders.load_builder(config.data.dataset, config.data.data_dir)
    class_names = builder.info.features["label"].names
    num_classes = len(class_names)
    if not _trains(config):  # (the train loop of one that trains watches SIGTERM itself, from its start)
        signal_name = preemption.end_start_up()  # a SIGTERM from here on ends the process (status 143)
        if signal_name is not None:
            raise preemption.Preempted(f"stopped on {signal_name} during start-up, before evaluating any "
                                       "checkpoint", checkpoint_saved=False)

    records, last_metrics = [], None
    started = time.time()
    for i, target in enumerate(targets):
        spec, variables = target.load()
        augmented_linear = config.protocol == "linear" and config.linear.augmented
        if config.protocol == "finetune" or augmented_linear:
            directory = os.path.join(workdir, config.protocol, target.name.replace(" ", "_"))
            metrics, num_train, num_test = finetune(spec, variables, config, directory, mesh, num_classes,
                                                    builder.info.splits[config.data.train_split].num_examples,
                                                    frozen=augmented_linear)
        else:
            backbone = export.create_from_spec(spec)
            features = eval_features.make_feature_extractor(backbone, config, mesh, eval_per_process)
            train = features(variables, config.data.train_split)
            test = features(variables, config.data.eval_split)
            metrics = run_protocol(config.protocol, train, test, num_classes, config)
            num_train, num_test = len(train[1]), len(test[1])
        record = {"checkpoint": target.name, "step": target.step, "backbone": spec["backbone"],
                  "num_train": int(num_train), "num_test": int(num_test), **_scalars(metrics)}
        if "per_class_top1" in metrics:
            record["per_class_top1"] = {c: None if math.isnan(a) else round(float(a), 4)
                                        for c, a in zip(class_names, metrics["per_class_top1"])}
        records.append(record)
        last_metrics = metrics
        elapsed = time.time() - started
        if jax.process_index() == 0:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in _scalars(metrics).items())
            print(f"[{i + 1}/{len(targets)}] {target.name}: {shown} "
                  f"({elapsed / (i + 1):.0f} s per checkpoint, ETA {elapsed / (i + 1) * (len(targets) - i - 1):.0f} s)",
                  flush=True)

    results = {"protocol": config.protocol, "dataset": config.data.dataset, "init_from": config.init_from,
               "train_split": config.data.train_split, "eval_split": config.data.eval_split,
               "num_classes": num_classes, "checkpoints": records, "provenance": provenance.describe()}
    if jax.process_index() == 0:
        _write_outputs(workdir, results, last_metrics, class_names, report)
    return results


def _write_outputs(workdir, results, last_metrics, class_names, report) -> None:
    records = results["checkpoints"]
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    metric_names = [k for k in records[0] if isinstance(records[0][k], float)]
    lines = [f"# {results['protocol']} evaluation of {results['init_from']}", "",
             f"Dataset {results['dataset']}: train split `{results['train_split']}` "
             f"({records[0]['num_train']} videos), test split `{results['eval_split']}` "
             f"({records[0]['num_test']} videos), {results['num_classes']} classes.", "",
             "| checkpoint | " + " | ".join(metric_names) + " |",
             "|---|" + "---|" * len(metric_names)]
    lines += ["| " + r["checkpoint"] + " | " + " | ".join(f"{r[m]:.4f}" for m in metric_names) + " |"
              for r in records]
    pngs = []
    if "per_class_top1" in last_metrics:
        report.write_per_class_png(os.path.join(workdir, "per_class.png"), class_names,
                                   last_metrics["per_class_top1"], title=f"{records[-1]['checkpoint']}: top-1 per class")
        pngs.append("per_class.png")
        if len(class_names) <= MAX_CONFUSION_CLASSES:
            report.write_confusion_png(os.path.join(workdir, "confusion.png"), class_names, last_metrics["confusion"],
                                       title=f"{records[-1]['checkpoint']}: confusion (rows: true class)")
            pngs.append("confusion.png")
    stepped = [r for r in records if r["step"] is not None]
    if len(stepped) >= 2:
        report.write_metrics_vs_step_png(os.path.join(workdir, "vs_step.png"),
                                         [r["step"] for r in stepped],
                                         {m: [r[m] for r in stepped] for m in metric_names if m != "train_top1"},
                                         title=f"{results['protocol']} against pretraining step")
        pngs.append("vs_step.png")
    lines += [""] + [f"![{p}]({p})" for p in pngs]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[4:4 + 2 + len(records)]))
    print(f"wrote {os.path.join(workdir, 'results.json')}, report.md" + "".join(f", {p}" for p in pngs))
