"""The evaluation job (configs/eval.py, stjax/eval/evaluate.py) and its nearest-neighbour protocols."""
import json
import os

import jax
import numpy as np
import pytest

from stjax import configlib
from stjax.eval import evaluate, knn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_knn_matches_a_numpy_loop():
    rng = np.random.default_rng(0)
    train_x, test_x = rng.standard_normal((50, 6)), rng.standard_normal((7, 6))
    train_y = rng.integers(0, 4, 50)
    scores = knn.knn_classify(train_x, train_y, test_x, num_classes=4, k=10, temperature=0.1)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    cos = unit(test_x) @ unit(train_x).T
    for q in range(7):
        nearest = np.argsort(-cos[q])[:10]
        want = np.zeros(4)
        for i in nearest:
            want[train_y[i]] += np.exp((cos[q, i] - 1) / 0.1)
        np.testing.assert_allclose(scores[q], want, rtol=1e-4, atol=1e-12)
    # k larger than the train set: every train feature votes
    assert knn.knn_classify(train_x, train_y, test_x, 4, k=500).shape == (7, 4)
    with pytest.raises(ValueError, match="same D"):
        knn.knn_classify(train_x, train_y, test_x[:, :3], 4)


def test_accuracy_metrics_and_retrieval_on_known_cases():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.0, 0.2, 0.8]])
    m = knn.accuracy_metrics(scores, np.array([0, 1, 1, 0]), num_classes=3)
    assert m["top1"] == 0.5 and m["top5"] == 1.0
    np.testing.assert_array_equal(m["confusion"], [[1, 0, 1], [1, 1, 0], [0, 0, 0]])
    assert m["per_class_top1"][0] == 0.5 and m["per_class_top1"][1] == 0.5 and np.isnan(m["per_class_top1"][2])

    # four train clips on the unit circle; test clips next to one of them
    angles = np.array([0, 90, 180, 270]) * np.pi / 180
    train_x = np.stack([np.cos(angles), np.sin(angles)], 1)
    train_y = np.array([0, 1, 0, 1])
    test_x = np.array([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.3]])
    test_y = np.array([1, 1, 1])  # nearest: class 0, class 1, class 0; 2nd nearest: class 1 for all
    recall = knn.retrieval_recall(train_x, train_y, test_x, test_y, ks=(1, 2, 4))
    assert recall == {"R@1": pytest.approx(1 / 3), "R@2": 1.0, "R@4": 1.0}


def test_steps_and_targets(tmp_path):
    from test_export import _fake_run

    assert evaluate.parse_steps("last") == "last" and evaluate.parse_steps("5+2") == [2, 5]
    assert evaluate.parse_steps("2, 5") == [2, 5]
    with pytest.raises(ValueError, match="steps='latest' is invalid; valid values: last, all"):
        evaluate.parse_steps("latest")
    _fake_run(tmp_path / "run", steps=(2, 5))
    run = str(tmp_path / "run")
    assert [t.step for t in evaluate.resolve_targets(run, "last")] == [5]
    assert [t.step for t in evaluate.resolve_targets(run, "all")] == [2, 5]
    with pytest.raises(ValueError, match=r"no checkpoint at step\(s\) \[3\].*among \[2, 5\]"):
        evaluate.resolve_targets(run, "2,3")
    with pytest.raises(ValueError, match="init_from='' is invalid"):
        evaluate.resolve_targets("", "last")


def _eval_config(protocol, tmp_path, init_from):
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), f"{protocol},steps=all")
    config.init_from = init_from
    config.data_from_run = False
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.manual_dir = str(tmp_path / "videos")
    config.data.synthetic.update(num_train=16, num_test=8, size=32, seconds=1.0)
    config.data.augmentation.crop_size = 24
    config.data.test_views.short_side = None
    config.eval_batch_size = 8
    config.probe.epochs = 5
    config.knn.k = 5
    return config


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A two-checkpoint r3d_micro run and the tiny synthetic set (rendered and built once)."""
    from test_export import _fake_run

    root = tmp_path_factory.mktemp("eval")
    _fake_run(root / "run", steps=(2, 5))
    return root


@pytest.mark.parametrize("protocol", ["knn", "retrieval", "linear"])
def test_each_protocol_end_to_end(synthetic_run, protocol):
    config = _eval_config(protocol, synthetic_run, str(synthetic_run / "run"))
    workdir = synthetic_run / f"eval_{protocol}"
    results = evaluate.run(config, str(workdir))
    on_disk = json.loads((workdir / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert [c["step"] for c in results["checkpoints"]] == [2, 5]
    assert results["provenance"]["packages"]["jax"] == jax.__version__
    for record in results["checkpoints"]:
        assert record["num_train"] == 16 and record["num_test"] == 8 and record["backbone"] == "r3d_micro"
        metrics = {k: v for k, v in record.items() if isinstance(v, float)}
        assert metrics and all(0.0 <= v <= 1.0 for v in metrics.values())
    report = (workdir / "report.md").read_text()
    assert "| step 2 |" in report and "| step 5 |" in report
    files = set(os.listdir(workdir))
    assert "vs_step.png" in files
    if protocol == "retrieval":
        r = results["checkpoints"][-1]
        assert r["R@1"] <= r["R@5"] <= r["R@10"] <= r["R@20"]
    else:
        assert {"per_class.png", "confusion.png"} <= files
        assert len(results["checkpoints"][-1]["per_class_top1"]) == 10
    # different checkpoints give different features, hence (almost surely) different results
    first, last = results["checkpoints"]
    assert any(first[k] != last[k] for k in first if isinstance(first[k], float))


def test_eval_of_an_exported_file_and_bad_settings(synthetic_run):
    from stjax import export

    spec, variables, _ = export.run_backbone(str(synthetic_run / "run"))
    path = export.save_backbone(variables, spec, "safetensors", str(synthetic_run / "backbone.safetensors"))
    config = _eval_config("knn", synthetic_run, path)
    config.steps = "last"
    results = evaluate.run(config, str(synthetic_run / "eval_file"))
    assert [c["checkpoint"] for c in results["checkpoints"]] == ["backbone.safetensors"]
    by_run = json.loads((synthetic_run / "eval_knn" / "results.json").read_text())["checkpoints"][-1]
    assert results["checkpoints"][0]["top1"] == by_run["top1"]  # same weights, same data: same result
    config.steps = "all"
    with pytest.raises(ValueError, match="needs init_from to be a pretraining run"):
        evaluate.run(config, str(synthetic_run / "eval_bad"))
    config = _eval_config("knn", synthetic_run, path)
    config.protocol = "finetuning"
    with pytest.raises(ValueError, match="protocol='finetuning' is invalid; valid values: linear, knn, retrieval"):
        evaluate.run(config, str(synthetic_run / "eval_bad"))


def test_finetune_end_to_end(synthetic_run):
    """finetune: the backbone and a classifier train with labels through the generic loop, from the checkpoint."""
    from stjax import export

    config = _eval_config("finetune", synthetic_run, str(synthetic_run / "run"))
    config.steps = "last"
    config.finetune.update(epochs=2.0, batch_size=8, log_every=1, checkpoint_every=2, dropout=0.5)
    workdir = synthetic_run / "eval_finetune"
    results = evaluate.run(config, str(workdir))
    (record,) = results["checkpoints"]
    assert record["step"] == 5 and record["num_train"] == 16 and record["num_test"] == 8
    assert 0.0 <= record["top1"] <= record["top5"] <= 1.0
    directory = workdir / "finetune" / "step_5"
    assert os.path.isdir(directory / "checkpoints" / "4")  # 2 epochs of 16 videos at 8 per step
    losses = [json.loads(line) for line in open(directory / "metrics.jsonl")]
    assert [r["step"] for r in losses] == [1, 2, 3, 4] and all("train_top1" in r for r in losses)
    # it started from the run's step-5 backbone, and training moved it
    _, start, _ = export.run_backbone(str(synthetic_run / "run"), 5)
    _, init = export.load_backbone(str(directory / "init.npz"))
    np.testing.assert_array_equal(init["params"]["stem_conv"]["kernel"], start["params"]["stem_conv"]["kernel"])
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(str(directory / "checkpoints")) as manager:
        tuned = manager.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]["params"]
    assert not np.array_equal(np.asarray(tuned["backbone"]["stem_conv"]["kernel"]),
                              start["params"]["stem_conv"]["kernel"])
    assert tuned["head"]["fc"]["kernel"].shape == (64, 10)
    assert {"per_class.png", "confusion.png", "report.md"} <= set(os.listdir(workdir))


def test_augmented_linear_protocol_keeps_the_backbone_frozen(synthetic_run):
    """linear.augmented: the classifier trains from augmented clips; backbone weights and BN statistics stay."""
    import orbax.checkpoint as ocp

    from stjax import export

    config = _eval_config("linear", synthetic_run, str(synthetic_run / "run"))
    config.steps = "last"
    config.linear.update(augmented=True, epochs=1.0, batch_size=8, log_every=1, checkpoint_every=2)
    workdir = synthetic_run / "eval_linear_augmented"
    (record,) = evaluate.run(config, str(workdir))["checkpoints"]
    assert 0.0 <= record["top1"] <= record["top5"] <= 1.0 and record["num_test"] == 8
    _, start, _ = export.run_backbone(str(synthetic_run / "run"), 5)
    with ocp.CheckpointManager(str(workdir / "linear" / "step_5" / "checkpoints")) as manager:
        state = manager.restore(2, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    trained = export.flatten_variables({"params": state["params"]["backbone"],
                                        "batch_stats": state["batch_stats"]["backbone"]})
    for key, value in export.flatten_variables(start).items():
        np.testing.assert_array_equal(np.asarray(trained[key]), value, err_msg=key)
    records = [json.loads(line) for line in open(workdir / "linear" / "step_5" / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2] and records[-1]["learning_rate"] > 0


def _ucf_three_folds(root):
    """A UCF101-layout tree: 3 classes × 3 groups; fold k tests on group k and trains on the other two."""
    from conftest import write_video

    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    classes = ["Archery", "Basketball", "Bowling"]
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for c, name in enumerate(classes):
        for g in (1, 2, 3):
            path = root / "UCF-101" / name / f"v_{name}_g0{g}_c01.avi"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(path, num_frames=12, width=40, height=32, codec="mpeg4", seed=10 * c + g)
    for fold in (1, 2, 3):
        train = [f"{n}/v_{n}_g0{g}_c01.avi {i + 1}" for i, n in enumerate(classes) for g in (1, 2, 3) if g != fold]
        test = [f"{n}/v_{n}_g0{fold}_c01.avi" for n in classes]
        (lists / f"trainlist0{fold}.txt").write_text("\n".join(train) + "\n")
        (lists / f"testlist0{fold}.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.mark.slow  # builds 3 folds of a UCF101 layout and evaluates each
def test_three_fold_mean_in_one_command(synthetic_run, tmp_path):
    from stjax import export

    spec, variables, _ = export.run_backbone(str(synthetic_run / "run"))
    path = export.save_backbone(variables, spec, "npz", str(tmp_path / "backbone.npz"))
    config = _eval_config("knn", tmp_path, path)
    config.steps = "last"
    config.folds = "all"
    config.data.dataset = "ucf101"
    config.data.manual_dir = str(_ucf_three_folds(tmp_path / "ucf"))
    config.data.num_frames, config.data.stride = 4, 2
    results = evaluate.run(config, str(tmp_path / "eval"))
    assert results["folds"] == [1, 2, 3]
    assert results["datasets"] == {1: "ucf101/fold1", 2: "ucf101/fold2", 3: "ucf101/fold3"}
    per_fold = {k: json.loads((tmp_path / "eval" / f"fold{k}" / "results.json").read_text()) for k in (1, 2, 3)}
    for k, fold in per_fold.items():
        (record,) = fold["checkpoints"]
        assert fold["dataset"] == f"ucf101/fold{k}" and record["num_train"] == 6 and record["num_test"] == 3
        assert results["per_fold"][k] == fold["checkpoints"]
    (mean,) = results["mean"]
    for metric in ("top1", "top5"):
        assert mean[metric] == pytest.approx(np.mean([per_fold[k]["checkpoints"][0][metric] for k in (1, 2, 3)]))
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| backbone.npz | 2 |" in report and "| backbone.npz | **mean** |" in report
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["mean"] == results["mean"]
    assert results["provenance"] == per_fold[1]["provenance"] and "commit" in results["provenance"]


def test_fold_names_and_errors():
    assert evaluate.fold_datasets("ucf101", "") == []
    assert evaluate.fold_datasets("ucf101", "all") == [(1, "ucf101/fold1"), (2, "ucf101/fold2"), (3, "ucf101/fold3")]
    assert evaluate.fold_datasets("hmdb51/fold1_s128", "3+1") == [(1, "hmdb51/fold1_s128"), (3, "hmdb51/fold3_s128")]
    with pytest.raises(ValueError, match="folds='4' is invalid; valid values: all, or folds among 1, 2, 3"):
        evaluate.fold_datasets("ucf101", "4")
    with pytest.raises(ValueError, match="needs a dataset with the official 3 splits"):
        evaluate.fold_datasets("synthetic", "all")


# Protocols as registered modules (stjax/eval/protocols/): one path for the monitor, the final probe and the job.

def test_the_registry_is_what_the_config_offers_and_names_the_valid_protocols():
    from stjax.eval import protocols

    eval_config = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), "knn")
    assert list(protocols.PROTOCOLS) == list(evaluate.PROTOCOLS) == ["linear", "knn", "retrieval", "finetune",
                                                                      "detection"]
    for name, protocol in protocols.PROTOCOLS.items():
        assert protocol.name == name
        config = configlib.load_config_file(os.path.join(ROOT, "configs", "eval.py"), name)
        assert protocol.pool(config) == "mean" and protocol.block(config) in config  # every block has its pool
    assert protocols.get("linear").trains(eval_config) is False
    assert protocols.get("linear").block(eval_config) == "probe"
    with pytest.raises(ValueError, match="^protocol='nope' is invalid; valid values: linear, knn, retrieval, finetune, "
                       "detection$"):
        protocols.get("nope")


def test_protocol_settings_and_label_types_are_checked_before_any_work(synthetic_run):
    from stjax.eval import protocols

    config = _eval_config("knn", synthetic_run, str(synthetic_run / "run"))
    config.knn.pool = "median"
    with pytest.raises(ValueError, match="knn.pool='median' is invalid; valid values: mean, max"):
        evaluate.validate(config)
    config = _eval_config("linear", synthetic_run, str(synthetic_run / "run"))
    config.probe.pool = "sum"
    with pytest.raises(ValueError, match="probe.pool='sum' is invalid; valid values: mean, max"):
        evaluate.validate(config)
    config.probe.pool = "max"
    protocols.get("linear").validate(config, "multi_hot")  # the probe is sigmoid on multi-hot labels
    for name in ("knn", "retrieval"):
        with pytest.raises(ValueError, match=f"protocol='{name}' scores single labels; .* has multi_hot labels"):
            protocols.get(name).validate(_eval_config(name, synthetic_run, ""), "multi_hot")
    config.linear.augmented = True  # the classifier trained from clips: sigmoid on multi-hot labels too
    protocols.get("linear").validate(config, "multi_hot")
    protocols.get("finetune").validate(_eval_config("finetune", synthetic_run, ""), "multi_hot")


def test_views_are_pooled_by_mean_or_max(synthetic_run):
    """make_feature_extractor(pool=...) against each view's features computed one view at a time."""
    from stjax import export
    from stjax.data import config as data_config
    from stjax.data import pipeline
    from stjax.eval import features as eval_features
    from stjax.train import mesh as mesh_lib
    from stjax.train import step as step_lib

    config = _eval_config("knn", synthetic_run, "")
    config.data.test_views.temporal, config.data.test_views.spatial = 2, 1
    data_config.ensure_built(config, verbose=False)
    spec, variables = export.run_backbone(str(synthetic_run / "run"))[:2]
    backbone = export.create_from_spec(spec)
    mesh = mesh_lib.create_mesh()
    pooled = {pool: eval_features.make_feature_extractor(backbone, config, mesh, 8, pool=pool)(variables, "test")
              for pool in ("mean", "max")}
    ds = pipeline.eval_dataset(config.data.dataset, batch_size=8, views=data_config.view_spec(config), split="test",
                               data_dir=config.data.data_dir)
    (batch,) = list(ds.as_numpy_iterator())
    assert batch["clips"].shape[1] == 2 and batch["mask"].all()
    per_view = np.stack([np.asarray(backbone.apply(variables, step_lib.normalize_clips(batch["clips"][:, v]),
                                                   train=False)) for v in range(2)], axis=1)  # [8, 2, D]
    assert np.abs(per_view[:, 0] - per_view[:, 1]).max() > 1e-3  # the two views differ
    for pool, reduce in (("mean", np.mean), ("max", np.max)):
        features, labels = pooled[pool]
        np.testing.assert_allclose(features, reduce(per_view, axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(labels, batch["label"])
    with pytest.raises(ValueError, match="pool='median' is invalid; valid values: mean, max"):
        eval_features.make_feature_extractor(backbone, config, mesh, 8, pool="median")


def test_a_new_protocol_is_a_registered_class_and_a_config_block(synthetic_run, monkeypatch):
    """Registering a protocol is all the evaluation job needs: here the nearest class mean, on max-pooled views."""
    import ml_collections

    from stjax.eval import protocols

    class NearestClassMean(protocols.Protocol):
        name = "centroid"
        default_block = "centroid"

        def score(self, train, test, num_classes, config):
            (train_x, train_y), (test_x, test_y) = train, test
            means = np.stack([train_x[train_y == c].mean(axis=0) for c in range(num_classes)])
            distances = ((test_x[:, None] - means[None]) ** 2).sum(-1)
            return {"top1": float(np.mean(distances.argmin(axis=1) == test_y)), "pool_seen": self.pool(config)}

    monkeypatch.setitem(protocols.PROTOCOLS, "centroid", NearestClassMean())
    config = _eval_config("knn", synthetic_run, str(synthetic_run / "run"))
    config.protocol, config.steps = "centroid", "last"
    config.centroid = ml_collections.ConfigDict(dict(pool="max"))
    evaluate.validate(config)
    results = evaluate.run(config, str(synthetic_run / "eval_centroid"))
    (record,) = results["checkpoints"]
    assert results["protocol"] == "centroid" and record["num_test"] == 8 and 0 <= record["top1"] <= 1


def test_a_probe_fitted_on_part_of_train_and_scored_on_the_rest(synthetic_run, capsys, monkeypatch):
    """TFDS slices as the splits (`train[:12]` / `train[12:]`): a held-out part of the train split, e.g. to
    measure a train/test gap; with data_from_run=True the run's splits are used and the unused ones named."""
    config = _eval_config("linear", synthetic_run, str(synthetic_run / "run"))
    config.steps = "last"
    config.data.train_split, config.data.eval_split = "train[:12]", "train[12:]"
    results = evaluate.run(config, str(synthetic_run / "eval_heldout"))
    record = results["checkpoints"][-1]
    assert (record["num_train"], record["num_test"]) == (12, 4)
    assert (results["train_split"], results["eval_split"]) == ("train[:12]", "train[12:]")
    assert "train split `train[:12]` (12 " in (synthetic_run / "eval_heldout" / "report.md").read_text()
    from stjax.train import workdir as workdir_lib

    run_data = dict(config.data.to_dict(), train_split="train", eval_split="test")
    monkeypatch.setattr(workdir_lib, "run_config", lambda _: {"model": {"backbone": "r3d_micro"}, "data": run_data})
    config.data_from_run = True
    capsys.readouterr()
    evaluate.validate(config)
    err = capsys.readouterr().err
    assert "data_from_run=True reads the data settings of the run" in err and \
        "data.train_split='train[:12]' (the run's: 'train'), data.eval_split='train[12:]' (the run's: 'test')" in err
