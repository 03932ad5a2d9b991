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
    path that is a file, a non-finite loss: the message says what to fix or do next; a
    traceback would only bury it.
    """
    from centernet_jax import convert  # pylint: disable=g-import-not-at-top
    from centernet_jax.data import sources  # pylint: disable=g-import-not-at-top

    try:
        yield
    except (sources.DatasetNotFoundError, convert.ConversionError, FileNotFoundError,
            FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
            FloatingPointError) as error:
        logging.error("%s", error)
        sys.exit(f"error: {error}")


def define_model_flags(*, workdir_help: str, workdir_required: bool = False) -> None:
    """``--config``, ``--workdir`` and ``--checkpoint``: how a command names its model."""
    from absl import flags  # pylint: disable=g-import-not-at-top
    from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

    from centernet_jax import inference  # pylint: disable=g-import-not-at-top

    config_flags.DEFINE_config_file(
        "config", None, "Config file with variant, e.g. configs/hourglass.py:demo.",
        lock_config=True)
    flags.DEFINE_string("workdir", None, workdir_help, required=workdir_required)
    flags.DEFINE_string("checkpoint", "best", inference.CHECKPOINT_HELP + ".")


def config_from_flags(argv: list[str]):
    """The ``--config`` of a command; a usage error for stray arguments or no config."""
    from absl import app, flags  # pylint: disable=g-import-not-at-top

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = flags.FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/hourglass.py:demo")
    return config
