"""The demo's data path end to end at a tiny size: render videos → build → sample → PNG."""
import os

import pytest

from stjax import configlib
from stjax.data import builders, show

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_show_builds_the_synthetic_set_and_writes_a_png(tmp_path):
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "pretrain.py"), "demo,rho=3,timespan=0.5")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.manual_dir = str(tmp_path / "videos")
    config.data.synthetic.update(num_train=10, num_test=5, size=32, seconds=1.0)
    config.data.augmentation.crop_size = 24
    config.data.shuffle_buffer = 8

    out = show.show_clips(config, str(tmp_path / "clips.png"), num_videos=2)
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    builder = builders.load_builder("synthetic", config.data.data_dir)
    assert builder.info.splits["train"].num_examples == 10
    assert builder.info.splits["test"].num_examples == 5
    assert len(builder.info.features["label"].names) == 10
    # a second call reuses the built data
    mtime = os.path.getmtime(os.path.join(builders.prepared_dir("synthetic", config.data.data_dir),
                                          "dataset_info.json"))
    show.show_clips(config, str(tmp_path / "again.png"), num_videos=2)
    path = builders.prepared_dir("synthetic", config.data.data_dir)
    assert os.path.getmtime(os.path.join(path, "dataset_info.json")) == mtime
    assert os.path.basename(path) == str(builders.builder_class("synthetic").VERSION)

    # data prepared by an older builder version is not read: the current version is built beside it
    old = os.path.join(os.path.dirname(path), "1.0.0")
    os.rename(path, old)
    assert builders.prepared_dir("synthetic", config.data.data_dir) == old
    with pytest.raises(FileNotFoundError, match="builder version 1.0.0"):
        builders.load_builder("synthetic", config.data.data_dir)
    show.show_clips(config, str(tmp_path / "third.png"), num_videos=2)
    assert builders.prepared_dir("synthetic", config.data.data_dir) == path
    assert os.path.exists(os.path.join(old, "dataset_info.json"))
