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


def _centroid(mask):
    """Coverage-weighted centre (x, y) in pixels per frame: [T, 2]."""
    h, w = mask.shape[1:]
    total = mask.sum(axis=(1, 2))
    return np.stack([(mask.sum(1) * np.arange(w)).sum(1) / total, (mask.sum(2) * np.arange(h)).sum(1) / total], 1)


def test_design_nuisances_drift_class_persists():
    size, fps, nf = 64, 25.0, 50
    late = 25  # one second later
    obj_shift, bg_shift = [], []
    for c in range(len(ms.CLASS_NAMES)):
        for k in range(3):
            frames, mask = ms.render_video(c, np.random.default_rng([7, c, k]), size, nf, fps, return_mask=True)
            assert frames.shape == (nf, size, size, 3) and frames.dtype == np.uint8
            assert mask.shape == (nf, size, size) and 0 <= mask.min() and mask.max() <= 1
            f = frames.astype(np.float64)
            # the object colour one second apart (both frames with objects fully drawn)
            t0 = int(mask.sum((1, 2)).argmax())
            t1 = (t0 + late) % nf
            obj0, obj1 = mask[t0] > 0.99, mask[t1] > 0.99
            if obj0.sum() > 20 and obj1.sum() > 20:
                obj_shift.append(np.linalg.norm(f[t0][obj0].mean(0) - f[t1][obj1].mean(0)))
            bg0, bg1 = mask[0] == 0, mask[late] == 0
            bg_shift.append(np.linalg.norm(f[0][bg0].mean(0) - f[late][bg1].mean(0)))
    # colours of the objects and of the background change within a second (RGB distance, 0..441)
    assert len(obj_shift) > 15 and np.median(obj_shift) > 60
    assert np.median(bg_shift) > 20

    # Nuisances do not depend on the class: same rng state, different class ->
    # identical pixels wherever neither class's objects cover the frame.
    for a, b in [(0, 7), (2, 9), (4, 5), (1, 6)]:
        fa, ma = ms.render_video(a, np.random.default_rng(11), size, nf, fps, return_mask=True)
        fb, mb = ms.render_video(b, np.random.default_rng(11), size, nf, fps, return_mask=True)
        free = (ma == 0) & (mb == 0)
        assert free.mean() > 0.5
        np.testing.assert_array_equal(fa[free], fb[free])
        assert not np.array_equal(ma, mb)


@pytest.mark.parametrize("name", ms.CLASS_NAMES)
def test_each_class_moves_its_own_way(name):
    """The signature of each motion class in the objects' coverage over 0.2 s (no wrap-around
    happens in these draws) and over 1 s."""
    c = ms.CLASS_NAMES.index(name)
    for seed in range(3):
        _, mask = ms.render_video(c, np.random.default_rng([3, seed]), 64, 25, 25.0, return_mask=True)
        area = mask.sum((1, 2))
        change = np.abs(mask[1:] - mask[:-1]).sum((1, 2)).mean()  # pixels per frame
        if name not in ("blink", "still"):
            path = _centroid(mask[:6])  # over 0.2 s
            dx, dy = np.abs(np.diff(path, axis=0)).sum(0)
            vy = path[-1, 1] - path[0, 1]
        if name == "still":
            assert change == 0
            continue
        assert change > 2, (name, change)
        if name == "slide":
            assert dx > 3 and dy < 0.5
        elif name in ("fall", "rise"):
            assert dy > 3 and dx < 0.5
            assert (vy > 0) == (name == "fall")
        elif name == "orbit":
            assert dx > 1 and dy > 1
        elif name in ("spin",):
            assert area.max() / area.min() < 1.2
        elif name == "pulse":
            assert area.max() / area.min() > 1.5
        elif name == "blink":
            assert area.min() < 0.2 * area.max()
        elif name in ("shake", "bob"):
            pos = _centroid(mask)[:, 0 if name == "shake" else 1]
            other = _centroid(mask)[:, 1 if name == "shake" else 0]
            assert pos.max() - pos.min() > 3 and other.max() - other.min() < 0.3 * (pos.max() - pos.min())
