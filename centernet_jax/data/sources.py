"""Source registry: `make_source(dataset_config, split)` -> a random-access source.

A source is a random-access object (`__len__`, `__getitem__(index) -> dict`, `__repr__`) with
attributes `class_names` (tuple of str), `num_classes`, `category_ids` (the json category id
written for each 0-based class) and `coco_ground_truth()` (the split's COCO-format ground truth,
for COCOeval). Every element is a dict:

* `image` uint8 BGR [h, w, 3] (as cv2.imread gives);
* `boxes` float32 [n, 4] (x1, y1, x2, y2) in original-image pixels, with x2 = x + w for a COCO
  [x, y, w, h] box (exclusive end); not clipped, not filtered;
* `classes` int32 [n], 0-based and contiguous (KITTI also uses negative ignore codes);
* `image_id` int64 []; `image_hw` int32 [2] (height, width of `image`);
* per dataset: `is_crowd` / `is_difficult` bool [n], `keypoints` float32 [n, K, 3], KITTI 3D
  fields. Objects are in annotation-file order. Keypoint sources also expose
  `keypoint_names` and `flip_pairs` (the (left, right) index pairs a horizontal flip swaps).

Each dataset module exposes `from_config(dataset_config, split)`; `SOURCE_BUILDERS` maps
`dataset.name` to it. TFDS datasets (`coco.py`, `voc.py`) first check on the file system that
the dataset is prepared (`tfds_prepared.find_prepared`), without importing TensorFlow, so a
missing dataset fails within a second with instructions instead of starting a download.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from typing import Any, Mapping

import numpy as np

from centernet_jax import paths


class DatasetNotFoundError(ValueError):
    """A dataset is not prepared where the config says it should be."""


def _field(config: Any, key: str, default: Any = None) -> Any:
    """config[key] for dicts and ConfigDicts, getattr otherwise; `default` if absent or None."""
    if isinstance(config, Mapping) or hasattr(config, "get"):
        value = config.get(key, default)
    else:
        value = getattr(config, key, default)
    return default if value is None else value


# -- Registry -------------------------------------------------------------------------------


# Dataset names, each the module in centernet_jax.data whose `from_config(config, split)`
# builds it. Modules are imported on first use: they import this module, and only the chosen
# dataset's dependencies should load.
DATASETS = (
    "shapes",  # the embedded, generated dataset
    "coco",  # COCO 2017 detection, TFDS coco/2017
    "voc",  # Pascal VOC 07+12, TFDS voc/2007 + voc/2012
    "coco_keypoints",  # COCO person keypoints, our TFDS builder
    "kitti",  # KITTI object with calibration, our TFDS builder
    "coco_json",  # any COCO-format annotation json + image folder
)


def check_index(index: Any, size: int) -> int:
    """`index` as an int in [0, size): a TypeError for non-integers, an IndexError outside."""
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an integer, got {type(index).__name__}.")
    if not 0 <= index < size:
        raise IndexError(f"index {index} out of range for {size} examples.")
    return int(index)


def make_source(dataset_config: Any, split: str, *, robust: bool = True):
    """Builds the source named `dataset_config.name` for `split` ("train", "val"/"validation").

    With `robust` (the default) the source is wrapped in `sanitize.RobustSource`: unreadable
    examples and non-finite annotations become counted, logged skips.

    Raises:
      ValueError: unknown dataset name or split.
      DatasetNotFoundError: the dataset is not prepared; the message says how.
    """
    name = _field(dataset_config, "name")
    if name not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; known: {sorted(DATASETS)}.")
    module = importlib.import_module(f"centernet_jax.data.{name}")
    source = module.from_config(dataset_config, split)
    num_classes = _field(dataset_config, "num_classes")
    if num_classes is not None and num_classes != source.num_classes:
        raise ValueError(f"dataset.num_classes={num_classes} but {name!r} {split!r} has "
                         f"{source.num_classes} classes {tuple(source.class_names)[:8]}...; "
                         "leave dataset.num_classes unset to take it from the data.")
    if len(source) == 0:
        raise DatasetNotFoundError(f"{name!r} split {split!r} has no examples: {source!r}.")
    if robust:
        from centernet_jax.data import sanitize  # pylint: disable=g-import-not-at-top
        source = sanitize.RobustSource(source)
    return source


DATASET_FACTS = ("num_classes", "class_names", "category_ids")


def _record_facts(config, facts: dict[str, Any]) -> None:
    """Sets `config.dataset[key]` for each fact (lists as tuples), even on a locked config."""
    with config.unlocked() if hasattr(config, "unlocked") else contextlib.nullcontext():
        for key, value in facts.items():
            config.dataset[key] = tuple(value) if isinstance(value, list) else value


def fill_dataset_facts(config, source) -> None:
    """Records what the data says in `config.dataset` (mutated in place): `num_classes` when
    unset, and `class_names` / `category_ids`, so that a saved config describes the model's
    classes without the dataset (prediction, export)."""
    facts = {"class_names": [str(n) for n in source.class_names],
             "category_ids": [int(i) for i in source.category_ids]}
    if config.dataset.get("num_classes") is None:
        facts["num_classes"] = int(source.num_classes)
    _record_facts(config, facts)


def fill_dataset_facts_from_run(config, workdir: str | None) -> None:
    """Like `fill_dataset_facts`, from the `config.json` a training run wrote in `workdir`.

    Prediction and export do not open the dataset; for data whose class count is only known
    from the data (`coco_json`) they take it from the run that trained the model.
    """
    if config.dataset.get("num_classes") is not None or not workdir:
        return
    path = paths.resolve(workdir) / "config.json"
    if not path.exists():
        return
    recorded = json.loads(path.read_text()).get("dataset", {})
    _record_facts(config, {key: recorded[key] for key in DATASET_FACTS
                           if recorded.get(key) is not None})
