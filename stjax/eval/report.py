"""What a person looks at: a report PNG and small text / markdown tables.

Uses matplotlib's object-oriented API with the Agg canvas directly (no pyplot, no global
backend switch), so it is safe to call from any process, headless or not.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average over what exists so far)."""
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def write_report_png(path, loss_history: Sequence[tuple[int, float]],
                     probe_results: Mapping[str, Mapping[str, Any]], title: str = "") -> None:
    """Writes a two-panel PNG report to `path`.

    Left: pretraining loss vs step (log-y if every finite loss is positive), plus a
    moving-average line when there are enough points. Non-finite losses are left out.
    Right: a bar chart of test top-1 for each entry of `probe_results`
    (e.g. {'pretrained': {...}, 'random init': {...}, 'chance': {'top1': 0.1}}), in the
    given order, with the values printed on the bars (in percent). An entry named
    'chance' (case-insensitive) is drawn in grey.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    history = list(loss_history)
    for i, item in enumerate(history):
        if len(item) != 2:
            raise ValueError(f"loss_history[{i}] must be a (step, loss) pair, got {item!r}")
    bars = []
    for name, result in probe_results.items():
        if not isinstance(result, Mapping) or "top1" not in result:
            raise ValueError(f"probe_results[{name!r}] must be a dict with a 'top1' entry")
        bars.append((str(name), float(result["top1"])))

    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})

    # --- left: pretraining loss
    steps = np.array([float(s) for s, _ in history], np.float64)
    losses = np.array([float(v) for _, v in history], np.float64)
    keep = np.isfinite(steps) & np.isfinite(losses)
    steps, losses = steps[keep], losses[keep]
    if len(losses):
        order = np.argsort(steps, kind="stable")
        steps, losses = steps[order], losses[order]
        raw_alpha = 0.35 if len(losses) >= 20 else 1.0
        ax_loss.plot(steps, losses, color="tab:blue", alpha=raw_alpha, lw=1,
                     marker="o" if len(losses) < 20 else None, ms=3, label="loss")
        if len(losses) >= 20:
            window = max(2, len(losses) // 20)
            ax_loss.plot(steps, _smooth(losses, window), color="tab:blue", lw=2,
                         label=f"moving avg ({window})")
            ax_loss.legend(loc="upper right", fontsize=8)
        if np.all(losses > 0):
            ax_loss.set_yscale("log")
        if (~keep).any():
            ax_loss.text(0.01, 0.01, f"{int((~keep).sum())} non-finite point(s) not shown",
                         transform=ax_loss.transAxes, fontsize=8, color="tab:red")
    else:
        ax_loss.text(0.5, 0.5, "no loss recorded", ha="center", va="center",
                     transform=ax_loss.transAxes, color="grey")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("pretraining loss")
    ax_loss.set_title("pretraining loss")
    ax_loss.grid(True, which="both", alpha=0.3)

    # --- right: probe top-1
    if bars:
        names = [b[0] for b in bars]
        values = [b[1] for b in bars]
        palette = ["tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:cyan"]
        colors, k = [], 0
        for name in names:
            if name.strip().lower() == "chance":
                colors.append("lightgrey")
            else:
                colors.append(palette[k % len(palette)])
                k += 1
        x = np.arange(len(bars))
        heights = [v if math.isfinite(v) else 0.0 for v in values]
        rects = ax_bar.bar(x, heights, color=colors, edgecolor="black", linewidth=0.5)
        for rect, v in zip(rects, values):
            label = f"{100 * v:.1f}%" if math.isfinite(v) else "n/a"
            ax_bar.text(rect.get_x() + rect.get_width() / 2, rect.get_height() + 0.015, label,
                        ha="center", va="bottom", fontsize=9)
        ax_bar.set_xticks(x)
        ax_bar.set_xticklabels(names, rotation=15 if len(names) > 3 else 0, fontsize=9)
        ax_bar.set_ylim(0, max(1.0, max(heights) + 0.1))
    else:
        ax_bar.text(0.5, 0.5, "no probe results", ha="center", va="center",
                    transform=ax_bar.transAxes, color="grey")
    ax_bar.set_ylabel("test top-1")
    ax_bar.set_title("linear probe")
    ax_bar.grid(True, axis="y", alpha=0.3)

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, format="png")


def format_summary_table(rows: Sequence[tuple[str, str]]) -> str:
    """A small aligned two-column text table for the terminal, e.g.

        pretrained top-1 | 0.853
        chance           | 0.100
    """
    rows = [(str(k), str(v)) for k, v in rows]
    if not rows:
        return ""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)} | {v}" for k, v in rows)


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        text = f"{float(value):.4g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def write_markdown_table(path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Writes a GitHub-flavoured markdown table (floats as 4 significant digits)."""
    header = list(header)
    if not header:
        raise ValueError("header must have at least one column")
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"rows[{i}] has {len(row)} cells but header has {len(header)}")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> None:
    fig.tight_layout()
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, format="png")


def write_per_class_png(path, class_names: Sequence[str], accuracy: Sequence[float], title: str = "",
                        xlabel: str = "test top-1") -> None:
    """Horizontal bars of a per-class metric in [0, 1] (NaN: no test video, or no positive, of the class, shown
    as n/a), sorted best first."""
    values = np.asarray(accuracy, np.float64)
    order = np.argsort(np.where(np.isnan(values), -1.0, -values), kind="stable")
    fig = _figure(7, max(2.5, 0.22 * len(values) + 1))
    ax = fig.subplots()
    y = np.arange(len(values))
    ax.barh(y, np.nan_to_num(values[order]), color="tab:green", edgecolor="black", linewidth=0.4)
    ax.set_yticks(y)
    ax.set_yticklabels([f"{class_names[i]} (n/a)" if np.isnan(values[i]) else class_names[i] for i in order],
                       fontsize=7 if len(values) > 30 else 9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title)
    _save(fig, path)


def write_confusion_png(path, class_names: Sequence[str], confusion, title: str = "") -> None:
    """The confusion matrix (rows: true class, columns: predicted), each row normalised to sum 1."""
    counts = np.asarray(confusion, np.float64)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig = _figure(min(14, 2.5 + 0.35 * n), min(13, 2 + 0.35 * n))
    ax = fig.subplots()
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if n <= 40:
        ax.set_xticks(range(n))
        ax.set_xticklabels(class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n))
        ax.set_yticklabels(class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    _save(fig, path)


def write_metrics_vs_step_png(path, steps: Sequence[int], metrics: Mapping[str, Sequence[float]],
                              title: str = "") -> None:
    """One line per metric against the pretraining step."""
    fig = _figure(7, 4)
    ax = fig.subplots()
    for name, values in metrics.items():
        ax.plot(list(steps), list(values), marker="o", label=name)
    ax.set_xlabel("pretraining step")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    _save(fig, path)
