"""The CenterNet detector: a backbone returning per-stack feature maps + heads per stack.

Parameter tree of `CenterNet(backbone=..., heads=...)`:

  params/backbone/...          the backbone's own tree (e.g. hourglass `kps_0/...`)
  params/heads_<s>/<head>/...  the `Heads` of stack s (see `heads.py`), separate per stack
  batch_stats/backbone/...     BatchNorm running statistics

Single-stack backbones (ResNet, DLA) return a one-element list and get only `heads_0`.
`convert.official_key_to_flax` maps official state-dict keys onto this tree.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from centernet_jax.models import dla, resnet
from centernet_jax.models.heads import HM_BIAS, Heads, HeadSpec, PreHeadFactory, validate_heads
from centernet_jax.models.hourglass import HOURGLASS_104, Hourglass
from centernet_jax.models.layers import DType, parse_dtype

Array = jax.Array


class CenterNet(nn.Module):
    """Backbone + one `Heads` per backbone output (per hourglass stack).

    Attributes:
      backbone: linen module, `backbone(images, train=...)` -> list of feature maps
        [B, H/4, W/4, C] (one per stack; single-stack backbones return a 1-list).
      heads: head name -> `HeadSpec` (channels, init, pre-head module), as the task
        declares them.
      pre_heads: pre-head module key -> factory (see `heads.Heads`).
      head_conv: width of each head's 3x3 conv (<= 0: a single 1x1 conv).
      hm_bias: initial bias of the final conv of "heatmap" heads.
      dtype: computation dtype of the heads (the backbone has its own).

    `__call__(images [B, H, W, 3] float, train: bool)` -> list (one per stack, last =
    the one used at test time) of dicts head name -> [B, H/4, W/4, channels] float32
    raw logits (no sigmoid). With `train=True` apply with `mutable=['batch_stats']`.
    """

    backbone: nn.Module
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
    def __call__(self, images: Array, train: bool) -> list[dict[str, Array]]:
        if images.ndim != 4:
            raise ValueError(f"CenterNet expects NHWC images [B, H, W, C], got shape {images.shape}")
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise ValueError(f"CenterNet expects normalised float images, got dtype {images.dtype}")
        features = self.backbone(images, train=train)
        return [
            Heads(
                heads=self.heads,
                pre_heads=self.pre_heads,
                head_conv=self.head_conv,
                hm_bias=self.hm_bias,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"heads_{s}",
            )(feature)
            for s, feature in enumerate(features)
        ]


# ----------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class BackboneEntry:
    """How to build a backbone from `model_config`, and its official default head width."""

    build: Callable[[Any, jnp.dtype], nn.Module]
    default_head_conv: Callable[[Any], int]


BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, build: Callable[[Any, jnp.dtype], nn.Module],
                      default_head_conv: int | Callable[[Any], int]) -> None:
    """Registers `build(model_config, dtype) -> backbone module` under `name`.

    `default_head_conv` (an int, or a function of `model_config`) is the head width used
    when the config sets none: officially 64 for ResNets, 256 for DLA, cnv_dim for the
    hourglass.
    """
    if callable(default_head_conv):
        head_conv_fn = default_head_conv
    else:
        width = int(default_head_conv)
        head_conv_fn = lambda model_config: width  # noqa: E731
    BACKBONES[name] = BackboneEntry(build=build, default_head_conv=head_conv_fn)


def _hourglass_config(model_config: Any) -> dict[str, Any]:
    """`model_config.hourglass` (optional) with missing fields taken from HOURGLASS_104."""
    overrides = dict(model_config.get("hourglass", None) or {})
    unknown = set(overrides) - set(HOURGLASS_104)
    if unknown:
        raise ValueError(
            f"unknown model.hourglass fields {sorted(unknown)}; known: {sorted(HOURGLASS_104)}"
        )
    return {**HOURGLASS_104, **overrides}


def _build_hourglass(model_config: Any, dtype: jnp.dtype) -> Hourglass:
    cfg = _hourglass_config(model_config)
    return Hourglass(
        num_stacks=int(cfg["num_stacks"]),
        depth=int(cfg["depth"]),
        dims=tuple(int(d) for d in cfg["dims"]),
        modules=tuple(int(m) for m in cfg["modules"]),
        pre_width=int(cfg["pre_width"]),
        cnv_dim=int(cfg["cnv_dim"]),
        dtype=dtype,
    )


# The official hourglass ignores --head_conv: its heads are always cnv_dim (256) wide.
register_backbone(
    "hourglass",
    _build_hourglass,
    default_head_conv=lambda model_config: int(_hourglass_config(model_config)["cnv_dim"]),
)

# Official head widths: 64 for every ResNet (with or without DCN), 256 for DLA.
register_backbone("resnet", resnet.build, default_head_conv=64)
register_backbone("dla", dla.build, default_head_conv=256)


def build_model(model_config: Any, heads: Mapping[str, HeadSpec],
                pre_heads: Mapping[str, PreHeadFactory] | None = None) -> CenterNet:
    """Builds a `CenterNet` from an ml_collections ConfigDict (or any mapping-like config).

    `heads` and `pre_heads` come from the task (`Task.heads`, `Task.pre_heads`).

    Reads `model_config.backbone` (a key of `BACKBONES`), the backbone's own sub-config
    (e.g. `model_config.hourglass`), optional `head_conv` (default: the backbone's
    official width, cnv_dim for the hourglass), optional `hm_bias` (-2.19) and optional
    `dtype` ('float32' / 'bfloat16' / 'float16'; params stay float32).
    """
    name = model_config.get("backbone", None)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {sorted(BACKBONES)}")
    entry = BACKBONES[name]
    dtype = parse_dtype(model_config.get("dtype", None) or "float32")
    head_conv = model_config.get("head_conv", None)
    if head_conv is None:
        head_conv = entry.default_head_conv(model_config)
    hm_bias = model_config.get("hm_bias", None)
    return CenterNet(
        backbone=entry.build(model_config, dtype),
        heads=dict(heads),
        pre_heads=dict(pre_heads or {}),
        head_conv=int(head_conv),
        hm_bias=HM_BIAS if hm_bias is None else float(hm_bias),
        dtype=dtype,
    )
