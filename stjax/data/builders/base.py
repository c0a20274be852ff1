"""The machinery every video dataset builder shares: annotations in, JPEG-frame TFDS files out.

A builder subclasses `VideoDatasetBuilder` and implements `_read_annotations`,
which turns its layout's annotation files into `VideoEntry`s (video id, file
or frame folder, label, split; optionally a time range of the video) plus the
problems it found. The base then

1. checks the entries (duplicates, missing files, labels outside the class list),
2. decodes each listed file once (PyAV, `video_io.decode_video`: a constant-rate
   grid, a short side, JPEG frames) into the per-video `decode_cache`, in
   parallel on all local cores and skipping files decoded by an earlier,
   interrupted run,
3. writes each split's TFDS files from the cache.

An entry with a time range (`VideoEntry.start` / `end`, e.g. AVA's windows
around keyframes) is an example cut out of its video: a video is decoded once,
over the span all its entries cover, and each example takes its frames from
that (`range_positions`).

With `use_beam=True` steps 2–3 run as an Apache Beam pipeline instead
(`beam_split`), on whatever runner TFDS's `DownloadConfig` names.

Everything that could not be used is listed, with the reason, in the
`BuildReport`, which `stjax.data.build` saves as `build_report.json`.

Examples hold `frames` (JPEG bytes per stored frame), `label` (in the form of the
builder's `LABEL_TYPE`, `stjax.data.targets`: a class id, -1 for an unlabelled test
video; or the video's class ids for `multi_hot`), `video_id`, `fps` (stored frames per second),
`num_frames`, `height` and `width` (stored frame size in pixels), and the builder's `extra_features()`.
"""
from __future__ import annotations

import abc
import collections
import dataclasses
import math
import multiprocessing
import os
from typing import Iterable, Iterator

import tensorflow as tf
import tensorflow_datasets as tfds
import tqdm

from stjax.data import targets
from stjax.data import decode_cache
from stjax.data import video_io

PARTIAL_DIR = ".partial"
# What a dataset's targets are: one class per video, multi-hot classes per video, boxes with per-box
# labels, or labels per frame. A builder declares one as `LABEL_TYPE`.
LABEL_TYPES = ("single", "multi_hot", "boxes", "per_frame")


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
    """Storage options, recorded in the dataset's metadata.

    Attributes:
      fps: stored frames per second (None: each video's own average rate).
      short_side: stored short side in pixels (None: source size).
      jpeg_quality: JPEG quality of the stored frames, 1..100.
      max_seconds: keep at most this many seconds of each video (None: all).
      motion_vectors: also store each stored frame's codec motion vectors and key-frame flag (features
        `motion`, int8 [N, ceil(H/motion_block), ceil(W/motion_block), 2] in quarter pixels per frame, and
        `keyframes`, bool [N]; `stjax.data.motion_vectors`), for objectives that learn from the compressed
        stream (CMD). A video whose codec exports no motion vectors is skipped and reported.
      motion_block: the motion grid's cell size in stored pixels.
    """

    fps: float | None = 30.0
    short_side: int | None = 256
    jpeg_quality: int = 90
    max_seconds: float | None = None
    motion_vectors: bool = False
    motion_block: int = 4

    def __post_init__(self):
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0 or None, got {self.fps}")
        if self.short_side is not None and not self.short_side >= 1:
            raise ValueError(f"short_side must be >= 1 or None, got {self.short_side}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if not (isinstance(self.motion_block, int) and self.motion_block >= 1):
            raise ValueError(f"motion_block must be an integer >= 1 (pixels), got {self.motion_block}")

    def storage_metadata(self) -> dict:
        stored = {
            "fps": self.fps, "short_side": self.short_side,
            "jpeg_quality": self.jpeg_quality, "max_seconds": self.max_seconds,
        }
        if self.motion_vectors:  # only then: datasets built before motion vectors keep their metadata and caches
            stored.update(motion_vectors=True, motion_block=self.motion_block)
        return stored

    def options(self) -> dict:
        """Every option that makes this config: the storage options (and the split fold, if any)."""
        return self.storage_metadata()

    def metadata(self) -> dict:
        """What the dataset's `info.metadata` records about this config."""
        return {"storage": self.storage_metadata()}


@dataclasses.dataclass(eq=False)
class FoldConfig(VideoFolderConfig):
    """Storage options plus which of a dataset's official train/test split folds to build.

    Attributes:
      split_fold: the official split number, one of `FOLDS`.
    """

    FOLDS = (1, 2, 3)
    split_fold: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.split_fold not in self.FOLDS:
            raise ValueError(f"split_fold must be one of {', '.join(map(str, self.FOLDS))}, got {self.split_fold}")

    def options(self) -> dict:
        return self.storage_metadata() | {"split_fold": self.split_fold}

    def metadata(self) -> dict:
        return super().metadata() | {"split_fold": self.split_fold}


def fold_configs(**storage) -> list[FoldConfig]:
    """One config per official split fold, `fold1`, `fold2`, ..., with the same storage options."""
    return [FoldConfig(name=f"fold{k}", split_fold=k, description=f"official split {k}; {storage}", **storage)
            for k in FoldConfig.FOLDS]


@dataclasses.dataclass
class BuildReport:
    """What a build wrote and skipped; saved as JSON next to the dataset.

    `missing` counts skipped videos that the annotations list but that are not on disk;
    `decoded` / `reused` count videos decoded in this run / taken from the decode cache (of
    an earlier, interrupted run, or of the previous build of a changed source);
    `short_sides` counts the written videos of each split by stored short side in pixels.
    For builders with several examples per video (time ranges), `written` and `short_sides` count
    examples; a video that cannot be decoded is one skip record with the number of its `examples`, and
    a record about one range names it (`example`: its key).
    """

    written: dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())
    skipped: list[dict] = dataclasses.field(default_factory=list)
    warnings: list[dict] = dataclasses.field(default_factory=list)
    ignored_files: list[str] = dataclasses.field(default_factory=list)
    missing: int = 0
    decoded: int = 0
    reused: int = 0
    short_sides: dict[str, collections.Counter] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(collections.Counter))

    def as_dict(self) -> dict:
        return {
            "written": sum(self.written.values()),
            "written_per_split": dict(self.written),
            "skipped": len(self.skipped),
            "missing": self.missing,
            "decoded": self.decoded,
            "reused_from_interrupted_build": self.reused,
            "skipped_files": self.skipped,
            "warnings": self.warnings,
            "ignored_files": self.ignored_files,
            "stored_short_sides": {split: {str(side): n for side, n in sorted(counts.items())}
                                   for split, counts in self.short_sides.items()},
        }


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One video, or one time range of a video, as the annotations list it.

    Attributes:
      video_id: the example's `video_id`; unique within its split unless `key` is given.
      path: the file, or a frame folder, relative to the manual dir with '/' separators; None when
        nothing matches (the entry is then reported as missing with `missing_reason`).
      label: class name, or None for an unlabelled (test) video, stored as label -1; for a `multi_hot`
        builder a sequence of class names (empty: none of the classes).
      split: the TFDS split it goes to.
      source: the annotation file that lists it (for messages).
      missing_reason: what was looked for, when `path` is None.
      extra: the values of the builder's `extra_features()` for this example (e.g. Charades' time-stamped
        actions), as those features encode them.
      key: the example's key, unique within its split (None: `video_id`), for several examples per video.
      start, end: a time range of the video in seconds from its start (None: the whole video): the example
        holds the stored frames whose grid times k / fps lie in [start, end] (`range_positions`). Frames
        of the range before the video's first or after its last frame repeat that frame, so every example
        of a range length has the same number of frames (noted in the build report); an entry whose
        range's middle frame is not in the video is skipped. `max_seconds` does not apply to ranges.
      source_fps: the frame rate of the images when `path` is a frame folder (None: `path` is a file).
    """

    video_id: str
    path: str | None
    label: str | tuple[str, ...] | None
    split: str
    source: str
    missing_reason: str | None = None
    extra: dict | None = None
    key: str | None = None
    start: float | None = None
    end: float | None = None
    source_fps: float | None = None

    @property
    def example_key(self) -> str:
        return self.video_id if self.key is None else self.key


@dataclasses.dataclass
class Annotations:
    """What a layout's annotation files say.

    Attributes:
      classes: class names in label-id order.
      splits: split names in the order they are built.
      entries: the listed videos, in annotation order.
      skipped / warnings: problems found while reading the annotations, as report records
        ({"path", "split", "reason"} / {"path", "split", "warning"}).
      ignored_files: files under the manual dir that no annotation uses.
      missing: listed videos without a file that the layout reported in `skipped` itself (e.g. once
        per video for a layout with many entries per video), counted in the report's `missing`.
    """

    classes: list[str]
    splits: list[str]
    entries: list[VideoEntry]
    skipped: list[dict] = dataclasses.field(default_factory=list)
    warnings: list[dict] = dataclasses.field(default_factory=list)
    ignored_files: list[str] = dataclasses.field(default_factory=list)
    missing: int = 0


class VideoDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Videos listed by a layout's annotations, stored as JPEG frames for clip sampling."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "JPEG frames at a constant rate, with label, video id, fps and size."}
    BUILDER_CONFIGS = [VideoFolderConfig(name="default", description="30 fps, short side 256")]
    LABEL_TYPE = "single"  # one of LABEL_TYPES: the `label` feature's form (`stjax.data.targets`)

    def extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        """Features a layout stores beside the frames and the label (each entry's `extra` holds their
        values), e.g. time-stamped actions; none by default."""
        return {}

    def __init__(self, *, manual_dir: str | None = None, workers: int | None = None, use_beam: bool = False,
                 **kwargs):
        """`manual_dir` is needed to build (it holds the videos and annotations); loading needs
        nothing. `workers`: decoding processes (default: all cores); `use_beam`: generate the
        splits as an Apache Beam pipeline."""
        self._manual_dir = os.fspath(manual_dir) if manual_dir else None
        self._workers = workers or os.cpu_count() or 1
        self._use_beam = use_beam
        self._annotations = None
        self.report = BuildReport()
        # split -> {video id: path} of the whole-video examples, once the splits are planned (what a rebuild
        # may reuse); frame_rates: {path: source_fps} of their frame folders
        self.videos: dict[str, dict[str, str]] = {}
        self.frame_rates: dict[str, float] = {}
        self._beam_plan = None
        super().__init__(**kwargs)
        self.cache_dir = os.path.join(os.path.dirname(self.data_dir), PARTIAL_DIR)

    @abc.abstractmethod
    def _read_annotations(self, root: str) -> Annotations:
        """Reads the layout under `root` (an existing directory) for `self.builder_config`."""

    @property
    def manual_dir(self) -> str | None:
        return self._manual_dir

    @property
    def annotations(self) -> Annotations | None:
        """The parsed annotations of `manual_dir` (None without one); read once."""
        if self._annotations is None and self._manual_dir is not None:
            if not os.path.isdir(self._manual_dir):
                raise FileNotFoundError(f"manual_dir {self._manual_dir!r} is not a directory")
            self._annotations = self._read_annotations(self._manual_dir)
        return self._annotations

    def _info(self) -> tfds.core.DatasetInfo:
        # without annotations, the class names are restored from the prepared dataset's files
        classes = self.annotations.classes if self.annotations is not None else None
        label = targets.feature(self.LABEL_TYPE, classes)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "frames": tfds.features.Sequence(
                    tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
                ),
                "label": label,
                "video_id": tfds.features.Text(),
                "fps": tfds.features.Scalar(tf.float32, doc="stored frames per second"),
                "num_frames": tfds.features.Scalar(tf.int32),
                "height": tfds.features.Scalar(tf.int32, doc="stored frame height in pixels"),
                "width": tfds.features.Scalar(tf.int32, doc="stored frame width in pixels"),
                **self.extra_features(),
                **(motion_features(self.builder_config.motion_block)
                   if getattr(self.builder_config, "motion_vectors", False) else {}),
            }),
            metadata=tfds.core.MetadataDict(**self.builder_config.metadata()),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        annotations = self.annotations
        if annotations is None:
            raise ValueError(
                f"building {self.name} needs its videos: pass manual_dir "
                f"(`python -m stjax.data.build --dataset {self.name} --manual_dir DIR`)"
            )
        self.report = BuildReport(skipped=list(annotations.skipped), warnings=list(annotations.warnings),
                                  ignored_files=list(annotations.ignored_files), missing=annotations.missing)
        by_split = self._checked_entries(annotations)
        if getattr(self.builder_config, "motion_vectors", False) and any(
                e.start is not None for entries in by_split.values() for e in entries):
            raise ValueError(f"{self.name}: motion vectors are stored for whole videos only; this layout's examples "
                             "are time ranges of videos (build it without --with_motion_vectors)")
        per_path: dict[str, list[VideoEntry]] = {}
        for entry in (e for entries in by_split.values() for e in entries):
            per_path.setdefault(entry.path, []).append(entry)
        tasks = {path: self._task(path, entries) for path, entries in per_path.items()}
        if self._use_beam:
            from stjax.data.builders import beam_split

            beam_split.clear_report(os.path.join(self.cache_dir, beam_split.REPORT_DIR))
            writable = {split: entries for split, entries in by_split.items() if self._writable(split, entries)}
            for split, entries in writable.items():
                self._record_videos(split, entries)
            self._beam_plan = (writable, tasks)
            return {split: self._generate_examples(split, entries, tasks) for split, entries in writable.items()}
        results = self._decode_all(list(tasks.values()))
        generators = {}
        for split, entries in by_split.items():
            usable = []
            failed = {}  # path -> its skip record, for ranges: one record per video, with the examples' count
            warned = set()
            for entry in entries:
                result = results[entry.path]
                if result.error is not None:
                    if entry.start is None:
                        self.report.skipped.append({"path": entry.path, "split": split, "reason": result.error})
                    elif entry.path in failed:
                        failed[entry.path]["examples"] += 1
                    else:
                        failed[entry.path] = {"path": entry.path, "split": split, "reason": result.error, "examples": 1}
                        self.report.skipped.append(failed[entry.path])
                    continue
                if entry.start is None or entry.path not in warned:
                    warned.add(entry.path)
                    for warning in result.warnings:
                        self.report.warnings.append({"path": entry.path, "split": split, "warning": warning})
                if entry.start is not None:
                    try:
                        _, note = range_positions(entry.start, entry.end, result)
                    except ValueError as e:
                        self.report.skipped.append({"path": entry.path, "split": split, "example": entry.example_key,
                                                    "reason": str(e)})
                        continue
                    if note:
                        self.report.warnings.append({"path": entry.path, "split": split, "example": entry.example_key,
                                                     "warning": note})
                usable.append(entry)
                self.report.short_sides[split][min(result.height, result.width)] += 1
            if self._writable(split, usable):
                generators[split] = self._generate_examples(split, usable, tasks)
                self._record_videos(split, usable)
        return generators

    def _record_videos(self, split: str, entries: list[VideoEntry]) -> None:
        """Notes the whole-video examples of `split` (`videos`, `frame_rates`), which a rebuild may reuse."""
        self.videos[split] = {e.video_id: e.path for e in entries if e.start is None}
        self.frame_rates.update({e.path: e.source_fps for e in entries if e.start is None and e.source_fps})

    def _generate_examples(self, split: str, entries: list[VideoEntry], tasks: dict):
        """`split`'s (key, example) pairs from the decode cache; with `use_beam`, a
        `beam.PTransform` that decodes (or reuses) each video on the Beam workers."""
        if self._use_beam:
            from stjax.data.builders import beam_split

            report_prefix = os.path.join(self.cache_dir, beam_split.REPORT_DIR, split)
            per_task: dict[str, list] = {}
            for e in entries:
                per_task.setdefault(e.path, []).append(
                    (e.example_key, e.video_id, self._stored_label(e), self._extra(e),
                     None if e.start is None else (e.start, e.end)))
            items = [(tasks[path], examples) for path, examples in per_task.items()]
            return beam_split.DecodeSplit(split, items, report_prefix)
        return self._examples_from_cache(split, entries, tasks)

    def _examples_from_cache(self, split, entries, tasks) -> Iterator[tuple[str, dict]]:
        reader = None  # of the last ranged entry's video: the entries of one video usually follow each other
        for entry in tqdm.tqdm(entries, desc=f"{self.name} writing {split}", unit="example", dynamic_ncols=True):
            cache_file = tasks[entry.path].cache_file
            if entry.start is None:
                result = decode_cache.read(cache_file)
            else:
                if reader is None or reader.path != cache_file:
                    reader = decode_cache.FrameReader(cache_file)
                positions, _ = range_positions(entry.start, entry.end, reader.header)
                result = with_frames(reader.header, reader.frames(positions))
            self.report.written[split] += 1
            yield entry.example_key, example(entry.video_id, self._stored_label(entry), result, self._extra(entry))

    def _extra(self, entry: VideoEntry) -> dict:
        """`entry.extra`, checked against `extra_features()` (the same keys)."""
        expected, given = set(self.extra_features()), set(entry.extra or {})
        if expected != given:
            raise ValueError(f"{entry.source}: {entry.video_id} has extra features {sorted(given)}; "
                             f"{type(self).__name__}.extra_features() declares {sorted(expected)}")
        return dict(entry.extra or {})

    def _stored_label(self, entry: VideoEntry):
        return targets.stored_value(self.LABEL_TYPE, entry.label, f"{entry.source}: {entry.video_id}")

    def _checked_entries(self, annotations: Annotations) -> dict[str, list[VideoEntry]]:
        """Entries grouped by split, less those that cannot be built (reported as skipped)."""
        classes = set(annotations.classes)
        by_split = {split: [] for split in annotations.splits}
        seen = {}  # example key -> splits it is in
        present = {}  # path -> whether it is there (a file, or a folder for frame-folder entries)
        for entry in annotations.entries:
            reason = None
            where = seen.setdefault(entry.example_key, [])
            if entry.path is not None and (entry.path, entry.source_fps is None) not in present:
                full = os.path.join(self._manual_dir, entry.path)
                present[entry.path, entry.source_fps is None] = (
                    os.path.isfile(full) if entry.source_fps is None else os.path.isdir(full))
            if entry.split in where:
                reason = f"listed twice in {entry.source}"
            elif entry.path is None or not present[entry.path, entry.source_fps is None]:
                reason = entry.missing_reason or f"listed in {entry.source} but not found"
                self.report.missing += 1
            elif unknown := targets.unknown_classes(self.LABEL_TYPE, entry.label, classes):
                reason = f"label {', '.join(map(repr, unknown))} is not in the class list ({len(classes)} classes)"
            elif entry.start is not None and not (entry.end is not None and entry.start <= entry.end):
                reason = f"{entry.source}: the time range [{entry.start}, {entry.end}] s is empty"
            if reason:
                self.report.skipped.append({"path": entry.path or entry.example_key, "split": entry.split,
                                            "reason": reason})
                continue
            if where:
                self.report.warnings.append({"path": entry.path, "split": entry.split,
                                             "warning": f"also listed in split {where[0]!r}; kept in both"})
            where.append(entry.split)
            by_split.setdefault(entry.split, []).append(entry)
        return by_split

    def _writable(self, split: str, entries: list) -> bool:
        """Whether `split` has videos to write; if not, the report says it is left out."""
        if not entries:
            self.report.warnings.append({"path": None, "split": split,
                                         "warning": "no usable video; the split is not written"})
        return bool(entries)

    def _task(self, rel: str, entries: list[VideoEntry]) -> decode_cache.DecodeTask:
        """The decoding of the video at `rel` that all its `entries` take their frames from: the whole video
        (up to `max_seconds`), or when every entry is a time range, the span they cover (a frame past it)."""
        cfg = self.builder_config
        path = os.path.join(self._manual_dir, rel)
        source_fps = entries[0].source_fps
        span = None
        if all(e.start is not None for e in entries):
            span = (max(0.0, min(e.start for e in entries)),
                    max(e.end for e in entries) + (1.0 / cfg.fps if cfg.fps else 1.0))
        start, max_seconds = span if span is not None else (0.0, cfg.max_seconds)
        return decode_cache.DecodeTask(
            rel=rel, path=path,
            cache_file=decode_cache.cache_file(self.cache_dir, rel, path, cfg.storage_metadata(), str(self.version),
                                               source_fps=source_fps, span=span),
            fps=cfg.fps, short_side=cfg.short_side, jpeg_quality=cfg.jpeg_quality, max_seconds=max_seconds,
            source_fps=source_fps, start_seconds=start,
            motion_block=cfg.motion_block if getattr(cfg, "motion_vectors", False) else None,
        )

    def _decode_all(self, tasks: list[decode_cache.DecodeTask]) -> dict[str, decode_cache.DecodeResult]:
        """Every task's result (header only), decoding those not cached by an earlier run."""
        results, todo = {}, []
        for task in tasks:
            if tf.io.gfile.exists(task.cache_file):
                results[task.rel] = decode_cache.read(task.cache_file, frames=False)
            else:
                todo.append(task)
        self.report.reused = len(results)
        if results:
            print(f"{self.name}: resuming, {len(results)} of {len(tasks)} videos already decoded "
                  f"in {self.cache_dir}")
        for result in tqdm.tqdm(map_in_workers(decode_cache.decode_into_cache, todo, self._workers),
                                total=len(todo), desc=f"{self.name} decoding", unit="video", dynamic_ncols=True):
            results[result.rel] = result
            self.report.decoded += 1
        return results

    def finish_report(self) -> dict:
        """The build report, after `download_and_prepare`: with the Beam path, the per-video
        problems its workers recorded, the written counts, and the stored sizes (from the
        decode cache's headers)."""
        if self._use_beam:
            from stjax.data.builders import beam_split

            skipped, warnings = beam_split.read_report(os.path.join(self.cache_dir, beam_split.REPORT_DIR))
            self.report.skipped.extend(skipped)
            self.report.warnings.extend(warnings)
            self.report.written = collections.Counter(
                {name: split.num_examples for name, split in self.info.splits.items()}
            )
            failed = {(r["split"], r["path"]) for r in skipped if "example" not in r}  # whole videos
            dropped = {(r["split"], r["example"]) for r in skipped if "example" in r}  # single ranges
            by_split, tasks = self._beam_plan or ({}, {})
            headers = {}
            for split, entries in by_split.items():
                for entry in entries:
                    if (split, entry.path) in failed or (split, entry.example_key) in dropped:
                        self.videos[split].pop(entry.video_id, None)
                        continue
                    cache_file = tasks[entry.path].cache_file
                    if cache_file not in headers:
                        headers[cache_file] = decode_cache.read(cache_file, frames=False)
                    self.report.short_sides[split][min(headers[cache_file].height, headers[cache_file].width)] += 1
        return self.report.as_dict()

    def remove_cache(self) -> None:
        """Deletes the decode cache; call once the dataset is written."""
        if tf.io.gfile.exists(self.cache_dir):
            tf.io.gfile.rmtree(self.cache_dir)


def range_positions(start: float, end: float, result: decode_cache.DecodeResult) -> tuple[list[int], str | None]:
    """Which of a decoded video's frames an entry with the time range [start, end] seconds holds.

    The range's grid frames are k = ceil(start·fps) … floor(end·fps) (to 1e-6 frames; fps = the result's);
    the result holds grid frames first_index … first_index + num_frames − 1. Frames of the range outside
    those repeat the nearest one. Returns (positions into the result's frames, a note saying how many were
    repeated, or None). Raises ValueError (the reason) when the range holds no grid frame or its middle
    frame, (first + last) // 2, is not in the result.
    """
    lo, hi = video_io.grid_index(start, result.fps), math.floor(end * result.fps + 1e-6)
    if hi < lo:
        raise ValueError(f"the range [{start:.3f}, {end:.3f}] s holds no frame at {result.fps:g} fps")
    first, last = result.first_index, result.first_index + result.num_frames - 1
    middle = (lo + hi) // 2
    if not first <= middle <= last:
        raise ValueError(f"the range [{start:.3f}, {end:.3f}] s is centred at {middle / result.fps:.3f} s, outside the "
                         f"decoded video ({first / result.fps:.3f}–{(last + 1) / result.fps:.3f} s)")
    positions = [min(max(k, first), last) - first for k in range(lo, hi + 1)]
    outside = max(0, first - lo) + max(0, hi - last)
    if not outside:
        return positions, None
    return positions, (f"{outside} of the range's {hi - lo + 1} frames lie outside the decoded video "
                       f"({first / result.fps:.3f}–{(last + 1) / result.fps:.3f} s); its edge frame is repeated")


def with_frames(header: decode_cache.DecodeResult, frames: list[bytes]) -> decode_cache.DecodeResult:
    """`header` (a decode result's metadata) holding `frames` instead."""
    return dataclasses.replace(header, jpeg_frames=frames, frame_sizes=[len(f) for f in frames])


def motion_features(block: int) -> dict[str, tfds.features.FeatureConnector]:
    """The features a dataset built with motion vectors adds (`VideoFolderConfig.motion_vectors`)."""
    return {
        "motion": tfds.features.Tensor(
            shape=(None, None, None, 2), dtype=tf.int8, encoding=tfds.features.Encoding.ZLIB,
            doc=f"per stored frame, the codec's motion (dx, dy) on a {block}-pixel grid, forward in time, in "
                "quarter stored pixels per stored frame (stjax.data.motion_vectors)"),
        "keyframes": tfds.features.Tensor(shape=(None,), dtype=tf.bool,
                                          doc="per stored frame: it shows a key frame (I-frame) of the stream"),
    }


def example(video_id: str, label: str | int | list[str], result: decode_cache.DecodeResult,
            extra: dict | None = None) -> dict:
    """The TFDS example of a decoded video (`label`: as `targets.stored_value` gives it; `extra`: the
    values of the builder's `extra_features()`; `motion` and `keyframes` when the result has them)."""
    motion = {} if result.motion is None else {"motion": result.motion, "keyframes": result.keyframes}
    return {
        **(extra or {}),
        **motion,
        "frames": result.jpeg_frames,
        "label": label,
        "video_id": video_id,
        "fps": result.fps,
        "num_frames": result.num_frames,
        "height": result.height,
        "width": result.width,
    }


def map_in_workers(fn, tasks: list, workers: int) -> Iterable:
    """`fn` over `tasks`, in `workers` processes when workers > 1; results in completion order."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    # spawn: the parent has TensorFlow threads running, which fork does not survive.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap_unordered(fn, tasks, chunksize=1)
