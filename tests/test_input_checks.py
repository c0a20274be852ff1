"""What a run will read, checked before step 0 (issue 26): every split it uses, including the end-of-run probe's
and the kNN monitor's, for datasets already built and datasets built on first use; a crop larger than the
stored frames; a dataset whose videos changed since it was built."""
import json
import os
import subprocess
import sys

import pytest

from conftest import write_video
from stjax import configlib
from stjax.data import build, builders, inputs, pipeline
from stjax.data import config as data_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, dataset="video_folder/mine", manual_dir=None, **fields):
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), f"demo,dataset={dataset}")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.manual_dir = manual_dir
    config.data.augmentation.crop_size = 24
    configlib.set_fields(config, fields)
    return config


def _eval_config(tmp_path, protocol="knn", **fields):
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), f"{protocol},dataset=video_folder/mine")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.augmentation.crop_size = 24
    configlib.set_fields(config, fields)
    return config


def _folder(root, split_files=None, classes=("a", "b"), per_class=2, **video):
    """Class folders of tiny videos (40×32 unless told), and the split files {name: [relative paths]}."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            write_video(root / name / f"v{i}.mp4", num_frames=10, seed=10 * c + i, **video)
    for split, paths in (split_files or {}).items():
        (root / f"{split}.txt").write_text("".join(p + "\n" for p in paths))
    return str(root)


# --- splits ------------------------------------------------------------------------------------------------------


def test_a_folder_without_split_files_is_refused_before_pretraining_in_a_real_run(tmp_path):
    """The README's own case: `python -m stjax.main` on a folder of videos without split files used to pretrain,
    then fail in the end-of-run probe (no `test` split). It now stops before building or training, saying why."""
    videos = _folder(tmp_path / "videos")
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "stjax.main", "--config=configs/pretrain.py:demo,dataset=video_folder/mine",
         f"--config.data.manual_dir={videos}", f"--config.data.data_dir={tmp_path / 'tfds'}",
         "--config.data.augmentation.crop_size=24", "--config.model.backbone=r3d_micro", "--config.batch_size=8",
         "--config.total_steps=1", "--config.eval_batch_size=8", "--config.probe.epochs=1",
         "--config.data.test_views.short_side=32", f"--workdir={workdir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert ("data.eval_split='test' is invalid: video_folder/mine (to be built from " in result.stderr
            and "has no split 'test', and the linear probe after pretraining (final_probe='both') reads it; its "
                "splits: train. To fix it: set data.eval_split to one of: train; or pretrain without it: "
                "--config.final_probe=none; or list its videos in " in result.stderr), result.stderr[-3000:]
    assert "test.txt, one `class/file.mp4` per line (its split files now: none, so every video is in train" \
        in result.stderr
    assert not workdir.exists() and not (tmp_path / "tfds").exists()  # nothing trained, nothing built


def test_the_knn_monitor_needs_the_eval_split_and_without_readers_none_is_needed(tmp_path):
    videos = _folder(tmp_path / "videos")
    with pytest.raises(ValueError, match=r"the kNN monitor \(eval_every=5\) reads it.*pretrain without it: "
                                         r"--config.eval_every=0;"):
        data_config.validate(_config(tmp_path, manual_dir=videos, final_probe="none", eval_every=5))
    with pytest.raises(ValueError, match=r"final_probe='pretrained'\) and the kNN monitor \(eval_every=5\) read it.*"
                                         r"--config.final_probe=none --config.eval_every=0"):
        data_config.validate(_config(tmp_path, manual_dir=videos, final_probe="pretrained", eval_every=5))
    data_config.validate(_config(tmp_path, manual_dir=videos, final_probe="none", eval_every=0))
    with pytest.raises(ValueError, match="data.train_split='training' is invalid: .*pretraining reads it"):
        data_config.validate(_config(tmp_path, manual_dir=videos, final_probe="none", **{"data.train_split": "training"}))
    assert not (tmp_path / "tfds").exists()


def test_split_files_decide_the_splits_of_a_folder_to_be_built(tmp_path):
    videos = _folder(tmp_path / "videos", {"train": ["a/v0.mp4", "b/v0.mp4"], "val": ["a/v1.mp4", "b/v1.mp4"]})
    with pytest.raises(ValueError, match=r"has no split 'test'.*its splits: train, val\. To fix it: set "
                                         r"data.eval_split to one of: train, val;.*its split files now: train.txt, "
                                         r"val.txt\)"):
        data_config.validate(_config(tmp_path, manual_dir=videos))
    data_config.validate(_config(tmp_path, manual_dir=videos, **{"data.eval_split": "val"}))
    # a split whose files are all missing is not built, so it is not there either
    (tmp_path / "videos" / "test.txt").write_text("a/gone.mp4\n")
    with pytest.raises(ValueError, match="has no split 'test'"):
        data_config.validate(_config(tmp_path, manual_dir=videos))


def test_a_built_dataset_without_the_split_is_refused_for_pretraining_and_evaluation(tmp_path):
    videos = _folder(tmp_path / "videos")
    build.build("video_folder", manual_dir=videos, data_dir=str(tmp_path / "tfds"), config="mine", fps=25,
                short_side=32, workers=1, verbose=False)
    with pytest.raises(ValueError, match=r"video_folder/mine \(prepared in .*1.0.0\) has no split 'test'.* then "
                                         r"rebuild it: python -m stjax.data.build --dataset video_folder --config "
                                         r"mine --manual_dir .*videos --data_dir .*tfds"):
        data_config.validate(_config(tmp_path))
    data_config.validate(_config(tmp_path, final_probe="none"))
    # evaluation reads both splits: ensure_built (which evaluate.run calls before any work) refuses
    with pytest.raises(ValueError, match="data.eval_split='test' is invalid: .*the knn evaluation reads the train and "
                                         "eval splits"):
        data_config.ensure_built(_eval_config(tmp_path))
    assert data_config.ensure_built(_eval_config(tmp_path, **{"data.eval_split": "train"})).endswith("1.0.0")
    # and so does the evaluation's own validation, which `python -m stjax.main` runs before anything else
    from stjax.eval import evaluate

    weights = tmp_path / "backbone.npz"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="data.eval_split='test' is invalid: .*the knn evaluation reads"):
        evaluate.validate(_eval_config(tmp_path, init_from=str(weights)))
    evaluate.validate(_eval_config(tmp_path, init_from=str(weights), **{"data.eval_split": "train"}))


def test_the_synthetic_set_is_checked_before_it_is_rendered(tmp_path):
    config = _config(tmp_path, dataset="synthetic", manual_dir=str(tmp_path / "synthetic"))
    config.data.synthetic.update(num_train=4, num_test=0, size=32, seconds=0.5)
    with pytest.raises(ValueError, match=r"synthetic/default \(to be rendered into .*synthetic and built\) has no "
                                         r"split 'test'"):
        data_config.validate(config)
    config.data.synthetic.num_test = 2
    config.data.augmentation.crop_size = 48
    with pytest.raises(ValueError, match=r"data.augmentation.crop_size=48 is larger than the stored short side of "
                                         r"every video of split 'train' of synthetic/default .*short side 32 px\)"):
        data_config.validate(config)
    assert not (tmp_path / "synthetic").exists() and not (tmp_path / "tfds").exists()


# --- crop against the stored frames ------------------------------------------------------------------------------


def test_a_crop_larger_than_the_stored_short_side_is_refused_before_building(tmp_path):
    videos = _folder(tmp_path / "videos", {"train": ["a/v0.mp4", "b/v0.mp4"], "test": ["a/v1.mp4", "b/v1.mp4"]})
    config = _config(tmp_path, manual_dir=videos, **{"data.augmentation.crop_size": 300,
                                                     "data.test_views.short_side": None})
    with pytest.raises(ValueError, match=r"data.augmentation.crop_size=300 is larger than the stored short side \(256\) "
                                         r"of video_folder/mine \(to be built from .*\): every crop would be upsampled; "
                                         r"valid values: 1..256"):
        data_config.validate(config)
    assert not (tmp_path / "tfds").exists()


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory):
    """A synthetic set stored at its 32-px size, plus one 64×48 video listed in train.txt: stored short sides
    vary per video (train: 4 at 32 px, 1 at 48 px; test: 2 at 32 px). Returns (tmp dir, config)."""
    tmp = tmp_path_factory.mktemp("mixed")
    config = _config(tmp, dataset="synthetic", manual_dir=str(tmp / "synthetic"))
    config.data.synthetic.update(num_train=4, num_test=2, size=32, seconds=0.5)
    from stjax.data import make_synthetic

    make_synthetic.generate(config.data.manual_dir, progress=False, workers=1,
                            **{k: config.data.synthetic[k] for k in ("num_train", "num_test", "size", "seconds")})
    write_video(tmp / "synthetic" / "still" / "big.mp4", num_frames=12, width=64, height=48)
    with open(tmp / "synthetic" / "train.txt", "a") as f:
        f.write("still/big.mp4\n")
    data_config.ensure_built(config, verbose=False)
    return tmp, config


def test_the_pipeline_refuses_a_crop_larger_than_every_stored_frame(mixed_sizes):
    """Stored at the source size (no storage short side), a 56-px crop of 32/48-px frames was upsampled silently."""
    _, config = mixed_sizes
    with pytest.raises(ValueError, match=r"augmentation.crop_size=56 is larger than the stored short side of every "
                                         r"video of split 'train' of synthetic/default"):
        pipeline.pretrain_dataset("synthetic", data_dir=config.data.data_dir, batch_size=2,
                                  clips=pipeline.ClipSpec(rho=2, num_frames=4, stride=1),
                                  augmentation=data_config.augment_config(_with(config, crop_size=56)))


def test_stored_sizes_that_vary_per_video_refuse_or_warn_with_counts(mixed_sizes, capsys, monkeypatch):
    tmp, config = mixed_sizes
    report = inputs.read_report(builders.prepared_dir("synthetic", config.data.data_dir))
    assert report["stored_short_sides"] == {"train": {"32": 4, "48": 1}, "test": {"32": 2}}
    data_config.validate(config)  # 24 px fit every video
    assert "warning" not in capsys.readouterr().err
    config.data.augmentation.crop_size = 40
    config.final_probe = "none"  # train only: 4 of its 5 videos are smaller than 40 px
    data_config.validate(config)
    data_config.validate(config)
    warning = ("warning: data.augmentation.crop_size=40 is larger than the stored short side of 4 of 5 videos of split "
               "'train' of synthetic/default (short side 32..48 px): their crops are upsampled; crops of 1..32 fit "
               "every video")
    assert capsys.readouterr().err.count(warning) == 1  # once per process
    config.final_probe = "both"  # and the test split, whose every video is smaller
    with pytest.raises(ValueError, match="crop_size=40 is larger than the stored short side of every video of split "
                                         "'test'"):
        data_config.validate(config)
    with pytest.raises(ValueError, match=r"views.crop_size=40 is larger than the stored short side of every video of "
                                         r"split 'test' of synthetic/default \(prepared in"):
        pipeline.eval_dataset("synthetic", data_dir=config.data.data_dir, split="test", batch_size=2,
                              views=pipeline.ViewSpec(num_frames=4, stride=1, crop_size=40, temporal=1, spatial=1))
    with pytest.raises(ValueError, match=r"augmentation.crop_size=56 is larger than the stored short side of every "
                                         r"video of split 'train'.*valid values: 1..48, and 1..32 for crops that fit"):
        data_config.pretrain_batches(_with(config, crop_size=56), per_process_batch=2)

    # a dataset built before the sizes were recorded: they are read from its examples
    monkeypatch.setattr(inputs, "read_report", lambda path: {})
    monkeypatch.setattr(inputs, "_warned", set())
    config.final_probe = "none"
    data_config.validate(config)
    assert capsys.readouterr().err.count(warning) == 1


def _with(config, crop_size):
    config = config.copy_and_resolve_references()
    config.data.augmentation.crop_size = crop_size
    return config


# --- a changed source --------------------------------------------------------------------------------------------


def test_a_run_refuses_a_dataset_whose_videos_changed_since_it_was_built(tmp_path):
    videos = _folder(tmp_path / "videos", {"train": ["a/v0.mp4", "b/v0.mp4"], "test": ["a/v1.mp4", "b/v1.mp4"]})
    build.build("video_folder", manual_dir=videos, data_dir=str(tmp_path / "tfds"), config="mine", fps=25,
                short_side=32, workers=1, verbose=False)
    config = _config(tmp_path, manual_dir=videos)
    data_config.validate(config)  # unchanged
    (tmp_path / "videos" / "test.txt").write_text("a/v1.mp4\n")
    write_video(tmp_path / "videos" / "b" / "v2.mp4", num_frames=10, seed=99)
    with pytest.raises(inputs.SourceChangedError) as err:
        data_config.validate(config)
    message = str(err.value)
    assert message.startswith(f"data.manual_dir={videos!r} changed since video_folder/mine was built from it")
    assert "1 added (b/v2.mp4), 1 modified (test.txt). Rebuild it (only new and modified videos are decoded" in message
    assert (f"python -m stjax.data.build --dataset video_folder --config mine --manual_dir {videos} --data_dir "
            f"{tmp_path / 'tfds'}; or leave data.manual_dir unset to use the dataset as it was built") in message
    with pytest.raises(inputs.SourceChangedError):
        data_config.ensure_built(config)
    data_config.validate(_config(tmp_path))  # without a manual_dir: the dataset as built
    build.main(["--dataset", "video_folder", "--config", "mine", "--manual_dir", videos,
                "--data_dir", str(tmp_path / "tfds")])  # the command the message gives
    data_config.validate(config)
    builder = builders.load_builder("video_folder/mine", config.data.data_dir)
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 2, "test": 1}


def test_a_tfds_slice_of_a_split_is_a_split_and_a_bad_one_is_refused_naming_the_field(tmp_path):
    """A held-out part of the train split (`train[:80%]` / `train[80%:]`) is TFDS's own split syntax; the checks
    accept it, reading it reads the slice, and an empty or malformed slice fails before any compute."""
    assert inputs.split_parts("train[:80%]", {"train": 10, "test": 4}) == [("train", 8)]
    assert inputs.split_parts("train[7:]+test", {"train": 10, "test": 4}) == [("train", 3), ("test", 4)]
    with pytest.raises(KeyError):
        inputs.split_parts("val[:5]", {"train": 10})
    videos = _folder(tmp_path / "videos", {"train": ["a/v0.mp4", "b/v0.mp4", "a/v1.mp4"], "test": ["b/v1.mp4"]})
    build.build("video_folder", manual_dir=videos, data_dir=str(tmp_path / "tfds"), config="mine", fps=25,
                short_side=32, workers=1, verbose=False)
    config = _eval_config(tmp_path, **{"data.train_split": "train[:2]", "data.eval_split": "train[2:]"})
    data_config.check_dataset(config)
    views = pipeline.ViewSpec(temporal=1, spatial=1, num_frames=4, stride=1, crop_size=24, short_side=32)
    held_out = list(pipeline.eval_dataset("video_folder/mine", batch_size=4, views=views, split="train[2:]",
                                          data_dir=str(tmp_path / "tfds")).as_numpy_iterator())
    assert int(sum(b["mask"].sum() for b in held_out)) == 1
    for bad, message in [("train[3:]", "selects no video"), ("train[:9]", "incompatible with 3 examples"),
                         ("train[", "Unrecognized split format"), ("val[:1]", "has no split 'val\\[:1\\]'")]:
        with pytest.raises(ValueError, match=r"data.eval_split='" + bad.replace("[", r"\[") + r"' is invalid: .*"
                           + message):
            data_config.check_dataset(_eval_config(tmp_path, **{"data.eval_split": bad}))
