"""Drawing detections and heatmaps."""

import numpy as np

from centernet_jax import viz


def test_draw_detections_marks_only_confident_boxes():
    image = np.zeros((40, 60, 3), np.uint8)
    boxes = np.array([[5, 5, 20, 20], [30, 10, 50, 30]], np.float32)
    out = viz.draw_detections(image, boxes, np.array([0.9, 0.1]), np.array([0, 1]),
                              ["a", "b"], threshold=0.3)
    assert out.shape == image.shape and out.dtype == np.uint8
    color = np.array(viz.class_colors(2)[0])
    assert np.all(out[20, 10] == color)  # bottom edge of the confident box
    assert not out[30, 40].any() and not out[20, 50].any()  # the weak box is not drawn


def test_draw_detections_tolerates_inverted_and_non_finite_boxes():
    image = np.zeros((40, 60, 3), np.uint8)
    boxes = np.array([[20, 20, 5, 5], [np.nan, 1, 2, 3]], np.float32)  # untrained-model output
    out = viz.draw_detections(image, boxes, np.array([0.9, 0.8]), np.array([0, 1]),
                              ["a", "b"], threshold=0.3)
    assert np.all(out[20, 10] == np.array(viz.class_colors(2)[0]))


def test_heatmap_overlay_colours_hot_cells():
    image = np.full((16, 16, 3), 100, np.uint8)
    heatmap = np.zeros((4, 4, 2), np.float32)
    heatmap[1, 2, 1] = 1.0
    out = viz.heatmap_overlay(image, heatmap, alpha=1.0)
    assert np.all(out[4:8, 8:12] == np.array(viz.class_colors(2)[1], np.uint8))
    assert np.all(out[0:4, 0:4] == 100)


def test_denormalize_inverts_normalisation_and_flips_to_rgb():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    mean, std = (0.4, 0.45, 0.5), (0.3, 0.25, 0.2)
    normalised = (rgb[..., ::-1] / 255.0 - mean) / std
    np.testing.assert_allclose(viz.denormalize(normalised, mean, std), rgb, atol=1)


def test_side_by_side_pads_heights():
    out = viz.side_by_side(np.zeros((4, 3, 3), np.uint8), np.zeros((6, 2, 3), np.uint8), gap=1)
    assert out.shape == (6, 6, 3)


def test_upscale_by_integer_factor():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big, factor = viz.upscale(image, min_height=5)
    assert factor == 3 and big.shape == (6, 9, 3)
    same, factor = viz.upscale(np.zeros((300, 4, 3), np.uint8), min_height=256)
    assert factor == 1 and same.shape == (300, 4, 3)
