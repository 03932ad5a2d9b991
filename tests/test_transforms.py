"""Tests for the host-side train/eval transforms (centernet_jax.data.transforms)."""

import pickle

import cv2
import grain
import numpy as np
import pytest

from centernet_jax import affine
from centernet_jax.data import transforms
from centernet_jax.data.transforms import EvalTransform
from configs.common import COCO_MEAN_BGR, COCO_STD_BGR
from tests.conftest import eval_transform, train_transform

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
    transform = train_transform(input_hw=(64, 64), max_objects=4, **PLAIN)

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


def test_shift_scale_known_box_with_fixed_rng():
    boxes = np.array([[30, 40, 90, 80]], dtype=np.float32)
    element = _element(100, 150, boxes)
    transform = train_transform(input_hw=(32, 64), max_objects=2, crop_mode="shift_scale",
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
    transform = train_transform(input_hw=(64, 64), max_objects=1, border=32,
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
    for transform in (eval_transform(input_hw=(64, 64), max_objects=8),
                      train_transform(input_hw=(64, 64), max_objects=8)):
        out = (transform.map(element) if isinstance(transform, EvalTransform)
               else transform.random_map(element, np.random.default_rng(0)))
        assert out["mask"].tolist() == [True] * 8
        assert out["num_dropped"] == 12 and out["num_dropped"].dtype == np.int32
        np.testing.assert_array_equal(out["classes"], np.arange(8) % 5)
    out = eval_transform(input_hw=(64, 64), max_objects=32).map(element)
    assert out["mask"].sum() == 20 and out["num_dropped"] == 0
    np.testing.assert_array_equal(out["boxes"][20:], 0)
    np.testing.assert_array_equal(out["classes"][20:], 0)
    np.testing.assert_allclose(out["boxes"][:20],
                               _hand_boxes(boxes, (50, 50), 100, 16, 16), atol=1e-4)
    empty = eval_transform(input_hw=(64, 64), max_objects=4).map(_element(30, 40, np.zeros((0, 4))))
    assert empty["boxes"].shape == (4, 4) and not empty["mask"].any() and empty["num_dropped"] == 0


def test_output_shapes_and_dtypes():
    element = _element(90, 120, [[1, 2, 50, 60]])
    train = train_transform(input_hw=(64, 96), max_objects=5).random_map(
        element, np.random.default_rng(0))
    assert {k: (v.shape, v.dtype) for k, v in train.items()} == {
        "image": ((64, 96, 3), np.float32), "boxes": ((5, 4), np.float32),
        "classes": ((5,), np.int32), "mask": ((5,), np.bool_), "num_dropped": ((), np.int32),
        "num_invalid": ((), np.int32), "num_unreadable": ((), np.int32)}
    evaluation = eval_transform(input_hw=(64, 96), max_objects=5).map(element)
    assert {k: (v.shape, v.dtype) for k, v in evaluation.items()} == {
        "image": ((64, 96, 3), np.float32), "center": ((2,), np.float32),
        "scale": ((2,), np.float32), "image_id": ((), np.int64), "image_hw": ((2,), np.int32),
        "boxes": ((5, 4), np.float32), "classes": ((5,), np.int32), "mask": ((5,), np.bool_),
        "num_dropped": ((), np.int32), "num_invalid": ((), np.int32),
        "num_unreadable": ((), np.int32)}
    assert isinstance(train_transform(), grain.transforms.RandomMap)
    assert isinstance(eval_transform(), grain.transforms.Map)


def test_normalisation_with_official_bgr_mean_std():
    # A 32x32 image into a 32x32 input is the identity warp: every pixel is (c / 255 - m) / s.
    colour = np.array([10, 128, 250], dtype=np.uint8)
    element = {"image": np.broadcast_to(colour, (32, 32, 3)).copy(),
               "boxes": np.zeros((0, 4), np.float32), "classes": np.zeros((0,), np.int32)}
    out = eval_transform(input_hw=(32, 32), max_objects=1).map(element)
    expected = (np.array([10, 128, 250]) / 255 - np.array(COCO_MEAN_BGR)) / np.array(COCO_STD_BGR)
    np.testing.assert_allclose(out["image"], np.broadcast_to(expected, (32, 32, 3)), atol=1e-5)


def test_eval_fix_res_hand_worked_and_round_trip():
    boxes = np.array([[0, 0, 200, 100], [100, 50, 125, 100]], dtype=np.float32)
    out = eval_transform(input_hw=(128, 128), max_objects=3).map(_element(100, 200, boxes))
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
    plain = eval_transform(input_hw=(128, 128), max_objects=3, mean=(0, 0, 0), std=(1, 1, 1))
    image = plain.map(_element(100, 200, boxes))["image"]
    assert np.all(image[:31] == 0) and np.all(image[97:] == 0) and image[40:90].mean() > 0.2


def test_eval_test_scale_hand_worked():
    """Multi-scale test: at scale 2 the window is half as wide, so objects appear twice as
    large on the same canvas, and boxes still map back to the original pixels."""
    boxes = np.array([[90, 40, 110, 60]], dtype=np.float32)  # 20 px wide, centred
    zoomed = eval_transform(input_hw=(128, 128), max_objects=2, test_scale=2.0)
    out = zoomed.map(_element(100, 200, boxes))
    np.testing.assert_array_equal(out["center"], [100, 50])
    np.testing.assert_array_equal(out["scale"], [100, 100])  # max(h, w) / 2
    # Output grid 32 px over a 100 px window: 0.32 grid px per image px around the centre.
    np.testing.assert_allclose(out["boxes"][0], [16 - 3.2, 16 - 3.2, 16 + 3.2, 16 + 3.2],
                               atol=1e-4)
    back = affine.boxes_to_image(out["boxes"][None, :1], out["center"][None],
                                 out["scale"][None], (32, 32))
    np.testing.assert_allclose(back[0], boxes, atol=1e-4)
    halved = eval_transform(input_hw=(128, 128), max_objects=2, test_scale=0.5)
    np.testing.assert_array_equal(halved.map(_element(100, 200, boxes))["scale"], [400, 400])
    with pytest.raises(ValueError, match="test_scale"):
        eval_transform(input_hw=(128, 128), test_scale=0.0)


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
    transform = train_transform(input_hw=(64, 64), max_objects=4)
    transform = pickle.loads(pickle.dumps(transform))  # Grain workers receive a pickled copy
    a = transform.random_map(element, np.random.default_rng(5))
    b = transform.random_map(element, np.random.default_rng(5))
    c = transform.random_map(element, np.random.default_rng(6))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])


def test_bad_inputs_raise_value_error():
    transform = train_transform(input_hw=(64, 64))
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
        eval_transform().map({"image": good["image"]})
    with pytest.raises(ValueError, match="keep_res"):
        eval_transform(resize_mode="stretch")
    with pytest.raises(ValueError, match="crop_mode"):
        train_transform(crop_mode="center")
    with pytest.raises(ValueError, match="keep_res_pad"):
        eval_transform(keep_res_pad=32)
    with pytest.raises(ValueError, match=r"keypoints must have shape \[n=1, K, 3\]"):
        transform.random_map({**good, "keypoints": np.zeros((2, 17, 3), np.float32)}, rng)
    with pytest.raises(ValueError, match=r"dimensions must have shape \(1, 3\)"):
        transform.random_map({**good, "dimensions": np.zeros((1, 2), np.float32)}, rng)
    with pytest.raises(ValueError, match="flipping 3D"):
        train_transform(input_hw=(64, 64), flip_prob=1.0).random_map(
            {**good, "location": np.zeros((1, 3), np.float32)}, rng)


def _keypoint_element():
    element = _element(65, 65, [[10, 20, 30, 40], [40, 5, 60, 25]])
    keypoints = np.zeros((2, 3, 3), np.float32)
    keypoints[0] = [[12, 22, 2], [28, 38, 1], [0, 0, 0]]  # a left/right pair + an unlabelled
    keypoints[1] = [[45, 10, 2], [55, 20, 2], [50, 15, 2]]
    return {**element, "keypoints": keypoints}


def test_keypoints_follow_the_box_affine_without_flip():
    # 65x65, border 32, scale 1: the window is centred at (32, 32), s = 65, output 16x16.
    element = _keypoint_element()
    transform = train_transform(input_hw=(64, 64), max_objects=3, border=32, scale_choices=(1.0,),
                       flip_prob=0.0, flip_pairs=((0, 1),), **PLAIN)
    out = transform.random_map(element, np.random.default_rng(0))
    k = 16 / 65
    expected = element["keypoints"].copy()
    expected[..., :2] = (expected[..., :2] - 32) * k + 8
    assert out["keypoints"].shape == (3, 3, 3) and out["keypoints"].dtype == np.float32
    np.testing.assert_allclose(out["keypoints"][:2], expected, atol=1e-5)
    np.testing.assert_array_equal(out["keypoints"][2], 0)  # padding slot


def test_keypoints_flip_swaps_pairs_by_hand():
    element = _keypoint_element()
    transform = train_transform(input_hw=(64, 64), max_objects=2, border=32, scale_choices=(1.0,),
                       flip_prob=1.0, flip_pairs=((0, 1),), **PLAIN)
    out = transform.random_map(element, np.random.default_rng(0))
    k = 16 / 65
    # Mirrored x' = 65 - x - 1, then joints 0 and 1 trade places; the window centre stays 32.
    person0 = np.array([[65 - 28 - 1, 38, 1], [65 - 12 - 1, 22, 2], [65 - 0 - 1, 0, 0]],
                       np.float32)
    person1 = np.array([[65 - 55 - 1, 20, 2], [65 - 45 - 1, 10, 2], [65 - 50 - 1, 15, 2]],
                       np.float32)
    for got, want in zip(out["keypoints"], (person0, person1)):
        np.testing.assert_allclose(got[:, :2], (want[:, :2] - 32) * k + 8, atol=1e-5)
        np.testing.assert_array_equal(got[:, 2], want[:, 2])
    np.testing.assert_allclose(
        transforms.flip_keypoints(element["keypoints"], 65, ((0, 1),))[0], person0)
    with pytest.raises(ValueError, match="outside the 3 keypoints"):
        transforms.flip_keypoints(element["keypoints"], 65, ((0, 3),))


def _kitti_element(height=40, width=120):
    element = _element(height, width, [[10, 5, 40, 30], [60, 10, 100, 35]], classes=[1, -1])
    return {**element,
            "calib": np.arange(12, dtype=np.float32).reshape(3, 4),
            "alpha": np.array([0.5, -1.0], np.float32),
            "dimensions": np.array([[1.5, 1.6, 3.9], [0, 0, 0]], np.float32),
            "location": np.array([[1.0, 1.7, 20.0], [-3.0, 1.5, 30.0]], np.float32),
            "rotation_y": np.array([0.55, -0.9], np.float32),
            "num_invalid": np.int32(2), "num_unreadable": np.int32(1)}


def test_3d_fields_and_counters_pass_through_padded():
    element = _kitti_element()
    out = eval_transform(input_hw=(32, 96), max_objects=3).map(element)
    np.testing.assert_array_equal(out["calib"], element["calib"])
    for name in ("alpha", "dimensions", "location", "rotation_y"):
        assert out[name].shape[0] == 3 and out[name].dtype == np.float32
        np.testing.assert_array_equal(out[name][:2], element[name])
        np.testing.assert_array_equal(out[name][2], 0)
    assert out["classes"].tolist() == [1, -1, 0] and out["mask"].tolist() == [True, True, False]
    assert out["num_invalid"] == 2 and out["num_unreadable"] == 1 and out["num_dropped"] == 0


def test_ddd_crop_mode_by_hand():
    element = _kitti_element()
    transform = train_transform(input_hw=(32, 96), max_objects=2, crop_mode="ddd",
                       flip_prob=0.0, ddd_aug_prob=0.5, shift=0.1, scale=0.4, **PLAIN)
    for seed in range(6):
        replay = np.random.default_rng(seed)
        augmented = replay.random() < 0.5
        center, scale = np.array([60.0, 20.0]), 120.0  # s = w: only the width counts
        if augmented:
            ds, dx, dy = replay.standard_normal(3)
            scale *= np.clip(ds * 0.4 + 1, 0.6, 1.4)
            center += [120 * np.clip(dx * 0.1, -0.2, 0.2), 40 * np.clip(dy * 0.1, -0.2, 0.2)]
        out = transform.random_map(element, np.random.default_rng(seed))
        assert bool(out["augmented"]) == augmented
        np.testing.assert_allclose(
            out["boxes"], _hand_boxes(element["boxes"], center, scale, 24, 8), atol=1e-4)
    never = train_transform(input_hw=(32, 96), crop_mode="ddd", ddd_aug_prob=0.0, flip_prob=0.0,
                   **PLAIN).random_map(element, np.random.default_rng(0))
    assert not never["augmented"]


@pytest.mark.parametrize("height,width,pad,test_scale", [
    (37, 50, 31, 1.0), (70, 45, 31, 1.0), (37, 50, 127, 1.0), (60, 90, 31, 0.5)])
def test_keep_res_places_pixels_where_the_official_canvas_does(height, width, pad, test_scale):
    rng = np.random.default_rng(1)
    # Smooth content, so that resize-then-warp and one warp agree up to interpolation.
    image = cv2.GaussianBlur(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8),
                             (0, 0), 3)
    element = {"image": image, "boxes": np.array([[3, 4, 20, 30]], np.float32),
               "classes": np.zeros((1,), np.int32)}
    transform = eval_transform(input_hw=(256, 256), max_objects=1, resize_mode="keep_res",
                      keep_res_pad=pad, test_scale=test_scale, mean=(0.0, 0.0, 0.0),
                      std=(1.0, 1.0, 1.0))
    out = transform.map(element)
    # The official construction: resize, canvas (size | pad) + 1, centre (w // 2, h // 2).
    new_h, new_w = int(height * test_scale), int(width * test_scale)
    resized = cv2.resize(image, (new_w, new_h)) if test_scale != 1.0 else image
    canvas_h, canvas_w = (new_h | pad) + 1, (new_w | pad) + 1
    matrix = _hand_matrix((new_w // 2, new_h // 2), canvas_w, canvas_w, canvas_h)
    official = cv2.warpAffine(resized, matrix, (canvas_w, canvas_h), flags=cv2.INTER_LINEAR)
    ours = out["image"][:canvas_h, :canvas_w] * 255.0
    if test_scale == 1.0:  # a pure integer translation: identical pixels
        np.testing.assert_allclose(ours, official, atol=1e-3)
        np.testing.assert_array_equal(out["image"][canvas_h:], 0)
        np.testing.assert_array_equal(out["image"][:, canvas_w:], 0)
    else:  # one warp instead of resize + warp: the same place, bilinear differences only
        assert np.mean(np.abs(ours - official)) < 3
    # Detections map back with center/scale and the fixed grid, like fix_res.
    grid = 64
    back = affine.boxes_to_image(out["boxes"][None], out["center"][None], out["scale"][None],
                                 (grid, grid))[0]
    np.testing.assert_allclose(back, element["boxes"], atol=1e-3)


def test_keep_res_too_large_an_image_says_what_to_raise():
    element = _element(100, 300, [[1, 1, 5, 5]])
    with pytest.raises(ValueError, match=r"needs a 128x320 canvas.*eval.input_hw"):
        eval_transform(input_hw=(256, 256), resize_mode="keep_res").map(element)
