"""Builds a video dataset into TFDS files of JPEG frames.

    python -m stjax.data.build --dataset video_folder --manual_dir ~/videos/my_set \
        [--config my_set] [--fps 30] [--short_side 256] [--data_dir ~/stjax_data/tfds]
    python -m stjax.data.build --dataset synthetic          # renders the videos first if missing

Ends with one line `written N, skipped M` and writes `build_report.json` (every
skipped file with the reason) next to the dataset's files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import tensorflow_datasets as tfds

from stjax.data import builders

REPORT_NAME = "build_report.json"


def build(
    dataset: str,
    manual_dir: str | None = None,
    data_dir: str | None = None,
    config: str | None = None,
    fps: float | None = None,
    short_side: int | None = None,
    jpeg_quality: int | None = None,
    max_seconds: float | None = None,
    workers: int | None = None,
    generator_kwargs: dict | None = None,
    verbose: bool = True,
) -> dict:
    """Builds `dataset` (a name from `builders.BUILDERS`) and returns its build report.

    Storage options left as None take the builder's named config (`config`, or
    `default`); giving any of them with a new `config` name defines a new
    config, stored under `DATA_DIR/NAME/CONFIG/`. Building a dataset that is
    already prepared (at the builder's current version) does nothing and returns the
    report of the earlier build; other versions are left alone.
    """
    cls = builders.builder_class(dataset)
    data_dir = os.path.expanduser(data_dir or builders.DEFAULT_DATA_DIR)
    config_obj = _resolve_config(cls, config, fps, short_side, jpeg_quality, max_seconds)
    full_name = f"{dataset}/{config_obj.name}"

    existing = builders.prepared_dir(full_name, data_dir, version=str(cls.VERSION))
    if existing is not None:
        stored = tfds.builder_from_directory(existing).info.metadata.get("storage", {})
        requested = {k: v for k, v in dict(fps=fps, short_side=short_side, jpeg_quality=jpeg_quality,
                                           max_seconds=max_seconds).items() if v is not None}
        if any(stored.get(k) != v for k, v in requested.items()):
            raise ValueError(
                f"{full_name} in {existing} was built with {stored}, not {config_obj.storage_metadata()}; "
                "give another --config name, or delete that folder to rebuild"
            )
        report = _read_report(existing)
        if verbose:
            print(f"{full_name} is already built in {existing}; delete that folder to rebuild.")
            print(f"written {report.get('written', '?')}, skipped {report.get('skipped', '?')}")
        return report

    kwargs = dict(manual_dir=manual_dir, workers=workers, config=config_obj, data_dir=data_dir)
    if cls is builders.Synthetic:
        kwargs.update(generate_if_missing=True, generator_kwargs=generator_kwargs)
    elif manual_dir is None:
        raise ValueError(f"--manual_dir is required to build {dataset!r} (the folder of videos)")

    start = time.time()
    tfds.disable_progress_bar()  # the builder shows its own, with a total and an ETA
    builder = cls(**kwargs)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=builder._scan_root)
    )
    report = builder.report.as_dict()
    report.update(dataset=full_name, manual_dir=builder._scan_root, seconds=round(time.time() - start, 1))
    report_path = os.path.join(builder.data_dir, REPORT_NAME)
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)
    if verbose:
        for item in report["skipped_files"]:
            print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
        print(f"report: {report_path}")
        print(f"written {report['written']}, skipped {report['skipped']}")
    return report


def _resolve_config(cls, name, fps, short_side, jpeg_quality, max_seconds):
    known = {c.name: c for c in cls.BUILDER_CONFIGS}
    overrides = {k: v for k, v in dict(fps=fps, short_side=short_side, jpeg_quality=jpeg_quality,
                                       max_seconds=max_seconds).items() if v is not None}
    name = name or "default"
    if name in known and not overrides:
        return known[name]
    if name in known:
        raise ValueError(
            f"config {name!r} of {cls.name} has fixed storage options {known[name].storage_metadata()}; "
            f"give a new --config name to store with {overrides}"
        )
    base = known["default"]
    fields = base.storage_metadata() | overrides
    return builders.VideoFolderConfig(name=name, description=f"custom: {fields}", **fields)


def _read_report(dataset_dir: str) -> dict:
    path = os.path.join(dataset_dir, REPORT_NAME)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help=f"one of: {', '.join(sorted(builders.BUILDERS))}")
    parser.add_argument("--manual_dir", help="folder of videos (class-per-folder tree)")
    parser.add_argument("--data_dir", default=builders.DEFAULT_DATA_DIR, help="where the TFDS files go")
    parser.add_argument("--config", help="name of the storage config (default: 'default')")
    parser.add_argument("--fps", type=float, help="stored frames per second")
    parser.add_argument("--short_side", type=int, help="stored short side in pixels")
    parser.add_argument("--jpeg_quality", type=int, help="JPEG quality 1..100")
    parser.add_argument("--max_seconds", type=float, help="keep at most this many seconds per video")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    args = parser.parse_args(argv)
    try:
        build(args.dataset, manual_dir=args.manual_dir, data_dir=args.data_dir, config=args.config,
              fps=args.fps, short_side=args.short_side, jpeg_quality=args.jpeg_quality,
              max_seconds=args.max_seconds, workers=args.workers)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
