"""Primitives shared by every backbone: conv, torch-style BatchNorm, conv-BN-ReLU, residual.

Everything is NHWC. Parameters are stored in `param_dtype` (float32 by default) while the
computation runs in `dtype` (e.g. bfloat16 for mixed precision).

Faithfulness to the official PyTorch code (xingyizhou/CenterNet):

* Padding is explicit and symmetric, `(k - 1) // 2` on each side. `'SAME'` would pad a
  stride-2 layer asymmetrically on even inputs ((2, 3) for 7x7, (0, 1) for 3x3) and shift
  every feature map by a pixel relative to the official model.
* Convolutions followed by BatchNorm have no bias (as in the official code).
* BatchNorm uses epsilon 1e-5 and flax momentum 0.9 (== torch momentum 0.1: the running
  statistic keeps 0.9 of its old value). Normalisation uses the biased batch variance, as
  torch does; torch updates `running_var` with the unbiased variance (factor n / (n - 1),
  n = batch * height * width), flax with the biased one. The difference is below 0.2% even
  at the 4x4 innermost hourglass level with batch 32 and does not affect inference.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

BN_EPSILON = 1e-5
# flax keeps `momentum` of the old running statistic; torch's momentum 0.1 keeps 0.9.
BN_MOMENTUM = 0.9


def symmetric_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Torch-style padding `(k - 1) // 2` on every side of both spatial axes."""
    pad = (kernel_size - 1) // 2
    return ((pad, pad), (pad, pad))


def conv2d(
    features: int,
    kernel_size: int,
    *,
    strides: int = 1,
    use_bias: bool = True,
    dtype: DType = jnp.float32,
    param_dtype: DType = jnp.float32,
    kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    name: str | None = None,
) -> nn.Conv:
    """A square `nn.Conv` with explicit symmetric torch padding; kernel HWIO.

    Flax default initialisers are used unless `kernel_init` / `bias_init` are given.
    """
    kwargs = {}
    if kernel_init is not None:
        kwargs["kernel_init"] = kernel_init
    if bias_init is not None:
        kwargs["bias_init"] = bias_init
    return nn.Conv(
        features=features,
        kernel_size=(kernel_size, kernel_size),
        strides=(strides, strides),
        padding=symmetric_padding(kernel_size),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
        **kwargs,
    )


def batch_norm(
    train: bool,
    *,
    dtype: DType = jnp.float32,
    param_dtype: DType = jnp.float32,
    name: str | None = None,
) -> nn.BatchNorm:
    """BatchNorm with torch semantics (eps 1e-5, torch momentum 0.1).

    In train mode it normalises with batch statistics and updates `batch_stats`
    (`mean`, `var`; pass `mutable=['batch_stats']` to `apply`); otherwise it uses the
    running statistics. Statistics are reduced in float32 even for bfloat16 inputs.
    Under `jit` with a batch sharded over devices the statistics are global (sync-BN).
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        # Two-pass variance (E[(x - mean)^2]) as torch; E[x^2] - E[x]^2 cancels badly.
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


class ConvBNReLU(nn.Module):
    """The official `convolution(k, inp, out, stride, with_bn)`: conv -> [BN] -> ReLU.

    Submodules: `conv` (bias only when `with_bn` is False) and `bn`, matching the
    official key names `<prefix>.conv.weight`, `<prefix>.bn.*`.

    Input [B, H, W, C_in]; output [B, ceil(H / strides), ceil(W / strides), features]
    in `dtype`.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    with_bn: bool = True
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        x = conv2d(
            self.features,
            self.kernel_size,
            strides=self.strides,
            use_bias=not self.with_bn,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        if self.with_bn:
            x = batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(x)
        return nn.relu(x)


class Residual(nn.Module):
    """The hourglass residual block (official `residual(k, inp, out, stride)`).

    relu(bn2(conv2(relu(bn1(conv1(x))))) + skip(x)), where conv1 has the stride and
    skip = bn(conv1x1(x)) with the same stride when the stride is not 1 or the width
    changes, and the identity otherwise. No max-pool anywhere: downsampling is this
    stride-2 conv.

    Submodules: `conv1`, `bn1`, `conv2`, `bn2`, and `skip_0` (1x1 conv) / `skip_1` (BN)
    when present, matching official keys `conv1.weight`, `bn1.*`, `skip.0.weight`,
    `skip.1.*`.

    Input [B, H, W, C_in]; output [B, ceil(H / strides), ceil(W / strides), features].
    """

    features: int
    strides: int = 1
    kernel_size: int = 3
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = conv2d(self.features, self.kernel_size, strides=self.strides,
                   use_bias=False, name="conv1", **dt)(x)
        y = nn.relu(batch_norm(train, name="bn1", **dt)(y))
        y = conv2d(self.features, self.kernel_size, use_bias=False, name="conv2", **dt)(y)
        y = batch_norm(train, name="bn2", **dt)(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            skip = conv2d(self.features, 1, strides=self.strides, use_bias=False,
                          name="skip_0", **dt)(x)
            skip = batch_norm(train, name="skip_1", **dt)(skip)
        else:
            skip = x.astype(y.dtype)
        return nn.relu(y + skip)


def image_hw(shape, model: str) -> tuple[int, int]:
    """(H, W) of an NHWC image batch shape; ValueError naming ``model`` for another rank."""
    if len(shape) != 4:
        raise ValueError(f"{model} expects NHWC images [B, H, W, C], got shape {tuple(shape)}")
    return shape[1], shape[2]


def padded_hw(height: int, width: int, multiple: int) -> str:
    """The nearest larger size with both sides multiples of ``multiple``, as "HxW"."""
    def round_up(size: int) -> int:
        return max(1, -(-size // multiple)) * multiple
    return f"{round_up(height)}x{round_up(width)}"


def upsample_nearest_2x(x: Array) -> Array:
    """Nearest-neighbour x2 upsampling (torch `nn.Upsample(scale_factor=2)`).

    [B, H, W, C] -> [B, 2H, 2W, C]; out[:, i, j] = x[:, i // 2, j // 2].
    """
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


def parse_dtype(dtype: DType | str) -> jnp.dtype:
    """Maps 'float32' / 'bfloat16' / 'float16' (or a dtype) to a floating jnp dtype."""
    try:
        parsed = jnp.dtype(dtype)
    except TypeError as e:
        raise ValueError(f"unknown dtype {dtype!r}; use 'float32', 'bfloat16' or 'float16'") from e
    if not jnp.issubdtype(parsed, jnp.floating):
        raise ValueError(f"model dtype must be floating, got {dtype!r}")
    return parsed
