"""Tests for centernet_jax.affine: the official warp construction and its inverse."""

import cv2
import numpy as np
import pytest

from centernet_jax import affine


def _reference_points(center, scale, rot, output_size, shift=(0.0, 0.0)):
    """The official three correspondences, built independently (float32, like the original)."""
    s = np.asarray(scale, np.float64).reshape(-1)
    src_w = s[0]
    out_w, out_h = output_size
    angle = np.deg2rad(rot)
    rotated = np.array([0.5 * src_w * np.sin(angle), -0.5 * src_w * np.cos(angle)])
    scaled_shift = (s if s.size == 2 else np.array([s[0], s[0]])) * np.asarray(shift)
    src0 = np.asarray(center, np.float64) + scaled_shift
    src1 = src0 + rotated
    dst0 = np.array([out_w / 2.0, out_h / 2.0])
    dst1 = dst0 + np.array([0.0, -0.5 * out_w])

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]])

    # The third point is built from the already-rounded float32 points, as in the original.
    src0, src1, dst0, dst1 = (np.float32(p) for p in (src0, src1, dst0, dst1))
    src = np.float32([src0, src1, third(src0, src1)])
    dst = np.float32([dst0, dst1, third(dst0, dst1)])
    return src, dst


def test_matches_cv2_get_affine_transform_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(50):
        center = rng.uniform(-50, 700, size=2).astype(np.float32)
        scale = rng.uniform(10, 900)
        rot = rng.choice([0.0, rng.uniform(-45, 45)])
        shift = rng.uniform(-0.2, 0.2, size=2)
        output_size = tuple(int(v) for v in rng.integers(8, 600, size=2))
        src, dst = _reference_points(center, scale, rot, output_size, shift)
        for inv in (False, True):
            expected = cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)
            got = affine.get_affine_transform(center, scale, rot, output_size, shift, inv=inv)
            assert got.shape == (2, 3) and got.dtype == np.float64
            np.testing.assert_allclose(got, expected, rtol=1e-10,
                                       atol=1e-10 * np.abs(expected).max())


def test_solve_affine_from_points_matches_cv2():
    rng = np.random.default_rng(1)
    for _ in range(20):
        src = rng.uniform(-100, 100, size=(3, 2)).astype(np.float32)
        dst = rng.uniform(-100, 100, size=(3, 2)).astype(np.float32)
        np.testing.assert_allclose(affine.solve_affine_from_points(src, dst),
                                   cv2.getAffineTransform(src, dst), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="collinear"):
        affine.solve_affine_from_points([[0, 0], [1, 1], [2, 2]], [[0, 0], [1, 0], [0, 1]])


def test_similarity_uses_only_scale_width_and_centres_the_window():
    matrix = affine.get_affine_transform(np.float32([300, 200]), (400, 50), 0, (128, 64))
    np.testing.assert_allclose(matrix, [[0.32, 0, 128 / 2 - 0.32 * 300],
                                        [0, 0.32, 64 / 2 - 0.32 * 200]], atol=1e-12)
    np.testing.assert_allclose(
        matrix, affine.get_affine_transform(np.float32([300, 200]), 400.0, 0, (128, 64)))


def test_affine_transform_points_by_hand():
    matrix = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    points = np.array([[[0.0, 0.0], [1.0, 2.0]]])
    np.testing.assert_allclose(affine.affine_transform_points(points, matrix),
                               [[[1.0, -1.0], [3.0, 5.0]]])
    with pytest.raises(ValueError):
        affine.affine_transform_points(np.zeros((4, 3)), matrix)
    with pytest.raises(ValueError):
        affine.affine_transform_points(points, np.zeros((3, 3)))


def test_fix_res_hand_worked():
    # A 200 (w) x 100 (h) image letterboxed into 128x128: c = (100, 50), s = 200, and the output
    # grid is 32x32, so x_out = (x - 100) * 0.16 + 16 and y_out = (y - 50) * 0.16 + 16.
    center, scale, out_hw = np.float32([100, 50]), 200.0, (32, 32)
    forward = affine.get_affine_transform(center, scale, 0, (32, 32))
    np.testing.assert_allclose(forward, [[0.16, 0, 0], [0, 0.16, 8]], atol=1e-12)
    whole_image = affine.affine_transform_points(np.array([[0, 0], [200, 100]]), forward)
    np.testing.assert_allclose(whole_image, [[0, 8], [32, 24]], atol=1e-12)

    boxes_out = np.array([[[16, 16, 20, 24], [0, 8, 32, 24]]], dtype=np.float32)
    back = affine.boxes_to_image(boxes_out, center[None], np.array([scale]), out_hw)
    assert back.dtype == np.float32 and back.shape == (1, 2, 4)
    np.testing.assert_allclose(back, [[[100, 50, 125, 100], [0, 0, 200, 100]]], atol=1e-4)
    back2 = affine.boxes_to_image(boxes_out, center[None], np.array([[scale, scale]]), out_hw)
    np.testing.assert_array_equal(back, back2)


def test_round_trip_recovers_boxes():
    rng = np.random.default_rng(2)
    batch, num_boxes, out_hw = 5, 7, (24, 40)  # non-square output grid
    centers = rng.uniform(20, 300, size=(batch, 2)).astype(np.float32)
    scales = rng.uniform(50, 600, size=(batch,))
    boxes = rng.uniform(0, 400, size=(batch, num_boxes, 4))
    forward = np.stack([
        affine.affine_transform_points(
            boxes[b].reshape(-1, 2),
            affine.get_affine_transform(centers[b], scales[b], 0, (out_hw[1], out_hw[0])),
        ).reshape(num_boxes, 4)
        for b in range(batch)
    ])
    back = affine.boxes_to_image(forward, centers, np.stack([scales, scales * 0.5], 1), out_hw)
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, boxes, atol=1e-8)


def test_boxes_to_image_bad_shapes():
    with pytest.raises(ValueError, match="boxes"):
        affine.boxes_to_image(np.zeros((2, 4)), np.zeros((2, 2)), np.ones(2), (8, 8))
    with pytest.raises(ValueError, match="center"):
        affine.boxes_to_image(np.zeros((2, 3, 4)), np.zeros((3, 2)), np.ones(2), (8, 8))
    with pytest.raises(ValueError, match="scale"):
        affine.boxes_to_image(np.zeros((2, 3, 4)), np.zeros((2, 2)), np.ones((2, 3)), (8, 8))
    assert affine.boxes_to_image(np.zeros((0, 3, 4)), np.zeros((0, 2)), np.ones(0),
                                 (8, 8)).shape == (0, 3, 4)
