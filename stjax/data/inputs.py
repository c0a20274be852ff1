"""What a job will read from its dataset, checked before any work: the splits, and whether the crop fits
the stored frames.

`plan(config)` describes `config.data.dataset` as it is prepared (TFDS info, `build_report.json`) or,
when `config.ensure_built` will build it on first use, as its manual dir's layout will make it (the
split files of a video folder, the annotations of an official layout, the synthetic set's settings).
A prepared dataset whose manual dir changed since it was built is refused (`SourceChangedError`), with
what changed and the command that rebuilds it: a run never trains on a stale build, and never rebuilds
(hours, on every host) by itself.

`check(config, plan, needed)` fails with a message naming the field, the dataset, its splits and how to
fix it when a split the job reads is missing (`required_splits`: the train split, and the eval split for
the end-of-run probe and the kNN monitor), and when `data.augmentation.crop_size` is larger than the
stored frames (the crop would be upsampled). Stored sizes may vary per video (a dataset stored at the
source size: the synthetic set, or `short_side=None`); then a split whose every video is smaller than
the crop is refused, and one where only some are gets one warning with the counts.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import json
import os
import re
import sys
import types

import tensorflow as tf
import tensorflow_datasets as tfds

from stjax.data import builders

CROP_FIELD = "data.augmentation.crop_size"
_warned: set = set()


class SourceChangedError(ValueError):
    """The manual dir of a prepared dataset changed since it was built."""


@dataclasses.dataclass(frozen=True)
class Needed:
    """A split a job reads: the config field that names it, the split, and what reads it (for messages)."""

    field: str
    split: str
    reader: str
    fixes: tuple[str, ...] = ()


@dataclasses.dataclass
class DatasetPlan:
    """A dataset as prepared, or as it will be built.

    Attributes:
      dataset: `NAME/CONFIG`.
      where: where it is or comes from, for messages ("prepared in DIR", "to be built from DIR").
      prepared: its prepared directory, or None when it is still to be built.
      splits: {split: videos}.
      short_side: stored short side of every frame in pixels, when the storage options fix it.
      short_sides: {split: {short side: videos}}, when known per video.
      manual_dir: the folder of videos it is (or will be) built from, if any.
      build_command: the command that builds (or rebuilds) it.
    """

    dataset: str
    where: str
    prepared: str | None
    splits: dict[str, int]
    short_side: int | None = None
    short_sides: dict[str, dict[int, int]] | None = None
    manual_dir: str | None = None
    build_command: str = ""


def required_splits(config) -> list[Needed]:
    """The splits a pretraining or evaluation config reads, with the fields naming them."""
    data = config.data
    if config.get("job", "pretrain") == "eval":
        reader = f"the {config.get('protocol', '')} evaluation reads the train and eval splits".replace("  ", " ")
        return [Needed("data.train_split", data.train_split, reader), Needed("data.eval_split", data.eval_split, reader)]
    needed = [Needed("data.train_split", data.train_split, "pretraining reads it")]
    readers, fixes = [], []
    probe = config.get("final_probe", "both")
    if probe != "none":
        readers.append(f"the linear probe after pretraining (final_probe={probe!r})")
        fixes.append("--config.final_probe=none")
    eval_every = config.get("eval_every", 0)
    if eval_every > 0:
        readers.append(f"the kNN monitor (eval_every={eval_every})")
        fixes.append("--config.eval_every=0")
    if readers:
        needed.append(Needed("data.eval_split", data.eval_split, " and ".join(readers) + " read"
                             + ("s" if len(readers) == 1 else "") + " it",
                             (f"pretrain without it: {' '.join(fixes)}",)))
    return needed


def plan(config) -> DatasetPlan | None:
    """`config.data.dataset` as prepared or as it will be built on first use; None when it is neither
    prepared nor buildable (`ensure_built` then says how to build it).

    Raises SourceChangedError when it is prepared but `config.data.manual_dir` changed since, and
    ValueError naming `data.manual_dir` when a dataset to be built has no usable layout there.
    """
    from stjax.data import build

    name, config_name = builders.split_name(config.data.dataset)
    cls = builders.builder_class(name)
    full = f"{name}/{config_name}"
    data_dir = os.path.expanduser(config.data.data_dir or builders.DEFAULT_DATA_DIR)
    given = config.data.get("manual_dir")
    manual_dir = build.source_dir_of(cls, given)
    prepared = builders.prepared_dir(full, data_dir, version=str(cls.VERSION))
    if prepared is not None:  # compared with the folder the config names (a run reads none of it)
        changes = build.changes_since_build(prepared, manual_dir if given else None)
        report = read_report(prepared)
        if not (manual_dir and os.path.isdir(manual_dir)):
            manual_dir = report.get("manual_dir")  # where it was built from, for messages
        command = _build_command(name, config_name, manual_dir, data_dir)
        if changes:
            message = (f"data.manual_dir={manual_dir!r} changed since {full} was built from it (in {prepared}): "
                       f"{changes.describe()}. Rebuild it (only new and modified videos are decoded; the current "
                       f"build is kept until the new one is written): {command}")
            if given:
                message += "; or leave data.manual_dir unset to use the dataset as it was built"
            raise SourceChangedError(message)
        return _prepared_plan(full, prepared, report, manual_dir, command)
    command = _build_command(name, config_name, manual_dir, data_dir)
    if not builders.renders_itself(cls) and not given:
        return None
    config_obj = build._resolve_config(cls, config_name, {})
    if builders.renders_itself(cls):
        return _synthetic_plan(cls, full, config, manual_dir, config_obj.short_side, command)
    try:
        builder = cls(manual_dir=manual_dir, config=config_obj, data_dir=data_dir)
        by_split = builder._checked_entries(builder.annotations)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"data.manual_dir={given!r}: {e}") from None
    return DatasetPlan(full, f"to be built from {manual_dir}", None,
                       {split: len(entries) for split, entries in by_split.items() if entries},
                       short_side=config_obj.short_side, manual_dir=manual_dir, build_command=command)


def _build_command(name: str, config_name: str, manual_dir: str | None, data_dir: str) -> str:
    config_flag = "" if config_name == builders.default_config_name(name) else f" --config {config_name}"
    return (f"python -m stjax.data.build --dataset {name}{config_flag} --manual_dir {manual_dir or 'VIDEO_DIR'} "
            f"--data_dir {data_dir}")


def _prepared_plan(full: str, prepared: str, report: dict, manual_dir: str | None, command: str) -> DatasetPlan:
    info = tfds.builder_from_directory(prepared).info
    recorded = report.get("stored_short_sides")
    return DatasetPlan(
        full, f"prepared in {prepared}", prepared, {split: s.num_examples for split, s in info.splits.items()},
        short_side=info.metadata.get("storage", {}).get("short_side"),
        short_sides=None if recorded is None else {
            split: {int(side): n for side, n in counts.items()} for split, counts in recorded.items()},
        manual_dir=manual_dir, build_command=command)


def _synthetic_plan(cls, full: str, config, manual_dir: str, short_side: int | None, command: str) -> DatasetPlan:
    """A synthetic set as `make_synthetic.generate` will render it (or has: its meta file)."""
    from stjax.data import make_synthetic

    defaults = {k: p.default for k, p in inspect.signature(make_synthetic.generate).parameters.items()
                if p.default is not inspect.Parameter.empty}
    given = dict(config.data.get("synthetic", {})) or None
    args = defaults | cls.generator_arguments(manual_dir, given)
    rendered = os.path.isfile(os.path.join(manual_dir, make_synthetic.META_NAME))
    where = f"to be built from {manual_dir}" if rendered and given is None else \
        f"to be rendered into {manual_dir} and built"
    splits = cls.planned_splits(args)
    sides = None if short_side is not None else {split: {int(args["size"]): n} for split, n in splits.items()}
    return DatasetPlan(full, where, None, splits, short_side=short_side, short_sides=sides, manual_dir=manual_dir,
                       build_command=command)


def read_report(dataset_dir: str) -> dict:
    """The `build_report.json` of a prepared dataset ({} if it has none)."""
    from stjax.data import build

    path = os.path.join(dataset_dir, build.REPORT_NAME)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def _scanned_short_sides(dataset_dir: str, split: str) -> tuple[tuple[int, int], ...]:
    builder = tfds.builder_from_directory(dataset_dir)
    counts = collections.Counter()
    ds = builder.as_dataset(split=split, decoders={"frames": tfds.decode.SkipDecoding()})
    for example in tfds.as_numpy(ds.map(lambda e: {"h": e["height"], "w": e["width"]})):
        counts[int(min(example["h"], example["w"]))] += 1
    return tuple(sorted(counts.items()))


def stored_short_sides(plan_: DatasetPlan, split: str) -> dict[int, int] | None:
    """{short side: videos} of `split`, from the build report, or for an older build by reading the split's
    frame sizes (once per process); None when unknown (a dataset still to be built at the source size)."""
    if split not in plan_.splits:  # a slice or union: the short sides of the whole splits it reads
        try:
            names = dict.fromkeys(name for name, _ in split_parts(split, plan_.splits))
        except (KeyError, ValueError):
            return None
        counts = [stored_short_sides(plan_, name) for name in names]
        if any(c is None for c in counts):
            return None
        return dict(sum((collections.Counter(c) for c in counts), collections.Counter()))
    if plan_.short_sides is not None and split in plan_.short_sides:
        return plan_.short_sides[split]
    if plan_.prepared is not None:
        return dict(_scanned_short_sides(plan_.prepared, split))
    return None


def check_crop(crop_size: int, field: str, plan_: DatasetPlan, splits) -> None:
    """Refuses `crop_size` when it is larger than the stored short side (of every video of a split read);
    warns once, with the counts, when it is larger than only some videos'."""
    if plan_.short_side is not None:
        if crop_size > plan_.short_side:
            raise ValueError(
                f"{field}={crop_size} is larger than the stored short side ({plan_.short_side}) of "
                f"{plan_.dataset} ({plan_.where}): every crop would be upsampled; valid values: "
                f"1..{plan_.short_side} (or build the dataset with a larger --short_side under another --config)")
        return
    for split in dict.fromkeys(splits):
        counts = stored_short_sides(plan_, split)
        if not counts:
            continue
        total = sum(counts.values())
        smaller = sum(n for side, n in counts.items() if side < crop_size)
        low, high = min(counts), max(counts)
        sizes = f"{low}" if low == high else f"{low}..{high}"
        if smaller == total:
            raise ValueError(
                f"{field}={crop_size} is larger than the stored short side of every video of split {split!r} of "
                f"{plan_.dataset} ({plan_.where}; short side {sizes} px): every crop would be upsampled; valid "
                f"values: 1..{high}, and 1..{low} for crops that fit every video")
        key = (plan_.dataset, plan_.prepared, split, crop_size)
        if smaller and key not in _warned:
            _warned.add(key)
            print(f"warning: {field}={crop_size} is larger than the stored short side of {smaller} of {total} "
                  f"videos of split {split!r} of {plan_.dataset} (short side {sizes} px): their crops are "
                  f"upsampled; crops of 1..{low} fit every video", file=sys.stderr, flush=True)


def split_parts(split: str, sizes: dict[str, int]) -> list[tuple[str, int]]:
    """[(split name, videos read)] of a split as TFDS names it: `train`, or a slice or union such as
    `train[:80%]`, `train[1200:]`, `train+test` (https://www.tensorflow.org/datasets/splits).

    Raises ValueError (TFDS's message) for a malformed spec or a slice past the split's end, and KeyError
    when it names a split not in `sizes`.
    """
    if split in sizes:
        return [(split, sizes[split])]
    instruction = tfds.core.ReadInstruction.from_spec(split)
    names = {name for name in re.split(r"\+", split) if name}
    names = {re.sub(r"\[.*$", "", name).strip() for name in names}
    missing = sorted(n for n in names if n not in sizes)
    if missing:
        raise KeyError(missing[0])
    infos = {name: types.SimpleNamespace(num_examples=n) for name, n in sizes.items()}
    parts = []
    for part in instruction.to_absolute(infos):
        total = sizes[part.splitname]
        start = 0 if part.from_ is None else part.from_
        stop = total if part.to is None else part.to
        parts.append((part.splitname, max(0, stop - start)))
    return parts


def check_splits(plan_: DatasetPlan, needed: list[Needed]) -> None:
    """Refuses a job whose splits are not all in the dataset (or will not be, once built). A split may be a
    TFDS slice of one (`train[:80%]`), which must not be empty."""
    for item in needed:
        if item.split in plan_.splits:
            continue
        try:
            parts = split_parts(item.split, plan_.splits)
        except KeyError:
            parts = None  # an unknown split name: the message below
        except ValueError as e:
            reason = str(e).splitlines()[-1].strip() if str(e).strip() else "not a TFDS split"
            raise ValueError(f"{item.field}={item.split!r} is invalid: {reason} ({plan_.dataset}'s splits: "
                             + ", ".join(f"{k} {v}" for k, v in sorted(plan_.splits.items()))
                             + "; a slice is written train[:80%] or train[1200:])") from None
        if parts is not None:
            if not sum(n for _, n in parts):
                raise ValueError(f"{item.field}={item.split!r} is invalid: it selects no video of "
                                 f"{plan_.dataset} ({plan_.where}; its splits: "
                                 + ", ".join(f"{k} {v}" for k, v in sorted(plan_.splits.items())) + ")")
            continue
        valid = ", ".join(sorted(plan_.splits)) or "none"
        fixes = [f"set {item.field} to one of: {valid}" if plan_.splits else None, *item.fixes,
                 _add_split_hint(plan_, item.split)]
        raise ValueError(
            f"{item.field}={item.split!r} is invalid: {plan_.dataset} ({plan_.where}) has no split {item.split!r}, "
            f"and {item.reader}; its splits: {valid}. To fix it: " + "; or ".join(f for f in fixes if f))


def _add_split_hint(plan_: DatasetPlan, split: str) -> str | None:
    """How to give the dataset the split, for the layouts whose splits are the user's own files."""
    name = plan_.dataset.split("/")[0]
    if name not in builders.GENERIC_BUILDERS or not plan_.manual_dir:
        module = builders.builder_class(name).__module__.replace(".", "/")
        return (f"build {plan_.dataset} from annotations that define split {split!r} (the layout is described "
                f"at the top of {module}.py)")
    split_files = sorted(e for e in os.listdir(plan_.manual_dir) if e.endswith(".txt")) \
        if os.path.isdir(plan_.manual_dir) else []
    hint = (f"list its videos in {os.path.join(plan_.manual_dir, split + '.txt')}, one `class/file.mp4` per line "
            f"(its split files now: {', '.join(split_files) or 'none, so every video is in train'}")
    if not split_files:
        hint += "; with split files only the listed videos are used, so list the training videos in train.txt"
    hint += ")"
    if plan_.prepared is not None:
        hint += f", then rebuild it: {plan_.build_command}"
    return hint


def check(config, plan_: DatasetPlan | None, needed: list[Needed] | None = None) -> None:
    """`check_splits` and `check_crop` of `config` on `plan_` (nothing when None: not built, not buildable)."""
    if plan_ is None:
        return
    needed = required_splits(config) if needed is None else needed
    check_splits(plan_, needed)
    check_crop(config.data.augmentation.crop_size, CROP_FIELD, plan_, [n.split for n in needed])
