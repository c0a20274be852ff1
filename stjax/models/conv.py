"""A channels-last 3D convolution with interchangeable lowerings.

XLA:CPU computes the *gradients* of 3D convolutions far more slowly (5–80× on
this project's 2-core machines, worst for the input gradient of strided
convolutions) than the same convolution written as 2D convolutions over the
temporal taps; on GPUs the 2D form is also faster (below).
`Conv3D` therefore has one parameter layout and several lowerings:

* ``"native"``     – ``lax.conv_general_dilated`` with ('NDHWC', 'DHWIO', 'NDHWC').
* ``"conv2d_sum"`` – pad T; for every temporal tap k take the (strided) temporal
  slice of frames, fold T into the batch and run a 2D convolution with
  ``kernel[k]``; sum over taps. A kt=1 convolution is a single 2D convolution
  over ``[B*T, H, W, C]``.
* ``"conv2d_concat"`` – the same slices concatenated along channels and one 2D
  convolution with the kernel reshaped to ``(kh, kw, kt*cin, cout)`` (temporal
  im2col). Mathematically identical to the above.
* ``"conv2d_time"`` – ``conv2d_concat``, except that a purely temporal kernel (kt×1×1, no spatial
  stride or padding: a Slow pathway's res4/res5 conv a) is one 2D convolution over
  ``[B, T, H*W, C]`` with a (kt, 1) kernel, so no shifted copies of the input are made.
* Spatially pointwise kernels (kh = kw = 1, no spatial padding) use a matmul
  (``dot_general``) instead of a 1×1 2D convolution in every 2D lowering: same
  result, ~10× faster gradients on XLA:CPU.
* ``"auto"``       – ``conv2d_sum`` on the CPU backend, ``conv2d_time`` on GPUs, ``native`` elsewhere
  (TPUs). On an H100, a bf16 Slow R-50 ρBYOL step (8 videos, ρ=2, 8×224², flax BatchNorm) took 50.3 ms
  with ``native``, 41.0 with ``conv2d_sum``, 40.6–40.9 with ``conv2d_concat`` and 38.1 with
  ``conv2d_time`` (bench/RESULTS.md): cuDNN's 3D convolutions are slower than its 2D ones for the
  kt=1 kernels that make up most of a Slow pathway, and the temporal im2col copies cost time too.

The ``kernel`` parameter has shape ``(kt, kh, kw, cin, features)`` for every
lowering, so checkpoints do not depend on it.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

CONV_OUTPUT = "conv3d_output"  # checkpoint_name of every Conv3D output (a remat policy can keep them)

LOWERINGS = ("auto", "native", "conv2d_sum", "conv2d_concat", "conv2d_time")

kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def resolve_lowering(lowering: str, backend: str | None = None) -> str:
    """Maps ``"auto"`` to the concrete lowering for ``backend`` (default: jax's default backend)."""
    if lowering not in LOWERINGS:
        raise ValueError(f"unknown Conv3D lowering {lowering!r}; valid choices: {', '.join(LOWERINGS)}")
    if lowering != "auto":
        return lowering
    backend = backend or jax.default_backend()
    return {"cpu": "conv2d_sum", "gpu": "conv2d_time", "cuda": "conv2d_time", "rocm": "conv2d_time"}.get(
        backend, "native")


# "auto" input-channel padding per backend. On an H100 (bench/RESULTS.md, 2026-11-23) cuDNN's kernels for the
# 3-channel stem ran at ~39 TFLOP/s bf16 (0.78 ms for each forward pass of the Slow R-50 stem at 16 clips);
# padded to 8 channels, the ρBYOL step went from 36.7 to 35.5 ms. Padding costs FLOPs on a CPU.
AUTO_INPUT_CHANNEL_PADDING = {"gpu": 8, "cuda": 8}


def resolve_input_channel_padding(channels: int | None, backend: str | None = None,
                                  field: str = "pad_input_channels") -> int:
    """The number of input channels a convolution computes on: ``None`` means "auto" (AUTO_INPUT_CHANNEL_PADDING
    for ``backend``, default jax's default backend; 0, no padding, elsewhere). ``field`` names the setting in
    the error for a bad value."""
    if channels is None:
        return AUTO_INPUT_CHANNEL_PADDING.get(backend or jax.default_backend(), 0)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 0:
        raise ValueError(f"{field}={channels!r} is not supported; valid choices: None (auto: 8 on GPUs, none "
                         "elsewhere) or a number of channels >= 0 (0: no padding)")
    return channels


def _temporal_slices(x: jnp.ndarray, kt: int, st: int, pt: int) -> tuple[list[jnp.ndarray], int]:
    """Pads T by ``pt`` both sides; returns the kt strided temporal slices [B, T_out, H, W, C] and T_out."""
    if pt:
        x = jnp.pad(x, ((0, 0), (pt, pt), (0, 0), (0, 0), (0, 0)))
    t_pad = x.shape[1]
    t_out = (t_pad - kt) // st + 1
    if t_out <= 0:
        raise ValueError(f"temporal size {t_pad} (after padding) is smaller than the kernel {kt}")
    slices = [jax.lax.slice_in_dim(x, k, k + st * (t_out - 1) + 1, st, axis=1) for k in range(kt)]
    return slices, t_out


def _conv2d(x, w, strides, padding, dilation=(1, 1)):
    """2D conv [N, H, W, C] x (kh, kw, cin, cout), kernel dilation (dh, dw). Spatially pointwise kernels become a
    matmul: XLA:CPU's 1×1 conv gradients are ~10× slower than the equivalent dot_general's."""
    if w.shape[:2] == (1, 1) and all(p == (0, 0) for p in padding):
        if strides != (1, 1):
            x = x[:, ::strides[0], ::strides[1]]
        return jax.lax.dot_general(x, w[0, 0], (((3,), (0,)), ((), ())))
    return jax.lax.conv_general_dilated(
        x, w, window_strides=strides, padding=padding, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv3d(x: jnp.ndarray, kernel: jnp.ndarray, strides=(1, 1, 1), padding=(0, 0, 0),
           lowering: str = "auto", dilation=(1, 1)) -> jnp.ndarray:
    """Functional 3D convolution. x: [B, T, H, W, C]; kernel: (kt, kh, kw, cin, cout); symmetric padding;
    ``dilation`` (dh, dw): spatial kernel dilation (taps ``dh`` rows and ``dw`` columns apart)."""
    lowering = resolve_lowering(lowering)
    kt, kh, kw, cin, cout = kernel.shape
    st, sh, sw = strides
    pt, ph, pw = padding
    dilation = tuple(int(d) for d in dilation)
    if len(dilation) != 2 or min(dilation) < 1:
        raise ValueError(f"dilation={dilation!r} is not supported; valid choices: (dh, dw), each >= 1")
    if lowering == "native":
        return jax.lax.conv_general_dilated(
            x, kernel, window_strides=(st, sh, sw), padding=((pt, pt), (ph, ph), (pw, pw)),
            rhs_dilation=(1,) + dilation, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    b = x.shape[0]
    if lowering == "conv2d_time" and kt > 1 and (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        _, t, h, w, _ = x.shape
        y = jax.lax.conv_general_dilated(
            x.reshape(b, t, h * w, cin), kernel.reshape(kt, 1, cin, cout), window_strides=(st, 1),
            padding=((pt, pt), (0, 0)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape(b, y.shape[1], h, w, cout)
    slices, t_out = _temporal_slices(x, kt, st, pt)
    fold = lambda s: s.reshape((b * t_out,) + s.shape[2:])  # noqa: E731
    pad2d = ((ph, ph), (pw, pw))
    if lowering == "conv2d_sum" or kt == 1:
        y = None
        for k, s in enumerate(slices):
            yk = _conv2d(fold(s), kernel[k], (sh, sw), pad2d, dilation)
            y = yk if y is None else y + yk
    else:  # conv2d_concat (and conv2d_time's general kernels): temporal im2col, one 2D conv over kt*cin channels
        xc = jnp.concatenate([fold(s) for s in slices], axis=-1)
        w = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * cin, cout)
        y = _conv2d(xc, w, (sh, sw), pad2d, dilation)
    return y.reshape((b, t_out) + y.shape[1:])


class Conv3D(nn.Module):
    """3D convolution on channels-last video ``[B, T, H, W, C]``.

    ``padding`` is symmetric per dimension; ``None`` means ``k // 2`` (PyTorch style), times the dilation
    spatially. ``dilation`` (dh, dw) dilates the kernel spatially (no parameters change).
    Params are kept in float32; the computation runs in ``dtype``.
    """

    features: int
    kernel_size: tuple[int, int, int]  # (kt, kh, kw)
    strides: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[int, int, int] | None = None
    use_bias: bool = False
    dtype: Any = jnp.float32
    lowering: str = "auto"
    kernel_init: Callable = kaiming_fan_out
    bias_init: Callable = nn.initializers.zeros
    # compute on the input's channels zero-padded up to this many (the kernel too; same function, same
    # parameters): cuDNN's kernels for 3-channel inputs are slow. None: resolve_input_channel_padding's "auto".
    pad_input_channels: int | None = 0
    dilation: tuple[int, int] = (1, 1)  # spatial (dh, dw)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train  # no train-dependent behaviour; accepted for a uniform interface
        lowering = resolve_lowering(self.lowering)  # validates even before params exist
        pad_to = resolve_input_channel_padding(self.pad_input_channels)
        kernel_size = tuple(int(k) for k in self.kernel_size)
        if len(kernel_size) != 3:
            raise ValueError(f"kernel_size must be (kt, kh, kw), got {self.kernel_size}")
        dh, dw = self.dilation
        padding = (kernel_size[0] // 2, dh * (kernel_size[1] // 2), dw * (kernel_size[2] // 2)) \
            if self.padding is None else tuple(self.padding)
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, kernel_size + (cin, self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if cin < pad_to:
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad_to - cin)])
            kernel = jnp.pad(kernel, [(0, 0)] * 3 + [(0, pad_to - cin), (0, 0)])
        y = conv3d(x, kernel, tuple(self.strides), padding, lowering, tuple(self.dilation))
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return checkpoint_name(y, CONV_OUTPUT)
