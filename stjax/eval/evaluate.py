"""The evaluation job: protocols on frozen features of one or more checkpoints.

    python -m stjax.main --config configs/eval.py:PROTOCOL --config.init_from=RUN_OR_FILE --workdir DIR

`init_from` is a pretraining run's workdir (its checkpoints are chosen with `steps`: last, all, or
N,M,...) or a single exported / PySlowFast / torchvision checkpoint (`python -m stjax.export`).
For every checkpoint the backbone embeds the train and test splits (test views averaged per video),
then the protocol (`stjax.eval.protocols.PROTOCOLS`, one module each) runs on those features, pooled over the
views as its block's `pool` says (mean or max); `finetune` instead trains the whole backbone
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
import sys
import time
from typing import Callable

import numpy as np

from stjax import provenance
from stjax.export import is_run  # a pretraining run's workdir: config.json and checkpoints/
from stjax.eval import protocols as protocols_lib
from stjax.eval.protocols.finetune import finetune, finetune_config  # noqa: F401 (re-exported; their module now)

PROTOCOLS = tuple(protocols_lib.PROTOCOLS)
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


RANDOM_INIT = "random:"  # init_from=random:BACKBONE[:SEED]: that backbone at its random initialisation


def resolve_targets(init_from: str, steps: str) -> list[Target]:
    from stjax import export

    if not init_from:
        raise ValueError("init_from='' is invalid; valid values: a pretraining run's workdir, or a checkpoint file "
                         "or directory written by `python -m stjax.export`, or a PySlowFast / torchvision file, "
                         f"or {RANDOM_INIT}BACKBONE[:SEED] (a random initialisation)")
    if init_from.startswith(RANDOM_INIT):
        return [_random_target(init_from, steps)]
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


def _random_target(init_from: str, steps: str) -> Target:
    """The baseline `random:BACKBONE[:SEED]`: the backbone's variables as `init` makes them (seed 0 default)."""
    from stjax import export, models

    name, _, seed = init_from[len(RANDOM_INIT):].partition(":")
    if name not in models.BACKBONES:
        raise ValueError(f"init_from={init_from!r}: unknown backbone {name!r}; valid values: "
                         f"{', '.join(sorted(models.BACKBONES))}")
    if not seed.isdigit() and seed:
        raise ValueError(f"init_from={init_from!r}: the seed after the backbone must be an integer >= 0")
    if parse_steps(steps) != "last":
        raise ValueError(f"steps={steps!r} needs init_from to be a pretraining run; {init_from} is a random init")

    def load():
        import jax
        import jax.numpy as jnp

        spec = export.backbone_spec(name)
        module = export.create_from_spec(spec)
        variables = jax.jit(lambda key: module.init(key, jnp.zeros((1, 8, 32, 32, 3)), train=False))(
            jax.random.key(int(seed or 0)))
        return spec, jax.device_get(dict(variables))

    return Target("random init", None, load)


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
    """Metrics of `protocol` (a name of a protocol that scores frozen features) on (features, labels) of the
    train and test splits: `stjax.eval.protocols.get(protocol).score`."""
    return protocols_lib.get(protocol).score(train, test, num_classes, config)


def _scalars(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (float, int, np.floating))}


def validate(config) -> None:
    """The settings `run` checks, all checked before any work (`python -m stjax.main` does, to print them as
    `error: ...`): protocol, init_from and steps, the dataset and folds, test views, and the batch sizes on this
    mesh. ValueError naming the field and the valid values; `config` is left as it was."""
    from stjax import configlib
    from stjax.data import builders
    from stjax.data import config as data_config
    from stjax.train import mesh as mesh_lib
    from stjax.train import workdir as workdir_lib

    protocol = protocols_lib.get(config.protocol)
    resolve_targets(config.init_from, config.steps)
    config = config.copy_and_resolve_references()
    if config.data_from_run and is_run(config.init_from):
        run_data = workdir_lib.run_config(config.init_from)["data"]
        ignored = [f"data.{k}={config.data[k]!r} (the run's: {run_data.get(k)!r})"
                   for k in ("train_split", "eval_split") if config.data.get(k) != run_data.get(k)]
        if ignored:
            print(f"warning: data_from_run=True reads the data settings of the run {config.init_from}, so "
                  + ", ".join(ignored) + " is not used; set --config.data_from_run=False to use it",
                  file=sys.stderr, flush=True)
        config.data = type(config.data)(run_data)
    configlib.require_choice("data.dataset", builders.split_name(config.data.dataset)[0], sorted(builders.BUILDERS))
    folds = fold_datasets(config.data.dataset, config.get("folds", ""))
    data_config.view_spec(config)
    protocol.validate(config, builders.label_type(config.data.dataset))
    for dataset in [d for _, d in folds] or [config.data.dataset]:  # its splits, frames and source folder
        fold = config.copy_and_resolve_references()
        fold.data.dataset = dataset
        data_config.check_dataset(fold)
    mesh = mesh_lib.create_mesh()
    mesh_lib.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    if protocol.trains(config):
        field = protocol.block(config)
        mesh_lib.check_batch_size(config[field].batch_size, mesh, f"{field}.batch_size")


def run(config, workdir: str) -> dict:
    """Evaluates every target of `config.init_from`; returns the results dict (also WORKDIR/results.json)."""
    import jax

    from stjax import configlib
    from stjax.data import builders
    from stjax.train import workdir as workdir_lib

    protocols_lib.get(config.protocol)
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
    class_names = builders.class_names(builder)
    num_classes = len(class_names)
    protocol = protocols_lib.get(config.protocol)
    if not protocol.trains(config):  # (the train loop of one that trains watches SIGTERM itself, from its start)
        signal_name = preemption.end_start_up()  # a SIGTERM from here on ends the process (status 143)
        if signal_name is not None:
            raise preemption.Preempted(f"stopped on {signal_name} during start-up, before evaluating any "
                                       "checkpoint", checkpoint_saved=False)

    records, last_metrics = [], None
    started = time.time()
    for i, target in enumerate(targets):
        spec, variables = target.load()
        if protocol.trains(config):
            directory = os.path.join(workdir, config.protocol, target.name.replace(" ", "_"))
            metrics, num_train, num_test = protocol.train_and_score(
                spec, variables, config, directory, mesh, num_classes,
                builder.info.splits[config.data.train_split].num_examples)
        else:
            backbone = export.create_from_spec(spec)
            metrics, num_train, num_test = protocols_lib.evaluate_features(
                protocol, lambda pool: eval_features.make_feature_extractor(backbone, config, mesh, eval_per_process,
                                                                            pool=pool),
                variables, config, num_classes)
        record = {"checkpoint": target.name, "step": target.step, "backbone": spec["backbone"],
                  "num_train": int(num_train), "num_test": int(num_test), **_scalars(metrics)}
        if "counts" in metrics:  # what a protocol scored (detection: keyframes, boxes), beside the metrics
            record["counts"] = {k: int(v) for k, v in metrics["counts"].items()}
        shown = _shown_classes(metrics, len(class_names))  # (detection: the evaluated classes only)
        for key in ("per_class_top1", "per_class_ap"):  # single labels / multi-hot labels; None: no test video
            if key in metrics:                          # (positive) of the class
                record[key] = {class_names[i]: None if math.isnan(metrics[key][i]) else round(float(metrics[key][i]), 4)
                               for i in shown}
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


def _shown_classes(metrics: dict, num_classes: int) -> list[int]:
    """The class ids a protocol scored (`evaluated_classes`, e.g. AVA's 60 of 80), else all."""
    return [int(i) for i in metrics.get("evaluated_classes", range(num_classes))]


def _write_outputs(workdir, results, last_metrics, class_names, report) -> None:
    records = results["checkpoints"]
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    metric_names = [k for k in records[0] if isinstance(records[0][k], float)]
    unit = protocols_lib.get(results["protocol"]).example_unit
    scored = "" if "evaluated_classes" not in last_metrics else f" ({len(last_metrics['evaluated_classes'])} evaluated)"
    lines = [f"# {results['protocol']} evaluation of {results['init_from']}", "",
             f"Dataset {results['dataset']}: train split `{results['train_split']}` "
             f"({records[0]['num_train']} {unit}), test split `{results['eval_split']}` "
             f"({records[0]['num_test']} {unit}), {results['num_classes']} classes{scored}.", "",
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
    elif "per_class_ap" in last_metrics:
        shown = _shown_classes(last_metrics, len(class_names))
        report.write_per_class_png(os.path.join(workdir, "per_class.png"), [class_names[i] for i in shown],
                                   [last_metrics["per_class_ap"][i] for i in shown],
                                   title=f"{records[-1]['checkpoint']}: average precision per class",
                                   xlabel="test AP")
        pngs.append("per_class.png")
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
