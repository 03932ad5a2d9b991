"""DLA-34 backbone with the deformable IDA neck (official CenterNet `pose_dla_dcn` "dla_34").

Structure (NHWC; widths of DLA-34, `channels` = (16, 32, 64, 128, 256, 512)):

  base (`DLABase`), six levels at strides 1, 2, 4, 8, 16, 32:
    base_layer = conv7x7 stride 1 (3 -> 16) + BN + ReLU
    level0     = conv3x3 (16 -> 16) + BN + ReLU
    level1     = conv3x3 stride 2 (16 -> 32) + BN + ReLU
    level2..5  = `Tree`s of `BasicBlock`s, each halving the resolution; `levels` gives
                 their depth (1, 2, 2, 1); level3..5 are "level roots" (their max-pooled
                 input also feeds the root).
  dla_up (`DLAUp`) on levels 2..5 (64@/4 .. 512@/32): ida_0, ida_1, ida_2 fuse the deeper
    levels into shallower ones, giving [64@/4, 128@/8, 256@/16, 512@/32].
  ida_up = IDAUp(64, up factors [1, 2, 4]) over its first three outputs -> 64@/4, which
    feeds the heads.

  Tree(levels, stride) on x, with bottom = maxpool2x2(x) if stride 2 else x and
  residual = project(bottom) (1x1 conv + BN) when the width changes, else bottom:
    levels 1: x1 = block(x, residual) (its conv1 has the stride); x2 = block(x1, x1);
              out = root(x2, x1, *children)
    levels n: x1 = Tree(n - 1, stride)(x); out = Tree(n - 1, 1)(x1, children + [x1])
    a level root first appends `bottom` to children.
  Root(xs)    = ReLU(BN(conv1x1(concat(xs)))), no residual.
  IDAUp over maps [m_0, m_1, ...] (m_i at stride s * f_i):
    m_i <- node_i(up_i(proj_i(m_i)) + m_{i-1}) for i = 1, 2, ...
    proj_i, node_i = `DeformConv` (DCNv2 3x3 with bias, then BN, ReLU); up_i = depthwise
    ConvTranspose2d(k = 2 f_i, stride f_i, padding f_i // 2), bilinear init, no bias.

The projection of a multi-level Tree (e.g. `base.level3.project`) is computed but unused,
as officially (its inner tree computes its own): it has parameters and, in training, BN
statistics. The ImageNet classifier `base.fc` that the official loader attaches is never
used and is left out.

Parameter naming: official state-dict keys map mechanically (`.<i>` -> `_<i>`, dots ->
`/`, conv `weight` -> `kernel` HWIO, BN `weight` -> `scale`, running stats -> `batch_stats`
`mean`/`var`); inside `CenterNet` everything sits under `backbone/`:

  base.base_layer.0.weight                   -> base/base_layer_0/kernel
  base.level0.1.running_mean                 -> base/level0_1/mean          (batch_stats)
  base.level3.tree2.root.conv.weight         -> base/level3/tree2/root/conv/kernel
  base.level2.project.1.bias                 -> base/level2/project_1/bias
  dla_up.ida_0.proj_1.actf.0.weight          -> dla_up/ida_0/proj_1/actf_0/scale
  dla_up.ida_0.proj_1.conv.conv_offset_mask.weight
                                             -> dla_up/ida_0/proj_1/conv/conv_offset_mask/kernel
  ida_up.up_2.weight [64, 1, 8, 8]           -> ida_up/up_2/kernel [8, 8, 1, 64]
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from centernet_jax.models.dcn import DeformableConv
from centernet_jax.models.layers import DType, batch_norm, conv2d, image_hw, padded_hw

Array = jax.Array

DLA_34: dict[str, Any] = dict(
    levels=(1, 1, 1, 2, 2, 1),
    channels=(16, 32, 64, 128, 256, 512),
    deformable=True,
)

# The heads sit on level FIRST_LEVEL (stride 2**2 = 4, the official down_ratio 4); the
# final IDA fuses levels FIRST_LEVEL .. LAST_LEVEL - 1 (official last_level 5).
FIRST_LEVEL = 2
LAST_LEVEL = 5
# Input H and W must be multiples of the deepest stride (level 5: 2**5).
INPUT_MULTIPLE = 32

# torch's default conv init (kaiming_uniform with a = sqrt(5)): U(+-1 / sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def bilinear_upsample_kernel(factor: int, channels: int) -> np.ndarray:
    """The official `fill_up_weights` kernel as a flax depthwise kernel [2f, 2f, 1, channels].

    Every channel gets the same separable bilinear kernel w[i] * w[j] with
    w[i] = 1 - |i / f - c|, c = (2f - 1 - f % 2) / (2f), so a transposed conv with stride f
    and padding f // 2 starts as bilinear x f upsampling.
    """
    size = 2 * factor
    f = math.ceil(size / 2)
    center = (2 * f - 1 - f % 2) / (2.0 * f)
    w = 1.0 - np.abs(np.arange(size) / f - center)
    kernel = np.outer(w, w)
    return np.broadcast_to(kernel[:, :, None, None], (size, size, 1, channels)).copy()


class DepthwiseUpsample(nn.Module):
    """Depthwise ConvTranspose2d(C, C, k=2f, stride=f, padding=f // 2, groups=C, no bias).

    Param `kernel` [2f, 2f, 1, C] is the torch weight [C, 1, 2f, 2f] transposed
    (2, 3, 1, 0); initialised bilinear (`bilinear_upsample_kernel`). Torch computes
    out[i f - p + u, j f - p + v] += x[i, j] * kernel[u, v] (p = f // 2). With k = 2f every
    output pixel o = q f + r - p (0 <= r < f) receives exactly the input pixels q and q - 1
    through kernel taps r and f + r, per axis; so the output is assembled from four shifted
    copies of x times f x f blocks of the kernel: elementwise work only. (The equivalent
    input-dilated grouped convolution, `lax.conv_general_dilated` with lhs_dilation f and
    feature_group_count C, was 100-1000x slower on CPU, forward and backward.)

    Input [B, H, W, C]; output [B, f H, f W, C]. `factor` must be even (the DLA factors are
    2, 4, 8); odd factors give a different output size in torch.
    """

    factor: int
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        f = self.factor
        if f < 2 or f % 2:
            raise ValueError(f"up-sampling factor must be even, got {f}")
        b, h, w, c = x.shape
        kernel = self.param(
            "kernel",
            lambda key, shape, dtype: jnp.asarray(bilinear_upsample_kernel(f, c), dtype),
            (2 * f, 2 * f, 1, c),
            self.param_dtype,
        )
        # taps[a, r, d, s] = kernel[a f + r, d f + s]: the block applied to x[q - a, q' - d].
        taps = kernel.astype(self.dtype).reshape(2, f, 2, f, c)
        padded = jnp.pad(x.astype(self.dtype), ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = jnp.zeros((b, h + 1, f, w + 1, f, c), self.dtype)
        for a in (0, 1):
            for d in (0, 1):
                shifted = padded[:, 1 - a:2 - a + h, 1 - d:2 - d + w]  # x[q - a, q' - d]
                out = out + shifted[:, :, None, :, None, :] * taps[a, :, d, None]
        # Row q f + r of `out` is output row q f + r - p; keep rows 0 .. f H - 1.
        p = f // 2
        out = out.reshape(b, (h + 1) * f, (w + 1) * f, c)
        return out[:, p:p + f * h, p:p + f * w]


class DeformConv(nn.Module):
    """Official `DeformConv(chi, cho)`: DCNv2 3x3 (with bias) -> BN -> ReLU.

    Children `conv` (`DeformableConv`; a plain 3x3 conv with bias when `deformable` is
    False, for ablations) and `actf_0` (BN; torch `actf = Sequential(BN, ReLU)`).

    Input [B, H, W, C_in]; output [B, H, W, features].
    """

    features: int
    deformable: bool = True
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.deformable:
            x = DeformableConv(self.features, kernel_size=3, name="conv", **dt)(x)
        else:
            x = conv2d(self.features, 3, use_bias=True, kernel_init=torch_conv_init,
                       bias_init=nn.initializers.zeros, name="conv", **dt)(x)
        return nn.relu(batch_norm(train, name="actf_0", **dt)(x))


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + residual).

    conv1 (3x3) has the stride; `residual` must already have the output shape.
    Children `conv1`, `bn1`, `conv2`, `bn2`.
    """

    features: int
    strides: int = 1
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, residual: Array, train: bool) -> Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = conv2d(self.features, 3, strides=self.strides, use_bias=False,
                   kernel_init=torch_conv_init, name="conv1", **dt)(x)
        y = nn.relu(batch_norm(train, name="bn1", **dt)(y))
        y = conv2d(self.features, 3, use_bias=False, kernel_init=torch_conv_init,
                   name="conv2", **dt)(y)
        y = batch_norm(train, name="bn2", **dt)(y)
        return nn.relu(y + residual.astype(y.dtype))


class Root(nn.Module):
    """ReLU(BN(conv1x1(concat(inputs)))) with no residual. Children `conv`, `bn`."""

    features: int
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, inputs: Sequence[Array], train: bool) -> Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = jnp.concatenate([t.astype(self.dtype) for t in inputs], axis=-1)
        x = conv2d(self.features, 1, use_bias=False, kernel_init=torch_conv_init,
                   name="conv", **dt)(x)
        return nn.relu(batch_norm(train, name="bn", **dt)(x))


class Tree(nn.Module):
    """One hierarchical aggregation tree (official `Tree`; see the module docstring).

    Children: `tree1`, `tree2` (`BasicBlock`s when `levels` is 1, else `Tree`s), `root`
    (levels 1 only), `project_0` / `project_1` (1x1 conv + BN, when the width changes).

    Input [B, H, W, C]; output [B, H / strides, W / strides, features].
    """

    levels: int
    features: int
    strides: int = 1
    level_root: bool = False
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool, children: Sequence[Array] = ()) -> Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        children = list(children)
        s = self.strides
        bottom = nn.max_pool(x, (s, s), strides=(s, s), padding="VALID") if s > 1 else x
        if x.shape[-1] != self.features:
            residual = conv2d(self.features, 1, use_bias=False, kernel_init=torch_conv_init,
                              name="project_0", **dt)(bottom)
            residual = batch_norm(train, name="project_1", **dt)(residual)
        else:
            residual = bottom
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            x1 = BasicBlock(self.features, s, name="tree1", **dt)(x, residual, train)
            x2 = BasicBlock(self.features, 1, name="tree2", **dt)(x1, x1, train)
            return Root(self.features, name="root", **dt)([x2, x1, *children], train)
        # The inner tree recomputes its own residual; this one's is unused (as officially).
        x1 = Tree(self.levels - 1, self.features, s, name="tree1", **dt)(x, train)
        children.append(x1)
        return Tree(self.levels - 1, self.features, 1, name="tree2", **dt)(
            x1, train, children=children)


class DLABase(nn.Module):
    """The DLA classification trunk without its classifier (official `DLA`).

    Input [B, H, W, 3]; returns six maps, level i is [B, H / 2**i, W / 2**i, channels[i]].
    Children `base_layer_0/1`, `level0_<3j>/<3j+1>`, `level1_...` (conv/BN of the j-th
    conv), `level2` .. `level5` (`Tree`s).
    """

    levels: Sequence[int] = DLA_34["levels"]
    channels: Sequence[int] = DLA_34["channels"]
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> list[Array]:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = conv2d(self.channels[0], 7, use_bias=False, kernel_init=torch_conv_init,
                   name="base_layer_0", **dt)(x)
        x = nn.relu(batch_norm(train, name="base_layer_1", **dt)(x))
        outputs = []
        for level in (0, 1):
            # Official `_make_conv_level`: Sequential(conv, BN, ReLU) per conv, the first
            # conv of level 1 with stride 2.
            for j in range(self.levels[level]):
                x = conv2d(self.channels[level], 3, strides=2 if level == 1 and j == 0 else 1,
                           use_bias=False, kernel_init=torch_conv_init,
                           name=f"level{level}_{3 * j}", **dt)(x)
                x = nn.relu(batch_norm(train, name=f"level{level}_{3 * j + 1}", **dt)(x))
            outputs.append(x)
        for level in range(2, 6):
            x = Tree(self.levels[level], self.channels[level], strides=2,
                     level_root=level > 2, name=f"level{level}", **dt)(x, train)
            outputs.append(x)
        return outputs


class IDAUp(nn.Module):
    """Iterative deep aggregation over maps of decreasing resolution (official `IDAUp`).

    `up_factors[i]` is the resolution ratio of map i to map 0 (up_factors[0] = 1).
    Children `proj_i`, `up_i`, `node_i` for i >= 1 (see the module docstring).

    Takes maps [m_0 (features ch, stride s), m_i (any width, stride s * up_factors[i])];
    returns the list with every m_i (i >= 1) replaced by its fused [B, H_0, W_0, features]
    map; the last one aggregates all inputs.
    """

    features: int
    up_factors: Sequence[int]
    deformable: bool = True
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, layers: Sequence[Array], train: bool) -> list[Array]:
        if len(layers) != len(self.up_factors):
            raise ValueError(f"IDAUp got {len(layers)} maps for {len(self.up_factors)} factors")
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        layers = list(layers)
        for i in range(1, len(layers)):
            y = DeformConv(self.features, self.deformable, name=f"proj_{i}", **dt)(layers[i], train)
            y = DepthwiseUpsample(int(self.up_factors[i]), name=f"up_{i}", **dt)(y)
            layers[i] = DeformConv(self.features, self.deformable, name=f"node_{i}", **dt)(
                y + layers[i - 1], train)
        return layers


class DLAUp(nn.Module):
    """The deformable DLA up-path (official `DLAUp`): ida_0 .. ida_{n-2}.

    `channels`/`scales`: width and stride ratio of each input map (DLA-34: [64, 128, 256,
    512], [1, 2, 4, 8]). ida_i fuses maps j = n - 2 - i .. n - 1 at the resolution of map
    j into channels[j] features.

    Takes the n maps, shallow first; returns n maps, the i-th with channels[i] features at
    map i's resolution: [ida_{n-2} output, ..., ida_0 output, deepest input map].
    """

    channels: Sequence[int]
    scales: Sequence[int]
    deformable: bool = True
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, layers: Sequence[Array], train: bool) -> list[Array]:
        n = len(self.channels)
        if len(layers) != n:
            raise ValueError(f"DLAUp got {len(layers)} maps for {n} channels")
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        layers = list(layers)
        scales = [int(s) for s in self.scales]
        outputs = [layers[-1]]
        for i in range(n - 1):
            j = n - 2 - i
            factors = [s // scales[j] for s in scales[j:]]
            # After fusion every map deeper than j lives at map j's resolution.
            scales[j + 1:] = [scales[j]] * (n - 1 - j)
            ida = IDAUp(int(self.channels[j]), factors, self.deformable, name=f"ida_{i}", **dt)
            layers[j:] = ida(layers[j:], train)
            outputs.insert(0, layers[-1])
        return outputs


class DLA(nn.Module):
    """DLA backbone with the DCN neck (official `DLASeg` without its heads), stride 4.

    Attributes:
      levels: six per-level depths: convs of level 0 and 1, tree depths of levels 2-5
        (DLA-34: (1, 1, 1, 2, 2, 1)).
      channels: six per-level widths (DLA-34: (16, 32, 64, 128, 256, 512)); the output
        has channels[2] features.
      deformable: DCNv2 in the neck (official); False uses plain 3x3 convs (ablation).
      dtype: computation dtype; params are `param_dtype` (float32).

    `__call__(images [B, H, W, 3] float, train: bool)` -> [features [B, H/4, W/4,
    channels[2]]] (one map, for one set of heads). H and W must be multiples of 32. In
    train mode BN uses batch statistics and updates `batch_stats` (apply with
    `mutable=['batch_stats']`).
    """

    levels: Sequence[int] = DLA_34["levels"]
    channels: Sequence[int] = DLA_34["channels"]
    deformable: bool = True
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        if len(self.levels) != 6 or len(self.channels) != 6:
            raise ValueError(
                f"DLA needs 6 levels and 6 channels, got levels={tuple(self.levels)} and "
                f"channels={tuple(self.channels)}")
        if any(int(v) < 1 for v in (*self.levels, *self.channels)):
            raise ValueError(
                f"DLA levels and channels must be positive, got levels={tuple(self.levels)} "
                f"and channels={tuple(self.channels)}")

    def check_input_shape(self, shape: Sequence[int]) -> None:
        """Raises ValueError unless `shape` is [B, H, W, C] with H, W multiples of 32."""
        h, w = image_hw(shape, "DLA")
        m = INPUT_MULTIPLE
        if h < 1 or w < 1 or h % m or w % m:
            raise ValueError(
                f"DLA needs input height and width that are multiples of {m} (five stride-2 "
                f"levels, then up-sampling back); got {h}x{w}. Pad the image, e.g. to "
                f"{padded_hw(h, w, m)}.")

    @nn.compact
    def __call__(self, images: Array, train: bool) -> list[Array]:
        self.check_input_shape(images.shape)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        levels = DLABase(tuple(self.levels), tuple(self.channels), name="base", **dt)(
            images, train)
        deep = levels[FIRST_LEVEL:]
        up = DLAUp(tuple(self.channels[FIRST_LEVEL:]), tuple(2**i for i in range(len(deep))),
                   self.deformable, name="dla_up", **dt)(deep, train)
        fused = IDAUp(int(self.channels[FIRST_LEVEL]),
                      tuple(2**i for i in range(LAST_LEVEL - FIRST_LEVEL)),
                      self.deformable, name="ida_up", **dt)(
            up[:LAST_LEVEL - FIRST_LEVEL], train)
        return [fused[-1]]


def dla_config(model_config: Any) -> dict[str, Any]:
    """`model_config.dla` (optional) with missing fields taken from DLA_34."""
    overrides = dict(model_config.get("dla", None) or {})
    unknown = set(overrides) - set(DLA_34)
    if unknown:
        raise ValueError(f"unknown model.dla fields {sorted(unknown)}; known: {sorted(DLA_34)}")
    return {**DLA_34, **overrides}


def build(model_config: Any, dtype: DType) -> DLA:
    """The DLA backbone described by `model_config.dla` (levels, channels, deformable)."""
    cfg = dla_config(model_config)
    if not isinstance(cfg["deformable"], (bool, np.bool_)):
        raise ValueError(f"model.dla.deformable must be a bool, got {cfg['deformable']!r}")
    return DLA(
        levels=tuple(int(v) for v in cfg["levels"]),
        channels=tuple(int(v) for v in cfg["channels"]),
        deformable=bool(cfg["deformable"]),
        dtype=dtype,
    )
