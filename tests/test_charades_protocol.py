"""The Charades task: the Charades-like synthetic set (generator + `synthetic_charades`), the step schedule,
and `configs/eval.py:charades` end to end (window labels, views' scores pooled, mAP against scikit-learn)."""
import csv
import json
import os

import numpy as np
import pytest

from stjax import configlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATOR = dict(num_train=12, num_test=8, size=32, seconds=2.0, fps=24.0, seed=3, segments=(2, 3))


def test_a_segment_rendered_alone_is_that_part_of_the_whole_video():
    from stjax.data import make_synthetic as ms

    whole = ms.render_video(4, np.random.default_rng(5), 32, 20, 24.0)
    part = ms.render_video(4, np.random.default_rng(5), 32, 8, 24.0, first_frame=12)
    np.testing.assert_array_equal(part, whole[12:])


def test_schedules_hold_distinct_actions_one_after_the_other():
    from stjax.data import make_synthetic as ms

    for index in range(40):
        schedule = ms.charades_schedule(0, "train", index, 96, (2, 4))
        assert schedule[0][1] == 0 and schedule[-1][2] == 96  # the whole video, in order, without overlap
        assert all(a[2] == b[1] and a[1] < a[2] for a, b in zip(schedule, schedule[1:]))
        actions = [c for c, _, _ in schedule if c != 0]
        assert 2 <= len(actions) <= 4 and len(set(actions)) == len(actions)
        assert all(0 < c < len(ms.CLASS_NAMES) for c in actions)
        text = ms.charades_actions(schedule, 24.0)
        assert [f"c{c - 1:03d}" for c in actions] == [part.split()[0] for part in text.split(";")]


@pytest.fixture(scope="module")
def charades_set(tmp_path_factory):
    """The Charades-like set rendered (12 train, 8 test videos of 2 s, 32 px) and built by `synthetic_charades`."""
    from stjax.data import build

    root = tmp_path_factory.mktemp("charades_like")
    videos, data_dir = root / "videos", root / "tfds"
    build.build("synthetic_charades", manual_dir=str(videos), data_dir=str(data_dir), workers=1, verbose=False,
                generator_kwargs=dict(GENERATOR))
    return videos, data_dir


def test_the_generated_layout_is_read_by_the_charades_builder(charades_set):
    import tensorflow_datasets as tfds

    from stjax.data import builders, make_synthetic

    videos, data_dir = charades_set
    classes = (videos / "Charades_v1_classes.txt").read_text().splitlines()
    assert classes == [f"c{i:03d} {name}" for i, name in enumerate(make_synthetic.ACTION_CLASSES)]
    with open(videos / "Charades_v1_test.csv", newline="") as f:
        rows = {row["id"]: row for row in csv.DictReader(f)}
    assert len(rows) == 8 and all((videos / "Charades_v1_480" / f"{i}.mp4").is_file() for i in rows)
    builder = builders.load_builder("synthetic_charades", str(data_dir))
    assert builders.label_type(builder) == "multi_hot" and len(builders.class_names(builder)) == 9
    ds = builder.as_dataset(split="test", decoders={"frames": tfds.decode.SkipDecoding()})
    for example in tfds.as_numpy(ds):
        row = rows[example["video_id"].decode()]
        actions = [a.split() for a in row["actions"].split(";")]
        assert sorted(example["label"].tolist()) == sorted(int(a[0][1:]) for a in actions)
        np.testing.assert_allclose(example["actions"]["start"], [float(a[1]) for a in actions], atol=1e-6)
        assert example["actions"]["class_id"].tolist() == [int(a[0][1:]) for a in actions]
        assert abs(int(example["num_frames"]) - 48) <= 1  # 2 s at 24 fps


def test_the_step_schedule_warms_up_then_decays_at_each_boundary():
    from stjax.train import optimizer

    schedule = optimizer.step_schedule(0.4, warmup_steps=4, boundaries=[10, 15], factor=0.1)
    got = [float(schedule(s)) for s in (0, 2, 4, 9, 10, 14, 15, 30)]
    np.testing.assert_allclose(got, [0.0, 0.2, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004], rtol=1e-6)
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), "demo")
    config.optimizer.update(schedule="linear")
    with pytest.raises(ValueError, match="optimizer.schedule='linear' is invalid; valid values: cosine, steps"):
        optimizer.create_optimizer(config, 32, 100, 10.0)


def test_the_charades_preset_is_the_studys_recipe():
    paper = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), "charades,data=k400_r50")
    assert (paper.protocol, paper.data.dataset, paper.data.clip_labels) == ("finetune", "charades", "window")
    assert (paper.data.num_frames, paper.data.stride) == (16, 8) and not paper.data_from_run
    assert (paper.data.test_views.temporal, paper.data.test_views.spatial) == (10, 3)
    ft = paper.finetune
    assert (ft.epochs, ft.base_lr, ft.base_batch_size, ft.warmup_epochs, ft.weight_decay, ft.dropout) == \
        (60.0, 0.2, 64, 5.0, 1e-4, 0.5)
    assert (ft.schedule, tuple(ft.decay_epochs), ft.pool) == ("steps", (40.0, 50.0), "max")
    demo = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), "charades")
    assert demo.data.dataset == "synthetic_charades" and demo.data.synthetic.fps == 24.0


def test_charades_finetuning_end_to_end_scores_max_pooled_views_by_map(charades_set, tmp_path):
    from sklearn.metrics import average_precision_score

    from stjax.eval import evaluate

    videos, data_dir = charades_set
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), "charades")
    config.init_from = "random:r3d_micro"
    config.data.update(data_dir=str(data_dir), manual_dir=str(videos), num_frames=4)
    config.data.synthetic.update(GENERATOR)
    config.data.augmentation.crop_size = 24
    config.data.test_views.update(short_side=None, temporal=3)
    config.eval_batch_size = 8
    config.finetune.update(epochs=2.0, batch_size=8, log_every=1, checkpoint_every=100, decay_epochs=(1.0,),
                           warmup_epochs=0.0)
    evaluate.validate(config)
    results = evaluate.run(config, str(tmp_path / "eval"))
    (record,) = results["checkpoints"]
    assert results["dataset"] == "synthetic_charades" and record["num_test"] == 8 and record["num_train"] == 12
    scores = np.load(tmp_path / "eval" / "finetune" / "random_init" / "test_scores.npz")
    labels = scores["labels"]
    assert labels.shape == (8, 9) and set(np.unique(labels)) <= {0, 1}
    positive = labels.sum(axis=0) > 0  # classes without a positive test video are left out of the mean
    for pool, key in (("max", "mAP"), ("max", "mAP_view_max"), ("mean", "mAP_view_mean")):
        want = average_precision_score(labels[:, positive], scores[f"logits_{pool}"][:, positive], average="macro")
        assert record[key] == pytest.approx(want, abs=1e-6)
    assert sum(v is None for v in record["per_class_ap"].values()) == int((~positive).sum())
    losses = [json.loads(line) for line in open(tmp_path / "eval" / "finetune" / "random_init" / "metrics.jsonl")]
    rates = [r["learning_rate"] for r in losses if "learning_rate" in r]
    assert rates[0] == pytest.approx(0.1 * 8 / 64) and rates[-1] == pytest.approx(0.01 * 8 / 64)
