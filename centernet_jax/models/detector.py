"""The CenterNet detector: a backbone returning per-stack feature maps + heads per stack.

Parameter tree of `CenterNet(backbone=..., heads=...)`:

  params/backbone/...          the backbone's own tree (e.g. hourglass `kps_0/...`)
  params/heads_<s>/<head>/...  the `Heads` of stack s (see `heads.py`), separate per stack
  batch_stats/backbone/...     BatchNorm running statistics

Single-stack backbones (ResNet, DLA) return a one-element list and get only `heads_0`.
`hourglass_key_to_flax` maps official large-hourglass state-dict keys onto this tree.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from centernet_jax.models.heads import HM_BIAS, Heads, validate_heads
from centernet_jax.models.hourglass import HOURGLASS_104, Hourglass
from centernet_jax.models.layers import DType, parse_dtype

Array = jax.Array


class CenterNet(nn.Module):
    """Backbone + one `Heads` per backbone output (per hourglass stack).

    Attributes:
      backbone: linen module, `backbone(images, train=...)` -> list of feature maps
        [B, H/4, W/4, C] (one per stack; single-stack backbones return a 1-list).
      heads: head name -> channels, e.g. {'hm': 80, 'wh': 2, 'reg': 2}.
      head_conv: width of each head's 3x3 conv (<= 0: a single 1x1 conv).
      hm_bias: initial bias of the final conv of heads whose name contains "hm".
      dtype: computation dtype of the heads (the backbone has its own).

    `__call__(images [B, H, W, 3] float, train: bool)` -> list (one per stack, last =
    the one used at test time) of dicts head name -> [B, H/4, W/4, channels] float32
    raw logits (no sigmoid). With `train=True` apply with `mutable=['batch_stats']`.
    """

    backbone: nn.Module
    heads: Mapping[str, int]
    head_conv: int = 256
    hm_bias: float = HM_BIAS
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        validate_heads(self.heads)

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


def build_model(model_config: Any, heads: Mapping[str, int]) -> CenterNet:
    """Builds a `CenterNet` from an ml_collections ConfigDict (or any mapping-like config).

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
        head_conv=int(head_conv),
        hm_bias=HM_BIAS if hm_bias is None else float(hm_bias),
        dtype=dtype,
    )


# ----------------------------------------------------------------------------- key mapping

_HOURGLASS_BACKBONE_ROOTS = ("pre", "kps", "cnvs", "inters", "inters_", "cnvs_")
_HOURGLASS_HEAD_KEY = re.compile(
    r"^(?P<head>\w+?)\.(?P<stack>\d+)\.(?P<layer>0\.conv|1)\.(?P<leaf>weight|bias)$"
)
_BN_LEAVES = {"running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def hourglass_key_to_flax(key: str, ndim: int) -> tuple[str, tuple[str, ...]] | None:
    """Maps an official large-hourglass CenterNet state-dict key to (collection, path).

    `ndim` is the torch tensor's rank (4: conv weight -> `kernel`, transpose OIHW->HWIO;
    1: BN weight -> `scale`). Returns None for `num_batches_tracked`. A `module.` prefix
    is stripped. Backbone keys: every `.<i>` becomes `_<i>`, then dots become path
    separators, under `backbone`; head keys `<head>.<s>.0.conv.*` / `<head>.<s>.1.*` go to
    `heads_<s>/<head>/conv3x3` / `conv1x1`.

      kps.0.up1.0.conv1.weight  -> ('params', ('backbone', 'kps_0', 'up1_0', 'conv1', 'kernel'))
      inters_.0.1.running_mean  -> ('batch_stats', ('backbone', 'inters__0_1', 'mean'))
      hm.1.0.conv.bias          -> ('params', ('heads_1', 'hm', 'conv3x3', 'bias'))
    """
    key = key.removeprefix("module.")
    *parents, leaf = key.split(".")
    if leaf == "num_batches_tracked":
        return None
    root = parents[0] if parents else ""
    if root not in _HOURGLASS_BACKBONE_ROOTS:
        match = _HOURGLASS_HEAD_KEY.match(key)
        if match is None:
            raise ValueError(f"unrecognised hourglass key {key!r}")
        conv = "conv3x3" if match["layer"] == "0.conv" else "conv1x1"
        leaf = "kernel" if match["leaf"] == "weight" else "bias"
        return "params", (f"heads_{match['stack']}", match["head"], conv, leaf)
    path = re.sub(r"\.(\d+)", r"_\1", ".".join(parents)).split(".")
    if leaf in _BN_LEAVES:
        collection, name = _BN_LEAVES[leaf]
    elif leaf == "weight":
        collection, name = "params", ("kernel" if ndim == 4 else "scale")
    elif leaf == "bias":
        collection, name = "params", "bias"
    else:
        raise ValueError(f"unrecognised hourglass key {key!r}")
    return collection, ("backbone", *path, name)
