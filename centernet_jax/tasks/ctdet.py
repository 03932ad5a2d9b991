"""2D object detection (ctdet): a centre heatmap plus box size and sub-pixel offset.

The task is the one place that knows what the ctdet heads mean: it renders their targets,
weighs their losses and decodes their outputs. The train loop, evaluation and inference
only see this interface, shared by every task.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from centernet_jax import affine, decode, losses, targets

Outputs = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class CtdetTask:
    """Objects as centre points (spec §1, §3–§5).

    Attributes:
      num_classes: number of object classes C (heatmap channels).
      hm_weight, wh_weight, off_weight: loss weights (official 1, 0.1, 1).
      radius: "official" (CornerNet's gaussian_radius with its typo) or "corrected".
      min_overlap: the IoU the Gaussian radius is computed for.
    """

    num_classes: int
    hm_weight: float = 1.0
    wh_weight: float = 0.1
    off_weight: float = 1.0
    radius: str = "official"
    min_overlap: float = 0.7

    name = "ctdet"

    @property
    def heads(self) -> dict[str, int]:
        """Head name -> output channels."""
        return {"hm": self.num_classes, "wh": 2, "reg": 2}

    def targets(self, batch: dict[str, jax.Array], output_hw: tuple[int, int]) -> dict:
        """Dense and sparse targets from the padded boxes of ``batch`` (on device).

        ``batch`` holds ``boxes`` [B, N, 4] (x1, y1, x2, y2 in output-grid pixels),
        ``classes`` [B, N] and ``mask`` [B, N].
        """
        return targets.ctdet_targets(
            batch["boxes"], batch["classes"], batch["mask"],
            num_classes=self.num_classes, output_hw=tuple(output_hw),
            radius=self.radius, min_overlap=self.min_overlap)

    def loss(self, outputs: list[Outputs], target: dict) -> tuple[jax.Array, dict]:
        """Weighted sum of the focal, size and offset losses, averaged over stacks.

        Args:
          outputs: one dict of raw head outputs per supervised stack.
          target: the output of :meth:`targets`.
        Returns:
          (scalar loss, dict of named scalar parts for logging).
        """
        parts = {"hm_loss": 0.0, "wh_loss": 0.0, "off_loss": 0.0}
        for out in outputs:
            parts["hm_loss"] += losses.focal_loss(out["hm"], target["heatmap"])
            parts["wh_loss"] += losses.reg_l1_loss(
                out["wh"], target["index"], target["mask"], target["size"])
            parts["off_loss"] += losses.reg_l1_loss(
                out["reg"], target["index"], target["mask"], target["offset"])
        parts = {k: v / len(outputs) for k, v in parts.items()}
        total = (self.hm_weight * parts["hm_loss"] + self.wh_weight * parts["wh_loss"]
                 + self.off_weight * parts["off_loss"])
        return total, parts

    def decode(self, outputs: Outputs, k: int,
               mirrored: Outputs | None = None) -> dict[str, jax.Array]:
        """Top-``k`` detections of one stack's raw outputs, in output-grid pixels.

        Args:
          outputs: raw head outputs, each [B, h, w, channels].
          k: detections per image.
          mirrored: the outputs for the width-mirrored images (flip test, spec §5.4): the
            heatmap (after the sigmoid) and the sizes are averaged with these mirrored
            back, without negating anything; the offsets come from ``outputs`` alone.
        Returns:
          ``ctdet_decode``'s dict: boxes [B, k, 4], scores [B, k], classes [B, k], ...
        """
        heatmap = jax.nn.sigmoid(outputs["hm"].astype(jnp.float32))
        size = outputs["wh"].astype(jnp.float32)
        if mirrored is not None:
            heatmap = 0.5 * (heatmap + jax.nn.sigmoid(
                mirrored["hm"].astype(jnp.float32))[:, :, ::-1])
            size = 0.5 * (size + mirrored["wh"].astype(jnp.float32)[:, :, ::-1])
        return decode.ctdet_decode(heatmap, size, outputs["reg"].astype(jnp.float32), k=k)

    def to_image_detections(self, detections: dict[str, np.ndarray], batch: dict[str, Any],
                            output_hw: tuple[int, int]) -> dict[str, np.ndarray]:
        """Maps decoded boxes back to original image pixels (host side, NumPy)."""
        boxes = affine.boxes_to_image(np.asarray(detections["boxes"]),
                                      np.asarray(batch["center"]),
                                      np.asarray(batch["scale"]), tuple(output_hw))
        return {"boxes": boxes, "scores": np.asarray(detections["scores"]),
                "classes": np.asarray(detections["classes"])}


def from_config(config) -> CtdetTask:
    return CtdetTask(
        num_classes=config.dataset.num_classes,
        hm_weight=config.loss.hm_weight,
        wh_weight=config.loss.wh_weight,
        off_weight=config.loss.off_weight,
        radius=config.loss.radius,
        min_overlap=config.loss.min_overlap,
    )
