"""Tests for the synthetic video generator (numpy + PyAV only, no jax/TF)."""
import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from stjax.data import make_synthetic as ms

TINY = dict(num_train=10, num_test=5, size=32, seconds=1.0, fps=25.0)


def _decode(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate = float(stream.average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    return frames, rate


def _mp4s(root):
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*.mp4"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    meta = ms.generate(out, seed=0, workers=1, progress=False, **TINY)
    return out, meta


def test_tree_lists_and_decoding(tiny):
    out, meta = tiny
    assert len(ms.CLASS_NAMES) == len(set(ms.CLASS_NAMES)) == 10
    # only class folders are directories; meta/list files present; no leftovers
    assert {p.name for p in out.iterdir() if p.is_dir()} == set(ms.CLASS_NAMES)
    assert {p.name for p in out.iterdir() if p.is_file()} == {"train.txt", "test.txt", ms.META_NAME}
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert json.loads((out / ms.META_NAME).read_text()) == meta
    assert meta["classes"] == list(ms.CLASS_NAMES) and meta["version"] == ms.VERSION

    train = (out / "train.txt").read_text().split()
    test = (out / "test.txt").read_text().split()
    assert len(train) == 10 and len(test) == 5
    assert not set(train) & set(test)
    assert sorted(train + test) == _mp4s(out)
    for lines in (train, test):
        counts = Counter(rel.split("/")[0] for rel in lines)
        assert set(counts) <= set(ms.CLASS_NAMES)
        per_class = [counts.get(c, 0) for c in ms.CLASS_NAMES]
        assert max(per_class) - min(per_class) <= 1
        for rel in lines:
            cls, name = rel.split("/")
            assert name.startswith(("train_", "test_")) and name.endswith(".mp4")

    for rel in train + test:
        frames, rate = _decode(out / rel)
        assert frames.dtype == np.uint8 and frames.shape[1:] == (32, 32, 3)
        assert abs(frames.shape[0] - 25) <= 1
        assert rate == pytest.approx(25.0, rel=1e-3)


def test_deterministic_across_runs_and_workers(tiny, tmp_path):
    out, _ = tiny
    other = tmp_path / "w2"
    ms.generate(other, seed=0, workers=2, progress=False, **TINY)
    assert _mp4s(other) == _mp4s(out)
    for rel in _mp4s(out):
        a, _ = _decode(out / rel)
        b, _ = _decode(other / rel)
        np.testing.assert_array_equal(a, b)
        # single-threaded libx264: even the bytes match
        assert (out / rel).read_bytes() == (other / rel).read_bytes()

    seed1 = tmp_path / "seed1"
    ms.generate(seed1, seed=1, workers=1, progress=False, **TINY)
    for rel in _mp4s(out)[:3]:
        a, _ = _decode(out / rel)
        b, _ = _decode(seed1 / rel)
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_idempotent_and_mismatch(tiny, tmp_path, capsys):
    out, meta = tiny
    before = {rel: (out / rel).stat().st_mtime_ns for rel in _mp4s(out)}
    meta_mtime = (out / ms.META_NAME).stat().st_mtime_ns
    again = ms.generate(out, seed=0, workers=1, progress=True, **TINY)
    assert again == meta
    assert "nothing to do" in capsys.readouterr().out
    assert {rel: (out / rel).stat().st_mtime_ns for rel in _mp4s(out)} == before
    assert (out / ms.META_NAME).stat().st_mtime_ns == meta_mtime

    with pytest.raises(ValueError, match="mismatch") as err:
        ms.generate(out, seed=3, workers=1, progress=False, **TINY)
    assert "seed" in str(err.value)
    with pytest.raises(ValueError, match="mismatch"):
        ms.generate(out, **{**TINY, "size": 48}, seed=0, workers=1, progress=False)
    assert {rel: (out / rel).stat().st_mtime_ns for rel in _mp4s(out)} == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    with pytest.raises(FileExistsError):
        ms.generate(foreign, seed=0, workers=1, progress=False, **TINY)


def test_missing_file_is_regenerated_identically(tmp_path):
    out = tmp_path / "ds"
    args = dict(TINY, num_train=3, num_test=0)
    ms.main(["--out", str(out), "--num_train", "3", "--num_test", "0", "--size", "32",
             "--seconds", "1.0", "--fps", "25", "--workers", "1", "--quiet"])
    rel = (out / "train.txt").read_text().split()[1]
    data = (out / rel).read_bytes()
    (out / rel).unlink()
    ms.generate(out, seed=0, workers=1, progress=False, **args)
    assert (out / rel).read_bytes() == data


def test_design_nuisances_drift_class_persists():
    size, fps, nf = 64, 25.0, 50
    late = 25  # one second later
    obj_shift, bg_shift, area_ratio = [], [], []
    for c in range(len(ms.CLASS_NAMES)):
        for k in range(3):
            frames, mask = ms.render_video(c, np.random.default_rng([7, c, k]), size, nf, fps,
                                           return_mask=True)
            assert frames.shape == (nf, size, size, 3) and frames.dtype == np.uint8
            f = frames.astype(np.float64)
            obj0, obj1 = mask[0] > 0.99, mask[late] > 0.99
            bg0, bg1 = mask[0] == 0, mask[late] == 0
            obj_shift.append(np.linalg.norm(f[0][obj0].mean(0) - f[late][obj1].mean(0)))
            bg_shift.append(np.linalg.norm(f[0][bg0].mean(0) - f[late][bg1].mean(0)))
            # shape persists: object area (coverage) is the same in every frame
            areas = mask.sum(axis=(1, 2))
            area_ratio.append(areas.max() / areas.min())
    # colour of the object changes a lot within one second (RGB distance, 0..441)
    assert np.median(obj_shift) > 100 and min(obj_shift) > 60
    # background colour drifts too
    assert np.median(bg_shift) > 25
    assert max(area_ratio) < 1.1

    # Nuisances do not depend on the class: same rng state, different class ->
    # identical pixels wherever neither object covers the frame.
    for a, b in [(0, 7), (2, 9), (4, 5)]:
        fa, ma = ms.render_video(a, np.random.default_rng(11), size, nf, fps, return_mask=True)
        fb, mb = ms.render_video(b, np.random.default_rng(11), size, nf, fps, return_mask=True)
        free = (ma == 0) & (mb == 0)
        assert free.mean() > 0.5
        np.testing.assert_array_equal(fa[free], fb[free])
        assert not np.array_equal(ma, mb)  # but shape/motion differ

    # Same rng state -> same object size R, so the shape alone sets the area:
    # the ring's hole makes it about 0.8x the disk's.
    def norm_area(c, seed):
        _, m = ms.render_video(c, np.random.default_rng(seed), size, 2, fps, return_mask=True)
        return m[0].sum()

    disk = ms.CLASS_NAMES.index("disk_bounce")
    ring = ms.CLASS_NAMES.index("ring_bounce")
    assert 0.7 < norm_area(ring, 5) / norm_area(disk, 5) < 0.9
