"""CenterNet prediction heads (one small conv net per output, e.g. hm / wh / reg).

Each head is conv3x3(head_conv, bias) -> ReLU -> conv1x1(channels, bias), or a single
conv1x1(channels, bias) when `head_conv <= 0`. Padding is explicit and symmetric.

Parameter layout: `Heads` has one child per head, named by the head (`hm`, `wh`, ...),
whose children are `conv3x3` and `conv1x1` (kernel HWIO, bias). Official key mapping:

  ResNet / DLA:  <head>.0.{weight,bias}            -> <head>/conv3x3/{kernel,bias}
                 <head>.2.{weight,bias}            -> <head>/conv1x1/{kernel,bias}
  Hourglass:     <head>.<s>.0.conv.{weight,bias}   -> heads_<s>/<head>/conv3x3/{kernel,bias}
                 <head>.<s>.1.{weight,bias}        -> heads_<s>/<head>/conv1x1/{kernel,bias}
  (`heads_<s>` is the `Heads` module of stack s inside `CenterNet`; OIHW -> HWIO.)

Initialisation:
* Final conv of every head whose name contains "hm" (hm, hm_hp, hm_t, ...): bias
  `hm_bias` = -2.19 ~= -log((1 - 0.1) / 0.1), so the initial sigmoid is ~0.1; flax
  default kernel init.
* Final conv of the other heads: normal(std 0.001) kernel, zero bias. This is the
  official ResNet/ResNet-DCN init; official DLA keeps torch's default kernel init and the
  official Hourglass torch's default init for all of it (it starts from a pretrained
  ExtremeNet checkpoint anyway).
* Everything else (the 3x3 convs): flax defaults (lecun-normal kernel, zero bias).
"""

from __future__ import annotations

import numbers
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from centernet_jax.models.layers import DType, conv2d

Array = jax.Array

HM_BIAS = -2.19
NON_HM_KERNEL_STD = 1e-3


def is_heatmap_head(name: str) -> bool:
    """Heads whose name contains "hm" are heatmaps (sigmoid-focal) and get the -2.19 bias."""
    return "hm" in name


def validate_heads(heads: Mapping[str, int]) -> None:
    """Raises ValueError unless `heads` maps valid module names to positive channel counts."""
    if not heads:
        raise ValueError("heads must name at least one output, e.g. {'hm': 80, 'wh': 2, 'reg': 2}")
    for name, channels in heads.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"head name must be a Python identifier, got {name!r}")
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
            raise ValueError(f"head {name!r} needs a positive integer channel count, got {channels!r}")


class Head(nn.Module):
    """One head: [conv3x3(head_conv) -> ReLU ->] conv1x1(channels). See module docstring.

    Input [B, H, W, C] (any float dtype); output [B, H, W, channels] float32 raw logits.
    """

    channels: int
    head_conv: int
    is_heatmap: bool
    hm_bias: float = HM_BIAS
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.head_conv > 0:
            x = conv2d(self.head_conv, 3, use_bias=True, name="conv3x3", **dt)(x)
            x = nn.relu(x)
        if self.is_heatmap:
            init = dict(bias_init=nn.initializers.constant(self.hm_bias))
        else:
            init = dict(kernel_init=nn.initializers.normal(stddev=NON_HM_KERNEL_STD),
                        bias_init=nn.initializers.zeros)
        x = conv2d(self.channels, 1, use_bias=True, name="conv1x1", **init, **dt)(x)
        return x.astype(jnp.float32)


class Heads(nn.Module):
    """All heads on one feature map.

    Attributes:
      heads: head name -> output channels, e.g. {'hm': 80, 'wh': 2, 'reg': 2}.
      head_conv: width of the 3x3 conv; <= 0 means a single 1x1 conv per head.
      hm_bias: initial bias of the final conv of heads whose name contains "hm".
      dtype: computation dtype (params are `param_dtype`).

    `__call__(features [B, H, W, C])` -> dict head name -> [B, H, W, channels] float32
    raw outputs (no sigmoid), in the order of `heads`.
    """

    heads: Mapping[str, int]
    head_conv: int = 256
    hm_bias: float = HM_BIAS
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        validate_heads(self.heads)

    @nn.compact
    def __call__(self, features: Array) -> dict[str, Array]:
        if features.ndim != 4:
            raise ValueError(f"Heads expect NHWC features [B, H, W, C], got shape {features.shape}")
        return {
            name: Head(
                channels=int(channels),
                head_conv=self.head_conv,
                is_heatmap=is_heatmap_head(name),
                hm_bias=self.hm_bias,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )(features)
            for name, channels in self.heads.items()
        }
