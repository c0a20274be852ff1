"""The detection model (AVA): dilated Conv3D lowerings, the dilated-res5 backbone and its feature map, RoIHead."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import assert_close

from stjax.models import Conv3D, conv3d, create_backbone
from stjax.models.heads import RoIHead
from stjax.models.roi_align import roi_align

LOWERINGS = ("native", "conv2d_sum", "conv2d_concat", "conv2d_time")

DILATED_CASES = [  # (input [B,T,H,W,C], kernel (kt,kh,kw), strides, dilation (dh,dw))
    ((2, 3, 9, 9, 3), (1, 3, 3), (1, 1, 1), (2, 2)),   # bottleneck conv b of a dilated res5
    ((1, 5, 10, 11, 2), (3, 3, 3), (1, 1, 1), (2, 3)),  # basic block, unequal dilations
    ((2, 4, 12, 12, 3), (3, 3, 3), (2, 2, 2), (2, 2)),  # with temporal and spatial strides
]


@pytest.mark.parametrize("shape,ks,strides,dilation", DILATED_CASES)
def test_dilated_conv3d_matches_torch_in_every_lowering(shape, ks, strides, dilation):
    kx, kp, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, shape)
    mods = {low: Conv3D(4, ks, strides, lowering=low, dilation=dilation) for low in LOWERINGS}
    params = mods["native"].init(kp, x)
    kernel = np.asarray(params["params"]["kernel"])  # (kt, kh, kw, cin, cout)
    padding = (ks[0] // 2, dilation[0], dilation[1])
    expected = torch.nn.functional.conv3d(
        torch.tensor(np.asarray(x)).permute(0, 4, 1, 2, 3), torch.tensor(kernel).permute(4, 3, 0, 1, 2),
        stride=strides, padding=padding, dilation=(1,) + dilation).permute(0, 2, 3, 4, 1).numpy()
    g = jax.random.normal(kg, expected.shape)

    def out_and_grads(p, x, low):
        y, vjp = jax.vjp(lambda p, x: mods[low].apply(p, x), p, x)
        return y, vjp(g)

    fn = jax.jit(out_and_grads, static_argnums=2)
    _, (gp_ref, gx_ref) = fn(params, x, "native")
    for low in LOWERINGS:
        y, (gp, gx) = fn(params, x, low)
        assert_close(y, expected)
        assert_close(gx, gx_ref)
        assert_close(gp["params"]["kernel"], gp_ref["params"]["kernel"])
    functional = conv3d(x, params["params"]["kernel"], strides, padding, "native", dilation)
    reference = jax.lax.conv_general_dilated(x, params["params"]["kernel"], strides, [(p, p) for p in padding],
                                             rhs_dilation=(1,) + dilation,
                                             dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    assert_close(functional, reference)


def test_conv3d_invalid_dilation():
    with pytest.raises(ValueError, match="dilation"):
        conv3d(jnp.ones((1, 2, 4, 4, 2)), jnp.ones((1, 3, 3, 2, 3)), dilation=(0, 1))


# ----------------------------------------------------------------------------- the detection backbone

# a Slow R-50-shaped bottleneck net at tiny widths: stem stride 2 + max-pool 2, res3/res4 stride 2: 1/32 with
# a strided res5, 1/16 with the detection res5 (stride 1, dilation 2). res5 widens (32 → 64 channels), as in
# every preset: an unstrided res5 of res4's width would have an identity shortcut instead of a projection.
TINY_SLOW = dict(stage_depths=(1, 1, 2, 1), widths=(4, 4, 8, 16), stem_features=4)
DETECTION = dict(spatial_strides=(1, 2, 2, 1), spatial_dilations=(1, 1, 1, 2))


def _init(model, x):
    return jax.jit(lambda k: model.init(k, x, train=False))(jax.random.PRNGKey(0))


@pytest.mark.parametrize("name,options,dilated_size", [
    ("slow_r50", TINY_SLOW, 4),                       # bottleneck: 64² → 4²
    ("r3d_micro", {}, 2),                             # basic: stem 4, res2..res4 2 → 64² → 2²
    ("r2plus1d_18", dict(widths=(4, 4, 8, 8), stem_features=4, stem_mid_features=3), 8),  # (2+1)D, no pool
])
def test_dilated_res5_keeps_the_parameters_and_halves_the_stride(name, options, dilated_size):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 64, 64, 3))
    plain = create_backbone(name, **options)
    strides = tuple(plain.spatial_strides[:3]) + (1,)
    dilated = create_backbone(name, **options, spatial_strides=strides, spatial_dilations=(1, 1, 1, 2))
    variables = _init(plain, x)
    assert jax.tree.map(jnp.shape, _init(dilated, x)) == jax.tree.map(jnp.shape, variables)
    fmap = jax.jit(lambda v: dilated.apply(v, x, False, pooled=False))(variables)
    t = 1 if name == "r2plus1d_18" else 4  # R(2+1)D strides time in res3..res5
    assert fmap.shape == (2, t, dilated_size, dilated_size, dilated.features_dim) and fmap.dtype == jnp.float32
    assert jax.eval_shape(lambda v: plain.apply(v, x, False, pooled=False), variables).shape[2] == dilated_size // 2
    pooled = jax.jit(lambda v: dilated.apply(v, x, False))(variables)
    assert_close(pooled, jnp.mean(fmap, axis=(1, 2, 3)))


@pytest.mark.parametrize("name,options,conv_name", [
    ("slow_r50", dict(TINY_SLOW, spatial_strides=(1, 2, 2, 1)), "conv_b"),
    ("r3d_micro", dict(spatial_strides=(2, 2, 2, 1)), "conv_b"),
    ("r2plus1d_18", dict(widths=(4, 4, 8, 8), stem_features=4, stem_mid_features=3, spatial_strides=(1, 2, 2, 1),
                         temporal_strides=(1, 1, 1, 1)), "conv_b_spatial"),
])
def test_dilated_res5_convolves_with_dilated_kernels(name, options, conv_name):
    """res5's second 3×3 conv, on its captured input (ReLU of bn_a), equals torch's conv3d with dilation 2."""
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 2, 64, 64, 3))
    model = create_backbone(name, **{**options, "spatial_dilations": (1, 1, 1, 2)}, lowering="conv2d_sum")
    variables = _init(model, x)
    _, state = model.apply(variables, x, False, capture_intermediates=lambda m, _: m.name in ("bn_a", conv_name),
                           mutable=["intermediates"])
    captured = state["intermediates"]["res5_0"]
    y, out = np.asarray(nn.relu(captured["bn_a"]["__call__"][0])), captured[conv_name]["__call__"][0]
    kernel = np.asarray(variables["params"]["res5_0"][conv_name]["kernel"])
    expected = torch.nn.functional.conv3d(torch.tensor(y).permute(0, 4, 1, 2, 3),
                                          torch.tensor(kernel).permute(4, 3, 0, 1, 2),
                                          padding=(kernel.shape[0] // 2, 2, 2),
                                          dilation=(1, 2, 2)).permute(0, 2, 3, 4, 1).numpy()
    assert out.shape == expected.shape
    assert_close(out, expected)


def test_invalid_spatial_dilations():
    x = jnp.ones((1, 2, 32, 32, 3))
    with pytest.raises(ValueError, match="spatial_dilations has 3 entries"):
        create_backbone("r3d_micro", spatial_dilations=(1, 1, 2)).init(jax.random.PRNGKey(0), x, False)
    with pytest.raises(ValueError, match="spatial_dilations=.*one int >= 1 per stage"):
        create_backbone("r3d_micro", spatial_dilations=(1, 1, 1, 0)).init(jax.random.PRNGKey(0), x, False)


# ----------------------------------------------------------------------------- RoIHead

def _head_inputs(seed=0, b=2, t=3, h=8, w=10, c=6, m=4):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(b, t, h, w, c)).astype(np.float32)
    corners = rng.uniform(0.0, 1.0, size=(b, m, 2, 2))
    boxes = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1).astype(np.float32)
    return jnp.asarray(features), jnp.asarray(boxes)


def test_roi_head_shapes_and_reference():
    features, boxes = _head_inputs()
    head = RoIHead(num_classes=5)
    variables = head.init(jax.random.PRNGKey(0), features, boxes, train=False)
    kernel, bias = variables["params"]["fc"]["kernel"], variables["params"]["fc"]["bias"]
    assert kernel.shape == (6, 5) and float(jnp.std(kernel)) < 0.05 and not np.any(np.asarray(bias))
    logits = jax.jit(lambda v, f, b: head.apply(v, f, b, train=False))(variables, features, boxes)
    assert logits.shape == (2, 4, 5) and logits.dtype == jnp.float32
    # reference: mean over T, torchvision-semantics RoIAlign at the map's scale, max over bins, the Dense layer
    pooled = roi_align(jnp.mean(features, axis=1), boxes * jnp.array([10.0, 8.0, 10.0, 8.0]), 7, max_sampling=8)
    assert_close(logits, jnp.max(pooled, axis=(2, 3)) @ kernel + bias)
    matmul = RoIHead(num_classes=5, roi_method="matmul")
    assert_close(matmul.apply(variables, features, boxes, train=False), logits)


def test_roi_head_padded_boxes_are_finite_and_dropout_needs_train():
    features, boxes = _head_inputs(seed=1)
    boxes = boxes.at[:, 2:].set(0.0)
    head = RoIHead(num_classes=3)
    variables = head.init(jax.random.PRNGKey(0), features, boxes, train=False)
    logits = head.apply(variables, features, boxes, train=False)
    assert np.all(np.isfinite(np.asarray(logits)))
    assert_close(logits[:, 2:], jnp.broadcast_to(variables["params"]["fc"]["bias"], (2, 2, 3)))  # empty box: bias
    train_logits = head.apply(variables, features, boxes, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    assert not np.allclose(np.asarray(train_logits), np.asarray(logits))


def test_roi_head_output_depends_only_on_the_box_region():
    features, _ = _head_inputs(seed=2, h=8, w=8)
    # map pixels 2..5 in x and 1..6 in y; aligned samples lie in (1.5, 4.5) × (0.5, 5.5): pixels x 1..5, y 0..6
    boxes = jnp.array([[[0.25, 0.125, 0.625, 0.75]], [[0.25, 0.125, 0.625, 0.75]]], jnp.float32)
    head = RoIHead(num_classes=4, dropout_rate=0.0)
    variables = head.init(jax.random.PRNGKey(0), features, boxes, train=False)
    fn = jax.jit(lambda f: head.apply(variables, f, boxes, train=False))
    logits = fn(features)
    noise = jax.random.normal(jax.random.PRNGKey(5), features.shape)
    outside = jnp.ones(features.shape[2:4], bool).at[0:7, 1:6].set(False)[None, None, :, :, None]
    assert_close(fn(jnp.where(outside, noise, features)), logits)
    inside = jnp.zeros(features.shape[2:4], bool).at[3, 3].set(True)[None, None, :, :, None]
    assert not np.allclose(np.asarray(fn(jnp.where(inside, noise + 3.0, features))), np.asarray(logits))
    grad = jax.grad(lambda f: jnp.sum(fn(f)))(features)
    assert np.any(np.asarray(grad) != 0) and not np.any(np.asarray(jnp.where(outside, grad, 0.0)))


def test_roi_head_gradient_reaches_the_backbone():
    x = jax.random.normal(jax.random.PRNGKey(6), (2, 2, 64, 64, 3))
    backbone = create_backbone("slow_r50", **TINY_SLOW, **DETECTION, zero_init_residual=False)
    head = RoIHead(num_classes=3)
    bb_vars = _init(backbone, x)
    boxes = jnp.array([[[0.1, 0.2, 0.6, 0.9], [0.0, 0.0, 0.0, 0.0]], [[0.5, 0.5, 1.0, 1.0], [0.2, 0.1, 0.4, 0.3]]])
    head_vars = head.init(jax.random.PRNGKey(1), jnp.zeros((2, 2, 4, 4, 64)), boxes, train=False)

    @jax.jit
    def grads(params):
        def loss(p):
            fmap = backbone.apply({"params": p, "batch_stats": bb_vars["batch_stats"]}, x, False, pooled=False)
            return jnp.sum(head.apply(head_vars, fmap, boxes, train=True, rngs={"dropout": jax.random.PRNGKey(2)}))
        return jax.grad(loss)(params)

    g = grads(bb_vars["params"])
    for path in (("stem_conv", "kernel"), ("res5_0", "conv_b", "kernel")):
        leaf = g
        for key in path:
            leaf = leaf[key]
        leaf = np.asarray(leaf)
        assert np.all(np.isfinite(leaf)) and np.any(leaf != 0), path


def test_roi_head_invalid_inputs():
    features, boxes = _head_inputs()
    with pytest.raises(ValueError, match=r"features must be \[B, T, H, W, C\]"):
        RoIHead(3).init(jax.random.PRNGKey(0), features[:, 0], boxes, train=False)
    with pytest.raises(ValueError, match=r"boxes must be \[B=2, M, 4\]"):
        RoIHead(3).init(jax.random.PRNGKey(0), features, boxes[..., :2], train=False)
    with pytest.raises(ValueError, match="roi_method='x'.*gather, matmul"):
        RoIHead(3, roi_method="x").init(jax.random.PRNGKey(0), features, boxes, train=False)
