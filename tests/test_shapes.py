"""Tests for the embedded procedurally generated dataset (centernet_jax.data.shapes)."""

import contextlib
import io
import pickle
import time

import numpy as np
import pytest

from centernet_jax.data import shapes
from centernet_jax.data.shapes import CLASS_NAMES, ShapesSource


def _assert_examples_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_example_structure():
    source = ShapesSource("train", num_examples=30, seed=3)
    assert len(source) == 30 and source.num_classes == len(CLASS_NAMES) == 5
    assert source.category_ids == (1, 2, 3, 4, 5)
    for index in range(30):
        example = source[index]
        image, boxes, classes = example["image"], example["boxes"], example["classes"]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert boxes.dtype == np.float32 and boxes.shape == (len(classes), 4)
        assert classes.dtype == np.int32 and np.all((classes >= 0) & (classes < 5))
        assert example["image_id"].dtype == np.int64 and example["image_id"] == index + 1
        np.testing.assert_array_equal(example["image_hw"], image.shape[:2])
        assert example["image_hw"].dtype == np.int32
        height, width = image.shape[:2]
        assert 96 <= height <= 160 and 96 <= width <= 160
        assert 1 <= len(boxes) <= 8
        # Inside the image (x2 = last column + 1 <= width) and non-degenerate.
        assert np.all(boxes[:, :2] >= 0)
        assert np.all(boxes[:, 2] <= width) and np.all(boxes[:, 3] <= height)
        assert np.all(boxes[:, 2] - boxes[:, 0] >= 4) and np.all(boxes[:, 3] - boxes[:, 1] >= 4)


def test_deterministic_from_seed_split_index():
    source = ShapesSource("train", num_examples=10, seed=5)
    _assert_examples_equal(source[7], source[7])
    _assert_examples_equal(source[7], ShapesSource("train", num_examples=99, seed=5)[7])
    _assert_examples_equal(source[7], pickle.loads(pickle.dumps(source))[7])
    other_seed = ShapesSource("train", num_examples=10, seed=6)[7]
    other_split = ShapesSource("val", num_examples=10, seed=5)[7]
    for other in (other_seed, other_split):
        assert (other["image"].shape != source[7]["image"].shape
                or not np.array_equal(other["image"], source[7]["image"]))
    assert not np.array_equal(source[0]["image"], source[1]["image"])


def test_image_sizes_vary_and_are_not_square():
    source = ShapesSource("val", 40)
    sizes = {(layout.height, layout.width) for layout in map(source._layout, range(40))}
    assert len(sizes) > 30
    assert sum(h != w for h, w in sizes) > 30


def test_boxes_are_tight_and_objects_mostly_visible():
    source = ShapesSource("train", num_examples=40, seed=1)
    for index in range(40):
        layout = source._layout(index)
        on_top = np.zeros((layout.height, layout.width), dtype=bool)
        # Walk from the top object down, accumulating what covers each object.
        for obj in reversed(layout.objects):
            rows, cols = np.nonzero(obj.mask)
            np.testing.assert_array_equal(
                obj.box, [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            visible = np.sum(obj.mask & ~on_top) / np.sum(obj.mask)
            assert visible >= source.min_visible - 1e-9
            on_top |= obj.mask
        np.testing.assert_array_equal(source[index]["boxes"],
                                      np.array([o.box for o in layout.objects]).reshape(-1, 4))


def test_object_pixels_have_their_colour_and_contrast_with_background():
    source = ShapesSource("train", num_examples=30, seed=2, noise_std=(0.0, 0.0))
    far_enough, total = 0, 0
    for index in range(30):
        layout = source._layout(index)
        image = source._render(layout).astype(np.float32)
        c0, c1 = layout.background_colours
        covered = np.zeros(image.shape[:2], dtype=bool)
        for obj in reversed(layout.objects):
            visible = obj.mask & ~covered
            np.testing.assert_allclose(image[visible], np.broadcast_to(
                np.clip(np.rint(obj.colour), 0, 255), image[visible].shape))
            covered |= obj.mask
            distance = shapes._distance_to_segment(obj.colour[None], c0, c1)[0]
            far_enough += distance >= source.min_contrast
            total += 1
        # Background pixels lie on the segment between the two background colours.
        background = image[~covered]
        assert shapes._distance_to_segment(background, c0, c1).max() < 2.0
    assert far_enough / total > 0.95


def test_sizes_span_small_to_large_and_classes_and_backgrounds_vary():
    source = ShapesSource("train", num_examples=150, seed=0)
    layouts = [source._layout(i) for i in range(150)]
    boxes = np.concatenate([np.array([o.box for o in l.objects]).reshape(-1, 4) for l in layouts])
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert side.min() < 12 and side.max() > 90
    assert np.mean(side < 16) > 0.1 and np.mean(side > 48) > 0.1
    classes = [o.class_id for l in layouts for o in l.objects]
    assert np.bincount(classes, minlength=5).min() > 0.1 * len(classes)
    assert {l.background_kind for l in layouts} == set(shapes.BACKGROUND_KINDS)


def test_coco_ground_truth_matches_examples():
    pycocotools_coco = pytest.importorskip("pycocotools.coco")
    source = ShapesSource("val", num_examples=25, seed=4)
    gt = source.coco_ground_truth()
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3, 4, 5]
    assert [c["name"] for c in gt["categories"]] == list(CLASS_NAMES)
    assert [im["id"] for im in gt["images"]] == list(range(1, 26))
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"])
    coco = pycocotools_coco.COCO()
    coco.dataset = gt
    coco.createIndex()
    for index in range(25):
        example = source[index]
        image_id = int(example["image_id"])
        info = coco.imgs[image_id]
        assert (info["height"], info["width"]) == tuple(example["image"].shape[:2])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        xywh = np.array([a["bbox"] for a in anns]).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        np.testing.assert_allclose(boxes, example["boxes"])
        assert [a["category_id"] - 1 for a in anns] == example["classes"].tolist()
        assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in anns)
    # The dict works with COCOeval: the ground truth as detections scores AP 1.
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"],
                   "bbox": a["bbox"], "score": 1.0} for a in gt["annotations"]]
    evaluator = cocoeval.COCOeval(coco, coco.loadRes(detections), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_speed():
    source = ShapesSource("train", num_examples=500, seed=0)
    start = time.perf_counter()
    source.coco_ground_truth()
    assert time.perf_counter() - start < 2.0
    start = time.perf_counter()
    for index in range(50):
        source[index]
    assert (time.perf_counter() - start) / 50 < 0.01


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        ShapesSource("test")
    with pytest.raises(ValueError, match="image_size"):
        ShapesSource(image_size=(160, 96))
    with pytest.raises(ValueError, match="objects_per_image"):
        ShapesSource(objects_per_image=(3, 1))
    with pytest.raises(ValueError, match="object_size"):
        ShapesSource(object_size=(100, 0.5))
    source = ShapesSource(num_examples=3)
    with pytest.raises(IndexError):
        source[3]
    with pytest.raises(TypeError):
        source[1.0]
    assert source[np.int64(2)]["image_id"] == 3
