"""Dataset builders, registered by name, and loading of prepared datasets.

A dataset is addressed as `NAME` or `NAME/CONFIG` (CONFIG defaults to
`default`); its prepared files live in `DATA_DIR/NAME/CONFIG/VERSION/`.
"""
from __future__ import annotations

import os

import tensorflow_datasets as tfds

from stjax.data.builders.synthetic import Synthetic
from stjax.data.builders.video_folder import VideoFolder, VideoFolderConfig

__all__ = ["BUILDERS", "DEFAULT_DATA_DIR", "Synthetic", "VideoFolder", "VideoFolderConfig", "builder_class",
           "load_builder", "prepared_dir", "split_name"]

BUILDERS: dict[str, type[VideoFolder]] = {
    "video_folder": VideoFolder,
    "synthetic": Synthetic,
}

DEFAULT_DATA_DIR = os.path.join(
    os.environ.get("STJAX_DATA_ROOT", os.path.expanduser("~/stjax_data")), "tfds"
)


def builder_class(name: str) -> type[VideoFolder]:
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name]


def split_name(dataset: str) -> tuple[str, str]:
    """'ucf101/fold1' → ('ucf101', 'fold1'); 'synthetic' → ('synthetic', 'default')."""
    name, _, config = dataset.partition("/")
    return name, config or "default"


def prepared_dir(dataset: str, data_dir: str | None = None, version: str | None = None) -> str | None:
    """Directory of the newest prepared version of `dataset` (or of exactly `version`), or None."""
    name, config = split_name(dataset)
    root = os.path.join(os.path.expanduser(data_dir or DEFAULT_DATA_DIR), name, config)
    if not os.path.isdir(root):
        return None
    versions = []
    for entry in os.listdir(root):
        try:
            found = tfds.core.Version(entry)
        except ValueError:
            continue
        if os.path.exists(os.path.join(root, entry, "dataset_info.json")) and version in (None, str(found)):
            versions.append(found)
    return os.path.join(root, str(max(versions))) if versions else None


def load_builder(dataset: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """A read-only TFDS builder for `dataset` prepared at its builder's current version; a clear
    error if it is not built (or only by another version of the builder)."""
    name, _ = split_name(dataset)
    current = str(builder_class(name).VERSION)
    path = prepared_dir(dataset, data_dir, version=current)
    if path is None:
        other = prepared_dir(dataset, data_dir)
        state = (f"prepared in {other} by builder version {os.path.basename(other)}, but this code reads "
                 f"version {current}" if other else f"not built in {data_dir or DEFAULT_DATA_DIR!r}")
        raise FileNotFoundError(
            f"dataset {dataset!r} is {state}. Build it with: "
            f"python -m stjax.data.build --dataset {name} --manual_dir VIDEO_DIR "
            f"--data_dir {data_dir or DEFAULT_DATA_DIR}"
        )
    return tfds.builder_from_directory(path)
