"""2D object detection (ctdet): a centre heatmap plus box size and sub-pixel offset.

The worked example of the task protocol (`tasks/base.py`). Heads, as the official code names
them: `hm` (one heatmap channel per class), `wh` (box width and height, output-grid pixels)
and `reg` (the centre's sub-pixel offset). Training renders box-centre Gaussians
(`targets.box_targets`) and weighs the focal, size and offset losses (Objects as Points,
Zhou et al. 2019); decoding picks 3x3 peaks and reads size and offset there (`decode.box_decode`);
evaluation is COCO bbox; the multi-scale test merges scales with per-class soft-NMS.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from centernet_jax import affine, decode, losses, soft_nms, targets, viz
from centernet_jax.evaluators import coco
from centernet_jax.models.heads import HeadSpec
from centernet_jax.tasks import base, ctdet_reference

Outputs = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class CtdetLoss:
    """The `config.loss` section of ctdet (values in configs/common.py).

    Attributes:
      hm_weight, wh_weight, off_weight: weights of the focal, size and offset losses
        (official 1, 0.1, 1).
      radius: "official" (CornerNet's gaussian_radius with its typo) or "corrected".
      min_overlap: the IoU the Gaussian radius is computed for (official 0.7).
    """

    hm_weight: float
    wh_weight: float
    off_weight: float
    radius: str
    min_overlap: float

    def __post_init__(self):
        for name in ("hm_weight", "wh_weight", "off_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"loss.{name}={value!r} must be a finite number >= 0.")
        if self.radius not in targets.RADIUS_FUNCTIONS:
            raise ValueError(f"loss.radius={self.radius!r}; use one of "
                             f"{sorted(targets.RADIUS_FUNCTIONS)}.")
        if not 0 < self.min_overlap < 1:
            raise ValueError(f"loss.min_overlap={self.min_overlap!r} must be in (0, 1).")


@dataclasses.dataclass(frozen=True)
class CtdetTask(base.Task):
    """Objects as centre points (Objects as Points, Zhou et al. 2019).

    Attributes:
      classes: number of object classes C (heatmap channels).
      options: the loss and target options (`CtdetLoss`).
    """

    classes: int
    options: CtdetLoss

    name = "ctdet"
    metrics = coco.BBOX_METRICS
    batch_fields = ("boxes", "classes", "mask")
    eval_fields = ("center", "scale")
    export_units = {
        "boxes": "x1, y1, x2, y2 in pixels of the H x W input image",
        "scores": "heatmap peak probability, best first, no threshold",
        "classes": "0-based class index",
    }

    @classmethod
    def from_config(cls, config) -> CtdetTask:
        return cls(classes=int(config.dataset.num_classes),
                   options=base.options_from_config(CtdetLoss, config.loss, "loss"))

    @property
    def num_classes(self) -> int:
        return self.classes

    @property
    def heads(self) -> dict[str, HeadSpec]:
        return {"hm": HeadSpec(self.classes, init="heatmap"),
                "wh": HeadSpec(2), "reg": HeadSpec(2)}

    # -- training -------------------------------------------------------------------------

    def targets(self, batch: Mapping[str, jax.Array], output_hw: tuple[int, int]) -> dict:
        """`targets.box_targets` of the padded boxes (output-grid pixels): heatmap
        [B, h, w, C], index [B, N], size and offset [B, N, 2], mask [B, N]."""
        return targets.box_targets(
            batch["boxes"], batch["classes"], batch["mask"],
            num_classes=self.classes, output_hw=tuple(output_hw),
            radius=self.options.radius, min_overlap=self.options.min_overlap)

    def loss(self, outputs: Sequence[Outputs], target: Mapping[str, jax.Array]
             ) -> tuple[jax.Array, dict]:
        """Weighted sum of the focal, size and offset losses, averaged over stacks (each
        stack supervised alike, as the official hourglass training does)."""
        parts = {"hm_loss": 0.0, "wh_loss": 0.0, "off_loss": 0.0}
        for out in outputs:
            parts["hm_loss"] += losses.focal_loss(out["hm"], target["heatmap"])
            parts["wh_loss"] += losses.reg_l1_loss(
                out["wh"], target["index"], target["mask"], target["size"])
            parts["off_loss"] += losses.reg_l1_loss(
                out["reg"], target["index"], target["mask"], target["offset"])
        parts = {k: v / len(outputs) for k, v in parts.items()}
        options = self.options
        total = (options.hm_weight * parts["hm_loss"] + options.wh_weight * parts["wh_loss"]
                 + options.off_weight * parts["off_loss"])
        return total, parts

    # -- inference ------------------------------------------------------------------------

    def decode(self, outputs: Outputs, k: int,
               mirrored: Outputs | None = None) -> dict[str, jax.Array]:
        """Top-`k` boxes [B, k, 4] (output-grid pixels), scores [B, k], classes [B, k].

        Flip test (official): the heatmap (after the sigmoid) and the sizes are averaged
        with the mirrored ones flipped back, without negating anything; the offsets come
        from `outputs` alone.
        """
        heatmap = jax.nn.sigmoid(outputs["hm"].astype(jnp.float32))
        size = outputs["wh"].astype(jnp.float32)
        if mirrored is not None:
            heatmap = 0.5 * (heatmap + jax.nn.sigmoid(
                mirrored["hm"].astype(jnp.float32))[:, :, ::-1])
            size = 0.5 * (size + mirrored["wh"].astype(jnp.float32)[:, :, ::-1])
        return decode.box_decode(heatmap, size, outputs["reg"].astype(jnp.float32), k=k)

    def export_outputs(self, detections: Mapping[str, jax.Array], down_ratio: int
                       ) -> dict[str, jax.Array]:
        return {"boxes": detections["boxes"] * down_ratio,
                "scores": detections["scores"],
                "classes": detections["classes"].astype(jnp.int32)}

    # -- host side ------------------------------------------------------------------------

    def to_image_detections(self, detections: Mapping[str, np.ndarray],
                            batch: Mapping[str, np.ndarray], output_hw: tuple[int, int]
                            ) -> dict[str, np.ndarray]:
        """Boxes through the inverse of the eval transform's window (official
        transform_preds); scores and classes unchanged."""
        boxes = affine.boxes_to_image(np.asarray(detections["boxes"]),
                                      np.asarray(batch["center"]),
                                      np.asarray(batch["scale"]), tuple(output_hw))
        return {"boxes": boxes, "scores": np.asarray(detections["scores"]),
                "classes": np.asarray(detections["classes"])}

    def merge(self, per_scale: Sequence[Mapping[str, np.ndarray]], *, max_per_image: int,
              official: bool) -> dict[str, np.ndarray]:
        """The official merge_outputs: per class, Gaussian soft-NMS over the scales' boxes,
        then the `max_per_image` cut (`soft_nms.merge_detections`)."""
        return soft_nms.merge_detections(
            [{k: d[k] for k in ("boxes", "scores", "classes")} for d in per_scale],
            num_classes=self.classes, max_per_image=max_per_image, official=official)

    def make_evaluator(self, source) -> coco.CocoEvaluator:
        """COCOeval bbox on the split's ground truth; results rounded to 2 decimals, as the
        official results writer does."""
        return coco.CocoEvaluator(
            source.coco_ground_truth(), iou_type="bbox",
            to_records=functools.partial(self.results, coordinate_decimals=2,
                                         score_decimals=2))

    def results(self, image_id: int, detections: Mapping[str, np.ndarray],
                category_ids: Sequence[int], *, coordinate_decimals: int | None,
                score_decimals: int | None) -> list[dict[str, Any]]:
        """COCO bbox results: {"image_id", "category_id", "bbox": [x, y, w, h], "score"}."""
        return coco.box_records(image_id, detections["boxes"], detections["scores"],
                                detections["classes"], category_ids,
                                box_decimals=coordinate_decimals,
                                score_decimals=score_decimals)

    def draw(self, image_rgb: np.ndarray, detections: Mapping[str, np.ndarray], *,
             class_names: Sequence[str], threshold: float, scale: float = 1.0,
             ground_truth: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Boxes coloured by class with their scores; ground-truth boxes thin and white."""
        gt_boxes = None
        if ground_truth is not None:
            gt_boxes = np.asarray(ground_truth["boxes"])[np.asarray(ground_truth["mask"], bool)]
            gt_boxes = gt_boxes * scale
        return viz.draw_detections(image_rgb, np.asarray(detections["boxes"]) * scale,
                                   detections["scores"], detections["classes"], class_names,
                                   threshold, gt_boxes=gt_boxes)

    @property
    def reference(self) -> ctdet_reference.CtdetReference:
        """NumPy transcriptions of the official host-side target drawing and decode (the
        benchmarks' baselines; see `tasks.base.Task.reference`)."""
        return ctdet_reference.CtdetReference(num_classes=self.classes,
                                              radius=self.options.radius,
                                              min_overlap=self.options.min_overlap)
