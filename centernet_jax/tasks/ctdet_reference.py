"""NumPy transcriptions of the official ctdet host code: per-object target drawing and the
decode.

Baselines, not used for training or inference: the benchmarks time them against the task's
jitted renderer and decode (`CtdetTask.targets`, `CtdetTask.decode`) after checking that
both agree (`check_targets`, `check_decode`). They follow the official loader and decode
step by step.

Targets, per object, in annotation order (only the first ``max_objects`` are looked at):

1. x is clipped to [0, W - 1] and y to [0, H - 1] (output-grid pixels);
2. the object is skipped unless the clipped w > 0 and h > 0 (and its class is in range;
   the device renderer treats an out-of-range class like a masked slot);
3. radius = max(0, int(gaussian_radius(ceil(h), ceil(w)))), CornerNet's formula with its
   typo (``targets.gaussian_radius`` on Python numbers evaluates it in float64);
4. centre = clipped-box centre in float32, truncated to int for the peak;
5. a (2r + 1)^2 Gaussian, sigma = (2r + 1) / 6, values below float64 eps * max cut to 0, is
   computed for this object and max-combined into its class channel, clipped at the borders;
6. slot k gets wh = (w, h), ind = y * W + x, reg = centre - truncated centre, reg_mask = 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import numpy as np

from centernet_jax import targets as targets_lib

# The arrays the official loader hands to the trainer besides the image, with its dtypes
# (default options: no dense or class-specific wh, offset regression on).
OFFICIAL_TARGET_FIELDS = ("hm", "wh", "reg", "ind", "reg_mask")

# Agreement the baselines must reach before they are timed. Both sides are float32; the
# reference Gaussian is float64 rounded into a float32 map, the JAX one float32 throughout.
SCORE_TOLERANCE = 1e-6
HEATMAP_TOLERANCE = 1e-6
BOX_TOLERANCE = 1e-4


def gaussian_kernel(radius: int) -> np.ndarray:
    """float64 [2r + 1, 2r + 1] umich Gaussian, peak exactly 1 at the centre."""
    diameter = 2 * radius + 1
    sigma = diameter / 6.0
    steps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(steps[:, None] ** 2 + steps[None, :] ** 2) / (2.0 * sigma * sigma))
    kernel[kernel < np.finfo(np.float64).eps * kernel.max()] = 0.0
    return kernel


def draw_gaussian(heatmap: np.ndarray, center_x: int, center_y: int, radius: int) -> None:
    """Max-combines ``gaussian_kernel(radius)`` centred at (center_x, center_y) into
    ``heatmap`` float32 [H, W], in place; the window is clipped at the borders."""
    kernel = gaussian_kernel(radius)
    height, width = heatmap.shape
    left, right = min(center_x, radius), min(width - center_x, radius + 1)
    top, bottom = min(center_y, radius), min(height - center_y, radius + 1)
    window = heatmap[center_y - top:center_y + bottom, center_x - left:center_x + right]
    patch = kernel[radius - top:radius + bottom, radius - left:radius + right]
    if window.size and patch.size:
        np.maximum(window, patch, out=window)


def image_targets(boxes: np.ndarray, classes: np.ndarray, mask: np.ndarray | None = None,
                         *, num_classes: int, output_hw: tuple[int, int], max_objects: int,
                         min_overlap: float = 0.7) -> dict[str, np.ndarray]:
    """One image's official 2D detection targets, with the official names and dtypes.

    Args:
      boxes: float [n, 4], (x1, y1, x2, y2) in output-grid pixels, not clipped.
      classes: int [n], class ids.
      mask: bool [n] or None (all True): slots holding real objects.
      num_classes: C, heatmap channels.
      output_hw: (H, W) of the output grid.
      max_objects: M, slots; objects beyond the first M are not looked at.
      min_overlap: IoU of the Gaussian radius (0.7).

    Returns:
      hm float32 [C, H, W] (channel-major, as the official loader builds it), wh float32
      [M, 2] (w, h), reg float32 [M, 2] (centre offset in [0, 1)), ind int64 [M]
      (y * W + x), reg_mask uint8 [M]. Unused and degenerate slots hold zeros.
    """
    height, width = output_hw
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    mask = np.ones(len(boxes), bool) if mask is None else np.asarray(mask).reshape(-1)
    if not len(boxes) == len(classes) == len(mask):
        raise ValueError(f"boxes {boxes.shape}, classes {classes.shape} and mask {mask.shape} "
                         "disagree in n")
    heatmap = np.zeros((num_classes, height, width), np.float32)
    size = np.zeros((max_objects, 2), np.float32)
    offset = np.zeros((max_objects, 2), np.float32)
    index = np.zeros((max_objects,), np.int64)
    reg_mask = np.zeros((max_objects,), np.uint8)
    for k in range(min(len(boxes), max_objects)):
        label = int(classes[k])
        if not mask[k] or not 0 <= label < num_classes:
            continue
        box = boxes[k].copy()
        box[[0, 2]] = np.clip(box[[0, 2]], 0, width - 1)
        box[[1, 3]] = np.clip(box[[1, 3]], 0, height - 1)
        box_h, box_w = box[3] - box[1], box[2] - box[0]
        if not (box_h > 0 and box_w > 0):  # also skips NaN boxes
            continue
        radius = max(0, int(targets_lib.gaussian_radius(math.ceil(box_h), math.ceil(box_w),
                                                        min_overlap)))
        center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
        center_int = center.astype(np.int32)
        draw_gaussian(heatmap[label], int(center_int[0]), int(center_int[1]), radius)
        size[k] = box_w, box_h
        index[k] = center_int[1] * width + center_int[0]
        offset[k] = center - center_int
        reg_mask[k] = 1
    return {"hm": heatmap, "wh": size, "reg": offset, "ind": index, "reg_mask": reg_mask}


def batch_targets(boxes: np.ndarray, classes: np.ndarray, mask: np.ndarray, *,
                  num_classes: int, output_hw: tuple[int, int],
                  min_overlap: float = 0.7) -> dict[str, np.ndarray]:
    """``image_targets`` per image of a padded batch, under the device renderer's names
    (``targets.box_targets``) so the two compare field by field.

    Args:
      boxes: float [B, N, 4]; classes: int [B, N]; mask: bool [B, N].

    Returns:
      heatmap float32 [B, C, H, W] (channel-major: transpose to compare with the NHWC
      device map), index int64 [B, N], size / offset float32 [B, N, 2], mask bool [B, N].
    """
    slots = mask.shape[1]
    per_image = [image_targets(boxes[b], classes[b], mask[b], num_classes=num_classes,
                               output_hw=output_hw, max_objects=slots,
                               min_overlap=min_overlap)
                 for b in range(mask.shape[0])]

    def stack(name):
        return np.stack([image[name] for image in per_image])

    return {"heatmap": stack("hm"), "index": stack("ind"), "size": stack("wh"),
            "offset": stack("reg"), "mask": stack("reg_mask").astype(bool)}


def decode(hm_logits: np.ndarray, wh: np.ndarray, reg: np.ndarray, k: int
                       ) -> dict[str, np.ndarray]:
    """The official 2D detection decode in NumPy, batched like the official one.

    sigmoid -> 3x3 max-pool NMS keeping values equal to their pooled max -> top-K per class
    over H * W -> top-K over the C * K candidates -> wh / reg gathered at the peaks ->
    boxes (x1, y1, x2, y2) in output-grid pixels.

    Args:
      hm_logits: float32 [B, H, W, C]; wh, reg: float32 [B, H, W, 2].
    Returns:
      boxes float32 [B, K, 4], scores float32 [B, K] (descending), classes int [B, K].
    """
    batch, height, width, classes = hm_logits.shape
    heat = (1.0 / (1.0 + np.exp(-hm_logits))).astype(np.float32)
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pooled = heat.copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(pooled, padded[:, dy:dy + height, dx:dx + width], out=pooled)
    heat = np.where(pooled == heat, heat, 0.0).astype(np.float32)

    # Per class: top-K over the H * W positions (channel-major like the official NCHW map).
    per_class = heat.transpose(0, 3, 1, 2).reshape(batch, classes, height * width)
    k_class = min(k, height * width)
    candidates = np.argpartition(-per_class, k_class - 1, axis=-1)[..., :k_class]
    candidate_scores = np.take_along_axis(per_class, candidates, -1)
    order = np.argsort(-candidate_scores, axis=-1, kind="stable")
    class_index = np.take_along_axis(candidates, order, -1)  # [B, C, K] spatial index
    class_scores = np.take_along_axis(candidate_scores, order, -1)

    # Then top-K over the C * K candidates.
    flat_scores = class_scores.reshape(batch, classes * k_class)
    best = np.argsort(-flat_scores, axis=-1, kind="stable")[:, :k]
    scores = np.take_along_axis(flat_scores, best, -1)
    spatial = np.take_along_axis(class_index.reshape(batch, -1), best, -1)
    labels = best // k_class
    ys, xs = spatial // width, spatial % width

    rows = np.arange(batch)[:, None]
    offset = reg.reshape(batch, height * width, 2)[rows, spatial]
    size = wh.reshape(batch, height * width, 2)[rows, spatial]
    center_x = xs.astype(np.float32) + offset[..., 0]
    center_y = ys.astype(np.float32) + offset[..., 1]
    boxes = np.stack([center_x - size[..., 0] / 2, center_y - size[..., 1] / 2,
                      center_x + size[..., 0] / 2, center_y + size[..., 1] / 2], -1)
    return {"boxes": boxes.astype(np.float32), "scores": scores, "classes": labels}


def check_decode(got: dict[str, Any], want: dict[str, np.ndarray]) -> float:
    """Max |score difference|; raises if scores, or boxes / classes at distinct scores,
    disagree (equal scores have an implementation-defined order)."""
    got = jax.tree.map(np.asarray, got)
    score_diff = float(np.max(np.abs(got["scores"] - want["scores"])))
    if not score_diff <= SCORE_TOLERANCE:
        raise AssertionError(f"decode scores differ from the NumPy reference by {score_diff}")
    scores = want["scores"]
    gaps = np.abs(np.diff(scores, axis=-1)) > SCORE_TOLERANCE
    distinct = (np.pad(gaps, ((0, 0), (1, 0)), constant_values=True)
                & np.pad(gaps, ((0, 0), (0, 1)), constant_values=True) & (scores > 0))
    box_diff = np.abs(got["boxes"] - want["boxes"])[distinct]
    if distinct.sum() == 0 or box_diff.max() > BOX_TOLERANCE or np.any(
            got["classes"][distinct] != want["classes"][distinct]):
        raise AssertionError("decoded boxes / classes differ from the NumPy reference")
    return score_diff


def check_targets(got: dict[str, Any], want: dict[str, np.ndarray]) -> float:
    """Max |heatmap difference|; raises if any target field disagrees."""
    got = jax.tree.map(np.asarray, got)
    heat_diff = float(np.max(np.abs(got["heatmap"] - want["heatmap"].transpose(0, 2, 3, 1))))
    ok = (heat_diff <= HEATMAP_TOLERANCE
          and np.array_equal(got["mask"], want["mask"])
          and np.array_equal(got["index"], want["index"])
          and np.allclose(got["size"], want["size"], atol=1e-6)
          and np.allclose(got["offset"], want["offset"], atol=1e-6))
    if not ok:
        raise AssertionError(f"rendered targets differ from the NumPy reference "
                             f"(heatmap max |d| = {heat_diff})")
    return heat_diff


@dataclasses.dataclass(frozen=True)
class CtdetReference:
    """The host references of one ctdet task (`CtdetTask.reference`), as the benchmarks use
    them: `targets` / `decode` mirror the task's own on NumPy arrays, `image_targets` is what
    the official loader computes per example, and `check_*` compare the two sides."""

    num_classes: int
    radius: str
    min_overlap: float

    shipped_fields = OFFICIAL_TARGET_FIELDS

    def _check_radius(self) -> None:
        if self.radius != "official":
            raise ValueError("the NumPy target baseline reproduces the official radius only")

    def image_targets(self, example: Mapping[str, np.ndarray], output_hw: tuple[int, int],
                      max_objects: int) -> dict[str, np.ndarray]:
        """One transformed example's targets (its boxes, classes, mask), official names."""
        self._check_radius()
        return image_targets(example["boxes"], example["classes"], example["mask"],
                             num_classes=self.num_classes, output_hw=output_hw,
                             max_objects=max_objects, min_overlap=self.min_overlap)

    def targets(self, batch: Mapping[str, np.ndarray], output_hw: tuple[int, int]
                ) -> dict[str, np.ndarray]:
        self._check_radius()
        return batch_targets(batch["boxes"], batch["classes"], batch["mask"],
                             num_classes=self.num_classes, output_hw=output_hw,
                             min_overlap=self.min_overlap)

    def decode(self, outputs: Mapping[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
        return decode(outputs["hm"], outputs["wh"], outputs["reg"], k)

    check_targets = staticmethod(check_targets)
    check_decode = staticmethod(check_decode)
