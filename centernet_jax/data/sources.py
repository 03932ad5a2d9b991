"""Source registry: `make_source(dataset_config, split)` -> a random-access source.

Every source yields dicts in one convention: `image` uint8 BGR [h, w, 3] (as cv2.imread),
`boxes` float32 [n, 4] (x1, y1, x2, y2) in original-image pixels with x2 = x + w for a COCO
[x, y, w, h] box, `classes` int32 [n] (0-based, contiguous), `image_id` int64, `image_hw` int32
[2]. Sources also expose `class_names`, `num_classes` and `category_ids` (the COCO category id
of each class, for writing detections).

COCO comes from TFDS `coco/2017` in array_record format (random access for Grain). Whether it
is prepared is checked on the file system first, without importing TensorFlow, so a missing
dataset fails within a second with instructions instead of starting a 25 GB download.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from centernet_jax.data.shapes import ShapesSource

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
_COCO_SPLITS = {"train": "train", "val": "validation", "validation": "validation",
                "test": "test"}
_VERSION_DIR = re.compile(r"^\d+\.\d+\.\d+$")


class DatasetNotFoundError(ValueError):
    """A dataset is not prepared where the config says it should be."""


def _field(config: Any, key: str, default: Any = None) -> Any:
    """config[key] for dicts and ConfigDicts, getattr otherwise; `default` if absent or None."""
    if isinstance(config, Mapping) or hasattr(config, "get"):
        value = config.get(key, default)
    else:
        value = getattr(config, key, default)
    return default if value is None else value


# -- COCO (TFDS) ----------------------------------------------------------------------------


def tfds_data_dir_candidates(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where TFDS data is looked for: `data_dir` if given, else $TFDS_DATA_DIR and the default."""
    if data_dir:
        return [Path(data_dir).expanduser()]
    candidates = []
    if os.environ.get("TFDS_DATA_DIR"):
        candidates.append(Path(os.environ["TFDS_DATA_DIR"]).expanduser())
    candidates.append(Path("~/tensorflow_datasets").expanduser())
    return candidates


def find_prepared_coco(split: str, data_dir: str | os.PathLike | None = None
                       ) -> tuple[Path, str]:
    """(data_dir, version) of a prepared array_record `coco/2017` holding `split`.

    Only the file system is inspected (no TensorFlow import). The newest prepared version wins.

    Raises:
      DatasetNotFoundError: nothing prepared; the message says how to prepare it.
    """
    tfds_split = _COCO_SPLITS.get(split)
    if tfds_split is None:
        raise ValueError(f"unknown COCO split {split!r}; known: {sorted(_COCO_SPLITS)}.")
    candidates = tfds_data_dir_candidates(data_dir)
    pattern = f"coco-{tfds_split}.array_record*"
    for root in candidates:
        dataset_dir = root / TFDS_COCO_NAME
        if not dataset_dir.is_dir():
            continue
        versions = [d for d in dataset_dir.iterdir() if d.is_dir() and _VERSION_DIR.match(d.name)]
        versions.sort(key=lambda d: tuple(int(v) for v in d.name.split(".")), reverse=True)
        for version_dir in versions:
            if next(version_dir.glob(pattern), None) is not None:
                return root, version_dir.name
    looked = ", ".join(str(root / TFDS_COCO_NAME / "<version>" / pattern) for root in candidates)
    target = candidates[0]
    raise DatasetNotFoundError(
        f"COCO 2017 split {tfds_split!r} is not prepared in TFDS array_record format. "
        f"Looked for {looked} and found nothing. Prepare it once with\n"
        f"  tfds build {TFDS_COCO_NAME} --file_format=array_record --data_dir={target}\n"
        f"(downloads ~25 GB from cocodataset.org and needs ~20 GB on disk), then point "
        f"dataset.data_dir (or $TFDS_DATA_DIR) at that directory, or use the embedded "
        f"dataset (dataset.name='shapes').")


def coco_record_to_example(record: Mapping[str, Any], *, drop_crowd: bool = False
                           ) -> dict[str, Any]:
    """Converts one TFDS `coco/2017` record to the source convention.

    TFDS boxes are normalised [ymin, xmin, ymax, xmax] (made from COCO [x, y, w, h] as
    y / H, x / W, (y + h) / H, (x + w) / W), so x2 = x + w is recovered. Labels are 0..79 in
    COCO category-id order. The official CenterNet loader keeps crowd annotations as ordinary
    targets, so `drop_crowd` defaults to False.
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
        bbox, labels = bbox[~is_crowd], labels[~is_crowd]
    ymin, xmin, ymax, xmax = bbox.T
    boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=-1)
    return {
        "image": np.ascontiguousarray(image[..., ::-1]),  # RGB -> BGR
        "boxes": boxes.astype(np.float32).reshape(-1, 4),
        "classes": labels.astype(np.int32),
        "image_id": np.int64(record["image/id"]),
        "image_hw": np.array([height, width], dtype=np.int32),
    }


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


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
        import tensorflow_datasets as tfds  # deferred: only once the data is known to exist

        self.split = _COCO_SPLITS[split]
        self.data_dir = str(root)
        self.version = version
        self.drop_crowd = drop_crowd
        self.annotation_file = str(annotation_file) if annotation_file else None
        self._records = tfds.data_source(self._tfds_name, split=self.split,
                                         data_dir=self.data_dir, download=False)

    @property
    def _tfds_name(self) -> str:
        return f"{TFDS_COCO_NAME}:{self.version}"

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
            with open(self.annotation_file) as f:
                return json.load(f)
        import tensorflow_datasets as tfds
        from PIL import Image

        records = tfds.data_source(self._tfds_name, split=self.split, data_dir=self.data_dir,
                                   download=False,
                                   decoders={"image": tfds.decode.SkipDecoding()})
        images, annotations = [], []
        for index in range(len(records)):
            record = records[index]
            with Image.open(io.BytesIO(record["image"])) as image:
                width, height = image.size  # header only; no EXIF rotation, like TFDS decoding
            image_id = int(record["image/id"])
            images.append({"id": image_id, "width": width, "height": height,
                           "file_name": _text(record.get("image/filename", ""))})
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


# -- Registry -------------------------------------------------------------------------------


def _make_shapes(config: Any, split: str) -> ShapesSource:
    if split == "train":
        num_examples = _field(config, "num_train", 1000)
    elif split in ("val", "validation"):
        num_examples = _field(config, "num_val", 200)
    else:
        raise ValueError(f"unknown shapes split {split!r}; known: 'train', 'val'.")
    optional = {key: _field(config, key) for key in (
        "image_size", "objects_per_image", "object_size", "min_visible", "min_contrast",
        "min_object_contrast", "noise_std")}
    return ShapesSource(split=split, num_examples=num_examples, seed=_field(config, "seed", 0),
                        **{key: value for key, value in optional.items() if value is not None})


def _make_coco(config: Any, split: str) -> TfdsCocoSource:
    annotation_files = _field(config, "annotation_files", {})
    return TfdsCocoSource(split, _field(config, "data_dir"),
                          drop_crowd=bool(_field(config, "drop_crowd", False)),
                          annotation_file=(annotation_files.get(split)
                                           or annotation_files.get(_COCO_SPLITS.get(split))))


SOURCE_BUILDERS: dict[str, Callable[[Any, str], Any]] = {
    "shapes": _make_shapes,
    "coco": _make_coco,
}


def make_source(dataset_config: Any, split: str):
    """Builds the source named `dataset_config.name` for `split` ("train", "val"/"validation").

    Raises:
      ValueError: unknown dataset name or split.
      DatasetNotFoundError: the dataset is not prepared (COCO); the message says how.
    """
    name = _field(dataset_config, "name")
    if name not in SOURCE_BUILDERS:
        raise ValueError(f"unknown dataset name {name!r}; known: {sorted(SOURCE_BUILDERS)}.")
    source = SOURCE_BUILDERS[name](dataset_config, split)
    num_classes = _field(dataset_config, "num_classes")
    if num_classes is not None and num_classes != source.num_classes:
        raise ValueError(f"dataset.num_classes={num_classes} but {name!r} has "
                         f"{source.num_classes} classes.")
    return source
