"""CenterNet losses: the penalty-reduced focal loss and the masked L1 regression loss.

Both follow the official code exactly (`FocalLoss` / `_neg_loss` and `RegL1Loss`):

* `focal_loss`: pred = clip(sigmoid(logit), 1e-4, 1 - 1e-4), positives where the target
  heatmap is exactly 1, negatives where it is < 1, alpha = 2, beta = 4, normalised by the
  number of positives over the whole batch and all classes (unnormalised if there are
  none).
* `reg_l1_loss`: L1 between the prediction gathered at each object's index and its
  target, masked; normalised by (objects x channels) + 1e-4, i.e. a per-element mean.

Losses are computed in float32 whatever the input dtype, contain no collectives and no
Python branching on traced values, and return float32 scalars.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = Any

FOCAL_ALPHA = 2
FOCAL_BETA = 4
PROB_CLIP = 1e-4
L1_NORM_EPS = 1e-4


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def focal_loss(logits: ArrayLike, heatmap: ArrayLike) -> Array:
    """Official CenterNet (CornerNet) penalty-reduced pixel-wise focal loss.

    L = -(sum_pos (1 - p)^2 log p + sum_neg (1 - gt)^4 p^2 log(1 - p)) / max(N_pos, 1)
    with p = clip(sigmoid(logits), 1e-4, 1 - 1e-4). Positives: gt == 1 exactly;
    negatives: gt < 1; anything else (gt > 1) is ignored. N_pos counts positives over the
    whole batch and all classes; when it is 0 the positive sum is 0 too and the loss is
    the plain -sum_neg, as in the official `if num_pos == 0` branch. The clip zeroes the
    gradient of logits whose sigmoid falls outside [1e-4, 1 - 1e-4], like torch.clamp.

    Args:
      logits: float [B, H, W, C], raw heatmap-head outputs (any float dtype).
      heatmap: float [B, H, W, C], targets in [0, 1] with exact 1.0 at object centres.

    Returns:
      float32 scalar.
    """
    logits, heatmap = jnp.asarray(logits), jnp.asarray(heatmap)
    _check(logits.ndim == 4, f"logits must be [B, H, W, C], got shape {logits.shape}")
    _check(heatmap.shape == logits.shape,
           f"heatmap shape {heatmap.shape} must equal logits shape {logits.shape}")
    _check(jnp.issubdtype(logits.dtype, jnp.floating),
           f"logits must have a float dtype, got {logits.dtype}")
    return _focal_loss(logits, heatmap)


@jax.jit
def _focal_loss(logits: Array, heatmap: Array) -> Array:
    logits = logits.astype(jnp.float32)
    heatmap = heatmap.astype(jnp.float32)
    # log of the clipped probability (not log_sigmoid): the clip defines both the loss
    # value and the zero gradient outside the range.
    pred = jnp.clip(jax.nn.sigmoid(logits), PROB_CLIP, 1.0 - PROB_CLIP)
    positive = heatmap == 1.0
    negative = heatmap < 1.0
    pos_loss = jnp.where(positive, jnp.log(pred) * jnp.square(1.0 - pred), 0.0)
    neg_weight = jnp.power(1.0 - heatmap, FOCAL_BETA)
    neg_loss = jnp.where(negative, jnp.log(1.0 - pred) * jnp.square(pred) * neg_weight, 0.0)
    num_pos = jnp.sum(positive, dtype=jnp.float32)
    return -(jnp.sum(pos_loss) + jnp.sum(neg_loss)) / jnp.maximum(num_pos, 1.0)


def gather_at_index(feature_map: ArrayLike, index: ArrayLike) -> Array:
    """Reads a NHWC map at flat spatial indices.

    Args:
      feature_map: [B, H, W, D].
      index: int [B, N], row-major y * W + x, in [0, H * W). Out-of-range indices are
        clamped (no NaN fill), so padded slots may hold any in-range value such as 0.

    Returns:
      [B, N, D], feature_map[b, index // W, index % W, :], dtype of feature_map.
    """
    feature_map, index = jnp.asarray(feature_map), jnp.asarray(index)
    _check(feature_map.ndim == 4,
           f"feature_map must be [B, H, W, D], got shape {feature_map.shape}")
    _check(index.ndim == 2 and index.shape[0] == feature_map.shape[0],
           f"index must be [B, N] with B = {feature_map.shape[0]}, got shape {index.shape}")
    _check(jnp.issubdtype(index.dtype, jnp.integer), f"index must be integer, got {index.dtype}")
    batch, height, width, depth = feature_map.shape
    flat = feature_map.reshape(batch, height * width, depth)
    return jnp.take_along_axis(flat, index.astype(jnp.int32)[..., None], axis=1, mode="clip")


def reg_l1_loss(pred: ArrayLike, index: ArrayLike, mask: ArrayLike, target: ArrayLike) -> Array:
    """Official RegL1Loss / RegWeightedL1Loss: masked L1 at the object indices.

    loss = sum |pred_k * m - target_k * m| / (sum(m broadcast to [B, N, D]) + 1e-4)

    The normaliser counts objects x channels: one object with |error| = 1 in both
    coordinates of a 2-channel head gives 1.0.

    Args:
      pred: float [B, H, W, D], a regression head output (NHWC).
      index: int [B, N], y * W + x of each slot (any in-range value for padded slots).
      mask: bool/float [B, N] (per object, RegL1Loss) or [B, N, D] (per channel,
        RegWeightedL1Loss, e.g. pose joints).
      target: float [B, N, D].

    Returns:
      float32 scalar.
    """
    pred, index = jnp.asarray(pred), jnp.asarray(index)
    mask, target = jnp.asarray(mask), jnp.asarray(target)
    _check(pred.ndim == 4, f"pred must be [B, H, W, D], got shape {pred.shape}")
    _check(jnp.issubdtype(pred.dtype, jnp.floating),
           f"pred must have a float dtype, got {pred.dtype}")
    batch, depth = pred.shape[0], pred.shape[-1]
    _check(index.ndim == 2 and index.shape[0] == batch,
           f"index must be [B, N] with B = {batch}, got shape {index.shape}")
    num_slots = index.shape[1]
    _check(target.shape == (batch, num_slots, depth),
           f"target must be [B, N, D] = {(batch, num_slots, depth)}, got {target.shape}")
    _check(mask.shape in ((batch, num_slots), (batch, num_slots, depth)),
           f"mask must be [B, N] = {(batch, num_slots)} or [B, N, D] = "
           f"{(batch, num_slots, depth)}, got {mask.shape}")

    return _reg_l1_loss(pred, index, mask, target)


@jax.jit
def _reg_l1_loss(pred: Array, index: Array, mask: Array, target: Array) -> Array:
    gathered = gather_at_index(pred, index).astype(jnp.float32)
    weights = mask.astype(jnp.float32)
    if weights.ndim == 2:
        weights = weights[..., None]
    weights = jnp.broadcast_to(weights, gathered.shape)
    target = target.astype(jnp.float32)
    error = jnp.sum(jnp.abs(gathered * weights - target * weights))
    return error / (jnp.sum(weights) + L1_NORM_EPS)
