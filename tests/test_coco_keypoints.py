"""Tests for the COCO person keypoints TFDS builder and source (centernet_jax.data.coco_keypoints).

A tiny official layout (a few 32-64 px JPEGs, person_keypoints_*2017.json) is generated and
built with `prepare` once per module (~0.3 s after the TensorFlow import).
"""

import json
import os
import shutil
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

import fresh_interpreter

from centernet_jax.data import coco_json
from centernet_jax.data import coco_keypoints
from centernet_jax.data.sources import DatasetNotFoundError

pytest.importorskip("tensorflow_datasets")

CATEGORY = {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(coco_keypoints.KEYPOINT_NAMES),
            "skeleton": [[16, 14], [14, 12], [17, 15]]}


def _keypoints(seed, visible):
    rng = np.random.default_rng(seed)
    points = np.zeros((17, 3), np.int64)
    points[:visible, :2] = rng.integers(0, 40, (visible, 2))
    points[:visible, 2] = rng.integers(1, 3, visible)
    return points.reshape(-1).tolist()


def _person(ann_id, image_id, bbox, area, visible=0, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": bbox, "area": area,
            "iscrowd": iscrowd, "keypoints": _keypoints(ann_id, visible),
            "num_keypoints": visible, "segmentation": [[0, 0, 1, 1, 1, 0]]}


# (image id, height, width) and annotations per split, in JSON order.
SPLITS = {
    "train": ([(397133, 48, 64), (37777, 32, 40), (252219, 64, 48), (87038, 40, 40)], [
        _person(2, 397133, [1.25, 2.5, 30.1, 40.33], 1023.9999999, visible=17),
        _person(900100259090, 252219, [0.0, 10.0, 47.99, 20.0], 450.5, iscrowd=1),
        _person(5, 397133, [40.0, 1.0, 30.0, 50.0], 9215.99999999, visible=3),
        _person(7, 87038, [-3.0, 4.0, 80.0, 2.0], 1.5, visible=1),  # partly outside
    ]),
    "val": ([(139, 40, 56), (285, 56, 32)], [
        _person(11, 139, [5.5, 6.0, 10.0, 12.0], 60.0, visible=5),
        _person(12, 139, [20.0, 3.0, 25.0, 30.0], 600.25, visible=0),
    ]),
}


def _write_layout(root: Path, splits=("train", "val"), corrupt=()) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in splits:
        image_specs, annotations = SPLITS[split]
        images = []
        for image_id, height, width in image_specs:
            file_name = f"{image_id:012d}.jpg"
            path = root / f"{split}2017" / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            if image_id in corrupt:
                path.write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
            else:
                pixels = np.random.default_rng(image_id).integers(0, 256, (height, width, 3))
                assert cv2.imwrite(str(path), pixels.astype(np.uint8))
            images.append({"id": image_id, "file_name": file_name, "height": height,
                           "width": width, "license": 1})
        (root / "annotations" / f"person_keypoints_{split}2017.json").write_text(json.dumps(
            {"info": {"year": 2017}, "images": images, "annotations": annotations,
             "categories": [CATEGORY]}))
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(manual_dir, data_dir) of the tiny layout, prepared once."""
    manual_dir = _write_layout(tmp_path_factory.mktemp("coco"))
    data_dir = tmp_path_factory.mktemp("tfds")
    coco_keypoints.prepare(manual_dir, data_dir)
    return manual_dir, data_dir


def _json_source(manual_dir, split, **kwargs):
    return coco_json.CocoJsonSource(
        manual_dir / "annotations" / f"person_keypoints_{split}2017.json",
        manual_dir / f"{split}2017", **kwargs)


@pytest.mark.parametrize("split, skip_empty, expected_ids", [
    ("train", None, [397133, 252219, 87038]),  # official: train skips images without annotations
    ("train", False, [397133, 37777, 252219, 87038]),
    ("val", None, [139, 285]),
])
def test_elements_match_the_json_source_over_the_same_files(prepared, split, skip_empty,
                                                             expected_ids):
    manual_dir, data_dir = prepared
    source = coco_keypoints.TfdsCocoKeypointsSource(split, data_dir, skip_empty=skip_empty)
    reference = _json_source(manual_dir, split, skip_empty=source.skip_empty)
    assert len(source) == len(reference) == len(expected_ids)
    assert source.class_names == reference.class_names == ("person",)
    assert source.category_ids == reference.category_ids == (1,)
    assert source.keypoint_names == reference.keypoint_names
    assert source.flip_pairs == reference.flip_pairs == coco_keypoints.FLIP_PAIRS
    for index, image_id in enumerate(expected_ids):
        ours, theirs = source[index], reference[index]
        assert sorted(ours) == sorted(theirs) == sorted(
            ["image", "boxes", "classes", "image_id", "image_hw", "is_crowd", "keypoints"])
        assert int(ours["image_id"]) == image_id and ours["image_id"].dtype == np.int64
        np.testing.assert_array_equal(ours["image"], theirs["image"])  # same bytes, same decoder
        np.testing.assert_array_equal(ours["image_hw"], ours["image"].shape[:2])
        for key in ("classes", "is_crowd", "keypoints", "image_hw"):
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
            assert ours[key].dtype == theirs[key].dtype, key
        # x1, y1 exact; x2 = x + w from float32-stored x and w: within a float32 rounding.
        assert ours["boxes"].dtype == np.float32
        np.testing.assert_array_equal(ours["boxes"][:, :2], theirs["boxes"][:, :2])
        np.testing.assert_allclose(ours["boxes"], theirs["boxes"], rtol=1e-6)
    crowd_free = coco_keypoints.TfdsCocoKeypointsSource(split, data_dir, skip_empty=skip_empty,
                                                        drop_crowd=True)
    for index in range(len(source)):
        kept = ~source[index]["is_crowd"]
        np.testing.assert_array_equal(crowd_free[index]["keypoints"],
                                      source[index]["keypoints"][kept])


def test_exact_values_of_one_example(prepared):
    _, data_dir = prepared
    first = coco_keypoints.TfdsCocoKeypointsSource("train", data_dir)[0]
    np.testing.assert_array_equal(first["boxes"], np.float32(
        [[1.25, 2.5, np.float32(1.25) + np.float64(np.float32(30.1)), 42.83], [40, 1, 70, 51]]))
    np.testing.assert_array_equal(first["keypoints"].reshape(2, -1),
                                  [_keypoints(2, 17), _keypoints(5, 3)])
    assert first["classes"].tolist() == [0, 0] and first["is_crowd"].tolist() == [False, False]
    crowd_only = coco_keypoints.TfdsCocoKeypointsSource("train", data_dir)[1]
    assert crowd_only["is_crowd"].tolist() == [True]
    assert not crowd_only["keypoints"].any()


def _strip(annotation):
    return {k: v for k, v in annotation.items() if k != "segmentation"}


def test_ground_truth_rebuilt_from_records_equals_the_json(prepared):
    manual_dir, data_dir = prepared
    for split, skip_empty in (("train", True), ("train", False), ("val", False)):
        official = json.loads(
            (manual_dir / "annotations" / f"person_keypoints_{split}2017.json").read_text())
        source = coco_keypoints.TfdsCocoKeypointsSource(split, data_dir, skip_empty=skip_empty)
        truth = source.coco_ground_truth()
        json_truth = _json_source(manual_dir, split, skip_empty=skip_empty).coco_ground_truth()
        annotated = {a["image_id"] for a in official["annotations"]}
        expected_images = [{k: im[k] for k in ("id", "file_name", "height", "width")}
                           for im in official["images"] if not skip_empty or im["id"] in annotated]
        assert truth["images"] == expected_images
        assert [{k: im[k] for k in ("id", "file_name", "height", "width")}
                for im in json_truth["images"]] == expected_images
        # bbox and keypoints go through float32 and come back as the JSON's decimals; area is
        # float64 (1023.9999999 must not become 1024, a COCOeval size boundary).
        expected = sorted((_strip(a) for a in official["annotations"]), key=lambda a: a["id"])
        rebuilt = sorted(truth["annotations"], key=lambda a: a["id"])
        assert rebuilt == expected
        assert truth["categories"] == [CATEGORY]

        with_file = coco_keypoints.TfdsCocoKeypointsSource(
            split, data_dir, skip_empty=skip_empty,
            annotation_file=manual_dir / "annotations" / f"person_keypoints_{split}2017.json")
        assert [im["id"] for im in with_file.coco_ground_truth()["images"]] == [
            im["id"] for im in expected_images]


def test_ground_truth_works_with_cocoeval_keypoints(prepared):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import contextlib
    import io

    _, data_dir = prepared
    truth = coco_keypoints.TfdsCocoKeypointsSource("train", data_dir).coco_ground_truth()
    perfect = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                "score": 1.0} for a in truth["annotations"] if not a["iscrowd"]]
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = truth
        ground_truth.createIndex()
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(perfect), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_from_config(prepared):
    manual_dir, data_dir = prepared
    train = coco_keypoints.from_config({"data_dir": str(data_dir)}, "train")
    assert train.skip_empty and len(train) == 3 and train.split == "train"
    everything = coco_keypoints.from_config({"data_dir": str(data_dir), "skip_empty": False},
                                            "train")
    assert len(everything) == 4
    for split in ("val", "validation"):
        val = coco_keypoints.from_config({"data_dir": str(data_dir), "skip_empty": True,
                                          "drop_crowd": True}, split)
        assert val.split == "validation" and not val.skip_empty and val.drop_crowd
        assert len(val) == 2
    official = manual_dir / "annotations" / "person_keypoints_val2017.json"
    val = coco_keypoints.from_config(
        {"data_dir": str(data_dir), "annotation_files": {"validation": str(official)}}, "val")
    assert val.annotation_file == str(official)
    with pytest.raises(ValueError, match="unknown COCO keypoints split 'test'"):
        coco_keypoints.from_config({"data_dir": str(data_dir)}, "test")


def test_builder_name_is_ours_and_records_keep_json_order(prepared):
    import tensorflow_datasets as tfds

    _, data_dir = prepared
    # TFDS refuses to register a name twice, so defining the class proves the name was free.
    assert tfds.builder_cls(coco_keypoints.TFDS_NAME) is coco_keypoints.builder_class()
    builder = tfds.builder_from_directory(
        os.fspath(data_dir / coco_keypoints.TFDS_NAME / "1.0.0"))
    records = builder.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})
    assert [int(records[i]["image/id"]) for i in range(4)] == [
        image_id for image_id, _, _ in SPLITS["train"][0]]
    original = (prepared[0] / "train2017" / "000000397133.jpg").read_bytes()
    assert records[0]["image"] == original  # stored as is, not re-encoded


def test_partial_layout_corrupt_image_and_rebuild(tmp_path):
    manual_dir = _write_layout(tmp_path / "coco", splits=("val",), corrupt=(285,))
    data_dir = tmp_path / "tfds"
    coco_keypoints.prepare(manual_dir, data_dir)  # validation only, with a warning
    val = coco_keypoints.TfdsCocoKeypointsSource("val", data_dir)
    assert val[0]["image"].shape == (40, 56, 3)
    with pytest.raises(coco_json.UnreadableImageError, match=r"000000000285.jpg \(image id 285"):
        val[1]
    with pytest.raises(DatasetNotFoundError) as error:
        coco_keypoints.TfdsCocoKeypointsSource("train", data_dir)
    assert (f"python -m centernet_jax.prepare coco_keypoints --manual_dir=COCO_DIR "
            f"--data_dir={data_dir}") in str(error.value)

    _write_layout(manual_dir, splits=("train",))
    with pytest.raises(ValueError, match=r"already holds splits \['validation'\].*\['train'\]"
                       r".*delete that folder"):
        coco_keypoints.prepare(manual_dir, data_dir)
    shutil.rmtree(data_dir)
    coco_keypoints.prepare(manual_dir, data_dir)
    assert len(coco_keypoints.TfdsCocoKeypointsSource("train", data_dir)) == 3


def test_prepare_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        coco_keypoints.prepare(tmp_path / "empty", tmp_path / "tfds")
    message = str(error.value)
    assert str(tmp_path / "empty" / "annotations" / "person_keypoints_val2017.json") in message
    assert str(tmp_path / "empty" / "train2017") in message

    manual_dir = _write_layout(tmp_path / "missing", splits=("val",))
    os.remove(manual_dir / "val2017" / "000000000139.jpg")
    with pytest.raises(DatasetNotFoundError,
                       match=r"1 of the 2 images .* are not in .*val2017 .*000000000139.jpg"):
        coco_keypoints.prepare(manual_dir, tmp_path / "tfds")

    manual_dir = _write_layout(tmp_path / "animals", splits=("val",))
    annotation_file = manual_dir / "annotations" / "person_keypoints_val2017.json"
    data = json.loads(annotation_file.read_text())
    data["categories"][0]["keypoints"] = ["head", "tail"] + [f"k{i}" for i in range(15)]
    annotation_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="is not COCO person keypoints"):
        coco_keypoints.prepare(manual_dir, tmp_path / "tfds")
    assert not (tmp_path / "tfds" / coco_keypoints.TFDS_NAME / "1.0.0").exists()


def test_missing_dataset_fails_fast_without_tensorflow(tmp_path):
    # Half-prepared: a version folder with records but no metadata.json.
    half = tmp_path / "half" / coco_keypoints.TFDS_NAME / "1.0.0"
    half.mkdir(parents=True)
    (half / f"{coco_keypoints.TFDS_NAME}-train.array_record-00000-of-00001").touch()
    script = textwrap.dedent(f"""
        import sys, time
        from centernet_jax.data import coco_keypoints, sources
        start = time.perf_counter()
        try:
            coco_keypoints.from_config(dict(data_dir={str(tmp_path)!r}), "train")
        except sources.DatasetNotFoundError as error:
            message = str(error)
        try:
            coco_keypoints.TfdsCocoKeypointsSource("train", {str(tmp_path / "half")!r})
        except sources.DatasetNotFoundError as error:
            half_message = str(error)
        assert time.perf_counter() - start < 1.0
        command = ("python -m centernet_jax.prepare coco_keypoints --manual_dir=COCO_DIR "
                   "--data_dir={tmp_path}")
        assert command in message, message
        assert {str(tmp_path / coco_keypoints.TFDS_NAME)!r} in message, message
        assert "'train'" in message and "person_keypoints_train2017.json" in message
        assert "metadata.json" in half_message and "Delete" in half_message, half_message
        assert "tensorflow" not in sys.modules and "tensorflow_datasets" not in sys.modules
        print("ok")
    """)
    result = fresh_interpreter.run(script)
    assert "ok" in result.stdout, result.stdout
