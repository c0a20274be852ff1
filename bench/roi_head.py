"""Step cost of the AVA detection head: the backbone alone, backbone + RoIHead, the head and RoIAlign alone.

    python bench/roi_head.py                                  # r3d_tiny, res5 dilated, 8 clips of 8×56², 4 boxes
    python bench/roi_head.py --boxes 16 --crop 64             # more boxes per clip, a bigger map
    python bench/roi_head.py --backbone slow_r50 --crop 224 --batch 1 --rounds 3   # the AVA backbone's shapes
    python bench/roi_head.py --no_dilate                      # res5 strided as in pretraining

Every program is jitted and run as forward + backward: gradients w.r.t. all parameters, and w.r.t. the map
for the head alone (on the backbone's [B, T', H', W', C] map) and RoIAlign alone (on its mean over T').
BatchNorm in training mode, float32, the first local device; synthetic clips, random boxes in [0, 1]. The
head is `stjax.models.heads.RoIHead` (80 classes, 7×7 RoIAlign, dropout 0.5) with a sigmoid cross-entropy
loss; each `--roi_methods` entry gets its rows. Printed: the median (and min–max) ms of --rounds calls after
--warmup (the rounds interleave the programs) and each row's share of the backbone + head step of its method.
Imports no TensorFlow.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="r3d_tiny")
    parser.add_argument("--crop", type=int, default=56)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="clips per step")
    parser.add_argument("--boxes", type=int, default=4, help="boxes per clip (M)")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--no_dilate", action="store_true", help="keep res5 strided (not the detection layout)")
    parser.add_argument("--roi_methods", default="gather,matmul", help="comma-separated roi_align methods")
    parser.add_argument("--lowering", default="auto", help="of the 3D convolutions")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    return parser.parse_args(argv)


def _times_ms(programs, warmup: int, rounds: int) -> list[list[float]]:
    """ms of each round per (fn, args) in ``programs``; the rounds interleave the programs, so that a slower spell of
    a shared machine falls on all of them."""
    import jax

    for fn, fn_args in programs:
        for _ in range(warmup):
            jax.block_until_ready(fn(*fn_args))
    times = [[] for _ in programs]
    for _ in range(rounds):
        for i, (fn, fn_args) in enumerate(programs):
            started = time.perf_counter()
            jax.block_until_ready(fn(*fn_args))
            times[i].append(time.perf_counter() - started)
    return [[1000 * t for t in program_times] for program_times in times]


def main(argv=None):
    args = parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.boxes < 1:
        raise SystemExit("--rounds and --boxes must be at least 1, --warmup at least 0")
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp
    import optax

    from stjax.models import create_backbone
    from stjax.models.heads import RoIHead
    from stjax.models.roi_align import METHODS, roi_align

    methods = [m for m in args.roi_methods.split(",") if m]
    if not methods or any(m not in METHODS for m in methods):
        raise SystemExit(f"--roi_methods={args.roi_methods!r}: valid methods are {', '.join(METHODS)}")
    options = dict(lowering=args.lowering)
    layout = "res5 strided"
    if not args.no_dilate:
        probe = create_backbone(args.backbone)
        options.update(spatial_strides=tuple(probe.spatial_strides[:-1]) + (1,),
                       spatial_dilations=(1,) * (len(probe.stage_depths) - 1) + (2,))
        layout = "res5 stride 1, dilation 2"
    backbone = create_backbone(args.backbone, **options)
    device = jax.devices()[0]
    k_x, k_b, k_y, k_i, k_h = jax.random.split(jax.random.key(0), 5)
    x = jax.device_put(jax.random.normal(k_x, (args.batch, args.frames, args.crop, args.crop, 3)), device)
    corners = jax.random.uniform(k_b, (args.batch, args.boxes, 2, 2))
    boxes = jnp.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1)
    targets = (jax.random.uniform(k_y, (args.batch, args.boxes, args.classes)) < 0.05).astype(jnp.float32)
    variables = jax.jit(lambda k: backbone.init(k, x, train=False))(k_i)
    fmap_shape = jax.eval_shape(lambda v: backbone.apply(v, x, False, pooled=False), variables).shape

    def backbone_loss(params):
        feats, _ = backbone.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, True,
                                  mutable=["batch_stats"])
        return jnp.mean(jnp.square(feats))

    rows = [("backbone alone", None, jax.jit(jax.grad(backbone_loss)), (variables["params"],))]
    for method in methods:
        head = RoIHead(args.classes, roi_method=method)
        head_params = head.init(k_h, jnp.zeros(fmap_shape), boxes, train=False)["params"]

        def detection_loss(params, head=head):
            fmap, _ = backbone.apply({"params": params["backbone"], "batch_stats": variables["batch_stats"]}, x,
                                     True, pooled=False, mutable=["batch_stats"])
            logits = head.apply({"params": params["head"]}, fmap, boxes, train=True,
                                rngs={"dropout": jax.random.key(1)})
            return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))

        def head_loss(params, fmap, head=head):
            logits = head.apply({"params": params}, fmap, boxes, train=True, rngs={"dropout": jax.random.key(1)})
            return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))

        def roi_loss(fmap2d, method=method):
            _, h, w, _ = fmap2d.shape
            pooled = roi_align(fmap2d, boxes * jnp.array([w, h, w, h], jnp.float32), 7, method=method)
            return jnp.sum(jnp.square(pooled))

        fmap = jax.device_put(jax.random.normal(k_x, fmap_shape), device)
        rows += [(f"backbone + RoIHead ({method})", method, jax.jit(jax.grad(detection_loss)),
                  ({"backbone": variables["params"], "head": head_params},)),
                 (f"RoIHead alone ({method})", method, jax.jit(jax.grad(head_loss, argnums=(0, 1))),
                  (head_params, fmap)),
                 (f"RoIAlign alone ({method})", method, jax.jit(jax.grad(roi_loss)), (jnp.mean(fmap, axis=1),))]

    times = _times_ms([(fn, fn_args) for _, _, fn, fn_args in rows], args.warmup, args.rounds)
    results = [(name, method, statistics.median(t), min(t), max(t)) for (name, method, _, _), t in zip(rows, times)]
    totals = {method: ms for name, method, ms, _, _ in results if name.startswith("backbone + RoIHead")}
    backbone_ms = results[0][2]

    print(f"{args.backbone} ({layout}), clips {tuple(x.shape)}, feature map {tuple(fmap_shape)}, "
          f"{args.boxes} boxes per clip, {args.classes} classes, jax {jax.__version__}, {device.platform}, "
          f"forward + backward, median of {args.rounds}\n")
    print("| program | median ms | min–max ms | share of backbone + head |\n| --- | --- | --- | --- |")
    for name, method, ms, low, high in results:
        shares = [f"{100 * ms / totals[m]:.1f} % ({m})" for m in ([method] if method else totals)]
        print(f"| {name} | {ms:.2f} | {low:.2f}–{high:.2f} | {', '.join(shares)} |")
    print()
    for method, total in totals.items():
        print(f"{method}: the detection step takes {total - backbone_ms:+.2f} ms "
              f"({100 * (total - backbone_ms) / total:+.1f} %) over the backbone alone")


if __name__ == "__main__":
    main()
