"""Tests for the Pascal VOC TFDS source (centernet_jax.data.voc)."""

import time

import cv2
import numpy as np
import pytest

from centernet_jax.data import sources, voc

# The official CenterNet class order (pascal.py, background dropped).
OFFICIAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor")
PERSON, CHAIR, CAR, TVMONITOR, AEROPLANE, BOTTLE, DOG, HORSE = (
    OFFICIAL_CLASSES.index(name) for name in (
        "person", "chair", "car", "tvmonitor", "aeroplane", "bottle", "dog", "horse"))


def _record(file_name, height, width, xml_boxes=(), labels=(), difficult=()):
    """A record as `tfds.data_source("voc/<year>")` returns it.

    `xml_boxes` are VOC XML (xmin, ymin, xmax, ymax), 1-based inclusive; they are normalised
    as the TFDS builder does (divided by the XML size) and stored as float32. Types follow a
    real deserialised record: bytes text, per-object lists of numpy values.
    """
    rng = np.random.default_rng(len(file_name) * 1000 + height * width)
    bbox = [np.array([ymin / height, xmin / width, ymax / height, xmax / width], np.float32)
            for xmin, ymin, xmax, ymax in xml_boxes]
    return {
        "image": rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8),
        "image/filename": file_name.encode(),
        "objects": {"bbox": bbox, "label": [np.int64(label) for label in labels],
                    "is_difficult": [np.bool_(d) for d in difficult],
                    "is_truncated": [np.False_] * len(labels),
                    "pose": [np.int64(4)] * len(labels)},
    }


# Hand-worked: a 50x40 image with XML box (11, 5, 30, 40) covers pixels 10..29 x 4..39
# (0-based), so (x1, y1, x2, y2) = (10, 4, 30, 40) and the json bbox is [10, 4, 20, 36].
RECORDS = {
    (2007, "train"): [
        _record("000005.jpg", 40, 50, [(11, 5, 30, 40), (1, 1, 50, 40)], [PERSON, CHAIR],
                [False, True])],
    (2007, "validation"): [
        # 7 / 93, 92 / 93 and 13 / 61 are not exact in float32: recovery must snap them back.
        _record("000007.jpg", 61, 93, [(7, 13, 92, 61)], [CAR], [False])],
    (2012, "train"): [
        _record("2008_000008.jpg", 32, 48),
        # A VOC2012 name with the serial of VOC2007's 000005.jpg: ids must still differ.
        _record("2007_000005.jpg", 48, 64, [(17, 2, 64, 48)], [TVMONITOR], [False])],
    (2012, "validation"): [
        # 12.5 is a non-integer XML coordinate: kept as it is, not snapped.
        _record("2011_003353.jpg", 36, 50, [(3, 4, 20, 30), (12.5, 1, 36, 36)],
                [AEROPLANE, BOTTLE], [True, False])],
    (2007, "test"): [
        _record("000001.jpg", 40, 50, [(11, 5, 30, 40), (2, 3, 9, 8)], [DOG, HORSE],
                [False, True]),
        _record("000004.jpg", 33, 35, [(2, 2, 20, 20)], [DOG], [True])],
}
EXPECTED_TRAIN = [  # (image_id, boxes, classes, is_difficult) in concatenation order
    (5, [[10, 4, 30, 40], [0, 0, 50, 40]], [PERSON, CHAIR], [False, True]),
    (7, [[6, 12, 92, 61]], [CAR], [False]),
    (2008000008, np.zeros((0, 4)), [], []),
    (2007000005, [[16, 1, 64, 48]], [TVMONITOR], [False]),
    (2011003353, [[2, 3, 20, 30], [11.5, 0, 36, 36]], [AEROPLANE, BOTTLE], [True, False]),
]


def _fake_prepared(root, year, splits, version="5.0.0"):
    """Empty split files: enough for the file-system check, which reads nothing."""
    directory = root / "voc" / str(year) / version
    directory.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (directory / f"voc-{split}.array_record-00000-of-00001").touch()
    return root


def _mock_tfds(requested):
    """`tfds.testing.mock_data` serving RECORDS, logging (year, split, encoded) requests."""
    tfds = pytest.importorskip("tensorflow_datasets")

    def as_data_source(self, split, *args, decoders=None, **kwargs):
        year = int(self.builder_config.name)
        requested.append((year, split, bool(decoders)))
        if decoders:  # image decoding skipped: serve encoded PNG bytes
            return [{**r, "image": cv2.imencode(".png", r["image"])[1].tobytes()}
                    for r in RECORDS[year, split]]
        return RECORDS[year, split]

    return tfds.testing.mock_data(as_data_source_fn=as_data_source)


def test_class_map_matches_tfds_and_official_order():
    tfds = pytest.importorskip("tensorflow_datasets")
    assert voc.CLASS_NAMES == OFFICIAL_CLASSES == tuple(sorted(OFFICIAL_CLASSES))
    assert voc.CATEGORY_IDS == tuple(range(1, 21))
    with tfds.testing.mock_data():  # builds the builder's info from code; nothing is read
        for year in ("2007", "2012"):
            labels = tfds.builder(f"voc/{year}").info.features["objects"]["label"].names
            assert tuple(labels) == voc.CLASS_NAMES


def test_boxes_are_the_json_boxes_exactly():
    (record,) = RECORDS[2007, "validation"]
    bbox = record["objects"]["bbox"]
    raw = np.float64(bbox[0][1]) * 93  # without snapping, x1 would be 6.00000025
    assert raw != 7
    np.testing.assert_array_equal(voc.voc_boxes(bbox, 61, 93), [[6, 12, 92, 61]])
    np.testing.assert_array_equal(
        voc.voc_boxes(RECORDS[2007, "train"][0]["objects"]["bbox"], 40, 50),
        [[10, 4, 30, 40], [0, 0, 50, 40]])
    assert voc.voc_boxes([], 10, 10).shape == (0, 4)
    nan = voc.voc_boxes([[np.nan, 0.5, 1.0, 1.0]], 10, 10)
    assert np.isnan(nan[0, 1]) and nan[0].tolist()[2:] == [10, 10]


def test_record_conversion_and_difficult_objects():
    record = RECORDS[2012, "validation"][0]
    example = voc.voc_record_to_example(record, 2012)
    np.testing.assert_array_equal(example["boxes"], [[2, 3, 20, 30], [11.5, 0, 36, 36]])
    assert example["boxes"].dtype == np.float32
    assert example["classes"].tolist() == [AEROPLANE, BOTTLE]
    assert example["classes"].dtype == np.int32
    assert example["is_difficult"].tolist() == [True, False]
    assert example["is_difficult"].dtype == bool
    np.testing.assert_array_equal(example["image"], record["image"][..., ::-1])
    assert example["image"].flags.c_contiguous
    assert example["image_id"] == 2011003353 and example["image_id"].dtype == np.int64
    np.testing.assert_array_equal(example["image_hw"], [36, 50])
    kept = voc.voc_record_to_example(record, 2012, drop_difficult=True)
    assert kept["classes"].tolist() == [BOTTLE] and kept["is_difficult"].tolist() == [False]
    np.testing.assert_array_equal(kept["boxes"], [[11.5, 0, 36, 36]])
    empty = voc.voc_record_to_example(RECORDS[2012, "train"][0], 2012)
    assert empty["boxes"].shape == (0, 4) and empty["classes"].shape == (0,)
    broken = {**record, "objects": {**record["objects"], "is_difficult": [np.False_]}}
    with pytest.raises(ValueError, match="inconsistent"):
        voc.voc_record_to_example(broken, 2012)


def test_image_ids_are_unique_across_years():
    assert voc.voc_image_id(2007, "000005.jpg") == 5
    assert voc.voc_image_id(2012, "2007_000005.jpg") == 2007000005
    assert voc.voc_image_id(2012, "2012_004331.jpg") == 2012004331 < 2**31
    with pytest.raises(ValueError, match="2008_000008.jpg"):
        voc.voc_image_id(2007, "2008_000008.jpg")
    with pytest.raises(ValueError, match="000005.jpg"):
        voc.voc_image_id(2012, "000005.jpg")
    with pytest.raises(ValueError, match="unknown VOC year"):
        voc.voc_image_id(2010, "2010_000001.jpg")


def test_train_split_concatenates_both_trainvals(tmp_path):
    _fake_prepared(tmp_path, 2007, ("train", "validation", "test"))
    _fake_prepared(tmp_path, 2012, ("train", "validation"))
    requested = []
    with _mock_tfds(requested):
        source = sources.make_source(dict(name="voc", data_dir=str(tmp_path)), "train",
                                     robust=False)
        without_difficult = voc.from_config(
            dict(data_dir=str(tmp_path), drop_difficult=True), "train")
    assert isinstance(source, voc.TfdsVocSource)
    assert requested[:4] == [(2007, "train", False), (2007, "validation", False),
                             (2012, "train", False), (2012, "validation", False)]
    assert source.parts == (("voc/2007:5.0.0", "train", 1), ("voc/2007:5.0.0", "validation", 1),
                            ("voc/2012:5.0.0", "train", 2), ("voc/2012:5.0.0", "validation", 1))
    assert len(source) == 5 and source.num_classes == 20 and "voc/2012:5.0.0" in repr(source)
    examples = [source[i] for i in range(len(source))]
    for example, (image_id, boxes, classes, difficult) in zip(examples, EXPECTED_TRAIN):
        assert example["image_id"] == image_id
        np.testing.assert_array_equal(example["boxes"], np.reshape(boxes, (-1, 4)))
        assert example["classes"].tolist() == classes
        assert example["is_difficult"].tolist() == difficult
    assert len({int(e["image_id"]) for e in examples}) == 5
    assert source[-1]["image_id"] == source[np.int64(4)]["image_id"] == 2011003353
    with pytest.raises(IndexError):
        source[5]
    assert without_difficult[0]["classes"].tolist() == [PERSON]
    assert without_difficult[4]["classes"].tolist() == [BOTTLE]


def test_test_split_and_ground_truth_ignore_difficult(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _fake_prepared(tmp_path, 2007, ("test",))  # VOC2012 is not needed for the test split
    requested = []
    with _mock_tfds(requested):
        sources_by_name = {split: voc.from_config(dict(data_dir=str(tmp_path)), split)
                           for split in ("val", "validation", "test")}
        ground_truth = sources_by_name["val"].coco_ground_truth()
    assert {(year, split) for year, split, _ in requested} == {(2007, "test")}
    assert requested[-1] == (2007, "test", True)  # ground truth reads image headers only
    assert all(len(s) == 2 for s in sources_by_name.values())
    assert [(im["id"], im["width"], im["height"], im["file_name"])
            for im in ground_truth["images"]] == [(1, 50, 40, "000001.jpg"),
                                                  (4, 35, 33, "000004.jpg")]
    anns = ground_truth["annotations"]
    assert [(a["id"], a["image_id"], a["category_id"], a["iscrowd"]) for a in anns] == [
        (1, 1, DOG + 1, 0), (2, 1, HORSE + 1, 1), (3, 4, DOG + 1, 1)]
    assert [a["bbox"] for a in anns] == [[10, 4, 20, 36], [1, 2, 8, 6], [1, 1, 19, 19]]
    assert [a["area"] for a in anns] == [720, 48, 361]
    assert [(c["id"], c["name"]) for c in ground_truth["categories"]][::19] == [
        (1, "aeroplane"), (20, "tvmonitor")]
    # COCOeval ignores difficult objects: the difficult dog is no missed positive, and the
    # higher-scored detection on it is no false positive, so the one real dog gives AP 1.
    coco_gt = COCO()
    coco_gt.dataset = ground_truth
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes([
        {"image_id": 1, "category_id": DOG + 1, "bbox": [10, 4, 20, 36], "score": 0.9},
        {"image_id": 4, "category_id": DOG + 1, "bbox": [1, 1, 19, 19], "score": 0.95},
        {"image_id": 1, "category_id": HORSE + 1, "bbox": [1, 2, 8, 6], "score": 0.8}])
    evaluation = COCOeval(coco_gt, coco_dt, "bbox")
    evaluation.params.areaRng = [[0, 1e10]]
    evaluation.params.areaRngLbl = ["all"]
    evaluation.evaluate()
    evaluation.accumulate()
    precision = evaluation.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all classes
    np.testing.assert_allclose(precision[:, DOG], 1.0)
    assert np.all(precision[:, HORSE] == -1)  # no positives: the class is not scored


def test_missing_years_fail_fast_with_one_message_each(tmp_path):
    def message(split, data_dir):
        start = time.perf_counter()
        with pytest.raises(sources.DatasetNotFoundError) as error:
            voc.from_config(dict(data_dir=str(data_dir)), split)
        assert time.perf_counter() - start < 1.0
        return str(error.value)

    def command(year, data_dir):
        return f"tfds build voc/{year} --file_format=array_record --data_dir={data_dir}"

    nothing = message("train", tmp_path)
    assert command(2007, tmp_path) in nothing and command(2012, tmp_path) in nothing
    assert "voc/2007 splits 'train' and 'validation' are not prepared" in nothing
    assert str(tmp_path / "voc" / "2012" / "<version>" / "voc-validation.array_record*") in nothing
    assert "3.9 GB" in nothing and "0.9 GB" in nothing

    only_2012 = _fake_prepared(tmp_path / "a", 2012, ("train", "validation"))
    missing_2007 = message("train", only_2012)
    assert command(2007, only_2012) in missing_2007 and "voc/2012" not in missing_2007
    test_split = message("test", only_2012)
    assert "voc/2007 split 'test' is not prepared" in test_split
    assert command(2007, only_2012) in test_split and "voc/2012" not in test_split

    # A half-prepared year (train without validation) counts as missing.
    half = _fake_prepared(tmp_path / "b", 2007, ("train", "test"))
    _fake_prepared(half, 2012, ("train", "validation"))
    half_2007 = message("train", half)
    assert "voc/2007 splits 'train' and 'validation' are not prepared" in half_2007
    assert command(2007, half) in half_2007 and "voc/2012" not in half_2007

    with pytest.raises(ValueError, match="unknown VOC split"):
        voc.from_config({}, "trainval")


def test_a_broken_record_names_its_split_and_file(tmp_path, monkeypatch):
    _fake_prepared(tmp_path, 2007, ("test",))
    broken = {**_record("000009.jpg", 8, 8), "image": np.zeros((8, 8), np.uint8)}  # no channels
    monkeypatch.setitem(RECORDS, (2007, "test"), [RECORDS[2007, "test"][0], broken])
    with _mock_tfds([]):
        source = voc.from_config(dict(data_dir=str(tmp_path)), "test")
    assert source[0]["image_id"] == 1
    with pytest.raises(ValueError, match=r"voc/2007 'test' record 1 \(000009.jpg\): .*uint8 RGB"):
        source[1]
