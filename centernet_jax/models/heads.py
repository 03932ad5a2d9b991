"""CenterNet prediction heads (one small conv net per output), described by `HeadSpec`s.

Each head is conv3x3(head_conv, bias) -> ReLU -> conv1x1(channels, bias), or a single
conv1x1(channels, bias) when `head_conv <= 0`. Padding is explicit and symmetric. A head may
read the features through a *pre-head module* (e.g. the corner and centre pools of Keypoint
Triplets, run once and shared by the heads that name it) instead of the raw features.

Parameter layout: `Heads` has one child per head, named by the head, whose children are
`conv3x3` and `conv1x1` (kernel HWIO, bias), plus one child per pre-head module, named by
its key. Official key mapping:

  ResNet / DLA:  <head>.0.{weight,bias}            -> <head>/conv3x3/{kernel,bias}
                 <head>.2.{weight,bias}            -> <head>/conv1x1/{kernel,bias}
  Hourglass:     <head>.<s>.0.conv.{weight,bias}   -> heads_<s>/<head>/conv3x3/{kernel,bias}
                 <head>.<s>.1.{weight,bias}        -> heads_<s>/<head>/conv1x1/{kernel,bias}
  (`heads_<s>` is the `Heads` module of stack s inside `CenterNet`; OIHW -> HWIO.)

Initialisation of the final conv, chosen by the task per head (`HeadSpec.init`):
* "heatmap": bias `hm_bias` = -2.19 ~= -log((1 - 0.1) / 0.1), so the initial sigmoid is
  ~0.1 (the focal-loss prior of CornerNet and CenterNet); flax default kernel init.
* "regression": normal(std 0.001) kernel, zero bias. This is the official ResNet/ResNet-DCN
  init; official DLA keeps torch's default kernel init and the official Hourglass torch's
  default init for all of it (it starts from a pretrained ExtremeNet checkpoint anyway).
Everything else (the 3x3 convs): flax defaults (lecun-normal kernel, zero bias).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from centernet_jax.models.layers import DType, conv2d

Array = jax.Array

HM_BIAS = -2.19
NON_HM_KERNEL_STD = 1e-3
HEAD_INITS = ("heatmap", "regression")
# A pre-head module factory: called as `factory(name=...)` inside `Heads`; the module maps
# features [B, H, W, C] to features [B, H, W, C'] (a linen Module class or a partial of one).
PreHeadFactory = Callable[..., nn.Module]


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One output head, as a task declares it.

    Attributes:
      channels: output channels (e.g. the class count of a heatmap, 2 for a size).
      init: "heatmap" (sigmoid outputs trained with the focal loss: prior bias) or
        "regression" (small normal kernel, zero bias); see the module docstring.
      pre: key of the pre-head module (in the `pre_heads` mapping given beside the heads)
        whose output this head reads, or None for the backbone's features.
    """

    channels: int
    init: str = "regression"
    pre: str | None = None

    @property
    def is_heatmap(self) -> bool:
        return self.init == "heatmap"


def validate_heads(heads: Mapping[str, HeadSpec],
                   pre_heads: Mapping[str, PreHeadFactory] | None = None) -> None:
    """Raises ValueError unless `heads` maps valid module names to well-formed `HeadSpec`s
    whose pre-head modules are all in `pre_heads` (and every pre-head module is used)."""
    pre_heads = pre_heads or {}
    if not heads:
        raise ValueError("heads must name at least one output, e.g. "
                         "{'heatmap': HeadSpec(80, init='heatmap')}")
    for name, spec in heads.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"head name must be a Python identifier, got {name!r}")
        if not isinstance(spec, HeadSpec):
            raise ValueError(f"head {name!r} must be a HeadSpec(channels, init=...), got "
                             f"{spec!r}")
        channels = spec.channels
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
            raise ValueError(f"head {name!r} needs a positive integer channel count, got {channels!r}")
        if spec.init not in HEAD_INITS:
            raise ValueError(f"head {name!r}: init must be one of {HEAD_INITS}, got {spec.init!r}")
        if spec.pre is not None and spec.pre not in pre_heads:
            raise ValueError(f"head {name!r} reads pre-head module {spec.pre!r}, which is not "
                             f"among the pre-head modules {sorted(pre_heads)}")
    unused = set(pre_heads) - {spec.pre for spec in heads.values()}
    if unused:
        raise ValueError(f"pre-head modules {sorted(unused)} are read by no head")
    clashes = set(pre_heads) & set(heads)
    if clashes:
        raise ValueError(f"names {sorted(clashes)} are both heads and pre-head modules")


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
      heads: head name -> `HeadSpec`, e.g. {'heatmap': HeadSpec(80, init='heatmap')}.
      pre_heads: pre-head module key -> factory (see `PreHeadFactory`); each runs once on
        the features, and the heads whose `HeadSpec.pre` names it read its output.
      head_conv: width of the 3x3 conv; <= 0 means a single 1x1 conv per head.
      hm_bias: initial bias of the final conv of "heatmap" heads.
      dtype: computation dtype (params are `param_dtype`).

    `__call__(features [B, H, W, C])` -> dict head name -> [B, H, W, channels] float32
    raw outputs (no sigmoid), in the order of `heads`.
    """

    heads: Mapping[str, HeadSpec]
    pre_heads: Mapping[str, PreHeadFactory] = dataclasses.field(default_factory=dict)
    head_conv: int = 256
    hm_bias: float = HM_BIAS
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        validate_heads(self.heads, self.pre_heads)

    @nn.compact
    def __call__(self, features: Array) -> dict[str, Array]:
        if features.ndim != 4:
            raise ValueError(f"Heads expect NHWC features [B, H, W, C], got shape {features.shape}")
        inputs = {None: features}
        for key, factory in self.pre_heads.items():
            inputs[key] = factory(name=key)(features)
        return {
            name: Head(
                channels=int(spec.channels),
                head_conv=self.head_conv,
                is_heatmap=spec.is_heatmap,
                hm_bias=self.hm_bias,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )(inputs[spec.pre])
            for name, spec in self.heads.items()
        }
