"""Motion-vector extraction speed (`stjax.data.motion_vectors`) against RGB decoding, per CPU core.

    python bench/motion_vectors.py --cores 1 2            # the issue-30 table (~1.5 min on 2 cores)
    python bench/motion_vectors.py --count 2 --seconds 4  # a quick look
    python bench/motion_vectors.py                        # 1 core only

1. Makes Kinetics-like clips with `bench/input_pipeline.py`'s `make_videos` (10 s at 30 fps, short side
   256–320, textured, panning, moving blobs; H.264 with x264's defaults: CRF 23, 3 reference frames,
   B-pyramid) and the same clips re-encoded as MPEG-4 Part 2 with CMD's official preprocessing settings
   (FFmpeg's mpeg4 encoder defaults: GOP 12, no B-frames, 200 kb/s), both cached in --workdir.
2. Times, in processes pinned to N cores (`os.sched_setaffinity`; N processes, one per core, the clips
   shared out), for each codec setup:

   decode        decoding every frame, no conversion (the floor; `thread_type="AUTO"`)
   decode+mvs    decoding with motion-vector export as `read_stream` sets it up (slice threads, no
                 deblocking filter) and reading the vectors (`MotionVectors.to_ndarray`)
   read_stream   `motion_vectors.read_stream`: per-frame motion fields in source pixels (the extraction)
   extract       `motion_vectors.extract(fps=--fps, short_side=--short_side)`: read_stream + the stored
                 int8 grid, what a dataset build adds per video
   rgb           decoding every frame to RGB (`frame.to_ndarray(format="rgb24")`, `thread_type="AUTO"`):
                 what `video_io.decode_video` does before its resize and JPEG encoding
   decode_video  `video_io.decode_video(fps=--fps, short_side=--short_side)`: the RGB frames a dataset
                 build stores (decode, resize, JPEG), for the share extract adds to a build

   Each figure is frames of source video per second per core, the median of --repeats passes over all
   clips (the kinds interleaved within a pass).
3. Prints the table with the ratio to RGB decoding, the time extract adds to decode_video (a build that
   stores motion vectors runs both) and whether CMD's "over 500 frames/s on CPU" holds per core; writes
   it to WORKDIR/motion_vectors.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("decode", "decode+mvs", "read_stream", "extract", "rgb", "decode_video")
GOAL = 500.0  # frames/s on CPU: CMD's figure for its I-frame + motion-vector extraction


def _input_pipeline():
    path = os.path.join(REPO, "bench", "input_pipeline.py")
    spec = importlib.util.spec_from_file_location("bench_input_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reencode_mpeg4(source: str, target: str) -> None:
    """`source` re-encoded as MPEG-4 Part 2 with FFmpeg's encoder defaults (GOP 12, no B-frames): CMD's
    `ffmpeg -i IN -c:v mpeg4 OUT` (200 kb/s; in an mp4 container)."""
    import av

    tmp = target + ".tmp.mp4"
    with av.open(source) as inp, av.open(tmp, "w") as out:
        stream_in = inp.streams.video[0]
        stream = out.add_stream("mpeg4", rate=stream_in.average_rate)
        stream.width, stream.height, stream.pix_fmt = stream_in.width, stream_in.height, "yuv420p"
        stream.options = {"g": "12", "bf": "0"}
        stream.bit_rate = 200_000  # FFmpeg's default for mpeg4 (PyAV sets its own otherwise)
        for frame in inp.decode(stream_in):
            frame.pict_type = 0  # let the encoder choose
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, target)


def make_clips(workdir: str, count: int, seconds: float) -> dict[str, list[str]]:
    """{"h264": paths, "mpeg4": paths}: the clips, generated unless cached."""
    h264 = _input_pipeline().make_videos(os.path.join(workdir, f"h264_{seconds:g}s"), count, seconds, (256, 320))
    mpeg4 = []
    for path in h264:
        target = path.replace(f"h264_{seconds:g}s", f"mpeg4_{seconds:g}s")
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            reencode_mpeg4(path, target)
        mpeg4.append(target)
    return {"h264": h264, "mpeg4": mpeg4}


# ----------------------------------------------------------------------------------------------
# One worker, pinned to one core.


def _decode(path, export=False, rgb=False):
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        if export:
            stream.thread_type = "SLICE"
            stream.codec_context.options = {"skip_loop_filter": "all"}
            stream.codec_context.flags2 |= av.codec.context.Flags2.export_mvs
        else:
            stream.thread_type = "AUTO"
        frames = 0
        for frame in container.decode(stream):
            if export:
                side = frame.side_data.get("MOTION_VECTORS")
                if side is not None:
                    side.to_ndarray()
            if rgb:
                frame.to_ndarray(format="rgb24")
            frames += 1
    return frames


def _run_kind(kind, path, fps, short_side):
    from stjax.data import motion_vectors

    if kind == "decode":
        return _decode(path)
    if kind == "decode+mvs":
        return _decode(path, export=True)
    if kind == "rgb":
        return _decode(path, rgb=True)
    if kind == "read_stream":
        return motion_vectors.read_stream(path).num_frames
    if kind == "decode_video":
        from stjax.data import video_io

        video_io.decode_video(path, fps=fps, short_side=short_side)
        return _source_frames(path)
    if kind == "extract":  # counted in source frames, as the others
        motion_vectors.extract(path, fps=fps, short_side=short_side)
        return _source_frames(path)
    raise ValueError(kind)


_SOURCE_FRAMES: dict[str, int] = {}


def _source_frames(path):
    """The number of frames of `path`."""
    if path not in _SOURCE_FRAMES:
        _SOURCE_FRAMES[path] = _decode(path)
    return _SOURCE_FRAMES[path]


def worker(core: int, paths: list[str], repeats: int, fps: float, short_side: int) -> dict:
    """{kind: [seconds per pass]} and the frame count, timing every kind on `paths` in this process pinned
    to `core`."""
    os.sched_setaffinity(0, {core})
    sys.path.insert(0, REPO)
    for path in paths:  # warm-up: imports, file cache, frame counts
        _source_frames(path)
        _run_kind("read_stream", path, fps, short_side)
    seconds = {kind: [] for kind in KINDS}
    frames = sum(_source_frames(p) for p in paths)
    for _ in range(repeats):
        for kind in KINDS:
            start = time.perf_counter()
            counted = sum(_run_kind(kind, path, fps, short_side) for path in paths)
            seconds[kind].append(time.perf_counter() - start)
            assert counted == frames, (kind, counted, frames)
    return {"seconds": seconds, "frames": frames}


def measure(paths: list[str], cores: int, repeats: int, fps: float, short_side: int) -> dict[str, float]:
    """{kind: frames/s per core}: `cores` worker processes, one per core, the clips shared out; a pass takes
    as long as its slowest worker."""
    available = sorted(os.sched_getaffinity(0))
    if cores > len(available):
        raise SystemExit(f"--cores {cores}: only {len(available)} cores available")
    shares = [paths[i::cores] for i in range(cores)]
    procs = []
    for core, share in zip(available, shares):
        args = json.dumps({"core": core, "paths": share, "repeats": repeats, "fps": fps, "short_side": short_side})
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", args],
                                      stdout=subprocess.PIPE, text=True, cwd=REPO))
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a worker failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    frames = sum(r["frames"] for r in results)
    rates = {}
    for kind in KINDS:
        passes = [max(r["seconds"][kind][i] for r in results) for i in range(repeats)]
        rates[kind] = frames / statistics.median(passes) / cores
    return rates


# ----------------------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _clip_sizes(paths):
    import av

    sizes = set()
    for path in paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            sizes.add(f"{stream.width}×{stream.height}")
    return sorted(sizes)


def table(results: dict, clips: dict, args) -> str:
    lines = [
        f"Motion-vector extraction, frames of source video per second per core ({_cpu_name()}, "
        f"{len(os.sched_getaffinity(0))} cores available), {len(clips['h264'])} clips of {args.seconds:g} s "
        f"at 30 fps ({', '.join(_clip_sizes(clips['h264']))}); extract at {args.fps:g} fps, short side "
        f"{args.short_side}; median of {args.repeats} passes.",
        "",
        "| codec setup | cores | " + " | ".join(KINDS)
        + " | read_stream / rgb | extract / rgb | build time added | extract ≥ 500/s/core |",
        "| --- | --- | " + " | ".join("---" for _ in KINDS) + " | --- | --- | --- | --- |",
    ]
    names = {"h264": "H.264, x264 defaults (ref 3, B-pyramid)", "mpeg4": "MPEG-4 Part 2, GOP 12, no B (CMD)"}
    for (codec, cores), rates in results.items():
        cells = " | ".join(f"{rates[k]:.0f}" for k in KINDS)
        lines.append(f"| {names[codec]} | {cores} | {cells} | {rates['read_stream'] / rates['rgb']:.2f} | "
                     f"{rates['extract'] / rates['rgb']:.2f} | {rates['decode_video'] / rates['extract']:+.0%} | "
                     f"{'yes' if rates['extract'] >= GOAL else 'no'} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/stjax_bench_mv")
    parser.add_argument("--count", type=int, default=8, help="clips per codec setup")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--cores", type=int, nargs="+", default=[1], help="core counts to measure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fps", type=float, default=30.0, help="extract's grid rate (the builder's default)")
    parser.add_argument("--short_side", type=int, default=256, help="extract's stored short side")
    parser.add_argument("--codecs", nargs="+", default=["h264", "mpeg4"], choices=["h264", "mpeg4"])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(worker(spec["core"], spec["paths"], spec["repeats"], spec["fps"], spec["short_side"])))
        return
    os.makedirs(args.workdir, exist_ok=True)
    clips = make_clips(args.workdir, args.count, args.seconds)
    results = {}
    for codec in args.codecs:
        for cores in args.cores:
            print(f"timing {codec} on {cores} core(s) ...", flush=True)
            results[(codec, cores)] = measure(clips[codec], cores, args.repeats, args.fps, args.short_side)
    text = table(results, clips, args)
    print(text)
    with open(os.path.join(args.workdir, "motion_vectors.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
