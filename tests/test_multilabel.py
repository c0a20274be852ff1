"""Multi-hot labels from the builder through the pipeline to the probe and fine-tuning (`video_multilabel`)."""
import json
import os

import numpy as np
import pytest

from conftest import write_video

CLASSES = ["cut", "pour", "stir", "wash"]
TRAIN = {"k/v0.mp4": "cut;pour", "k/v1.mp4": "stir", "k/v2.mp4": "", "k/v3.mp4": "wash; cut",
         "k/v4.mp4": "pour;stir;wash", "k/v5.mp4": "cut;cut"}
TEST = {"t/a.mp4": "pour", "t/b.mp4": "stir;wash", "t/c.mp4": "cut"}


def _multi_hot(text):
    names = {x.strip() for x in text.split(";") if x.strip()}
    return np.array([c in names for c in CLASSES], np.int32)


@pytest.fixture(scope="module")
def multilabel_dataset(tmp_path_factory):
    """A built `video_multilabel/tiny`: 4 classes, 6 train and 3 test videos (32 px short side), plus a row with
    an unknown class and one with a missing file. Returns (data_dir, build summary)."""
    from stjax.data import build

    root = tmp_path_factory.mktemp("multilabel_videos")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for i, rel in enumerate([*TRAIN, *TEST, "k/odd.mp4"]):
        (root / rel).parent.mkdir(exist_ok=True)
        write_video(root / rel, num_frames=25 + 10 * i, seed=i)
    rows = {"train": {**TRAIN, "k/odd.mp4": "cut;fry"}, "test": {**TEST, "t/gone.mp4": "cut"}}
    for split, entries in rows.items():
        (root / f"{split}.csv").write_text("path,labels\n" + "".join(f"{p},{l}\n" for p, l in entries.items()))
    data_dir = tmp_path_factory.mktemp("multilabel_tfds")
    report = build.build("video_multilabel", manual_dir=str(root), data_dir=str(data_dir), config="tiny", fps=25,
                         short_side=32, workers=1, verbose=False)
    return str(data_dir), report


def test_the_builder_stores_each_videos_classes_and_reports_bad_rows(multilabel_dataset):
    import tensorflow_datasets as tfds

    from stjax.data import builders

    data_dir, report = multilabel_dataset
    builder = builders.load_builder("video_multilabel/tiny", data_dir)
    assert builders.label_type(builder) == builders.label_type("video_multilabel") == "multi_hot"
    assert builders.class_names(builder) == tuple(CLASSES)
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {"train": 6, "test": 3}
    ds = builder.as_dataset(split="train+test", decoders={"frames": tfds.decode.SkipDecoding()})
    stored = {ex["video_id"].decode(): sorted(ex["label"].tolist()) for ex in tfds.as_numpy(ds)}
    want = {p: sorted(np.flatnonzero(_multi_hot(l)).tolist()) for p, l in {**TRAIN, **TEST}.items()}
    assert stored == want
    reasons = {r["path"]: r["reason"] for r in report["skipped_files"]}
    assert "'fry' is not in the class list" in reasons["k/odd.mp4"]
    assert "t/gone.mp4 not found" in reasons["t/gone.mp4"] and report["missing"] == 1
    assert report["skipped"] == 2 and report["written"] == 9


def test_a_bad_layout_names_what_is_wrong(tmp_path):
    from stjax.data import build

    (tmp_path / "classes.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="lists classes more than once: a"):
        build.build("video_multilabel", manual_dir=str(tmp_path), data_dir=str(tmp_path / "out"), workers=1,
                    verbose=False)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    (tmp_path / "train.csv").write_text("file,classes\nx.mp4,a\n")
    with pytest.raises(ValueError, match="the first row must be the header path,labels"):
        build.build("video_multilabel", manual_dir=str(tmp_path), data_dir=str(tmp_path / "out"), workers=1,
                    verbose=False)


def test_batches_carry_multi_hot_labels_and_padding_is_masked(multilabel_dataset):
    from stjax.data import augment, pipeline

    data_dir, _ = multilabel_dataset
    views = pipeline.ViewSpec(num_frames=4, stride=2, crop_size=24, temporal=2, spatial=1, short_side=None)
    (batch,) = list(pipeline.eval_dataset("video_multilabel/tiny", batch_size=5, views=views, split="test",
                                          data_dir=data_dir).as_numpy_iterator())
    assert batch["label"].shape == (5, 4) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["mask"], [True, True, True, False, False])
    assert sorted(map(tuple, batch["label"][:3])) == sorted(tuple(_multi_hot(l)) for l in TEST.values())
    np.testing.assert_array_equal(batch["label"][3:], -1)

    clips = pipeline.ClipSpec(rho=2, num_frames=4, stride=2)
    ds = pipeline.pretrain_dataset("video_multilabel/tiny", batch_size=6, clips=clips, data_dir=data_dir,
                                   augmentation=augment.AugmentConfig(crop_size=24), shuffle_buffer=8)
    assert ds.element_spec["label"].shape.as_list() == [6, 4]
    epoch = next(ds.as_numpy_iterator())  # one epoch: every train video once
    assert sorted(map(tuple, epoch["label"])) == sorted(tuple(_multi_hot(l)) for l in TRAIN.values())


def _eval_config(protocol, tmp_path, data_dir):
    from test_evaluate import _eval_config as single_label_config

    config = single_label_config(protocol, tmp_path, str(tmp_path / "run"))
    config.steps = "last"
    config.data.dataset = "video_multilabel/tiny"
    config.data.data_dir = data_dir
    config.data.num_frames = 4
    return config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from test_export import _fake_run

    root = tmp_path_factory.mktemp("multilabel_eval")
    _fake_run(root / "run", steps=(3,))
    return root


def test_the_probe_scores_multi_hot_labels_with_map(multilabel_dataset, pretrained):
    from stjax.eval import evaluate

    config = _eval_config("linear", pretrained, multilabel_dataset[0])
    results = evaluate.run(config, str(pretrained / "eval_linear"))
    (record,) = results["checkpoints"]
    assert record["num_train"] == 6 and record["num_test"] == 3
    assert set(record["per_class_ap"]) == set(CLASSES) and "confusion" not in record
    ap = [v for v in record["per_class_ap"].values() if v is not None]
    assert record["mAP"] == pytest.approx(np.mean(ap), abs=1e-4) and 0 < record["mAP"] <= 1
    assert record["per_class_ap"]["cut"] is not None  # 't/c.mp4' is its positive
    assert "per_class.png" in os.listdir(pretrained / "eval_linear")


def test_finetuning_trains_a_sigmoid_classifier_on_multi_hot_labels(multilabel_dataset, pretrained):
    from stjax.eval import evaluate

    config = _eval_config("finetune", pretrained, multilabel_dataset[0])
    config.finetune.update(epochs=2.0, batch_size=8, log_every=1, checkpoint_every=10)
    results = evaluate.run(config, str(pretrained / "eval_finetune"))
    (record,) = results["checkpoints"]
    assert 0 < record["mAP"] <= 1 and 0 <= record["top1"] <= 1 and "top5" not in record
    losses = [json.loads(line) for line in open(pretrained / "eval_finetune" / "finetune" / "step_3" / "metrics.jsonl")]
    # sigmoid cross-entropy per class starts near log 2 (a softmax over 4 classes would start near log 4)
    assert losses and abs(losses[0]["loss"] - np.log(2)) < 0.2
