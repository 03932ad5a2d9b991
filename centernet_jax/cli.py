"""What every command-line entry point does before and around its work."""

from __future__ import annotations

import contextlib
import logging as std_logging
import sys
from typing import Iterator

from absl import logging


class _QuietLibraryInfo(std_logging.Filter):
    """Drops the INFO chatter of Orbax's checkpoint internals; warnings still pass."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def prepare_process() -> None:
    """Keeps TensorFlow (imported by clu and TFDS) off the accelerators; quiets Orbax."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    tf.config.set_visible_devices([], "GPU")
    logging.get_absl_handler().addFilter(_QuietLibraryInfo())


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turns errors caused by the user's input into one line and exit status 1.

    A missing dataset or checkpoint, a checkpoint that does not fit the model, an output
    path that is a file: the message says what to fix; a traceback would only bury it.
    """
    from centernet_jax import convert  # pylint: disable=g-import-not-at-top
    from centernet_jax.data import sources  # pylint: disable=g-import-not-at-top

    try:
        yield
    except (sources.DatasetNotFoundError, convert.ConversionError, FileNotFoundError,
            FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as error:
        logging.error("%s", error)
        sys.exit(f"error: {error}")
