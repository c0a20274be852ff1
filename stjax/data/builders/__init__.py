"""Dataset builders, registered by name, and loading of prepared datasets.

A dataset is addressed as `NAME` or `NAME/CONFIG` (CONFIG defaults to the
builder's first config: `default`, or `fold1` for datasets with official split
folds); its prepared files live in `DATA_DIR/NAME/CONFIG/VERSION/`.
"""
from __future__ import annotations

import os

import tensorflow_datasets as tfds

from stjax.data.builders.ava import Ava
from stjax.data.builders.base import LABEL_TYPES, FoldConfig, VideoDatasetBuilder, VideoFolderConfig
from stjax.data.builders.charades import Charades
from stjax.data.builders.hmdb51 import Hmdb51
from stjax.data.builders.kinetics import Kinetics400, Kinetics600, Kinetics700
from stjax.data.builders.ssv2 import Ssv2
from stjax.data.builders.synthetic import (Synthetic, SyntheticAva, SyntheticBiased, SyntheticCharades,
                                           renders_itself)
from stjax.data.builders.ucf101 import Ucf101
from stjax.data.builders.video_folder import VideoFolder
from stjax.data.builders.video_multilabel import VideoMultilabel

__all__ = ["Ava", "BUILDERS", "Charades", "DEFAULT_DATA_DIR", "LABEL_TYPES", "FoldConfig", "Synthetic",
           "SyntheticAva", "SyntheticBiased", "SyntheticCharades", "VideoDatasetBuilder",
           "VideoFolder", "VideoFolderConfig", "VideoMultilabel", "builder_class", "class_names",
           "default_config_name", "label_type",
           "load_builder", "prepared_dir", "renders_itself", "split_name"]

# Builders for any folder of videos.
GENERIC_BUILDERS: dict[str, type[VideoDatasetBuilder]] = {
    "video_folder": VideoFolder,
    "video_multilabel": VideoMultilabel,
    "synthetic": Synthetic,
    "synthetic_charades": SyntheticCharades,  # rendered on first use, like `synthetic`
    "synthetic_ava": SyntheticAva,
    "synthetic_biased": SyntheticBiased,
}
# Builders for the layouts the standard datasets are distributed in.
OFFICIAL_BUILDERS: dict[str, type[VideoDatasetBuilder]] = {
    cls.name: cls for cls in (Kinetics400, Kinetics600, Kinetics700, Ucf101, Hmdb51, Ssv2, Charades, Ava)
}
BUILDERS: dict[str, type[VideoDatasetBuilder]] = GENERIC_BUILDERS | OFFICIAL_BUILDERS

DEFAULT_DATA_DIR = os.path.join(
    os.environ.get("STJAX_DATA_ROOT", os.path.expanduser("~/stjax_data")), "tfds"
)


def builder_class(name: str) -> type[VideoDatasetBuilder]:
    if name not in BUILDERS:
        raise ValueError(
            f"unknown dataset {name!r}; valid choices: {', '.join(sorted(GENERIC_BUILDERS))} (any folder of "
            f"videos) or {', '.join(sorted(OFFICIAL_BUILDERS))} (the official layouts)"
        )
    return BUILDERS[name]


def label_type(builder) -> str:
    """The label type (one of LABEL_TYPES) a dataset declares: `builder` is a builder class or instance, a
    prepared (read-only) builder from `load_builder`, or a dataset name (`NAME` or `NAME/CONFIG`). A prepared
    dataset takes the `LABEL_TYPE` of the registered builder of its name; one without a registered builder
    holds one class id per video ('single')."""
    if isinstance(builder, str):
        builder = builder_class(split_name(builder)[0])
    elif not (isinstance(builder, type) and issubclass(builder, VideoDatasetBuilder)):
        cls = type(builder)
        builder = cls if issubclass(cls, VideoDatasetBuilder) else BUILDERS.get(getattr(builder, "name", None))
    if builder is None:
        return "single"
    kind = getattr(builder, "LABEL_TYPE", None)
    if kind not in LABEL_TYPES:
        raise ValueError(f"{builder.__name__}.LABEL_TYPE={kind!r} is invalid; valid choices: {', '.join(LABEL_TYPES)}")
    return kind


def class_names(builder) -> tuple[str, ...]:
    """The class names, in label-id order, of a prepared builder (`load_builder`), whatever its label type."""
    from stjax.data import targets

    return targets.class_names(builder.info.features["label"])


def default_config_name(name: str) -> str:
    """The config a dataset name without `/CONFIG` means: its builder's first (e.g. `fold1`
    for ucf101), or `default` for names no builder has."""
    return BUILDERS[name].BUILDER_CONFIGS[0].name if name in BUILDERS else "default"


def split_name(dataset: str) -> tuple[str, str]:
    """'ucf101/fold2' → ('ucf101', 'fold2'); 'ucf101' → ('ucf101', 'fold1');
    'synthetic' → ('synthetic', 'default')."""
    name, _, config = dataset.partition("/")
    return name, config or default_config_name(name)


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
    name, config = split_name(dataset)
    current = str(builder_class(name).VERSION)
    path = prepared_dir(dataset, data_dir, version=current)
    if path is None:
        other = prepared_dir(dataset, data_dir)
        state = (f"prepared in {other} by builder version {os.path.basename(other)}, but this code reads "
                 f"version {current}" if other else f"not built in {data_dir or DEFAULT_DATA_DIR!r}")
        config_flag = "" if config == default_config_name(name) else f" --config {config}"
        raise FileNotFoundError(
            f"dataset {dataset!r} is {state}. Build it with: "
            f"python -m stjax.data.build --dataset {name}{config_flag} --manual_dir VIDEO_DIR "
            f"--data_dir {data_dir or DEFAULT_DATA_DIR}"
        )
    return tfds.builder_from_directory(path)
