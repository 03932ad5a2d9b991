"""COCO evaluation with pycocotools (any `iouType`), and the COCO results formatter.

`CocoEvaluator` runs COCOeval for boxes ("bbox") or keypoints ("keypoints"); what turns one
image's detections into COCO result records is the task's (`to_records`), so every task that
scores with COCOeval shares this class. `box_records` is the one formatter of box detections
as COCO results, used by evaluation and prediction alike.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from typing import Any, Callable, Mapping, Sequence

from etils import epath
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from centernet_jax.evaluators.base import MetricSpec

# COCOeval.stats order for iouType="bbox" and iouType="keypoints".
BBOX_METRICS = MetricSpec(
    title="COCO bbox",
    names=("AP", "AP50", "AP75", "APs", "APm", "APl",
           "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
    headline=("AP", "AP50", "AP75", "APs", "APm", "APl"),
    best="AP")
KEYPOINT_METRICS = MetricSpec(
    title="COCO keypoints",
    names=("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"),
    headline=("AP", "AP50", "AP75", "APm", "APl"),
    best="AP")
METRICS = {"bbox": BBOX_METRICS, "keypoints": KEYPOINT_METRICS}

# (image_id, one image's detections, COCO category id per 0-based class) -> result records.
RecordsFn = Callable[[int, Mapping[str, np.ndarray], np.ndarray], list[dict[str, Any]]]


def _rounded(values: np.ndarray, decimals: int | None) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return values if decimals is None else np.round(values, decimals)


def box_records(image_id: int, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                category_ids: Sequence[int], *, box_decimals: int | None = 2,
                score_decimals: int | None = 2) -> list[dict[str, Any]]:
    """One image's box detections as COCO results.

    Args:
      image_id: the COCO image id.
      boxes: [K, 4] (x1, y1, x2, y2) in original-image pixels (written as x, y, w, h).
      scores: [K]; classes: [K] 0-based class indices.
      category_ids: the COCO category id of each class index.
      box_decimals, score_decimals: rounding (None: full precision). The official results
        writer rounds both to 2 decimals.

    Returns:
      [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}] in row order.
    """
    boxes = np.asarray(boxes)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], -1)
    xywh = _rounded(xywh, box_decimals)
    scores = _rounded(scores, score_decimals)
    categories = np.asarray(category_ids, np.int64)[np.asarray(classes, np.int64)]
    return [{"image_id": int(image_id), "category_id": int(c),
             "bbox": [float(v) for v in box], "score": float(s)}
            for box, s, c in zip(xywh, scores, categories)]


class CocoEvaluator:
    """Accumulates detections in image pixels and runs COCOeval.

    Args:
      ground_truth: a COCO-format dict (images, annotations, categories).
      to_records: the task's formatter of one image's detections as COCO results.
      iou_type: "bbox" or "keypoints" (COCOeval's iouType).
      category_ids: COCO category id of each contiguous class index 0..C-1; default the
        ground truth's categories in order.
    """

    def __init__(self, ground_truth: dict, to_records: RecordsFn, *, iou_type: str = "bbox",
                 category_ids: Sequence[int] | None = None):
        if iou_type not in METRICS:
            raise ValueError(f"iou_type must be one of {sorted(METRICS)}, got {iou_type!r}")
        gt = copy.deepcopy(ground_truth)
        gt.setdefault("info", {})
        gt.setdefault("licenses", [])
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self._coco_gt = COCO()
            self._coco_gt.dataset = gt
            self._coco_gt.createIndex()
        self._image_ids = set(self._coco_gt.getImgIds())
        if category_ids is None:
            category_ids = [c["id"] for c in gt["categories"]]
        self.category_ids = np.asarray(category_ids, np.int64)
        self.iou_type = iou_type
        self.metrics = METRICS[iou_type]
        self._to_records = to_records
        self.reset()

    def reset(self) -> None:
        """Forgets the detections added so far; the ground-truth index is kept."""
        self._results: list[dict] = []
        self._seen_images: set[int] = set()
        self.summary = ""

    @property
    def results(self) -> list[dict]:
        """COCO-format detection results added so far."""
        return self._results

    def add(self, image_ids: np.ndarray, detections: Mapping[str, np.ndarray],
            valid: np.ndarray | None = None) -> None:
        """Adds a batch of detections.

        Args:
          image_ids: [B] COCO image ids.
          detections: each [B, K, ...] in original image pixels, as the task's
            `to_records` reads them.
          valid: [B] bool; padding rows of the evaluation stream are skipped.
        """
        valid = np.ones(len(image_ids), bool) if valid is None else np.asarray(valid, bool)
        for b in np.flatnonzero(valid):
            image_id = int(image_ids[b])
            if image_id in self._seen_images:
                raise ValueError(f"image {image_id} was evaluated twice")
            self._seen_images.add(image_id)
            one_image = {name: np.asarray(value[b]) for name, value in detections.items()}
            self._results.extend(self._to_records(image_id, one_image, self.category_ids))

    def compute(self) -> dict[str, float]:
        """Runs COCOeval over the images added so far.

        Returns the metrics of `self.metrics.names` in [0, 1]; -1 where the ground truth
        has no object of that size range (pycocotools' convention).
        """
        missing = self._image_ids - self._seen_images
        if missing:
            logging.warning("COCO evaluation: %d of %d ground-truth images got no "
                            "predictions (e.g. %s); they count as misses.",
                            len(missing), len(self._image_ids), sorted(missing)[:5])
        if not self._results:
            return {name: 0.0 for name in self.metrics.names}
        log = io.StringIO()
        with contextlib.redirect_stdout(log):  # pycocotools prints; keep it for the log
            coco_dt = self._coco_gt.loadRes(copy.deepcopy(self._results))
            coco_eval = COCOeval(self._coco_gt, coco_dt, iouType=self.iou_type)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        self.summary = log.getvalue()
        return {name: float(v) for name, v in zip(self.metrics.names, coco_eval.stats)}

    def write_results(self, directory: epath.PathLike, name: str) -> epath.Path:
        """Writes the COCO-format detections to `<directory>/<name>.json` (a bucket too)."""
        path = epath.Path(directory) / f"{name}.json"
        path.write_text(json.dumps(self._results))
        return path
