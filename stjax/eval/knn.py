"""Nearest-neighbour protocols on frozen features: weighted kNN classification and clip retrieval.

Both compare L2-normalised features by cosine similarity, test (query) against train (gallery):

* `knn_classify`: the weighted kNN of Wu et al. (2018), used by the ρ-study's codebase as its
  monitor: each of the k nearest train features votes for its class with weight
  exp(cosine / temperature); top-1 / top-5 over the summed votes.
* `retrieval_recall`: R@k, the share of test clips whose k nearest train clips include one of the
  same class (the video-retrieval protocol of Xu et al. 2019 and later work).

Queries run in chunks on the default device, so a test set of any size fits.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from stjax.eval import metrics


def _normalize(x) -> jnp.ndarray:
    x = jnp.asarray(x, jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _check(train_x, train_y, test_x, test_y=None):
    train_x, test_x = np.asarray(train_x), np.asarray(test_x)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be [N, D] with the same D; got train {train_x.shape}, test {test_x.shape}")
    if len(train_y) != len(train_x) or (test_y is not None and len(test_y) != len(test_x)):
        raise ValueError("every feature row needs one label")
    if len(train_x) == 0 or len(test_x) == 0:
        raise ValueError("empty train or test features")


@functools.partial(jax.jit, static_argnames=("k",))
def _nearest(queries, gallery, k: int):
    """(cosine [Q, k], index [Q, k]) of the k most similar gallery rows, most similar first."""
    return jax.lax.top_k(queries @ gallery.T, k)


def _neighbours(train_x, test_x, k: int, chunk: int):
    gallery = _normalize(train_x)
    sims, idx = [], []
    for start in range(0, len(test_x), chunk):
        s, i = _nearest(_normalize(test_x[start:start + chunk]), gallery, k)
        sims.append(np.asarray(s))
        idx.append(np.asarray(i))
    return np.concatenate(sims), np.concatenate(idx)


def knn_classify(train_x, train_y, test_x, num_classes: int, k: int = 200, temperature: float = 0.07,
                 chunk: int = 1024) -> np.ndarray:
    """Class scores [N_test, num_classes] (summed exp(cos / temperature) votes of the k nearest train
    features; k is capped at the number of train features)."""
    _check(train_x, train_y, test_x)
    if k < 1 or temperature <= 0:
        raise ValueError(f"knn needs k >= 1 and temperature > 0; got k={k}, temperature={temperature}")
    k = min(k, len(train_x))
    sims, idx = _neighbours(train_x, test_x, k, chunk)
    votes = np.exp((sims - 1.0) / temperature)  # shifted by the largest possible cosine: no overflow
    labels = np.asarray(train_y)[idx]
    scores = np.zeros((len(test_x), num_classes), np.float64)
    np.add.at(scores, (np.arange(len(test_x))[:, None], labels), votes)
    return scores


def retrieval_recall(train_x, train_y, test_x, test_y, ks=(1, 5, 10, 20), chunk: int = 1024) -> dict[str, float]:
    """{'R@k': share of test clips with a same-class clip among their k nearest train clips}."""
    _check(train_x, train_y, test_x, test_y)
    ks = sorted({int(k) for k in ks})
    if ks[0] < 1:
        raise ValueError(f"recall needs k >= 1; got {ks}")
    _, idx = _neighbours(train_x, test_x, min(ks[-1], len(train_x)), chunk)
    hits = np.asarray(train_y)[idx] == np.asarray(test_y)[:, None]
    return {f"R@{k}": float(np.mean(np.any(hits[:, :k], axis=1))) for k in ks}


# the protocols' reported test metrics, kept here under the name they had (tests, older callers)
accuracy_metrics = metrics.reported_metrics
