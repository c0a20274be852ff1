"""Frame folders (directories of numbered JPEGs) as videos: decoding, the Charades layout, change detection."""
import csv
import io
import os
from fractions import Fraction

import numpy as np
import pytest

from conftest import write_video

COLUMNS = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects", "descriptions",
           "actions", "length"]
ROWS = {  # id: actions
    "FOLD1": "c000 0.00 0.50",  # frames only
    "BOTH1": "c001 0.10 0.90",  # a video file and a frame folder: the file is used
    "HOLE1": "c000 0.20 0.40",  # one corrupt image in the middle: kept, the image before fills in
    "EMPTY": "c001 0.00 0.30",  # an empty frame folder
    "JUNK1": "c000 0.00 0.30",  # only unreadable images
    "GONE1": "c000 0.00 0.30",  # neither a file nor a folder
}
NUM_IMAGES = 24  # 1 s at the official 24 fps


def _image(seed, height=32, width=40):
    """A smooth random RGB image (upsampled 5×4 noise): consecutive frames differ far more than JPEG errs."""
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def _write_jpeg(path, rgb, quality=95):
    from PIL import Image

    Image.fromarray(rgb).save(path, format="JPEG", quality=quality)


def _decode_jpeg(data):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float64)


def _write_folder(folder, video_id, count, seed, first=1):
    os.makedirs(folder, exist_ok=True)
    for n in range(first, first + count):
        _write_jpeg(os.path.join(folder, f"{video_id}-{n:06d}.jpg"), _image(1000 * seed + n))


def _source_frames(folder):
    """{number: decoded RGB} of a folder's images, read independently of stjax."""
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            try:
                out[int(name.rsplit("-", 1)[1].split(".")[0])] = _decode_jpeg(f.read())
            except Exception:  # noqa: BLE001 — the corrupt ones
                pass
    return out


def _nearest(frame, sources):
    """(number, mean abs difference) of the source image closest to `frame`."""
    errors = {n: float(np.mean(np.abs(frame - img))) for n, img in sources.items()}
    best = min(errors, key=errors.get)
    return best, errors[best]


def _layout(root):
    (root / "Charades_v1_classes.txt").write_text("c000 Holding something\nc001 Taking something\n")
    with open(root / "Charades_v1_train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for video_id, actions in ROWS.items():
            writer.writerow([video_id, "S1", "Kitchen", "6", "7", "Yes", "", "", "", actions, "1.0"])
    rgb = root / "Charades_v1_rgb"
    _write_folder(rgb / "FOLD1", "FOLD1", NUM_IMAGES, seed=1)
    _write_folder(rgb / "BOTH1", "BOTH1", NUM_IMAGES, seed=2)
    _write_folder(rgb / "HOLE1", "HOLE1", NUM_IMAGES, seed=3)
    (rgb / "HOLE1" / "HOLE1-000005.jpg").write_bytes(b"not a jpeg at all")
    (rgb / "EMPTY").mkdir()
    (rgb / "JUNK1").mkdir()
    for n in (1, 2, 3):
        (rgb / "JUNK1" / f"JUNK1-{n:06d}.jpg").write_bytes(b"\xff\xd8 broken")
    _write_folder(rgb / "OTHER", "OTHER", 3, seed=9)  # listed nowhere
    (root / "Charades_v1_480").mkdir()
    write_video(root / "Charades_v1_480" / "BOTH1.mp4", num_frames=10, seed=5)


def _stored(data_dir, dataset="charades/tiny"):
    import tensorflow_datasets as tfds

    from stjax.data import builders

    builder = builders.load_builder(dataset, data_dir)
    ds = builder.as_dataset(split="train", decoders={"frames": tfds.decode.SkipDecoding()})
    return {ex["video_id"].decode(): ex for ex in tfds.as_numpy(ds)}


def _count_folder_decodes(monkeypatch, root):
    from stjax.data import video_io

    real, calls = video_io.decode_frame_folder, []

    def decode(path, *args, **kwargs):
        calls.append(os.path.relpath(path, root).replace(os.sep, "/"))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(video_io, "decode_frame_folder", decode)
    return calls


def test_charades_frame_folders_are_stored_as_their_frames_and_changes_are_detected(tmp_path, monkeypatch):
    from stjax.data import build

    root = tmp_path / "charades"
    root.mkdir()
    _layout(root)
    data_dir = str(tmp_path / "tfds")
    calls = _count_folder_decodes(monkeypatch, root)
    report = build.build("charades", manual_dir=str(root), data_dir=data_dir, config="tiny", fps=24, short_side=32,
                         workers=1, verbose=False)
    assert sorted(calls) == [f"Charades_v1_rgb/{v}" for v in ("EMPTY", "FOLD1", "HOLE1", "JUNK1")]
    stored = _stored(data_dir)
    assert sorted(stored) == ["BOTH1", "FOLD1", "HOLE1"]

    # every stored frame is its source image (24 fps onto 24 fps, 40×32 at short side 32: no resampling)
    for video_id, hole in (("FOLD1", None), ("HOLE1", 5)):
        sources = _source_frames(root / "Charades_v1_rgb" / video_id)
        ex = stored[video_id]
        assert ex["num_frames"] == NUM_IMAGES and ex["fps"] == 24.0 and (ex["height"], ex["width"]) == (32, 40)
        for i, data in enumerate(ex["frames"]):
            number, error = _nearest(_decode_jpeg(data), sources)
            assert number == (i if i + 1 == hole else i + 1), (video_id, i)  # the corrupt image: the one before
            assert error < 5.0, (video_id, i, error)  # one JPEG re-encoding at quality 90 (other frames: > 20)
    assert stored["BOTH1"]["num_frames"] < NUM_IMAGES  # the 10-frame mp4, not the 24-image folder

    reasons = {r["path"]: r["reason"] for r in report["skipped_files"]}
    assert reasons["Charades_v1_rgb/EMPTY"] == "no numbered JPEG/PNG frames in the folder"
    assert reasons["Charades_v1_rgb/JUNK1"].startswith("no readable frame: 3 of 3 images unreadable: JUNK1-000001.jpg")
    assert "no video file is named GONE1.* and there is no frame folder Charades_v1_rgb/GONE1/" in reasons["GONE1"]
    assert report["written"] == 3 and report["skipped"] == 3 and report["missing"] == 1
    warnings = {w["path"]: w["warning"] for w in report["warnings"]}
    assert "HOLE1-000005.jpg (UnidentifiedImageError" in warnings["Charades_v1_rgb/HOLE1"]
    assert {"Charades_v1_rgb/BOTH1/", "Charades_v1_rgb/OTHER/"} <= set(report["ignored_files"])
    assert not any(f.endswith(".jpg") for f in report["ignored_files"])

    # a rewritten image is a change of its video, which alone is decoded again
    from stjax.data import builders

    dataset_dir = builders.prepared_dir("charades/tiny", data_dir)
    assert not build.changes_since_build(dataset_dir, str(root))
    changed = root / "Charades_v1_rgb" / "FOLD1" / "FOLD1-000007.jpg"
    new_image = _image(424242)
    _write_jpeg(changed, new_image)
    changes = build.changes_since_build(dataset_dir, str(root))
    assert changes.modified == ("Charades_v1_rgb/FOLD1",) and not changes.added and not changes.removed
    calls.clear()
    report = build.build("charades", manual_dir=str(root), data_dir=data_dir, config="tiny", workers=1, verbose=False)
    assert sorted(calls) == [f"Charades_v1_rgb/{v}" for v in ("EMPTY", "FOLD1", "JUNK1")]  # HOLE1's are reused
    assert report["reused_from_previous_build"] == 2  # HOLE1 (a folder) and BOTH1 (a file)
    frame = _decode_jpeg(_stored(data_dir)["FOLD1"]["frames"][6])
    assert float(np.mean(np.abs(frame - new_image))) < 5.0
    # a removed image is a change too
    os.remove(root / "Charades_v1_rgb" / "HOLE1" / "HOLE1-000010.jpg")
    changes = build.changes_since_build(builders.prepared_dir("charades/tiny", data_dir), str(root))
    assert changes.modified == ("Charades_v1_rgb/HOLE1",)


def test_a_frame_folder_is_keyed_by_its_images(tmp_path):
    from stjax.data import decode_cache

    folder = tmp_path / "v"
    _write_folder(folder, "v", 3, seed=0)

    def key(source_fps=24):
        return decode_cache.cache_file(str(tmp_path / "cache"), "v", str(folder), {"fps": 24}, "1.0.0",
                                       source_fps=source_fps)

    first = key()
    assert key() == first != key(source_fps=30)
    stat = os.stat(folder / "v-000002.jpg")
    _write_jpeg(folder / "v-000002.jpg", _image(77))
    os.utime(folder / "v-000002.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same time, new size
    second = key()
    assert second != first
    os.rename(folder / "v-000003.jpg", folder / "v-000004.jpg")
    assert key() not in (first, second)


def test_frame_folders_resample_like_videos(tmp_path):
    """24 fps images onto a 10 fps grid from 0.5 s: output k shows the last image at or before k / 10 s;
    missing numbers repeat the image before; a folder numbered from 0 starts at time 0."""
    from stjax.data import video_io

    folder = tmp_path / "f"
    _write_folder(folder, "f", NUM_IMAGES, seed=4)
    sources = _source_frames(folder)
    video = video_io.decode(str(folder), source_fps=24, fps=10, start_seconds=0.5)
    assert video.first_index == 5 and video.fps == 10.0
    want = [1 + int(Fraction(k * 24, 10)) for k in range(5, 10)]  # (n - 1) / 24 <= k / 10
    got = [_nearest(_decode_jpeg(f), sources)[0] for f in video.jpeg_frames]
    assert got == want == [13, 15, 17, 20, 22]

    holes = tmp_path / "holes"
    _write_folder(holes, "h", 6, seed=5, first=0)
    os.remove(holes / "h-000003.jpg")
    sources = _source_frames(holes)
    video = video_io.decode(str(holes), source_fps=5)
    assert [_nearest(_decode_jpeg(f), sources)[0] for f in video.jpeg_frames] == [0, 1, 2, 2, 4, 5]
    assert video.warnings == ["1 frame numbers between 0 and 5 have no image; the image before each is repeated"]
    with pytest.raises(video_io.VideoReadError, match="needs the frame rate of its images"):
        video_io.decode(str(holes))
