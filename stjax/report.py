"""A study's results table: the runs of a sweep (`launch/sweep.py`) as rows × columns, Markdown and PNG.

    python -m stjax.report runs/study                      # rows: the grid's first key; columns: the second
    python -m stjax.report runs/study --metric final_loss --rows rho --cols framework

Reads each run's `summary.json` (written by `python -m stjax.main` when a run finishes), the
results of its evaluations (`RUN/eval/NAME/results.json`, made by `launch/sweep.py --eval`; their
last checkpoint's metrics, named PROTOCOL_METRIC: `linear_top1`, `knn_top1`, `finetune_top1`,
`retrieval_R@1`, with the dataset's name in front when it is not the run's: `ucf101_finetune_top1`, and the
split behind when it is the run's dataset scored on another split: `linear_top1@train[80%:]`;
an evaluation's metric replaces the summary's field of the same name), and the sweep's `sweep.json`
(the grid, for the order of the keys and values; without it, the runs' folder names
`KEY=VALUE,KEY=VALUE` are parsed). A grid with more than two keys gives one table
per combination of the others. Writes STUDY/report.md and STUDY/report.png and prints the Markdown.
Cells of unfinished runs, and of runs whose summary holds None for the metric (linear_top1 of a run
with `final_probe=none`), read "–".
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import sys

def is_accuracy(metric: str) -> bool:
    """Whether `metric` is a share of test videos (top-1/5 accuracy, retrieval recall), shown in %."""
    return without_split(metric).endswith(("top1", "top5")) or "R@" in metric


def without_split(metric: str) -> str:
    """`metric` less the '@SPLIT' an evaluation on another split adds (`linear_top1@train[80%:]` → `linear_top1`;
    `retrieval_R@5` stays)."""
    head, sep, tail = metric.rpartition("@")
    return head if sep and not tail.isdigit() else metric


def collect(study_dir: str) -> tuple[list[tuple[str, list[str]]], list[tuple[dict, dict | None]]]:
    """(grid [(key, [values in order])], runs [(params, summary or None if unfinished)])."""
    sweep_path = os.path.join(study_dir, "sweep.json")
    if os.path.exists(sweep_path):
        with open(sweep_path) as f:
            sweep = json.load(f)
        grid = [(key, list(values)) for key, values in sweep["grid"]]
        entries = [(run["params"], os.path.join(study_dir, run["name"])) for run in sweep["runs"]]
    else:
        entries = []
        for name in sorted(os.listdir(study_dir)):
            params = _parse_run_name(name)
            if params and os.path.isdir(os.path.join(study_dir, name)):
                entries.append((params, os.path.join(study_dir, name)))
        if not entries:
            raise SystemExit(f"{study_dir}: no sweep.json and no run folders named KEY=VALUE,... "
                             "(made by `python launch/sweep.py ... --workdir {study_dir}`)")
        grid = []
        for key in entries[0][0]:
            values = []
            for params, _ in entries:
                if params.get(key) not in values:
                    values.append(params.get(key))
            grid.append((key, _natural_order(values)))
    runs = []
    for params, run_dir in entries:
        path = os.path.join(run_dir, "summary.json")
        summary = None
        if os.path.exists(path):
            with open(path) as f:
                summary = json.load(f)
            evaluated = evaluation_metrics(run_dir, summary.get("dataset"), _run_eval_split(run_dir))
            summary.update({metric: value for metric, (value, _) in evaluated.items()})
            summary[SOURCES] = {metric: source for metric, (_, source) in evaluated.items()}
        runs.append((params, summary))
    return grid, runs


SOURCES = "_evaluated"  # the key under which a run's record names the evaluation each of its metrics comes from


def _run_eval_split(run_dir: str) -> str:
    """The test split of the run in `run_dir` (its config.json's data.eval_split; 'test' without one)."""
    path = os.path.join(run_dir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            return (json.load(f).get("data") or {}).get("eval_split") or "test"
    return "test"


def evaluation_metrics(run_dir: str, run_dataset: str | None,
                       run_eval_split: str = "test") -> dict[str, tuple[float, str]]:
    """{PROTOCOL_METRIC: (value, 'eval/NAME')} from the last checkpoint of each `RUN/eval/NAME/results.json`
    (the fold mean for several folds), the dataset's name in front when it is not the run's dataset, and
    '@SPLIT' behind when it scored the run's dataset on another split than the run's `run_eval_split`
    (`linear_top1@train[80%:]`); where two evaluations give one name, the later folder in sorted order
    wins."""
    metrics = {}
    root = os.path.join(run_dir, "eval")
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    for name in names:
        path = os.path.join(root, name, "results.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            results = json.load(f)
        records = results.get("mean") or results.get("checkpoints")
        dataset = results.get("dataset") or next(iter(results.get("datasets", {}).values()), None)
        if not records or not results.get("protocol"):
            continue
        prefix, suffix = results["protocol"] + "_", ""
        if dataset and run_dataset and dataset.split("/")[0] != run_dataset.split("/")[0]:
            prefix = dataset.split("/")[0] + "_" + prefix
        elif results.get("eval_split") and results["eval_split"] != run_eval_split:
            suffix = "@" + results["eval_split"]
        for key, value in records[-1].items():
            if isinstance(value, (int, float)) and key not in ("step", "num_train", "num_test"):
                metrics[prefix + key + suffix] = (float(value), f"eval/{name}")
    return metrics


def linear_evaluation_command(run_dir: str) -> str:
    """The command that gives the run in `run_dir` the linear protocol, where this report finds its results."""
    return (f"python -m stjax.main --config configs/eval.py:linear[,data=k400_r50] --config.init_from={run_dir} "
            f"--workdir {os.path.join(run_dir, 'eval', 'linear')}")


def headline_metrics(runs) -> list[str]:
    """The metrics a study's tables show by default: linear_top1, then each evaluation's top-1 (R@1 for
    retrieval), in the order the runs' records name them."""
    metrics = ["linear_top1"]
    for _, summary in runs:
        for metric in (summary or {}).get(SOURCES, {}):
            base = without_split(metric)
            if base.endswith(("_top1", "_R@1")) and not base.endswith("train_top1") and metric not in metrics:
                metrics.append(metric)
    return metrics


def _parse_run_name(name: str) -> dict[str, str]:
    params = {}
    for item in name.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key:
            return {}
        params[key] = value
    return params


def _natural_order(values: list[str]) -> list[str]:
    def key(v):
        try:
            return (0, float(v), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(v))
    return sorted(values, key=key)


def format_value(metric: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if is_accuracy(metric):
        return f"{100 * float(value):.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def tables(grid, runs, metric: str, rows: str | None = None, cols: str | None = None):
    """[(title, row_key, row_values, col_key, col_values, {(row, col): value})], one per other-key combination."""
    keys = [key for key, _ in grid]
    values_of = dict(grid)
    for name, key in (("--rows", rows), ("--cols", cols)):
        if key is not None and key not in keys:
            raise SystemExit(f"{name} {key!r} is not a key of the sweep; valid choices: {', '.join(keys)}")
    row_key = rows or (keys[0] if keys else None)
    col_key = cols or next((k for k in keys if k != row_key), None)
    others = [k for k in keys if k not in (row_key, col_key)]
    result = []
    for combo in itertools.product(*(values_of[k] for k in others)):
        fixed = dict(zip(others, combo))
        cells = {}
        for params, summary in runs:
            if any(params.get(k) != v for k, v in fixed.items()):
                continue
            value = None if summary is None else summary.get(metric)
            cells[(params.get(row_key), params.get(col_key))] = value
        title = ", ".join(f"{k}={v}" for k, v in fixed.items())
        result.append((title, row_key, values_of.get(row_key, [None]), col_key, values_of.get(col_key, [None]), cells))
    return result


def _split_words(metric: str) -> str:
    """'split train[80%:]' for `linear_top1@train[80%:]`, 'test split' for a metric without a split."""
    base = without_split(metric)
    return f"split {metric[len(base) + 1:]}" if base != metric else "test split"


def markdown(study_dir: str, grid, runs, metric: str, rows=None, cols=None) -> str:
    finished = [s for _, s in runs if s is not None]
    lines = [f"# {os.path.basename(os.path.abspath(study_dir))}: {metric}", ""]
    lines.append(f"{len(finished)} of {len(runs)} runs finished"
                 + (f" (in %, {_split_words(metric)})" if is_accuracy(metric) else "") + ".")
    lines.append("")
    for title, row_key, row_values, col_key, col_values, cells in tables(grid, runs, metric, rows, cols):
        if title:
            lines += [f"## {title}", ""]
        seeds = col_key == "seed" and len(col_values) > 1  # a mean over the seeds beside them
        header = ([row_key or ""] + [f"{col_key}={c}" if col_key else metric for c in col_values]
                  + ["mean"] * seeds)
        lines.append("| " + " | ".join(header) + " |")
        lines.append("| " + " | ".join(["---"] * len(header)) + " |")
        for r in row_values:
            row = [cells.get((r, c)) for c in col_values]
            done = [float(v) for v in row if v is not None]
            row += [sum(done) / len(done) if len(done) == len(row) else None] * seeds
            lines.append("| " + " | ".join([str(r)] + [format_value(metric, v) for v in row]) + " |")
        lines.append("")
    evaluated = [s[SOURCES][metric] for s in finished if metric in s.get(SOURCES, {})]
    sources = sorted(set(evaluated))
    from_summaries = [s for s in finished if metric not in s.get(SOURCES, {}) and s.get(metric) is not None]
    if sources:
        lines += [f"{metric} of {len(evaluated)} run{'s' if len(evaluated) > 1 else ''} from their evaluation "
                  + " or ".join(f"`{source}`" for source in sources) + " (results.json, last checkpoint)"
                  + (f", of {len(from_summaries)} from summary.json" if from_summaries else "") + ".", ""]
    baselines = []
    for field, name in (("random_init_linear_top1", "the same backbone at random initialisation"),
                        ("chance_top1", "chance")):
        values = [s[field] for s in finished if s.get(field) is not None]
        if values and metric == "linear_top1" and not sources:
            baselines.append(f"{name}: {100 * sum(values) / len(values):.1f}")
    if baselines:
        lines += ["Linear probe of " + "; ".join(baselines) + " (mean over the runs).", ""]
    if finished and all(s.get(metric) is None for s in finished):
        lines += [f"No finished run recorded {metric}"
                  + (" (`final_probe=none`, the default of `k400_r50`): evaluate the runs with `launch/sweep.py "
                     "... --eval configs/eval.py:linear[,data=k400_r50]` (the same sweep command plus --eval), or "
                     f"each with `{linear_evaluation_command('RUN')}`." if metric.startswith("linear") else "."), ""]
    if finished:
        described = {k: v for k, v in finished[0].items() if k in ("backbone", "dataset", "steps", "batch_size")}
        lines.append("Runs: " + ", ".join(f"{k} {v}" for k, v in described.items()) + ".")
        lines.append("")
        lines += _commits_line(finished)
    return "\n".join(lines)


def _commits_line(finished: list[dict]) -> list[str]:
    """A line naming the code commits the runs come from (summary["provenance"]["commit"]); runs from different
    commits can differ by as much as runs of different seeds, so a table that mixes them says so."""
    counts: dict[str, int] = {}
    for s in finished:
        commit = (s.get("provenance") or {}).get("commit") or "unknown"
        counts[commit] = counts.get(commit, 0) + 1
    if list(counts) == ["unknown"]:
        return []
    if len(counts) == 1:
        return [f"Code: commit {next(iter(counts))}.", ""]
    listed = ", ".join(f"{c} ({n} run{'s' if n > 1 else ''})" for c, n in counts.items())
    return [f"**The runs come from {len(counts)} code versions**: {listed}. A change that only reorders float sums "
            "moves a run by about as much as its seed does, so compare cells of one commit.", ""]


def write_png(path: str, grid, runs, metric: str, rows=None, cols=None) -> None:
    """Grouped bars: one group per row value, one bar per column value, a panel per table."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = tables(grid, runs, metric, rows, cols)
    scale = 100.0 if is_accuracy(metric) else 1.0
    fig = Figure(figsize=(max(6.0, 1.6 * len(panels[0][2]) + 2), 3.6 * len(panels)), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(len(panels), 1, squeeze=False)[:, 0])
    finished = [s for _, s in runs if s is not None]
    for ax, (title, row_key, row_values, col_key, col_values, cells) in zip(axes, panels):
        width = 0.8 / max(1, len(col_values))
        for j, c in enumerate(col_values):
            heights = [cells.get((r, c)) for r in row_values]
            xs = np.arange(len(row_values)) + (j - (len(col_values) - 1) / 2) * width
            ys = [np.nan if h is None else scale * float(h) for h in heights]
            bars = ax.bar(xs, ys, width, label=f"{col_key}={c}" if col_key else metric)
            for bar, y in zip(bars, ys):
                if not np.isnan(y):
                    ax.annotate(f"{y:.1f}" if scale == 100 else f"{y:.3g}", (bar.get_x() + bar.get_width() / 2, y),
                                ha="center", va="bottom", fontsize=7)
        if metric == "linear_top1" and not any(metric in s.get(SOURCES, {}) for s in finished):
            for field, style, name in (("random_init_linear_top1", "--", "random init"), ("chance_top1", ":", "chance")):
                values = [s[field] for s in finished if s.get(field) is not None]
                if values:
                    ax.axhline(100 * sum(values) / len(values), color="grey", ls=style, lw=1, label=name)
        ax.set_xticks(np.arange(len(row_values)), [str(r) for r in row_values])
        ax.set_xlabel(row_key or "")
        ax.set_ylabel(metric + (" (%)" if scale == 100 else ""))
        ax.set_title(title or os.path.basename(os.path.dirname(os.path.abspath(path))))
        ax.legend(fontsize=7, ncol=2)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stjax.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", help="the --workdir of launch/sweep.py")
    parser.add_argument("--metric", default="linear_top1",
                        help="a field of the runs' summary.json (linear_top1, linear_top5, final_loss, train_seconds, "
                             "...) or a metric of their evaluations (knn_top1, finetune_top1, retrieval_R@1, ...)")
    parser.add_argument("--rows", default=None, help="the grid key down the side (default: the first)")
    parser.add_argument("--cols", default=None, help="the grid key across (default: the second)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.study_dir):
        raise SystemExit(f"{args.study_dir}: no such folder")
    grid, runs = collect(args.study_dir)
    finished = [s for _, s in runs if s is not None]
    if finished and all(args.metric not in s for s in finished):
        fields = sorted({k for s in finished for k, v in s.items() if isinstance(v, (int, float))})
        raise SystemExit(f"--metric {args.metric!r} is in no summary.json or evaluation; valid choices: {', '.join(fields)}")
    text = markdown(args.study_dir, grid, runs, args.metric, args.rows, args.cols)
    stem = "report" if args.metric == "linear_top1" else "report_" + re.sub(r"[^A-Za-z0-9_@.=-]+", "_", args.metric)
    with open(os.path.join(args.study_dir, stem + ".md"), "w") as f:
        f.write(text)
    write_png(os.path.join(args.study_dir, stem + ".png"), grid, runs, args.metric, args.rows, args.cols)
    print(text)
    print(f"wrote {os.path.join(args.study_dir, stem + '.md')} and {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
