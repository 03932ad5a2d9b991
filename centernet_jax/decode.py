"""CenterNet peak decoding: 3x3 peak NMS, top-K, and boxes from centres and sizes.

`peak_mask` / `top_k` are the peak picker every task decodes with; `box_decode` turns peaks
plus size and offset maps into boxes (2D detection, and the box part of pose and 3D).

Official semantics (the official box decode and its `_nms`):

1. The caller applies sigmoid to the heatmap logits (no clamp at test time).
2. NMS keeps pixels equal to their 3x3 max-pool (stride 1, -inf padding); equal-valued
   plateaus all survive. Everything else becomes 0.
3. Top-K (K = 100) over all C * H * W scores. The official code takes a top-K per class and
   then over the C * K candidates; a single top-K is identical except for the order of
   exactly equal scores, which is implementation-defined in both (compare by score).
   K beyond the number of peaks yields score-0 entries.
4. centre = (x + offset_x, y + offset_y) with the offset read at the integer peak
   (+0.5 without an offset head); box = centre -/+ (w, h) / 2, in output-grid pixels.
5. No score threshold.

The back-transform to original-image pixels lives in `centernet_jax.affine`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = Any


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_k(k: Any, total: int) -> int:
    _check(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 1 <= k <= total,
           f"k must be an int in [1, H * W * C = {total}], got {k!r}")
    return int(k)


def _check_kernel(kernel: int) -> None:
    _check(isinstance(kernel, (int, np.integer)) and kernel >= 1 and kernel % 2 == 1,
           f"kernel must be a positive odd int, got {kernel!r}")


def peak_mask(heatmap: ArrayLike, kernel: int = 3) -> Array:
    """Where a pixel equals the max of its kernel x kernel neighbourhood (same channel).

    Args:
      heatmap: float [..., H, W, C] scores (NHWC, optional leading batch dims).
      kernel: static odd window size; stride 1, padding (kernel - 1) // 2 with -inf.

    Returns:
      bool [..., H, W, C]; plateaus of equal maxima are all True.
    """
    heatmap = jnp.asarray(heatmap)
    _check(heatmap.ndim >= 3, f"heatmap must be [..., H, W, C], got shape {heatmap.shape}")
    _check(jnp.issubdtype(heatmap.dtype, jnp.floating),
           f"heatmap must have a float dtype, got {heatmap.dtype}")
    _check_kernel(kernel)
    pad = (kernel - 1) // 2
    lead = heatmap.ndim - 3
    pooled = jax.lax.reduce_window(
        heatmap, jnp.array(-jnp.inf, heatmap.dtype), jax.lax.max,
        window_dimensions=(1,) * lead + (kernel, kernel, 1),
        window_strides=(1,) * heatmap.ndim,
        padding=((0, 0),) * lead + ((pad, pad), (pad, pad), (0, 0)))
    return pooled == heatmap


def nms_heatmap(heatmap: ArrayLike, kernel: int = 3) -> Array:
    """The official `_nms`: keeps local maxima (`peak_mask`), zeros elsewhere.

    Args / shapes as `peak_mask`; returns the heatmap's dtype and shape.
    """
    heatmap = jnp.asarray(heatmap)
    return jnp.where(peak_mask(heatmap, kernel), heatmap, jnp.zeros((), heatmap.dtype))


class TopK(NamedTuple):
    """Top-K entries of a [..., H, W, C] score map, best first.

    scores: [..., K], the map's dtype.
    index: int32 [..., K], flat spatial index y * W + x.
    classes: int32 [..., K], channel.
    ys, xs: int32 [..., K], integer peak row and column.
    """

    scores: Array
    index: Array
    classes: Array
    ys: Array
    xs: Array


def top_k(scores: ArrayLike, k: int) -> TopK:
    """Single top-K over all H * W * C entries of each [H, W, C] map.

    Equivalent to the official per-class-then-global top-K except for the order among
    exactly equal scores (implementation-defined). Leading batch dims are handled by
    `lax.top_k` directly (same as vmapping the per-image version).

    Args:
      scores: float [..., H, W, C].
      k: static int in [1, H * W * C].

    Raises:
      ValueError: if k is not in [1, H * W * C].
    """
    scores = jnp.asarray(scores)
    _check(scores.ndim >= 3, f"scores must be [..., H, W, C], got shape {scores.shape}")
    height, width, channels = scores.shape[-3:]
    total = height * width * channels
    k = _check_k(k, total)
    flat = scores.reshape(scores.shape[:-3] + (total,))
    values, flat_index = jax.lax.top_k(flat, k)
    flat_index = flat_index.astype(jnp.int32)
    spatial = flat_index // channels
    return TopK(scores=values, index=spatial, classes=flat_index % channels,
                ys=spatial // width, xs=spatial % width)


def _decode_image(heatmap: Array, size: Array, offset: Array | None, *, k: int):
    """One image: heatmap [H, W, C] probabilities, size/offset [H, W, 2]."""
    peaks = top_k(nms_heatmap(heatmap), k)
    size_k = size.reshape(-1, 2)[peaks.index]
    if offset is None:
        offset_k = jnp.full((k, 2), 0.5, jnp.float32)
    else:
        offset_k = offset.reshape(-1, 2)[peaks.index]
    center_x = peaks.xs.astype(jnp.float32) + offset_k[:, 0]
    center_y = peaks.ys.astype(jnp.float32) + offset_k[:, 1]
    half_w, half_h = size_k[:, 0] / 2, size_k[:, 1] / 2
    boxes = jnp.stack([center_x - half_w, center_y - half_h,
                       center_x + half_w, center_y + half_h], axis=-1)
    return {"boxes": boxes, "scores": peaks.scores, "classes": peaks.classes}


def box_decode(heatmap: ArrayLike, size: ArrayLike, offset: ArrayLike | None = None,
                 k: int = 100) -> dict[str, Array]:
    """Official box decode: NMS, top-K and boxes in output-grid pixels.

    Args:
      heatmap: float [B, H, W, C] class probabilities (sigmoid already applied).
      size: float [B, H, W, 2], (w, h) in output pixels.
      offset: float [B, H, W, 2] sub-pixel centre offsets (x, y), or None for +0.5.
      k: static number of detections per image, in [1, H * W * C].

    Returns:
      dict with boxes float32 [B, K, 4] (x1, y1, x2, y2), scores float32 [B, K] (best
      first, 0 for entries beyond the number of peaks), classes int32 [B, K].
      Jittable with static k; implemented per image and vmapped over the batch.
    """
    heatmap, size = jnp.asarray(heatmap), jnp.asarray(size)
    _check(heatmap.ndim == 4, f"heatmap must be [B, H, W, C], got shape {heatmap.shape}")
    _check(jnp.issubdtype(heatmap.dtype, jnp.floating),
           f"heatmap must have a float dtype, got {heatmap.dtype}")
    expected = heatmap.shape[:3] + (2,)
    _check(size.shape == expected, f"size must be [B, H, W, 2] = {expected}, got {size.shape}")
    if offset is not None:
        offset = jnp.asarray(offset)
        _check(offset.shape == expected,
               f"offset must be [B, H, W, 2] = {expected} or None, got {offset.shape}")
    total = heatmap.shape[1] * heatmap.shape[2] * heatmap.shape[3]
    k = _check_k(k, total)
    return _box_decode(heatmap, size, offset, k=k)


@functools.partial(jax.jit, static_argnames="k")
def _box_decode(heatmap, size, offset, *, k):
    heatmap = heatmap.astype(jnp.float32)
    size = size.astype(jnp.float32)
    if offset is not None:
        offset = offset.astype(jnp.float32)
    decode_image = functools.partial(_decode_image, k=k)
    return jax.vmap(decode_image)(heatmap, size, offset)
