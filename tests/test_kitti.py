"""Tests for the KITTI 3D source (centernet_jax.data.kitti) over a tiny generated raw tree."""

import logging
import textwrap
from pathlib import Path

import cv2
import ml_collections
import numpy as np
import pytest

import fresh_interpreter

from centernet_jax.data import kitti, tfds_prepared
from centernet_jax.data.sources import DatasetNotFoundError

# The devkit's example line (KITTI training label 000000).
PEDESTRIAN_LINE = ("Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 "
                   "1.47 8.41 0.01")
# Object types of each generated image (file order); image 2 has an empty label file.
TYPES = {
    "000000": ("Car", "Van", "DontCare", "Pedestrian"),
    "000001": ("Tram", "Cyclist", "Misc", "Truck", "Person_sitting"),
    "000002": (),
    "000003": ("DontCare", "Car"),
    "000004": ("Car", "Tram", "Cyclist"),
}
# Official class codes of the yielded objects and the Tram/Misc count, worked out by hand.
EXPECTED_CODES = {"000000": ([1, -3, -1, 0], 0), "000001": ([2, -3, -2], 2),
                  "000002": ([], 0), "000003": ([-1, 1], 0), "000004": ([1, 2], 1)}
IMAGE_HW = {"000000": (40, 120), "000001": (32, 96), "000002": (36, 64), "000003": (40, 80),
            "000004": (48, 96)}
# Out-of-order lines check that examples follow the split file.
SPLITS = {
    "3dop": {"train": ["000000", "000002", "000004"], "val": ["000003", "000001"]},
    "subcnn": {"train": ["000001", "000003"], "val": ["000004", "000000", "000002"]},
}
LABEL_FIELDS = ("truncated", "occluded", "alpha", "bbox", "dimensions", "location",
                "rotation_y")


def _label_line(name, rng):
    """One devkit line and its expected values (float32 of the written decimal text)."""
    if name == "DontCare":
        left, top = rng.uniform(0, 30, 2)
        columns = [-1, -1, -10, left, top, left + 20, top + 10, -1, -1, -1, -1000, -1000,
                   -1000, -10]
        texts = [f"{v:.2f}" for v in columns]
        texts[1] = "-1"
    else:
        left, top = rng.uniform(-5, 40, 2)
        columns = [rng.choice([0.0, 0.37, 1.0]), rng.integers(0, 4), rng.uniform(-3.14, 3.14),
                   left, top, left + rng.uniform(1, 60), top + rng.uniform(1, 30),
                   *rng.uniform(0.5, 4, 3), *rng.uniform(-20, 20, 2), rng.uniform(2, 80),
                   rng.uniform(-3.14, 3.14)]
        texts = [f"{v:.2f}" for v in columns]
        texts[1] = str(int(columns[1]))
    values = [float(t) for t in texts]
    expected = {"type": name, "truncated": np.float32(values[0]), "occluded": int(values[1]),
                "alpha": np.float32(values[2]), "bbox": np.float32(values[3:7]),
                "dimensions": np.float32(values[7:10]), "location": np.float32(values[10:13]),
                "rotation_y": np.float32(values[13])}
    return " ".join([name] + texts), expected


def _calib_text(rng):
    """The 7 standard calib lines; returns (text, P2 float32 [3, 4])."""
    lines, p2 = [], None
    for key, count in (("P0", 12), ("P1", 12), ("P2", 12), ("P3", 12), ("R0_rect", 9),
                       ("Tr_velo_to_cam", 12), ("Tr_imu_to_velo", 12)):
        texts = [f"{v:.6e}" for v in rng.uniform(-800, 800, count)]
        if key == "P2":
            p2 = np.float32([float(t) for t in texts]).reshape(3, 4)
        lines.append(f"{key}: " + " ".join(texts))
    return "\n".join(lines) + "\n", p2


def write_raw_tree(root: Path, seed: int = 0) -> dict:
    """A tiny raw KITTI tree (5 PNGs, labels, calibs, both ImageSets) and what it holds."""
    rng = np.random.default_rng(seed)
    training = root / "training"
    for kind in ("image_2", "label_2", "calib"):
        (training / kind).mkdir(parents=True)
    expected = {}
    for index, types in TYPES.items():
        image = rng.integers(0, 256, (*IMAGE_HW[index], 3), dtype=np.uint8)  # BGR, as written
        cv2.imwrite(str(training / "image_2" / f"{index}.png"), image)
        lines, objects = zip(*[_label_line(name, rng) for name in types]) if types else ((), ())
        (training / "label_2" / f"{index}.txt").write_text("".join(f"{l}\n" for l in lines))
        calib_text, p2 = _calib_text(rng)
        (training / "calib" / f"{index}.txt").write_text(calib_text)
        expected[index] = {"image": image, "objects": list(objects), "calib": p2}
    for split_set, splits in SPLITS.items():
        (root / f"ImageSets_{split_set}").mkdir()
        for split, indices in splits.items():
            (root / f"ImageSets_{split_set}" / f"{split}.txt").write_text(
                "".join(f"{i}\n" for i in indices))
    return expected


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(raw root, TFDS data dir, expected contents) with both split sets prepared."""
    pytest.importorskip("tensorflow_datasets")
    base = tmp_path_factory.mktemp("kitti")
    expected = write_raw_tree(base / "raw")
    for split_set in kitti.SPLIT_SETS:
        kitti.prepare(base / "raw", base / "tfds", split_set=split_set)
    return base / "raw", base / "tfds", expected


# -- Raw parsing ----------------------------------------------------------------------------


def test_parse_label_by_hand():
    text = f"{PEDESTRIAN_LINE}\n\nDontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 " \
           "-1000 -1000 -1000 -10 0.5\r\n"  # blank line skipped; 16th (score) column ignored
    labels = kitti.parse_label(text)
    assert labels["type"] == ("Pedestrian", "DontCare")
    np.testing.assert_array_equal(labels["truncated"], np.float32([0.0, -1.0]))
    np.testing.assert_array_equal(labels["occluded"], [0, -1])
    np.testing.assert_array_equal(labels["alpha"], np.float32([-0.20, -10]))
    np.testing.assert_array_equal(labels["bbox"], np.float32([[712.40, 143.00, 810.73, 307.92],
                                                              [503.89, 169.71, 590.61, 190.13]]))
    np.testing.assert_array_equal(labels["dimensions"][0], np.float32([1.89, 0.48, 1.20]))
    np.testing.assert_array_equal(labels["location"][0], np.float32([1.84, 1.47, 8.41]))
    np.testing.assert_array_equal(labels["location"][1], np.float32([-1000] * 3))
    np.testing.assert_array_equal(labels["rotation_y"], np.float32([0.01, -10]))
    assert labels["occluded"].dtype == np.int32 and labels["bbox"].dtype == np.float32
    empty = kitti.parse_label("\n")
    assert empty["type"] == () and empty["bbox"].shape == (0, 4)
    assert empty["dimensions"].shape == (0, 3) and empty["alpha"].shape == (0,)


@pytest.mark.parametrize("bad_line, match", [
    ("Car 0.00 0 -1.5 10 5 50 30 1.5 1.6 3.9 1.0 1.7 20.0", "expected 15 columns.*got 14"),
    (PEDESTRIAN_LINE + " 0.9 7", "got 17"),
    ("Car 0.00 0 -1.5 10 5 50 30 1.5 1.6 3.9 1.0 1.7 twenty -1.5", "not a number"),
    ("Bus 0.00 0 -1.5 10 5 50 30 1.5 1.6 3.9 1.0 1.7 20.0 -1.5", "unknown object type 'Bus'"),
    ("Car 0.00 0.5 -1.5 10 5 50 30 1.5 1.6 3.9 1.0 1.7 20.0 -1.5", "occluded must be an integer"),
])
def test_malformed_label_line_names_file_and_line(tmp_path, bad_line, match):
    path = tmp_path / "000007.txt"
    path.write_text(f"{PEDESTRIAN_LINE}\n\n{bad_line}\n")
    with pytest.raises(kitti.KittiFormatError, match=match) as error:
        kitti.read_label_file(path)
    assert f"{path}, line 3:" in str(error.value)


def test_parse_calib_finds_p2_by_key():
    rng = np.random.default_rng(1)
    text, p2 = _calib_text(rng)
    parsed = kitti.parse_calib(text)
    assert parsed.dtype == np.float32 and parsed.shape == (3, 4)
    np.testing.assert_array_equal(parsed, p2)
    lines = text.splitlines()
    assert lines[2].startswith("P2:")  # the line the official converter reads
    moved = "\n".join(lines[3:] + lines[:3])  # P2 now on line 7
    np.testing.assert_array_equal(kitti.parse_calib(moved), p2)
    with pytest.raises(kitti.KittiFormatError, match=r"calib/9\.txt: no line starting with 'P2:'"):
        kitti.parse_calib("\n".join(lines[:2] + lines[3:]), "calib/9.txt")
    short = "\n".join(lines[:2] + [lines[2].rsplit(" ", 1)[0]] + lines[3:])
    with pytest.raises(kitti.KittiFormatError, match=r"c\.txt, line 3: P2 needs 12 numbers.*11"):
        kitti.parse_calib(short, "c.txt")
    with pytest.raises(kitti.KittiFormatError, match=r"P2 appears on lines \[3, 8\]"):
        kitti.parse_calib(text + lines[2], "c.txt")


def test_parse_split_file():
    assert kitti.parse_split_file("000003\n000001\n\n007480\n") == ["000003", "000001", "007480"]
    with pytest.raises(kitti.KittiFormatError, match=r"val\.txt, line 2: expected a 6-digit"):
        kitti.parse_split_file("000003\n12345\n", "val.txt")
    with pytest.raises(kitti.KittiFormatError, match=r"line 3: index 000003 already listed on "
                                                     r"line 1"):
        kitti.parse_split_file("000003\n000004\n000003\n", "val.txt")


def test_class_codes_follow_the_official_loader():
    codes, keep = kitti.class_codes(
        ["Pedestrian", "Car", "Cyclist", "Van", "Truck", "Person_sitting", "Tram", "Misc",
         b"DontCare"])
    assert keep.tolist() == [True] * 6 + [False, False, True]
    assert codes[keep].tolist() == [0, 1, 2, -3, -3, -2, -1]
    assert codes.dtype == np.int32
    with pytest.raises(ValueError, match="unknown KITTI object type 'Bus'"):
        kitti.class_codes(["Car", "Bus"])


def _png(image):
    return cv2.imencode(".png", image)[1].tobytes()


def test_record_to_example_by_hand():
    image = np.random.default_rng(2).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    record = {
        "image": _png(image), "image/id": 42, "image/filename": b"000042.png",
        "calib": np.arange(12, dtype=np.float32).reshape(3, 4),
        "objects": {
            "type": np.array([b"Tram", b"Car", b"Misc", b"DontCare"], dtype=object),
            "truncated": np.float32([0.1, 0.2, 0.3, -1]),
            "occluded": np.int32([0, 1, 2, -1]),
            "alpha": np.float32([1, 2, 3, -10]),
            "bbox": np.float32([[0, 0, 1, 1], [1, 2, 3, 4], [0, 0, 2, 2], [5, 5, 9, 6]]),
            "dimensions": np.float32(np.arange(12).reshape(4, 3)),
            "location": np.float32(-np.arange(12).reshape(4, 3)),
            "rotation_y": np.float32([0.5, 0.6, 0.7, -10]),
        },
    }
    example = kitti.record_to_example(record)
    np.testing.assert_array_equal(example["image"], image)  # cv2 in, cv2 out: BGR
    assert example["classes"].tolist() == [1, -1] and example["num_skipped_types"] == 2
    np.testing.assert_array_equal(example["boxes"], [[1, 2, 3, 4], [5, 5, 9, 6]])
    np.testing.assert_array_equal(example["dimensions"], [[3, 4, 5], [9, 10, 11]])
    np.testing.assert_array_equal(example["location"], [[-3, -4, -5], [-9, -10, -11]])
    np.testing.assert_array_equal(example["truncated"], np.float32([0.2, -1]))
    np.testing.assert_array_equal(example["occluded"], [1, -1])
    assert example["image_id"] == 42 and example["image_id"].dtype == np.int64
    np.testing.assert_array_equal(example["image_hw"], [6, 10])
    np.testing.assert_array_equal(example["calib"], record["calib"])
    with pytest.raises(ValueError, match=r"cannot decode KITTI image 000042\.png"):
        kitti.record_to_example({**record, "image": b"\x89PNG\r\n\x1a\nbroken"})


def test_png_image_hw_reads_the_header():
    assert kitti.png_image_hw(_png(np.zeros((7, 13, 3), np.uint8))) == (7, 13)
    with pytest.raises(kitti.KittiFormatError, match="x.jpg: not a PNG"):
        kitti.png_image_hw(cv2.imencode(".jpg", np.zeros((7, 13, 3), np.uint8))[1].tobytes(),
                           "x.jpg")


# -- Raw tree checks (no TensorFlow) --------------------------------------------------------


def test_check_manual_dir_lists_everything_missing(tmp_path):
    write_raw_tree(tmp_path)
    assert kitti.check_manual_dir(tmp_path, "subcnn") == {
        "train": SPLITS["subcnn"]["train"], "validation": SPLITS["subcnn"]["val"]}
    for name in ("train.txt", "val.txt"):
        (tmp_path / "ImageSets_subcnn" / name).unlink()
    (tmp_path / "training" / "image_2" / "000001.png").unlink()
    (tmp_path / "training" / "label_2" / "000003.txt").unlink()
    with pytest.raises(DatasetNotFoundError) as error:
        kitti.check_manual_dir(tmp_path, "subcnn")
    message = str(error.value)
    assert str(tmp_path / "ImageSets_subcnn" / "train.txt") in message
    assert str(tmp_path / "ImageSets_subcnn" / "val.txt") in message
    assert "github.com/tanshen/SubCNN" in message  # where the split files come from
    assert (f"python -m centernet_jax.prepare kitti --manual_dir={tmp_path} "
            f"--data_dir=DATA_DIR --split_set=subcnn") in message
    with pytest.raises(DatasetNotFoundError) as error:  # the 3DOP files are all there
        kitti.check_manual_dir(tmp_path, "3dop")
    message = str(error.value)
    assert f"1 file(s) in {tmp_path / 'training' / 'image_2'}/: 000001.png" in message
    assert f"1 file(s) in {tmp_path / 'training' / 'label_2'}/: 000003.txt" in message
    assert str(tmp_path / "training" / "calib") not in message
    assert "--split_set" not in message  # 3dop is the default
    with pytest.raises(DatasetNotFoundError, match="no such directory"):
        kitti.check_manual_dir(tmp_path / "absent", "3dop")
    with pytest.raises(ValueError, match=r"unknown KITTI split_set 'kitti'.*3dop.*subcnn"):
        kitti.check_manual_dir(tmp_path, "kitti")


def test_prepare_rejects_a_malformed_label_file(tmp_path):
    write_raw_tree(tmp_path / "raw")
    label = tmp_path / "raw" / "training" / "label_2" / "000004.txt"
    label.write_text(label.read_text() + "Car 0.00 0 -1.5 10 5 50\n")
    with pytest.raises(kitti.KittiFormatError, match=rf"{label}, line 4: expected 15 columns"):
        kitti.prepare(tmp_path / "raw", tmp_path / "tfds")
    assert not (tmp_path / "tfds").exists()  # nothing half-built


def test_missing_data_fails_fast_without_importing_tensorflow(tmp_path):
    # A fresh interpreter, so that other tests' imports do not hide a TensorFlow import.
    write_raw_tree(tmp_path / "raw")
    for name in ("train.txt", "val.txt"):
        (tmp_path / "raw" / "ImageSets_subcnn" / name).unlink()
    (tmp_path / "raw" / "ImageSets_subcnn").rmdir()
    script = textwrap.dedent(f"""
        import sys, time
        from centernet_jax.data import kitti
        from centernet_jax.data.sources import DatasetNotFoundError
        start = time.perf_counter()
        try:
            kitti.from_config(dict(data_dir={str(tmp_path / "tfds")!r}, split_set="subcnn"),
                              "val")
        except DatasetNotFoundError as error:
            source_message = str(error)
        try:
            kitti.prepare({str(tmp_path / "raw")!r}, {str(tmp_path / "tfds")!r}, "subcnn")
        except DatasetNotFoundError as error:
            prepare_message = str(error)
        assert time.perf_counter() - start < 1.0
        assert "tensorflow" not in sys.modules and "tensorflow_datasets" not in sys.modules
        print(source_message)
        print("-----")
        print(prepare_message)
    """)
    result = fresh_interpreter.run(script)
    source_message, prepare_message = result.stdout.split("-----")
    assert "kitti_3d/subcnn" in source_message and "'validation'" in source_message
    assert (f"python -m centernet_jax.prepare kitti --manual_dir=KITTI_DIR "
            f"--data_dir={tmp_path / 'tfds'} --split_set=subcnn") in source_message
    assert str(tmp_path / "raw" / "ImageSets_subcnn" / "train.txt") in prepare_message
    assert "SubCNN" in prepare_message
    assert str(tmp_path / "raw" / "training" / "image_2") not in prepare_message  # all there


# -- Built dataset --------------------------------------------------------------------------


@pytest.mark.parametrize("split_set", kitti.SPLIT_SETS)
@pytest.mark.parametrize("split", ["train", "val"])
def test_prepared_source_recovers_every_field(prepared, split_set, split):
    _, data_dir, expected = prepared
    source = kitti.KittiSource(split, data_dir, split_set=split_set)
    indices = SPLITS[split_set][split]
    assert len(source) == len(indices)
    assert source.split == ("train" if split == "train" else "validation")
    for position, index in enumerate(indices):  # split-file order
        example = source[position]
        want = expected[index]
        assert example["image_id"] == int(index) and example["image_id"].dtype == np.int64
        np.testing.assert_array_equal(example["image"], want["image"])  # BGR, lossless
        assert example["image"].dtype == np.uint8
        np.testing.assert_array_equal(example["image_hw"], IMAGE_HW[index])
        assert example["image_hw"].dtype == np.int32
        np.testing.assert_array_equal(example["calib"], want["calib"])
        codes, skipped = EXPECTED_CODES[index]
        assert example["classes"].tolist() == codes and example["classes"].dtype == np.int32
        assert example["num_skipped_types"] == skipped
        assert example["num_skipped_types"].dtype == np.int32
        kept = [o for o in want["objects"] if o["type"] not in ("Tram", "Misc")]
        n = len(kept)
        stacked = {key: np.array([o[key] for o in kept]) for key in LABEL_FIELDS}
        np.testing.assert_array_equal(example["boxes"], stacked["bbox"].reshape(n, 4))
        for key, dtype, shape in (("alpha", np.float32, (n,)), ("dimensions", np.float32, (n, 3)),
                                  ("location", np.float32, (n, 3)),
                                  ("rotation_y", np.float32, (n,)),
                                  ("truncated", np.float32, (n,)), ("occluded", np.int32, (n,))):
            assert example[key].dtype == dtype and example[key].shape == shape, key
            np.testing.assert_array_equal(example[key], stacked[key].reshape(shape), key)


def test_prepared_records_keep_raw_types_and_png_bytes(prepared):
    raw, data_dir, expected = prepared
    records = tfds_prepared.open_data_source("kitti_3d/3dop", kitti.TFDS_VERSION, "validation",
                                             data_dir, decode_images=False)
    for position, index in enumerate(SPLITS["3dop"]["val"]):
        record = records[position]
        assert record["image"] == (raw / "training" / "image_2" / f"{index}.png").read_bytes()
        assert tfds_prepared.as_text(record["image/filename"]) == f"{index}.png"
        types = [tfds_prepared.as_text(t) for t in record["objects"]["type"]]
        assert types == list(TYPES[index])  # Tram and Misc stored too


def test_coco_ground_truth_has_the_real_classes_only(prepared):
    _, data_dir, expected = prepared
    source = kitti.from_config(ml_collections.ConfigDict(dict(
        data_dir=str(data_dir), split_set="subcnn")), "validation")
    assert source.class_names == ("Pedestrian", "Car", "Cyclist") and source.num_classes == 3
    ground_truth = source.coco_ground_truth()
    indices = SPLITS["subcnn"]["val"]  # 000004, 000000, 000002
    assert [(im["id"], im["file_name"], im["height"], im["width"])
            for im in ground_truth["images"]] == [
        (int(i), f"{i}.png", *IMAGE_HW[i]) for i in indices]
    np.testing.assert_array_equal(ground_truth["images"][0]["calib"], expected["000004"]["calib"])
    # 000004: Car, (Tram), Cyclist; 000000: Car, (Van), (DontCare), Pedestrian; 000002: none.
    anns = ground_truth["annotations"]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in anns] == [
        (1, 4, 2), (2, 4, 3), (3, 0, 2), (4, 0, 1)]
    objects = [expected["000004"]["objects"][k] for k in (0, 2)] + [
        expected["000000"]["objects"][k] for k in (0, 3)]
    for ann, obj in zip(anns, objects):
        left, top, right, bottom = obj["bbox"].astype(np.float64)
        np.testing.assert_allclose(ann["bbox"], [left, top, right - left, bottom - top])
        assert ann["area"] == pytest.approx((right - left) * (bottom - top))
        assert ann["iscrowd"] == 0
    assert ground_truth["categories"] == [{"id": 1, "name": "Pedestrian"},
                                          {"id": 2, "name": "Car"}, {"id": 3, "name": "Cyclist"}]


def test_from_config_checks_split_set_and_split(prepared):
    _, data_dir, _ = prepared
    source = kitti.from_config(dict(data_dir=str(data_dir)), "train")
    assert source.split_set == "3dop" and len(source) == 3
    assert "KittiSource(split='train'" in repr(source) and "'3dop'" in repr(source)
    with pytest.raises(ValueError, match=r"unknown KITTI split_set '3DOP'.*'3dop', 'subcnn'"):
        kitti.from_config(dict(data_dir=str(data_dir), split_set="3DOP"), "train")
    with pytest.raises(ValueError, match="unknown KITTI split 'test'"):
        kitti.from_config(dict(data_dir=str(data_dir)), "test")


def test_prepare_logs_type_counts_and_keeps_a_prepared_dataset(prepared, caplog):
    raw, data_dir, _ = prepared
    info = data_dir / "kitti_3d" / "3dop" / kitti.TFDS_VERSION / "dataset_info.json"
    before = info.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        kitti.prepare(raw, data_dir, "3dop")
    assert info.stat().st_mtime_ns == before
    text = caplog.text
    # 3dop val = 000003 + 000001: DontCare, Car, Tram, Cyclist, Misc, Truck, Person_sitting.
    assert "KITTI 3dop validation: 2 images" in text
    assert "Car 1, Van 0, Truck 1, Pedestrian 0, Person_sitting 1, Cyclist 1, Tram 1, Misc 1, " \
           "DontCare 1" in text
    assert "already prepared" in text
