"""Frozen-backbone features of a dataset split: multi-view test clips in, one feature per video out."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


from stjax.eval.protocols.base import POOLS


def make_feature_extractor(backbone, config, mesh, batch_size_per_process: int, pool: str = "mean",
                           views_head: Callable | None = None) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """`features(variables, split, head_params=None) -> (features float32 [N, D], labels [N] or [N, C])` for
    `config.data`'s dataset.

    Each video's V test views (`data.test_views`) go through `backbone` in eval mode and their features are
    pooled over the views by `pool` (`mean` or `max`, per feature); with `views_head`, a function
    `(head_params, features float32 [B, V, D]) -> float32 [B, K]` instead, run on the device (e.g. a
    classifier's logits of each view, pooled), whose [N, K] are returned. The views are sharded over the
    mesh's data axis.
    """
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is invalid; valid values: {', '.join(POOLS)}")
    reduce = jnp.mean if pool == "mean" else jnp.max
    from stjax.data import config as data_config
    from stjax.data import device as device_lib
    from stjax.data import pipeline
    from stjax.eval import linear_probe
    from stjax.train import mesh as mesh_lib
    from stjax.train import step as step_lib

    views = data_config.view_spec(config)
    batch_sharding = mesh_lib.batch_sharding(mesh)

    @jax.jit
    def embed(variables, head_params, clips_uint8):
        b, v = clips_uint8.shape[:2]
        x = step_lib.normalize_clips(clips_uint8).reshape((b * v,) + clips_uint8.shape[2:])
        feats = backbone.apply(variables, x, train=False).reshape(b, v, -1).astype(jnp.float32)
        return reduce(feats, axis=1) if views_head is None else views_head(head_params, feats)

    def features(variables, split, head_params=None):
        ds = pipeline.eval_dataset(
            config.data.dataset, batch_size=batch_size_per_process, views=views, split=split,
            data_dir=config.data.data_dir, process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        batches = device_lib.prefetch_to_mesh(ds.as_numpy_iterator(), batch_sharding)
        return linear_probe.extract_features(lambda b: embed(variables, head_params, b["clips"]), batches)

    return features
