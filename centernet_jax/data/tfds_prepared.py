"""Is a TFDS dataset prepared? Answered from the file system, before TensorFlow is imported.

`tfds build NAME --file_format=array_record --data_dir=DIR` writes a dataset to
`DIR/NAME/<version>/` (NAME is `builder` or `builder/config`), one file set per split named
`<builder>-<split>.array_record-NNNNN-of-NNNNN`, plus metadata; unfinished builds live in
directories whose names are not versions. Only array_record gives the random access Grain
needs (`tfds.data_source`).

Importing TensorFlow takes seconds and an unprepared dataset would start a download of many
gigabytes, so sources call `find_prepared` first and fail fast with instructions; only then do
they import `tensorflow_datasets` (`open_data_source`).
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, Sequence

from etils import epath

from centernet_jax import paths
from centernet_jax.data.sources import DatasetNotFoundError

DEFAULT_DATA_DIR = "~/tensorflow_datasets"
# Placeholder in `how_to_prepare` messages, replaced by the directory a new build should go to.
DATA_DIR_PLACEHOLDER = "{data_dir}"
_VERSION_DIR = re.compile(r"^\d+\.\d+\.\d+$")
_TFDS_NAME = re.compile(r"^[a-z0-9_]+(/[A-Za-z0-9_.-]+)?$")


def data_dir_candidates(data_dir: str | os.PathLike | None = None) -> list[epath.Path]:
    """Where TFDS data is looked for: `data_dir` if given, else $TFDS_DATA_DIR and the default.

    Local directories or buckets (gs://...; listing those imports TensorFlow's gfile).
    """
    if data_dir:
        return [paths.resolve(data_dir)]
    candidates = []
    if os.environ.get("TFDS_DATA_DIR"):
        candidates.append(paths.resolve(os.environ["TFDS_DATA_DIR"]))
    candidates.append(paths.resolve(DEFAULT_DATA_DIR))
    return candidates


def build_command(tfds_name: str) -> str:
    """The `tfds build` command that prepares `tfds_name` for random access.

    The result holds `DATA_DIR_PLACEHOLDER`; `find_prepared` fills it in its error message.
    """
    return f"tfds build {tfds_name} --file_format=array_record --data_dir={DATA_DIR_PLACEHOLDER}"


def _version_key(version_dir: epath.Path) -> tuple[int, ...]:
    return tuple(int(part) for part in version_dir.name.split("."))


def find_prepared(tfds_name: str, split: str | Sequence[str],
                  data_dir: str | os.PathLike | None, how_to_prepare: str
                  ) -> tuple[epath.Path, str]:
    """(data_dir, version) of a prepared array_record `tfds_name` holding `split`.

    Looks for `<root>/<tfds_name>/<version>/<builder>-<split>.array_record*` under each root of
    `data_dir_candidates(data_dir)` in order, newest version first. Only the file system is
    inspected: nothing is imported and nothing is downloaded.

    Args:
      tfds_name: "builder" or "builder/config", without a version (e.g. "coco/2017", "kitti").
      split: a TFDS split name ("train", "validation", ...), or several that must all be
        prepared in the same version.
      data_dir: the configured TFDS data dir, or None for $TFDS_DATA_DIR then
        ~/tensorflow_datasets.
      how_to_prepare: appended to the error message; every `DATA_DIR_PLACEHOLDER` in it is
        replaced by the first candidate root (where a new build should go). Start it with
        `build_command(tfds_name)`.

    Returns:
      (root, version): pass `f"{tfds_name}:{version}"` and `data_dir=root` to TFDS.

    Raises:
      ValueError: `tfds_name` is not of the form above.
      DatasetNotFoundError: no version holds every split; the message lists the paths looked
        at and `how_to_prepare`.
    """
    if not _TFDS_NAME.match(tfds_name):
        raise ValueError(f"expected a TFDS name 'builder' or 'builder/config' without a "
                         f"version, got {tfds_name!r}.")
    splits = (split,) if isinstance(split, str) else tuple(split)
    builder = tfds_name.split("/")[0]
    patterns = [f"{builder}-{s}.array_record*" for s in splits]
    candidates = data_dir_candidates(data_dir)
    for root in candidates:
        dataset_dir = root / tfds_name
        if not dataset_dir.is_dir():
            continue
        versions = [d for d in dataset_dir.iterdir() if d.is_dir() and _VERSION_DIR.match(d.name)]
        for version_dir in sorted(versions, key=_version_key, reverse=True):
            if all(next(version_dir.glob(p), None) is not None for p in patterns):
                return root, version_dir.name
    looked = ", ".join(str(root / tfds_name / "<version>" / p)
                       for root in candidates for p in patterns)
    which = " and ".join(repr(s) for s in splits)
    noun = "split {} is" if len(splits) == 1 else "splits {} are"
    raise DatasetNotFoundError(
        f"TFDS {tfds_name} {noun.format(which)} not prepared in array_record format. Looked for "
        f"{looked} and found nothing. "
        + how_to_prepare.replace(DATA_DIR_PLACEHOLDER, str(candidates[0])))


def open_data_source(tfds_name: str, version: str, split: str, data_dir: str | os.PathLike,
                     *, decode_images: bool = True):
    """`tfds.data_source` of a split found by `find_prepared` (imports TFDS; never downloads).

    With `decode_images=False` the "image" feature comes back as encoded bytes, which is what
    ground-truth builders need to read image sizes from the headers alone.
    """
    import tensorflow_datasets as tfds  # deferred: only once the data is known to exist

    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    return tfds.data_source(f"{tfds_name}:{version}", split=split, data_dir=str(data_dir),
                            download=False, decoders=decoders)


def encoded_image_hw(encoded: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image from its header (no EXIF rotation, as TFDS decodes)."""
    from PIL import Image

    with Image.open(io.BytesIO(encoded)) as image:
        width, height = image.size
    return height, width


def as_text(value: Any) -> str:
    """A TFDS Text feature (bytes from array_record, str from mocks) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
