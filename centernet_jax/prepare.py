r"""Prepares a dataset once, in TFDS array_record format (random access for Grain).

  python -m centernet_jax.prepare coco --data_dir=~/tensorflow_datasets
  python -m centernet_jax.prepare voc --data_dir=~/tensorflow_datasets
  python -m centernet_jax.prepare coco_keypoints --manual_dir=data/coco --data_dir=...
  python -m centernet_jax.prepare kitti --manual_dir=data/kitti --data_dir=... \
      [--split_set=subcnn]

`coco` and `voc` are TFDS's own builders (they download from the datasets' sites; the same as
`tfds build coco/2017 --file_format=array_record`). `coco_keypoints` and `kitti` are our
builders over files you downloaded (`--manual_dir`; README "Datasets" gives the layouts).
COCO-format folders (`dataset.name=coco_json`) need no preparation.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

DATASETS = ("coco", "voc", "coco_keypoints", "kitti")
# TFDS's own builders: name -> TFDS names it needs.
TFDS_BUILDERS = {"coco": ("coco/2017",), "voc": ("voc/2007", "voc/2012")}

flags.DEFINE_string("data_dir", None, "TFDS data directory to write (default: "
                    "$TFDS_DATA_DIR, else ~/tensorflow_datasets).")
flags.DEFINE_string("manual_dir", None, "Folder of the downloaded files (coco_keypoints, "
                    "kitti).")
flags.DEFINE_enum("split_set", "3dop", ("3dop", "subcnn"), "KITTI train/val split.")
FLAGS = flags.FLAGS


def default_data_dir() -> str:
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def prepare(dataset: str, *, data_dir: str | None = None, manual_dir: str | None = None,
            split_set: str = "3dop") -> None:
    """Builds `dataset` (one of `DATASETS`) into `data_dir`.

    Raises:
      ValueError: unknown dataset, or a missing `manual_dir` for our builders.
      sources.DatasetNotFoundError: the manual files are incomplete (the message lists them).
    """
    data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    if dataset in TFDS_BUILDERS:
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

        for name in TFDS_BUILDERS[dataset]:
            logging.info("Preparing %s in %s (downloads from the dataset's site).", name,
                         data_dir)
            tfds.builder(name, data_dir=data_dir, file_format="array_record"
                         ).download_and_prepare()
        return
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {DATASETS}.")
    if not manual_dir:
        raise ValueError(f"{dataset} is built from files you downloaded: pass --manual_dir "
                         "(README, section Datasets, shows the layout).")
    if dataset == "kitti":
        from centernet_jax.data import kitti  # pylint: disable=g-import-not-at-top
        kitti.prepare(manual_dir, data_dir, split_set=split_set)
    else:
        from centernet_jax.data import coco_keypoints  # pylint: disable=g-import-not-at-top
        coco_keypoints.prepare(manual_dir, data_dir)


def main(argv):
    if len(argv) != 2 or argv[1] not in DATASETS:
        raise app.UsageError(f"Name one dataset: python -m centernet_jax.prepare "
                             f"{{{','.join(DATASETS)}}} [--data_dir=DIR] [--manual_dir=DIR]")
    from centernet_jax.data import sources  # pylint: disable=g-import-not-at-top
    try:
        prepare(argv[1], data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
                split_set=FLAGS.split_set)
    except (ValueError, sources.DatasetNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
