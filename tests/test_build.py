"""Building a class-per-folder video tree: decoding, storage options, and the skip report."""
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import write_audio_only, write_video
from stjax.data import build, builders, video_io


def _load(data_dir, name):
    builder = builders.load_builder(name, data_dir)
    examples = {}
    for ex in tfds.as_numpy(builder.as_dataset(split="train", decoders={"frames": tfds.decode.SkipDecoding()})):
        examples[ex["video_id"].decode()] = ex
    return builder, examples


def test_build_skips_exactly_the_bad_files(tmp_path):
    root = tmp_path / "videos"
    for name in ["a", "b"]:
        (root / name).mkdir(parents=True)
    write_video(root / "a" / "normal.mp4", num_frames=30, width=48, height=32)
    write_video(root / "a" / "one_frame.mp4", num_frames=1)
    write_video(root / "b" / "odd_97x61.mp4", num_frames=10, width=97, height=61)
    write_video(root / "b" / "portrait.webm", num_frames=12, width=24, height=40, codec="libvpx-vp9")
    write_video(root / "b" / "vfr.mp4", num_frames=6, timestamps=[0, 0.04, 0.2, 0.24, 0.6, 0.64])
    (root / "b" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (root / "b" / "empty.avi").write_bytes(b"")
    write_video(root / "b" / "zero_frames.mkv", num_frames=0)
    write_audio_only(root / "a" / "audio_only.mp4")
    write_video(root / "a" / "whole.mkv", num_frames=60)
    data = (root / "a" / "whole.mkv").read_bytes()
    (root / "a" / "truncated.mkv").write_bytes(data[: int(len(data) * 0.6)])
    (root / "a" / "notes.txt").write_text("not a video")

    data_dir = tmp_path / "tfds"
    report = build.build("video_folder", manual_dir=str(root), data_dir=str(data_dir), config="t",
                         fps=25, short_side=32, workers=1, verbose=False)
    assert report["written"] == 7
    reasons = {s["path"]: s["reason"] for s in report["skipped_files"]}
    assert sorted(reasons) == ["a/audio_only.mp4", "b/corrupt.mp4", "b/empty.avi", "b/zero_frames.mkv"]
    assert reasons["a/audio_only.mp4"] == "no video stream"
    # the truncated file keeps its decodable frames, and says so
    assert [w["path"] for w in report["warnings"]] == ["a/truncated.mkv"]
    assert "truncated" in report["warnings"][0]["warning"]
    assert report["ignored_files"] == ["a/notes.txt"]
    on_disk = json.loads((data_dir / "video_folder" / "t" / "1.0.0" / build.REPORT_NAME).read_text())
    assert on_disk["skipped"] == 4 and on_disk["written"] == 7

    builder, ex = _load(str(data_dir), "video_folder/t")
    assert builder.info.features["label"].names == ["a", "b"]
    assert builder.info.metadata["storage"]["short_side"] == 32
    assert set(ex) == {"a/normal.mp4", "a/one_frame.mp4", "b/odd_97x61.mp4", "b/portrait.webm", "b/vfr.mp4",
                       "a/whole.mkv", "a/truncated.mkv"}
    assert 0.4 * ex["a/whole.mkv"]["num_frames"] < ex["a/truncated.mkv"]["num_frames"] < ex["a/whole.mkv"]["num_frames"]
    assert ex["a/one_frame.mp4"]["num_frames"] == 1
    # short side 32, aspect kept, for odd sizes and portrait alike
    assert (ex["b/odd_97x61.mp4"]["height"], ex["b/odd_97x61.mp4"]["width"]) == (32, 51)
    assert (ex["b/portrait.webm"]["height"], ex["b/portrait.webm"]["width"]) == (53, 32)
    assert (ex["a/normal.mp4"]["num_frames"], ex["a/normal.mp4"]["fps"]) == (30, 25.0)
    # variable frame rate: resampled onto the 25 fps grid; the last frame (at 0.64 s)
    # lasts one average source period, so 17 grid frames plus at most 2 more
    assert 17 <= ex["b/vfr.mp4"]["num_frames"] <= 19
    for e in ex.values():
        assert len(e["frames"]) == e["num_frames"]
        assert e["label"] == (0 if e["video_id"].startswith(b"a/") else 1)


def test_vfr_resampling_holds_the_previous_frame(tmp_path):
    path = write_video(tmp_path / "vfr.mp4", num_frames=3, timestamps=[0.0, 0.1, 0.5])
    video = video_io.decode_video(path, fps=10)
    # grid 0, .1, .2, .3, .4: frame 0, then frame 1 held ×4; frame 2 from 0.5 s on
    assert video.num_frames >= 6
    assert video.jpeg_frames[1] == video.jpeg_frames[2] == video.jpeg_frames[4]
    assert video.jpeg_frames[0] != video.jpeg_frames[1] != video.jpeg_frames[5]


def test_rebuild_is_a_no_op_and_missing_dataset_says_how_to_build(tmp_path, tiny_video_dataset):
    data_dir, manual_dir = tiny_video_dataset
    report = build.build("video_folder", manual_dir=manual_dir, data_dir=data_dir, config="tiny", verbose=False)
    assert report["written"] == 12 and report["written_per_split"] == {"train": 9, "test": 3}
    with pytest.raises(FileNotFoundError, match="python -m stjax.data.build --dataset video_folder"):
        builders.load_builder("video_folder/absent", str(tmp_path))
    with pytest.raises(ValueError, match="valid choices: synthetic, synthetic_ava, synthetic_biased, "
                                         "synthetic_charades, video_folder"):
        build.build("kinetics9000", manual_dir=manual_dir, data_dir=str(tmp_path))


def test_build_command_line(tmp_path, capsys):
    root = tmp_path / "v"
    (root / "x").mkdir(parents=True)
    write_video(root / "x" / "ok.mp4", num_frames=5)
    (root / "x" / "bad.mp4").write_bytes(b"garbage")
    build.main(["--dataset", "video_folder", "--manual_dir", str(root), "--data_dir", str(tmp_path / "d"),
                "--config", "cli", "--fps", "5", "--short_side", "16", "--workers", "1"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == "written 1, skipped 1"


def test_rebuild_with_other_storage_options_is_refused(tiny_video_dataset):
    data_dir, manual_dir = tiny_video_dataset
    with pytest.raises(ValueError, match="was built with"):
        build.build("video_folder", manual_dir=manual_dir, data_dir=data_dir, config="tiny", short_side=64)


# --- a changed video folder (issue 26) ---------------------------------------------------------------------------


def _all_examples(data_dir, name):
    """{split: {video id: example}}, frames as lists of JPEG bytes."""
    builder = builders.load_builder(name, data_dir)
    out = {}
    for split in builder.info.splits:
        ds = builder.as_dataset(split=split, decoders={"frames": tfds.decode.SkipDecoding()})
        out[split] = {ex["video_id"].decode(): dict(ex, frames=list(ex["frames"])) for ex in tfds.as_numpy(ds)}
    return out


def _same_example(a, b):
    return a.keys() == b.keys() and all(a[k] == b[k] if k == "frames" else bool(np.all(a[k] == b[k])) for k in a)


def _count_decodes(monkeypatch, root, fail=lambda rel: False):
    """Records which videos get decoded (relative paths); `fail(rel)` raises `Killed` instead of decoding."""
    real, calls = video_io.decode_video, []

    def decode(path, **kwargs):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        if fail(rel):
            raise Killed
        calls.append(rel)
        return real(path, **kwargs)

    monkeypatch.setattr(video_io, "decode_video", decode)
    return calls


class Killed(BaseException):
    pass


def _tree(root):
    for c, name in enumerate("ab"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            write_video(root / name / f"v{i}.mp4", num_frames=10 + i, seed=10 * c + i)
    (root / "train.txt").write_text("a/v0.mp4\na/v1.mp4\nb/v0.mp4\nb/v1.mp4\n")
    (root / "test.txt").write_text("a/v2.mp4\nb/v2.mp4\n")
    return str(root)


def test_a_changed_video_folder_is_rebuilt_from_its_unchanged_videos(tmp_path, monkeypatch, capsys):
    """A build of a folder that changed since it was built used to be a no-op on the stale dataset."""
    root = tmp_path / "videos"
    kwargs = dict(manual_dir=_tree(root), data_dir=str(tmp_path / "tfds"), config="t", fps=25, short_side=32,
                  workers=1)
    build.build("video_folder", verbose=False, **kwargs)
    before = _all_examples(kwargs["data_dir"], "video_folder/t")
    decoded = _count_decodes(monkeypatch, root)
    build.build("video_folder", **kwargs)  # unchanged: nothing to do
    assert decoded == [] and f"is already built in {tmp_path / 'tfds'}" in capsys.readouterr().out

    write_video(root / "a" / "v3.mp4", num_frames=8, seed=77)                # added
    write_video(root / "a" / "v0.mp4", num_frames=20, seed=78)               # modified
    (root / "b" / "v2.mp4").unlink()                                         # removed
    (root / "train.txt").write_text("a/v0.mp4\na/v1.mp4\na/v3.mp4\nb/v0.mp4\nb/v1.mp4\n")
    (root / "test.txt").write_text("a/v2.mp4\n")
    report = build.build("video_folder", **kwargs)
    out = capsys.readouterr().out
    assert ("changed since it was built: 1 added (a/v3.mp4), 1 removed (b/v2.mp4), 3 modified (a/v0.mp4, test.txt, "
            "train.txt)") in out
    assert "reusing the stored frames of 4 unchanged videos" in out
    assert sorted(decoded) == ["a/v0.mp4", "a/v3.mp4"]  # only the new and the modified video
    assert report["reused_from_previous_build"] == 4
    assert report["source_changes"] == {"added": 1, "removed": 1, "modified": 3}
    assert report["written_per_split"] == {"train": 5, "test": 1}
    after = _all_examples(kwargs["data_dir"], "video_folder/t")
    assert sorted(after["train"]) == ["a/v0.mp4", "a/v1.mp4", "a/v3.mp4", "b/v0.mp4", "b/v1.mp4"]
    assert sorted(after["test"]) == ["a/v2.mp4"]
    assert after["train"]["a/v0.mp4"]["num_frames"] == 20
    for split, vid in [("train", "a/v1.mp4"), ("train", "b/v0.mp4"), ("train", "b/v1.mp4"), ("test", "a/v2.mp4")]:
        assert _same_example(after[split][vid], before[split][vid]), vid
    assert sorted(os.listdir(tmp_path / "tfds" / "video_folder" / "t")) == ["1.0.0"]  # no cache, no old build
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "a/v0.mp4", "a/v1.mp4", "a/v2.mp4", "a/v3.mp4", "b/v0.mp4", "b/v1.mp4", "test.txt", "train.txt"]

    decoded.clear()  # --rebuild builds an unchanged folder again, from its stored frames
    build.main(["--dataset", "video_folder", "--manual_dir", str(root), "--data_dir", kwargs["data_dir"],
                "--config", "t", "--workers", "1", "--rebuild"])
    out = capsys.readouterr().out
    assert "as asked (--rebuild)" in out and "reusing the stored frames of 6 unchanged videos" in out
    assert decoded == [] and out.strip().splitlines()[-1] == "written 6, skipped 0"


def test_a_rebuild_that_fails_keeps_the_previous_build_and_resumes(tmp_path, monkeypatch):
    root = tmp_path / "videos"
    kwargs = dict(manual_dir=_tree(root), data_dir=str(tmp_path / "tfds"), config="t", fps=25, short_side=32,
                  workers=1, verbose=False)
    build.build("video_folder", **kwargs)
    before = _all_examples(kwargs["data_dir"], "video_folder/t")
    write_video(root / "b" / "v3.mp4", num_frames=8, seed=5)
    (root / "train.txt").write_text("a/v0.mp4\na/v1.mp4\nb/v0.mp4\nb/v1.mp4\nb/v3.mp4\n")
    _count_decodes(monkeypatch, root, fail=lambda rel: rel == "b/v3.mp4")
    with pytest.raises(Killed):
        build.build("video_folder", **kwargs)
    kept = _all_examples(kwargs["data_dir"], "video_folder/t")  # the previous build, as it was
    assert kept.keys() == before.keys()
    assert all(kept[s].keys() == before[s].keys() and all(_same_example(kept[s][v], before[s][v]) for v in before[s])
               for s in before)
    assert not (tmp_path / "tfds" / "video_folder" / "t" / f"{build.REPLACED_PREFIX}1.0.0").exists()

    monkeypatch.undo()
    decoded = _count_decodes(monkeypatch, root)
    report = build.build("video_folder", **kwargs)
    assert decoded == ["b/v3.mp4"] and report["written_per_split"] == {"train": 5, "test": 2}
    assert sorted(os.listdir(tmp_path / "tfds" / "video_folder" / "t")) == ["1.0.0"]


def test_decode_cache_files_read_back_on_the_local_disk_and_through_tf_gfile(tmp_path):
    """The decode cache writes local files with the standard library (its workers import no TensorFlow) and
    other file systems through tf.io.gfile (here its in-memory `ram://`): the same bytes, the same result."""
    import subprocess
    import sys

    from stjax.data import decode_cache

    result = decode_cache.DecodeResult("a/v.mp4", None, ["a warning"], fps=25.0, height=32, width=40,
                                       frame_sizes=[3, 2], jpeg_frames=[b"abc", b"de"])
    paths = [str(tmp_path / "cache" / "x.bin"), "ram://stjax_test/cache/x.bin"]
    for path in paths:
        assert not decode_cache.exists(path)
        decode_cache.write(path, result)
        assert decode_cache.exists(path)
        assert decode_cache.read(path) == result
        assert decode_cache.read(path, frames=False) == dataclasses.replace(result, jpeg_frames=None)
    assert os.listdir(tmp_path / "cache") == ["x.bin"]  # no temporary file left
    import tensorflow as tf

    with tf.io.gfile.GFile(paths[1], "rb") as f:
        assert f.read() == (tmp_path / "cache" / "x.bin").read_bytes()
    # what a decoding worker imports
    code = "import sys, stjax.data.decode_cache; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
