"""Speed, FLOP/s, MFU and memory of one training step, against the same step in PyTorch.

    python bench/train_step.py                         # on a GPU/TPU: Slow R-50 8×8, 224², ρBYOL, ρ=2
    python bench/train_step.py --rhos 2,4 --max_batch  # also the largest batch that fits, per ρ
    python bench/train_step.py --backbone r3d_tiny --crop 64 --batch_per_device 4   # the CPU default
    python bench/train_step.py --lowering conv2d_concat --overrides '{"batch_norm": "flax"}'  # other implementations
    python bench/train_step.py --dtypes bfloat16 --remat off --variants '[{"name": "lars"},
        {"name": "sgd", "config": {"optimizer.name": "sgd"}},
        {"name": "flax BN", "overrides": {"batch_norm": "flax"}},
        {"name": "no triton gemm", "xla_flags": "--xla_gpu_enable_triton_gemm=false"}]'  # rows side by side

For each compute dtype × rematerialisation setting it compiles `stjax.train.step.train_step` (the
very step the training loop runs, with the framework's optimiser from configs/pretrain.py:k400_r50)
on a mesh over all local devices and times it on a synthetic uint8 batch already on the devices
(no input pipeline, no TensorFlow). Every measurement runs in its own process, so the peak-memory
counter and an out-of-memory failure belong to that measurement alone. Printed per setting:

  step ms      median over --rounds rounds of the mean of --steps back-to-back steps
  clips/s      B·ρ clips per step / step time (B = videos per step, all devices)
  TFLOP/s      per device: hardware FLOPs (XLA's cost analysis of the step's program at one
               device's shapes, counting rematerialised recomputation) / step time
  MFU          model FLOPs (the same count for the step without rematerialisation) / step time /
               the device's peak; the peak used is printed (bf16 dense tensor-core peak; float32
               uses the TF32 peak on NVIDIA GPUs, the precision XLA computes float32 convolutions
               and matmuls in by default)
  peak GiB     the device allocator's peak bytes in use (GPU/TPU) reached by the steps. Where it
               was reached before the first step (autotuning float32 convolutions while compiling
               can take more than the step), 2 steps run again in a fresh process that loads the
               compiled step from a compilation cache the timing filled, and that peak is shown
               (marked †). On a CPU: XLA's compiled memory estimate (arguments + outputs + temporaries)

The FLOPs are counted by XLA's CPU backend in a separate process, on the step lowered for one CPU
device with one accelerator's share of the batch: XLA:GPU's cost analysis of the compiled step does
not count the convolutions it hands to cuDNN as custom calls (it reported 70 GFLOP for a Slow R-50
step of 5.2 TFLOP on an H100), so the accelerator's own count would overstate nothing and
understate almost everything.

The PyTorch column (`bench/torch_reference.py`) times the same ρBYOL step of the same network in
PyTorch (bf16 autocast, channels-last-3d, cuDNN benchmark mode, eager and torch.compile, the
faster reported) and prints stjax's clips/s over it. torch comes from the `torch` extra; without
it the column says so and is skipped.

--variants measures the table once per variant, in one run: a JSON list (or @FILE holding one) of
objects with a "name" and any of "config" (config fields by dotted name, e.g. {"optimizer.name":
"sgd"}), "overrides" (backbone fields, over --overrides) and "xla_flags" (added to XLA_FLAGS of
that variant's process). The FLOPs are counted per variant (xla_flags aside), since a variant may
change the network.

With --max_batch the largest per-device batch (videos) that trains for each ρ in --rhos is found,
starting at --batch_per_device: a line through XLA's memory figures of the batches tried so far
predicts where the device's memory runs out, and the prediction is confirmed by training it and
failing one more (XLA_PYTHON_CLIENT_MEM_FRACTION=--mem_fraction; see bench/_lib/batch_search.py).
Each try compiles the step anew, so a start near the answer saves time.

Results go to stdout as tables, and with --out to OUT.md and OUT.json.

This file is the CLI: its arguments and the order of the measurements. What each measurement does is in
bench/_lib/ (its __init__.py says which module does what), each run in a child process of this script
(--child KIND).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._lib import ROOT  # noqa: E402
from bench._lib.children import child_main, run_child  # noqa: E402
from bench._lib.measure import _flops, _stjax_setup, step_peak_bytes  # noqa: E402,F401
from bench._lib.profile import PROFILED_STEPS  # noqa: E402
from bench._lib.specs import check_variant_config, parse_variants  # noqa: E402
from bench._lib.tables import (_fmt, _slug, kernel_lines, summarize, table_notes,  # noqa: E402
                               top_kernel_lines, torch_lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=None, help="default: slow_r50 on an accelerator, r3d_tiny on a CPU")
    parser.add_argument("--framework", default="byol", help="byol|moco|simclr|swav (the PyTorch column: byol)")
    parser.add_argument("--rhos", default="2", help="comma list; the table is measured for the first")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--crop", type=int, default=None, help="default: 224 on an accelerator, 64 on a CPU")
    parser.add_argument("--batch_per_device", type=int, default=None,
                        help="videos per device per step (default: 8 on an accelerator, 2 on a CPU)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="of the table; none: no table")
    parser.add_argument("--remat", default="off,on", help="comma list of off|on")
    parser.add_argument("--lowering", default="auto", help="Conv3D lowering: auto|native|conv2d_sum|conv2d_concat|"
                                                            "conv2d_time")
    parser.add_argument("--overrides", default=None,
                        help='backbone fields as JSON, e.g. \'{"batch_norm": "flax", "pool": "reduce_window"}\' '
                             "(config.model.overrides)")
    parser.add_argument("--variants", default=None,
                        help='measure the table per variant: JSON list (or @FILE) of {"name", "config": '
                             '{"a.b": value}, "overrides": {...}, "xla_flags": "..."}')
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--torch", default="auto", choices=("auto", "off"), help="the PyTorch column")
    parser.add_argument("--torch_compile", default="both", choices=("off", "on", "both"))
    parser.add_argument("--torch_dtypes", default="bfloat16", help="dtypes of the PyTorch column")
    parser.add_argument("--max_batch", action="store_true", help="find the largest per-device batch per ρ")
    parser.add_argument("--max_batch_dtype", default="bfloat16")
    parser.add_argument("--max_batch_limit", type=int, default=512)
    parser.add_argument("--mem_fraction", default="0.95", help="XLA_PYTHON_CLIENT_MEM_FRACTION for --max_batch")
    parser.add_argument("--peak_tflops", type=float, default=None, help="override the device's peak (TFLOP/s)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    parser.add_argument("--profile", default=None,
                        help="also trace 3 steps of every setting with jax.profiler into PROFILE/<setting> "
                             "(open with TensorBoard's profile plugin or XProf)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.spec)
        return 0

    sys.path.insert(0, str(ROOT))
    from stjax import provenance
    from stjax.models import LOWERINGS

    try:
        variants = parse_variants(args.variants)
    except ValueError as error:
        parser.error(str(error))

    found = run_child("probe", {}, timeout=args.timeout)
    if "error" in found:
        print(f"could not start jax: {found['error']}", file=sys.stderr)
        return 1
    platform_name = found["platform"]
    on_cpu = platform_name == "cpu"
    table_dtypes = [] if args.dtypes == "none" else args.dtypes.split(",")
    for name, value in (("dtypes", ",".join(table_dtypes)), ("torch_dtypes", args.torch_dtypes)):
        bad = [d for d in value.split(",") if d and d not in ("float32", "bfloat16")]
        if bad:
            parser.error(f"--{name}: {bad[0]!r} is not a dtype; valid choices: float32, bfloat16")
    if args.lowering not in LOWERINGS:
        parser.error(f"--lowering={args.lowering!r}; valid choices: {', '.join(LOWERINGS)}")
    try:
        overrides = json.loads(args.overrides) if args.overrides else {}
    except json.JSONDecodeError as error:
        parser.error(f"--overrides is not JSON: {error}")
    if not isinstance(overrides, dict):
        parser.error("--overrides must be a JSON object of backbone fields")
    remats = [{"off": False, "on": True}.get(v) for v in args.remat.split(",")]
    if None in remats:
        parser.error(f"--remat={args.remat!r}; valid choices: a comma list of off, on")
    rhos = [int(v) for v in args.rhos.split(",")]
    base = dict(backbone=args.backbone or ("r3d_tiny" if on_cpu else "slow_r50"), framework=args.framework,
                rho=rhos[0], frames=args.frames, crop=args.crop or (64 if on_cpu else 224),
                batch_per_device=args.batch_per_device or (2 if on_cpu else 8), lowering=args.lowering,
                steps=args.steps, rounds=args.rounds, warmup=args.warmup, torch_compile=args.torch_compile,
                max_batch_limit=args.max_batch_limit, overrides=overrides)
    for variant in variants:
        try:
            check_variant_config(base, variant, found["count"])
        except ValueError as error:
            parser.error(str(error))
    named = args.variants is not None  # rows carry the variant's name
    header = [
        f"date: {datetime.date.today().isoformat()}; device: {found['device_kind']} × {found['count']} "
        f"({platform_name}); host: {platform.node()} ({os.cpu_count()} cores)",
        "code: " + provenance.one_line(provenance.describe(("jax", "jaxlib", "flax", "optax", "torch"))),
        f"step: {base['framework']} on {base['backbone']}, ρ={base['rho']}, {base['frames']}×{base['crop']}², "
        f"{base['batch_per_device']} videos/device, Conv3D lowering {args.lowering}"
        f"{', backbone overrides ' + json.dumps(overrides) if overrides else ''}"
        f"{'; variants ' + ', '.join(v['name'] for v in variants) if named else ''}; "
        f"command: python bench/train_step.py {' '.join(argv if argv is not None else sys.argv[1:])}",
    ]
    print("\n".join(header), flush=True)

    stjax_rows: list[dict] = []
    torch_rows: dict = {}
    max_rows: list[dict] = []
    notes_extra: list[str] = []

    def report() -> tuple[list[str], list[dict]]:
        """The whole report as Markdown lines, from what has been measured so far, and the table's rows."""
        lines, rows = summarize(stjax_rows, torch_rows, args.peak_tflops, named)
        text = header + ["", *lines, "", *("- " + n for n in table_notes(rows, torch_rows, found, on_cpu))]
        profiled = [r for r in rows if r.get("kernel_time")]
        if profiled:
            text += ["", f"Device time per step by kernel kind (jax.profiler trace of {PROFILED_STEPS} steps; "
                         "traces in " + str(args.profile) + "):", "", *kernel_lines(profiled, named),
                     *top_kernel_lines(profiled, named)]
        if torch_rows:
            text += ["", "PyTorch reference (bench/torch_reference.py):", "", *torch_lines(torch_rows)]
        text += ["", *notes_extra] if notes_extra else []
        if args.max_batch:
            text += ["", f"Largest batch that trains ({args.max_batch_dtype}, no remat, "
                         f"XLA_PYTHON_CLIENT_MEM_FRACTION={args.mem_fraction}):", "",
                     "| ρ | videos/device | clips/device | first failing | note |", "| --- | --- | --- | --- | --- |"]
            for r in max_rows:
                best = r.get("max_batch_per_device")
                bound = "≥ " if ("error" in r and best) else ""
                text.append(f"| {r['rho']} | {bound}{_fmt(best, 'd')} | {bound}{_fmt(best and best * r['rho'], 'd')} | "
                            f"{_fmt(r.get('first_failing'), 'd', 'none up to the limit')} | {r.get('error', '')} |")
        return text, rows

    def save() -> None:
        """Rewrites OUT.md and OUT.json after every measurement, so a run cut short keeps what it measured."""
        if not args.out:
            return
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        text, rows = report()
        out.with_suffix(".md").write_text("\n".join(text) + "\n")
        out.with_suffix(".json").write_text(json.dumps(
            dict(header=header, stjax=rows, torch=torch_rows, max_batch=max_rows), indent=2, default=str) + "\n")

    counts: dict[str, dict] = {}
    # filled by each timing process, read by its memory process; removed after the table (or at exit)
    cache_directory = tempfile.TemporaryDirectory(prefix="stjax_bench_compilation_cache_")
    cache = cache_directory.name
    for dtype in table_dtypes:
        for variant in variants:
            spec = dict(base, dtype=dtype, variant=variant["name"], config=variant["config"],
                        overrides={**overrides, **variant["overrides"]})
            label = f"{dtype}{', ' + variant['name'] if named else ''}"
            key = json.dumps([dtype, spec["config"], spec["overrides"]], sort_keys=True)
            if key not in counts:  # XLA flags of the accelerator do not change the count
                print(f"FLOPs of the {label} step (XLA:CPU cost analysis) ...", flush=True)
                counts[key] = run_child("flops", dict(spec, remat=False), timeout=args.timeout)
                if "error" in counts[key]:
                    print(f"  → not counted ({counts[key]['error']})", flush=True)
            counted = counts[key]
            env = ({"XLA_FLAGS": " ".join(filter(None, (os.environ.get("XLA_FLAGS", ""), variant["xla_flags"])))}
                   if variant["xla_flags"] else None)
            for remat in remats:
                name = f"{dtype}_remat-{'on' if remat else 'off'}" + (f"_{_slug(variant['name'])}" if named else "")
                print(f"stjax {label}, remat {'on' if remat else 'off'} ...", flush=True)
                profile = str(Path(args.profile).resolve() / name) if args.profile else None
                result = run_child("stjax", dict(spec, remat=remat, profile=profile, compilation_cache=cache),
                                   env=env, timeout=args.timeout)
                if "error" not in result and result.get("peak_bytes") is not None and step_peak_bytes(result) is None:
                    print("  the allocator's peak was reached before the first step; the step's own peak, "
                          "in a fresh process ...", flush=True)
                    result["fresh_process_memory"] = run_child(
                        "memory", dict(spec, remat=remat, compilation_cache=cache), env=env, timeout=args.timeout)
                print(f"  → {_fmt(result.get('step_s') and result['step_s'] * 1e3)} ms/step"
                      + (f" ({result['error']})" if "error" in result else ""), flush=True)
                result.update(model_flops=counted.get("model_flops"), xla_flags=variant["xla_flags"],
                              hardware_flops=counted.get("remat_flops" if remat else "model_flops"))
                stjax_rows.append(result)
                save()

    cache_directory.cleanup()

    if args.torch == "off":
        notes_extra.append("PyTorch column: off (--torch off)")
    elif args.framework != "byol":
        notes_extra.append("PyTorch column: skipped (the reference implements ρBYOL only)")
    elif importlib.util.find_spec("torch") is None:
        notes_extra.append("PyTorch column: skipped, torch is not installed (pip install -e '.[torch]')")
    else:
        for dtype in args.torch_dtypes.split(","):
            print(f"PyTorch {dtype} ...", flush=True)
            torch_rows[dtype] = run_child("torch", dict(base, dtype=dtype), timeout=args.timeout)
            save()

    if args.max_batch:
        for rho in rhos:
            print(f"largest batch, ρ={rho} ...", flush=True)
            max_rows.append(run_child("max_batch", dict(base, rho=rho, dtype=args.max_batch_dtype, remat=False),
                                      env={"XLA_PYTHON_CLIENT_MEM_FRACTION": args.mem_fraction},
                                      timeout=args.timeout))
            save()
    print("\n" + "\n".join(report()[0]), flush=True)
    if args.out:
        print(f"wrote {Path(args.out).with_suffix('.md')} and {Path(args.out).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
