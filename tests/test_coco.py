"""Tests for the COCO TFDS source (centernet_jax.data.coco)."""

import time

import cv2
import numpy as np
import pytest

from centernet_jax.data import coco, sources


def _fake_prepared_coco(root, version="1.1.0", splits=("validation",)):
    """Empty split files: enough for the file-system check, which reads nothing."""
    directory = root / "coco" / "2017" / version
    directory.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (directory / f"coco-{split}.array_record-00000-of-00001").touch()
    return root


def test_missing_coco_fails_fast_with_instructions(tmp_path):
    start = time.perf_counter()
    with pytest.raises(sources.DatasetNotFoundError) as error:
        sources.make_source(dict(name="coco", data_dir=str(tmp_path)), "train")
    assert time.perf_counter() - start < 1.0
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert f"tfds build coco/2017 --file_format=array_record --data_dir={tmp_path}" in message
    assert str(tmp_path / "coco" / "2017") in message and "'train'" in message
    assert "25 GB" in message and "20 GB" in message


def test_find_prepared_coco_picks_the_newest_version_with_the_split(tmp_path):
    _fake_prepared_coco(tmp_path, "1.0.0", ("train", "validation"))
    _fake_prepared_coco(tmp_path, "1.1.0", ("validation",))
    (tmp_path / "coco" / "2017" / "incomplete.incomplete").mkdir()
    assert coco.find_prepared_coco("val", tmp_path) == (tmp_path, "1.1.0")
    assert coco.find_prepared_coco("train", tmp_path) == (tmp_path, "1.0.0")
    with pytest.raises(sources.DatasetNotFoundError):
        coco.find_prepared_coco("test", tmp_path)
    with pytest.raises(ValueError, match="unknown COCO split"):
        coco.find_prepared_coco("minival", tmp_path)


def _record(height, width, boxes_yxyx, labels, crowd, image_id):
    rng = np.random.default_rng(image_id)
    return {
        "image": rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8),
        "image/filename": f"{image_id:012d}.jpg",
        "image/id": image_id,
        "objects": {"bbox": boxes_yxyx, "label": labels, "is_crowd": crowd,
                    "id": [image_id * 10 + k + 1 for k in range(len(labels))],
                    "area": [1] * len(labels)},
    }


def test_coco_record_conversion_by_hand():
    # bbox [ymin, xmin, ymax, xmax] normalised; COCO [x, y, w, h] = [6, 2, 12, 8] in a 30x20 image.
    record = _record(20, 30, [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], [3, 79],
                     [False, True], 42)
    example = coco.coco_record_to_example(record)
    np.testing.assert_allclose(example["boxes"], [[6, 2, 18, 10], [0, 0, 30, 20]], atol=1e-5)
    assert example["boxes"].dtype == np.float32
    assert example["classes"].tolist() == [3, 79] and example["classes"].dtype == np.int32
    assert example["is_crowd"].tolist() == [False, True] and example["is_crowd"].dtype == bool
    np.testing.assert_array_equal(example["image"], record["image"][..., ::-1])
    assert example["image"].flags.c_contiguous
    assert example["image_id"] == 42 and example["image_id"].dtype == np.int64
    np.testing.assert_array_equal(example["image_hw"], [20, 30])
    dropped = coco.coco_record_to_example(record, drop_crowd=True)
    assert dropped["classes"].tolist() == [3] and dropped["boxes"].shape == (1, 4)
    assert dropped["is_crowd"].tolist() == [False]
    empty = coco.coco_record_to_example(_record(8, 9, [], [], [], 1))
    assert empty["boxes"].shape == (0, 4) and empty["classes"].shape == (0,)
    assert empty["is_crowd"].shape == (0,)
    with pytest.raises(ValueError, match="inconsistent"):
        coco.coco_record_to_example(_record(8, 9, [[0, 0, 1, 1]], [1, 2], [False], 1))


def test_coco_source_through_tfds_mock(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    _fake_prepared_coco(tmp_path, "1.1.0", ("validation",))
    records = [
        _record(20, 30, np.array([[0.1, 0.2, 0.5, 0.6]], np.float32), np.array([3]),
                np.array([False]), 139),
        _record(16, 12, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64),
                np.zeros((0,), bool), 285),
        _record(10, 10, np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32),
                np.array([0, 1]), np.array([True, False]), 632),
    ]
    requested_splits = []

    def as_data_source(self, split, *args, decoders=None, **kwargs):
        requested_splits.append(split)
        if decoders:  # image decoding skipped: serve encoded PNG bytes
            return [{**r, "image": cv2.imencode(".png", r["image"])[1].tobytes()}
                    for r in records]
        return records

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        source = sources.make_source(dict(name="coco", data_dir=str(tmp_path)), "val",
                                     robust=False)
        crowd_free = coco.from_config(
            dict(name="coco", data_dir=str(tmp_path), drop_crowd=True), "validation")
        ground_truth = source.coco_ground_truth()
    assert isinstance(source, coco.TfdsCocoSource) and source.version == "1.1.0"
    assert requested_splits == ["validation"] * 3
    assert len(source) == 3 and source.num_classes == 80 and len(source.category_ids) == 80
    assert source.category_ids[0] == 1 and source.category_ids[-1] == 90
    assert source.class_names[0] == "person" and source.class_names[-1] == "toothbrush"
    for record, example in zip(records, (source[i] for i in range(3))):
        assert example["image_id"] == record["image/id"]
        np.testing.assert_array_equal(example["image"], record["image"][..., ::-1])
    np.testing.assert_allclose(source[0]["boxes"], [[6, 2, 18, 10]], atol=1e-5)
    assert source[1]["boxes"].shape == (0, 4)
    assert source[2]["classes"].tolist() == [0, 1] and crowd_free[2]["classes"].tolist() == [1]
    # Ground truth rebuilt from the records: sizes from the image headers, COCO category ids,
    # crowd boxes kept as iscrowd=1.
    assert [(im["id"], im["width"], im["height"]) for im in ground_truth["images"]] == [
        (139, 30, 20), (285, 12, 16), (632, 10, 10)]
    anns = ground_truth["annotations"]
    assert [(a["id"], a["image_id"], a["category_id"], a["iscrowd"]) for a in anns] == [
        (1391, 139, 4, 0), (6321, 632, 1, 1), (6322, 632, 2, 0)]
    np.testing.assert_allclose([a["bbox"] for a in anns],
                               [[6, 2, 12, 8], [0, 0, 5, 5], [5, 5, 5, 5]], atol=1e-5)
    assert [c["id"] for c in ground_truth["categories"]] == list(coco.COCO_CATEGORY_IDS)
