"""How long XLA takes to compile the programs a training run starts with: the state's initialisation,
the plain train step and the guarded step the loop runs (`stjax.train.step.jit_guarded_train_step`).

    python bench/compile_time.py                                  # r3d_micro, 16², 4 frames, 8 videos, ρBYOL
    python bench/compile_time.py --xla_flags=--xla_backend_optimization_level=0   # as the tests compile
    python bench/compile_time.py --backbone slow_r50 --crop 224 --frames 8 --batch 64 --framework moco
    python bench/compile_time.py --framework moco --config '{"moco.bn_groups": 1}'   # any config field

The compilation cache is off, and every round traces and compiles afresh (`jax.clear_caches()`), so
each figure is a cold compile. One device (the first local one), the framework's optimiser from
configs/pretrain.py:k400_r50. Prints a Markdown table: median and all rounds, in seconds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", default="byol", help="simclr, moco, byol or swav")
    parser.add_argument("--backbone", default="r3d_micro")
    parser.add_argument("--rho", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="videos per step")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--crop", type=int, default=16)
    parser.add_argument("--config", default="", help='JSON {"dotted.field": value} set on the preset')
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--xla_flags", default="", help="appended to XLA_FLAGS before jax starts")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.rounds < 1:
        raise SystemExit(f"--rounds={args.rounds}: must be at least 1")
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    sys.path.insert(0, str(ROOT))
    import json

    import jax
    import numpy as np

    from bench._lib.specs import _pretrain_config  # the config bench/train_step.py times
    from stjax import objectives
    from stjax.train import mesh as mesh_lib
    from stjax.train import optimizer as optimizer_lib
    from stjax.train import step as step_lib
    from stjax.train.state import StateFactory

    config = _pretrain_config(dict(
        framework=args.framework, rho=args.rho, backbone=args.backbone, batch=args.batch, frames=args.frames,
        crop=args.crop, dtype="float32", remat=False, lowering="auto", config=json.loads(args.config or "{}")))
    clips_shape = (args.batch, args.rho, args.frames, args.crop, args.crop, 3)
    mesh = mesh_lib.create_mesh(1)
    replicated, batch_sharding = mesh_lib.replicated_sharding(mesh), mesh_lib.batch_sharding(mesh)
    batch = jax.device_put({"clips": np.zeros(clips_shape, np.uint8), "label": np.zeros(args.batch, np.int32)},
                           batch_sharding)
    rng = jax.random.key(0)

    def programs():
        """{name: zero-argument function that compiles it}, built afresh (new closures, nothing cached)."""
        framework = objectives.create_framework(config, total_steps=100)
        tx, _ = optimizer_lib.create_optimizer(config, args.batch, 100, steps_per_epoch=10)
        factory = StateFactory(framework, tx, clips_shape, mesh)
        abstract = factory.abstract
        plain = step_lib.jit_train_step(framework, tx, factory.shardings, batch_sharding, replicated)
        guarded = step_lib.jit_guarded_train_step(framework, tx, factory.shardings, batch_sharding, replicated)
        divergence = jax.device_put(step_lib.no_divergence(), replicated)
        return {
            "init": lambda: jax.jit(factory.create).lower(rng).compile(),
            "train step": lambda: plain.lower(abstract, batch, rng).compile(),
            "guarded train step (the loop's)": lambda: guarded.lower(abstract, divergence, batch, rng).compile(),
        }

    seconds: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        jax.clear_caches()
        for name, compile_ in programs().items():
            started = time.perf_counter()
            compile_()
            seconds.setdefault(name, []).append(time.perf_counter() - started)
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"{args.framework}, {args.backbone}, clips {clips_shape}, jax {jax.__version__}, "
          f"{jax.devices()[0].platform}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}\n")
    print("| program | median s | rounds (s) |\n| --- | --- | --- |")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")


if __name__ == "__main__":
    main()
