"""Model room: Conv3D lowerings, ResNet3D presets, heads, registry."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from stjax.models import (BACKBONES, MLP, Conv3D, Linear, ResNet3D, conv3d, create_backbone,
                          resolve_input_channel_padding, resolve_lowering)


def _param_count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------- Conv3D

CONV_CASES = [  # (input shape [B,T,H,W,C], kernel (kt,kh,kw), strides, padding, cout)
    ((2, 4, 9, 9, 3), (1, 1, 1), (1, 2, 2), None, 5),       # strided projection shortcut
    ((2, 4, 9, 11, 3), (1, 3, 3), (1, 2, 2), None, 4),      # conv b with spatial stride, odd sizes
    ((2, 5, 7, 7, 3), (3, 1, 1), (1, 1, 1), None, 6),       # Slow conv a
    ((2, 7, 3, 5, 3), (3, 1, 1), (2, 1, 1), (0, 0, 0), 4),  # temporal-only kernel, temporal stride, no padding
    ((2, 8, 10, 10, 4), (3, 3, 3), (2, 2, 2), None, 4),     # R3D temporal stride 2
    ((1, 7, 9, 8, 2), (3, 3, 3), (2, 1, 2), (0, 1, 0), 3),  # odd sizes, explicit padding
    ((2, 4, 13, 13, 3), (3, 5, 5), (1, 4, 4), None, 4),     # tiny stem
    ((1, 4, 6, 6, 2), (2, 2, 2), (1, 1, 1), (1, 1, 1), 3),  # even kernel
]


@pytest.mark.parametrize("shape,ks,strides,padding,cout", CONV_CASES)
def test_conv3d_lowerings_match_native(shape, ks, strides, padding, cout):
    kx, kp, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, shape)
    lowerings = ("native", "conv2d_sum", "conv2d_concat", "conv2d_time")
    mods = {low: Conv3D(cout, ks, strides, padding, use_bias=True, lowering=low) for low in lowerings}
    params = jax.jit(mods["native"].init)(kp, x)
    assert params["params"]["kernel"].shape == ks + (shape[-1], cout)
    # every lowering has the same parameter tree
    for low in lowerings[1:]:
        assert jax.tree.map(jnp.shape, jax.eval_shape(mods[low].init, kp, x)) == jax.tree.map(jnp.shape, params)

    def out_and_grads(p, x, g, low):
        y, vjp = jax.vjp(lambda p, x: mods[low].apply(p, x), p, x)
        return y, vjp(g)

    fn = jax.jit(out_and_grads, static_argnums=3)
    g = jax.random.normal(kg, jax.eval_shape(mods["native"].apply, params, x).shape)
    y_ref, (gp_ref, gx_ref) = fn(params, x, g, "native")
    for low in lowerings[1:]:
        y, (gp, gx) = fn(params, x, g, low)
        assert_close(y, y_ref)
        assert_close(gx, gx_ref)
        assert_close(gp["params"]["kernel"], gp_ref["params"]["kernel"])
        assert_close(gp["params"]["bias"], gp_ref["params"]["bias"])


def test_conv3d_auto_picks_conv2d_sum_on_cpu():
    assert jax.default_backend() == "cpu"
    assert resolve_lowering("auto") == "conv2d_sum"
    assert resolve_lowering("auto", backend="gpu") == "conv2d_time"
    assert resolve_lowering("auto", backend="tpu") == "native"
    x = jnp.ones((1, 4, 8, 8, 2))
    m = Conv3D(3, (3, 3, 3), (1, 2, 2))
    params = m.init(jax.random.PRNGKey(0), x)
    jaxpr = jax.make_jaxpr(lambda p: m.apply(p, x))(params)
    convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert convs and all(e.invars[0].aval.ndim == 4 for e in convs)  # only 2D convs: the conv2d_sum lowering
    assert_close(m.apply(params, x), Conv3D(3, (3, 3, 3), (1, 2, 2), lowering="native").apply(params, x))


@pytest.mark.parametrize("lowering", ["native", "conv2d_sum", "conv2d_time"])
def test_conv3d_input_channel_padding_is_the_same_function(lowering):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 11, 11, 3))
    plain = Conv3D(5, (3, 5, 5), (1, 2, 2), lowering=lowering)
    padded = Conv3D(5, (3, 5, 5), (1, 2, 2), lowering=lowering, pad_input_channels=8)
    params = plain.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, padded.init(jax.random.PRNGKey(0), x)) == jax.tree.map(jnp.shape, params)
    conv_inputs = [e.invars[0].aval.shape[-1] for e in jax.make_jaxpr(lambda p: padded.apply(p, x))(params).eqns
                   if e.primitive.name == "conv_general_dilated"]
    assert conv_inputs and all(c % 8 == 0 for c in conv_inputs)  # 8 channels (per tap in the temporal im2col)
    assert_close(padded.apply(params, x), plain.apply(params, x))
    grads = [jax.grad(lambda p, m=m: jnp.sum(m.apply(p, x) ** 2))(params) for m in (plain, padded)]
    assert_close(grads[1]["params"]["kernel"], grads[0]["params"]["kernel"])


def test_input_channel_padding_auto_and_invalid():
    assert resolve_input_channel_padding(None) == 0  # the CPU: padding would only add FLOPs
    assert resolve_input_channel_padding(None, backend="gpu") == 8
    assert resolve_input_channel_padding(None, backend="tpu") == 0
    assert resolve_input_channel_padding(4, backend="gpu") == 4
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="pad_input_channels"):
            resolve_input_channel_padding(bad)
    x = jnp.ones((1, 2, 4, 4, 3))
    with pytest.raises(ValueError, match="pad_input_channels"):
        Conv3D(4, (1, 3, 3), pad_input_channels=-8).init(jax.random.PRNGKey(0), x)
    stem = ResNet3D(stage_depths=(1,), widths=(4,), temporal_kernels=(1,), spatial_strides=(1,),
                    temporal_strides=(1,), stem_features=4, stem_pad_channels=8)
    variables = stem.init(jax.random.PRNGKey(0), x, train=False)
    assert variables["params"]["stem_conv"]["kernel"].shape[3] == 3  # checkpoints do not see the padding
    assert_close(stem.apply(variables, x, train=False),
                 stem.clone(stem_pad_channels=0).apply(variables, x, train=False))


def test_conv3d_invalid_lowering():
    with pytest.raises(ValueError, match="conv2d_sum"):
        Conv3D(3, (1, 1, 1), lowering="cudnn").init(jax.random.PRNGKey(0), jnp.ones((1, 2, 4, 4, 2)))
    with pytest.raises(ValueError, match="native"):
        conv3d(jnp.ones((1, 2, 4, 4, 2)), jnp.ones((1, 1, 1, 2, 3)), lowering="bogus")


def test_conv3d_defaults_and_dtype():
    x = jnp.ones((2, 4, 8, 8, 3))
    m = Conv3D(6, (3, 3, 3), (1, 2, 2))
    params = m.init(jax.random.PRNGKey(0), x)
    assert set(params["params"]) == {"kernel"}  # no bias by default
    assert m.apply(params, x).shape == (2, 4, 4, 4, 6)  # padding k//2
    # kaiming normal, fan_out: std = sqrt(2 / (kt*kh*kw*cout))
    big = jax.jit(Conv3D(64, (3, 3, 3)).init)(jax.random.PRNGKey(1), jnp.ones((1, 3, 3, 3, 64)))["params"]["kernel"]
    np.testing.assert_allclose(float(jnp.std(big)), np.sqrt(2.0 / (27 * 64)), rtol=0.05)
    mb = Conv3D(6, (3, 3, 3), dtype=jnp.bfloat16)
    pb = mb.init(jax.random.PRNGKey(0), x)
    assert pb["params"]["kernel"].dtype == jnp.float32
    assert mb.apply(pb, x).dtype == jnp.bfloat16


# ----------------------------------------------------------------------------- ResNet3D

def expected_slow_r50_params(depths=(3, 4, 6, 3)) -> int:
    """Slow R-50 8×8 (R-101 with depths (3, 4, 23, 3)) param count from the layout (REFERENCE.md),
    BN = scale + bias."""
    bn = lambda c: 2 * c  # noqa: E731
    n = 1 * 7 * 7 * 3 * 64 + bn(64)  # stem
    cin = 64
    for depth, inner, kt in zip(depths, (64, 128, 256, 512), (1, 1, 3, 3)):
        out = 4 * inner
        for b in range(depth):
            n += kt * cin * inner + bn(inner)       # a: kt×1×1
            n += 3 * 3 * inner * inner + bn(inner)  # b: 1×3×3
            n += inner * out + bn(out)              # c: 1×1×1
            if b == 0:
                n += cin * out + bn(out)            # projection shortcut
            cin = out
    return n


def test_slow_r50_param_count():
    model = create_backbone("slow_r50")
    assert model.features_dim == 2048
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 224, 224, 3)), train=False))
    n = _param_count(shapes["params"])
    assert n == expected_slow_r50_params()
    assert round(n / 1e6, 1) == 31.6
    assert round((n + 2048 * 400 + 400) / 1e6, 2) == 32.45  # PySlowFast's count with a 400-way classifier
    assert _param_count(shapes["batch_stats"]) > 0
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 8, 224, 224, 3)), train=False), shapes)
    assert out.shape == (2, 2048)


def test_r3d_18_layout():
    model = create_backbone("r3d_18")
    assert model.features_dim == 512
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 112, 112, 3)), train=False))
    # torchvision r3d_18 has 33,371,472 params including its 400-way fc
    assert _param_count(shapes["params"]) + 512 * 400 + 400 == 33_371_472


def test_slow_r101_layout():
    model = create_backbone("slow_r101")
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 64, 64, 3)), train=False))
    assert sorted(k for k in shapes["params"] if k.startswith("res4_")) == sorted(f"res4_{i}" for i in range(23))
    assert _param_count(shapes["params"]) == expected_slow_r50_params((3, 4, 23, 3))


def test_r2plus1d_18_layout():
    model = create_backbone("r2plus1d_18")
    assert model.features_dim == 512
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 112, 112, 3)), train=False))
    params = shapes["params"]
    # torchvision r2plus1d_18 has 31,505,325 params including its 400-way fc
    assert _param_count(params) + 512 * 400 + 400 == 31_505_325
    assert params["stem_conv_spatial"]["kernel"].shape == (1, 7, 7, 3, 45)
    assert params["stem_conv_temporal"]["kernel"].shape == (3, 1, 1, 45, 64)
    # torchvision: midplanes from the block's input channels, for both convs of the block
    mid = (64 * 128 * 27) // (64 * 9 + 3 * 128)
    assert params["res3_0"]["conv_a_spatial"]["kernel"].shape == (1, 3, 3, 64, mid)
    assert params["res3_0"]["conv_b_spatial"]["kernel"].shape == (1, 3, 3, 128, mid)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 16, 112, 112, 3)), train=False), shapes)
    assert out.shape == (2, 512)


def _training_loss(model, batch_stats, x):
    """params → Σ features² of `model` in training mode (batch statistics)."""
    def loss(params):
        out, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(out ** 2)
    return loss


@pytest.mark.parametrize("policy", ["blocks", "conv_outputs"])
def test_remat_gives_the_same_outputs_and_gradients(policy):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16, 16, 3))
    plain, remat = create_backbone("r3d_micro"), create_backbone("r3d_micro", remat=True, remat_policy=policy)
    variables = plain.init(jax.random.PRNGKey(0), x, train=False)
    lowered = {m: jax.jit(jax.grad(_training_loss(m, variables["batch_stats"], x))).lower(variables["params"])
               for m in (plain, remat)}
    g_plain, g_remat = (lowered[m].compile()(variables["params"]) for m in (plain, remat))
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
        assert_close(a, b, rel=1e-5)
    # the rematerialised blocks are recomputed in the backward pass
    barrier = "optimization_barrier"  # how jax.checkpoint keeps XLA from merging the recomputation away
    assert barrier in lowered[remat].as_text() and barrier not in lowered[plain].as_text()


def test_remat_policy_conv_outputs_recomputes_no_convolution():
    """XLA's FLOP count of the gradient: recomputing whole blocks adds the convolutions' FLOPs again, keeping
    their outputs adds only the normalisation's elementwise work."""
    x = jnp.zeros((2, 4, 32, 32, 3))
    models = {name: create_backbone("r3d_micro", **options) for name, options in
              [("plain", {}), ("blocks", dict(remat=True)), ("conv_outputs", dict(remat=True, remat_policy="conv_outputs"))]}
    variables = models["plain"].init(jax.random.PRNGKey(0), x, train=False)

    def flops(model):
        loss = _training_loss(model, variables["batch_stats"], x)
        analysis = jax.jit(jax.grad(loss)).lower(variables["params"]).cost_analysis()
        return (analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"]

    counted = {name: flops(model) for name, model in models.items()}
    extra_blocks, extra_conv_outputs = counted["blocks"] - counted["plain"], counted["conv_outputs"] - counted["plain"]
    assert extra_blocks > 0.1 * counted["plain"]
    assert 0 <= extra_conv_outputs < 0.1 * extra_blocks, counted
    with pytest.raises(ValueError, match="unknown remat_policy 'some'; valid: blocks, conv_outputs"):
        create_backbone("r3d_micro", remat=True, remat_policy="some").init(jax.random.PRNGKey(0), x, train=False)


def test_bf16_compute_keeps_float32_params():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16, 16, 3))
    f32, bf16 = create_backbone("r3d_micro"), create_backbone("r3d_micro", dtype=jnp.bfloat16)
    variables = bf16.init(jax.random.PRNGKey(0), x, train=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    out_bf16 = bf16.apply(variables, x, train=False)
    out_f32 = f32.apply(variables, x, train=False)
    assert out_bf16.dtype == jnp.float32  # pooled features are returned in float32
    assert_close(out_bf16, out_f32, rel=5e-2)
    assert not np.array_equal(np.asarray(out_bf16), np.asarray(out_f32))


def test_backbone_options_from_config():
    from stjax.models import backbone_options

    opts = backbone_options({"dtype": "bfloat16", "remat": True})
    assert opts["dtype"] == jnp.bfloat16 and opts["remat"] is True and opts["remat_policy"] == "blocks"
    assert backbone_options({"remat": True, "remat_policy": "conv_outputs"})["remat_policy"] == "conv_outputs"
    with pytest.raises(ValueError, match="model.remat_policy='all' is not supported; valid choices: blocks, conv_outputs"):
        backbone_options({"remat_policy": "all"})
    with pytest.raises(ValueError, match="model.dtype='float16'.*float32, bfloat16"):
        backbone_options({"dtype": "float16"})
    assert opts["lowering"] == "auto" and backbone_options({"lowering": "native"})["lowering"] == "native"
    with pytest.raises(ValueError, match="model.lowering='conv'.*auto, native, conv2d_sum, conv2d_concat, conv2d_time"):
        backbone_options({"lowering": "conv"})
    backbone = create_backbone("r3d_micro", **backbone_options({"lowering": "conv2d_concat"}))
    assert backbone.lowering == "conv2d_concat"
    assert opts["batch_norm"] == "fused" and backbone_options({"batch_norm": "flax"})["batch_norm"] == "flax"
    with pytest.raises(ValueError, match="model.batch_norm='sync'.*fused, flax"):
        backbone_options({"batch_norm": "sync"})
    assert opts["stem_pad_channels"] is None and backbone_options({"stem_pad_channels": 0})["stem_pad_channels"] == 0
    with pytest.raises(ValueError, match=r"model.stem_pad_channels=-3 is not supported; valid choices: None \(auto"):
        backbone_options({"stem_pad_channels": -3})


@pytest.mark.parametrize("name,dim,n_params", [("r3d_micro", 64, 226_472), ("r3d_tiny", 128, 900_816)])
def test_tiny_variant_shapes(name, dim, n_params):
    model = create_backbone(name)
    x = jax.ShapeDtypeStruct((64, 8, 56, 56, 3), jnp.float32)
    v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    assert model.features_dim == dim and _param_count(v["params"]) == n_params
    y, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), v, x)
    assert y.shape == (64, dim) and y.dtype == jnp.float32


def test_tiny_variant_numerics(name="r3d_micro"):
    """Real compute on the micro net only (XLA:CPU compiles of whole-net init are slow on 2 cores)."""
    model = create_backbone(name)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 16, 16, 3))
    init = jax.jit(lambda k, x: model.init(k, x, train=False))
    v = init(jax.random.PRNGKey(0), x)
    v2 = init(jax.random.PRNGKey(0), x)
    chex_equal = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), v, v2)
    assert all(jax.tree.leaves(chex_equal))  # deterministic given the rng
    # zero-initialised last BN of each residual branch
    for blk in [k for k in v["params"] if k.startswith("res")]:
        assert not np.any(np.asarray(v["params"][blk]["bn_b"]["scale"]))

    apply_train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    y, upd = apply_train(v, x)
    y2, upd2 = apply_train(v, x)
    assert y.shape == (4, model.features_dim)
    assert np.all(np.isfinite(np.asarray(y)))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y2))
    changed = jax.tree.map(lambda a, b: not bool(jnp.array_equal(a, b)), v["batch_stats"], upd["batch_stats"])
    assert all(jax.tree.leaves(changed))  # every running mean/var moved

    # eval mode: runs without a mutable collection, i.e. leaves batch_stats untouched
    y_eval, upd_eval = jax.jit(lambda v, x: (model.apply(v, x, train=False),
                                             model.apply(v, x, train=False, mutable=["batch_stats"])[1]))(v, x)
    assert y_eval.shape == (4, model.features_dim) and np.all(np.isfinite(np.asarray(y_eval)))
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), v["batch_stats"], upd_eval["batch_stats"])
    assert all(jax.tree.leaves(same))


def test_bottleneck_small_forward_and_grad():
    """A small bottleneck net with the max-pool stem, through both lowerings."""
    kw = dict(stage_depths=(1, 1), widths=(4, 8), temporal_kernels=(1, 3), spatial_strides=(1, 2),
              temporal_strides=(1, 1), stem_features=8, zero_init_residual=False)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16, 16, 3))
    nets = {low: ResNet3D(lowering=low, **kw) for low in ("native", "conv2d_sum")}
    v = jax.jit(lambda k, x: nets["native"].init(k, x, train=False))(jax.random.PRNGKey(0), x)
    assert nets["native"].features_dim == 32

    def loss(p, low):
        y, _ = nets[low].apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(y ** 2), y

    vg = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (l_n, y_n), g_n = vg(v["params"], "native")
    (l_s, y_s), g_s = vg(v["params"], "conv2d_sum")
    assert y_n.shape == (2, 32)
    assert_close(y_s, y_n, 1e-4)
    jax.tree.map(lambda a, b: assert_close(a, b, 1e-3), g_s, g_n)


# ----------------------------------------------------------------------------- heads and registry

def test_mlp():
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 32))
    proj = MLP((64,), 16)
    v = proj.init(jax.random.PRNGKey(1), x, train=False)
    assert set(v["params"]["hidden_0"]) == {"kernel"}  # no bias before BN
    assert set(v["params"]["out"]) == {"kernel", "bias"}
    assert "hidden_bn_0" in v["params"] and "hidden_bn_0" in v["batch_stats"]
    y, upd = proj.apply(v, x, train=True, mutable=["batch_stats"])
    assert y.shape == (6, 16) and y.dtype == jnp.float32
    assert proj.apply(v, x, train=False).shape == (6, 16)

    moco = MLP((48, 48), 8, use_bn=False, hidden_bias=True)
    vm = moco.init(jax.random.PRNGKey(1), x, train=False)
    assert "batch_stats" not in vm
    assert set(vm["params"]) == {"hidden_0", "hidden_1", "out"}
    assert set(vm["params"]["hidden_1"]) == {"kernel", "bias"}
    assert moco.apply(vm, x, train=True).shape == (6, 8)

    fb = MLP((16,), 8, final_bn=True, out_bias=False)
    vf = fb.init(jax.random.PRNGKey(1), x, train=False)
    assert set(vf["params"]["out"]) == {"kernel"}
    assert set(vf["params"]["out_bn"]) == {"bias"}  # BN without scale
    assert fb.apply(vf, x, train=True, mutable=["batch_stats"])[0].shape == (6, 8)


def test_linear():
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 32))
    head = Linear(10, dropout_rate=0.5)
    v = head.init(jax.random.PRNGKey(1), x, train=False)
    assert v["params"]["fc"]["kernel"].shape == (32, 10)
    y_eval = head.apply(v, x, train=False)
    assert y_eval.shape == (5, 10)
    y_train = head.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert y_train.shape == (5, 10) and not np.allclose(np.asarray(y_train), np.asarray(y_eval))


def test_registry():
    assert {"slow_r50", "r3d_tiny", "r3d_micro", "r3d_18"} <= set(BACKBONES)
    with pytest.raises(ValueError) as err:
        create_backbone("nope")
    for name in BACKBONES:
        assert name in str(err.value)
    m = create_backbone("r3d_micro", dtype=jnp.bfloat16, lowering="native")
    assert isinstance(m, nn.Module) and m.dtype == jnp.bfloat16 and m.lowering == "native"


def test_models_package_is_framework_free():
    import subprocess
    import sys

    code = ("import sys, stjax.models; bad = [m for m in sys.modules if m.split('.')[0] == 'tensorflow' "
            "or m.startswith(('stjax.data', 'stjax.train'))]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
