"""RoIAlign in pure JAX, with the semantics of ``torchvision.ops.roi_align`` (channels-last).

Each output bin averages ``gh × gw`` bilinear samples spread evenly over the bin; a sample beyond
``[-1, H]`` (or ``[-1, W]``) is zero, one in ``[-1, 0]`` reads the border, as torchvision. Since the
samples of a box form a grid, the bilinear weights factor into a y part and an x part; both
implementations use that and give the same values:

* ``"gather"`` – reads the 4 corner pixels of every sample (``[N, M, oh, ow, 4·gh·gw, C]`` gathered values);
* ``"matmul"`` – builds the per-box interpolation matrices ``[oh, H]`` and ``[ow, W]`` and contracts the map
  with them (two einsums, no gather or scatter in the gradient).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

METHODS = ("gather", "matmul")


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name}={value!r} is not supported; valid choices: an int >= 1 or a pair of them")
    return pair


def _axis_taps(start, size, bins: int, grid, max_grid: int, extent: int):
    """Bilinear taps along one axis. start, size, grid: [N, M] (box start and size in map pixels, samples per
    bin). Returns indices int32 and weights float32, each [N, M, bins, 2·max_grid]: the low and high pixel of
    every sample, weighted by its interpolation weight, its validity and 1/grid (unused samples weigh 0)."""
    grid = grid[..., None, None]
    step = (size / bins)[..., None, None]
    sample = jnp.arange(max_grid, dtype=jnp.float32)
    pos = (start[..., None, None] + jnp.arange(bins, dtype=jnp.float32)[:, None] * step
           + (sample + 0.5) * step / jnp.maximum(grid, 1).astype(jnp.float32))  # [N, M, bins, max_grid]
    used = (sample < grid) & (pos >= -1.0) & (pos <= extent)
    pos = jnp.maximum(pos, 0.0)
    low = jnp.floor(pos)
    at_end = low >= extent - 1
    low = jnp.where(at_end, extent - 1, low)
    frac = jnp.where(at_end, 0.0, pos - low)
    high = jnp.where(at_end, low, low + 1)
    scale = jnp.where(used, 1.0 / jnp.maximum(grid, 1).astype(jnp.float32), 0.0)
    index = jnp.concatenate([low, high], axis=-1).astype(jnp.int32)
    weight = jnp.concatenate([(1.0 - frac) * scale, frac * scale], axis=-1)
    return index, weight


def roi_align(features: jnp.ndarray, boxes: jnp.ndarray, output_size=(7, 7), spatial_scale: float = 1.0,
              sampling_ratio: int = 0, aligned: bool = True, max_sampling=None,
              method: str = "gather") -> jnp.ndarray:
    """RoIAlign of ``boxes`` on ``features``, as ``torchvision.ops.roi_align`` (channels-last).

    features: [N, H, W, C] float; boxes: [N, M, 4] float (x1, y1, x2, y2) in input pixels, mapped onto the
    map by ``spatial_scale``; M boxes per image (padding boxes of any size, zero included, give finite values).
    Returns [N, M, oh, ow, C] in ``features``' dtype (sums in float32). ``output_size``: (oh, ow) or an int.
    ``sampling_ratio`` > 0: that many samples per bin along each axis; 0: ``ceil(roi size / bins)`` per box,
    at most ``max_sampling`` (an int or (gh, gw); None: ``ceil(H / oh), ceil(W / ow)``, exact for every box
    inside the map): a bigger box is sampled ``max_sampling`` times per bin, evenly, which approximates
    torchvision's finer average. ``aligned``: the half-pixel shift; False: the legacy rule (roi sizes at least
    1). Differentiable w.r.t. ``features`` (not boxes, as torchvision); jittable. ``method``: one of METHODS.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be [N, H, W, C], got shape {features.shape}")
    n, h, w, c = features.shape
    if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N={n}, M, 4], got shape {boxes.shape}")
    oh, ow = _pair(output_size, "output_size")
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int) or sampling_ratio < 0:
        raise ValueError(f"sampling_ratio={sampling_ratio!r} is not supported; valid choices: 0 (adaptive) or "
                         "an int >= 1")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; valid choices: {', '.join(METHODS)}")
    boxes = jax.lax.stop_gradient(boxes).astype(jnp.float32) * spatial_scale - (0.5 if aligned else 0.0)
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
    if sampling_ratio > 0:
        max_gh = max_gw = sampling_ratio
        gh = gw = jnp.full(roi_h.shape, sampling_ratio, jnp.int32)
    else:
        max_gh, max_gw = (math.ceil(h / oh), math.ceil(w / ow)) if max_sampling is None else \
            _pair(max_sampling, "max_sampling")
        gh = jnp.minimum(jnp.ceil(roi_h / oh), max_gh).astype(jnp.int32)
        gw = jnp.minimum(jnp.ceil(roi_w / ow), max_gw).astype(jnp.int32)
    iy, wy = _axis_taps(y1, roi_h, oh, gh, max_gh, h)  # [N, M, oh, Ky]
    ix, wx = _axis_taps(x1, roi_w, ow, gw, max_gw, w)  # [N, M, ow, Kx]
    if method == "gather":
        flat = (iy[:, :, :, None, :, None] * w + ix[:, :, None, :, None, :]).reshape(n, -1)  # [N, M·oh·ow·Ky·Kx]
        values = jax.vmap(lambda f, i: f[i])(features.reshape(n, h * w, c), flat)
        values = values.reshape(iy.shape[:3] + (ow, iy.shape[-1], ix.shape[-1], c))
        weights = wy[:, :, :, None, :, None] * wx[:, :, None, :, None, :]  # [N, M, oh, ow, Ky, Kx]
        out = jnp.einsum("nmabkl,nmabklc->nmabc", weights, values.astype(jnp.float32),
                         precision=jax.lax.Precision.HIGHEST)
    else:
        rows = jnp.einsum("nmak,nmakh->nmah", wy, jax.nn.one_hot(iy, h, dtype=jnp.float32))  # [N, M, oh, H]
        cols = jnp.einsum("nmbk,nmbkw->nmbw", wx, jax.nn.one_hot(ix, w, dtype=jnp.float32))  # [N, M, ow, W]
        out = jnp.einsum("nmah,nhwc->nmawc", rows, features.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
        out = jnp.einsum("nmbw,nmawc->nmabc", cols, out, precision=jax.lax.Precision.HIGHEST)
    return out.astype(features.dtype)
