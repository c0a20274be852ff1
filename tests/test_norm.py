"""stjax.models.norm: the fused BatchNorm computes what flax.linen.BatchNorm (+ ReLU) computes, gradients included."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from jax.sharding import NamedSharding, PartitionSpec

from stjax.models import create_backbone
from stjax.models.norm import BatchNorm, batch_norm, batch_norm_train
from stjax.objectives import base


_close = functools.partial(assert_close, rel=2e-5)


def _reference(x, scale, bias, epsilon, relu):
    """The textbook formula, differentiated by jax."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x - mean), axes)
    y = (x - mean) / jnp.sqrt(var + epsilon) * scale + bias
    return (jnp.maximum(y, 0.0) if relu else y), mean, var


@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_train_value_and_gradients(relu):
    kx, ks, kb, kw = jax.random.split(jax.random.key(0), 4)
    x = 3.0 + 2.0 * jax.random.normal(kx, (4, 3, 5, 6))  # a mean far from 0 tests the centred reductions
    scale = 1.0 + 0.5 * jax.random.normal(ks, (6,))
    bias = 0.3 * jax.random.normal(kb, (6,))
    w_y, w_m, w_v = (jax.random.normal(k, s) for k, s in zip(jax.random.split(kw, 3), ((4, 3, 5, 6), (6,), (6,))))

    def loss(fn):  # weights every output, so the cotangents of mean and var are tested too
        def f(x, scale, bias):
            y, mean, var = fn(x, scale, bias, 1e-5, relu)
            return jnp.sum(w_y * jnp.sin(y)) + jnp.sum(w_m * mean) + jnp.sum(w_v * var)
        return f

    fused = jax.jit(jax.value_and_grad(loss(batch_norm_train), argnums=(0, 1, 2)))(x, scale, bias)
    ref = jax.jit(jax.value_and_grad(loss(_reference), argnums=(0, 1, 2)))(x, scale, bias)
    _close(fused[0], ref[0])
    for got, want in zip(fused[1], ref[1]):
        _close(got, want, rel=1e-4)
    y, mean, var = batch_norm_train(x, scale, bias, 1e-5, relu)
    assert y.dtype == x.dtype and mean.dtype == var.dtype == jnp.float32
    if relu:
        assert float(jnp.min(y)) == 0.0


def test_bfloat16_input_keeps_its_dtype_and_float32_statistics():
    x = (5.0 + jax.random.normal(jax.random.key(1), (64, 8))).astype(jnp.bfloat16)
    y, mean, var = batch_norm_train(x, jnp.ones(8), jnp.zeros(8), 1e-5, False)
    dx = jax.grad(lambda x: jnp.sum(batch_norm_train(x, jnp.ones(8), jnp.zeros(8), 1e-5, True)[0]
                                    .astype(jnp.float32) ** 2))(x)
    assert y.dtype == dx.dtype == jnp.bfloat16 and mean.dtype == jnp.float32
    _close(mean, jnp.mean(x.astype(jnp.float32), 0), rel=1e-6)
    _close(jnp.std(y.astype(jnp.float32), 0), jnp.ones(8), rel=2e-2)


class _Net(nn.Module):
    implementation: str

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(6, name="dense")(x)
        x = batch_norm(self.implementation, train, jnp.float32, "bn_a", relu=True)(x)
        x = nn.Dense(5, name="dense2")(x)
        return batch_norm(self.implementation, train, jnp.float32, "bn_b", zero_scale=False)(x)


def _close_trees(a, b, rel):
    """Every leaf close, relative to the largest value in the whole tree b."""
    floor = max(float(np.max(np.abs(leaf))) for leaf in jax.tree.leaves(b))
    jax.tree.map(lambda x, y: _close(x, y, rel=rel, floor=floor), a, b)


def test_module_matches_flax_batchnorm_in_train_and_eval_mode():
    x = jax.random.normal(jax.random.key(2), (16, 4))
    fused, flax_bn = _Net("fused"), _Net("flax")
    variables = flax_bn.init(jax.random.key(3), x, train=False)
    # the same variables: a checkpoint of one loads into the other
    assert jax.tree.map(jnp.shape, fused.init(jax.random.key(3), x, train=False)) == \
        jax.tree.map(jnp.shape, variables)
    params = jax.tree.map(lambda p: p + 0.1, variables["params"])

    def train_loss(net):
        def f(params):
            y, updates = net.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                   mutable=["batch_stats"])
            return jnp.sum(jnp.cos(y)), (y, updates["batch_stats"])
        return jax.value_and_grad(f, has_aux=True)(params)

    (l1, (y1, s1)), g1 = train_loss(fused)
    (l2, (y2, s2)), g2 = train_loss(flax_bn)
    _close(y1, y2)
    jax.tree.map(_close, s1, s2)
    _close_trees(g1, g2, rel=1e-4)
    eval_vars = {"params": params, "batch_stats": s1}
    _close(fused.apply(eval_vars, x, train=False), flax_bn.apply(eval_vars, x, train=False))


def test_group_statistics_and_sharded_batch():
    """Per-group statistics (jax.vmap over groups, as MoCo's shuffle-BN equivalent uses) and a batch sharded
    over 8 devices (statistics over the global batch) give what flax's BatchNorm gives."""
    x = jax.random.normal(jax.random.key(4), (16, 4))
    fused, flax_bn = _Net("fused"), _Net("flax")
    variables = flax_bn.init(jax.random.key(5), x, train=False)
    run = lambda net: base.apply_with_group_stats(net, variables["params"], variables["batch_stats"], x, 4)  # noqa: E731
    (y1, s1), (y2, s2) = run(fused), run(flax_bn)
    _close(y1, y2)
    jax.tree.map(_close, s1, s2)
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    apply = jax.jit(lambda v, x: fused.apply(v, x, train=True, mutable=["batch_stats"]))
    y3, s3 = apply(variables, sharded)
    y4, s4 = flax_bn.apply(variables, x, train=True, mutable=["batch_stats"])
    _close(y3, y4)
    jax.tree.map(_close, s3, s4)


def test_backbones_give_the_same_outputs_and_gradients_with_either_implementation():
    x = jax.random.normal(jax.random.key(6), (2, 4, 32, 32, 3))
    results = []
    for implementation in ("fused", "flax"):
        model = create_backbone("r3d_micro", batch_norm=implementation)
        variables = model.init(jax.random.key(7), x, train=False)
        params = jax.tree.map(lambda p: p + 0.05, variables["params"])  # zero-init residual scales → nonzero

        def loss(params):
            out, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                       mutable=["batch_stats"])
            return jnp.sum(out * jnp.arange(out.shape[-1])), updates

        results.append(jax.jit(jax.value_and_grad(loss, has_aux=True))(params))
    ((l1, s1), g1), ((l2, s2), g2) = results
    _close(l1, l2, rel=1e-5)
    jax.tree.map(_close, s1, s2)
    _close_trees(g1, g2, rel=1e-4)


def test_unknown_implementation_names_the_choices():
    with pytest.raises(ValueError, match="batch_norm implementation 'cudnn'.*fused, flax"):
        batch_norm("cudnn", True, jnp.float32, "bn")
    with pytest.raises(ValueError, match="unknown batch_norm 'apex'.*fused, flax"):
        create_backbone("r3d_micro", batch_norm="apex").init(jax.random.key(0), jnp.ones((1, 4, 32, 32, 3)),
                                                               train=False)


def test_running_averages_use_the_momentum():
    x = 2.0 + jax.random.normal(jax.random.key(8), (32, 3))
    bn = BatchNorm(momentum=0.9)
    variables = bn.init(jax.random.key(0), x)
    assert np.all(variables["batch_stats"]["mean"] == 0) and np.all(variables["batch_stats"]["var"] == 1)
    _, updates = bn.apply(variables, x, mutable=["batch_stats"])
    _close(updates["batch_stats"]["mean"], 0.1 * jnp.mean(x, 0))
    _close(updates["batch_stats"]["var"], 0.9 + 0.1 * jnp.var(x, 0))
