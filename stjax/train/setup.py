"""One run assembly, used by pretraining (`stjax.main`) and fine-tuning (`stjax.eval.protocols.finetune`).

`build(config, mesh)` reads the data block once (ClipSpec, AugmentConfig), the split's size and class
names, works out the steps, creates the framework and takes the init shapes from the input pipeline's
element spec (not from a shape written out by hand), and returns them as one `Run` for
`stjax.train.loop.train`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything the generic loop needs, assembled once.

    `batches(start_batch, num_shards)` is this process's iterator of host batches (NumPy), the global stream
    being defined over `num_shards` slices of the data (`stjax.data.config.pretrain_batches`); `element_spec`
    the global batch's shapes ({'clips': ShapeDtypeStruct [B, ρ, T, S, S, 3], ...}); `data_shards` the slices
    of a new run (None: one per process; a resumed run keeps its checkpoint's); `augmentation` the
    AugmentConfig the train step applies on the device (None: the pipeline augments).
    """
    config: Any
    mesh: Any
    framework: Any
    batches: Callable[[int, int], Iterator[dict]]
    element_spec: dict
    total_steps: int
    steps_per_epoch: float
    data_shards: int | None = None
    augmentation: Any = None
    clips: Any = None
    num_train: int | None = None
    class_names: tuple = ()
    label_type: str = "single"  # the dataset's (`stjax.data.builders.LABEL_TYPES`): the batch `label` form

    @property
    def clips_shape(self) -> tuple:
        """The global clips shape [B, ρ, T, S, S, 3] the state is initialised with."""
        return tuple(self.element_spec["clips"].shape)


def build(config, mesh, *, batch_field: str = "batch_size", num_train: int | None = None) -> Run:
    """The `Run` of `config` (a pretraining-style config: `configs/pretrain.py`, or `protocols.finetune.finetune_config`)
    on `mesh`. `batch_field` names `config.batch_size` in the error when the mesh does not divide it;
    `num_train` the train split's size when the caller already knows it (default: the builder's)."""
    from stjax import objectives
    from stjax.data import builders
    from stjax.data import config as data_config
    from stjax.train import mesh as mesh_lib

    per_process = mesh_lib.check_batch_size(config.batch_size, mesh, batch_field)
    builder = builders.load_builder(config.data.dataset, config.data.data_dir)
    if num_train is None:
        num_train = builder.info.splits[config.data.train_split].num_examples
    class_names = builders.class_names(builder)
    clips = data_config.clip_spec(config)
    augmentation = data_config.augment_config(config)
    steps_per_epoch = num_train / config.batch_size
    total_steps = config.get("total_steps", 0) or max(1, round(config.num_epochs * steps_per_epoch))

    def batches(start_batch: int, num_shards: int) -> Iterator[dict]:
        return data_config.pretrain_batches(config, per_process, start_batch, num_shards)

    framework = objectives.create_framework(config, total_steps, steps_per_epoch)
    on_device = config.data.get("augment_on", "host") == "device"
    return Run(config=config, mesh=mesh, framework=framework, batches=batches,
               element_spec=element_spec(config), total_steps=total_steps,
               steps_per_epoch=steps_per_epoch, data_shards=config.data.get("num_shards", 0) or None,
               augmentation=augmentation if on_device else None, clips=clips, num_train=num_train,
               class_names=class_names, label_type=builders.label_type(builder))


def element_spec(config) -> dict:
    """The global batch's {name: ShapeDtypeStruct} as the training pipeline declares it (its tf.data
    `element_spec`, with the global `config.batch_size` as the leading dimension); nothing is read."""
    from stjax.data import config as data_config

    ds = data_config.train_dataset(config, batch_size=1, shuffle_buffer=1)
    return {name: jax.ShapeDtypeStruct((config.batch_size, *spec.shape[1:]), spec.dtype.as_numpy_dtype)
            for name, spec in ds.element_spec.items()}
