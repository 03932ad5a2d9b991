"""COCO 2017 person keypoints as a TFDS dataset of our own, and its source.

TFDS's `coco/2017` has no keypoints, so `coco_person_keypoints` is built here from the official
files (`prepare`, once) into array_record, for Grain's random access. It reads the official
layout from a manual folder:

  MANUAL_DIR/annotations/person_keypoints_train2017.json   (from annotations_trainval2017.zip)
  MANUAL_DIR/annotations/person_keypoints_val2017.json
  MANUAL_DIR/train2017/*.jpg                                (train2017.zip, ~19 GB)
  MANUAL_DIR/val2017/*.jpg                                  (val2017.zip, ~1 GB)

Splits `train` and `validation` hold every image of the JSON in file order (the order of
pycocotools' `getImgIds`, which the official loader iterates), with the original JPEG bytes
(not re-encoded) and per object: `bbox` float32 [4] (the JSON's [x, y, w, h] in pixels),
`keypoints` float32 [17, 3], `num_keypoints`, `is_crowd`, `area` (float64, as in the JSON:
COCOeval's size ranges depend on it), `id`. The number of annotations of each image is also
saved in the dataset's `metadata.json`, so that the official "train only on images with
annotations" needs no pass over the records.

The JSON is parsed by `coco_json.load_coco_annotations` and examples are turned into elements
by `coco_json.objects_to_element`, exactly like `CocoJsonSource` over the same files: both
yield the same pixels (cv2 decoding of the same bytes) and boxes (to float32 rounding).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from absl import logging
from etils import epath
import numpy as np

from centernet_jax.data import coco_json
from centernet_jax.data import tfds_prepared
from centernet_jax.data.sources import DatasetNotFoundError, _field, check_index

TFDS_NAME = "coco_person_keypoints"  # not a TFDS-registered name (TFDS 4.9 has none like it)
PREPARE_COMMAND = ("python -m centernet_jax.prepare coco_keypoints --manual_dir={manual_dir} "
                   "--data_dir={data_dir}")
# TFDS split -> (annotation file, image folder), relative to the manual dir.
SPLIT_FILES = {
    "train": ("annotations/person_keypoints_train2017.json", "train2017"),
    "validation": ("annotations/person_keypoints_val2017.json", "val2017"),
}
SPLITS = {"train": "train", "val": "validation", "validation": "validation"}
KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle")
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
PERSON_CATEGORY_ID = 1
_METADATA_FILE = "metadata.json"
_LOG_EVERY = 10_000

_HOW_TO_PREPARE = (
    "Prepare it once with\n  "
    + PREPARE_COMMAND.format(manual_dir="COCO_DIR", data_dir=tfds_prepared.DATA_DIR_PLACEHOLDER)
    + "\nwhere COCO_DIR holds the official COCO 2017 layout: annotations/person_keypoints_"
    "train2017.json and annotations/person_keypoints_val2017.json (annotations_trainval2017.zip)"
    ", train2017/ and val2017/ (the image zips from cocodataset.org, ~19 GB and ~1 GB; the "
    "prepared dataset takes about as much). Then point dataset.data_dir (or $TFDS_DATA_DIR) at "
    "the --data_dir.")


# -- Preparation ----------------------------------------------------------------------------


def available_splits(manual_dir: str | os.PathLike) -> list[str]:
    """The TFDS splits whose annotation file and image folder are both in `manual_dir`.

    Raises:
      DatasetNotFoundError: neither split is there; the message shows the expected layout.
    """
    root = Path(manual_dir).expanduser()
    found = [split for split, (annotations, images) in SPLIT_FILES.items()
             if (root / annotations).is_file() and (root / images).is_dir()]
    if not found:
        expected = ", ".join(f"{root / a} + {root / i}/" for a, i in SPLIT_FILES.values())
        raise DatasetNotFoundError(
            f"no COCO 2017 person keypoints split in {root}: expected {expected} (the official "
            f"COCO 2017 layout: annotations_trainval2017.zip, train2017.zip and val2017.zip from "
            f"cocodataset.org, unzipped into one folder).")
    return found


def _load_split(manual_dir: Path, split: str) -> tuple[coco_json.CocoAnnotations, Path]:
    """The parsed annotations of `split` and its image folder, checked for a full build."""
    annotation_file, image_folder = SPLIT_FILES[split]
    annotations = coco_json.load_coco_annotations(manual_dir / annotation_file)
    if (annotations.keypoint_names != KEYPOINT_NAMES or len(annotations.categories) != 1
            or annotations.categories[0]["id"] != PERSON_CATEGORY_ID):
        raise ValueError(
            f"{annotations.path} is not COCO person keypoints: expected one category (id "
            f"{PERSON_CATEGORY_ID}) with the 17 COCO keypoints, got categories "
            f"{[c['id'] for c in annotations.categories]} with keypoints "
            f"{annotations.keypoint_names}.")
    image_dir = manual_dir / image_folder
    missing = coco_json.missing_files(image_dir, annotations.file_names)
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} of the {annotations.num_images} images listed in {annotations.path} "
            f"are not in {image_dir} (e.g. {', '.join(missing[:5])}); unzip the complete "
            f"{image_folder}.zip there.")
    logging.info("%s: %d images, %d annotations from %s.", split, annotations.num_images,
                 len(annotations.classes), annotations.path)
    return annotations, image_dir


@functools.cache
def builder_class():
    """The TFDS builder class (defined on first use: importing TFDS takes seconds)."""
    import tensorflow_datasets as tfds

    class CocoPersonKeypoints(tfds.core.GeneratorBasedBuilder):
        """COCO 2017 person keypoints (train, validation) from the official files."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "Initial release."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            "Unzip annotations_trainval2017.zip, train2017.zip and val2017.zip from "
            "cocodataset.org into one folder and pass it as the manual dir: it then holds "
            "annotations/person_keypoints_{train,val}2017.json, train2017/ and val2017/.")
        # Nothing is downloaded, so there is no checksums file to find next to the code; TFDS
        # 4.9's lookup of it fails for builders inside a package without importlib_resources.
        code_path = None

        def _info(self):
            # DatasetInfo directly: `dataset_info_from_configs` would read README.md etc. from
            # this package's folder as the dataset's description.
            return tfds.core.DatasetInfo(
                builder=self,
                description="COCO 2017 person keypoints, images in JSON order.",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(encoding_format="jpeg"),
                    "image/id": np.int64,
                    "image/filename": tfds.features.Text(),
                    "image/height": np.int32,  # from the JSON, as the ground truth states it
                    "image/width": np.int32,
                    "objects": tfds.features.Sequence({
                        "id": np.int64,
                        "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                        "keypoints": tfds.features.Tensor(shape=(NUM_KEYPOINTS, 3),
                                                          dtype=np.float32),
                        "num_keypoints": np.int32,
                        "is_crowd": np.bool_,
                        # Bytes encoding keeps float64 (tf.Example floats are float32).
                        "area": tfds.features.Tensor(shape=(), dtype=np.float64,
                                                     encoding=tfds.features.Encoding.BYTES),
                    }),
                }),
                # Records stay in JSON order (keys are positions), so record i is image i.
                disable_shuffling=True,
                metadata=tfds.core.MetadataDict(),
                homepage="https://cocodataset.org/#keypoints-2017",
            )

        def _split_generators(self, dl_manager):
            manual_dir = Path(os.fspath(dl_manager.manual_dir))
            generators = {}
            for split in available_splits(manual_dir):
                annotations, image_dir = _load_split(manual_dir, split)
                self.info.metadata[f"{split}/num_annotations"] = (
                    annotations.num_objects().tolist())
                self.info.metadata["categories"] = list(annotations.categories)
                generators[split] = self._generate_examples(annotations, image_dir, split)
            return generators

        def _generate_examples(self, annotations: coco_json.CocoAnnotations, image_dir: Path,
                               split: str):
            for index in range(annotations.num_images):
                if index and index % _LOG_EVERY == 0:
                    logging.info("%s: %d / %d images written.", split, index,
                                 annotations.num_images)
                rows = annotations.object_rows(index)
                height, width = annotations.image_hw[index]
                yield index, {
                    "image": os.fspath(image_dir / annotations.file_names[index]),  # raw bytes
                    "image/id": annotations.image_ids[index],
                    "image/filename": annotations.file_names[index],
                    "image/height": height,
                    "image/width": width,
                    "objects": {
                        "id": annotations.object_ids[rows],
                        "bbox": annotations.boxes_xywh[rows].astype(np.float32),
                        "keypoints": annotations.keypoints[rows],
                        "num_keypoints": annotations.num_keypoints[rows],
                        "is_crowd": annotations.is_crowd[rows],
                        "area": annotations.areas[rows],
                    },
                }

    return CocoPersonKeypoints


def prepare(manual_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> None:
    """Builds `coco_person_keypoints` (array_record) in `data_dir` from the official files.

    Args:
      manual_dir: the folder with the official layout (module docstring). Splits whose files
        are absent are left out, with a warning.
      data_dir: TFDS data dir (default: $TFDS_DATA_DIR, then ~/tensorflow_datasets).

    Raises:
      DatasetNotFoundError: no split's files are in `manual_dir`, or images are missing.
    """
    manual_dir = Path(manual_dir).expanduser()
    splits = available_splits(manual_dir)
    for split in SPLIT_FILES:
        if split not in splits:
            logging.warning("%s: no %s or no %s/ in %s; building without it.", split,
                            *SPLIT_FILES[split], manual_dir)
    import tensorflow_datasets as tfds

    builder = builder_class()(data_dir=os.fspath(data_dir) if data_dir else None,
                              file_format="array_record")
    if builder.is_prepared():  # TFDS would silently reuse it
        prepared = set(builder.info.splits.keys())
        if not set(splits) <= prepared:
            raise ValueError(
                f"{builder.data_dir} already holds splits {sorted(prepared)}; to add "
                f"{sorted(set(splits) - prepared)}, delete that folder and prepare again.")
        logging.info("%s is already prepared in %s.", TFDS_NAME, builder.data_dir)
        return
    logging.info("Preparing %s (%s) from %s into %s.", TFDS_NAME, ", ".join(splits), manual_dir,
                 builder.data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    logging.info("Prepared %s in %s: %s.", TFDS_NAME, builder.data_dir,
                 {name: info.num_examples for name, info in builder.info.splits.items()})


# -- Source ---------------------------------------------------------------------------------


def find_prepared_coco_keypoints(split: str, data_dir: str | os.PathLike | None = None
                                 ) -> tuple[Path, str]:
    """(data_dir, version) of a prepared `coco_person_keypoints` holding `split`.

    Only the file system is inspected (no TensorFlow import).

    Raises:
      ValueError: unknown split.
      DatasetNotFoundError: not prepared; the message gives the preparation command.
    """
    tfds_split = SPLITS.get(split)
    if tfds_split is None:
        raise ValueError(f"unknown COCO keypoints split {split!r}; known: {sorted(SPLITS)}.")
    return tfds_prepared.find_prepared(TFDS_NAME, tfds_split, data_dir, _HOW_TO_PREPARE)


def _shortest_float(value: np.float32) -> float:
    """The shortest decimal that rounds to this float32 (e.g. 0.1 for float32(0.1)).

    COCO coordinates have at most 2 decimals, so this gives back the JSON's number exactly.
    """
    return float(str(np.float32(value)))


class TfdsCocoKeypointsSource:
    """Random access to a prepared `coco_person_keypoints` split, in the source convention.

    Elements: `image` uint8 BGR (the stored JPEG decoded by cv2, as cv2.imread), `boxes`
    float32 [n, 4] (x, y, x + w, y + h), `classes` int32 [n] (all 0, person), `image_id` int64,
    `image_hw` int32 [2], `is_crowd` bool [n], `keypoints` float32 [n, 17, 3] (x, y, v) in
    pixels. Objects keep the JSON order.

    Args:
      split: "train", "val"/"validation".
      data_dir: TFDS data dir (default: $TFDS_DATA_DIR, then ~/tensorflow_datasets).
      skip_empty: yield only images with at least one annotation (crowd ones count). Default:
        True for "train", False otherwise, as the official loader does.
      drop_crowd: remove `iscrowd` objects (the official loader keeps them as targets).
      annotation_file: optional official `person_keypoints_*.json`; `coco_ground_truth()` then
        reads it instead of rebuilding it from the records.
    """

    class_names = ("person",)
    num_classes = 1
    category_ids = (PERSON_CATEGORY_ID,)
    keypoint_names = KEYPOINT_NAMES
    flip_pairs = FLIP_PAIRS

    def __init__(self, split: str, data_dir: str | os.PathLike | None = None, *,
                 skip_empty: bool | None = None, drop_crowd: bool = False,
                 annotation_file: str | os.PathLike | None = None):
        root, version = find_prepared_coco_keypoints(split, data_dir)
        self.split = SPLITS[split]
        self.data_dir = str(root)
        self.version = version
        self.skip_empty = (self.split == "train") if skip_empty is None else bool(skip_empty)
        self.drop_crowd = bool(drop_crowd)
        self.annotation_file = os.fspath(annotation_file) if annotation_file else None
        metadata_file = root / TFDS_NAME / version / _METADATA_FILE
        try:
            metadata = json.loads(metadata_file.read_text())  # an epath: local or gs://
            num_annotations = np.asarray(metadata[f"{self.split}/num_annotations"], np.int64)
        except (OSError, ValueError, KeyError) as error:
            raise DatasetNotFoundError(
                f"{metadata_file} is missing or incomplete ({error!r}): the dataset was not "
                f"prepared by this code. Delete {root / TFDS_NAME / version} and run "
                f"{PREPARE_COMMAND.format(manual_dir='COCO_DIR', data_dir=root)}") from None
        self._categories = metadata.get("categories", [{"id": PERSON_CATEGORY_ID,
                                                        "name": "person"}])
        self._record_indices = (np.flatnonzero(num_annotations > 0) if self.skip_empty
                                else np.arange(len(num_annotations)))
        self._records = tfds_prepared.open_data_source(TFDS_NAME, version, self.split, root,
                                                       decode_images=False)
        if len(self._records) != len(num_annotations):
            raise DatasetNotFoundError(
                f"{root / TFDS_NAME / version}: {len(self._records)} {self.split} records but "
                f"{len(num_annotations)} in {_METADATA_FILE}; delete the folder and prepare "
                f"again.")

    def __len__(self) -> int:
        return len(self._record_indices)

    def __repr__(self) -> str:
        return (f"TfdsCocoKeypointsSource(split={self.split!r}, data_dir={self.data_dir!r}, "
                f"version={self.version!r}, skip_empty={self.skip_empty}, "
                f"drop_crowd={self.drop_crowd}, num_images={len(self)})")

    def __getitem__(self, index) -> dict[str, Any]:
        index = check_index(index, len(self))
        record_index = int(self._record_indices[index])
        record = self._records[record_index]
        file_name = tfds_prepared.as_text(record["image/filename"])
        image = coco_json.decode_image(
            record["image"], f"{file_name} (image id {int(record['image/id'])}, record "
            f"{record_index} of {TFDS_NAME} {self.split} in {self.data_dir})")
        objects = record["objects"]
        count = len(objects["bbox"])
        return coco_json.objects_to_element(
            image, record["image/id"], objects["bbox"], np.zeros(count, np.int32),
            objects["is_crowd"],
            np.asarray(objects["keypoints"], np.float32).reshape(count, NUM_KEYPOINTS, 3),
            drop_crowd=self.drop_crowd)

    def coco_ground_truth(self) -> dict[str, Any]:
        """COCO-format ground truth of the images this source yields, keypoints included.

        Crowd annotations are included (as `iscrowd` 1) even with `drop_crowd`: COCOeval uses
        them as ignore regions. Without `annotation_file` it is rebuilt from the records
        (image sizes and `area` as in the JSON; coordinates through float32, written back as
        the shortest decimal, which recovers COCO's 2-decimal numbers exactly).
        """
        if self.annotation_file:
            data = json.loads(epath.Path(self.annotation_file).read_bytes())
            if self.skip_empty:
                annotated = {a["image_id"] for a in data["annotations"]}
                data["images"] = [im for im in data["images"] if im["id"] in annotated]
            return data
        images, annotations = [], []
        for record_index in self._record_indices:
            record = self._records[int(record_index)]
            image_id = int(record["image/id"])
            images.append({"id": image_id, "file_name":
                           tfds_prepared.as_text(record["image/filename"]),
                           "height": int(record["image/height"]),
                           "width": int(record["image/width"])})
            objects = record["objects"]
            for k in range(len(objects["bbox"])):
                keypoints = np.asarray(objects["keypoints"][k], np.float32).reshape(-1)
                annotations.append({
                    "id": int(objects["id"][k]),
                    "image_id": image_id,
                    "category_id": PERSON_CATEGORY_ID,
                    "bbox": [_shortest_float(v) for v in objects["bbox"][k]],
                    "area": float(objects["area"][k]),
                    "iscrowd": int(objects["is_crowd"][k]),
                    "keypoints": [_shortest_float(v) for v in keypoints],
                    "num_keypoints": int(objects["num_keypoints"][k]),
                })
        return {"info": {"description": repr(self)}, "images": images,
                "annotations": annotations, "categories": list(self._categories)}


def from_config(dataset_config: Any, split: str) -> TfdsCocoKeypointsSource:
    """The registry builder: keys `data_dir`, `skip_empty` (training split only; default True,
    as officially), `drop_crowd`, `annotation_files` ({split: official json})."""
    annotation_files = _field(dataset_config, "annotation_files", {})
    skip_empty = bool(_field(dataset_config, "skip_empty", True)) and split == "train"
    return TfdsCocoKeypointsSource(
        split, _field(dataset_config, "data_dir"), skip_empty=skip_empty,
        drop_crowd=bool(_field(dataset_config, "drop_crowd", False)),
        annotation_file=(annotation_files.get(split)
                         or annotation_files.get(SPLITS.get(split, split))))
