"""The per-sample decoding baseline of bench/input_pipeline.py decodes the right frames."""
import importlib.util
import os

import av
import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_input_pipeline", os.path.join(os.path.dirname(__file__), os.pardir, "bench", "input_pipeline.py"))
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bench") / "clip.mp4")
    bench.write_video(path, seed=3, seconds=4.0, short_side=48, wide=True)
    with av.open(path) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return path, frames


def test_generated_video_is_kinetics_like(video):
    path, frames = video
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert float(stream.average_rate) == bench.FPS
        assert stream.codec_context.pix_fmt == "yuv420p"
    assert frames.shape == (120, 48, 84, 3)
    motion = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert (motion > 1).mean() > 0.9  # the scene moves in (almost) every frame


@pytest.mark.parametrize("start", [0, 37, 120 - 57])
def test_decode_clip_matches_full_decode(video, start):
    path, frames = video
    indices = start + bench.STRIDE * np.arange(bench.NUM_FRAMES)
    with av.open(path) as container:
        clip = bench.decode_clip(container, container.streams.video[0], start, indices)
        again = bench.decode_clip(container, container.streams.video[0], 5, np.array([5, 6]))  # seeks back
    np.testing.assert_array_equal(clip, frames[indices])
    np.testing.assert_array_equal(again, frames[[5, 6]])


def test_report_states_ratio_and_extrapolation():
    args = type("Args", (), dict(argv=["--rhos", "2"], videos=2, video_seconds=1.0, short_sides=(256, 320),
                                  repeats=1, warmup=1.0, seconds=2.0))()
    results = [
        {"kind": "stjax", "rho": 2, "cores": 1, "clips_per_s": 40.0, "clips_per_s_per_core": 40.0, "clips_per_cpu_s": 41.0},
        {"kind": "baseline", "rho": 2, "cores": 1, "clips_per_s": 5.0, "clips_per_s_per_core": 5.0, "clips_per_cpu_s": 5.1},
        {"kind": "stjax", "rho": 2, "cores": 2, "clips_per_s": 72.0, "clips_per_s_per_core": 36.0, "clips_per_cpu_s": 37.0},
    ]
    text = bench.report(args, results, {})
    assert "8.0× per core" in text
    # efficiency 72 / 80 = 0.9, lost again at each of 3 further doublings: 72 · 8 · 0.9³ = 420
    assert "efficiency 0.90" in text and "420 clips/s" in text and "extrapolated (not measured)" in text
