"""KITTI object detection with camera calibration (CenterNet's 3D task, ddd), via TFDS.

TFDS's own `kitti` dataset has no camera matrix, so this module carries its own builder,
`kitti_3d`, over the raw KITTI files. It stores everything the devkit label files hold (all 9
object types, Tram and Misc included) plus the P2 camera matrix and the untouched PNG bytes,
so later choices (classes, ignore regions) need no rebuild.

Raw layout read from `manual_dir` (as the official CenterNet repo documents it):

    training/image_2/000000.png ...   KITTI data_object_image_2.zip
    training/label_2/000000.txt ...   KITTI data_object_label_2.zip
    training/calib/000000.txt ...     KITTI data_object_calib.zip
    ImageSets_3dop/{train,val}.txt    the 3DOP authors' split (3712 / 3769 images)
    ImageSets_subcnn/{train,val}.txt  the SubCNN authors' split (3682 / 3799 images)

Each split set is one TFDS builder config ("3dop", "subcnn") with splits `train` and
`validation`, in split-file order (the order the official loader reads them in).

`KittiSource` yields the source convention of `sources.py` with the KITTI 3D fields. Class
codes follow the official loader: Pedestrian 0, Car 1, Cyclist 2; negative codes are ignore
regions: -1 DontCare (ignore for every class), -(c + 2) ignore for class c (Van, Truck -> -3,
ignore for Car; Person_sitting -> -2, ignore for Pedestrian). Tram and Misc are not yielded,
as the official loader skips them, but each element counts them in `num_skipped_types`.
Values are kept as the label file gives them: `truncated` stays a float (the official
converter truncates it to an integer, which its 3D loader never reads).

Nothing here imports TensorFlow until the data is known to be there.
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from absl import logging
import cv2
import numpy as np

from centernet_jax import paths
from centernet_jax.data import tfds_prepared
from centernet_jax.data.sources import DatasetNotFoundError, _field

TFDS_NAME = "kitti_3d"  # TFDS's own `kitti` has no calibration; do not collide with it.
TFDS_VERSION = "1.0.0"
SPLIT_SETS = ("3dop", "subcnn")
PREPARE_COMMAND = "python -m centernet_jax.prepare kitti"

# The nine object types of the KITTI devkit.
KITTI_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc",
               "DontCare")
CLASS_NAMES = ("Pedestrian", "Car", "Cyclist")
CATEGORY_IDS = (1, 2, 3)
# Class code of each yielded type (official loader's cat_ids); negative codes are ignore regions.
CLASS_CODES = {"Pedestrian": 0, "Car": 1, "Cyclist": 2, "Van": -3, "Truck": -3,
               "Person_sitting": -2, "DontCare": -1}
# Types the official loader skips (its code -99); counted, never yielded.
SKIPPED_TYPES = ("Tram", "Misc")

# Where each piece of the raw data comes from (for error messages).
_KITTI_DOWNLOADS = {
    "image_2": "data_object_image_2.zip",
    "label_2": "data_object_label_2.zip",
    "calib": "data_object_calib.zip",
}
_KITTI_HOMEPAGE = "https://www.cvlibs.net/datasets/kitti/eval_object.php?obj_benchmark=3d"
_SPLIT_SET_ORIGINS = {
    "3dop": "the 3DOP authors' imagesets.tar.gz "
            "(https://xiaozhichen.github.io/files/mv3d/imagesets.tar.gz; its ImageSets/ "
            "folder renamed to ImageSets_3dop)",
    "subcnn": "the SubCNN repository "
              "(https://github.com/tanshen/SubCNN/tree/master/fast-rcnn/data/KITTI, the "
              "train.txt and val.txt there)",
}
_SPLIT_FILES = {"train": "train.txt", "validation": "val.txt"}
_SPLITS = {"train": "train", "val": "validation", "validation": "validation"}
_LABEL_COLUMNS = 15  # a 16th column (detection score) is accepted and ignored
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_LISTED = 5  # missing files listed by name per kind; the rest are counted


class KittiFormatError(ValueError):
    """A raw KITTI file does not follow the devkit format; the message names file and line."""


# -- Raw files ------------------------------------------------------------------------------


def parse_label(text: str, file_name: str = "<label>") -> dict[str, Any]:
    """Parses the text of a KITTI devkit label file (label_2/xxxxxx.txt).

    Each non-blank line is one object, 15 whitespace-separated columns: type, truncated,
    occluded, alpha, bbox (left, top, right, bottom), dimensions (h, w, l), location (x, y, z),
    rotation_y; a 16th column (the score of a results file) is accepted and ignored.

    Args:
      text: the file's content.
      file_name: names the file in error messages.

    Returns:
      `type` tuple of n str (raw, e.g. "DontCare"); `truncated` float32 [n] (0..1, -1 for
      DontCare); `occluded` int32 [n] (0..3, -1 for DontCare); `alpha` float32 [n] (radians);
      `bbox` float32 [n, 4] (left, top, right, bottom; image pixels); `dimensions` float32
      [n, 3] (h, w, l; metres); `location` float32 [n, 3] (x, y, z; metres, camera
      coordinates, the bottom centre of the box); `rotation_y` float32 [n] (radians). Objects
      are in file order.

    Raises:
      KittiFormatError: a line with the wrong number of columns, an unknown type or a value
        that is not a number; the message names the file and the 1-based line number.
    """
    types, numbers = [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        columns = line.split()
        if not columns:
            continue
        where = f"{file_name}, line {line_number}"
        if len(columns) not in (_LABEL_COLUMNS, _LABEL_COLUMNS + 1):
            raise KittiFormatError(
                f"{where}: expected {_LABEL_COLUMNS} columns (16 with a score), got "
                f"{len(columns)}: {line!r}")
        if columns[0] not in KITTI_TYPES:
            raise KittiFormatError(
                f"{where}: unknown object type {columns[0]!r}; KITTI types: {KITTI_TYPES}.")
        try:
            values = [float(column) for column in columns[1:_LABEL_COLUMNS]]
        except ValueError:
            raise KittiFormatError(f"{where}: a column is not a number: {line!r}") from None
        if not values[1].is_integer():  # occluded is an integer state (or -1)
            raise KittiFormatError(f"{where}: occluded must be an integer, got {columns[2]!r}.")
        types.append(columns[0])
        numbers.append(values)
    table = np.asarray(numbers, dtype=np.float64).reshape(-1, _LABEL_COLUMNS - 1)
    return {
        "type": tuple(types),
        "truncated": table[:, 0].astype(np.float32),
        "occluded": table[:, 1].astype(np.int32),
        "alpha": table[:, 2].astype(np.float32),
        "bbox": table[:, 3:7].astype(np.float32),
        "dimensions": table[:, 7:10].astype(np.float32),
        "location": table[:, 10:13].astype(np.float32),
        "rotation_y": table[:, 13].astype(np.float32),
    }


def parse_calib(text: str, file_name: str = "<calib>") -> np.ndarray:
    """The P2 camera matrix (left colour camera, rectified) of a KITTI calib file.

    The matrix is found by its "P2:" key, not by position; in the standard files (P0, P1, P2,
    P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo) it is the third line, which is the line the
    official converter reads.

    Returns:
      float32 [3, 4], row-major: projects homogeneous camera coordinates (metres) to pixels.

    Raises:
      KittiFormatError: no P2 line, several, or not 12 numbers (names file and line).
    """
    found = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        key, _, rest = line.strip().partition(":")
        if key.strip() != "P2":
            continue
        where = f"{file_name}, line {line_number}"
        try:
            values = [float(v) for v in rest.split()]
        except ValueError:
            raise KittiFormatError(f"{where}: P2 holds a value that is not a number.") from None
        if len(values) != 12:
            raise KittiFormatError(f"{where}: P2 needs 12 numbers (3 x 4), got {len(values)}.")
        found.append((line_number, values))
    if not found:
        raise KittiFormatError(f"{file_name}: no line starting with 'P2:'.")
    if len(found) > 1:
        raise KittiFormatError(f"{file_name}: P2 appears on lines {[n for n, _ in found]}.")
    return np.asarray(found[0][1], dtype=np.float32).reshape(3, 4)


def read_label_file(path: str | os.PathLike) -> dict[str, Any]:
    """`parse_label` of the file at `path`."""
    return parse_label(Path(path).read_text(), str(path))


def read_calib_file(path: str | os.PathLike) -> np.ndarray:
    """`parse_calib` of the file at `path`."""
    return parse_calib(Path(path).read_text(), str(path))


def parse_split_file(text: str, file_name: str = "<split file>") -> list[str]:
    """The image indices of an ImageSets file: one 6-digit index a line, blank lines ignored.

    Raises:
      KittiFormatError: a line that is not a 6-digit index, or an index listed twice.
    """
    indices, seen = [], {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        index = line.strip()
        if not index:
            continue
        where = f"{file_name}, line {line_number}"
        if len(index) != 6 or not index.isdigit():
            raise KittiFormatError(f"{where}: expected a 6-digit image index, got {line!r}.")
        if index in seen:
            raise KittiFormatError(f"{where}: index {index} already listed on line "
                                   f"{seen[index]}.")
        seen[index] = line_number
        indices.append(index)
    return indices


def png_image_hw(data: bytes, file_name: str = "<png>") -> tuple[int, int]:
    """(height, width) from the IHDR chunk of PNG bytes, without decoding the pixels."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise KittiFormatError(f"{file_name}: not a PNG image.")
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def class_codes(types: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Official class codes of raw KITTI types.

    Returns:
      (codes int32 [n], keep bool [n]): `keep` is False for the skipped types (Tram, Misc),
      whose code is meaningless.

    Raises:
      ValueError: a type that is not a KITTI type.
    """
    codes, keep = [], []
    for name in types:
        name = name.decode() if isinstance(name, bytes) else str(name)
        if name in CLASS_CODES:
            codes.append(CLASS_CODES[name])
            keep.append(True)
        elif name in SKIPPED_TYPES:
            codes.append(0)
            keep.append(False)
        else:
            raise ValueError(f"unknown KITTI object type {name!r}; known: {KITTI_TYPES}.")
    return np.asarray(codes, dtype=np.int32), np.asarray(keep, dtype=bool)


# -- The raw tree ---------------------------------------------------------------------------


def _check_split_set(split_set: str) -> None:
    if split_set not in SPLIT_SETS:
        raise ValueError(f"unknown KITTI split_set {split_set!r}; options: {SPLIT_SETS}.")


def _prepare_command(manual_dir: Any = "DIR", data_dir: Any = "DIR",
                     split_set: str = "3dop") -> str:
    command = f"{PREPARE_COMMAND} --manual_dir={manual_dir} --data_dir={data_dir}"
    return command if split_set == "3dop" else f"{command} --split_set={split_set}"


def _layout_text(split_sets: Sequence[str]) -> str:
    """The expected raw layout (with the split files of `split_sets`) and where it comes from."""
    split_lines = "".join(
        f"  ImageSets_{split_set}/train.txt, val.txt   from {_SPLIT_SET_ORIGINS[split_set]}\n"
        for split_set in split_sets)
    return (
        "Expected layout of --manual_dir:\n"
        f"  training/image_2/<index>.png   from KITTI's {_KITTI_DOWNLOADS['image_2']}\n"
        f"  training/label_2/<index>.txt   from KITTI's {_KITTI_DOWNLOADS['label_2']}\n"
        f"  training/calib/<index>.txt     from KITTI's {_KITTI_DOWNLOADS['calib']}\n"
        f"{split_lines}(KITTI downloads: {_KITTI_HOMEPAGE}).")


def _summarise_missing(directory: Path, names: Sequence[str]) -> str:
    listed = ", ".join(names[:_MAX_LISTED])
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"{len(names)} file(s) in {directory}/: {listed}{more}"


def check_manual_dir(manual_dir: str | os.PathLike, split_set: str = "3dop"
                     ) -> dict[str, list[str]]:
    """Checks the raw KITTI tree for one split set; returns the image indices of each split.

    Only the file system is read (no TensorFlow). Every problem found is reported at once.

    Returns:
      {"train": [...], "validation": [...]}: 6-digit indices in split-file order.

    Raises:
      ValueError: unknown `split_set`.
      DatasetNotFoundError: something is missing; the message lists all of it, where
        it comes from, and the command to run afterwards.
      KittiFormatError: a split file holds something other than 6-digit indices.
    """
    _check_split_set(split_set)
    root = Path(manual_dir).expanduser()
    missing: list[str] = []
    indices: dict[str, list[str]] = {}
    if not root.is_dir():
        missing.append(f"{root}/ itself (no such directory)")
    else:
        training = root / "training"
        for kind, archive in _KITTI_DOWNLOADS.items():
            if not (training / kind).is_dir():
                missing.append(f"{training / kind}/ (from KITTI's {archive})")
        for split, file_name in _SPLIT_FILES.items():
            path = root / f"ImageSets_{split_set}" / file_name
            if path.is_file():
                indices[split] = parse_split_file(path.read_text(), str(path))
            else:
                missing.append(f"{path} (the split file comes from "
                               f"{_SPLIT_SET_ORIGINS[split_set]})")
        if not missing:  # every listed index needs its image, label and calib file
            wanted = [index for split in _SPLIT_FILES for index in indices[split]]
            for kind, suffix in (("image_2", ".png"), ("label_2", ".txt"), ("calib", ".txt")):
                present = set(os.listdir(training / kind))
                absent = [index + suffix for index in wanted if index + suffix not in present]
                if absent:
                    missing.append(_summarise_missing(training / kind, absent))
    if missing:
        items = "\n".join(f"  - {item}" for item in missing)
        raise DatasetNotFoundError(
            f"The raw KITTI data in {root} is incomplete for split_set={split_set!r}. "
            f"Missing:\n{items}\n{_layout_text([split_set])}\nThen run\n"
            f"  {_prepare_command(root, 'DATA_DIR', split_set)}")
    overlap = set(indices["train"]) & set(indices["validation"])
    if overlap:
        logging.warning("KITTI %s: %d image(s) are in both train and val, e.g. %s.",
                        split_set, len(overlap), sorted(overlap)[0])
    return indices


def count_types(label_dir: str | os.PathLike, indices: Iterable[str]) -> dict[str, int]:
    """Objects of each KITTI type in the label files of `indices` (every type, zeros too)."""
    counts = dict.fromkeys(KITTI_TYPES, 0)
    for index in indices:
        for name in read_label_file(Path(label_dir) / f"{index}.txt")["type"]:
            counts[name] += 1
    return counts


# -- TFDS builder ---------------------------------------------------------------------------


@functools.cache
def builder_class():
    """The TFDS builder class (created, and registered with TFDS, on first use)."""
    import tensorflow_datasets as tfds  # deferred: importing this module stays TF-free

    class Kitti3d(tfds.core.GeneratorBasedBuilder):
        """KITTI 2D/3D object detection with the P2 camera matrix, from the raw files."""

        name = TFDS_NAME
        VERSION = tfds.core.Version(TFDS_VERSION)
        RELEASE_NOTES = {TFDS_VERSION: "Raw devkit labels, P2 and PNG bytes as they are."}
        BUILDER_CONFIGS = [
            tfds.core.BuilderConfig(
                name=split_set,
                description=f"Train/val split of {_SPLIT_SET_ORIGINS[split_set]}.")
            for split_set in SPLIT_SETS
        ]
        DEFAULT_CONFIG_NAME = "3dop"
        MANUAL_DOWNLOAD_INSTRUCTIONS = _layout_text(SPLIT_SETS)

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls):
            # No files live next to this code (no download checksums). TFDS's own lookup
            # needs the `importlib_resources` backport for a builder inside a package.
            return None

        def _info(self):
            return self.dataset_info_from_configs(
                description=__doc__,
                features=tfds.features.FeaturesDict({
                    # Stored as the original PNG bytes (bytes in, bytes stored).
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "image/id": np.int64,
                    "image/filename": tfds.features.Text(),
                    "calib": tfds.features.Tensor(shape=(3, 4), dtype=np.float32),
                    "objects": tfds.features.Sequence({
                        "type": tfds.features.Text(),
                        "truncated": np.float32,
                        "occluded": np.int32,
                        "alpha": np.float32,
                        "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                        "dimensions": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                        "location": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                        "rotation_y": np.float32,
                    }),
                }),
                homepage=_KITTI_HOMEPAGE,
                # Keys are positions in the split file: the records keep that order.
                disable_shuffling=True,
                citation=(
                    "@inproceedings{Geiger2012CVPR,\n"
                    "  author = {Andreas Geiger and Philip Lenz and Raquel Urtasun},\n"
                    "  title = {Are we ready for Autonomous Driving? The KITTI Vision "
                    "Benchmark Suite},\n"
                    "  booktitle = {Conference on Computer Vision and Pattern Recognition "
                    "(CVPR)},\n"
                    "  year = {2012}\n}"),
            )

        def _split_generators(self, dl_manager):
            split_set = self.builder_config.name
            manual_dir = Path(os.fspath(dl_manager.manual_dir))
            indices = check_manual_dir(manual_dir, split_set)
            return {split: self._generate_examples(manual_dir, split_set, split, ids)
                    for split, ids in indices.items()}

        def _generate_examples(self, manual_dir, split_set, split, indices):
            training = manual_dir / "training"
            for position, index in enumerate(indices):
                image_path = training / "image_2" / f"{index}.png"
                png = image_path.read_bytes()
                png_image_hw(png, str(image_path))  # fail on a non-PNG now, not at training
                labels = read_label_file(training / "label_2" / f"{index}.txt")
                yield position, {
                    "image": png,
                    "image/id": int(index),
                    "image/filename": image_path.name,
                    "calib": read_calib_file(training / "calib" / f"{index}.txt"),
                    "objects": {key: (list(value) if key == "type" else value)
                                for key, value in labels.items()},
                }
                if (position + 1) % 1000 == 0:
                    logging.info("%s/%s %s: %d / %d images", TFDS_NAME, split_set, split,
                                 position + 1, len(indices))

    return Kitti3d


def prepare(manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
            split_set: str = "3dop") -> None:
    """Builds the TFDS array_record dataset `kitti_3d/<split_set>` in `data_dir`.

    The raw tree is checked first (no TensorFlow import), and every label file is parsed
    once to log the object counts per type; an already prepared dataset is left as it is.

    Raises:
      ValueError: unknown `split_set`.
      DatasetNotFoundError: raw files missing (the message lists them).
      KittiFormatError: a malformed label, calib or split file (names file and line).
    """
    indices = check_manual_dir(manual_dir, split_set)
    manual_dir = Path(manual_dir).expanduser()
    for split, ids in indices.items():
        counts = count_types(manual_dir / "training" / "label_2", ids)
        logging.info("KITTI %s %s: %d images; objects per type: %s", split_set, split,
                     len(ids), ", ".join(f"{name} {count}" for name, count in counts.items()))
    import tensorflow_datasets as tfds

    builder = builder_class()(config=split_set, data_dir=os.fspath(paths.resolve(data_dir)),
                              file_format="array_record")
    if builder.is_prepared():  # download_and_prepare would be a no-op; say so
        logging.info("%s/%s is already prepared in %s.", TFDS_NAME, split_set, builder.data_dir)
        return
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    logging.info("%s/%s prepared in %s: %s", TFDS_NAME, split_set, builder.data_dir,
                 {split: info.num_examples for split, info in builder.info.splits.items()})


# -- Source ---------------------------------------------------------------------------------


def _how_to_prepare(split_set: str) -> str:
    return (
        f"Prepare it once from the raw KITTI files with\n"
        f"  {_prepare_command('KITTI_DIR', tfds_prepared.DATA_DIR_PLACEHOLDER, split_set)}\n"
        f"where KITTI_DIR holds training/{{image_2,label_2,calib}}/ and "
        f"ImageSets_{split_set}/{{train,val}}.txt (the prepared copy takes about as much disk "
        f"as training/image_2).")


def find_prepared_kitti(split: str, split_set: str = "3dop",
                        data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(data_dir, version) of a prepared `kitti_3d/<split_set>` holding `split`.

    Only the file system is inspected (no TensorFlow import).

    Raises:
      ValueError: unknown split or split set.
      DatasetNotFoundError: not prepared; the message says how to prepare it.
    """
    _check_split_set(split_set)
    if split not in _SPLITS:
        raise ValueError(f"unknown KITTI split {split!r}; known: {sorted(_SPLITS)}.")
    return tfds_prepared.find_prepared(f"{TFDS_NAME}/{split_set}", _SPLITS[split], data_dir,
                                       _how_to_prepare(split_set))


def record_to_example(record: Mapping[str, Any]) -> dict[str, Any]:
    """Converts one `kitti_3d` record (image left as PNG bytes) to the source convention.

    Tram and Misc objects are removed and counted in `num_skipped_types` int32 []; all
    other objects keep their file order. Boxes are the devkit's (left, top, right, bottom).

    Raises:
      ValueError: the image cannot be decoded (the message names the file).
    """
    file_name = tfds_prepared.as_text(record["image/filename"])
    image = cv2.imdecode(np.frombuffer(record["image"], dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode KITTI image {file_name} "
                         f"(image id {int(record['image/id'])}).")
    objects = record["objects"]
    codes, keep = class_codes(objects["type"])

    def field(key, dtype, shape):
        return np.asarray(objects[key], dtype=dtype).reshape(shape)[keep]

    return {
        "image": image,  # cv2 decodes to BGR, as cv2.imread
        "boxes": field("bbox", np.float32, (-1, 4)),
        "classes": codes[keep],
        "image_id": np.int64(record["image/id"]),
        "image_hw": np.array(image.shape[:2], dtype=np.int32),
        "calib": np.asarray(record["calib"], dtype=np.float32).reshape(3, 4),
        "alpha": field("alpha", np.float32, (-1,)),
        "dimensions": field("dimensions", np.float32, (-1, 3)),
        "location": field("location", np.float32, (-1, 3)),
        "rotation_y": field("rotation_y", np.float32, (-1,)),
        "truncated": field("truncated", np.float32, (-1,)),
        "occluded": field("occluded", np.int32, (-1,)),
        "num_skipped_types": np.int32(np.count_nonzero(~keep)),
    }


class KittiSource:
    """Random access to a prepared `kitti_3d` split, in the source convention + KITTI 3D fields.

    Elements: `image` uint8 BGR [h, w, 3]; `boxes` float32 [n, 4] (left, top, right, bottom
    pixels, as in the label file); `classes` int32 [n] (0 Pedestrian, 1 Car, 2 Cyclist,
    negative: ignore regions, see the module docstring); `image_id` int64 (the 6-digit index);
    `image_hw` int32 [2]; `calib` float32 [3, 4] (P2); `alpha` float32 [n] (radians);
    `dimensions` float32 [n, 3] (h, w, l metres); `location` float32 [n, 3] (x, y, z metres,
    camera coordinates); `rotation_y` float32 [n] (radians); `truncated` float32 [n];
    `occluded` int32 [n]; `num_skipped_types` int32 [] (Tram/Misc objects left out).
    Examples are in split-file order.

    Args:
      split: "train" or "val"/"validation".
      data_dir: TFDS data dir (default: $TFDS_DATA_DIR, then ~/tensorflow_datasets).
      split_set: "3dop" or "subcnn" (whose train/val split).
    """

    class_names = CLASS_NAMES
    num_classes = len(CLASS_NAMES)
    category_ids = CATEGORY_IDS

    def __init__(self, split: str, data_dir: str | os.PathLike | None = None, *,
                 split_set: str = "3dop"):
        root, version = find_prepared_kitti(split, split_set, data_dir)
        builder_class()  # registers the builder with TFDS (imports TFDS)
        self.split = _SPLITS[split]
        self.split_set = split_set
        self.data_dir = str(root)
        self.version = version
        # Images stay PNG bytes here: `record_to_example` decodes them with cv2, straight to BGR.
        self._records = tfds_prepared.open_data_source(
            f"{TFDS_NAME}/{split_set}", version, self.split, root, decode_images=False)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index) -> dict[str, Any]:
        return record_to_example(self._records[index])

    def __repr__(self) -> str:
        return (f"KittiSource(split={self.split!r}, data_dir={self.data_dir!r}, "
                f"split_set={self.split_set!r}, version={self.version!r})")

    def coco_ground_truth(self) -> dict[str, Any]:
        """COCO-format 2D ground truth of the split: Pedestrian, Car and Cyclist boxes only.

        Ignore regions (DontCare, Van, Truck, Person_sitting) and the skipped types (Tram,
        Misc) are left out, so COCOeval counts a detection on, say, a Van as a false positive,
        whereas the official KITTI evaluation ignores it; the numbers are a 2D approximation,
        not the KITTI benchmark. Boxes are [left, top, right - left, bottom - top]; image sizes
        come from the PNG headers; each image also carries its `calib` (P2, 3 x 4 list) as the
        official converter's json does.
        """
        images, annotations = [], []
        for index in range(len(self._records)):
            record = self._records[index]
            file_name = tfds_prepared.as_text(record["image/filename"])
            height, width = png_image_hw(record["image"], file_name)
            image_id = int(record["image/id"])
            images.append({"id": image_id, "width": width, "height": height,
                           "file_name": file_name,
                           "calib": np.asarray(record["calib"]).reshape(3, 4).tolist()})
            objects = record["objects"]
            codes, keep = class_codes(objects["type"])
            bbox = np.asarray(objects["bbox"], dtype=np.float64).reshape(-1, 4)
            for code, box in zip(codes[keep], bbox[keep]):
                if code < 0:
                    continue
                w, h = float(box[2] - box[0]), float(box[3] - box[1])
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id,
                    "category_id": CATEGORY_IDS[code],
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h, "iscrowd": 0,
                })
        categories = [{"id": cid, "name": name} for cid, name in zip(CATEGORY_IDS, CLASS_NAMES)]
        return {"info": {"description": repr(self)}, "images": images,
                "annotations": annotations, "categories": categories}


def from_config(dataset_config: Any, split: str) -> KittiSource:
    """The registry hook: `data_dir` (optional) and `split_set` ("3dop" default, "subcnn")."""
    split_set = _field(dataset_config, "split_set", "3dop")
    _check_split_set(split_set)
    return KittiSource(split, _field(dataset_config, "data_dir"), split_set=split_set)
