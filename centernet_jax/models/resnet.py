"""ResNet backbones of CenterNet: `res_<depth>` (msra SimpleBaseline) and `resdcn_<depth>`.

Structure (official `msra_resnet.py` / `resnet_dcn.py` semantics, NHWC):

  conv1 7x7 s2 (base_width) -> bn1 -> ReLU -> maxpool 3x3 s2 p1 (-inf padding)      # /4
  layer1..layer4: residual blocks at widths base_width * (1, 2, 4, 8), the first block
    of layer2..4 with stride 2                                                      # /32
  neck: three x2 upsampling stages                                                  # /4
    deformable=False ("res_*"):  ConvTranspose 4x4 s2 p1 (no bias) -> BN -> ReLU
    deformable=True ("resdcn_*"): DCNv2 3x3 (bias) -> BN -> ReLU
                                  -> ConvTranspose 4x4 s2 p1 (no bias) -> BN -> ReLU

Blocks are torchvision's: BasicBlock (two 3x3 convs) for depths 18/34, Bottleneck
(1x1 -> 3x3 -> 1x1, x4 expansion, stride on the 3x3 conv, "ResNet v1.5") for 50/101/152.
A block's skip is `downsample` = 1x1 conv (with the block's stride) + BN when the stride
or the width changes, the identity otherwise.

Parameter naming (official key -> flax path under `backbone/`, see detector.py):

  conv1.weight                         -> conv1/kernel
  layer1.0.bn2.running_var             -> layer1_0/bn2/var          (batch_stats)
  layer2.0.downsample.0.weight         -> layer2_0/downsample_0/kernel
  deconv_layers.3.weight               -> deconv_layers_3/kernel    (ConvTranspose2d)
  deconv_layers.0.conv_offset_mask.bias -> deconv_layers_0/conv_offset_mask/bias  (DCN)

The neck is one official `nn.Sequential`, so its indices count the ReLUs too: without DCN
stage s is `deconv_layers_{3s}` (up) and `_{3s+1}` (BN); with DCN `_{6s}` (DCN),
`_{6s+1}` (BN), `_{6s+3}` (up), `_{6s+4}` (BN).

Transposed convolutions take the torch ConvTranspose2d weight (C_in, C_out, k, k)
transposed by (2, 3, 1, 0), i.e. a `kernel` of shape [k, k, C_out, C_in], like every
other converted kernel.
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

# depth -> (bottleneck blocks?, blocks per layer), as torchvision / the official resnet_spec.
RESNET_SPECS: dict[int, tuple[bool, tuple[int, int, int, int]]] = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}
BOTTLENECK_EXPANSION = 4
# Official neck widths: msra's three 256-wide deconvs; resnet_dcn's 256, 128, 64 stages.
MSRA_DECONV_WIDTHS = (256, 256, 256)
DCN_DECONV_WIDTHS = (256, 128, 64)
NUM_UPSAMPLING_STAGES = 3  # /32 -> /4
INPUT_MULTIPLE = 32  # the stride of layer4

# Fields of `model_config.resnet`; `deconv_widths=None` takes the official widths of the
# chosen neck. Official `resdcn_18` (the official COCO ResNet-18 + DCN model) when nothing is set.
RESNET_DEFAULTS: dict[str, Any] = dict(
    depth=18,
    deformable=True,
    base_width=64,
    deconv_widths=None,
)

# Official init of the msra deconvs: normal(std 0.001).
MSRA_DECONV_STD = 1e-3


def official_deconv_widths(deformable: bool) -> tuple[int, int, int]:
    return DCN_DECONV_WIDTHS if deformable else MSRA_DECONV_WIDTHS


def output_size(size: int) -> int:
    """Torch's output size of the whole backbone: 8 * ceil(size / 32).

    Every stride-2 layer (7x7 p3, max-pool 3x3 p1, 3x3 p1, 1x1) maps n to ceil(n / 2), and
    each 4x4 s2 p1 transposed conv maps n to 2n.
    """
    return 8 * -(-size // INPUT_MULTIPLE)


def torch_default_deconv_init() -> nn.initializers.Initializer:
    """torch's default ConvTranspose2d init, U(+-1/sqrt(C_out * k * k)), for [k, k, C_out, C_in].

    torch computes the fan-in of a (C_in, C_out, k, k) transposed-conv weight from dim 1.
    """
    return nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=-2, out_axis=-1)


def bilinear_kernel(size: int) -> np.ndarray:
    """[size, size] separable bilinear upsampling kernel (tent), as the official fill_up_weights."""
    f = math.ceil(size / 2)
    center = (2 * f - 1 - f % 2) / (2.0 * f)
    tent = 1.0 - np.abs(np.arange(size) / f - center)
    return np.outer(tent, tent)


def resdcn_up_init(key: Array, shape: Sequence[int], dtype: DType = jnp.float32) -> Array:
    """Official init of the resnet_dcn upsampling deconv, kernel [k, k, C_out, C_in].

    The official `fill_up_weights` was written for depthwise deconvs; applied to these
    dense ones it gives only output channel 0 the bilinear kernel (from every input
    channel), while channels 1.. keep torch's default init.
    """
    kernel = torch_default_deconv_init()(key, shape, dtype)
    bilinear = jnp.asarray(bilinear_kernel(shape[0]), dtype)
    return kernel.at[:, :, 0, :].set(bilinear[:, :, None])


def conv_transpose_by_phases(x: Array, kernel: Array, strides: int, padding: int) -> Array:
    """torch ConvTranspose2d (output_padding 0, no bias) as a conv + depth-to-space.

    Args:
      x: [B, H, W, C_in].
      kernel: [k, k, C_out, C_in] (the torch weight transposed by (2, 3, 1, 0)).
      strides, padding: as in torch, 0 <= padding <= k - 1.

    Returns:
      [B, (H - 1) * s - 2p + k, (W - 1) * s - 2p + k, C_out].
    """
    k, _, c_out, c_in = kernel.shape
    s = strides
    taps = -(-k // s)  # m ranges over ceil(k / s) taps per phase
    b, h, w, _ = x.shape
    # [k, k, O, I] -> zero-pad to s * taps -> [m_h, r_h, m_w, r_w, O, I] (a = s * m + r).
    kernel = jnp.pad(kernel, ((0, s * taps - k), (0, s * taps - k), (0, 0), (0, 0)))
    kernel = kernel.reshape(taps, s, taps, s, c_out, c_in)
    # full_r[j] = sum_m x[j - m] w[s m + r] is a correlation with m reversed.
    kernel = kernel[::-1, :, ::-1]
    kernel = kernel.transpose(0, 2, 5, 1, 3, 4).reshape(taps, taps, c_in, s * s * c_out)
    # Padding explicitly and convolving 'VALID' is ~10x faster on XLA:CPU (fwd + bwd) than
    # a padded conv with an even kernel, which takes a slow generic path.
    x = jnp.pad(x, ((0, 0), (taps - 1, taps - 1), (taps - 1, taps - 1), (0, 0)))
    phases = jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    hp, wp = h + taps - 1, w + taps - 1
    full = phases.reshape(b, hp, wp, s, s, c_out).transpose(0, 1, 3, 2, 4, 5)
    full = full.reshape(b, hp * s, wp * s, c_out)
    out_h, out_w = (h - 1) * s - 2 * padding + k, (w - 1) * s - 2 * padding + k
    return full[:, padding:padding + out_h, padding:padding + out_w]


class ConvTranspose2d(nn.Module):
    """torch `ConvTranspose2d(C_in, features, k, stride, padding, bias=False)`, NHWC.

    `kernel` is [k, k, features, C_in]: the torch weight (C_in, features, k, k) transposed
    by (2, 3, 1, 0). Output size (H - 1) * stride - 2 * padding + k (output_padding 0);
    2H for the 4x4 s2 p1 upsamplers here.

    torch's definition: full[i * stride + a] += x[i] @ w[a], out = full[padding:-padding].
    Writing a = stride * m + r splits `full` into stride x stride phases r, each a plain
    stride-1 convolution of x with the taps w[stride * m + r] (m flipped), so the layer is
    one ordinary conv to stride^2 * C_out channels followed by depth-to-space. This equals
    `lax.conv_transpose(..., transpose_kernel=True)` but avoids its input-dilated
    convolution, whose gradient is ~40x slower on XLA:CPU.
    """

    features: int
    kernel_size: int = 4
    strides: int = 2
    padding: int = 1
    use_bias: bool = False
    kernel_init: nn.initializers.Initializer = torch_default_deconv_init()
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, self.features, x.shape[-1]),
                            self.param_dtype)
        y = conv_transpose_by_phases(x.astype(self.dtype), kernel.astype(self.dtype),
                                     self.strides, self.padding)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class BasicBlock(nn.Module):
    """torchvision BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x)).

    Submodules `conv1` (3x3, stride), `bn1`, `conv2` (3x3), `bn2`, and `downsample_0`
    (1x1 conv, stride) / `downsample_1` (BN) when the stride or width changes.
    Input [B, H, W, C]; output [B, ceil(H / strides), ceil(W / strides), planes].
    """

    planes: int
    strides: int = 1
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = conv2d(self.planes, 3, strides=self.strides, use_bias=False, name="conv1", **dt)(x)
        y = nn.relu(batch_norm(train, name="bn1", **dt)(y))
        y = conv2d(self.planes, 3, use_bias=False, name="conv2", **dt)(y)
        y = batch_norm(train, name="bn2", **dt)(y)
        return nn.relu(y + _skip(x, self.planes, self.strides, train, dt))


class Bottleneck(nn.Module):
    """torchvision Bottleneck (stride on the 3x3 conv), output width 4 * planes.

    relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + downsample(x)) with conv1 1x1,
    conv2 3x3 (stride), conv3 1x1. Input [B, H, W, C]; output
    [B, ceil(H / strides), ceil(W / strides), 4 * planes].
    """

    planes: int
    strides: int = 1
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = conv2d(self.planes, 1, use_bias=False, name="conv1", **dt)(x)
        y = nn.relu(batch_norm(train, name="bn1", **dt)(y))
        y = conv2d(self.planes, 3, strides=self.strides, use_bias=False, name="conv2", **dt)(y)
        y = nn.relu(batch_norm(train, name="bn2", **dt)(y))
        width = self.planes * BOTTLENECK_EXPANSION
        y = conv2d(width, 1, use_bias=False, name="conv3", **dt)(y)
        y = batch_norm(train, name="bn3", **dt)(y)
        return nn.relu(y + _skip(x, width, self.strides, train, dt))


def _skip(x: Array, width: int, strides: int, train: bool, dt: dict[str, Any]) -> Array:
    """The block's `downsample` (1x1 conv + BN) when shape changes, else the identity.

    Called inside a block's compact `__call__`, so the modules become its children.
    """
    if strides == 1 and x.shape[-1] == width:
        return x.astype(dt["dtype"])
    skip = conv2d(width, 1, strides=strides, use_bias=False, name="downsample_0", **dt)(x)
    return batch_norm(train, name="downsample_1", **dt)(skip)


class ResNet(nn.Module):
    """CenterNet's ResNet backbone with its upsampling neck, output stride 4.

    Attributes:
      depth: 18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck).
      deformable: True for `resdcn_*` (DCNv2 + deconv stages), False for the msra
        `res_*` (deconv-only stages).
      base_width: stem width; layer widths are base_width * (1, 2, 4, 8) (x4 for
        Bottleneck outputs). 64 officially; smaller values give demo-sized models.
      deconv_widths: widths of the three upsampling stages; the last one is the heads'
        input width. Officially (256, 256, 256) without DCN, (256, 128, 64) with DCN.
      dtype: computation dtype; params are `param_dtype` (float32).

    `__call__(images [B, H, W, C] float, train: bool)` -> [features [B, H/4, W/4,
    deconv_widths[-1]] in `dtype`] (a one-element list, like a one-stack hourglass).
    H and W must be multiples of 32 (or up to 3 below one; see `check_input_shape`).
    In train mode BN uses batch statistics and updates `batch_stats`.
    """

    depth: int = 18
    deformable: bool = True
    base_width: int = 64
    deconv_widths: Sequence[int] = DCN_DECONV_WIDTHS
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        if self.depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {self.depth}")
        if self.base_width < 1:
            raise ValueError(f"base_width must be positive, got {self.base_width}")
        if len(self.deconv_widths) != NUM_UPSAMPLING_STAGES or any(
                int(w) < 1 for w in self.deconv_widths):
            raise ValueError(
                f"deconv_widths needs {NUM_UPSAMPLING_STAGES} positive widths (/32 -> /4), "
                f"got {tuple(self.deconv_widths)}")

    def check_input_shape(self, shape: Sequence[int]) -> None:
        """Raises ValueError unless `shape` is [B, H, W, C] with output [ceil(H/4), ceil(W/4)].

        The network's output is 8 * ceil(H / 32) (torch arithmetic), which equals
        ceil(H / 4) exactly for H a multiple of 32 or up to 3 below one.
        """
        h, w = image_hw(shape, "ResNet")
        if min(h, w) < 1 or output_size(h) != -(-h // 4) or output_size(w) != -(-w // 4):
            m = INPUT_MULTIPLE
            raise ValueError(
                f"ResNet needs input height and width that are multiples of {m} (the stride of "
                f"layer4); got {h}x{w}. Pad the image, e.g. to {padded_hw(h, w, m)}.")

    @nn.compact
    def __call__(self, images: Array, train: bool) -> list[Array]:
        self.check_input_shape(images.shape)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        bottleneck, blocks_per_layer = RESNET_SPECS[self.depth]
        block_cls = Bottleneck if bottleneck else BasicBlock

        x = conv2d(self.base_width, 7, strides=2, use_bias=False, name="conv1", **dt)(images)
        x = nn.relu(batch_norm(train, name="bn1", **dt)(x))
        # flax pads max-pool windows with -inf, as torch does.
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        for layer, num_blocks in enumerate(blocks_per_layer):
            planes = self.base_width * 2**layer
            for b in range(num_blocks):
                strides = 2 if layer > 0 and b == 0 else 1
                x = block_cls(planes, strides=strides, name=f"layer{layer + 1}_{b}", **dt)(
                    x, train)

        # Indices of the official nn.Sequential (ReLUs take an index but have no params).
        modules_per_stage = 6 if self.deformable else 3
        for stage, width in enumerate(self.deconv_widths):
            index = stage * modules_per_stage
            if self.deformable:
                x = DeformableConv(int(width), kernel_size=3, use_bias=True,
                                   name=f"deconv_layers_{index}", **dt)(x)
                x = nn.relu(batch_norm(train, name=f"deconv_layers_{index + 1}", **dt)(x))
                index += 3
                up_init = resdcn_up_init
            else:
                up_init = nn.initializers.normal(MSRA_DECONV_STD)
            x = ConvTranspose2d(int(width), kernel_size=4, strides=2, padding=1,
                                kernel_init=up_init, name=f"deconv_layers_{index}", **dt)(x)
            x = nn.relu(batch_norm(train, name=f"deconv_layers_{index + 1}", **dt)(x))
        return [x]


def resnet_config(model_config: Any) -> dict[str, Any]:
    """`model_config.resnet` (optional) with missing fields taken from RESNET_DEFAULTS.

    `deconv_widths` left unset (or None) takes the official widths of the chosen neck.
    """
    overrides = dict(model_config.get("resnet", None) or {})
    unknown = set(overrides) - set(RESNET_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown model.resnet fields {sorted(unknown)}; known: {sorted(RESNET_DEFAULTS)}")
    cfg = {**RESNET_DEFAULTS, **overrides}
    if not isinstance(cfg["deformable"], (bool, np.bool_)):
        raise ValueError(f"model.resnet.deformable must be a bool, got {cfg['deformable']!r}")
    if cfg["deconv_widths"] is None:
        cfg["deconv_widths"] = official_deconv_widths(bool(cfg["deformable"]))
    return cfg


def build(model_config: Any, dtype: jnp.dtype) -> ResNet:
    """The ResNet backbone described by `model_config.resnet` (see RESNET_DEFAULTS)."""
    cfg = resnet_config(model_config)
    return ResNet(
        depth=int(cfg["depth"]),
        deformable=bool(cfg["deformable"]),
        base_width=int(cfg["base_width"]),
        deconv_widths=tuple(int(w) for w in cfg["deconv_widths"]),
        dtype=dtype,
    )
