"""Paths that may be local or in a cloud bucket (`gs://...`): the one place that knows which.

Work directories and TFDS data directories on Cloud TPU pods live in GCS buckets. Orbax and
clu's writers take such paths as they are; everything the project writes or lists itself goes
through `etils.epath`, which reads local paths with `os` (no TensorFlow import) and bucket
paths with `tf.io.gfile` (or fsspec).
"""

from __future__ import annotations

import os

from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
    """True for URL-like paths (gs://, s3://, ...), which must not be made absolute."""
    return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> epath.Path:
    """An `epath.Path`: local paths expanded (~) and absolute, bucket paths as given."""
    if is_remote(path):
        return epath.Path(path)
    return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))

