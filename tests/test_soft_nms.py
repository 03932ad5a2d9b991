"""Soft-NMS and the multi-scale merge (the official merge_outputs), on hand-built detections."""

import math

import numpy as np
import pytest

from centernet_jax import soft_nms as snms

F32 = np.float32


def _gaussian_weight(iou: float, sigma: float = 0.5) -> float:
    return math.exp(-iou * iou / sigma)


def _iou_plus_one(a, b) -> float:
    """IoU with the +1-pixel convention, in exact Python arithmetic."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


# --- Slow direct reference: the sequential in-place loop with scalar math. -------------------

def reference_soft_nms(boxes, scores, *, sigma=0.5, iou_threshold=0.5, threshold=0.001,
                       method="gaussian"):
    """Literal scalar transcription; returns (dets float32 [n, 5], source [n], active count).

    float32 scalars throughout, except the +1 extents, areas and union (Python floats, i.e.
    float64, rounded to float32 when stored) and exp (float64, rounded).
    """
    dets = np.concatenate([np.asarray(boxes, F32), np.asarray(scores, F32)[:, None]], 1)
    source = list(range(len(dets)))
    sigma, iou_threshold, threshold = F32(sigma), F32(iou_threshold), F32(threshold)
    active = len(dets)
    for i in range(len(dets)):  # the bound is fixed when the loop starts
        best_score, best = dets[i, 4], i
        pos = i + 1
        while pos < active:
            if best_score < dets[pos, 4]:
                best_score, best = dets[pos, 4], pos
            pos += 1
        row_i, source_i = dets[i].copy(), source[i]
        dets[i], source[i] = dets[best], source[best]
        dets[best], source[best] = row_i, source_i
        tx1, ty1, tx2, ty2 = dets[i, :4]
        pos = i + 1
        while pos < active:
            x1, y1, x2, y2 = dets[pos, :4]
            area = F32((float(x2 - x1) + 1.0) * (float(y2 - y1) + 1.0))
            iw = F32(float(min(tx2, x2) - max(tx1, x1)) + 1.0)
            if iw > 0:
                ih = F32(float(min(ty2, y2) - max(ty1, y1)) + 1.0)
                if ih > 0:
                    union = F32((float(tx2 - tx1) + 1.0) * (float(ty2 - ty1) + 1.0)
                                + float(area) - float(iw * ih))
                    iou = iw * ih / union
                    if method == "linear":
                        weight = F32(1) - iou if iou > iou_threshold else F32(1)
                    elif method == "gaussian":
                        weight = F32(math.exp(float(-(iou * iou) / sigma)))
                    else:
                        weight = F32(0) if iou > iou_threshold else F32(1)
                    dets[pos, 4] = weight * dets[pos, 4]
                    if dets[pos, 4] < threshold:
                        dets[pos] = dets[active - 1]
                        source[pos] = source[active - 1]
                        active -= 1
                        pos -= 1
            pos += 1
    return dets, np.array(source), active


def _random_case(seed: int):
    """Clustered boxes (many overlaps, some exact duplicates) and log-uniform scores."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    centres = rng.uniform(0, 200, (int(rng.integers(1, 6)), 2))
    xy = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(4, 50, (n, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
    duplicates = rng.random(n) < 0.2
    boxes[duplicates] = boxes[rng.integers(0, n, n)][duplicates]
    scores = 10.0 ** rng.uniform(-4.5, 0, n)
    if seed % 4 == 0:  # coarse scores: many exact ties exercise the first-max rule
        scores = np.round(scores, 2)
    method = ("gaussian", "linear", "hard")[seed % 3]
    threshold = (0.001, 0.02)[seed % 2]
    return boxes.astype(F32), scores.astype(F32), method, threshold


@pytest.mark.parametrize("official", [True, False])
def test_matches_scalar_reference_on_random_cases(official):
    discarded = 0
    for seed in range(20):
        boxes, scores, method, threshold = _random_case(seed)
        dets, source, active = reference_soft_nms(boxes, scores, method=method,
                                                  threshold=threshold)
        got = snms.soft_nms(boxes, scores, method=method, threshold=threshold,
                            official=official)
        rows = len(dets) if official else active
        np.testing.assert_array_equal(got.boxes, dets[:rows, :4], err_msg=f"seed {seed}")
        np.testing.assert_array_equal(got.scores, dets[:rows, 4], err_msg=f"seed {seed}")
        np.testing.assert_array_equal(got.keep, source[:rows], err_msg=f"seed {seed}")
        discarded += len(dets) - active
    assert discarded > 50  # the cases really exercise the discard/copy path


def test_spec_stale_row_example_official():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]
    got = snms.soft_nms(boxes, [0.9, 0.0009, 0.5])
    # The 0.0009 box is discarded by copying the 0.5 row over it; the original row stays.
    np.testing.assert_array_equal(got.boxes, [[0, 0, 10, 10], [50, 50, 60, 60],
                                              [50, 50, 60, 60]])
    np.testing.assert_array_equal(got.scores, F32([0.9, 0.5, 0.5]))
    np.testing.assert_array_equal(got.keep, [0, 2, 2])


def test_spec_stale_row_example_corrected():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]
    got = snms.soft_nms(boxes, [0.9, 0.0009, 0.5], official=False)
    np.testing.assert_array_equal(got.boxes, [[0, 0, 10, 10], [50, 50, 60, 60]])
    np.testing.assert_array_equal(got.scores, F32([0.9, 0.5]))
    np.testing.assert_array_equal(got.keep, [0, 2])


def test_discarded_last_row_stays_with_its_decayed_score():
    # The discarded box is the last active row: it is copied over itself, so the stale row
    # carries its decayed (sub-threshold) score.
    boxes = [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]]
    got = snms.soft_nms(boxes, [0.9, 0.5, 0.005])
    expected = F32(0.005) * F32(math.exp(-2.0))  # iou 1 -> weight exp(-1 / 0.5)
    assert expected < 0.001
    np.testing.assert_array_equal(got.scores, [F32(0.9), F32(0.5), expected])
    np.testing.assert_array_equal(got.keep, [0, 1, 2])
    np.testing.assert_array_equal(snms.soft_nms(boxes, [0.9, 0.5, 0.005], official=False).keep,
                                  [0, 1])


def test_gaussian_decay_uses_plus_one_iou():
    a, b = [0, 0, 9, 9], [5, 0, 14, 9]
    # +1 convention: areas 10*10 = 100, intersection 5*10 = 50, union 150 -> IoU 1/3.
    iou = 50 / 150
    assert _iou_plus_one(a, b) == pytest.approx(iou)
    expected = 0.8 * math.exp(-iou * iou / 0.5)
    without_plus_one = 0.8 * math.exp(-(36 / 126) ** 2 / 0.5)  # 4*9 / (81 + 81 - 36)
    got = snms.soft_nms([a, b], [0.9, 0.8], official=False)
    np.testing.assert_array_equal(got.keep, [0, 1])
    assert got.scores[0] == F32(0.9)
    assert got.scores[1] == pytest.approx(expected, rel=1e-6)
    assert abs(got.scores[1] - without_plus_one) > 1e-3


def test_sigma_changes_the_gaussian_decay():
    got = snms.soft_nms([[0, 0, 9, 9], [0, 0, 9, 9]], [0.9, 0.8], sigma=2.0, official=False)
    assert got.scores[1] == pytest.approx(0.8 * math.exp(-1 / 2.0), rel=1e-6)


def test_touching_boxes_overlap_by_one_pixel():
    a, b, c = [0, 0, 10, 10], [10, 0, 20, 10], [21, 0, 31, 10]
    got = snms.soft_nms([a, b, c], [0.9, 0.8, 0.7], official=False)
    # a and b share the column x = 10 (IoU 11/231); c starts one pixel after b ends.
    assert got.scores[1] == pytest.approx(0.8 * _gaussian_weight(11 / 231), rel=1e-6)
    assert got.scores[1] < F32(0.8)
    assert got.scores[2] == F32(0.7)


LINEAR_BOXES = [[0, 0, 9, 9], [0, 0, 9, 14], [5, 0, 14, 9]]  # IoU(0,1)=2/3, (0,2)=1/3, (1,2)=1/4


def test_linear_method_decays_only_above_iou_threshold():
    got = snms.soft_nms(LINEAR_BOXES, [0.9, 0.8, 0.7], method="linear", official=False)
    # Box 2 (IoU 1/3 and 1/4 <= 0.5) is untouched and now ranks above box 1 (0.8 * 1/3).
    np.testing.assert_array_equal(got.keep, [0, 2, 1])
    assert got.scores[1] == F32(0.7)
    assert got.scores[2] == pytest.approx(0.8 * (1 - 2 / 3), rel=1e-6)


def test_hard_method_discards_above_iou_threshold():
    scores = [0.9, 0.8, 0.7]
    corrected = snms.soft_nms(LINEAR_BOXES, scores, method="hard", official=False)
    np.testing.assert_array_equal(corrected.keep, [0, 2])
    np.testing.assert_array_equal(corrected.scores, F32([0.9, 0.7]))
    official = snms.soft_nms(LINEAR_BOXES, scores, method="hard")
    np.testing.assert_array_equal(official.keep, [0, 2, 2])  # a stale copy of box 2
    # A lower iou_threshold also suppresses the IoU-1/3 box.
    strict = snms.soft_nms(LINEAR_BOXES, scores, method="hard", iou_threshold=0.3,
                           official=False)
    np.testing.assert_array_equal(strict.keep, [0])


def test_threshold_discards_only_overlapping_boxes():
    same = [0, 0, 10, 10]
    boxes = [same, same, same, [100, 100, 110, 110]]
    # Identical boxes: IoU 1, weight exp(-2) = 0.1353: 0.007 -> 0.00095 (< 0.001, dropped),
    # 0.008 -> 0.00108 (kept). The disjoint 0.0005 box is never tested against the threshold.
    got = snms.soft_nms(boxes, [0.9, 0.007, 0.008, 0.0005], official=False)
    np.testing.assert_array_equal(got.keep, [0, 2, 3])
    assert got.scores[1] == pytest.approx(0.008 * math.exp(-2), rel=1e-6)
    assert got.scores[2] == F32(0.0005)
    # A higher threshold drops the 0.008 box too.
    np.testing.assert_array_equal(
        snms.soft_nms(boxes, [0.9, 0.007, 0.008, 0.0005], threshold=0.002,
                      official=False).keep, [0, 3])


def test_disjoint_boxes_are_only_sorted():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [40, 40, 45, 45]],
                     np.float64)
    scores = np.array([0.2, 0.9, 0.5, 0.7])
    for official in (True, False):
        got = snms.soft_nms(boxes, scores, official=official)
        np.testing.assert_array_equal(got.keep, [1, 3, 2, 0])
        np.testing.assert_array_equal(got.boxes, boxes[[1, 3, 2, 0]].astype(F32))
        np.testing.assert_array_equal(got.scores, scores[[1, 3, 2, 0]].astype(F32))
        assert got.boxes.dtype == F32 and got.scores.dtype == F32


def test_output_is_best_first():
    for seed in range(5):
        boxes, scores, _, _ = _random_case(100 + seed)
        corrected = snms.soft_nms(boxes, scores, official=False)
        assert np.all(np.diff(corrected.scores) <= 0)
        assert len(np.unique(corrected.keep)) == len(corrected.keep)
        official = snms.soft_nms(boxes, scores)
        assert len(official.scores) == len(scores)
        # The official array starts with the kept rows; only the tail holds stale copies.
        np.testing.assert_array_equal(official.scores[:len(corrected.scores)],
                                      corrected.scores)


def test_empty_and_single_inputs():
    got = snms.soft_nms(np.zeros((0, 4)), np.zeros(0))
    assert got.boxes.shape == (0, 4) and got.scores.shape == (0,) and got.keep.shape == (0,)
    got = snms.soft_nms([[1, 2, 3, 4]], [0.0001])
    np.testing.assert_array_equal(got.scores, F32([0.0001]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(boxes=np.zeros((3, 3)), scores=np.zeros(3)), "boxes"),
    (dict(boxes=np.zeros(4), scores=np.zeros(1)), "boxes"),
    (dict(boxes=np.zeros((3, 4)), scores=np.zeros(2)), "scores"),
    (dict(boxes=[[0, 0, np.nan, 1]], scores=[0.5]), "boxes must be finite"),
    (dict(boxes=[[0, 0, 1, 1]], scores=[np.inf]), "scores must be finite"),
    (dict(boxes=[[0, 0, 1, 1]], scores=[0.5], method="cubic"), "method"),
    (dict(boxes=[[0, 0, 1, 1]], scores=[0.5], sigma=0.0), "sigma"),
    (dict(boxes=[[0, 0, 1, 1]], scores=[0.5], sigma=-1.0), "sigma"),
    (dict(boxes=[[0, 0, 1, 1]], scores=[0.5], threshold=np.nan), "threshold"),
])
def test_soft_nms_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        snms.soft_nms(**kwargs)


# --- merge_detections -------------------------------------------------------------------------

def _dets(boxes, scores, classes):
    return {"boxes": np.asarray(boxes, np.float32), "scores": np.asarray(scores, np.float32),
            "classes": np.asarray(classes, np.int32)}


P, Q = [0, 0, 9, 9], [100, 100, 109, 109]
TWO_SCALES = [_dets([P, P], [0.9, 0.8], [0, 1]), _dets([P, Q], [0.6, 0.7], [0, 1])]


def test_merge_runs_soft_nms_per_class():
    merged = snms.merge_detections(TWO_SCALES, num_classes=3)
    np.testing.assert_array_equal(merged["classes"], [0, 0, 1, 1])
    np.testing.assert_array_equal(merged["boxes"], [P, P, P, Q])
    # Class 0: the two scales' copies of P (IoU 1) -> 0.6 * exp(-2). Class 1's P (0.8) is
    # not suppressed by class 0's 0.9 box, and Q is disjoint.
    np.testing.assert_allclose(merged["scores"], [0.9, 0.6 * math.exp(-2), 0.8, 0.7],
                               rtol=1e-6)
    assert merged["boxes"].dtype == F32 and merged["classes"].dtype == np.int32


def test_merge_without_nms_concatenates_scales_per_class():
    merged = snms.merge_detections(TWO_SCALES, num_classes=3, apply_nms=False)
    np.testing.assert_array_equal(merged["classes"], [0, 0, 1, 1])
    np.testing.assert_array_equal(merged["scores"], F32([0.9, 0.6, 0.8, 0.7]))
    np.testing.assert_array_equal(merged["boxes"], [P, P, P, Q])


def test_merge_keeps_stale_rows_only_in_official_mode():
    scales = [_dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.0009], [2, 2]),
              _dets([[50, 50, 60, 60]], [0.5], [2])]
    official = snms.merge_detections(scales, num_classes=3)
    np.testing.assert_array_equal(official["scores"], F32([0.9, 0.5, 0.5]))
    np.testing.assert_array_equal(official["classes"], [2, 2, 2])
    corrected = snms.merge_detections(scales, num_classes=3, official=False)
    np.testing.assert_array_equal(corrected["scores"], F32([0.9, 0.5]))


def test_max_per_image_cut_keeps_ties():
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(5)]
    dets = [_dets(boxes, [0.9, 0.5, 0.5, 0.5, 0.1], [0, 1, 0, 2, 1])]
    # The 2nd largest score is 0.5, shared by three rows: all of them stay (4 > 2).
    cut = snms.merge_detections(dets, num_classes=3, max_per_image=2)
    np.testing.assert_array_equal(cut["scores"], F32([0.9, 0.5, 0.5, 0.5]))
    np.testing.assert_array_equal(cut["classes"], [0, 0, 1, 2])
    top1 = snms.merge_detections(dets, num_classes=3, max_per_image=1)
    np.testing.assert_array_equal(top1["scores"], F32([0.9]))
    no_cut = snms.merge_detections(dets, num_classes=3, max_per_image=5)
    assert len(no_cut["scores"]) == 5


def test_merge_handles_empty_scales():
    empty = _dets(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    merged = snms.merge_detections([empty, empty], num_classes=2)
    assert merged["boxes"].shape == (0, 4) and merged["classes"].shape == (0,)


@pytest.mark.parametrize("per_scale, kwargs, match", [
    (TWO_SCALES, dict(num_classes=1), "classes"),
    ([_dets([P], [0.5], [-1])], dict(num_classes=2), "classes"),
    ([{"boxes": [P], "scores": [0.5], "classes": [0.0]}], dict(num_classes=2),
     "classes must be integers"),
    ([_dets([P], [0.5, 0.4], [0, 0])], dict(num_classes=2), "scores"),
    (TWO_SCALES, dict(num_classes=3, max_per_image=0), "max_per_image"),
    (TWO_SCALES, dict(num_classes=0), "num_classes"),
    ([], dict(num_classes=3), "per_scale"),
    ([{"boxes": np.zeros((0, 4))}], dict(num_classes=3), "per_scale"),
    (TWO_SCALES, dict(num_classes=3, method="soft"), "method"),
    (TWO_SCALES, dict(num_classes=3, sigma=0), "sigma"),
])
def test_merge_rejects_bad_arguments(per_scale, kwargs, match):
    with pytest.raises(ValueError, match=match):
        snms.merge_detections(per_scale, **kwargs)
