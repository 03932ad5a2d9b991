"""Tests for COCO-format JSON datasets (centernet_jax.data.coco_json)."""

import json
import os
import pickle
import textwrap
from pathlib import Path

import cv2
import numpy as np
from etils import epath
import pytest

import fresh_interpreter

from centernet_jax.data import coco_json
from centernet_jax.data.sources import DatasetNotFoundError

# Category ids deliberately unsorted and non-contiguous: classes follow ascending id.
CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 12, "name": "bird"}]


def _write_image(path: Path, height: int, width: int, bgr=(200, 60, 20)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = bgr
    image[: height // 2, : width // 3] = (10, 220, 130)
    assert cv2.imwrite(str(path), image)
    return image


def _write_dataset(root: Path, images, annotations, categories=CATEGORIES, *,
                   write_images=True, name="annotations.json") -> tuple[Path, Path]:
    """Writes the JSON and a tiny JPEG for each image; returns (json path, image folder)."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    if write_images:
        for k, image in enumerate(images):
            _write_image(image_dir / image["file_name"], image["height"], image["width"],
                         bgr=(40 * k, 100, 250 - 30 * k))
    annotation_file = root / name
    annotation_file.write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    return annotation_file, image_dir


def _image(image_id, height=32, width=48, file_name=None):
    return {"id": image_id, "file_name": file_name or f"img_{image_id}.jpg", "height": height,
            "width": width}


def _ann(ann_id, image_id, category_id, bbox, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": 1.0, "iscrowd": 0, **extra}


def _basic_dataset(root):
    images = [_image(41, 32, 48), _image(5, 64, 40), _image(9, 40, 96, "sub/nested.jpg")]
    annotations = [
        _ann(1, 5, 7, [1.25, 2.5, 10.75, 20.125]),
        _ann(2, 41, 3, [0.1, 0.2, 30.3, 10.7]),
        _ann(3, 5, 12, [-4.0, 50.0, 60.0, 30.0]),  # partly outside: passed through
        _ann(4, 41, 7, [float("nan"), 3.0, 4.0, 5.0]),  # NaN: passed through
        _ann(5, 5, 3, [6.0, 7.0, -2.0, 0.0]),  # negative width, zero height
    ]
    return _write_dataset(root, images, annotations)


def test_elements_recover_the_json_exactly(tmp_path):
    annotation_file, image_dir = _basic_dataset(tmp_path)
    source = coco_json.CocoJsonSource(annotation_file, image_dir)
    assert len(source) == 3
    assert source.class_names == ("dog", "cat", "bird") and source.num_classes == 3
    assert source.category_ids == (3, 7, 12)
    assert source.keypoint_names is None and source.flip_pairs is None

    first, second, third = (source[i] for i in range(3))
    # Images in JSON order, pixels as cv2.imread gives them, sizes from the decoded image.
    assert [int(e["image_id"]) for e in (first, second, third)] == [41, 5, 9]
    np.testing.assert_array_equal(first["image"], cv2.imread(str(image_dir / "img_41.jpg")))
    np.testing.assert_array_equal(third["image"], cv2.imread(str(image_dir / "sub/nested.jpg")))
    assert first["image"].dtype == np.uint8 and first["image"].shape == (32, 48, 3)
    assert abs(int(second["image"][-1, -1, 2]) - 250 + 30) <= 3  # BGR order: R is channel 2
    np.testing.assert_array_equal(second["image_hw"], [64, 40])
    assert second["image_hw"].dtype == np.int32 and second["image_id"].dtype == np.int64

    # Objects of an image in file order; x2 = x + w exactly (float64, then float32).
    np.testing.assert_array_equal(
        second["boxes"], np.float32([[1.25, 2.5, 12.0, 22.625], [-4, 50, 56, 80], [6, 7, 4, 7]]))
    assert second["classes"].tolist() == [1, 2, 0] and second["classes"].dtype == np.int32
    np.testing.assert_array_equal(first["boxes"][0], np.float32(
        [0.1, 0.2, np.float64(0.1) + 30.3, np.float64(0.2) + 10.7]))
    assert np.isnan(first["boxes"][1, 0]) and np.isnan(first["boxes"][1, 2])
    np.testing.assert_array_equal(first["boxes"][1, [1, 3]], [3.0, 8.0])
    assert first["classes"].tolist() == [0, 1]
    assert second["is_crowd"].dtype == bool and second["is_crowd"].tolist() == [False] * 3
    assert third["boxes"].shape == (0, 4) and third["boxes"].dtype == np.float32
    assert third["classes"].shape == (0,) and third["is_crowd"].shape == (0,)
    assert "keypoints" not in first

    # Workers get the source pickled: it must survive that, cheaply.
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone[1]["boxes"], second["boxes"])
    with pytest.raises(IndexError):
        source[3]
    with pytest.raises(TypeError):
        source[1.0]


def test_crowd_and_skip_empty(tmp_path):
    images = [_image(1), _image(2), _image(3), _image(4)]
    annotations = [
        _ann(10, 1, 3, [1, 1, 5, 5]),
        _ann(11, 1, 7, [2, 2, 9, 9], iscrowd=1),
        _ann(12, 3, 7, [0, 0, 8, 8], iscrowd=1),  # image 3 has only a crowd annotation
    ]
    annotation_file, image_dir = _write_dataset(tmp_path, images, annotations)
    everything = coco_json.CocoJsonSource(annotation_file, image_dir)
    assert len(everything) == 4
    assert everything[0]["is_crowd"].tolist() == [False, True]
    assert everything[0]["classes"].tolist() == [0, 1]

    no_crowd = coco_json.CocoJsonSource(annotation_file, image_dir, drop_crowd=True)
    assert no_crowd[0]["classes"].tolist() == [0] and no_crowd[0]["is_crowd"].tolist() == [False]
    np.testing.assert_array_equal(no_crowd[0]["boxes"], [[1, 1, 6, 6]])

    # Crowd annotations count as annotations (as pycocotools' getAnnIds does).
    annotated = coco_json.CocoJsonSource(annotation_file, image_dir, skip_empty=True,
                                         drop_crowd=True)
    assert len(annotated) == 2
    assert [int(annotated[i]["image_id"]) for i in range(2)] == [1, 3]
    assert annotated[1]["boxes"].shape == (0, 4)  # crowd-only image, crowd dropped

    # Ground truth: only the yielded images, crowd kept (COCOeval ignore regions).
    truth = annotated.coco_ground_truth()
    assert [im["id"] for im in truth["images"]] == [1, 3]
    assert [(a["id"], a["iscrowd"]) for a in truth["annotations"]] == [(10, 0), (11, 1), (12, 1)]
    assert truth["categories"] == CATEGORIES
    truth["images"].clear()  # a copy: the source is unaffected
    assert len(everything.coco_ground_truth()["images"]) == 4


def test_ground_truth_fills_what_cocoeval_needs(tmp_path):
    images = [_image(1, 32, 32)]
    annotations = [{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4]},
                   {"id": 8, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2],
                    "area": 3.5, "iscrowd": 1}]
    annotation_file, image_dir = _write_dataset(tmp_path, images, annotations)
    truth = coco_json.CocoJsonSource(annotation_file, image_dir).coco_ground_truth()
    assert truth["annotations"] == [
        {"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 0, "area": 12.0,
         "id": 9},
        {"id": 8, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2], "area": 3.5,
         "iscrowd": 1}]
    from pycocotools.coco import COCO  # the result loads as a COCO ground truth
    coco = COCO()
    coco.dataset = truth
    coco.createIndex()
    assert coco.getAnnIds(imgIds=[1]) == [9, 8]


KEYPOINT_NAMES = ["nose", "left_eye", "right_eye", "l_hand", "r_hand", "tail", "wing_left",
                  "wing_right"]


def _keypoint_dataset(root, categories=None, **kwargs):
    categories = categories or [{"id": 1, "name": "animal", "keypoints": KEYPOINT_NAMES,
                                 "skeleton": [[1, 2]]}]
    points = [float(v) for k in range(8) for v in (k + 0.5, 2 * k, k % 3)]
    annotations = [
        _ann(1, 1, 1, [1, 2, 20, 20], keypoints=points, num_keypoints=5),
        _ann(2, 1, 1, [3, 3, 4, 4]),  # no keypoints: all unlabelled
        _ann(3, 2, 1, [5, 5, 9, 9], keypoints=[0] * 24, num_keypoints=0, iscrowd=1),
    ]
    annotation_file, image_dir = _write_dataset(root, [_image(1), _image(2)], annotations,
                                                categories)
    return coco_json.CocoJsonSource(annotation_file, image_dir, **kwargs), points


def test_keypoints_and_flip_pairs(tmp_path):
    source, points = _keypoint_dataset(tmp_path)
    assert source.keypoint_names == tuple(KEYPOINT_NAMES)
    assert source.flip_pairs == ((1, 2), (3, 4), (6, 7))
    first = source[0]
    assert first["keypoints"].shape == (2, 8, 3) and first["keypoints"].dtype == np.float32
    np.testing.assert_array_equal(first["keypoints"][0], np.reshape(points, (8, 3)))
    np.testing.assert_array_equal(first["keypoints"][1], np.zeros((8, 3)))
    assert source.annotations.num_keypoints.tolist() == [5, 0, 0]
    dropped = coco_json.CocoJsonSource(source.annotation_file, source.image_dir,
                                       drop_crowd=True)
    assert dropped[1]["keypoints"].shape == (0, 8, 3)

    given = coco_json.CocoJsonSource(source.annotation_file, source.image_dir,
                                     flip_pairs=[[4, 3]])
    assert given.flip_pairs == ((4, 3),)
    for bad in ([[1, 8]], [[1, 2], [2, 3]], [[1, 1]], [[1, 2, 3]]):
        with pytest.raises(ValueError, match="flip_pairs"):
            coco_json.CocoJsonSource(source.annotation_file, source.image_dir, flip_pairs=bad)


def test_infer_flip_pairs():
    from centernet_jax.data import coco_keypoints
    assert coco_json.infer_flip_pairs(coco_keypoints.KEYPOINT_NAMES) == coco_keypoints.FLIP_PAIRS
    assert coco_json.infer_flip_pairs(["Right_Knee", "Left_Knee", "hip_L", "hip_R", "top"]) == (
        (1, 0), (2, 3))
    assert coco_json.infer_flip_pairs(["left", "right", "leftover", "lr_"]) == ()


def test_keypoint_dataset_rules(tmp_path):
    # Categories with the same list, or without one, can share a keypoint dataset.
    same = [{"id": 1, "name": "a", "keypoints": KEYPOINT_NAMES}, {"id": 2, "name": "b"},
            {"id": 3, "name": "c", "keypoints": list(KEYPOINT_NAMES)}]
    source, _ = _keypoint_dataset(tmp_path / "same", same)
    assert source.num_classes == 3 and len(source.keypoint_names) == 8
    different = [{"id": 1, "name": "a", "keypoints": KEYPOINT_NAMES},
                 {"id": 2, "name": "b", "keypoints": ["x", "y"]}]
    with pytest.raises(ValueError, match=r"categories 1 \('a'\) and 2 \('b'\).*different"):
        _keypoint_dataset(tmp_path / "different", different)
    # Names declared but no annotation has keypoints: a plain detection dataset.
    annotation_file, image_dir = _write_dataset(
        tmp_path / "plain", [_image(1)], [_ann(1, 1, 1, [0, 0, 1, 1])],
        [{"id": 1, "name": "person", "keypoints": KEYPOINT_NAMES}])
    plain = coco_json.CocoJsonSource(annotation_file, image_dir)
    assert plain.keypoint_names is None and "keypoints" not in plain[0]
    with pytest.raises(ValueError, match="flip_pairs given.*no keypoints"):
        coco_json.CocoJsonSource(annotation_file, image_dir, flip_pairs=[[0, 1]])


_GOOD_IMAGE = _image(1)
_GOOD_ANN = _ann(1, 1, 3, [0, 0, 1, 1])


@pytest.mark.parametrize("data, pattern", [
    ({"images": [_GOOD_IMAGE], "annotations": [], "categories": []}, r"no categories"),
    ({"images": [_GOOD_IMAGE], "annotations": []}, r"no categories"),
    ({"images": [_GOOD_IMAGE], "annotations": [_ann(6, 2, 3, [0, 0, 1, 1])],
      "categories": CATEGORIES},
     r"annotations\[0\] \{\"id\": 6.*refers to image_id 2, which is not in 'images'"),
    ({"images": [_GOOD_IMAGE], "annotations": [_GOOD_ANN, _ann(6, 1, 4, [0, 0, 1, 1])],
      "categories": CATEGORIES},
     r"annotations\[1\] \{\"id\": 6.*category_id 4, which is not in 'categories' "
     r"\(ids \[3, 7, 12\]\)"),
    ({"images": [_GOOD_IMAGE, _image(2), _image(1, file_name="other.jpg")], "annotations": [],
      "categories": CATEGORIES},
     r"duplicate image id 1: images\[0\] and images\[2\] .*other.jpg"),
    ({"images": [_GOOD_IMAGE], "annotations": [],
      "categories": CATEGORIES + [{"id": 3, "name": "again"}]},
     r"duplicate category id 3: categories\[1\] and categories\[3\]"),
    ({"images": [_GOOD_IMAGE], "annotations": [_ann(6, 1, 3, [0, 0, 1])],
      "categories": CATEGORIES}, r"annotations\[0\].*'bbox' must be 4 numbers.*\[0, 0, 1\]"),
    ({"images": [_GOOD_IMAGE], "annotations": [_ann(6, 1, 3, [0, 0, "1", 2])],
      "categories": CATEGORIES}, r"annotations\[0\].*'bbox' must be 4 numbers"),
    ({"images": [_GOOD_IMAGE], "annotations": [_GOOD_ANN, _ann(6, 1, 3, [0, 0, [1], 2])],
      "categories": CATEGORIES}, r"annotations\[1\].*'bbox' must be 4 numbers.*\[0, 0, \[1\], 2\]"),
    ({"images": [_GOOD_IMAGE], "annotations": [_GOOD_ANN, _ann(6, 1, 3, [0, None, 1, 2])],
      "categories": CATEGORIES}, r"annotations\[1\].*'bbox' must be 4 numbers"),
    ({"images": [_GOOD_IMAGE], "annotations": [{"id": 6, "image_id": 1, "category_id": 3}],
      "categories": CATEGORIES}, r"annotations\[0\].*'bbox' must be 4 numbers.*None"),
    ({"images": [_GOOD_IMAGE], "annotations": [_ann(6, 1, 1, [0, 0, 1, 1], keypoints=[1, 2])],
      "categories": [{"id": 1, "name": "p", "keypoints": ["a", "b"]}]},
     r"annotations\[0\].*'keypoints' must be 6 numbers.*got 2 values"),
    ({"images": [_GOOD_IMAGE], "annotations": [
        _ann(5, 1, 1, [0, 0, 1, 1]), _ann(6, 1, 1, [0, 0, 1, 1], keypoints=[1, 2, 2, 1, "x", 0])],
      "categories": [{"id": 1, "name": "p", "keypoints": ["a", "b"]}]},
     r"annotations\[1\] \{\"id\": 6.*'keypoints' must be 6 numbers"),
    ({"images": [{"file_name": "x.jpg"}], "annotations": [], "categories": CATEGORIES},
     r"images\[0\] .*needs an integer 'id'"),
    ([1, 2], r"expected a JSON object"),
])
def test_validation_errors_name_the_file_and_the_entry(tmp_path, data, pattern):
    annotation_file = tmp_path / "bad.json"
    annotation_file.write_text(json.dumps(data))
    _write_image(tmp_path / "images" / "img_1.jpg", 32, 32)
    with pytest.raises(ValueError, match=pattern) as error:
        coco_json.CocoJsonSource(annotation_file, tmp_path / "images")
    assert str(annotation_file) in str(error.value)
    assert not isinstance(error.value, DatasetNotFoundError)


def test_invalid_json_names_the_file(tmp_path):
    annotation_file = tmp_path / "broken.json"
    annotation_file.write_text('{"images": [')
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match=f"{annotation_file} is not a valid JSON file"):
        coco_json.CocoJsonSource(annotation_file, tmp_path / "images")


def test_missing_json_or_folder(tmp_path):
    annotation_file, image_dir = _basic_dataset(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"annotation file .*nope.json does not exist"
                       r".*dataset.annotations"):
        coco_json.CocoJsonSource(tmp_path / "nope.json", image_dir)
    with pytest.raises(DatasetNotFoundError, match=r"image folder .*pics does not exist.*"
                       r"dataset.images"):
        coco_json.CocoJsonSource(annotation_file, tmp_path / "pics")
    other_folder = tmp_path / "elsewhere"
    other_folder.mkdir()
    (other_folder / "unrelated.jpg").touch()
    with pytest.raises(DatasetNotFoundError) as error:
        coco_json.CocoJsonSource(annotation_file, other_folder)
    message = str(error.value)
    assert "none of the 3 images" in message and str(annotation_file) in message
    assert str(other_folder / "img_41.jpg") in message and "right folder" in message


def test_some_missing_images_warn_once_and_fail_on_access(tmp_path, caplog):
    annotation_file, image_dir = _basic_dataset(tmp_path)
    os.remove(image_dir / "img_5.jpg")
    source = coco_json.CocoJsonSource(annotation_file, image_dir)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "1 of 3 image files" in warnings[0].getMessage()
    assert "img_5.jpg" in warnings[0].getMessage()
    assert int(source[0]["image_id"]) == 41
    with pytest.raises(coco_json.UnreadableImageError,
                       match=f"cannot read image {image_dir / 'img_5.jpg'} .*image id 5"):
        source[1]
    # With skip_empty only yielded images matter: the unannotated missing one is no concern.
    os.remove(image_dir / "sub" / "nested.jpg")
    caplog.clear()
    annotated = coco_json.CocoJsonSource(annotation_file, image_dir, skip_empty=True)
    assert len(annotated) == 2
    assert "1 of 2 image files" in caplog.text


@pytest.mark.parametrize("content", [b"not an image at all", b"\xff\xd8\xff\xe0" + bytes(40), b""])
def test_corrupt_image_raises_naming_the_file(tmp_path, content):
    annotation_file, image_dir = _basic_dataset(tmp_path)
    (image_dir / "img_5.jpg").write_bytes(content)
    source = coco_json.CocoJsonSource(annotation_file, image_dir)
    with pytest.raises(coco_json.UnreadableImageError) as error:
        source[1]
    assert isinstance(error.value, OSError)
    assert str(image_dir / "img_5.jpg") in str(error.value)
    assert source[0]["image"].shape == (32, 48, 3)  # the others still read


def test_from_config(tmp_path, caplog):
    train_json, train_images = _basic_dataset(tmp_path / "train")
    val_json, val_images = _write_dataset(
        tmp_path / "val", [_image(77), _image(78)], [_ann(1, 78, 3, [1, 1, 2, 2])])
    config = {"annotations": str(train_json), "images": str(train_images),
              "val_annotations": str(val_json), "val_images": str(val_images),
              "skip_empty": True, "drop_crowd": True}
    train = coco_json.from_config(config, "train")
    assert len(train) == 2 and train.skip_empty and train.drop_crowd
    for split in ("val", "validation"):
        val = coco_json.from_config(config, split)
        assert val.annotation_file == str(val_json) and len(val) == 2 and not val.skip_empty
    assert "TRAINING" not in caplog.text

    fallback = coco_json.from_config({"annotations": str(train_json),
                                      "images": str(train_images)}, "val")
    assert fallback.annotation_file == str(train_json) and len(fallback) == 3
    assert "evaluation uses the TRAINING data" in caplog.text

    import ml_collections
    frozen = ml_collections.ConfigDict({**config, "flip_pairs": None})
    assert len(coco_json.from_config(frozen, "train")) == 2
    with pytest.raises(ValueError, match="unknown split 'test'"):
        coco_json.from_config(config, "test")
    with pytest.raises(DatasetNotFoundError, match=r"dataset.annotations .*dataset.images"):
        coco_json.from_config({"images": str(train_images)}, "train")
    with pytest.raises(DatasetNotFoundError, match=r"dataset.val_annotations"):
        coco_json.from_config({**config, "val_images": None, "val_annotations": None,
                               "annotations": None}, "val")


def test_missing_dataset_fails_fast_without_tensorflow(tmp_path):
    # A fresh interpreter, so that other tests' imports do not hide a TensorFlow import.
    script = textwrap.dedent(f"""
        import sys
        from centernet_jax.data import coco_json, sources
        try:
            coco_json.from_config(dict(annotations={str(tmp_path / "a.json")!r},
                                       images={str(tmp_path)!r}), "train")
        except sources.DatasetNotFoundError as error:
            message = str(error)
        assert "a.json does not exist" in message, message
        assert "tensorflow" not in sys.modules and "tensorflow_datasets" not in sys.modules
        print("ok")
    """)
    result = fresh_interpreter.run(script)
    assert "ok" in result.stdout, result.stdout


def test_start_up_lists_the_image_folder_once(tmp_path, monkeypatch):
    # 5000 images / 20000 annotations (a COCO val-sized file): one listing of the folder, not
    # one stat per image. How long it takes: `python -m centernet_jax.bench --what=startup`.
    rng = np.random.default_rng(0)
    images = [_image(i, file_name=f"{i:012d}.jpg") for i in range(1, 5001)]
    annotations = [_ann(k, int(rng.integers(1, 5001)), 7, rng.uniform(0, 50, 4).tolist())
                   for k in range(20000)]
    annotation_file, image_dir = _write_dataset(tmp_path, images, annotations,
                                                write_images=False)
    for image in images:
        (image_dir / image["file_name"]).touch()
    listed = []
    path_class = type(epath.Path(image_dir))
    iterdir = path_class.iterdir
    monkeypatch.setattr(path_class, "iterdir",
                        lambda self: listed.append(self) or iterdir(self))
    source = coco_json.CocoJsonSource(annotation_file, image_dir)
    assert len(source) == 5000 and len(source.annotations.classes) == 20000
    assert len(listed) == 1
