"""Stacked hourglass backbone (CornerNet/ExtremeNet "large hourglass", CenterNet `hourglass`).

Structure (official `large_hourglass.py` semantics, NHWC):

  pre    = ConvBNReLU(7x7, stride 2, pre_width) -> Residual(dims[0], stride 2)      # /4
  for each stack s:
    kp   = HourglassLevel(dims, modules)(inter)
    cnv  = ConvBNReLU(3x3, cnv_dim)(kp)                       # -> that stack's heads
    if s is not the last stack:
      inter = relu(BN(conv1x1(inter)) + BN(conv1x1(cnv)))     # inters_[s], cnvs_[s]
      inter = Residual(dims[0])(inter)                        # inters[s]

  HourglassLevel(dims, modules), cur/next = dims[0]/dims[1], mod = modules[0]:
    up1  = mod residuals at cur
    low1 = Residual(cur -> next, stride 2) + (mod - 1) residuals at next      (no max-pool)
    low2 = HourglassLevel(dims[1:], modules[1:])  if deeper levels remain, else
           modules[-1] residuals at dims[-1] (Hourglass-104: 4 residuals at 512)
    low3 = (mod - 1) residuals at next + Residual(next -> cur)
    out  = up1 + nearest_upsample_x2(low3)

Parameter naming (so official PyTorch keys map mechanically): every `.<i>` list index
after a module name becomes `_<i>`, dots become `/`, conv `weight` -> `kernel` (OIHW ->
HWIO), BN `weight`/`bias` -> `scale`/`bias` in `params` and `running_mean`/`running_var`
-> `mean`/`var` in `batch_stats` (`num_batches_tracked` is dropped). Examples:

  kps.0.up1.0.conv1.weight              -> kps_0/up1_0/conv1/kernel
  kps.0.low2.low2.low2.low2.low2.3.bn2.bias -> kps_0/low2/low2/low2/low2/low2_3/bn2/bias
  pre.1.skip.0.weight                   -> pre_1/skip_0/kernel
  inters_.0.1.running_var               -> inters__0_1/var  (batch_stats)
  cnvs.1.bn.weight                      -> cnvs_1/bn/scale

The recursion modules are named `low2` as in the official code; at the innermost level
the residuals `low2_0 ... low2_{m-1}` sit next to `up1_*`, `low1_*`, `low3_*`. Inside
`CenterNet` these paths sit under `backbone/` (see `convert.official_key_to_flax`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from centernet_jax.models.layers import (
    ConvBNReLU,
    DType,
    Residual,
    batch_norm,
    conv2d,
    image_hw,
    padded_hw,
    upsample_nearest_2x,
)

Array = jax.Array

HOURGLASS_104: dict[str, Any] = dict(
    num_stacks=2,
    depth=5,
    dims=(256, 256, 384, 384, 384, 512),
    modules=(2, 2, 2, 2, 2, 4),
    pre_width=128,
    cnv_dim=256,
)
# The 1-stack variant (as CenterNet-52 of the triplets paper; 128-px-divisible inputs too).
HOURGLASS_52: dict[str, Any] = dict(HOURGLASS_104, num_stacks=1)

HOURGLASS_PRESETS: dict[str, dict[str, Any]] = {
    "hourglass_104": HOURGLASS_104,
    "hourglass_52": HOURGLASS_52,
}


def required_input_multiple(depth: int) -> int:
    """Input H and W that are multiples of this always work: /4 by `pre`, then /2 per level."""
    return 4 * 2**depth


def output_size(size: int) -> int:
    """Spatial size after `pre` (7x7 s2 p3, then 3x3 s2 p1), as in torch: ceil(size / 4)."""
    return -(-size // 4)


class HourglassLevel(nn.Module):
    """One recursive hourglass level (official `kp_module`); see the module docstring.

    Input and output [B, H, W, dims[0]] with H, W divisible by 2**(len(dims) - 1).
    """

    dims: Sequence[int]
    modules: Sequence[int]
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        cur_dim, next_dim = self.dims[0], self.dims[1]
        cur_mod, next_mod = self.modules[0], self.modules[1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        up1 = x
        for i in range(cur_mod):
            up1 = Residual(cur_dim, name=f"up1_{i}", **dt)(up1, train)

        low = x
        for i in range(cur_mod):
            low = Residual(next_dim, strides=2 if i == 0 else 1, name=f"low1_{i}", **dt)(low, train)

        if len(self.dims) > 2:
            low = HourglassLevel(self.dims[1:], self.modules[1:], name="low2", **dt)(low, train)
        else:
            for i in range(next_mod):
                low = Residual(next_dim, name=f"low2_{i}", **dt)(low, train)

        for i in range(cur_mod):
            width = next_dim if i < cur_mod - 1 else cur_dim
            low = Residual(width, name=f"low3_{i}", **dt)(low, train)

        return up1 + upsample_nearest_2x(low)


class Hourglass(nn.Module):
    """Stacked hourglass backbone returning one feature map per stack.

    Attributes:
      num_stacks: number of stacked hourglasses (2 for Hourglass-104).
      depth: recursion depth n (number of stride-2 levels inside each hourglass).
      dims: n + 1 widths, outermost first.
      modules: n + 1 residual counts; modules[i] for level i's up1/low1/low3,
        modules[n] for the innermost low2 block.
      pre_width: width of the first 7x7 stride-2 conv.
      cnv_dim: width of the per-stack `cnv` output (the heads' input).
      dtype: computation dtype; params are `param_dtype` (float32).

    `__call__(images [B, H, W, C] float, train: bool)` -> list of `num_stacks` arrays
    [B, H/4, W/4, cnv_dim] in `dtype`. H and W must be multiples of 4 * 2**depth
    (128 for Hourglass-104; see `check_input_shape` for the exact rule, under which the
    output is ceil(H / 4) x ceil(W / 4)). In train mode BN uses batch statistics and updates
    `batch_stats` (apply with `mutable=['batch_stats']`).
    """

    num_stacks: int = 2
    depth: int = 5
    dims: Sequence[int] = HOURGLASS_104["dims"]
    modules: Sequence[int] = HOURGLASS_104["modules"]
    pre_width: int = 128
    cnv_dim: int = 256
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        if self.num_stacks < 1:
            raise ValueError(f"num_stacks must be >= 1, got {self.num_stacks}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if len(self.dims) != self.depth + 1 or len(self.modules) != self.depth + 1:
            raise ValueError(
                f"dims and modules need depth + 1 = {self.depth + 1} entries, got "
                f"dims={tuple(self.dims)} and modules={tuple(self.modules)}"
            )
        if any(int(m) < 1 for m in self.modules):
            raise ValueError(f"every modules entry must be >= 1, got {tuple(self.modules)}")
        if any(int(d) < 1 for d in self.dims) or self.pre_width < 1 or self.cnv_dim < 1:
            raise ValueError("dims, pre_width and cnv_dim must be positive")

    @property
    def input_multiple(self) -> int:
        """Input H and W must be multiples of this."""
        return required_input_multiple(self.depth)

    def check_input_shape(self, shape: Sequence[int]) -> None:
        """Raises ValueError unless `shape` is [B, H, W, C] with a valid H and W.

        Every level halves the /4 map with a stride-2 conv and later doubles it again, so
        ceil(H / 4) and ceil(W / 4) must be divisible by 2**depth. Multiples of
        4 * 2**depth (128 for Hourglass-104) always work; so do sizes up to 3 below one
        (e.g. 511 or 127, the triplets canvases), as in the official model.
        """
        h, w = image_hw(shape, "Hourglass")
        level = 2**self.depth
        if h < 1 or w < 1 or output_size(h) % level or output_size(w) % level:
            m = self.input_multiple
            raise ValueError(
                f"Hourglass with depth {self.depth} needs input height and width that are "
                f"multiples of 4 * 2**{self.depth} = {m} (e.g. {m}, {2 * m}, {4 * m}; more "
                f"exactly ceil(size / 4) divisible by {level}); got {h}x{w}. Pad the image, "
                f"e.g. to {padded_hw(h, w, m)}."
            )

    @nn.compact
    def __call__(self, images: Array, train: bool) -> list[Array]:
        self.check_input_shape(images.shape)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cur_dim = self.dims[0]

        inter = ConvBNReLU(self.pre_width, kernel_size=7, strides=2, name="pre_0", **dt)(images, train)
        inter = Residual(cur_dim, strides=2, name="pre_1", **dt)(inter, train)

        features = []
        for s in range(self.num_stacks):
            kp = HourglassLevel(self.dims, self.modules, name=f"kps_{s}", **dt)(inter, train)
            cnv = ConvBNReLU(self.cnv_dim, kernel_size=3, name=f"cnvs_{s}", **dt)(kp, train)
            features.append(cnv)
            if s < self.num_stacks - 1:
                a = conv2d(cur_dim, 1, use_bias=False, name=f"inters__{s}_0", **dt)(inter)
                a = batch_norm(train, name=f"inters__{s}_1", **dt)(a)
                b = conv2d(cur_dim, 1, use_bias=False, name=f"cnvs__{s}_0", **dt)(cnv)
                b = batch_norm(train, name=f"cnvs__{s}_1", **dt)(b)
                inter = nn.relu(a + b)
                inter = Residual(cur_dim, name=f"inters_{s}", **dt)(inter, train)
        return features
