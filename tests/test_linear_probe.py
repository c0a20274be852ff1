"""Tests of the linear probe (stjax.eval.linear_probe) and the report (stjax.eval.report)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stjax.eval import report
from stjax.eval.linear_probe import ProbeConfig, extract_features, train_linear_probe

# Small and quick; same sizes everywhere so the compiled trainer is reused.
FAST = ProbeConfig(epochs=30, batch_size=128, learning_rate=0.1, warmup_epochs=2)
C, D = 5, 16


def blobs(n, seed, separation=6.0, centers_seed=123):
    centers = np.random.default_rng(centers_seed).normal(size=(C, D)) * separation
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n // C).astype(np.int32)
    rng.shuffle(y)
    x = centers[y] + rng.normal(size=(len(y), D))
    return x.astype(np.float32), y


def test_separable_blobs_reach_high_accuracy():
    xtr, ytr = blobs(500, seed=0)
    xte, yte = blobs(500, seed=1)
    r = train_linear_probe(xtr, ytr, xte, yte, C, FAST)
    assert r["top1"] >= 0.95
    assert r["train_top1"] >= 0.95
    assert r["top5"] == 1.0  # k = min(5, 5) = 5 = all classes
    assert r["num_train"] == 500 and r["num_test"] == 500
    assert len(r["per_class_top1"]) == C and min(r["per_class_top1"]) >= 0.9
    conf = np.array(r["confusion"])
    assert conf.shape == (C, C)
    np.testing.assert_array_equal(conf.sum(axis=1), np.bincount(yte, minlength=C))
    assert np.trace(conf) / conf.sum() == pytest.approx(r["top1"])


def test_noise_features_stay_near_chance():
    # 128-D noise: a probe fitted on the test set itself would memorise ~60% of it, so
    # the bound below catches a probe that (also) trains on the test set.
    rng = np.random.default_rng(7)
    xtr = rng.normal(size=(500, 128)).astype(np.float32)
    xte = rng.normal(size=(500, 128)).astype(np.float32)
    ytr = yte = np.repeat(np.arange(C), 100).astype(np.int32)
    r = train_linear_probe(xtr, ytr, xte, yte, C, FAST)
    assert r["top1"] <= 0.35
    # ...while the train set is partly memorised: the probe fits the train set only.
    assert r["train_top1"] >= 0.5


def test_probe_only_sees_train_set():
    xtr, ytr = blobs(500, seed=0)
    xte, yte = blobs(500, seed=1)
    a = train_linear_probe(xtr, ytr, xte, yte, C, FAST)
    shuffled = np.random.default_rng(3).permutation(yte)
    b = train_linear_probe(xtr, ytr, xte, shuffled, C, FAST)
    assert b["train_top1"] == a["train_top1"]
    assert b["top1"] != a["top1"] and b["top1"] < 0.5


def test_same_seed_is_deterministic_and_topk_for_few_classes():
    xtr, ytr = blobs(500, seed=0)
    xte, yte = blobs(500, seed=1)
    a = train_linear_probe(xtr, ytr, xte, yte, C, FAST)
    b = train_linear_probe(xtr, ytr, xte, yte, C, FAST)
    assert a == b
    # 2 classes: top-k uses k = 2, so it is always 1; no standardisation, partial last batch.
    m = ytr < 2
    cfg = ProbeConfig(epochs=5, batch_size=64, warmup_epochs=0, standardize=False,
                      learning_rate=0.01, weight_decay=1e-4, momentum=0.0)
    r = train_linear_probe(xtr[m], ytr[m], xte[yte < 2], yte[yte < 2], 2, cfg)
    assert r["top_k"] == 2 and r["top5"] == 1.0 and r["top1"] >= 0.95


def test_per_class_nan_for_missing_test_class():
    xtr, ytr = blobs(500, seed=0)
    xte, yte = blobs(500, seed=1)
    keep = yte != 4
    r = train_linear_probe(xtr, ytr, xte[keep], yte[keep], C, FAST)
    assert np.isnan(r["per_class_top1"][4])
    assert sum(r["confusion"][4]) == 0


@pytest.mark.parametrize("change, match", [
    (dict(train_features=np.zeros((10,), np.float32)), "train_features"),
    (dict(test_features=np.zeros((10, 3), np.float32)), "test_features"),
    (dict(train_labels=np.zeros((9,), np.int32)), "train_labels"),
    (dict(train_labels=np.full((10,), 5, np.int32)), "train_labels"),
    (dict(test_labels=np.full((10,), -1, np.int32)), "test_labels"),
    (dict(test_labels=np.zeros((10,), np.float32)), "test_labels"),
    (dict(train_features=np.full((10, 4), np.nan, np.float32)), "train_features"),
    (dict(num_classes=1), "num_classes"),
    (dict(config=ProbeConfig(epochs=0)), "epochs"),
    (dict(config=ProbeConfig(batch_size=0)), "batch_size"),
])
def test_input_validation(change, match):
    args = dict(train_features=np.zeros((10, 4), np.float32), train_labels=np.zeros((10,), np.int32),
                test_features=np.zeros((10, 4), np.float32), test_labels=np.zeros((10,), np.int32),
                num_classes=5, config=FAST)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        train_linear_probe(**args)


def test_extract_features_sharded_and_masked():
    devices = jax.devices()
    assert len(devices) == 8
    sharding = NamedSharding(Mesh(np.array(devices), ("data",)), PartitionSpec("data"))
    embed_fn = jax.jit(lambda b: b["clips"].astype(jnp.float32).mean(axis=(1, 2, 3, 4)))
    rng = np.random.default_rng(0)
    batches, want_x, want_y = [], [], []
    for i in range(3):
        clips = rng.integers(0, 256, size=(16, 2, 2, 4, 4, 3), dtype=np.uint8)
        label = rng.integers(0, 10, size=16).astype(np.int32)
        mask = np.ones(16, bool)
        if i == 2:
            mask[11:] = False  # padding of the last batch
        mask[3] = False
        batches.append({k: jax.device_put(v, sharding)
                        for k, v in dict(clips=clips, label=label, mask=mask).items()})
        want_x.append(clips.astype(np.float32).mean(axis=(1, 2, 3, 4))[mask])
        want_y.append(label[mask])
    assert batches[0]["clips"].sharding == sharding
    x, y = extract_features(embed_fn, iter(batches))
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.shape == (16 + 16 + 11 - 3, 3) and y.shape == (x.shape[0],)
    np.testing.assert_allclose(x, np.concatenate(want_x), rtol=1e-5)
    np.testing.assert_array_equal(y, np.concatenate(want_y))


def test_extract_features_errors():
    embed_fn = jax.jit(lambda b: b["clips"].astype(jnp.float32).mean(axis=(1, 2, 3, 4)))
    with pytest.raises(ValueError, match="empty"):
        extract_features(embed_fn, [])
    bad = {"clips": np.zeros((4, 1, 1, 2, 2, 3), np.uint8), "label": np.zeros(4, np.int32)}
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        extract_features(jax.jit(lambda b: b["clips"].sum()), [bad])
    # no mask -> every row is kept
    x, y = extract_features(embed_fn, [bad])
    assert x.shape == (4, 3) and y.shape == (4,)


def test_write_report_png(tmp_path):
    path = tmp_path / "sub" / "report.png"
    history = [(s, 5.0 * np.exp(-s / 300) + 0.1 * np.sin(s)) for s in range(0, 1000, 10)]
    results = {"pretrained": {"top1": 0.62}, "random init": {"top1": 0.31}, "chance": {"top1": 0.1}}
    report.write_report_png(path, history, results, title="test run")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # degenerate inputs still produce a picture: no history, negative / non-finite losses
    report.write_report_png(tmp_path / "empty.png", [], {})
    report.write_report_png(tmp_path / "neg.png", [(0, -1.0), (1, float("nan")), (2, 0.5)],
                            {"x": {"top1": 0.5}})
    assert (tmp_path / "neg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="top1"):
        report.write_report_png(tmp_path / "bad.png", history, {"x": {"acc": 0.5}})


def test_tables(tmp_path):
    text = report.format_summary_table([("pretrained top-1", "0.620"), ("chance", "0.100")])
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].index("|") == lines[1].index("|")
    assert report.format_summary_table([]) == ""
    path = tmp_path / "t.md"
    report.write_markdown_table(path, ["model", "top-1"], [["pretrained", 0.61234], ["a|b", 3]])
    md = path.read_text().splitlines()
    assert md[0] == "| model | top-1 |" and md[1] == "|---|---|"
    assert md[2] == "| pretrained | 0.6123 |" and md[3] == "| a\\|b | 3 |"
    with pytest.raises(ValueError, match="rows"):
        report.write_markdown_table(path, ["a", "b"], [[1]])


def test_multi_hot_labels_train_a_sigmoid_probe():
    """Multi-hot {0, 1} [N, C] labels: one logistic regression per class; a separable toy problem (class c is
    on where feature c > 0) reaches mAP > 0.9 on the test set."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, D)).astype(np.float32)
    y = (x[:, :C] > 0).astype(np.int32)
    r = train_linear_probe(x[:400], y[:400], x[400:], y[400:], C, FAST)
    assert r["mAP"] > 0.9 and r["train_mAP"] > 0.9 and r["top1"] > 0.9
    assert len(r["per_class_ap"]) == C and r["num_train"] == 400 and r["num_test"] == 200
    assert "confusion" not in r
    with pytest.raises(ValueError, match="same kind"):
        train_linear_probe(x[:400], y[:400], x[400:], y[400:, 0], C, FAST)
    with pytest.raises(ValueError, match=r"only 0 and 1"):
        train_linear_probe(x[:400], 2 * y[:400], x[400:], y[400:], C, FAST)
