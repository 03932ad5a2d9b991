"""COCO bbox evaluation on hand-built detections."""

import numpy as np
import pytest

from centernet_jax.evaluators import coco


def _ground_truth():
    return {
        "images": [{"id": 1, "width": 100, "height": 80}, {"id": 2, "width": 100, "height": 80}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 30], "area": 1200,
             "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [50, 20, 30, 50], "area": 1500,
             "iscrowd": 0},
        ],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    }


def _detections(shift=0.0):
    # Padded to K=3 rows per image; extra rows have low scores and wrong places.
    boxes = np.array([
        [[10, 10, 50, 40], [0, 0, 5, 5], [60, 60, 70, 70]],
        [[50, 20, 80, 70], [0, 0, 5, 5], [60, 60, 70, 70]],
    ], np.float32) + shift
    scores = np.array([[0.9, 0.05, 0.01], [0.8, 0.04, 0.02]], np.float32)
    classes = np.array([[0, 1, 1], [1, 0, 0]], np.int32)  # contiguous indices
    return boxes, scores, classes


def test_perfect_detections_give_ap_one():
    evaluator = coco.CocoEvaluator(_ground_truth(), category_ids=[3, 7])
    evaluator.add(np.array([1, 2]), *_detections())
    metrics = evaluator.compute()
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["APm"] == pytest.approx(1.0)
    assert metrics["APs"] == -1.0  # no small objects in the ground truth
    assert "Average Precision" in evaluator.last_summary
    # Results are COCO-format: xywh with 1-based category ids.
    first = evaluator.results[0]
    assert first["bbox"] == [10.0, 10.0, 40.0, 30.0] and first["category_id"] == 3


def test_shifted_boxes_lower_ap():
    evaluator = coco.CocoEvaluator(_ground_truth(), category_ids=[3, 7])
    evaluator.add(np.array([1, 2]), *_detections(shift=3.0))
    metrics = evaluator.compute()
    assert 0.0 < metrics["AP"] < 0.9
    assert metrics["AP50"] == pytest.approx(1.0)


def test_padding_rows_are_skipped_and_duplicates_rejected():
    evaluator = coco.CocoEvaluator(_ground_truth(), category_ids=[3, 7])
    boxes, scores, classes = _detections()
    evaluator.add(np.array([1, 1]), boxes, scores, classes, valid=np.array([True, False]))
    assert len(evaluator.results) == 3
    with pytest.raises(ValueError, match="twice"):
        evaluator.add(np.array([1]), boxes[:1], scores[:1], classes[:1])


def test_missing_image_counts_as_miss():
    evaluator = coco.CocoEvaluator(_ground_truth(), category_ids=[3, 7])
    boxes, scores, classes = _detections()
    evaluator.add(np.array([1]), boxes[:1], scores[:1], classes[:1])
    assert evaluator.compute()["AP"] == pytest.approx(0.5)


def test_no_detections_gives_zero():
    assert coco.CocoEvaluator(_ground_truth(), [3, 7]).compute()["AP"] == 0.0


def test_reset_reuses_the_ground_truth_index():
    evaluator = coco.CocoEvaluator(_ground_truth(), category_ids=[3, 7])
    evaluator.add(np.array([1, 2]), *_detections(shift=3.0))
    shifted = evaluator.compute()["AP"]
    evaluator.reset()
    assert evaluator.results == []
    evaluator.add(np.array([1, 2]), *_detections())  # no "evaluated twice" after reset
    assert evaluator.compute()["AP"] == pytest.approx(1.0) and shifted < 0.9
