"""stjax.models.roi_align against torchvision.ops.roi_align (CPU): values, gradients, jit, padded boxes."""

import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from stjax.models.roi_align import METHODS, roi_align

# torchvision's results for every (features, boxes, settings) the tests compare with, computed in one child
# process (tests/torchvision_roi_reference.py: torchvision must not be imported beside TensorFlow).
_REQUESTS: dict[str, dict] = {}
_RESULTS: dict[str, np.ndarray] = {}


def _boxes(rng, n, m, low, high):
    """[n, m, 4] (x1, y1, x2, y2) with x1 <= x2, y1 <= y2, drawn in [low, high]."""
    corners = rng.uniform(low, high, size=(n, m, 2, 2))
    return np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1).astype(np.float32)


def _request(name, features, boxes, output_size, spatial_scale, sampling_ratio, aligned, cotangent=None):
    _REQUESTS[name] = {"features": features, "boxes": boxes, "cotangent": cotangent,
                       "args": np.array([*output_size, spatial_scale, sampling_ratio, aligned], np.float64)}


def _torch(name, what="out"):
    """torchvision's `what` (out [N, M, oh, ow, C], or grad [N, H, W, C]) for request `name`, channels last."""
    pytest.importorskip("torch")
    if importlib.util.find_spec("torchvision") is None:  # looked up, not imported: that happens in a subprocess
        pytest.skip("torchvision is not installed (pip install -e '.[torch]')")
    if not _RESULTS:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            arrays = {f"{n}/{k}": v for n, r in _REQUESTS.items() for k, v in r.items() if v is not None}
            np.savez(os.path.join(tmp, "requests.npz"), **arrays)
            script = os.path.join(os.path.dirname(__file__), "torchvision_roi_reference.py")
            done = subprocess.run([sys.executable, script, os.path.join(tmp, "requests.npz"),
                                   os.path.join(tmp, "out.npz")], capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
            assert done.returncode == 0, done.stderr[-3000:]
            _RESULTS.update(np.load(os.path.join(tmp, "out.npz")))
    return _RESULTS[f"{name}/{what}"]


def _case(seed=0, n=3, h=9, w=11, c=5, m=7):  # n >= 3
    """Features and boxes: random ones (partly outside the map), a zero-size, a tiny, an inverted, an all-outside
    and a whole-map box."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, h, w, c)).astype(np.float32)
    boxes = _boxes(rng, n, m, -3.0, max(h, w) + 3.0)
    boxes[0, 0] = [3.0, 4.0, 3.0, 4.0]           # zero size
    boxes[0, 1] = [2.0, 2.0, 2.3, 2.1]           # tiny
    boxes[1, 0] = [5.0, 6.0, 4.0, 3.0]           # inverted
    boxes[1, 1] = [-30.0, -30.0, -20.0, -20.0]   # wholly outside
    boxes[2, 0] = [0.0, 0.0, w, h]               # the whole map
    boxes[2, 1] = [w - 0.7, h - 0.2, w + 0.5, h + 0.9]  # at the far border
    return features, boxes


def _scale_case():
    """Boxes in image pixels at 1/16 onto a 14×14 map, all inside the image."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 14, 14, 6)).astype(np.float32)
    boxes = _boxes(rng, 2, 5, 0.0, 224.0)
    boxes[0, 0] = [0.0, 0.0, 224.0, 224.0]
    boxes[1, 0] = [100.0, 100.0, 100.0, 100.0]
    return features, boxes


def _large_case():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(1, 12, 12, 3)).astype(np.float32)
    boxes = np.array([[[0.0, 0.0, 12.0, 12.0], [1.0, 2.0, 11.0, 9.0]]], np.float32)  # adaptive: 4 and 3-4
    return features, boxes


def _gradient_case():
    features, boxes = _case(seed=3, n=3, h=8, w=7, c=4, m=6)
    cotangent = np.random.default_rng(4).normal(size=(3, 6, 3, 3, 4)).astype(np.float32)
    return features, boxes, cotangent


def _padded_case():
    features, boxes = _case(seed=5)
    boxes[:, -2:] = 0.0  # padding: zero boxes at the origin
    return features, boxes


for _aligned in (True, False):
    for _sampling in (0, 2):
        _request(f"match_{_aligned}_{_sampling}", *_case(), (3, 4), 1.0, _sampling, _aligned)
    _f, _b, _c = _gradient_case()
    _request(f"grad_{_aligned}", _f, _b, (3, 3), 1.0, 0, _aligned, cotangent=_c)
_request("scale", *_scale_case(), (7, 7), 1 / 16, 0, True)
_request("large_2", *_large_case(), (3, 3), 1.0, 2, True)
_request("large_0", *_large_case(), (3, 3), 1.0, 0, True)
_request("padded", *_padded_case(), (2, 2), 1 / 2, 0, True)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_torchvision(method, aligned, sampling_ratio):
    features, boxes = _case()
    out = roi_align(jnp.asarray(features), jnp.asarray(boxes), (3, 4), 1.0, sampling_ratio, aligned,
                    max_sampling=8, method=method)  # 8: above every box's adaptive count
    assert out.shape == (3, 7, 3, 4, 5) and out.dtype == jnp.float32
    assert_close(out, _torch(f"match_{aligned}_{sampling_ratio}"))


@pytest.mark.parametrize("method", METHODS)
def test_spatial_scale_and_default_max_sampling(method):
    """Boxes in image pixels at 1/16 onto a 14×14 map, all inside the image: the default max_sampling is exact."""
    features, boxes = _scale_case()
    out = roi_align(jnp.asarray(features), jnp.asarray(boxes), 7, 1 / 16, method=method)
    assert out.shape == (2, 5, 7, 7, 6)
    assert_close(out, _torch("scale"))


def test_boxes_above_max_sampling_use_that_many_samples():
    """A box whose adaptive count exceeds max_sampling is sampled max_sampling times per bin and axis."""
    features, boxes = _large_case()
    out = roi_align(jnp.asarray(features), jnp.asarray(boxes), (3, 3), max_sampling=2)
    assert_close(out, _torch("large_2"))
    assert not np.allclose(np.asarray(out), _torch("large_0"), atol=1e-3)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("aligned", [True, False])
def test_gradient_matches_torch_autograd(method, aligned):
    features, boxes, cotangent = _gradient_case()

    def loss(f):
        return jnp.sum(roi_align(f, jnp.asarray(boxes), (3, 3), aligned=aligned, max_sampling=8, method=method)
                       * cotangent)

    grad = jax.jit(jax.grad(loss))(jnp.asarray(features))
    assert np.all(np.isfinite(np.asarray(grad)))
    assert_close(grad, _torch(f"grad_{aligned}", "grad"))


@pytest.mark.parametrize("method", METHODS)
def test_jit_and_padded_boxes_are_finite(method):
    features, boxes = _padded_case()
    fn = jax.jit(lambda f, b: roi_align(f, b, (2, 2), 1 / 2, method=method))
    out = fn(jnp.asarray(features), jnp.asarray(boxes))
    assert np.all(np.isfinite(np.asarray(out)))
    assert_close(out, roi_align(jnp.asarray(features), jnp.asarray(boxes), (2, 2), 1 / 2, method=method))
    assert_close(out[:, -2:], _torch("padded")[:, -2:])
    grad = jax.grad(lambda f: jnp.sum(fn(f, jnp.asarray(boxes)) ** 2))(jnp.asarray(features))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_keeps_the_feature_dtype():
    features, boxes = _case(seed=6)
    out = roi_align(jnp.asarray(features, jnp.bfloat16), jnp.asarray(boxes), (3, 3))
    assert out.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(out, np.float32)))


def test_invalid_arguments():
    f, b = jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"features must be \[N, H, W, C\]"):
        roi_align(f[0], b)
    with pytest.raises(ValueError, match=r"boxes must be \[N=2, M, 4\]"):
        roi_align(f, b[:1])
    with pytest.raises(ValueError, match="output_size"):
        roi_align(f, b, (0, 7))
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align(f, b, sampling_ratio=-1)
    with pytest.raises(ValueError, match="max_sampling"):
        roi_align(f, b, max_sampling=0)
    with pytest.raises(ValueError, match="method='loop'.*gather, matmul"):
        roi_align(f, b, method="loop")
