"""Builders for the official dataset layouts (Kinetics, UCF101, HMDB51, SSv2): labels, splits,
the skip report, resuming an interrupted build, and the Apache Beam path."""
import glob
import json
import os

import pytest
import tensorflow_datasets as tfds

from conftest import write_audio_only, write_video
from stjax.data import build, builders, video_io


def _video(path, seed=0, codec="libx264", **kwargs):
    """A tiny real video (32×24, 6 frames at 12 fps unless told otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"num_frames": 6, "width": 32, "height": 24, "fps": 12} | kwargs
    return write_video(path, codec=codec, seed=seed, **kwargs)


def _corrupt(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)


def _examples(data_dir, dataset):
    """{split: {video id: example}} of a prepared dataset, frames left as JPEG bytes."""
    builder = builders.load_builder(dataset, data_dir)
    out = {}
    for split in builder.info.splits:
        ds = builder.as_dataset(split=split, decoders={"frames": tfds.decode.SkipDecoding()})
        out[split] = {}
        for ex in tfds.as_numpy(ds):
            out[split][ex["video_id"].decode()] = {k: (list(v) if k == "frames" else v) for k, v in ex.items()}
    return builder, out


def _labels(examples, names):
    return {split: {vid: (names[ex["label"]] if ex["label"] >= 0 else None) for vid, ex in exs.items()}
            for split, exs in examples.items()}


def _build(dataset, root, data_dir, **kwargs):
    kwargs = {"workers": 1, "verbose": False, "fps": 12, "short_side": 24, "config": "t"} | kwargs
    return build.build(dataset, manual_dir=str(root), data_dir=str(data_dir), **kwargs)


def _kinetics_tree(root):
    """Official CSVs; videos under per-split and per-class folders, named with and without the
    time suffix; one listed video missing, one corrupt, one audio-only, one unlisted."""
    root.mkdir()
    (root / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,aaa,10,20,train\n"
        '"air drumming",bbb,0,10,train\n'
        "abseiling,ccc,5,15,train\n"          # no file: missing
        '"air drumming",ddd,1,11,train\n'     # corrupt file
        "abseiling,aaa,10,20,train\n"         # listed twice
    )
    (root / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "zumba,eee,3,13,validate\n"
        "abseiling,fff,0,10,validate\n"       # audio only
    )
    (root / "test.csv").write_text("youtube_id,time_start,time_end,split\nggg,0,10,test\n")  # no label column
    _video(root / "train" / "abseiling" / "aaa_000010_000020.mp4", seed=1)
    _video(root / "train" / "bbb.webm", seed=2, codec="libvpx-vp9", width=24, height=32)  # portrait, bare id
    _corrupt(root / "train" / "air_drumming" / "ddd_000001_000011.mp4")
    _video(root / "val" / "zumba" / "eee_000003_000013.avi", seed=3, codec="mpeg4")
    write_audio_only(root / "val" / "fff_000000_000010.mp4")
    _video(root / "test" / "ggg_000000_000010.mp4", seed=4, timestamps=[0, 0.05, 0.3, 0.35, 0.6, 0.9])  # VFR
    _video(root / "train" / "abseiling" / "zzz_000001_000002.mp4", seed=5)  # in no CSV
    return root


def test_kinetics_labels_splits_and_skip_report(tmp_path):
    root = _kinetics_tree(tmp_path / "k400")
    report = _build("kinetics400", root, tmp_path / "tfds")

    builder, ex = _examples(str(tmp_path / "tfds"), "kinetics400/t")
    names = builder.info.features["label"].names
    assert names == ["abseiling", "air drumming", "zumba"]  # from the CSVs, sorted
    assert _labels(ex, names) == {
        "train": {"aaa_000010_000020": "abseiling", "bbb_000000_000010": "air drumming"},
        "validation": {"eee_000003_000013": "zumba"},
        "test": {"ggg_000000_000010": None},  # unlabelled: -1
    }
    assert (ex["train"]["bbb_000000_000010"]["height"], ex["train"]["bbb_000000_000010"]["width"]) == (32, 24)
    assert ex["test"]["ggg_000000_000010"]["num_frames"] >= 11  # 0.9 s + one frame on a 12 fps grid
    assert report["written_per_split"] == {"train": 2, "validation": 1, "test": 1}
    reasons = {(s["path"], s["split"]): s["reason"] for s in report["skipped_files"]}
    assert sorted(reasons) == [
        ("ccc_000005_000015", "train"), ("train/abseiling/aaa_000010_000020.mp4", "train"),
        ("train/air_drumming/ddd_000001_000011.mp4", "train"), ("val/fff_000000_000010.mp4", "validation"),
    ]
    assert "no video file is named ccc_000005_000015.* or ccc.*" in reasons["ccc_000005_000015", "train"]
    assert reasons["train/abseiling/aaa_000010_000020.mp4", "train"] == "listed twice in train.csv"
    assert reasons["val/fff_000000_000010.mp4", "validation"] == "no video stream"
    assert report["missing"] == 1 and report["skipped"] == 4
    assert report["ignored_files"] == ["train/abseiling/zzz_000001_000002.mp4"]
    assert any("3 classes, kinetics400 has 400" in w["warning"] for w in report["warnings"])
    config_dir = tmp_path / "tfds" / "kinetics400" / "t"
    assert sorted(os.listdir(config_dir)) == ["1.0.0"]  # the decode cache is gone
    assert json.loads((config_dir / "1.0.0" / build.REPORT_NAME).read_text())["missing"] == 1


def _ucf_tree(root):
    """Three classes whose classInd order is not alphabetical; fold 1 tests on group 1,
    fold 2 on group 2."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    classes = ["Basketball", "ApplyEyeMakeup", "Archery"]
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(classes)))
    for c, name in enumerate(classes):
        for g in (1, 2):
            _video(root / "UCF-101" / name / f"v_{name}_g0{g}_c01.avi", seed=10 * c + g, codec="mpeg4")
    for fold, test_group in ((1, 1), (2, 2)):
        train_group = 3 - test_group
        train = [f"{n}/v_{n}_g0{train_group}_c01.avi {i + 1}" for i, n in enumerate(classes)]
        test = [f"{n}/v_{n}_g0{test_group}_c01.avi" for n in classes]
        if fold == 1:
            train.append("Archery/v_Archery_g02_c01.avi 1")  # disagrees with classInd (listed twice too)
            test.append("Archery/v_Archery_g09_c01.avi")      # no such file
        (lists / f"trainlist0{fold}.txt").write_text("\r\n".join(train) + "\r\n")
        (lists / f"testlist0{fold}.txt").write_text("\r\n".join(test) + "\r\n")
    return root


def test_ucf101_folds_follow_class_index(tmp_path):
    root = _ucf_tree(tmp_path / "ucf")
    data_dir = tmp_path / "tfds"
    report1 = build.build("ucf101", manual_dir=str(root), data_dir=str(data_dir), workers=1, verbose=False)
    report2 = build.build("ucf101", manual_dir=str(root), data_dir=str(data_dir), workers=1, verbose=False,
                          split_fold=2)

    builder, ex1 = _examples(str(data_dir), "ucf101")  # plain name = fold 1
    assert builder.info.config_name == "fold1" and builder.info.metadata["split_fold"] == 1
    assert builder.info.features["label"].names == ["Basketball", "ApplyEyeMakeup", "Archery"]
    assert {vid: ex["label"] for vid, ex in ex1["test"].items()} == {
        "Basketball/v_Basketball_g01_c01.avi": 0, "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": 1,
        "Archery/v_Archery_g01_c01.avi": 2,
    }
    assert sorted(ex1["train"]) == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi", "Archery/v_Archery_g02_c01.avi",
                                    "Basketball/v_Basketball_g02_c01.avi"]
    reasons = {s["path"]: s["reason"] for s in report1["skipped_files"]}
    assert reasons == {
        "UCF-101/Archery/v_Archery_g02_c01.avi":
            "trainlist01.txt line 4: class id 1 disagrees with classInd.txt (Archery is 3)",
        "UCF-101/Archery/v_Archery_g09_c01.avi": "listed in testlist01.txt but not found",
    }
    assert report1["missing"] == 1

    builder2, ex2 = _examples(str(data_dir), "ucf101/fold2")
    assert builder2.info.metadata["split_fold"] == 2
    assert sorted(ex2["test"]) == sorted(ex1["train"]) and sorted(ex2["train"]) == sorted(ex1["test"])
    assert report2["skipped"] == 0 and report2["written_per_split"] == {"train": 3, "test": 3}
    assert sorted(d for d in os.listdir(data_dir / "ucf101") if not d.startswith(".")) == ["fold1", "fold2"]


def test_hmdb51_split_codes(tmp_path):
    root = tmp_path / "hmdb"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \nd.avi 7 \n")
    (splits / "pick_test_split1.txt").write_text("e.avi 1 \nf.avi 2 \n")
    for seed, rel in enumerate(["brush_hair/a.avi", "brush_hair/b.avi", "brush_hair/c.avi", "brush_hair/d.avi",
                                "pick/e.avi", "pick/f.avi"]):
        _video(root / "hmdb51_org" / rel, seed=seed, codec="mpeg4")
    report = _build("hmdb51", root, tmp_path / "tfds", split_fold=1)

    builder, ex = _examples(str(tmp_path / "tfds"), "hmdb51/t")
    assert builder.info.metadata["split_fold"] == 1
    assert _labels(ex, builder.info.features["label"].names) == {
        "train": {"brush_hair/a.avi": "brush_hair", "pick/e.avi": "pick"},
        "test": {"brush_hair/b.avi": "brush_hair", "pick/f.avi": "pick"},
    }
    assert [(s["path"], s["reason"]) for s in report["skipped_files"]] == [
        ("hmdb51_org/brush_hair/d.avi", "brush_hair_test_split1.txt line 4: code '7' is not 0, 1 or 2")]
    assert any(w["warning"] == "1 videos marked 0 (not used) in split fold 1" for w in report["warnings"])


def test_ssv2_templates_without_brackets_and_unlabelled_test(tmp_path):
    root = tmp_path / "ssv2"
    labels = root / "labels"
    labels.mkdir(parents=True)
    (labels / "labels.json").write_text(json.dumps(
        {"Putting something on something": "0", "Holding something next to something": "1"}))
    (labels / "train.json").write_text(json.dumps([
        {"id": "11", "label": "holding pen next to cup", "template": "Holding [something] next to [something]",
         "placeholders": ["pen", "cup"]},
        {"id": "12", "label": "putting a box on a chair", "template": "Putting [something] on [something]",
         "placeholders": ["a box", "a chair"]},
        {"id": "13", "label": "dropping a pen", "template": "Dropping [something]", "placeholders": ["a pen"]},
    ]))
    (labels / "validation.json").write_text(json.dumps([
        {"id": "21", "label": "putting x on y", "template": "Putting [something] on [something]",
         "placeholders": ["x", "y"]}]))
    (labels / "test.json").write_text(json.dumps([{"id": "31"}, {"id": "32"}]))
    for seed, vid in enumerate(["11", "12", "13", "21", "31"]):
        _video(root / "20bn-something-something-v2" / f"{vid}.webm", seed=seed, codec="libvpx-vp9")
    report = _build("ssv2", root, tmp_path / "tfds")

    builder, ex = _examples(str(tmp_path / "tfds"), "ssv2/t")
    assert _labels(ex, builder.info.features["label"].names) == {
        "train": {"11": "Holding something next to something", "12": "Putting something on something"},
        "validation": {"21": "Putting something on something"},
        "test": {"31": None},
    }
    assert ex["train"]["12"]["label"] == 0 and ex["test"]["31"]["label"] == -1
    reasons = {s["path"]: s["reason"] for s in report["skipped_files"]}
    assert reasons == {
        "20bn-something-something-v2/13.webm": "label 'Dropping something' is not in the class list (2 classes)",
        "32": "listed in labels/test.json but no video file is named 32.*",
    }


def test_interrupted_build_resumes_without_redoing_decoded_videos(tmp_path, monkeypatch):
    root = _kinetics_tree(tmp_path / "k400")
    # The reference build runs in 2 worker processes: the parallel path gives the same dataset.
    reference = _build("kinetics400", root, tmp_path / "ref", workers=2)
    _, expected = _examples(str(tmp_path / "ref"), "kinetics400/t")

    class Killed(BaseException):
        pass

    real_decode = video_io.decode_video
    calls = []

    def decode(path, **kwargs):
        calls.append(os.path.relpath(path, root))
        if kill_after is not None and len(calls) > kill_after:
            raise Killed
        return real_decode(path, **kwargs)

    monkeypatch.setattr(video_io, "decode_video", decode)
    data_dir = tmp_path / "tfds"
    kill_after = 3
    with pytest.raises(Killed):
        _build("kinetics400", root, data_dir)
    # Nothing loadable was left, only the 3 decoded videos in the cache.
    with pytest.raises(FileNotFoundError, match="not built"):
        builders.load_builder("kinetics400/t", str(data_dir))
    config_dir = data_dir / "kinetics400" / "t"
    assert len(glob.glob(str(config_dir / ".partial" / "*" / "*.frames"))) == 3
    stale = config_dir / "incomplete.ABC123_1.0.0"  # what a SIGKILLed TFDS writer leaves
    stale.mkdir()
    (stale / "bucket_0.tmp").write_bytes(b"partial")

    done_before, kill_after = list(calls[:3]), None
    calls.clear()
    report = _build("kinetics400", root, data_dir)
    total = 6  # videos the CSVs list that exist (the missing one and the duplicate are not decoded)
    assert len(calls) == total - 3 and not set(calls) & set(done_before)
    assert (report["decoded"], report["reused_from_interrupted_build"]) == (total - 3, 3)
    assert sorted(os.listdir(config_dir)) == ["1.0.0"]  # cache and stale output removed
    _, resumed = _examples(str(data_dir), "kinetics400/t")
    assert resumed.keys() == expected.keys()
    for split in expected:
        assert resumed[split].keys() == expected[split].keys()
        for vid, ex in expected[split].items():
            got = resumed[split][vid]
            assert got.keys() == ex.keys() and all(_same(got[k], ex[k]) for k in ex), (split, vid)
    for key in ("written_per_split", "missing", "ignored_files"):
        assert report[key] == reference[key]
    assert _records(report["skipped_files"]) == _records(reference["skipped_files"])
    assert _records(report["warnings"]) == _records(reference["warnings"])


def _same(a, b):
    return a == b if isinstance(a, (list, bytes, str)) else (a == b).all()


def _records(records):
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def test_beam_build_matches_the_local_build(tmp_path):
    pytest.importorskip("apache_beam", reason="Apache Beam is the optional extra `beam` (pip install 'stjax[beam]')")
    root = _kinetics_tree(tmp_path / "k400")
    local = _build("kinetics400", root, tmp_path / "local")
    beam = _build("kinetics400", root, tmp_path / "beam", beam_runner="DirectRunner",
                  beam_options="direct_num_workers=1")
    _, expected = _examples(str(tmp_path / "local"), "kinetics400/t")
    _, got = _examples(str(tmp_path / "beam"), "kinetics400/t")
    assert {s: sorted(e) for s, e in got.items()} == {s: sorted(e) for s, e in expected.items()}
    for split in expected:
        for vid, ex in expected[split].items():
            assert all(_same(got[split][vid][k], ex[k]) for k in ex), (split, vid)
    assert beam["written_per_split"] == local["written_per_split"]
    assert _records(beam["skipped_files"]) == _records(local["skipped_files"])
    assert _records(beam["warnings"]) == _records(local["warnings"])
    assert sorted(os.listdir(tmp_path / "beam" / "kinetics400" / "t")) == ["1.0.0"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="kinetics400", split_fold=2), "split_fold: kinetics400 has no official split folds; "
                                                "valid for: hmdb51, ucf101"),
    (dict(dataset="ucf101", split_fold=4), "split_fold must be one of 1, 2, 3, got 4"),
    (dict(dataset="ucf101", config="fold1", split_fold=2), "config 'fold1' of ucf101 has fixed options"),
    (dict(dataset="ssv2", beam_options="direct_num_workers=2"), "beam_options: given without beam_runner"),
])
def test_bad_build_arguments_name_the_field(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build.build(manual_dir=str(tmp_path), data_dir=str(tmp_path / "tfds"), verbose=False, **kwargs)


@pytest.mark.parametrize("dataset, expected", [
    ("ucf101", "no ucfTrainTestlist/classInd.txt"),
    ("hmdb51", "no testTrainMulti_7030_splits/"),
    ("kinetics700", "no Kinetics annotation CSV"),
    ("ssv2", "no labels.json"),
])
def test_missing_annotations_say_what_layout_is_expected(tmp_path, dataset, expected):
    (tmp_path / "videos").mkdir()
    with pytest.raises(FileNotFoundError, match=expected):
        build.build(dataset, manual_dir=str(tmp_path / "videos"), data_dir=str(tmp_path / "tfds"), verbose=False)


def test_an_official_layout_to_be_built_is_checked_for_the_splits_a_run_reads(tmp_path):
    """Before building on first use, the splits come from the layout's annotations (issue 26): Kinetics' CSVs give
    train, validation and test; a CSV that is not there gives no split."""
    from stjax import configlib
    from stjax.data import config as data_config

    root = _kinetics_tree(tmp_path / "k400")
    config = configlib.load_config_file(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs",
                                                     "pretrain.py"), "demo,dataset=kinetics400")
    config.data.update(data_dir=str(tmp_path / "tfds"), manual_dir=str(root), eval_split="validation")
    config.data.augmentation.crop_size = 24
    data_config.validate(config)
    (root / "validate.csv").unlink()
    with pytest.raises(ValueError, match=r"data.eval_split='validation' is invalid: kinetics400/default \(to be built "
                                         r"from .*k400\) has no split 'validation'.*its splits: test, train\..*the "
                                         r"layout is described at the top of stjax/data/builders/kinetics.py"):
        data_config.validate(config)
    assert not (tmp_path / "tfds").exists()
