"""Similarity/affine helpers shared by the input pipeline and post-processing (NumPy, host side).

The construction follows the official CenterNet `get_affine_transform`:
three point correspondences (the centre, a point half a source width "above" it, and the point
perpendicular to those two) define a 2x3 matrix. Only `scale[0]` is used, so the map is a
similarity with factor out_w / scale[0] in both axes that sends `center` to the canvas centre.
The points are formed in float32 (as the official code does) and the 3x3 system is solved
exactly in float64, which agrees with `cv2.getAffineTransform` to ~1e-14 relative.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _as_scale_pair(scale) -> np.ndarray:
    """A scalar scale s means (s, s); a length-2 sequence is taken as is."""
    scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim == 0:
        return np.array([scale, scale], dtype=np.float64)
    if scale.shape != (2,):
        raise ValueError(f"scale must be a scalar or have shape (2,), got shape {scale.shape}.")
    return scale


def _rotate(point: np.ndarray, angle_rad: float) -> np.ndarray:
    sin, cos = np.sin(angle_rad), np.cos(angle_rad)
    return np.array([point[0] * cos - point[1] * sin, point[0] * sin + point[1] * cos])


def _perpendicular_third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b plus (a - b) rotated by +90 degrees: completes a right angle at b."""
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=direction.dtype)


def solve_affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix M with M @ [src_i, 1] = dst_i for three point pairs.

    Args:
      src: [3, 2] source points.
      dst: [3, 2] destination points.

    Returns:
      [2, 3] float64 matrix (what `cv2.getAffineTransform(src, dst)` returns).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != (3, 2) or dst.shape != (3, 2):
        raise ValueError(f"need [3, 2] point sets, got {src.shape} and {dst.shape}.")
    homogeneous = np.concatenate([src, np.ones((3, 1))], axis=1)  # [3, 3]
    try:
        return np.linalg.solve(homogeneous, dst).T  # [2, 3]
    except np.linalg.LinAlgError as error:
        raise ValueError(f"degenerate (collinear) source points: {src.tolist()}") from error


def get_affine_transform(
    center: Sequence[float] | np.ndarray,
    scale: float | Sequence[float] | np.ndarray,
    rot: float,
    output_size: Sequence[int],
    shift: Sequence[float] = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """The official CenterNet warp from a source window to an output canvas.

    Args:
      center: (cx, cy) of the source window, source pixels.
      scale: source window size; a scalar s means (s, s). Only scale[0] (the width) is used.
      rot: rotation in degrees (counter-clockwise in the image, as in the official code).
      output_size: (out_w, out_h) of the destination canvas, pixels.
      shift: offset of the window centre in units of `scale`.
      inv: return the destination -> source map instead.

    Returns:
      [2, 3] float64 matrix mapping source (x, y, 1) to destination (x, y), or the reverse
      when `inv`.
    """
    center = np.asarray(center, dtype=np.float64)
    if center.shape != (2,):
        raise ValueError(f"center must have shape (2,), got {center.shape}.")
    if len(output_size) != 2:
        raise ValueError(f"output_size must be (out_w, out_h), got {output_size!r}.")
    scale = _as_scale_pair(scale)
    shift = np.asarray(shift, dtype=np.float64)
    src_w = scale[0]
    if not src_w > 0:
        raise ValueError(f"scale[0] must be positive, got {src_w}.")
    dst_w, dst_h = float(output_size[0]), float(output_size[1])

    src_dir = _rotate(np.array([0.0, -0.5 * src_w]), np.pi * rot / 180.0)
    dst_dir = np.array([0.0, -0.5 * dst_w])

    # The official code stores the correspondence points in float32; mirror that rounding.
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center + scale * shift
    src[1] = center + src_dir + scale * shift
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2] = _perpendicular_third_point(src[0], src[1])
    dst[2] = _perpendicular_third_point(dst[0], dst[1])

    if inv:
        return solve_affine_from_points(dst, src)
    return solve_affine_from_points(src, dst)


def affine_transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Applies one 2x3 affine matrix to points.

    Args:
      points: [..., 2] (x, y) coordinates.
      matrix: [2, 3] affine matrix.

    Returns:
      [..., 2] float64 transformed points.
    """
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {matrix.shape}.")
    if points.shape[-1:] != (2,):
        raise ValueError(f"points must have shape [..., 2], got {points.shape}.")
    return points @ matrix[:, :2].T + matrix[:, 2]


def grid_hw(input_hw: Sequence[int], down_ratio: int) -> tuple[int, int]:
    """The output grid of a stride-``down_ratio`` network on an ``input_hw`` input.

    ceil(input / stride) per axis: input / stride for the multiples of the stride that
    CenterNet uses, and 128 for CornerNet's 511-pixel input. Every module that needs the
    grid (transforms, targets, evaluation, prediction) takes it from here.
    """
    if len(input_hw) != 2 or min(input_hw) < 1 or down_ratio < 1:
        raise ValueError(f"input_hw must be (height, width) > 0 and down_ratio >= 1, got "
                         f"{tuple(input_hw)!r} and {down_ratio!r}.")
    height, width = (int(v) for v in input_hw)
    return -(-height // down_ratio), -(-width // down_ratio)


def points_to_image(
    points: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    output_hw: Sequence[int],
) -> np.ndarray:
    """Maps points from output-grid pixels back to original-image pixels (official
    transform_preds).

    The points go through the inverse of `get_affine_transform(center, scale, 0, (out_w,
    out_h))`, the same warp the input was prepared with (at output resolution).

    Args:
      points: [B, N, 2] (x, y) in output-grid pixels.
      center: [B, 2] window centres, original-image pixels.
      scale: [B, 2] or [B] window sizes, original-image pixels (only the first entry is used).
      output_hw: (out_h, out_w) of the output grid.

    Returns:
      [B, N, 2] points in original-image pixels; float32 for float32 input, else float64.
    """
    points = np.asarray(points)
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape [B, N, 2], got {points.shape}.")
    batch = points.shape[0]
    if center.shape != (batch, 2):
        raise ValueError(f"center must have shape ({batch}, 2), got {center.shape}.")
    if scale.shape not in ((batch,), (batch, 2)):
        raise ValueError(f"scale must have shape ({batch},) or ({batch}, 2), got {scale.shape}.")
    if len(output_hw) != 2:
        raise ValueError(f"output_hw must be (out_h, out_w), got {output_hw!r}.")
    if scale.ndim == 1:
        scale = np.stack([scale, scale], axis=1)
    out_h, out_w = output_hw

    inverse = np.stack([
        get_affine_transform(center[b], scale[b], 0.0, (out_w, out_h), inv=True)
        for b in range(batch)
    ]) if batch else np.zeros((0, 2, 3))  # [B, 2, 3]

    mapped = (np.einsum("bij,bkj->bki", inverse[:, :, :2], points.astype(np.float64))
              + inverse[:, None, :, 2])
    out_dtype = points.dtype if points.dtype in (np.float32, np.float64) else np.float64
    return mapped.astype(out_dtype)


def boxes_to_image(
    boxes: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    output_hw: Sequence[int],
) -> np.ndarray:
    """Maps boxes from output-grid pixels back to original-image pixels: both corners
    through `points_to_image`.

    Args:
      boxes: [B, K, 4] (x1, y1, x2, y2) in output-grid pixels.
      center, scale, output_hw: as `points_to_image`.

    Returns:
      [B, K, 4] boxes in original-image pixels; float32 for float32 input, else float64.
    """
    boxes = np.asarray(boxes)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [B, K, 4], got {boxes.shape}.")
    corners = boxes.reshape(boxes.shape[0], 2 * boxes.shape[1], 2)  # [B, 2K, 2]
    return points_to_image(corners, center, scale, output_hw).reshape(boxes.shape)
