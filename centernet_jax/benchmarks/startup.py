r"""startup: how soon a run reports a missing dataset, and how fast a dataset opens.

  python -m centernet_jax.bench --what=startup [--quick] [--json=/tmp/startup.json]

Rows (wall seconds, on this machine):

* ``missing_dataset``: ``python -m centernet_jax.main --config=configs/hourglass.py``
  pointed at a TFDS data directory that holds nothing, in a fresh interpreter, from start to
  its exit with the "not prepared" message; importing JAX and TensorFlow included. The
  message is checked, so the row also says the failure was the expected one.
* ``coco_json_open``: ``data.coco_json.CocoJsonSource`` over a generated COCO-format json of
  ``images`` images and 4 annotations each, every image file present (empty), from the
  constructor's start to its return: parsing, validation and the one listing of the image
  folder (default 5,000 images, a COCO val-sized file; quick 500).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from centernet_jax import config_loading
from centernet_jax.benchmarks.registry import register
from centernet_jax.data import coco_json

DEFAULT_IMAGES, QUICK_IMAGES = 5000, 500
ANNOTATIONS_PER_IMAGE = 4
TABLE_COLUMNS = ("case", "seconds", "size", "as_expected")


def _missing_dataset(scratch: str) -> dict[str, Any]:
    empty = os.path.join(scratch, "tfds")
    os.makedirs(empty)
    command = [sys.executable, "-m", "centernet_jax.main", "--config=configs/hourglass.py",
               f"--workdir={os.path.join(scratch, 'run')}",
               f"--config.dataset.data_dir={empty}"]
    env = {**os.environ, "TFDS_DATA_DIR": empty}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=config_loading.project_root(), env=env,
                            capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    expected = (result.returncode != 0 and "tfds build coco/2017" in result.stderr
                and "Traceback" not in result.stderr)
    return {"case": "missing_dataset", "seconds": seconds, "size": "COCO 2017 config",
            "as_expected": expected}


def _coco_json_open(scratch: str, num_images: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    image_dir = os.path.join(scratch, "images")
    os.makedirs(image_dir)
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 480, "width": 640}
              for i in range(1, num_images + 1)]
    annotations = [{"id": k + 1, "image_id": int(rng.integers(1, num_images + 1)),
                    "category_id": 1, "bbox": rng.uniform(0, 50, 4).round(2).tolist(),
                    "area": 1.0, "iscrowd": 0}
                   for k in range(ANNOTATIONS_PER_IMAGE * num_images)]
    for image in images:
        open(os.path.join(image_dir, image["file_name"]), "wb").close()
    annotation_file = os.path.join(scratch, "annotations.json")
    with open(annotation_file, "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": 1, "name": "thing"}]}, f)
    start = time.perf_counter()
    source = coco_json.CocoJsonSource(annotation_file, image_dir)
    seconds = time.perf_counter() - start
    return {"case": "coco_json_open", "seconds": seconds,
            "size": f"{num_images} images, {len(annotations)} annotations",
            "as_expected": len(source) == num_images}


@register("startup")
def bench_startup(quick: bool, images: int | None = None) -> dict[str, Any]:
    """Both rows of the module docstring.

    Args:
      quick: a 500-image json.
      images: images in the generated json (default 5000, quick 500).
    """
    num_images = images or (QUICK_IMAGES if quick else DEFAULT_IMAGES)
    if num_images < 1:
        raise ValueError(f"images must be positive, got {num_images}")
    with tempfile.TemporaryDirectory() as scratch:
        rows = [_missing_dataset(os.path.join(scratch, "missing")),
                _coco_json_open(os.path.join(scratch, "coco_json"), num_images)]
    return {"rows": rows, "table_columns": list(TABLE_COLUMNS)}
