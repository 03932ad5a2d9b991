"""COCO bounding-box evaluation with pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from typing import Sequence

from etils import epath
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# COCOeval.stats order for iouType="bbox".
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class CocoEvaluator:
    """Accumulates detections in image pixels and runs COCOeval (bbox).

    Args:
      ground_truth: a COCO-format dict (images, annotations, categories).
      category_ids: COCO category id of each contiguous class index 0..C-1.
      round_decimals: the official results writer rounds boxes and scores to 2 decimals.
    """

    def __init__(self, ground_truth: dict, category_ids: Sequence[int],
                 round_decimals: int | None = 2):
        gt = copy.deepcopy(ground_truth)
        gt.setdefault("info", {})
        gt.setdefault("licenses", [])
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self._coco_gt = COCO()
            self._coco_gt.dataset = gt
            self._coco_gt.createIndex()
        self._image_ids = set(self._coco_gt.getImgIds())
        self._category_ids = np.asarray(category_ids, np.int64)
        self._round = round_decimals
        self.reset()

    def reset(self) -> None:
        """Forgets the detections added so far; the ground-truth index is kept."""
        self._results: list[dict] = []
        self._seen_images: set[int] = set()
        self.last_summary = ""

    @property
    def results(self) -> list[dict]:
        """COCO-format detection results added so far."""
        return self._results

    def add(self, image_ids: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
            classes: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Adds a batch of detections.

        Args:
          image_ids: [B] COCO image ids.
          boxes: [B, K, 4] (x1, y1, x2, y2) in original image pixels.
          scores: [B, K]; classes: [B, K] contiguous class indices.
          valid: [B] bool; padding rows of the evaluation stream are skipped.
        """
        valid = np.ones(len(image_ids), bool) if valid is None else np.asarray(valid, bool)
        for b in np.flatnonzero(valid):
            image_id = int(image_ids[b])
            if image_id in self._seen_images:
                raise ValueError(f"image {image_id} was evaluated twice")
            self._seen_images.add(image_id)
            xywh = np.concatenate([boxes[b, :, :2], boxes[b, :, 2:] - boxes[b, :, :2]], -1)
            score = scores[b].astype(np.float64)
            if self._round is not None:
                xywh, score = np.round(xywh, self._round), np.round(score, self._round)
            cats = self._category_ids[classes[b]]
            self._results.extend(
                {"image_id": image_id, "category_id": int(c), "bbox": [float(v) for v in bb],
                 "score": float(s)}
                for bb, s, c in zip(xywh, score, cats))

    def compute(self) -> dict[str, float]:
        """Runs COCOeval over the images added so far.

        Returns AP/AR metrics in [0, 1]; -1 where the ground truth has no object of that
        size range (pycocotools' convention).
        """
        expected = self._image_ids
        missing = expected - self._seen_images
        if missing:
            logging.warning("COCO evaluation: %d of %d ground-truth images got no "
                            "predictions (e.g. %s); they count as misses.",
                            len(missing), len(expected), sorted(missing)[:5])
        if not self._results:
            return {name: 0.0 for name in METRIC_NAMES}
        log = io.StringIO()
        with contextlib.redirect_stdout(log):  # pycocotools prints; keep it for the log
            coco_dt = self._coco_gt.loadRes(copy.deepcopy(self._results))
            coco_eval = COCOeval(self._coco_gt, coco_dt, iouType="bbox")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        self.last_summary = log.getvalue()
        return {name: float(v) for name, v in zip(METRIC_NAMES, coco_eval.stats)}

    def write_results(self, path: str | os.PathLike) -> None:
        """Writes the COCO-format detections (`path` may be in a bucket, gs://...)."""
        epath.Path(path).write_text(json.dumps(self._results))
