"""COCO evaluation (boxes and keypoints) on hand-built detections."""

import json

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


def _box_records(image_id, detections, category_ids):
    return coco.box_records(image_id, detections["boxes"], detections["scores"],
                            detections["classes"], category_ids)


def _evaluator():
    return coco.CocoEvaluator(_ground_truth(), _box_records, category_ids=[3, 7])


def _first(detections, count=1):
    """The first ``count`` images of a batch of detections."""
    return {name: value[:count] for name, value in detections.items()}


def _detections(shift=0.0):
    # Padded to K=3 rows per image; extra rows have low scores and wrong places.
    boxes = np.array([
        [[10, 10, 50, 40], [0, 0, 5, 5], [60, 60, 70, 70]],
        [[50, 20, 80, 70], [0, 0, 5, 5], [60, 60, 70, 70]],
    ], np.float32) + shift
    scores = np.array([[0.9, 0.05, 0.01], [0.8, 0.04, 0.02]], np.float32)
    classes = np.array([[0, 1, 1], [1, 0, 0]], np.int32)  # contiguous indices
    return {"boxes": boxes, "scores": scores, "classes": classes}


def test_perfect_detections_give_ap_one():
    evaluator = _evaluator()
    evaluator.add(np.array([1, 2]), _detections())
    metrics = evaluator.compute()
    assert list(metrics) == list(coco.BBOX_METRICS.names)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["APm"] == pytest.approx(1.0)
    assert metrics["APs"] == -1.0  # no small objects in the ground truth
    assert "Average Precision" in evaluator.summary
    # Results are COCO-format: xywh with 1-based category ids.
    first = evaluator.results[0]
    assert first["bbox"] == [10.0, 10.0, 40.0, 30.0] and first["category_id"] == 3


def test_shifted_boxes_lower_ap():
    evaluator = _evaluator()
    evaluator.add(np.array([1, 2]), _detections(shift=3.0))
    metrics = evaluator.compute()
    assert 0.0 < metrics["AP"] < 0.9
    assert metrics["AP50"] == pytest.approx(1.0)


def test_padding_rows_are_skipped_and_duplicates_rejected():
    evaluator = _evaluator()
    detections = _detections()
    evaluator.add(np.array([1, 1]), detections, valid=np.array([True, False]))
    assert len(evaluator.results) == 3
    with pytest.raises(ValueError, match="twice"):
        evaluator.add(np.array([1]), _first(detections))


def test_missing_image_counts_as_miss():
    evaluator = _evaluator()
    evaluator.add(np.array([1]), _first(_detections()))
    assert evaluator.compute()["AP"] == pytest.approx(0.5)


def test_no_detections_gives_zero():
    assert _evaluator().compute()["AP"] == 0.0
    # Without category_ids: the ground truth's categories in order.
    default = coco.CocoEvaluator(_ground_truth(), _box_records)
    assert default.category_ids.tolist() == [3, 7] and default.compute()["AP"] == 0.0


def test_reset_reuses_the_ground_truth_index():
    evaluator = _evaluator()
    evaluator.add(np.array([1, 2]), _detections(shift=3.0))
    shifted = evaluator.compute()["AP"]
    evaluator.reset()
    assert evaluator.results == [] and evaluator.summary == ""
    evaluator.add(np.array([1, 2]), _detections())  # no "evaluated twice" after reset
    assert evaluator.compute()["AP"] == pytest.approx(1.0) and shifted < 0.9


def test_results_are_rounded_and_written_under_their_name(tmp_path):
    evaluator = _evaluator()
    evaluator.add(np.array([1, 2]), _detections(shift=0.123))
    first = evaluator.results[0]
    # float32 0.9 and 10.123 rounded in float64 to the official 2 decimals.
    assert first["score"] == 0.9 and first["bbox"] == [10.12, 10.12, 40.0, 30.0]
    path = evaluator.write_results(tmp_path, "results_step_3")
    assert str(path) == str(tmp_path / "results_step_3.json")
    assert json.loads(path.read_text()) == evaluator.results


def test_keypoints_are_scored_with_the_keypoint_iou_type():
    # Two people with 17 joints; detections put every joint on the ground truth (OKS 1),
    # or 20 px off (OKS ~0 at these sizes).
    rng = np.random.default_rng(0)
    joints = {1: rng.uniform(20, 60, (17, 2)), 2: rng.uniform(20, 60, (17, 2))}
    annotations = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 60, 60], "area": 3600,
         "iscrowd": 0, "num_keypoints": 17,
         "keypoints": np.concatenate([joints[i], np.full((17, 1), 2)], -1).ravel().tolist()}
        for i in (1, 2)]
    ground_truth = {"images": [{"id": i, "width": 100, "height": 100} for i in (1, 2)],
                    "annotations": annotations,
                    "categories": [{"id": 1, "name": "person", "keypoints": [""] * 17}]}

    def keypoint_records(image_id, detections, category_ids):
        return [{"image_id": image_id, "category_id": int(category_ids[0]), "score": float(s),
                 "keypoints": np.concatenate([k, np.ones((17, 1))], -1).ravel().tolist()}
                for k, s in zip(detections["keypoints"], detections["scores"])]

    evaluator = coco.CocoEvaluator(ground_truth, keypoint_records, iou_type="keypoints")
    assert evaluator.metrics is coco.KEYPOINT_METRICS
    exact = {"keypoints": np.stack([joints[1], joints[2]])[:, None],
             "scores": np.array([[0.9], [0.8]])}
    evaluator.add(np.array([1, 2]), exact)
    metrics = evaluator.compute()
    assert list(metrics) == list(coco.KEYPOINT_METRICS.names)
    assert metrics["AP"] == pytest.approx(1.0)
    evaluator.reset()
    evaluator.add(np.array([1, 2]), dict(exact, keypoints=exact["keypoints"] + 20.0))
    assert evaluator.compute()["AP"] < 0.1
    with pytest.raises(ValueError, match="iou_type"):
        coco.CocoEvaluator(ground_truth, keypoint_records, iou_type="segm")
