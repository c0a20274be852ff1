"""The scene-biased synthetic set: `make_synthetic --kind biased` and the `synthetic_biased` dataset. In train a
class comes with its own background in a fraction `bias` of its videos, in test independently of the class; the
background is the class's (a nearest-centroid rule on its colour finds it); the objects and their motion are
the motions set's; the set builds, is deterministic and refuses other arguments."""
import json
from collections import Counter

import av
import numpy as np
import pytest
from scipy import stats

from stjax.data import make_synthetic as ms

C = len(ms.CLASS_NAMES)
GENERATOR = dict(num_train=40, num_test=20, size=32, seconds=1.0, fps=25.0, seed=0, bias=0.8)


def _backgrounds(split, n, bias, seed=0):
    """(motion classes, background classes) of the first n videos of a split (round-robin classes)."""
    classes = np.arange(n) % C
    return classes, np.array([ms.biased_background(seed, split, i, int(c), bias) for i, c in enumerate(classes)])


def test_train_backgrounds_follow_the_class_test_backgrounds_do_not():
    n = 3000
    classes, bg = _backgrounds("train", n, 0.8)
    assert abs((bg == classes).mean() - 0.8) < 0.03  # sd 0.007
    shift = (bg - classes)[bg != classes] % C  # the other class: uniform over the nine others
    assert set(shift) == set(range(1, C)) and stats.chisquare(np.bincount(shift, minlength=C)[1:]).pvalue > 1e-3
    classes, bg = _backgrounds("test", n, 0.8)
    assert abs((bg == classes).mean() - 1 / C) < 0.025  # sd 0.0055
    table = np.zeros((C, C))
    np.add.at(table, (classes, bg), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3  # independent of the class
    assert stats.chisquare(table.sum(0)).pvalue > 1e-3  # and uniform
    # bias 1/10: no bias at all in train; 1: always the own; 0: never
    classes, bg = _backgrounds("train", n, 0.1)
    assert abs((bg == classes).mean() - 0.1) < 0.025
    table = np.zeros((C, C))
    np.add.at(table, (classes, bg), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3
    assert (np.equal(*_backgrounds("train", 50, 1.0))).all() and not np.equal(*_backgrounds("train", 50, 0.0)).any()
    # the test split's draws do not depend on the bias
    np.testing.assert_array_equal(_backgrounds("test", 50, 0.8)[1], _backgrounds("test", 50, 0.3)[1])


@pytest.mark.parametrize("bias", [-0.1, 1.5, float("nan")])
def test_bias_outside_zero_one_is_refused(bias, tmp_path):
    with pytest.raises(ValueError, match="bias"):
        ms.generate(tmp_path / "x", kind="biased", workers=1, progress=False, **{**GENERATOR, "bias": bias})
    assert not (tmp_path / "x").exists()


def test_objects_and_motion_are_the_motions_sets_only_the_background_differs():
    def centre(mask):  # coverage-weighted centre (x, y), pixels, per frame
        weights = np.arange(mask.shape[1])
        return np.stack([(mask.sum(1) * weights).sum(1), (mask.sum(2) * weights).sum(1)], 1) / mask.sum((1, 2))[:, None]

    for c in range(C):
        b = (3 * c + 1) % C
        frames, mask = ms.render_video(c, np.random.default_rng([4, c]), 48, 25, 25.0, return_mask=True, background=b)
        plain, plain_mask = ms.render_video(c, np.random.default_rng([4, c]), 48, 25, 25.0, return_mask=True)
        np.testing.assert_array_equal(mask, plain_mask)  # the objects are where and how the motions set has them
        solid, free = mask == 1.0, mask == 0.0
        np.testing.assert_array_equal(frames[solid], plain[solid])  # the same colours and lighting
        assert np.abs(frames[free].astype(int) - plain[free]).mean() > 5  # another background
        if ms.CLASS_NAMES[c] == "fall":  # and move as before (two signatures of tests/test_make_synthetic.py)
            path = centre(mask[:6])
            assert path[-1, 1] - path[0, 1] > 3 and np.abs(np.diff(path[:, 0])).sum() < 0.5
        if ms.CLASS_NAMES[c] == "orbit":
            assert (np.abs(np.diff(centre(mask[:6]), axis=0)).sum(0) > 1).all()
    with pytest.raises(ValueError, match="background"):
        ms.render_video(0, np.random.default_rng(0), 32, 2, 25.0, background=C)


def test_the_background_drifts_around_its_class_centre():
    """Within a second the background colour changes; averaged over a video it is its class's: nearer the mean
    of other videos with that background than the mean of those with any other."""
    means = {b: [] for b in range(C)}
    drift = []
    for b in range(C):
        for k in range(3):
            frames, mask = ms.render_video((b + 3 * k) % C, np.random.default_rng([9, b, k]), 32, 25, 25.0,
                                           return_mask=True, background=b)
            per_frame = np.array([f[m == 0].mean(0) for f, m in zip(frames.astype(float), mask)])
            drift.append(np.abs(per_frame - per_frame[0]).max())
            means[b].append(per_frame.mean(0))
    assert np.median(drift) > 5
    for b in range(C):
        for k in range(3):
            own = np.mean([means[b][j] for j in range(3) if j != k], axis=0)
            others = [np.mean(means[o], axis=0) for o in range(C) if o != b]
            assert np.linalg.norm(means[b][k] - own) < min(np.linalg.norm(means[b][k] - o) for o in others), (b, k)


@pytest.fixture(scope="module")
def biased_set(tmp_path_factory):
    """The scene-biased set (40 train, 20 test videos of 1 s at 32 px) rendered and built by `synthetic_biased`."""
    from stjax.data import build

    root = tmp_path_factory.mktemp("biased")
    videos, data_dir = root / "videos", root / "tfds"
    report = build.build("synthetic_biased", manual_dir=str(videos), data_dir=str(data_dir), workers=1,
                         verbose=False, generator_kwargs=dict(GENERATOR, workers=1))
    return videos, data_dir, report


def _decode(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_the_layout_its_backgrounds_and_the_built_dataset(biased_set):
    import tensorflow_datasets as tfds

    from stjax.data import builders

    videos, data_dir, report = biased_set
    meta = json.loads((videos / ms.META_NAME).read_text())
    assert meta["version"] == ms.BIASED_VERSION and meta["classes"] == list(ms.CLASS_NAMES)
    assert meta["args"] == {"num_train": 40, "num_test": 20, "size": 32, "seconds": 1.0, "fps": 25.0, "seed": 0,
                            "kind": "biased", "bias": 0.8}
    lists = {split: (videos / f"{split}.txt").read_text().split() for split in ("train", "test")}
    assert len(lists["train"]) == 40 and len(lists["test"]) == 20
    backgrounds = json.loads((videos / "backgrounds.json").read_text())
    assert sorted(backgrounds) == sorted(lists["train"] + lists["test"]) == \
        sorted(p.relative_to(videos).as_posix() for p in videos.rglob("*.mp4"))
    for split, rels in lists.items():
        assert Counter(rel.split("/")[0] for rel in rels) == Counter({name: len(rels) // C for name in ms.CLASS_NAMES})
        for rel in rels:
            name, file = rel.split("/")
            index = int(file[len(split) + 1:-4])
            assert backgrounds[rel] == ms.biased_background(0, split, index, ms.CLASS_NAMES.index(name), 0.8)

    # the background is the class's: a nearest-centroid rule on the mean colour of the background pixels (the
    # objects are brighter than any background) finds it, leaving each video out of its centroid
    rels = sorted(backgrounds)
    colour = np.array([(lambda f: f[f.max(-1) < 140].mean(0))(_decode(videos / rel).astype(float)) for rel in rels])
    bg = np.array([backgrounds[rel] for rel in rels])
    assert set(bg) == set(range(C))
    right = 0
    for i in range(len(rels)):
        keep = np.arange(len(rels)) != i
        centroids = np.array([colour[keep & (bg == b)].mean(0) if (keep & (bg == b)).any() else np.full(3, 1e9)
                              for b in range(C)])
        right += int(np.linalg.norm(centroids - colour[i], axis=1).argmin() == bg[i])
    assert right / len(rels) > 0.8, right

    assert report["written_per_split"] == {"train": 40, "test": 20} and report["skipped"] == 0
    builder = builders.load_builder("synthetic_biased", str(data_dir))
    names = builders.class_names(builder)  # the folders, sorted (as for `synthetic`)
    assert builders.label_type(builder) == "single" and names == tuple(sorted(ms.CLASS_NAMES))
    for split in ("train", "test"):
        examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
        assert sorted(e["video_id"].decode() for e in examples) == sorted(lists[split])
        for e in examples:
            assert names[int(e["label"])] == e["video_id"].decode().split("/")[0]
            assert e["frames"].shape == (25, 32, 32, 3)


def test_deterministic_idempotent_resumable_and_refuses_other_arguments(biased_set, tmp_path, capsys):
    from stjax.data.builders import SyntheticBiased

    videos, _, _ = biased_set
    args = SyntheticBiased.generator_arguments(str(videos))
    assert args == {**GENERATOR, "kind": "biased"} and isinstance(args["bias"], float)
    assert SyntheticBiased.generator_arguments(str(tmp_path / "none")) == {**ms.BIASED_DEFAULTS, "kind": "biased"}
    other = tmp_path / "again"  # a smaller set, 2 workers, from the command line: the same first videos, bytes
    ms.main(["--out", str(other), "--kind", "biased", "--bias", "0.8", "--num_train", "12", "--num_test", "4",
             "--size", "32", "--seconds", "1", "--workers", "2", "--quiet"])
    small = json.loads((other / "backgrounds.json").read_text())
    assert len(small) == 16 and small == {rel: b for rel, b in json.loads((videos / "backgrounds.json").read_text())
                                          .items() if rel in small}
    for rel in small:
        assert (other / rel).read_bytes() == (videos / rel).read_bytes(), rel
    capsys.readouterr()
    small_args = dict(GENERATOR, num_train=12, num_test=4)
    meta = ms.generate(other, kind="biased", workers=1, progress=True, **small_args)
    assert "nothing to do" in capsys.readouterr().out and meta["args"]["bias"] == 0.8
    (other / "backgrounds.json").unlink()  # an index file missing: completed again, the same
    ms.generate(other, kind="biased", workers=1, progress=False, **small_args)
    assert json.loads((other / "backgrounds.json").read_text()) == small
    with pytest.raises(ValueError, match="bias"):
        ms.generate(other, kind="biased", workers=1, progress=False, **{**small_args, "bias": 0.5})
    with pytest.raises(ValueError, match="mismatch"):
        ms.generate(other, kind="motions", workers=1, progress=False, **GENERATOR)
    # another bias: the same videos where the draw gives the same background
    half = tmp_path / "half"
    ms.generate(half, kind="biased", workers=1, progress=False, **dict(small_args, num_train=10, num_test=2, bias=0.1))
    for rel, b in json.loads((half / "backgrounds.json").read_text()).items():
        assert ((half / rel).read_bytes() == (other / rel).read_bytes()) == (b == small[rel]), rel
