"""Input pipeline speed: stjax against decoding each video per sample, per CPU core.

    python bench/input_pipeline.py                       # the issue-5 figures (~20 min on 2 cores)
    python bench/input_pipeline.py --rhos 2 --cores 1 --seconds 5 --repeats 1   # a quick look

1. Generates Kinetics-like videos (default 24 of 10 s at 30 fps, short side 256–320,
   landscape 4:3 or 16:9, H.264 yuv420p with x264's default settings: CRF 23, a
   keyframe every 250 frames, B-frames), textured and moving so they compress like
   real footage. Cached in --workdir.
2. Builds them into a stjax dataset with the video_folder builder (30 fps, short
   side 256, JPEG quality 90: the builder's defaults), cached in --workdir. This
   is a one-time cost; its rate is printed but not part of the comparison.
3. Times, each in a fresh process pinned to N cores (`os.sched_setaffinity`, set
   before TensorFlow starts, so its thread pools size themselves to N):

   stjax     `stjax.data.pipeline.pretrain_dataset`: ρ clips of 8 frames at stride 8,
             224² random resized crops, the recipe's full augmentation (flip,
             colour jitter, grayscale, blur; configs/pretrain.py:k400_r50), batches
             of 32 videos as NumPy arrays.
   baseline  what the official PyTorch loader (PySlowFast's Kinetics dataset with
             its PyAV decoder) does per sample: open the video, and for each of the
             ρ clips seek to the keyframe before the clip's start, decode up to its
             last frame, convert every frame of the clip's window to RGB
             (`frame.to_rgb().to_ndarray()`), keep every τ-th, then
             random-resized-crop, resize and augment. The crop / resize /
             augmentation are the same TensorFlow ops stjax uses (compiled once
             with tf.function), so the ratio measures the data layout and decoding
             strategy, not two augmentation libraries; a faster augmentation makes
             both columns faster. A PyTorch DataLoader spreads samples over worker
             processes, so N cores run N such processes, each pinned to its own
             core.
   stjax_device
             the same with `augment_on="device"`: the host crops and resizes and
             sends each clip's augmentation draws along; the flip, colour jitter,
             grayscale and blur run in the train step on the accelerator
             (`stjax.data.device_augment`, the same clips within one uint8 level).
             The device's share is timed separately (`device_augment` row: XLA on
             one core of this CPU, a stand-in; an accelerator is not measured here).

   Clips are counted as the clips a training step receives (max(ρ, 2) per video:
   ρ = 1 is two augmentations of one clip). Each run discards a warm-up, then
   counts clips for --seconds of wall time; each measurement is the median of
   --repeats runs (on a shared VM, identical runs have differed by up to 2×).
4. Prints the comparison at ρ = 2, the scaling with ρ ∈ --rhos and with the cores
   in --cores, and an extrapolation to a 16-core host, labelled as such; writes
   them to WORKDIR/input_pipeline.md and .json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS = 30.0
NUM_FRAMES, STRIDE, CROP = 8, 8, 224
KINDS = ("stjax", "stjax_device", "baseline")


# ----------------------------------------------------------------------------------------------
# Kinetics-like videos.


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float32 [height, width, 3] image in [0, 255]: smooth colour fields plus fine detail."""
    out = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((4, 120.0), (16, 60.0), (64, 35.0)):
        coarse = rng.uniform(-1, 1, (cells, cells * width // height + 1, 3)).astype(np.float32)
        rows = np.linspace(0, coarse.shape[0] - 1, height)
        cols = np.linspace(0, coarse.shape[1] - 1, width)
        r0, c0 = rows.astype(int), cols.astype(int)
        r1, c1 = np.minimum(r0 + 1, coarse.shape[0] - 1), np.minimum(c0 + 1, coarse.shape[1] - 1)
        fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
        top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c1] * fc
        bottom = coarse[r1][:, c0] * (1 - fc) + coarse[r1][:, c1] * fc
        out += weight * (top * (1 - fr) + bottom * fr)
    out += rng.normal(0, 6, out.shape).astype(np.float32)
    return np.clip(out + 128, 0, 255)


def write_video(path: str, seed: int, seconds: float = 10.0, short_side: int = 256, wide: bool = True) -> None:
    """An H.264 mp4 of a camera panning over a textured scene with moving blobs (x264 defaults)."""
    import av

    rng = np.random.default_rng(seed)
    height = short_side - short_side % 2
    width = int(round(height * (16 / 9 if wide else 4 / 3))) // 2 * 2
    scene = _texture(rng, height + 96, width + 96)
    frames = int(round(seconds * FPS))
    velocity = rng.uniform(-1.5, 1.5, 2)
    blobs = [(rng.uniform(0, height), rng.uniform(0, width), rng.uniform(-3, 3), rng.uniform(-3, 3),
              rng.uniform(15, 45), rng.uniform(0, 255, 3)) for _ in range(4)]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            oy, ox = (48 + 40 * np.sin(velocity * t / FPS)).astype(int)
            image = scene[oy:oy + height, ox:ox + width].copy()
            for y, x, vy, vx, radius, colour in blobs:
                cy, cx = (y + vy * t) % height, (x + vx * t) % width
                mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2)[..., None]
                image = np.where(mask, colour, image)
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_videos(root: str, count: int, seconds: float, short_sides: tuple[int, int]) -> list[str]:
    """`count` videos in root/<class>/ (4 classes), generated unless already there; their paths."""
    paths = []
    rng = np.random.default_rng(0)
    todo = []
    for i in range(count):
        path = os.path.join(root, f"class_{i % 4}", f"video_{i:03d}.mp4")
        short = int(rng.integers(short_sides[0], short_sides[1] + 1))
        wide = bool(rng.random() < 0.7)
        paths.append(path)
        if not os.path.exists(path):
            todo.append((path, i, short, wide))
    if todo:
        print(f"generating {len(todo)} videos of {seconds:g} s into {root}", flush=True)
        start = time.perf_counter()
        for n, (path, seed, short, wide) in enumerate(todo, 1):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".tmp.mp4"
            write_video(tmp, seed, seconds, short, wide)
            os.replace(tmp, path)
            rate = n / (time.perf_counter() - start)
            print(f"  {n}/{len(todo)}  {rate:.2f} videos/s  ETA {(len(todo) - n) / rate:.0f} s", flush=True)
    return paths


def build_dataset(video_root: str, data_dir: str) -> dict:
    from stjax.data import build

    return build.build("video_folder", manual_dir=video_root, data_dir=data_dir, verbose=False)


# ----------------------------------------------------------------------------------------------
# One measurement, in a process pinned to its cores.


def _augment_config():
    from stjax import configlib
    from stjax.data import config as data_config

    config = configlib.load_config_file(os.path.join(REPO, "configs", "pretrain.py"), "k400_r50")
    assert config.data.augmentation.crop_size == CROP and config.data.num_frames == NUM_FRAMES
    return data_config.augment_config(config)


def _timed(next_clips, warmup_s: float, seconds: float) -> dict:
    """Calls next_clips() (returning a number of clips) for warmup_s, then counts for `seconds`."""
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        next_clips()
    clips, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        clips += next_clips()
    wall = time.perf_counter() - start
    return {"clips": clips, "wall_s": wall, "cpu_s": time.process_time() - cpu}


def measure_stjax(data_dir: str, rho: int, warmup_s: float, seconds: float, batch_size: int,
                  augment_on: str = "host") -> dict:
    from stjax.data import pipeline

    clips = pipeline.ClipSpec(rho=rho, num_frames=NUM_FRAMES, stride=STRIDE, max_timespan=math.inf)
    ds = pipeline.pretrain_dataset("video_folder", batch_size=batch_size, clips=clips,
                                   augmentation=_augment_config(), data_dir=data_dir, seed=0,
                                   augment_on=augment_on)
    batches = ds.as_numpy_iterator()

    def next_clips():
        batch = next(batches)
        return batch["clips"].shape[0] * batch["clips"].shape[1]

    return _timed(next_clips, warmup_s, seconds)


def measure_device_augment(batch_size: int, warmup_s: float, seconds: float) -> dict:
    """The accelerator's share with augment_on="device" (`stjax.data.device_augment`), timed here on the CPU
    with XLA: batches of ρ=2 clips with recipe-drawn parameters."""
    import jax
    import tensorflow as tf

    from stjax.data import augment, device_augment

    config = _augment_config()
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (batch_size, 2, NUM_FRAMES, CROP, CROP, 3), dtype=np.uint8)
    params = np.stack([augment.pack_clip_params(augment.sample_clip_params(tf.constant([i, 0], tf.int64), config))
                       for i in range(batch_size * 2)]).reshape(batch_size, 2, -1)
    run = jax.jit(lambda c, p: device_augment.augment_clips(c, p, config))
    clips, params = jax.device_put(clips), jax.device_put(params)

    def next_clips():
        run(clips, params).block_until_ready()
        return batch_size * 2

    return _timed(next_clips, warmup_s, seconds)


def decode_clip(container, stream, start: int, indices: np.ndarray) -> np.ndarray:
    """uint8 [len(indices), H, W, 3]: the frames at `indices` (frame numbers at the stream's rate,
    sorted, starting at `start`), decoded from the keyframe before `start`; as PySlowFast does, every
    frame from `start` to the last index is converted to RGB, then the wanted ones are kept."""
    rate = float(stream.average_rate)
    time_base = float(stream.time_base)
    stream_start = stream.start_time or 0
    start_pts = stream_start + int(start / rate / time_base)
    container.seek(max(start_pts - 1024, 0), backward=True, any_frame=False, stream=stream)
    wanted, out = list(indices), []
    for frame in container.decode(stream):
        index = int(round((frame.pts - stream_start) * time_base * rate))
        if index < start:
            continue
        rgb = frame.to_ndarray(format="rgb24")
        while wanted and index > wanted[0]:  # a frame the file lacks: repeat the previous one
            out.append(out[-1] if out else rgb)
            wanted.pop(0)
        if wanted and index == wanted[0]:
            out.append(rgb)
            wanted.pop(0)
        if not wanted:
            break
    while wanted:  # past the end of the stream
        out.append(out[-1])
        wanted.pop(0)
    return np.stack(out)


def measure_baseline(video_paths: list[str], rho: int, warmup_s: float, seconds: float) -> dict:
    import av
    import tensorflow as tf

    from stjax.data import augment

    config = _augment_config()
    num_clips = max(rho, 2)
    span = (NUM_FRAMES - 1) * STRIDE + 1

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64)])
    def crop_and_augment(frames, seed):
        seeds = tf.random.experimental.stateless_split(seed, 2)
        shape = tf.shape(frames)
        window = augment.sample_crop_window(seeds[0], shape[1], shape[2], config.area_range, config.aspect_range)
        return augment.augment_clip(augment.crop_and_resize_frames(frames, window, config.crop_size), seeds[1], config)

    rng = np.random.default_rng(os.getpid())
    lengths = {}

    def next_clips():
        path = video_paths[rng.integers(len(video_paths))]
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # as PySlowFast; one thread on one core
            if path not in lengths:
                lengths[path] = stream.frames or int(float(stream.duration * stream.time_base) * FPS)
            for _ in range(rho):  # ρ = 1: two augmentations of one decoded clip
                start = int(rng.integers(0, max(lengths[path] - span, 0) + 1))
                frames = decode_clip(container, stream, start, start + STRIDE * np.arange(NUM_FRAMES))
                for _ in range(num_clips // rho):
                    crop_and_augment(frames, rng.integers(0, 2**31, 2)).numpy()
        return num_clips

    return _timed(next_clips, warmup_s, seconds)


def run_measurement(args, kind: str, rho: int, cores: list[int]) -> dict:
    """The median over `args.repeats` runs of: one pinned worker per process the kind needs on `cores`,
    their summed rate."""
    runs = [_run_once(args, kind, rho, cores) for _ in range(max(1, args.repeats))]
    median = {key: statistics.median(m[key] for m in runs) if isinstance(value, float) else value
              for key, value in runs[0].items()}
    rates = sorted(m["clips_per_s"] for m in runs)
    median["range"] = [rates[0], rates[-1]]
    median["clips_counted"] = sum(m["clips_counted"] for m in runs)  # over all runs, not the first one's
    return median


def _run_once(args, kind: str, rho: int, cores: list[int]) -> dict:
    common = [sys.executable, os.path.abspath(__file__), "--workdir", args.workdir, "--rho", str(rho),
              "--seconds", str(args.seconds), "--warmup", str(args.warmup), "--batch_size", str(args.batch_size)]
    groups = [[c] for c in cores] if kind == "baseline" else [cores]
    if kind == "device_augment":
        groups = [cores[:1]]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="2")
    workers = [subprocess.Popen(common + ["--worker", kind, "--pin", ",".join(map(str, g))],
                                stdout=subprocess.PIPE, text=True, env=env) for g in groups]
    results = []
    for worker in workers:
        out, _ = worker.communicate()
        if worker.returncode:
            raise RuntimeError(f"{kind} worker (rho={rho}, cores={cores}) failed with exit code {worker.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    rate = sum(r["clips"] / r["wall_s"] for r in results)
    cpu_rate = sum(r["clips"] for r in results) / max(sum(r["cpu_s"] for r in results), 1e-9)
    return {"kind": kind, "rho": rho, "cores": len(cores), "clips_per_s": rate,
            "clips_per_s_per_core": rate / len(cores), "clips_per_cpu_s": cpu_rate,
            "clips_counted": sum(r["clips"] for r in results)}


def worker_main(args) -> None:
    os.sched_setaffinity(0, {int(c) for c in args.pin.split(",")})  # before TensorFlow sizes its pools
    if args.worker in ("stjax", "stjax_device"):
        result = measure_stjax(os.path.join(args.workdir, "tfds"), args.rho, args.warmup, args.seconds,
                               args.batch_size, augment_on="device" if args.worker == "stjax_device" else "host")
    elif args.worker == "device_augment":
        result = measure_device_augment(args.batch_size, args.warmup, args.seconds)
    else:
        with open(os.path.join(args.workdir, "videos.json")) as f:
            paths = json.load(f)
        result = measure_baseline(paths, args.rho, args.warmup, args.seconds)
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------
# The report.


def _row(m: dict) -> str:
    low, high = m.get("range", (m["clips_per_s"], m["clips_per_s"]))
    return (f"| {m['kind']} | {m['rho']} | {m['cores']} | {m['clips_per_s']:.1f} | {low:.1f}–{high:.1f} "
            f"| {m['clips_per_s_per_core']:.1f} | {m['clips_per_cpu_s']:.1f} |")


def report(args, results: list[dict], build_info: dict) -> str:
    header = ("| pipeline | ρ | cores | clips/s (median) | range | clips/s/core | clips per CPU-second |\n"
              "|---|---|---|---|---|---|---|")
    find = {(m["kind"], m["rho"], m["cores"]): m for m in results}
    lines = [
        "# Input pipeline: stjax against per-sample video decoding",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores available; `python bench/input_pipeline.py "
        + " ".join(args.argv) + "`",
        "",
        f"{args.videos} generated videos, {args.video_seconds:g} s at {FPS:g} fps, short side "
        f"{args.short_sides[0]}–{args.short_sides[1]}, H.264 (x264 defaults). Training clips: "
        f"{NUM_FRAMES}×{CROP}² at stride {STRIDE}, full augmentation; clips counted as max(ρ, 2) per video. "
        f"Each row: the median and range of {args.repeats} run(s) of {args.warmup:g} s warm-up + "
        f"{args.seconds:g} s.",
        f"One-time build into stjax's format: {build_info.get('rate', 'cached')}.",
        "",
        header,
        *(_row(m) for m in results),
        "",
    ]
    base_rho = 2 if ("stjax", 2, 1) in find or ("stjax_device", 2, 1) in find else min(m["rho"] for m in results)
    b1 = find.get(("baseline", base_rho, 1))
    most = max(m["cores"] for m in results)
    labels = {"stjax": "stjax (augmentation on the host)",
              "stjax_device": "stjax with `augment_on=device` (the host crops and resizes; the train step augments)"}
    for kind, label in labels.items():
        s1, sn = find.get((kind, base_rho, 1)), find.get((kind, base_rho, most))
        if s1 and b1:
            lines.append(f"**ρ={base_rho}, one core: {label}: {s1['clips_per_s_per_core']:.1f} clips/s, baseline "
                         f"{b1['clips_per_s_per_core']:.1f} clips/s: "
                         f"{s1['clips_per_s_per_core'] / b1['clips_per_s_per_core']:.1f}× per core.**")
        if s1 and sn and most > 1:
            efficiency = sn["clips_per_s"] / (most * s1["clips_per_s"])
            extrapolated = sn["clips_per_s"] * (16 / most) * efficiency ** math.log2(16 / most)
            lines += [
                "",
                f"{label}, scaling 1 → {most} cores (measured): {s1['clips_per_s']:.1f} → {sn['clips_per_s']:.1f} "
                f"clips/s, efficiency {efficiency:.2f}. **16-core host, extrapolated (not measured)**: "
                f"{extrapolated:.0f} clips/s ({extrapolated / 16:.1f} clips/s/core), assuming the efficiency lost "
                f"from 1 to {most} cores is lost again at every further doubling; "
                f"{sn['clips_per_s'] * 16 / most:.0f} clips/s if it scales linearly from {most} cores.",
            ]
        lines.append("")
    device = find.get(("device_augment", 2, 1))
    if device:
        lines.append(f"The train step's share with `augment_on=device` (`stjax.data.device_augment`), timed on one "
                     f"core of this CPU with XLA: {device['clips_per_s']:.1f} clips/s "
                     f"({1000 / device['clips_per_s']:.1f} ms per clip). On an accelerator: not measured here.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "stjax_bench_input"))
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--video_seconds", type=float, default=10.0)
    parser.add_argument("--short_sides", type=lambda s: tuple(int(v) for v in s.split(",")), default=(256, 320),
                        help="smallest,largest short side of the generated videos")
    parser.add_argument("--rhos", default="1,2,4,8", help="ρ values for the scaling table")
    parser.add_argument("--cores", default=None, help="core counts to measure (default: 1 and all available)")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement")
    parser.add_argument("--warmup", type=float, default=8.0, help="untimed seconds before each measurement")
    parser.add_argument("--batch_size", type=int, default=32, help="videos per stjax batch")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per measurement, each in a fresh process; the median is reported")
    parser.add_argument("--kinds", default="stjax,stjax_device,baseline",
                        help="pipelines to time: stjax (augmentation on the host), stjax_device "
                             "(augment_on=device: the host crops and resizes, the train step augments), baseline")
    parser.add_argument("--worker", choices=KINDS + ("device_augment",), help=argparse.SUPPRESS)
    parser.add_argument("--pin", help=argparse.SUPPRESS)
    parser.add_argument("--rho", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.worker:
        return worker_main(args)

    available = sorted(os.sched_getaffinity(0))
    core_counts = ([int(c) for c in args.cores.split(",")] if args.cores
                   else sorted({1, len(available)}))
    for count in core_counts:
        if not 1 <= count <= len(available):
            raise SystemExit(f"--cores: {count} is not between 1 and the {len(available)} available cores")
    rhos = [int(r) for r in args.rhos.split(",")]
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind not in KINDS:
            raise SystemExit(f"--kinds: {kind!r} is not one of {', '.join(KINDS)}")

    os.makedirs(args.workdir, exist_ok=True)
    paths = make_videos(os.path.join(args.workdir, "videos"), args.videos, args.video_seconds, args.short_sides)
    with open(os.path.join(args.workdir, "videos.json"), "w") as f:
        json.dump(paths, f)
    start = time.perf_counter()
    build_report = build_dataset(os.path.join(args.workdir, "videos"), os.path.join(args.workdir, "tfds"))
    built_s = time.perf_counter() - start
    build_info = {}
    if build_report.get("seconds") and built_s > 2:
        build_info["rate"] = (f"{args.videos / built_s:.2f} videos/s on {len(available)} cores "
                              f"({args.videos * args.video_seconds / built_s:.0f} s of video per second)")

    plan = [(kind, rho, 1) for rho in rhos for kind in kinds]
    comparison_rho = 2 if 2 in rhos else rhos[0]
    plan += [(kind, comparison_rho, n) for n in core_counts if n > 1 for kind in kinds]
    if "stjax_device" in kinds:
        plan.append(("device_augment", 2, 1))
    results = []
    print(f"{len(plan)} measurements × {args.repeats} runs of {args.warmup:g} + {args.seconds:g} s "
          f"(plus process start-up each)", flush=True)
    for i, (kind, rho, n) in enumerate(plan, 1):
        m = run_measurement(args, kind, rho, available[:n])
        results.append(m)
        print(f"  [{i}/{len(plan)}] {kind:8s} rho={rho} cores={n}: {m['clips_per_s']:7.1f} clips/s "
              f"({m['clips_per_s_per_core']:.1f}/core; runs {m['range'][0]:.1f}–{m['range'][1]:.1f})", flush=True)
    text = report(args, results, build_info)
    print()
    print(text)
    with open(os.path.join(args.workdir, "input_pipeline.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.workdir, "input_pipeline.json"), "w") as f:
        json.dump({"results": results, "build": build_info, "args": args.argv}, f, indent=1)
    print(f"written {os.path.join(args.workdir, 'input_pipeline.md')} and .json")


if __name__ == "__main__":
    main()
