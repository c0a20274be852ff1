"""The training step as XLA compiles it, on a CPU: its FLOPs and where its reductions come from.

    python bench/step_program.py                   # Slow R-50 8×8, 224², ρBYOL, ρ=2, 8 videos, bf16
    python bench/step_program.py --remat on --overrides '{"remat_policy": "conv_outputs"}'
    python bench/step_program.py --backbone r3d_micro --crop 32 --frames 4 --batch_per_device 1 --dtype float32

Lowers the step bench/train_step.py times (`stjax.train.step.train_step`, the framework's optimiser
from configs/pretrain.py:k400_r50) for one CPU device with one accelerator's share of the batch,
compiles it with XLA:CPU and prints, as Markdown:

  - FLOPs: XLA's cost analysis of the step (the count bench/train_step.py's MFU uses);
  - reductions: the `reduce` instructions of the optimised program, grouped by origin: the
    innermost Python function and line that made them, and the layer path with block numbers
    folded (res4_3/bn_b → res#/bn_b). On a GPU each is a kernel or part of one, so this shows,
    without a GPU, what the "input_reduce_fusion" launches of a profile are made of.

No accelerator is used and none is needed; XLA:CPU's fusion differs from XLA:GPU's, so the counts
are of the program's reductions, not of GPU kernels.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REDUCE = re.compile(r"= \S+ reduce\([^\n]*?op_name=\"([^\"]*)\"(?:[^\n]*?stack_frame_id=(\d+))?")
LAYER_NUMBER = re.compile(r"(?<=[a-z])\d+(_\d+)?(?=/|$)")


def _table(text: str, section: str, following: str) -> dict[int, str]:
    """{id: entry} of one of the source-location sections of an HLO module's text ({} if absent)."""
    match = re.search(rf"^{section}\n(.*?)^{following}\n", text, re.S | re.M)
    return {int(i): entry for i, entry in re.findall(r"^\s*(\d+)\s+(.+)$", match.group(1), re.M)} if match else {}


def source_locations(hlo_text: str) -> dict[int, str]:
    """{stack_frame_id: "file.py:line function"} of the innermost frame, from the module's tables."""
    files = _table(hlo_text, "FileNames", "FunctionNames")
    functions = _table(hlo_text, "FunctionNames", "FileLocations")
    locations = _table(hlo_text, "FileLocations", "StackFrames")
    frames = _table(hlo_text, "StackFrames", "")
    found = {}
    for frame, entry in frames.items():
        location = locations.get(int(re.search(r"file_location_id=(\d+)", entry).group(1)), "")
        fields = dict(re.findall(r"(\w+)=(\d+)", location))
        if fields:
            name = Path(files.get(int(fields["file_name_id"]), "?").strip('"')).name
            function = functions.get(int(fields["function_name_id"]), "?").strip('"')
            found[frame] = f"{name}:{fields['line']} {function}"
    return found


def reductions_by_origin(hlo_text: str) -> collections.Counter:
    """Counter of (origin, layer path) over the reduce instructions of an optimised HLO module."""
    sources = source_locations(hlo_text)
    counted = collections.Counter()
    for op_name, frame in REDUCE.findall(hlo_text):
        path = "/".join(p for p in op_name.split("/") if not p.startswith(("jit(", "jvp(", "transpose(")))
        backward = "transpose(" in op_name
        layers = LAYER_NUMBER.sub("#", path.rsplit("/", 1)[0]) if "/" in path else ""
        origin = sources.get(int(frame), "?") if frame else "?"
        counted[(origin, f"{layers}{' (backward)' if backward else ''}")] += 1
    return counted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="slow_r50")
    parser.add_argument("--framework", default="byol")
    parser.add_argument("--rho", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch_per_device", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--remat", default="off", choices=("off", "on"))
    parser.add_argument("--lowering", default="conv2d_time", help="Conv3D lowering (default: what GPUs use)")
    parser.add_argument("--overrides", default="{}", help="backbone fields as JSON (config.model.overrides)")
    parser.add_argument("--top", type=int, default=25, help="origins listed")
    args = parser.parse_args(argv)

    # one CPU device, whatever the environment asks for
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                       if "force_host_platform_device_count" not in f)
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    import jax
    from bench._lib import measure as bench

    spec = dict(backbone=args.backbone, framework=args.framework, rho=args.rho, frames=args.frames, crop=args.crop,
                batch_per_device=args.batch_per_device, dtype=args.dtype, remat=args.remat == "on",
                lowering=args.lowering, overrides=json.loads(args.overrides))
    build, _, batch, spec = bench._stjax_setup(spec)
    factory, step = build(spec["remat"])
    lowered = step.lower(factory.abstract, batch, jax.random.key(0))
    flops = bench._flops(lowered.cost_analysis())
    counted = reductions_by_origin(lowered.compile().as_text())
    clips = spec["batch"] * spec["rho"]
    print(f"step: {spec['framework']} on {spec['backbone']}, ρ={spec['rho']}, {spec['frames']}×{spec['crop']}², "
          f"{spec['batch']} videos ({clips} clips), {spec['dtype']}, remat {args.remat}, lowering {spec['lowering']}"
          f"{', overrides ' + args.overrides if spec['overrides'] else ''}; jax {jax.__version__}")
    print(f"\nFLOPs (XLA's count): {flops / 1e9:.4g} GFLOP per step, {flops / clips / 1e9:.4g} GFLOP per clip"
          if flops else "\nFLOPs: not counted")
    print(f"\nreduce instructions: {sum(counted.values())}\n\n| count | origin (innermost frame) | layers |\n"
          "| --- | --- | --- |")
    for (origin, layers), count in counted.most_common(args.top):
        print(f"| {count} | `{origin}` | {layers or '–'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
