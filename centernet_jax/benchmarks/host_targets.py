"""The official loader's ctdet targets, rendered on the host one object at a time (NumPy).

A baseline, not used for training: ``centernet_jax.targets`` renders the same targets on
the device inside the train step. The benchmarks time this renderer to show what the
official per-example loader spends on the host, and check that it equals the device
renderer before they time it (spec objects_as_points.md §3).

Per object, in annotation order (only the first ``max_objects`` are looked at):

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

import math

import numpy as np

from centernet_jax import targets as targets_lib

# The arrays the official ctdet loader hands to the trainer besides the image, with its
# dtypes (default options: no dense or class-specific wh, offset regression on).
OFFICIAL_TARGET_FIELDS = ("hm", "wh", "reg", "ind", "reg_mask")


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


def render_ctdet_targets(boxes: np.ndarray, classes: np.ndarray, mask: np.ndarray | None = None,
                         *, num_classes: int, output_hw: tuple[int, int], max_objects: int,
                         min_overlap: float = 0.7) -> dict[str, np.ndarray]:
    """One image's official ctdet targets, with the official names and dtypes.

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


def numpy_ctdet_targets(boxes: np.ndarray, classes: np.ndarray, mask: np.ndarray, *,
                        num_classes: int, output_hw: tuple[int, int],
                        min_overlap: float = 0.7) -> dict[str, np.ndarray]:
    """``render_ctdet_targets`` per image of a padded batch, under the device renderer's
    names (``targets.ctdet_targets``) so the two compare field by field.

    Args:
      boxes: float [B, N, 4]; classes: int [B, N]; mask: bool [B, N].

    Returns:
      heatmap float32 [B, C, H, W] (channel-major: transpose to compare with the NHWC
      device map), index int64 [B, N], size / offset float32 [B, N, 2], mask bool [B, N].
    """
    slots = mask.shape[1]
    per_image = [render_ctdet_targets(boxes[b], classes[b], mask[b], num_classes=num_classes,
                                      output_hw=output_hw, max_objects=slots,
                                      min_overlap=min_overlap)
                 for b in range(mask.shape[0])]

    def stack(name):
        return np.stack([image[name] for image in per_image])

    return {"heatmap": stack("hm"), "index": stack("ind"), "size": stack("wh"),
            "offset": stack("reg"), "mask": stack("reg_mask").astype(bool)}
