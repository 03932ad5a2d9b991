"""COCO 2017 detection from TFDS `coco/2017` (array_record), in the source convention.

TFDS stores each box as normalised float32 [ymin, xmin, ymax, xmax] made from the COCO
[x, y, w, h] box as (y / H, x / W, (y + h) / H, (x + w) / W), so multiplying back by the image
size gives x1 = x, x2 = x + w (~1e-4 px float32 error). Labels 0..79 follow COCO category-id
order, and `COCO_CATEGORY_IDS` maps them back. Elements carry `is_crowd` bool [n]; crowd boxes
stay training targets by default because the official loader trains on them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from etils import epath
import numpy as np

from centernet_jax.data import tfds_prepared
from centernet_jax.data.sources import _field

TFDS_COCO_NAME = "coco/2017"
# COCO category id of each of the 80 TFDS labels (TFDS orders labels by category id).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90)
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
# Split names accepted here -> TFDS split names.
COCO_SPLITS = {"train": "train", "val": "validation", "validation": "validation",
               "test": "test"}
_HOW_TO_PREPARE = (
    f"Prepare it once with\n  {tfds_prepared.build_command(TFDS_COCO_NAME)}\n"
    "(downloads ~25 GB from cocodataset.org and needs ~20 GB on disk), then point "
    "dataset.data_dir (or $TFDS_DATA_DIR) at that directory, or use the embedded "
    "dataset (dataset.name='shapes').")


def find_prepared_coco(split: str, data_dir: str | os.PathLike | None = None
                       ) -> tuple[Path, str]:
    """(data_dir, version) of a prepared array_record `coco/2017` holding `split`.

    Only the file system is inspected (no TensorFlow import). The newest prepared version wins.

    Raises:
      ValueError: unknown split.
      DatasetNotFoundError: nothing prepared; the message says how to prepare it.
    """
    tfds_split = COCO_SPLITS.get(split)
    if tfds_split is None:
        raise ValueError(f"unknown COCO split {split!r}; known: {sorted(COCO_SPLITS)}.")
    return tfds_prepared.find_prepared(TFDS_COCO_NAME, tfds_split, data_dir, _HOW_TO_PREPARE)


def coco_record_to_example(record: Mapping[str, Any], *, drop_crowd: bool = False
                           ) -> dict[str, Any]:
    """Converts one TFDS `coco/2017` record to the source convention (+ `is_crowd` bool [n]).

    Boxes are recovered as x1 = xmin * W, x2 = xmax * W (= x + w), same for y. The official
    CenterNet loader keeps crowd annotations as ordinary targets, so `drop_crowd` defaults to
    False.
    """
    image = np.asarray(record["image"])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [h, w, 3], got {image.dtype} {image.shape}.")
    height, width = image.shape[:2]
    objects = record.get("objects", {})  # the unlabelled test split has no objects
    bbox = np.asarray(objects.get("bbox", []), dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(objects.get("label", []), dtype=np.int64).reshape(-1)
    is_crowd = np.asarray(objects.get("is_crowd", []), dtype=bool).reshape(-1)
    if not len(bbox) == len(labels) == len(is_crowd):
        raise ValueError(f"inconsistent object fields: {len(bbox)} boxes, {len(labels)} labels, "
                         f"{len(is_crowd)} is_crowd flags.")
    if drop_crowd:
        bbox, labels, is_crowd = bbox[~is_crowd], labels[~is_crowd], is_crowd[~is_crowd]
    ymin, xmin, ymax, xmax = bbox.T
    boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=-1)
    return {
        "image": np.ascontiguousarray(image[..., ::-1]),  # RGB -> BGR
        "boxes": boxes.astype(np.float32).reshape(-1, 4),
        "classes": labels.astype(np.int32),
        "image_id": np.int64(record["image/id"]),
        "image_hw": np.array([height, width], dtype=np.int32),
        "is_crowd": is_crowd,
    }


class TfdsCocoSource:
    """Random access to a prepared TFDS `coco/2017` split, in the source convention.

    Args:
      split: "train", "val"/"validation" or "test".
      data_dir: TFDS data dir (default: $TFDS_DATA_DIR, then ~/tensorflow_datasets).
      drop_crowd: drop `iscrowd` boxes from the training targets (the official code keeps them).
      annotation_file: optional official `instances_*.json`; `coco_ground_truth()` then returns
        it instead of a reconstruction from the TFDS records.
    """

    class_names = COCO_CLASS_NAMES
    num_classes = len(COCO_CLASS_NAMES)
    category_ids = COCO_CATEGORY_IDS

    def __init__(self, split: str, data_dir: str | os.PathLike | None = None, *,
                 drop_crowd: bool = False, annotation_file: str | os.PathLike | None = None):
        root, version = find_prepared_coco(split, data_dir)
        self.split = COCO_SPLITS[split]
        self.data_dir = str(root)
        self.version = version
        self.drop_crowd = drop_crowd
        self.annotation_file = str(annotation_file) if annotation_file else None
        self._records = tfds_prepared.open_data_source(TFDS_COCO_NAME, version, self.split,
                                                       root)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index) -> dict[str, Any]:
        return coco_record_to_example(self._records[index], drop_crowd=self.drop_crowd)

    def __repr__(self) -> str:
        return (f"TfdsCocoSource(split={self.split!r}, data_dir={self.data_dir!r}, "
                f"version={self.version!r}, drop_crowd={self.drop_crowd})")

    def coco_ground_truth(self) -> dict[str, Any]:
        """COCO-format ground truth of the split (crowd boxes included, as `iscrowd` 1).

        Without `annotation_file` it is rebuilt from the TFDS records, reading only the image
        headers: boxes come back from float32-normalised coordinates (~1e-4 px off) and TFDS
        stores `area` as an integer, so COCOeval's small/medium/large split can differ from the
        official json for objects right at a boundary.
        """
        if self.annotation_file:
            return json.loads(epath.Path(self.annotation_file).read_text())
        records = tfds_prepared.open_data_source(TFDS_COCO_NAME, self.version, self.split,
                                                 self.data_dir, decode_images=False)
        images, annotations = [], []
        for index in range(len(records)):
            record = records[index]
            height, width = tfds_prepared.encoded_image_hw(record["image"])
            image_id = int(record["image/id"])
            images.append({"id": image_id, "width": width, "height": height,
                           "file_name": tfds_prepared.as_text(record.get("image/filename", ""))})
            objects = record.get("objects", {})
            bbox = np.asarray(objects.get("bbox", []), dtype=np.float64).reshape(-1, 4)
            labels = np.asarray(objects.get("label", []), dtype=np.int64).reshape(-1)
            crowd = np.asarray(objects.get("is_crowd", []), dtype=bool).reshape(-1)
            ids = np.asarray(objects.get("id", []), dtype=np.int64).reshape(-1)
            areas = np.asarray(objects.get("area", []), dtype=np.float64).reshape(-1)
            for k in range(len(bbox)):
                ymin, xmin, ymax, xmax = bbox[k]
                x, y = xmin * width, ymin * height
                w, h = (xmax - xmin) * width, (ymax - ymin) * height
                annotations.append({
                    "id": int(ids[k]) if k < len(ids) else len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": COCO_CATEGORY_IDS[int(labels[k])],
                    "bbox": [x, y, w, h],
                    "area": float(areas[k]) if k < len(areas) else w * h,
                    "iscrowd": int(crowd[k]),
                })
        categories = [{"id": cid, "name": name}
                      for cid, name in zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES)]
        return {"info": {"description": repr(self)}, "images": images,
                "annotations": annotations, "categories": categories}


def from_config(dataset_config: Any, split: str) -> TfdsCocoSource:
    """The registry builder: keys `data_dir`, `drop_crowd`, `annotation_files` ({split: path})."""
    annotation_files = _field(dataset_config, "annotation_files", {})
    return TfdsCocoSource(split, _field(dataset_config, "data_dir"),
                          drop_crowd=bool(_field(dataset_config, "drop_crowd", False)),
                          annotation_file=(annotation_files.get(split)
                                           or annotation_files.get(COCO_SPLITS.get(split))))
