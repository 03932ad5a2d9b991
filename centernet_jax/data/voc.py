"""Pascal VOC detection from TFDS `voc/2007` and `voc/2012` (array_record).

Splits follow the official CenterNet Pascal setup: "train" is VOC2007 trainval + VOC2012
trainval (16,551 images; TFDS stores each trainval as its "train" and "validation" splits, so
four parts are concatenated in the order of `VOC_SPLITS`), and "val" / "validation" / "test"
are the VOC2007 test set (4,952 images).

Boxes. A VOC XML box gives 1-based, inclusive pixel indices: the object covers pixels
xmin..xmax, i.e. the continuous interval [xmin - 1, xmax) in 0-based pixel coordinates. The
official loader reads Detectron's COCO-format json, whose bbox is
[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]; with x2 = x + w (the COCO rule of every
source) that is x1 = xmin - 1, x2 = xmax, and the same for y. TFDS stores
(ymin / H, xmin / W, ymax / H, xmax / W) as float32, with W, H the XML's <size>, which is not
kept in the record, so the decoded image's size stands in for it. Inverting:

    x1 = bbox[1] * W - 1,   y1 = bbox[0] * H - 1,   x2 = bbox[3] * W,   y2 = bbox[2] * H.

XML coordinates are integers in practice; float32 normalisation moves them by at most ~1e-4 px,
so values within `_SNAP_PX` of an integer are snapped back to it before the shift, recovering
the json boxes exactly. Values further from an integer are kept as they are.

Classes: the 20 TFDS labels, already in the official order (alphabetical: aeroplane ...
tvmonitor); json category ids are 1..20. Difficult objects stay training targets by default
(the official loader trains on every json annotation); elements carry `is_difficult` bool [n]
and `drop_difficult=True` removes them.

Image ids: unique across both years and below 2**31 (they may pass through int32 arrays):
VOC2007 names are six digits ("000005.jpg" -> 5, as in Detectron's json), VOC2012 names are
"YYYY_NNNNNN" ("2008_000008.jpg" -> 2008000008). Every 2012 id is >= 10**6 > every 2007 id.
VOC2012 also names files "2007_NNNNNN", so a 2007 id of 2007 * 10**6 + NNNNNN would collide with
them.
"""

from __future__ import annotations

import bisect
import operator
import os
import re
from typing import Any, Mapping, NamedTuple

import numpy as np

from centernet_jax.data import tfds_prepared
from centernet_jax.data.sources import DatasetNotFoundError, _field

TFDS_NAMES = {2007: "voc/2007", 2012: "voc/2012"}
CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor")
CATEGORY_IDS = tuple(range(1, len(CLASS_NAMES) + 1))
# Split names accepted here -> the (year, TFDS split) parts, concatenated in this order.
_TRAINVAL_0712 = ((2007, "train"), (2007, "validation"), (2012, "train"), (2012, "validation"))
_TEST_2007 = ((2007, "test"),)
VOC_SPLITS = {"train": _TRAINVAL_0712, "val": _TEST_2007, "validation": _TEST_2007,
              "test": _TEST_2007}
# Download size of each year's TFDS build (trainval and test archives).
_DOWNLOAD_SIZE = {2007: "~0.9 GB", 2012: "~3.9 GB, the unannotated 2012 test images included"}
# Largest distance (px) from an integer still taken as float32 round-off of an integer
# XML coordinate. The round-off is below W * 2**-23 ~ 1e-4 px for any VOC image width.
_SNAP_PX = 1e-3
_FILE_NAME = {2007: re.compile(r"^(\d{6})\.jpg$"), 2012: re.compile(r"^(\d{4})_(\d{6})\.jpg$")}


class _Part(NamedTuple):
    """One TFDS split of a VOC source."""
    year: int
    tfds_split: str
    version: str
    data_dir: str
    records: Any  # the split's tfds.data_source


def _how_to_prepare(year: int) -> str:
    return (f"Prepare it once with\n  {tfds_prepared.build_command(TFDS_NAMES[year])}\n"
            f"(downloads {_DOWNLOAD_SIZE[year]}), then point dataset.data_dir (or "
            f"$TFDS_DATA_DIR) at that directory.")


def voc_image_id(year: int, file_name: str) -> int:
    """The image id of `file_name` of VOC `year` (see the module docstring); int < 2**31."""
    pattern = _FILE_NAME.get(year)
    if pattern is None:
        raise ValueError(f"unknown VOC year {year}; known: {sorted(_FILE_NAME)}.")
    match = pattern.match(file_name)
    if match is None:
        raise ValueError(f"VOC{year} file name {file_name!r} does not match "
                         f"{pattern.pattern!r}; cannot derive a unique image id.")
    return int("".join(match.groups()))


def voc_boxes(bbox: Any, height: int, width: int) -> np.ndarray:
    """TFDS normalised [ymin, xmin, ymax, xmax] -> float64 [n, 4] (x1, y1, x2, y2) pixels.

    Inverts TFDS's division by the XML size, snaps float32 round-off back to integer XML
    coordinates, and shifts the 1-based inclusive start to a 0-based one (module docstring).
    Non-finite values pass through.
    """
    bbox = np.asarray(bbox, dtype=np.float64).reshape(-1, 4)
    ymin, xmin, ymax, xmax = (bbox * np.array([height, width, height, width])).T
    xml = np.stack([xmin, ymin, xmax, ymax], axis=-1)
    nearest = np.round(xml)
    xml = np.where(np.abs(xml - nearest) <= _SNAP_PX, nearest, xml)
    return xml - np.array([1.0, 1.0, 0.0, 0.0])


def _objects(record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bbox float64 [n, 4], labels int64 [n], is_difficult bool [n]) of a TFDS voc record."""
    objects = record.get("objects", {})
    bbox = np.asarray(objects.get("bbox", []), dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(objects.get("label", []), dtype=np.int64).reshape(-1)
    difficult = np.asarray(objects.get("is_difficult", []), dtype=bool).reshape(-1)
    if not len(bbox) == len(labels) == len(difficult):
        raise ValueError(f"inconsistent object fields: {len(bbox)} boxes, {len(labels)} labels, "
                         f"{len(difficult)} is_difficult flags.")
    return bbox, labels, difficult


def voc_record_to_example(record: Mapping[str, Any], year: int, *,
                          drop_difficult: bool = False) -> dict[str, Any]:
    """Converts one TFDS `voc/<year>` record to the source convention (+ `is_difficult`)."""
    image = np.asarray(record["image"])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [h, w, 3], got {image.dtype} {image.shape}.")
    height, width = image.shape[:2]
    bbox, labels, difficult = _objects(record)
    if drop_difficult:
        bbox, labels, difficult = bbox[~difficult], labels[~difficult], difficult[~difficult]
    file_name = tfds_prepared.as_text(record["image/filename"])
    return {
        "image": np.ascontiguousarray(image[..., ::-1]),  # RGB -> BGR
        "boxes": voc_boxes(bbox, height, width).astype(np.float32),
        "classes": labels.astype(np.int32),
        "image_id": np.int64(voc_image_id(year, file_name)),
        "image_hw": np.array([height, width], dtype=np.int32),
        "is_difficult": difficult,
    }


class TfdsVocSource:
    """Random access to Pascal VOC from prepared TFDS splits, in the source convention.

    Args:
      split: "train" (VOC2007 + VOC2012 trainval) or "val"/"validation"/"test" (VOC2007 test).
      data_dir: TFDS data dir (default: $TFDS_DATA_DIR, then ~/tensorflow_datasets); each year
        is looked for on its own, so the two may live in different candidate directories.
      drop_difficult: drop difficult objects from the training targets (the official code
        keeps them).

    Raises:
      ValueError: unknown split.
      DatasetNotFoundError: a needed year is not prepared (one message for all missing years),
        raised before TensorFlow is imported.
    """

    class_names = CLASS_NAMES
    num_classes = len(CLASS_NAMES)
    category_ids = CATEGORY_IDS

    def __init__(self, split: str, data_dir: str | os.PathLike | None = None, *,
                 drop_difficult: bool = False):
        parts = VOC_SPLITS.get(split)
        if parts is None:
            raise ValueError(f"unknown VOC split {split!r}; known: {sorted(VOC_SPLITS)}.")
        splits_by_year: dict[int, list[str]] = {}
        for year, tfds_split in parts:
            splits_by_year.setdefault(year, []).append(tfds_split)
        found, missing = {}, []
        for year, tfds_splits in splits_by_year.items():
            try:
                found[year] = tfds_prepared.find_prepared(
                    TFDS_NAMES[year], tfds_splits, data_dir, _how_to_prepare(year))
            except DatasetNotFoundError as error:
                missing.append(str(error))
        if missing:
            raise DatasetNotFoundError("\n\n".join(missing))
        self.split = split
        self.drop_difficult = drop_difficult
        self._parts = []
        for year, tfds_split in parts:
            root, version = found[year]
            records = tfds_prepared.open_data_source(TFDS_NAMES[year], version, tfds_split, root)
            self._parts.append(_Part(year, tfds_split, version, str(root), records))
        # Index of each part's first example, then the total.
        self._starts = np.cumsum([0] + [len(part.records) for part in self._parts]).tolist()

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, index) -> tuple[int, int]:
        """(part number, index within the part) of a global example index."""
        index, length = operator.index(index), len(self)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError(f"index {index} out of range for {length} examples.")
        part = bisect.bisect_right(self._starts, index) - 1
        return part, index - self._starts[part]

    def __getitem__(self, index) -> dict[str, Any]:
        """Example `index`; a record that cannot be read or converted raises ValueError naming
        the TFDS split, the record and (once read) the image file."""
        number, local = self._locate(index)
        part = self._parts[number]
        where = f"{TFDS_NAMES[part.year]} {part.tfds_split!r} record {local}"
        try:
            record = part.records[local]
            where += f" ({tfds_prepared.as_text(record['image/filename'])})"
            return voc_record_to_example(record, part.year, drop_difficult=self.drop_difficult)
        except Exception as error:  # pylint: disable=broad-except
            raise ValueError(f"{where}: {error}") from error

    def __repr__(self) -> str:
        parts = ", ".join(f"{TFDS_NAMES[p.year]}:{p.version}[{p.tfds_split}] in {p.data_dir}"
                          for p in self._parts)
        return (f"TfdsVocSource(split={self.split!r}, parts=[{parts}], "
                f"drop_difficult={self.drop_difficult})")

    @property
    def parts(self) -> tuple[tuple[str, str, int], ...]:
        """(TFDS name:version, TFDS split, number of examples) of each concatenated part."""
        return tuple((f"{TFDS_NAMES[p.year]}:{p.version}", p.tfds_split, len(p.records))
                     for p in self._parts)

    def coco_ground_truth(self) -> dict[str, Any]:
        """COCO-format ground truth of the split, difficult objects marked `iscrowd` 1.

        COCOeval neither counts a crowd box as a positive nor penalises the detections matched
        to it, which is how the VOC protocol treats difficult objects (they are marked whatever
        `drop_difficult` says). One difference remains: COCOeval matches a detection to a crowd
        box by intersection over the detection's area rather than by IoU. The VOC07 11-point
        metric is not computed here; COCOeval's AP50 is its closest counterpart.

        Rebuilt from the TFDS records reading only the image headers. Boxes are the json's
        [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]; `area` is w * h.
        """
        images, annotations = [], []
        for part in self._parts:
            records = tfds_prepared.open_data_source(TFDS_NAMES[part.year], part.version,
                                                     part.tfds_split, part.data_dir,
                                                     decode_images=False)
            for index in range(len(records)):
                record = records[index]
                height, width = tfds_prepared.encoded_image_hw(record["image"])
                file_name = tfds_prepared.as_text(record["image/filename"])
                image_id = voc_image_id(part.year, file_name)
                images.append({"id": image_id, "width": width, "height": height,
                               "file_name": file_name})
                bbox, labels, difficult = _objects(record)
                for (x1, y1, x2, y2), label, is_difficult in zip(
                        voc_boxes(bbox, height, width), labels, difficult):
                    w, h = float(x2 - x1), float(y2 - y1)
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": image_id,
                        "category_id": CATEGORY_IDS[int(label)],
                        "bbox": [float(x1), float(y1), w, h], "area": w * h,
                        "iscrowd": int(is_difficult),
                    })
        categories = [{"id": cid, "name": name} for cid, name in zip(CATEGORY_IDS, CLASS_NAMES)]
        return {"info": {"description": repr(self)}, "images": images,
                "annotations": annotations, "categories": categories}


def from_config(dataset_config: Any, split: str) -> TfdsVocSource:
    """The registry builder: keys `data_dir`, `drop_difficult`."""
    return TfdsVocSource(split, _field(dataset_config, "data_dir"),
                         drop_difficult=bool(_field(dataset_config, "drop_difficult", False)))
