"""Test setup: 8 fake CPU devices, set before jax is imported anywhere."""
import os

# XLA:CPU at its lowest optimisation level: the tests' tiny programs compile several times faster (the
# initialisation of r3d_micro: 21 s -> 1.7 s on 2 cores, dominated by the PRNG's code; a BYOL train step:
# 12 s -> 5 s) and run a few times slower, which tests of a few steps can afford. Subprocesses that set
# their own device count take the same flag (`xla_flags`).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a test subprocess with `devices` fake CPU devices."""
    return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE_FLAGS}"


os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(8)).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow must never grab an accelerator; it only runs tf.data.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import shutil  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# What the libraries under test leave in the temporary folder (TFDS an empty tmp*tfds folder for each
# builder of a dataset not yet prepared, TensorFlow's autograph a module per converted function) goes
# into one folder that the run removes at its end. The first process of a run (the xdist controller, or
# the only one with -n 0) makes it; its workers and subprocesses inherit TMPDIR. pytest's own tmp_path
# folders stay where pytest keeps them (its last 3 runs, in the system's temporary folder).
_OWN_TMPDIR = "STJAX_TESTS_TMPDIR" not in os.environ
if _OWN_TMPDIR:
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
    os.environ["STJAX_TESTS_TMPDIR"] = tempfile.mkdtemp(prefix="stjax-tests-")
os.environ["TMPDIR"] = os.environ["STJAX_TESTS_TMPDIR"]
# `python -m stjax.main` in a subprocess keeps compiled programs there, not in ~/.cache
os.environ.setdefault("STJAX_COMPILATION_CACHE", os.path.join(os.environ["TMPDIR"], "jax_compilation_cache"))
tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_unconfigure(config):
    if _OWN_TMPDIR:
        shutil.rmtree(os.environ["STJAX_TESTS_TMPDIR"], ignore_errors=True)


MAX_WORKERS = 4  # each worker is a process with 8 fake devices, 1.5–2.5 GB resident on the CI machine


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pytest.ini): one worker per core, at most MAX_WORKERS. `-n 0` runs in this process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, MAX_WORKERS)


def assert_close(actual, expected, rel=1e-5, floor=1e-6):
    """max |actual − expected| ≤ rel · max(max |expected|, floor); `floor` for arrays that are ~0
    (e.g. the gradient of a bias that a BatchNorm removes)."""
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(float(np.max(np.abs(b))), floor)
    assert float(np.max(np.abs(a - b))) <= rel * scale, float(np.max(np.abs(a - b))) / scale


def write_video(path, num_frames=20, width=40, height=32, fps=25, codec="libx264", seed=0,
                pix_fmt=None, timestamps=None):
    """Writes a small real video with PyAV: moving noise so every frame differs.

    `timestamps` (seconds, one per frame) makes a variable-frame-rate file.
    Odd sizes need a codec/pixel format that allows them (libx264 + yuv444p).
    """
    import fractions

    import av

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    pix_fmt = pix_fmt or ("yuv444p" if (width % 2 or height % 2) else "yuv420p")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        container.start_encoding()  # writes the header even when there are no frames
        if timestamps is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")
            if timestamps is not None:
                frame.pts = int(round(timestamps[i] * 1000))
                frame.time_base = fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path, seconds=0.5, rate=16000):
    """An AAC file with no video stream."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        for i in range(int(seconds * rate) // 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def tiny_video_dataset(tmp_path_factory):
    """A built `video_folder/tiny` dataset: 3 classes × 4 videos (train 3, test 1 each),
    40×32 px, 25 fps, 1–3 s. Returns (data_dir, manual_dir)."""
    from stjax.data import build

    root = tmp_path_factory.mktemp("tiny_videos")
    train, test = [], []
    for c, name in enumerate(["alpha", "beta", "gamma"]):
        (root / name).mkdir()
        for i in range(4):
            rel = f"{name}/v{i}.mp4"
            write_video(root / rel, num_frames=25 * (1 + (i % 3)), seed=10 * c + i)
            (test if i == 3 else train).append(rel)
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    data_dir = tmp_path_factory.mktemp("tiny_tfds")
    build.build("video_folder", manual_dir=str(root), data_dir=str(data_dir), config="tiny", fps=25, short_side=32,
                workers=1, verbose=False)
    return str(data_dir), str(root)


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache():
    """Identical programs compiled by several tests (the same init and train step in fresh closures, in any
    worker, or in a `python -m stjax.main` subprocess) are compiled once per run: every worker and subprocess
    uses the run's STJAX_COMPILATION_CACHE folder. A size limit makes jax read and write it under a file lock,
    so workers can share it."""
    import jax

    from stjax import main as main_lib

    jax.config.update("jax_compilation_cache_dir", os.environ["STJAX_COMPILATION_CACHE"])
    jax.config.update("jax_compilation_cache_max_size", main_lib.COMPILATION_CACHE_MAX_BYTES)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
