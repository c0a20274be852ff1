"""Resuming reads only the current epoch again: records read before the first batch do not grow with progress."""
import numpy as np
import tensorflow as tf

from stjax.data import augment, pipeline

AUG = augment.AugmentConfig(crop_size=24)
N = 9  # train videos of `tiny_video_dataset`
BATCH, BUFFER = 3, 4


def _counting_stream(monkeypatch, data_dir, start_batch):
    """The pipeline's batches from `start_batch` on, and a counter of the source records read so far."""
    reads = []
    real_read = pipeline._read

    def counting_read(*args, **kwargs):
        ds, builder, host_split = real_read(*args, **kwargs)

        def count(example):
            tf.py_function(lambda: reads.append(1), [], [])
            return example

        return ds.map(count), builder, host_split

    monkeypatch.setattr(pipeline, "_read", counting_read)
    ds = pipeline.pretrain_dataset("video_folder/tiny", data_dir=data_dir, batch_size=BATCH, seed=5,
                                   clips=pipeline.ClipSpec(rho=2, num_frames=4, stride=2), augmentation=AUG,
                                   shuffle_buffer=BUFFER, start_batch=start_batch, prefetch=1,
                                   num_parallel_calls=1)
    return ds.as_numpy_iterator(), reads


def test_resumed_stream_equals_the_uninterrupted_one(monkeypatch, tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    start = 5 * N // BATCH + 1  # element 48: epoch 5, 3 examples into it
    whole, _ = _counting_stream(monkeypatch, data_dir, 0)
    expected = [next(whole) for _ in range(start + 4)][start:]
    resumed, _ = _counting_stream(monkeypatch, data_dir, start)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["clips"], want["clips"])
        np.testing.assert_array_equal(got["label"], want["label"])


def test_resume_reads_only_the_current_epoch(monkeypatch, tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    counts = {}
    for epoch in (1, 5, 20):
        start = epoch * N // BATCH + 2  # a few examples into epoch `epoch`
        it, reads = _counting_stream(monkeypatch, data_dir, start)
        next(it)
        counts[epoch] = len(reads)
    # the skipped part of the epoch + the batch + what the shuffle buffer and prefetch hold; no earlier epoch
    bound = N + BUFFER + 3 * BATCH
    assert all(c <= bound for c in counts.values()), (counts, bound)
    assert max(counts.values()) - min(counts.values()) <= N, counts
