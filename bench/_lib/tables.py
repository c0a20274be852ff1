"""The report's Markdown: the main table (step time, clips/s, FLOP/s, MFU, memory, the PyTorch ratio)
and its notes, the PyTorch table and the profile's kernel tables, from the children's results."""
from __future__ import annotations

import re

from .measure import step_peak_bytes
from .specs import peak_flops


def _fmt(value, spec=".1f", missing="–"):
    return missing if value is None else format(value, spec)


def _slug(name: str) -> str:
    """A variant's name as a directory name: letters, digits, '-', '_' and '.' kept, the rest '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "variant"


def _variant_cell(r: dict, named: bool) -> str:
    return f"| {r.get('variant', 'default')} " if named else ""


def _table_head(columns: str, named: bool) -> list[str]:
    """A Markdown table's header and rule for "| a | b |", with a variant column first if `named`."""
    columns = ("| variant " if named else "") + columns
    return [columns, "| --- " * columns.count("|", 1) + "|"]


FRESH_MARK, BEFORE_STEPS_MARK = " (†)", " (‡)"


def step_memory(r: dict) -> tuple[int | None, str]:
    """(bytes, mark) for the peak-memory column: the allocator's peak if a step reached it; else the peak
    of a fresh process that loaded the compiled step from the cache (†); else the allocator's peak,
    reached before the first step (‡); on a CPU, XLA's compiled estimate."""
    own = step_peak_bytes(r)
    if own is not None:
        return own, ""
    fresh = step_peak_bytes(r.get("fresh_process_memory") or {})
    if fresh is not None:
        return fresh, FRESH_MARK
    if r.get("peak_bytes") is not None:
        return r["peak_bytes"], BEFORE_STEPS_MARK
    return r.get("compiled_bytes"), ""


def summarize(stjax_rows: list[dict], torch_rows: dict, peak_override: float | None,
              named: bool = False) -> tuple[list[str], list[dict]]:
    """Markdown lines of the main table (with a variant column if `named`), and the rows as dicts."""
    lines = _table_head("| dtype | remat | step ms | clips/s | TFLOP/s/device | MFU | HFU | peak GiB | compile s | "
                        "PyTorch clips/s | stjax / PyTorch |", named)
    rows = []
    for r in stjax_rows:
        if "error" in r:
            lines.append(f"{_variant_cell(r, named)}| {r['dtype']} | {'on' if r['remat'] else 'off'} | {r['error']} "
                         "| | | | | | | | |")
            rows.append(r)
            continue
        clips = r["batch"] * r["rho"] / r["step_s"]
        peak = peak_flops(r["device_kind"], r["dtype"], peak_override)
        achieved = r["hardware_flops"] / r["step_s"] if r["hardware_flops"] else None
        mfu = r["model_flops"] / r["step_s"] / peak if (peak and r["model_flops"]) else None
        hfu = achieved / peak if (peak and achieved) else None
        memory, mark = step_memory(r)
        reference = torch_rows.get(r["dtype"])
        torch_clips = ratio = None
        if reference and reference.get("best") and not r["remat"]:
            best = reference["modes"][reference["best"]]
            torch_clips = reference["batch_per_device"] * reference["rho"] / best["step_s"] * r["devices"]
            ratio = clips / torch_clips
        row = dict(r, clips_per_s=clips, achieved_flops=achieved, mfu=mfu, hfu=hfu, peak=peak,
                   torch_clips_per_s=torch_clips, ratio=ratio)
        rows.append(row)
        lines.append(
            f"{_variant_cell(r, named)}| {r['dtype']} | {'on' if r['remat'] else 'off'} | {r['step_s'] * 1e3:.1f} | "
            f"{clips:.1f} | "
            f"{_fmt(achieved and achieved / 1e12, '.3g')} | {_fmt(mfu and 100 * mfu, '.1f')}{'%' if mfu else ''} | "
            f"{_fmt(hfu and 100 * hfu, '.1f')}{'%' if hfu else ''} | {_fmt(memory and memory / 2**30, '.2f')}{mark} | "
            f"{r['compile_s']:.0f} | {_fmt(torch_clips)} | {_fmt(ratio, '.2f')}{'×' if ratio else ''} |")
    return lines, rows


def torch_lines(torch_rows: dict) -> list[str]:
    lines = ["| dtype | mode | step ms | clips/s | peak GiB | warm-up s | backbone params |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for dtype, r in torch_rows.items():
        if "error" in r:
            lines.append(f"| {dtype} | {r['error']} | | | | | |")
            continue
        for mode, m in r["modes"].items():
            if "error" in m:
                lines.append(f"| {dtype} | {mode} | {m['error']} | | | | |")
                continue
            clips = r["batch_per_device"] * r["rho"] / m["step_s"]
            lines.append(f"| {dtype} | {mode}{' (best)' if mode == r['best'] else ''} | {m['step_s'] * 1e3:.1f} | "
                         f"{clips:.1f} | {_fmt(m['peak_bytes'] and m['peak_bytes'] / 2**30, '.2f')} | "
                         f"{m['warmup_s']:.0f} | {m['parameters']:,} |")
    return lines


def table_notes(rows: list[dict], torch_rows: dict, found: dict, on_cpu: bool) -> list[str]:
    """The notes under the main table: definitions, the peak used, FLOPs per clip, parameter counts."""
    peaks = sorted({f"{r['dtype']}: {r['peak'] / 1e12:.1f} TFLOP/s" for r in rows if r.get("peak")})
    notes = [
        "MFU: model FLOPs (XLA's count of the step without remat) / step time / peak; HFU: XLA's count of the "
        "step with remat's recomputation / step time / peak. FLOPs counted by XLA:CPU on one device's share "
        "of the batch (XLA:GPU's count leaves out cuDNN convolutions).",
        "peak used: " + ("; ".join(peaks) if peaks else f"none known for {found['device_kind']} (--peak_tflops)"),
    ]
    flops = next((r for r in rows if r.get("model_flops")), None)
    if flops:
        notes.append(f"model FLOPs per step and device: {flops['model_flops'] / 1e12:.3g} TFLOP "
                     f"({flops['model_flops'] / (flops['batch'] / flops['devices'] * flops['rho']) / 1e9:.1f} "
                     f"GFLOP per clip: online forward + backward, target forward)")
    counts = {r["parameters"] for r in rows if r.get("parameters")}
    counts |= {m["parameters"] for r in torch_rows.values() for m in r.get("modes", {}).values() if "parameters" in m}
    if counts:
        notes.append("backbone parameters: " + ("stjax and PyTorch both " if len(counts) == 1 and torch_rows else "")
                     + ", ".join(f"{c:,}" for c in sorted(counts)))
    if on_cpu:
        notes.append("peak GiB on a CPU: XLA's compiled memory estimate, not a measured peak.")
    marks = {step_memory(r)[1] for r in rows if "error" not in r}
    if FRESH_MARK in marks:
        notes.append("peak GiB (†): the allocator's peak was reached while compiling (autotuning), before the "
                     "first step; this is the peak of 2 steps in a fresh process that loaded the compiled step "
                     "from the compilation cache, so nothing was autotuned there.")
    if BEFORE_STEPS_MARK in marks:
        notes.append("peak GiB (‡): reached before the first step (while compiling), also in a fresh process; "
                     "the step's own peak is at most this.")
    return notes


def top_kernel_lines(rows: list[dict], named: bool = False) -> list[str]:
    """Markdown table per profiled setting of the kinds of kernel that take the most device time."""
    lines = []
    for r in rows:
        variant = f"{r.get('variant', 'default')}, " if named else ""
        lines += ["", f"Top kernels, {variant}{r['dtype']}, remat {'on' if r['remat'] else 'off'}:", "",
                  "| kernel | ms/step | launches/step |", "| --- | --- | --- |"]
        lines += [f"| `{name}` | {ms:.2f} | {count:.0f} |" for name, ms, count in r["kernel_time"].get("top", [])]
        if r["kernel_time"].get("ops"):
            lines += ["", f"Top jax operations, {variant}{r['dtype']}, remat {'on' if r['remat'] else 'off'}:", "",
                      "| operation | ms/step | launches/step |", "| --- | --- | --- |"]
            lines += [f"| `{name}` | {ms:.2f} | {count:.0f} |" for name, ms, count in r["kernel_time"]["ops"]]
    return lines


def kernel_lines(rows: list[dict], named: bool = False) -> list[str]:
    """Markdown table of `kernel_time` per profiled setting: where the device's time goes."""
    lines = _table_head("| dtype | remat | busy ms | conv + matmul ms | their TFLOP/s | other kernels ms | "
                        "other share | launches |", named)
    for r in rows:
        k = r["kernel_time"]
        rate = r["hardware_flops"] / (k["matmul"] / 1e3) / 1e12 if (r.get("hardware_flops") and k["matmul"]) else None
        lines.append(f"{_variant_cell(r, named)}| {r['dtype']} | {'on' if r['remat'] else 'off'} | {k['busy']:.1f} | "
                     f"{k['matmul']:.1f} | "
                     f"{_fmt(rate, '.0f')} | {k['other']:.1f} | {100 * k['other'] / k['busy']:.0f}% | "
                     f"{k['launches']:.0f} |")
    return lines
