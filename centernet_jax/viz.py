"""Pictures: detections drawn on images and heatmaps overlaid on them (host side)."""

from __future__ import annotations

import colorsys
import os
from typing import Sequence

from etils import epath
import numpy as np
from PIL import Image, ImageDraw


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """Evenly spaced, saturated RGB colours, one per class."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(num_classes, 1), 0.85, 1.0))
            for i in range(num_classes)]


def denormalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Network input [H, W, 3] (normalised BGR) -> uint8 RGB for display."""
    bgr = (np.asarray(image, np.float32) * np.asarray(std) + np.asarray(mean)) * 255.0
    return np.clip(bgr[..., ::-1], 0, 255).astype(np.uint8)


def upscale(image: np.ndarray, min_height: int = 256) -> tuple[np.ndarray, int]:
    """Enlarges small canvases by an integer factor so labels stay legible.

    Returns:
      (uint8 image at least ``min_height`` tall, the integer factor used).
    """
    factor = max(1, -(-min_height // image.shape[0]))
    if factor == 1:
        return image, 1
    height, width = image.shape[:2]
    resized = Image.fromarray(image).resize((width * factor, height * factor), Image.BILINEAR)
    return np.asarray(resized), factor


def draw_detections(image_rgb: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    classes: np.ndarray, class_names: Sequence[str], threshold: float = 0.3,
                    gt_boxes: np.ndarray | None = None) -> np.ndarray:
    """Draws boxes with ``score >= threshold`` (and optional ground truth in white).

    Args:
      image_rgb: uint8 [H, W, 3].
      boxes: [K, 4] (x1, y1, x2, y2) in the image's pixels; scores, classes: [K].
      gt_boxes: optional [M, 4] ground-truth boxes, drawn thin and white.
    Returns:
      uint8 [H, W, 3] RGB.
    """
    picture = Image.fromarray(np.asarray(image_rgb, np.uint8))
    draw = ImageDraw.Draw(picture)
    colors = class_colors(len(class_names))
    if gt_boxes is not None:
        for box in np.asarray(gt_boxes):
            draw.rectangle([float(v) for v in box], outline=(255, 255, 255), width=1)
    order = np.argsort(-np.asarray(scores))
    for i in order:
        if scores[i] < threshold:
            break
        c = int(classes[i])
        box = np.asarray(boxes[i], np.float64)
        if not np.all(np.isfinite(box)):
            continue
        # Negative size predictions (an untrained model) give inverted boxes: draw them anyway.
        x1, x2 = sorted((box[0], box[2]))
        y1, y2 = sorted((box[1], box[3]))
        draw.rectangle([x1, y1, x2, y2], outline=colors[c], width=2)
        label = f"{class_names[c]} {scores[i]:.2f}"
        text_w = 6 * len(label)
        top = max(y1 - 11, 0)
        draw.rectangle([x1, top, x1 + text_w, top + 10], fill=colors[c])
        draw.text((x1 + 1, top - 1), label, fill=(0, 0, 0))
    return np.asarray(picture)


def heatmap_overlay(image_rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blends a class-coloured heatmap over the image.

    Args:
      image_rgb: uint8 [H, W, 3].
      heatmap: probabilities [h, w, C] on the output grid (any integer stride of H, W).
    Returns:
      uint8 [H, W, 3] RGB: each pixel takes the colour of its strongest class, with
      opacity proportional to that class's probability.
    """
    image = np.asarray(image_rgb, np.float32)
    heatmap = np.asarray(heatmap, np.float32)
    stride_y = image.shape[0] // heatmap.shape[0]
    stride_x = image.shape[1] // heatmap.shape[1]
    heatmap = heatmap.repeat(stride_y, axis=0).repeat(stride_x, axis=1)
    colors = np.asarray(class_colors(heatmap.shape[-1]), np.float32)
    strength = heatmap.max(-1, keepdims=True)
    color = colors[heatmap.argmax(-1)]
    weight = alpha * np.clip(strength, 0.0, 1.0)
    return (image * (1 - weight) + color * weight).astype(np.uint8)


def side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    """Concatenates equally tall uint8 images horizontally with a white gap."""
    height = max(im.shape[0] for im in images)
    spacer = np.full((height, gap, 3), 255, np.uint8)
    pieces = []
    for im in images:
        padded = np.full((height, im.shape[1], 3), 255, np.uint8)
        padded[:im.shape[0]] = im
        pieces += [padded, spacer]
    return np.concatenate(pieces[:-1], axis=1)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes uint8 [h, w, 3] RGB as PNG; `path` may be in a bucket (gs://...)."""
    with epath.Path(path).open("wb") as f:
        Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG")
