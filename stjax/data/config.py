"""Turning the `data` block of a config into pipeline arguments, validated."""
from __future__ import annotations

import dataclasses

import ml_collections

from stjax import configlib
from stjax.data import augment, builders, inputs, motion_inputs, pipeline
from stjax.data import augment_config as augment_config_lib


def validate(config: ml_collections.ConfigDict, splits: list[inputs.Needed] | None = None) -> None:
    """Fails with a message naming the field unless the data settings are usable.

    Also checks the dataset as it is prepared or will be built on first use (`inputs`): every split the
    job reads exists (`splits`, default `inputs.required_splits(config)`), the crop fits the stored
    frames, and a prepared dataset's manual dir did not change since it was built.
    """
    name, _ = builders.split_name(config.data.dataset)
    configlib.require_choice("data.dataset", name, sorted(builders.BUILDERS))
    clip_spec(config)
    augment_config(config)
    configlib.require_choice("data.augment_on", config.data.get("augment_on", "host"), augment_config_lib.AUGMENT_ON)
    configlib.require(config.data.get("num_shards", 0) >= 0, "data.num_shards", config.data.get("num_shards"),
                      "0 (one per process) or a multiple of the number of processes")
    view_spec(config)
    for name in config.data.get("inputs", ()):
        configlib.require_choice("data.inputs", name, motion_inputs.INPUTS)
    if config.data.get("inputs", ()):
        motion_spec(config).map_size(config.data.augmentation.crop_size)
    check_dataset(config, splits)


def check_dataset(config, splits: list[inputs.Needed] | None = None) -> None:
    """The dataset part of `validate`: `config.data.dataset` as prepared, or as it will be built on first use,
    has the splits the job reads (`splits`, default `inputs.required_splits(config)`: for an evaluation config
    the train and eval splits), frames the crop fits, and a manual dir unchanged since it was built; nothing
    when it is neither prepared nor buildable (`ensure_built` says how to build it)."""
    inputs.check(config, inputs.plan(config), splits)


def clip_spec(config) -> pipeline.ClipSpec:
    try:
        return pipeline.ClipSpec(
            rho=config.rho, num_frames=config.data.num_frames, stride=config.data.stride,
            max_timespan=float(config.data.max_timespan),
        )
    except ValueError as e:
        raise ValueError(f"config: {e}") from None


def augment_config(config) -> augment.AugmentConfig:
    return augment_config_lib.from_config(config)


def pretrain_batches(config, per_process_batch: int, start_batch: int = 0, num_shards: int | None = None):
    """This process's endless training batches (NumPy) for `config`: `pipeline.pretrain_dataset` with the
    config's data settings (clips, augmentation and where it runs, shuffle, determinism).

    The global stream is defined over `num_shards` slices of the split (default: one per process,
    `data.num_shards` in a config), each with its own shuffle and draws; a process reads
    num_shards / process_count of them and puts their batches one after another. So the same global
    batches come out on any number of processes that divides `num_shards`: a run can move between
    1 process of 8 devices and 2 of 4, or resume on fewer hosts, with the same data.
    """
    import jax
    import numpy as np

    processes, process = jax.process_count(), jax.process_index()
    num_shards = num_shards or processes
    mine = check_shards(num_shards, processes, per_process_batch)
    iterators = [train_dataset(config, per_process_batch // mine, process * mine + i, num_shards, start_batch)
                 .as_numpy_iterator() for i in range(mine)]
    if mine == 1:
        return iterators[0]
    return (jax.tree.map(lambda *parts: np.concatenate(parts), *batches) for batches in zip(*iterators))


PIPELINES = ("clips", "keyframes")  # data.pipeline: ρ clips per video, or one clip per keyframe with its boxes


def train_dataset(config, batch_size: int, process_index: int = 0, process_count: int = 1, start_batch: int = 0,
                  shuffle_buffer: int | None = None):
    """The training tf.data pipeline `config.data.pipeline` names, for slice `process_index` of
    `process_count`: `clips` (`pipeline.pretrain_dataset`: ρ clips per video) or `keyframes`
    (`keyframes.train_dataset`: one clip per keyframe with its person boxes, for detection)."""
    from stjax.data import keyframes

    data = config.data
    kind = data.get("pipeline", "clips")
    configlib.require_choice("data.pipeline", kind, PIPELINES)
    common = dict(batch_size=batch_size, seed=config.seed, split=data.train_split, data_dir=data.data_dir,
                  process_index=process_index, process_count=process_count,
                  shuffle_buffer=data.shuffle_buffer if shuffle_buffer is None else shuffle_buffer,
                  deterministic=data.get("deterministic", True), start_batch=start_batch)
    if kind == "keyframes":
        return keyframes.train_dataset(data.dataset, spec=keyframes.spec_from_config(config), **common)
    return pipeline.pretrain_dataset(
        data.dataset, clips=clip_spec(config), augmentation=augment_config(config),
        augment_on=data.get("augment_on", "host"), clip_labels=data.get("clip_labels", "video"),
        inputs=tuple(data.get("inputs", ())), motion=motion_spec(config), **common)


def motion_spec(config) -> motion_inputs.MotionSpec:
    """`config.data.motion` (how the future motion windows and keyframes of `data.inputs` are drawn), checked."""
    block = config.data.get("motion", None)
    try:
        return motion_inputs.MotionSpec(**(block.to_dict() if block is not None else {}))
    except TypeError as e:
        valid = ", ".join(f.name for f in dataclasses.fields(motion_inputs.MotionSpec))
        raise ValueError(f"config.data.motion: {e}; valid fields: {valid}") from None


def check_shards(num_shards: int, process_count: int, per_process_batch: int) -> int:
    """Slices of the data stream each process reads; a clear error unless they divide evenly."""
    configlib.require(num_shards >= 1 and num_shards % process_count == 0, "data.num_shards", num_shards,
                      f"0 (one per process) or a multiple of the number of processes ({process_count})")
    mine = num_shards // process_count
    configlib.require(per_process_batch % mine == 0, "data.num_shards", num_shards,
                      f"a number that divides the batch into equal slices: {per_process_batch} videos per "
                      f"process is not a multiple of {mine} slices per process")
    return mine


def view_spec(config) -> pipeline.ViewSpec:
    v = config.data.test_views
    try:
        return pipeline.ViewSpec(
            num_frames=config.data.num_frames, stride=config.data.stride,
            crop_size=config.data.augmentation.crop_size, temporal=v.temporal, spatial=v.spatial,
            short_side=v.get("short_side"),
        )
    except ValueError as e:
        raise ValueError(f"config.data.test_views: {e}") from None


def ensure_built(config, verbose: bool = True, splits: list[inputs.Needed] | None = None) -> str:
    """Prepared directory of `config.data.dataset`, building it first when possible.

    The synthetic set is rendered and built on first use; another dataset is
    built when `config.data.manual_dir` names its videos; otherwise the error
    says how to build it. A dataset prepared by another version of its builder
    (e.g. the synthetic set of an older generator) is rebuilt the same way, into
    its own version folder; the old one is left in place. A prepared dataset whose
    manual dir changed since it was built is refused with what changed and the
    command that rebuilds it (`inputs.plan`). The splits the job reads (`splits`,
    default `inputs.required_splits(config)`) and the crop are checked before
    building (as the layout will build them) and after (as built).
    """
    from stjax.data import build

    dataset, data_dir = config.data.dataset, config.data.data_dir
    name, config_name = builders.split_name(dataset)
    current = str(builders.builder_class(name).VERSION)
    plan = inputs.plan(config)
    inputs.check(config, plan, splits)
    if plan is not None and plan.prepared is not None:
        return plan.prepared
    if builders.renders_itself(builders.builder_class(name)) or config.data.get("manual_dir"):
        build.build(name, manual_dir=config.data.get("manual_dir"), data_dir=data_dir,
                    config=config_name, verbose=verbose,
                    generator_kwargs=dict(config.data.get("synthetic", {})) or None)
        inputs.check(config, inputs.plan(config), splits)
        return builders.prepared_dir(dataset, data_dir, version=current)
    builders.load_builder(dataset, data_dir)  # raises with the build command
    return builders.prepared_dir(dataset, data_dir, version=current)
