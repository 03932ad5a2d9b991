"""Datasets of your own in COCO format: one annotation JSON plus a folder of images.

The JSON needs `images` (id, file_name; width/height as usual), `annotations` (image_id,
category_id, bbox [x, y, w, h] in pixels; id, area, iscrowd as usual) and `categories` (id,
name). Class index c is the c-th category by ascending id; `category_ids[c]` maps it back, so
detections are written with your own ids. A category with a `keypoints` name list, together
with annotations carrying `keypoints` [x1, y1, v1, x2, ...], makes a keypoint dataset.

`load_coco_annotations` parses and validates a file once into compact arrays (cheap to pickle
into Grain workers); `CocoJsonSource` reads images with cv2 on access. The TFDS builder of COCO
person keypoints (`coco_keypoints.py`) uses the same parser and the same element conversion.

Validation is strict about structure (a broken reference fails at start-up, naming the file
and the entry) but leaves values alone: NaN, negative or out-of-image boxes are passed through
for the sanitiser (`sanitize.py`) to count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from absl import logging
import cv2
from etils import epath
import numpy as np

from centernet_jax.data.sources import DatasetNotFoundError, _field, check_index

_VAL_SPLITS = ("val", "validation")
_MISSING_EXAMPLES_SHOWN = 5


class UnreadableImageError(OSError):
    """An image file is missing, unreadable or not decodable (raised when it is accessed)."""


# -- Parsing --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CocoAnnotations:
    """A validated COCO-format annotation file as flat arrays.

    Images keep the JSON order. The objects of image i are rows
    `object_offsets[i]:object_offsets[i + 1]` of the per-object arrays, in JSON order (what
    pycocotools' `getAnnIds` returns).

    Attributes:
      path: the JSON file.
      categories: the JSON's category dicts, sorted by id.
      image_ids: int64 [M].
      file_names: M file names, relative to the image folder.
      image_hw: int64 [M, 2] (height, width) from the JSON; -1 where absent.
      object_offsets: int64 [M + 1].
      object_ids: int64 [N] annotation ids; -1 where absent.
      boxes_xywh: float64 [N, 4] COCO boxes (x, y, w, h) in pixels, exactly as in the file.
      classes: int32 [N] 0-based class (index of the category in `categories`).
      is_crowd: bool [N].
      areas: float64 [N] the `area` field; NaN where absent.
      keypoint_names: K names, or None when the file has no keypoints.
      keypoints: float32 [N, K, 3] (x, y, v) in pixels, zeros where an annotation has none;
        None when the file has no keypoints.
      num_keypoints: int32 [N] the `num_keypoints` field (else the count of v > 0); None when
        the file has no keypoints.
    """

    path: str
    categories: tuple[dict[str, Any], ...]
    image_ids: np.ndarray
    file_names: tuple[str, ...]
    image_hw: np.ndarray
    object_offsets: np.ndarray
    object_ids: np.ndarray
    boxes_xywh: np.ndarray
    classes: np.ndarray
    is_crowd: np.ndarray
    areas: np.ndarray
    keypoint_names: tuple[str, ...] | None
    keypoints: np.ndarray | None
    num_keypoints: np.ndarray | None

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def num_objects(self) -> np.ndarray:
        """int64 [M]: annotations per image, crowd ones included."""
        return np.diff(self.object_offsets)

    def object_rows(self, image_index: int) -> slice:
        return slice(int(self.object_offsets[image_index]),
                     int(self.object_offsets[image_index + 1]))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(kind: str, index: int, entry: Any) -> str:
    """Names one JSON entry in an error message: its position, its id and a short excerpt."""
    text = json.dumps(entry, default=str)
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{kind}[{index}] {text}"


def _keypoint_names_of(path: str, categories: Sequence[Mapping[str, Any]]
                       ) -> tuple[str, ...] | None:
    """The keypoint name list the categories declare (None if none does).

    Categories without a list may sit beside it: their objects get unlabelled keypoints.
    """
    declared = [c for c in categories if c.get("keypoints")]
    if not declared:
        return None
    first = declared[0]
    for other in declared[1:]:
        if list(other["keypoints"]) != list(first["keypoints"]):
            raise ValueError(
                f"{path}: categories {first['id']} ({first.get('name')!r}) and {other['id']} "
                f"({other.get('name')!r}) declare different keypoint lists; a keypoint dataset "
                f"needs one list, shared by every category that declares one.")
    names = first["keypoints"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: category {first['id']} 'keypoints' must be a list of names, "
                         f"got {names!r}.")
    return tuple(names)


def _bad_bbox(path: str, index: int, annotation: Mapping[str, Any]):
    raise ValueError(f"{path}: {_entry('annotations', index, annotation)}: 'bbox' must be 4 "
                     f"numbers [x, y, w, h], got {annotation.get('bbox')!r}.")


def _bad_keypoints(path: str, index: int, annotation: Mapping[str, Any], num_joints: int):
    points = annotation.get("keypoints")
    raise ValueError(
        f"{path}: {_entry('annotations', index, annotation)}: 'keypoints' must be "
        f"{3 * num_joints} numbers (x, y, v for each of {num_joints} keypoints), got "
        f"{len(points) if isinstance(points, list) else 'no list of'} values.")


def _number_array(rows: list[list[Any]], report_bad_row) -> np.ndarray:
    """float64 [len(rows), L] of equally long lists, if every value is a JSON number.

    Calls `report_bad_row(index)` (which raises) for the first row holding anything else.
    """
    try:
        array = np.array(rows)
        if array.dtype.kind in "iuf":
            return array.astype(np.float64)
    except (ValueError, TypeError):
        pass
    for index, row in enumerate(rows):
        if not all(map(_is_number, row)):
            report_bad_row(index)
    return np.array(rows, dtype=np.float64)  # numbers numpy keeps as objects (huge ints)


def load_coco_annotations(annotation_file: str | os.PathLike) -> CocoAnnotations:
    """Parses and validates a COCO-format annotation JSON.

    Raises:
      DatasetNotFoundError: the file does not exist.
      ValueError: not valid JSON, no categories, duplicate image or category ids, an
        annotation referring to an unknown image or category, a bbox that is not 4 numbers,
        keypoints of the wrong length, or categories with different keypoint lists. The message
        names the file and the offending entry.
    """
    path = os.fspath(annotation_file)  # local, or in a bucket (gs://...)
    if not epath.Path(path).is_file():
        raise DatasetNotFoundError(
            f"annotation file {path} does not exist. Pass the path of a COCO-format JSON "
            f"(images, annotations, categories) as dataset.annotations (training split) or "
            f"dataset.val_annotations (evaluation split).")
    try:
        data = json.loads(epath.Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a valid JSON file: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with 'images', 'annotations' and "
                         f"'categories', got a {type(data).__name__}.")
    images = data.get("images")
    annotations = data.get("annotations", [])  # absent in test-set image lists
    categories = data.get("categories")
    if not isinstance(images, list):
        raise ValueError(f"{path}: missing 'images' list.")
    if not isinstance(annotations, list):
        raise ValueError(f"{path}: 'annotations' must be a list.")
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"{path}: no categories; the file needs a non-empty 'categories' list "
                         f"of {{'id': int, 'name': str}} (the class list).")

    # Categories, sorted by id: class index = position.
    seen_categories: dict[int, int] = {}
    for index, category in enumerate(categories):
        if not isinstance(category, dict) or not _is_int(category.get("id")):
            raise ValueError(f"{path}: {_entry('categories', index, category)} needs an integer "
                             f"'id'.")
        if category["id"] in seen_categories:
            raise ValueError(f"{path}: duplicate category id {category['id']}: categories["
                             f"{seen_categories[category['id']]}] and "
                             f"{_entry('categories', index, category)}.")
        seen_categories[category["id"]] = index
    categories = sorted(categories, key=lambda c: c["id"])
    category_index = {c["id"]: k for k, c in enumerate(categories)}
    keypoint_names = _keypoint_names_of(path, categories)

    # Images, in file order.
    image_index: dict[int, int] = {}
    file_names, image_hw = [], []
    for index, image in enumerate(images):
        if not isinstance(image, dict) or not _is_int(image.get("id")):
            raise ValueError(f"{path}: {_entry('images', index, image)} needs an integer 'id'.")
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise ValueError(f"{path}: {_entry('images', index, image)} needs a 'file_name'.")
        if image["id"] in image_index:
            first = image_index[image["id"]]
            raise ValueError(f"{path}: duplicate image id {image['id']}: images[{first}] and "
                             f"{_entry('images', index, image)}.")
        image_index[image["id"]] = index
        file_names.append(image["file_name"])
        height, width = image.get("height"), image.get("width")
        image_hw.append((height if _is_int(height) else -1, width if _is_int(width) else -1))

    # Annotations: references and box structure. Values (NaN, negative sizes) are kept.
    has_keypoints = keypoint_names is not None and any(
        isinstance(a, dict) and "keypoints" in a for a in annotations)
    if keypoint_names is not None and not has_keypoints:
        keypoint_names = None  # names declared, but nothing annotated: a detection dataset
    num_joints = len(keypoint_names) if has_keypoints else 0
    owner, boxes, classes, crowd, object_ids, areas = [], [], [], [], [], []
    keypoints, keypoint_counts = [], []
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise ValueError(f"{path}: {_entry('annotations', index, annotation)} is not an "
                             f"object.")
        image_id = annotation.get("image_id")
        if not _is_int(image_id) or image_id not in image_index:
            raise ValueError(f"{path}: {_entry('annotations', index, annotation)} refers to "
                             f"image_id {image_id!r}, which is not in 'images'.")
        category_id = annotation.get("category_id")
        if not _is_int(category_id) or category_id not in category_index:
            raise ValueError(f"{path}: {_entry('annotations', index, annotation)} refers to "
                             f"category_id {category_id!r}, which is not in 'categories' "
                             f"(ids {sorted(category_index)}).")
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):  # the numbers are checked below
            _bad_bbox(path, index, annotation)
        owner.append(image_index[image_id])
        boxes.append(bbox)
        classes.append(category_index[category_id])
        crowd.append(bool(annotation.get("iscrowd", 0)))
        object_ids.append(annotation["id"] if _is_int(annotation.get("id")) else -1)
        area = annotation.get("area")
        areas.append(area if _is_number(area) else math.nan)
        if has_keypoints:
            points = annotation.get("keypoints")
            if points is None:
                points = [0] * (3 * num_joints)  # not annotated: every keypoint unlabelled
            if not isinstance(points, list) or len(points) != 3 * num_joints:
                _bad_keypoints(path, index, annotation, num_joints)
            keypoints.append(points)
            count = annotation.get("num_keypoints")
            keypoint_counts.append(count if _is_int(count) else -1)  # -1: count them below

    # The numbers themselves, checked in bulk (a per-value check would take seconds on COCO).
    box_array = _number_array(boxes, lambda k: _bad_bbox(path, k, annotations[k])).reshape(-1, 4)
    keypoint_array = count_array = None
    if has_keypoints:
        keypoint_array = _number_array(
            keypoints, lambda k: _bad_keypoints(path, k, annotations[k], num_joints))
        keypoint_array = keypoint_array.reshape(-1, num_joints, 3).astype(np.float32)
        count_array = np.asarray(keypoint_counts, dtype=np.int32)
        uncounted = count_array < 0
        count_array[uncounted] = (keypoint_array[uncounted, :, 2] > 0).sum(axis=1)

    # Group objects by image, keeping file order within an image.
    owner = np.asarray(owner, dtype=np.int64)
    order = np.argsort(owner, kind="stable")
    offsets = np.zeros(len(images) + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=len(images)), out=offsets[1:])
    if has_keypoints:
        keypoint_array, count_array = keypoint_array[order], count_array[order]
    return CocoAnnotations(
        path=path,
        categories=tuple(categories),
        image_ids=np.asarray([image["id"] for image in images], dtype=np.int64),
        file_names=tuple(file_names),
        image_hw=np.asarray(image_hw, dtype=np.int64).reshape(-1, 2),
        object_offsets=offsets,
        object_ids=np.asarray(object_ids, dtype=np.int64)[order],
        boxes_xywh=box_array[order],
        classes=np.asarray(classes, dtype=np.int32)[order],
        is_crowd=np.asarray(crowd, dtype=bool)[order],
        areas=np.asarray(areas, dtype=np.float64)[order],
        keypoint_names=keypoint_names,
        keypoints=keypoint_array,
        num_keypoints=count_array,
    )


# -- Keypoint flip pairs --------------------------------------------------------------------

# (left form, right form) of a side marker at the start or the end of a lower-cased name.
_SIDE_PREFIXES = (("left_", "right_"), ("left-", "right-"), ("left ", "right "), ("l_", "r_"))
_SIDE_SUFFIXES = (("_left", "_right"), ("-left", "-right"), (" left", " right"), ("_l", "_r"))


def infer_flip_pairs(keypoint_names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """(left, right) index pairs of keypoints whose names differ only in the side marker.

    Recognised markers (case-insensitive): "left_"/"right_" (also with "-" or " ") and
    "l_"/"r_" at the start, "_left"/"_right" and "_l"/"_r" at the end. COCO person gives
    ((1, 2), (3, 4), ..., (15, 16)). Names without a counterpart stay unpaired.
    """
    lowered = [name.lower() for name in keypoint_names]
    position = {name: k for k, name in reversed(list(enumerate(lowered)))}
    pairs = []
    for left, name in enumerate(lowered):
        mirrored = [right + name[len(left_form):] for left_form, right in _SIDE_PREFIXES
                    if name.startswith(left_form)]
        mirrored += [name[:-len(left_form)] + right for left_form, right in _SIDE_SUFFIXES
                     if name.endswith(left_form)]
        for candidate in mirrored:
            if candidate in position and position[candidate] != left:
                pairs.append((left, position[candidate]))
                break
    return tuple(pairs)


def check_flip_pairs(flip_pairs: Sequence[Sequence[int]], num_keypoints: int
                     ) -> tuple[tuple[int, int], ...]:
    """`flip_pairs` as a tuple of int pairs, after checking they form a valid swap."""
    pairs = tuple(tuple(int(k) for k in pair) for pair in flip_pairs)
    used = [k for pair in pairs for k in pair]
    if (any(len(pair) != 2 for pair in pairs) or any(not 0 <= k < num_keypoints for k in used)
            or len(set(used)) != len(used)):
        raise ValueError(f"flip_pairs must be pairs of distinct keypoint indices in "
                         f"[0, {num_keypoints}), each index in at most one pair; got "
                         f"{flip_pairs!r}.")
    return pairs


# -- Elements -------------------------------------------------------------------------------


def objects_to_element(image: np.ndarray, image_id: int, boxes_xywh: np.ndarray,
                       classes: np.ndarray, is_crowd: np.ndarray,
                       keypoints: np.ndarray | None = None, *, drop_crowd: bool = False
                       ) -> dict[str, Any]:
    """One element in the source convention from an image and its COCO objects.

    Args:
      image: uint8 BGR [h, w, 3].
      image_id: the dataset's image id.
      boxes_xywh: [n, 4] COCO boxes (x, y, w, h) in pixels; turned into (x, y, x + w, y + h),
        computed in float64, then float32. Not clipped, not filtered.
      classes: [n] 0-based class indices.
      is_crowd: bool [n].
      keypoints: optional [n, K, 3] (x, y, v) in pixels.
      drop_crowd: remove crowd objects (the official loader keeps them as targets).

    Returns:
      `image`, `boxes` float32 [n, 4], `classes` int32 [n], `image_id` int64, `image_hw`
      int32 [2], `is_crowd` bool [n], and `keypoints` float32 [n, K, 3] when given.
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int32).reshape(-1)
    is_crowd = np.asarray(is_crowd, dtype=bool).reshape(-1)
    keep = ~is_crowd if drop_crowd else np.ones(len(boxes), dtype=bool)
    boxes = boxes[keep]
    element = {
        "image": image,
        "boxes": np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]],
                                axis=1).astype(np.float32),
        "classes": classes[keep],
        "image_id": np.int64(image_id),
        "image_hw": np.array(image.shape[:2], dtype=np.int32),
        "is_crowd": is_crowd[keep],
    }
    if keypoints is not None:
        element["keypoints"] = np.asarray(keypoints, dtype=np.float32)[keep]
    return element


def decode_image(encoded: bytes | np.ndarray, what: str) -> np.ndarray:
    """uint8 BGR [h, w, 3] from encoded bytes, exactly as cv2.imread would read the file.

    Raises:
      UnreadableImageError: naming `what` (the file) when the bytes do not decode.
    """
    buffer = np.frombuffer(encoded, dtype=np.uint8) if isinstance(encoded, bytes) else encoded
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise UnreadableImageError(f"cannot decode image {what}: corrupt or not an image file.")
    return image


def missing_files(image_dir: str | os.PathLike, file_names: Sequence[str]) -> list[str]:
    """The `file_names` (relative to `image_dir`) that do not exist, by listing directories.

    One listing per distinct folder (usually just `image_dir`) instead of one stat per file:
    far faster on network file systems and buckets with 100k images.
    """
    listings: dict[str, frozenset[str]] = {}
    missing = []
    for name in file_names:
        folder, base = os.path.split(os.path.join(os.fspath(image_dir), name))
        if folder not in listings:
            try:
                listings[folder] = frozenset(p.name for p in epath.Path(folder).iterdir())
            except (FileNotFoundError, NotADirectoryError):
                listings[folder] = frozenset()
        if base not in listings[folder]:
            missing.append(name)
    return missing


# -- Source ---------------------------------------------------------------------------------


class CocoJsonSource:
    """Random access to a COCO-format JSON plus image folder, in the source convention.

    Elements: `image` uint8 BGR (cv2.imread), `boxes` float32 [n, 4] (x, y, x + w, y + h),
    `classes` int32 [n], `image_id` int64, `image_hw` int32 [2] (of the decoded image),
    `is_crowd` bool [n], and for keypoint datasets `keypoints` float32 [n, K, 3]. Objects keep
    the annotation order of the file.

    Args:
      annotation_file: the COCO-format JSON.
      image_dir: the folder that `file_name`s are relative to.
      drop_crowd: remove `iscrowd` objects from the elements (the official loader keeps them).
        `coco_ground_truth()` keeps them either way: COCOeval treats them as ignore regions.
      skip_empty: yield only images with at least one annotation (crowd ones count), as the
        official keypoint training split does.
      flip_pairs: (left, right) keypoint index pairs swapped by a horizontal flip; default:
        inferred from the keypoint names (`infer_flip_pairs`).
      name: a label for logs and `repr` (default: the JSON's file name).

    Raises:
      DatasetNotFoundError: the JSON or the folder does not exist, or none of the images is in
        the folder.
      ValueError: the JSON is invalid (see `load_coco_annotations`), or `flip_pairs` is given
        for a dataset without keypoints or is not a valid swap.
    """

    def __init__(self, annotation_file: str | os.PathLike, image_dir: str | os.PathLike, *,
                 drop_crowd: bool = False, skip_empty: bool = False,
                 flip_pairs: Sequence[Sequence[int]] | None = None, name: str | None = None):
        self.image_dir = os.fspath(image_dir)  # local, or in a bucket (gs://...)
        if not epath.Path(self.image_dir).is_dir():
            raise DatasetNotFoundError(
                f"image folder {self.image_dir} does not exist. Pass the folder that the "
                f"'file_name' entries of {os.fspath(annotation_file)} are relative to as "
                f"dataset.images (training split) or dataset.val_images (evaluation split).")
        self.annotations = load_coco_annotations(annotation_file)
        self.annotation_file = self.annotations.path
        self.name = name or Path(self.annotation_file).name
        self.drop_crowd = bool(drop_crowd)
        self.skip_empty = bool(skip_empty)
        all_images = np.arange(self.annotations.num_images)
        self._images = (all_images[self.annotations.num_objects() > 0] if self.skip_empty
                        else all_images)

        self.keypoint_names = self.annotations.keypoint_names
        if self.keypoint_names is None:
            if flip_pairs is not None:
                raise ValueError(f"flip_pairs given, but {self.annotation_file} has no "
                                 f"keypoints.")
            self.flip_pairs = None
        elif flip_pairs is None:
            self.flip_pairs = infer_flip_pairs(self.keypoint_names)
        else:
            self.flip_pairs = check_flip_pairs(flip_pairs, len(self.keypoint_names))

        self._check_image_files()
        logging.info("%s: %d images (%d in the file), %d annotations, %d classes%s.",
                     self.name, len(self), self.annotations.num_images,
                     len(self.annotations.classes), self.num_classes,
                     f", {len(self.keypoint_names)} keypoints" if self.keypoint_names else "")

    def _check_image_files(self) -> None:
        names = [self.annotations.file_names[i] for i in self._images]
        missing = missing_files(self.image_dir, names)
        if not missing:
            return
        shown = ", ".join(missing[:_MISSING_EXAMPLES_SHOWN])
        if len(missing) == len(names):
            raise DatasetNotFoundError(
                f"none of the {len(names)} images listed in {self.annotation_file} is in "
                f"{self.image_dir} (e.g. expected {os.path.join(self.image_dir, missing[0])}). "
                f"Is dataset.images (or dataset.val_images) the right folder?")
        logging.warning("%s: %d of %d image files listed in %s are missing from %s (e.g. %s); "
                        "reading them will fail.", self.name, len(missing), len(names),
                        self.annotation_file, self.image_dir, shown)

    # -- Metadata --------------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(str(c.get("name", c["id"])) for c in self.annotations.categories)

    @property
    def num_classes(self) -> int:
        return len(self.annotations.categories)

    @property
    def category_ids(self) -> tuple[int, ...]:
        """The JSON category id of each 0-based class."""
        return tuple(int(c["id"]) for c in self.annotations.categories)

    def __len__(self) -> int:
        return len(self._images)

    def __repr__(self) -> str:
        return (f"CocoJsonSource(annotation_file={self.annotation_file!r}, "
                f"image_dir={self.image_dir!r}, drop_crowd={self.drop_crowd}, "
                f"skip_empty={self.skip_empty}, num_images={len(self)})")

    # -- Access ----------------------------------------------------------------------------

    def image_path(self, index: int) -> str:
        return os.path.join(self.image_dir, self.annotations.file_names[self._images[index]])

    def __getitem__(self, index) -> dict[str, Any]:
        index = check_index(index, len(self))
        image_index = int(self._images[index])
        path = self.image_path(index)
        try:
            encoded = epath.Path(path).read_bytes()
            image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
        except (OSError, cv2.error):
            image = None
        if image is None:
            raise UnreadableImageError(
                f"cannot read image {path} (image id {self.annotations.image_ids[image_index]} "
                f"in {self.annotation_file}): missing, unreadable or not a decodable image.")
        rows = self.annotations.object_rows(image_index)
        keypoints = self.annotations.keypoints
        return objects_to_element(
            image, self.annotations.image_ids[image_index],
            self.annotations.boxes_xywh[rows], self.annotations.classes[rows],
            self.annotations.is_crowd[rows],
            None if keypoints is None else keypoints[rows], drop_crowd=self.drop_crowd)

    def coco_ground_truth(self) -> dict[str, Any]:
        """The JSON's images, annotations and categories (a fresh copy, crowd ones included).

        With `skip_empty`, only the images this source yields. Fields COCOeval needs that
        hand-made files often leave out are filled in: `iscrowd` 0, `area` w * h, and `id`
        (numbered after the largest id present).
        """
        data = json.loads(epath.Path(self.annotation_file).read_bytes())
        yielded = set(self.annotations.image_ids[self._images].tolist())
        images = [image for image in data["images"] if image["id"] in yielded]
        annotations = data.get("annotations", [])
        next_id = 1 + max((a["id"] for a in annotations if _is_int(a.get("id"))), default=0)
        for annotation in annotations:
            annotation.setdefault("iscrowd", 0)
            if not _is_number(annotation.get("area")):
                annotation["area"] = float(annotation["bbox"][2] * annotation["bbox"][3])
            if not _is_int(annotation.get("id")):
                annotation["id"] = next_id
                next_id += 1
        return {"info": data.get("info", {"description": repr(self)}), "images": images,
                "annotations": [a for a in annotations if a["image_id"] in yielded],
                "categories": data["categories"]}


def from_config(dataset_config: Any, split: str) -> CocoJsonSource:
    """The registry builder.

    Keys: `annotations` and `images` (training split), `val_annotations` and `val_images`
    (splits "val"/"validation"; default: the training files, with a warning), `drop_crowd`,
    `skip_empty` (training split only), `flip_pairs`.
    """
    if split == "train":
        annotation_file, image_dir = (_field(dataset_config, "annotations"),
                                      _field(dataset_config, "images"))
    elif split in _VAL_SPLITS:
        annotation_file = _field(dataset_config, "val_annotations")
        image_dir = _field(dataset_config, "val_images")
        if annotation_file is None and image_dir is None:
            annotation_file, image_dir = (_field(dataset_config, "annotations"),
                                          _field(dataset_config, "images"))
            logging.warning("dataset.val_annotations is not set: evaluation uses the TRAINING "
                            "data (%s), so its scores say nothing about generalisation.",
                            annotation_file)
    else:
        raise ValueError(f"unknown split {split!r} for a COCO-format JSON dataset; known: "
                         f"'train', 'val'.")
    if annotation_file is None or image_dir is None:
        prefix = "" if split == "train" else "val_"
        raise DatasetNotFoundError(
            f"a COCO-format JSON dataset needs dataset.{prefix}annotations (the JSON file) and "
            f"dataset.{prefix}images (the image folder); got {prefix}annotations="
            f"{annotation_file!r}, {prefix}images={image_dir!r}.")
    flip_pairs = _field(dataset_config, "flip_pairs")
    return CocoJsonSource(
        annotation_file, image_dir,
        drop_crowd=bool(_field(dataset_config, "drop_crowd", False)),
        skip_empty=bool(_field(dataset_config, "skip_empty", False)) and split == "train",
        flip_pairs=None if flip_pairs is None else tuple(tuple(p) for p in flip_pairs))
