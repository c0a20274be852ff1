"""`Framework.embed`: the pooled online-backbone features, the same for every framework."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stjax import objectives
from stjax.objectives import base
from test_frameworks import CLIPS_SHAPE, _config, _key


@pytest.mark.parametrize("name", ["moco", "simclr", "swav"])
def test_embed_is_the_online_backbone_features(name):
    framework = objectives.create_framework(_config(name), total_steps=10, steps_per_epoch=2)
    clips = jax.random.uniform(_key(1), CLIPS_SHAPE)
    params, batch_stats, extra = framework.init(_key(0), clips)
    feats, stats = framework.embed(params, batch_stats, extra, clips, _key(2), train=False)
    expected = framework.backbone.apply(framework.backbone_variables(params, batch_stats),
                                        base.flatten_clips(clips), train=False)
    assert feats.dtype == jnp.float32 and feats.shape[:2] == CLIPS_SHAPE[:2]
    np.testing.assert_allclose(np.asarray(feats).reshape(-1, feats.shape[-1]), np.asarray(expected), rtol=1e-6)
    assert jax.tree.structure(stats) == jax.tree.structure(batch_stats)
    _, trained = framework.embed(params, batch_stats, extra, clips, _key(2), train=True)
    assert set(trained) == set(batch_stats)
