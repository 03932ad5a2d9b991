"""Tests for the host-side train/eval transforms (centernet_jax.data.transforms)."""

import pickle

import cv2
import grain
import numpy as np
import pytest

from centernet_jax import affine
from centernet_jax.data import transforms
from centernet_jax.data.transforms import (COCO_MEAN_BGR, COCO_STD_BGR, EvalTransform,
                                           TrainTransform)

PLAIN = dict(color_aug=False, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _element(height, width, boxes, classes=None, seed=0, image_id=7):
    rng = np.random.default_rng(seed)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if classes is None:
        classes = np.arange(len(boxes)) % 3
    return {"image": rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8),
            "boxes": boxes, "classes": np.asarray(classes, dtype=np.int32),
            "image_id": np.int64(image_id)}


def _hand_matrix(center, scale, out_w, out_h):
    """The similarity by hand: factor out_w / s, centre -> canvas centre."""
    k = out_w / scale
    return np.array([[k, 0.0, out_w / 2.0 - k * center[0]], [0.0, k, out_h / 2.0 - k * center[1]]])


def _hand_boxes(boxes, center, scale, out_w, out_h):
    k = out_w / scale
    x = (boxes[:, [0, 2]] - center[0]) * k + out_w / 2.0
    y = (boxes[:, [1, 3]] - center[1]) * k + out_h / 2.0
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)


def test_get_border_by_hand():
    assert transforms.get_border(128, 640) == 128
    assert transforms.get_border(128, 257) == 128
    assert transforms.get_border(128, 256) == 64
    assert transforms.get_border(128, 150) == 64
    assert transforms.get_border(128, 100) == 32
    assert transforms.get_border(32, 65) == 32
    assert transforms.get_border(128, 1) == 0


def test_random_crop_scales_are_the_official_eight():
    assert len(transforms.RANDOM_CROP_SCALES) == 8
    np.testing.assert_allclose(transforms.RANDOM_CROP_SCALES, np.arange(6, 14) / 10, atol=1e-12)


@pytest.mark.parametrize("want_flip", [False, True])
def test_random_crop_known_box_with_fixed_rng(want_flip):
    # 150 (w) x 100 (h): borders 64 (x) and 32 (y); input 64x64, output 16x16.
    boxes = np.array([[10, 20, 60, 70], [100, 5, 149, 99]], dtype=np.float32)
    element = _element(100, 150, boxes)
    transform = TrainTransform(input_hw=(64, 64), max_objects=4, **PLAIN)

    def replay(seed):
        """The transform's draws in order: scale choice, centre x, centre y, flip."""
        rng = np.random.default_rng(seed)
        scale = 150 * transforms.RANDOM_CROP_SCALES[rng.integers(8)]
        center = np.array([rng.integers(64, 150 - 64), rng.integers(32, 100 - 32)], float)
        return scale, center, rng.random() < 0.5

    seed = next(s for s in range(100) if replay(s)[2] == want_flip)
    scale, center, flipped = replay(seed)
    image, expected = element["image"], boxes.astype(np.float64)
    if flipped:
        image = image[:, ::-1]
        center[0] = 150 - center[0] - 1
        expected = np.stack([150 - boxes[:, 2] - 1, boxes[:, 1], 150 - boxes[:, 0] - 1,
                             boxes[:, 3]], axis=1)
    out = transform.random_map(element, np.random.default_rng(seed))
    np.testing.assert_allclose(out["boxes"][:2], _hand_boxes(expected, center, scale, 16, 16),
                               atol=1e-4)
    assert not out["mask"][2:].any() and out["mask"][:2].all()
    warped = cv2.warpAffine(np.ascontiguousarray(image), _hand_matrix(center, scale, 64, 64),
                            (64, 64), flags=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out["image"], warped / 255.0, atol=1.5 / 255)


def test_not_rand_crop_known_box_with_fixed_rng():
    boxes = np.array([[30, 40, 90, 80]], dtype=np.float32)
    element = _element(100, 150, boxes)
    transform = TrainTransform(input_hw=(32, 64), max_objects=2, not_rand_crop=True,
                               flip_prob=0.0, **PLAIN)
    replay = np.random.default_rng(11)
    dx, dy, ds = replay.standard_normal(3)
    center = np.array([75 + 150 * np.clip(dx * 0.1, -0.2, 0.2),
                       50 + 150 * np.clip(dy * 0.1, -0.2, 0.2)])
    scale = 150 * np.clip(ds * 0.4 + 1, 0.6, 1.4)
    out = transform.random_map(element, np.random.default_rng(11))
    # Output grid 8 (h) x 16 (w): only s[0] and out_w set the factor.
    np.testing.assert_allclose(out["boxes"][:1], _hand_boxes(boxes, center, scale, 16, 8),
                               atol=1e-3)


def test_flip_boxes_w_minus_x_minus_1_by_hand():
    # 65x65 with border 32 pins the crop centre to (32, 32); the flip keeps c_x = 65 - 32 - 1.
    element = _element(65, 65, [[10, 20, 30, 40]])
    transform = TrainTransform(input_hw=(64, 64), max_objects=1, border=32,
                               scale_choices=(1.0,), flip_prob=1.0, **PLAIN)
    out = transform.random_map(element, np.random.default_rng(0))
    k = 16 / 65  # output factor
    flipped_box = np.array([65 - 30 - 1, 20, 65 - 10 - 1, 40])  # [34, 20, 54, 40]
    np.testing.assert_allclose(out["boxes"][0], (flipped_box - 32) * k + 8, atol=1e-5)
    warped = cv2.warpAffine(np.ascontiguousarray(element["image"][:, ::-1]),
                            _hand_matrix((32, 32), 65, 64, 64), (64, 64), flags=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out["image"], warped / 255.0, atol=1.5 / 255)


def test_padding_mask_and_num_dropped():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 80, size=(20, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 20, size=(20, 2))], axis=1)
    element = _element(100, 100, boxes, classes=np.arange(20) % 5)
    for transform in (EvalTransform(input_hw=(64, 64), max_objects=8),
                      TrainTransform(input_hw=(64, 64), max_objects=8)):
        out = (transform.map(element) if isinstance(transform, EvalTransform)
               else transform.random_map(element, np.random.default_rng(0)))
        assert out["mask"].tolist() == [True] * 8
        assert out["num_dropped"] == 12 and out["num_dropped"].dtype == np.int32
        np.testing.assert_array_equal(out["classes"], np.arange(8) % 5)
    out = EvalTransform(input_hw=(64, 64), max_objects=32).map(element)
    assert out["mask"].sum() == 20 and out["num_dropped"] == 0
    np.testing.assert_array_equal(out["boxes"][20:], 0)
    np.testing.assert_array_equal(out["classes"][20:], 0)
    np.testing.assert_allclose(out["boxes"][:20],
                               _hand_boxes(boxes, (50, 50), 100, 16, 16), atol=1e-4)
    empty = EvalTransform(input_hw=(64, 64), max_objects=4).map(_element(30, 40, np.zeros((0, 4))))
    assert empty["boxes"].shape == (4, 4) and not empty["mask"].any() and empty["num_dropped"] == 0


def test_output_shapes_and_dtypes():
    element = _element(90, 120, [[1, 2, 50, 60]])
    train = TrainTransform(input_hw=(64, 96), max_objects=5).random_map(
        element, np.random.default_rng(0))
    assert {k: (v.shape, v.dtype) for k, v in train.items()} == {
        "image": ((64, 96, 3), np.float32), "boxes": ((5, 4), np.float32),
        "classes": ((5,), np.int32), "mask": ((5,), np.bool_), "num_dropped": ((), np.int32)}
    evaluation = EvalTransform(input_hw=(64, 96), max_objects=5).map(element)
    assert {k: (v.shape, v.dtype) for k, v in evaluation.items()} == {
        "image": ((64, 96, 3), np.float32), "center": ((2,), np.float32),
        "scale": ((2,), np.float32), "image_id": ((), np.int64), "image_hw": ((2,), np.int32),
        "boxes": ((5, 4), np.float32), "classes": ((5,), np.int32), "mask": ((5,), np.bool_),
        "num_dropped": ((), np.int32)}
    assert isinstance(TrainTransform(), grain.transforms.RandomMap)
    assert isinstance(EvalTransform(), grain.transforms.Map)


def test_normalisation_with_official_bgr_mean_std():
    # A 32x32 image into a 32x32 input is the identity warp: every pixel is (c / 255 - m) / s.
    colour = np.array([10, 128, 250], dtype=np.uint8)
    element = {"image": np.broadcast_to(colour, (32, 32, 3)).copy(),
               "boxes": np.zeros((0, 4), np.float32), "classes": np.zeros((0,), np.int32)}
    out = EvalTransform(input_hw=(32, 32), max_objects=1).map(element)
    expected = (np.array([10, 128, 250]) / 255 - np.array(COCO_MEAN_BGR)) / np.array(COCO_STD_BGR)
    np.testing.assert_allclose(out["image"], np.broadcast_to(expected, (32, 32, 3)), atol=1e-5)


def test_eval_fix_res_hand_worked_and_round_trip():
    boxes = np.array([[0, 0, 200, 100], [100, 50, 125, 100]], dtype=np.float32)
    out = EvalTransform(input_hw=(128, 128), max_objects=3).map(_element(100, 200, boxes))
    np.testing.assert_array_equal(out["center"], [100, 50])
    np.testing.assert_array_equal(out["scale"], [200, 200])
    np.testing.assert_array_equal(out["image_hw"], [100, 200])
    assert out["image_id"] == 7
    np.testing.assert_allclose(out["boxes"][:2], [[0, 8, 32, 24], [16, 16, 20, 24]], atol=1e-5)
    back = affine.boxes_to_image(out["boxes"][None, :2], out["center"][None], out["scale"][None],
                                 (32, 32))
    np.testing.assert_allclose(back[0], boxes, atol=1e-4)
    # Letterbox: rows above y = 32 and below y = 96 of the 128x128 input are padding (zeros
    # before normalisation).
    plain = EvalTransform(input_hw=(128, 128), max_objects=3, mean=(0, 0, 0), std=(1, 1, 1))
    image = plain.map(_element(100, 200, boxes))["image"]
    assert np.all(image[:31] == 0) and np.all(image[97:] == 0) and image[40:90].mean() > 0.2


def test_eval_test_scale_hand_worked():
    """Multi-scale test: at scale 2 the window is half as wide, so objects appear twice as
    large on the same canvas, and boxes still map back to the original pixels."""
    boxes = np.array([[90, 40, 110, 60]], dtype=np.float32)  # 20 px wide, centred
    zoomed = EvalTransform(input_hw=(128, 128), max_objects=2, test_scale=2.0)
    out = zoomed.map(_element(100, 200, boxes))
    np.testing.assert_array_equal(out["center"], [100, 50])
    np.testing.assert_array_equal(out["scale"], [100, 100])  # max(h, w) / 2
    # Output grid 32 px over a 100 px window: 0.32 grid px per image px around the centre.
    np.testing.assert_allclose(out["boxes"][0], [16 - 3.2, 16 - 3.2, 16 + 3.2, 16 + 3.2],
                               atol=1e-4)
    back = affine.boxes_to_image(out["boxes"][None, :1], out["center"][None],
                                 out["scale"][None], (32, 32))
    np.testing.assert_allclose(back[0], boxes, atol=1e-4)
    halved = EvalTransform(input_hw=(128, 128), max_objects=2, test_scale=0.5)
    np.testing.assert_array_equal(halved.map(_element(100, 200, boxes))["scale"], [400, 400])
    with pytest.raises(ValueError, match="test_scale"):
        EvalTransform(input_hw=(128, 128), test_scale=0.0)


def _reference_color_aug(image, seed):
    """Slow float64 reference of the CornerNet colour augmentation, replaying the draws."""
    replay = np.random.default_rng(seed)
    x = image.astype(np.float64)
    gray = (0.114 * x[..., 0] + 0.587 * x[..., 1] + 0.299 * x[..., 2])[..., None]
    gray_mean = gray.mean()
    for op in replay.permutation(3):
        alpha = 1 + replay.uniform(-0.4, 0.4)
        if op == 0:
            x = alpha * x
        elif op == 1:
            x = alpha * x + (1 - alpha) * gray_mean
        else:
            x = alpha * x + (1 - alpha) * gray
    strengths = replay.normal(scale=0.1, size=3)
    return x + transforms.PCA_EIGVEC.astype(np.float64) @ (
        transforms.PCA_EIGVAL.astype(np.float64) * strengths)


def test_color_augment_matches_reference():
    image = np.random.default_rng(0).uniform(0, 1, size=(9, 11, 3)).astype(np.float32)
    for seed in range(6):
        augmented = image.copy()
        transforms.color_augment(augmented, np.random.default_rng(seed))
        assert augmented.dtype == np.float32
        np.testing.assert_allclose(augmented, _reference_color_aug(image, seed), atol=1e-5)
    unchanged = image.copy()
    transforms.color_augment(unchanged, np.random.default_rng(0), jitter=0.0, lighting_std=0.0)
    np.testing.assert_allclose(unchanged, image, atol=1e-6)


def test_train_transform_is_a_function_of_the_rng():
    element = _element(80, 120, [[5, 5, 60, 70], [50, 10, 110, 75]])
    transform = TrainTransform(input_hw=(64, 64), max_objects=4)
    transform = pickle.loads(pickle.dumps(transform))  # Grain workers receive a pickled copy
    a = transform.random_map(element, np.random.default_rng(5))
    b = transform.random_map(element, np.random.default_rng(5))
    c = transform.random_map(element, np.random.default_rng(6))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])


def test_bad_inputs_raise_value_error():
    transform = TrainTransform(input_hw=(64, 64))
    rng = np.random.default_rng(0)
    good = _element(40, 40, [[1, 1, 5, 5]])
    with pytest.raises(ValueError, match="uint8"):
        transform.random_map({**good, "image": good["image"].astype(np.float32)}, rng)
    with pytest.raises(ValueError, match="uint8"):
        transform.random_map({**good, "image": good["image"][..., 0]}, rng)
    with pytest.raises(ValueError, match=r"\[n, 4\]"):
        transform.random_map({**good, "boxes": np.zeros((1, 3), np.float32)}, rng)
    with pytest.raises(ValueError, match="disagree"):
        transform.random_map({**good, "classes": np.zeros((2,), np.int32)}, rng)
    with pytest.raises(ValueError, match="missing"):
        EvalTransform().map({"image": good["image"]})
    with pytest.raises(ValueError, match="divisible"):
        TrainTransform(input_hw=(66, 64))
    with pytest.raises(ValueError, match="fix_res"):
        EvalTransform(resize_mode="keep_res")
