"""Throughput of the stjax training input pipeline on a prepared dataset.

    python bench/data_pipeline.py --config configs/pretrain.py:demo [--batches 30] [--batch_size 32]

Prints videos/s and clips/s (a clip = T frames, cropped and augmented) after a
warm-up, and the rate per CPU core the pipeline may use. The full comparison
with a PyTorch-style per-sample decoder lives in bench/input_pipeline.py.
"""
from __future__ import annotations

import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/pretrain.py:demo", "pretraining config")
_BATCHES = flags.DEFINE_integer("batches", 30, "batches to time after warm-up")
_WARMUP = flags.DEFINE_integer("warmup", 5, "batches before timing starts")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "videos per batch (default: the config's batch_size)")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from stjax.data import config as data_config
    from stjax.data import pipeline

    config = _CONFIG.value
    data_config.validate(config)
    data_config.ensure_built(config)
    batch_size = _BATCH_SIZE.value or config.batch_size
    clips = data_config.clip_spec(config)
    ds = pipeline.pretrain_dataset(
        config.data.dataset, batch_size=batch_size, clips=clips,
        augmentation=data_config.augment_config(config), seed=config.seed,
        data_dir=config.data.data_dir, shuffle_buffer=config.data.shuffle_buffer,
    )
    it = ds.as_numpy_iterator()
    for _ in range(_WARMUP.value):
        next(it)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(_BATCHES.value):
        batch = next(it)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    videos = _BATCHES.value * batch_size
    cores = len(os.sched_getaffinity(0))
    crop = config.data.augmentation.crop_size
    print(f"dataset {config.data.dataset}, rho={clips.rho}, clip {clips.num_frames}x{crop}^2, "
          f"batch {batch['clips'].shape}")
    print(f"{'videos/s':>10} {'clips/s':>10} {'cores':>6} {'clips/s/core':>13} {'clips/cpu-s':>12}")
    print(f"{videos / wall:10.1f} {videos * clips.rho / wall:10.1f} {cores:6d} "
          f"{videos * clips.rho / wall / cores:13.1f} {videos * clips.rho / cpu:12.1f}")


if __name__ == "__main__":
    app.run(main)
