"""One split as an Apache Beam transform, for builds spread over a cluster (optional extra `beam`).

`VideoDatasetBuilder` returns `DecodeSplit` from `_generate_examples` when built
with `use_beam=True`; TFDS applies it to its pipeline and writes the examples
itself. Each Beam worker decodes its videos through the same per-video decode
cache as the local path (`decode_cache.load_or_decode`), so a failed or
cancelled job started again reuses every video already decoded. What the
workers could not use goes, one JSON record per line, to text files under
`.partial/beam_report/`, which `read_report` merges into the build report.

The videos must be readable as local files on every worker (a shared file
system or a FUSE mount of a bucket); the data dir may be any TFDS path.
"""
from __future__ import annotations

import json

import apache_beam as beam
import tensorflow as tf

from stjax.data import decode_cache
from stjax.data.builders import base

REPORT_DIR = "beam_report"
_REPORT_TAG = "report"


class DecodeSplit(beam.PTransform):
    """PBegin → PCollection of (example key, example) for one split.

    Args:
      split: the split's name (for the report).
      items: per video, (`decode_cache.DecodeTask`, its examples: (key, video id, stored label, extra feature
        values, (start, end) seconds or None for the whole video)); a video is decoded once for all of them.
      report_prefix: path prefix of the text files that receive the skip and warning records.
    """

    def __init__(self, split: str, items: list[tuple[decode_cache.DecodeTask, list[tuple]]], report_prefix: str):
        super().__init__()
        self._split = split
        self._items = items
        self._report_prefix = report_prefix

    def expand(self, root):
        decoded = (
            root
            | "Videos" >> beam.Create(self._items, reshuffle=True)
            | "Decode" >> beam.FlatMap(_decode, self._split).with_outputs(_REPORT_TAG, main="examples")
        )
        _ = (
            decoded[_REPORT_TAG]
            | "ReportJson" >> beam.Map(json.dumps)
            | "WriteReport" >> beam.io.WriteToText(self._report_prefix, file_name_suffix=".jsonl")
        )
        return decoded.examples


def _decode(item, split: str):
    """The examples of one video, and report records, as the local build makes them (`base`)."""
    task, examples = item
    result = decode_cache.load_or_decode(task)
    if result.error is not None:
        whole = [e for e in examples if e[4] is None]
        for _ in whole:
            yield beam.pvalue.TaggedOutput(_REPORT_TAG, {"path": task.rel, "split": split, "reason": result.error})
        if len(whole) < len(examples):
            yield beam.pvalue.TaggedOutput(_REPORT_TAG, {"path": task.rel, "split": split, "reason": result.error,
                                                         "examples": len(examples) - len(whole)})
        return
    for warning in result.warnings:
        yield beam.pvalue.TaggedOutput(_REPORT_TAG, {"path": task.rel, "split": split, "warning": warning})
    for key, video_id, label, extra, span in examples:
        if span is None:
            yield key, base.example(video_id, label, result, extra)
            continue
        try:
            positions, note = base.range_positions(span[0], span[1], result)
        except ValueError as e:
            yield beam.pvalue.TaggedOutput(_REPORT_TAG, {"path": task.rel, "split": split, "example": key,
                                                         "reason": str(e)})
            continue
        if note:
            yield beam.pvalue.TaggedOutput(_REPORT_TAG, {"path": task.rel, "split": split, "example": key,
                                                         "warning": note})
        frames = [result.jpeg_frames[i] for i in positions]
        yield key, base.example(video_id, label, base.with_frames(result, frames), extra)


def read_report(report_dir: str) -> tuple[list[dict], list[dict]]:
    """(skip records, warning records) that the workers wrote under `report_dir`."""
    skipped, warnings = [], []
    for path in sorted(tf.io.gfile.glob(f"{report_dir.rstrip('/')}/*.jsonl")):
        with tf.io.gfile.GFile(path) as f:
            for line in f:
                record = json.loads(line)
                (skipped if "reason" in record else warnings).append(record)
    return skipped, warnings


def clear_report(report_dir: str) -> None:
    """Removes records left by an earlier, interrupted run."""
    if tf.io.gfile.exists(report_dir):
        tf.io.gfile.rmtree(report_dir)
