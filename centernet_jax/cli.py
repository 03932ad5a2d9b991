"""What every command-line entry point does before and around its work.

Each command (``main``, ``evaluate``, ``predict``, ``export``) defines its flags with
``define_config_flags`` (one definition of ``--config`` / ``--workdir``), starts with
``run(main)`` instead of ``absl.app.run`` so that ``--config`` finds the file and its
``configs`` helpers from any working directory (``config_loading``), and wraps its work in
``exit_on_user_error``.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from absl import logging


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


def define_config_flags(*, workdir_help: str, workdir_required: bool = False) -> None:
    """``--config`` (a config file with variant; fields overridable as ``--config.a.b=v``)
    and ``--workdir``."""
    from absl import flags  # pylint: disable=g-import-not-at-top
    from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

    config_flags.DEFINE_config_file(
        "config", None, "Config file with variant, e.g. configs/hourglass.py:demo.",
        lock_config=True)
    flags.DEFINE_string("workdir", None, workdir_help, required=workdir_required)


def define_checkpoint_flag() -> None:
    """``--checkpoint``: which variables a command loads."""
    from absl import flags  # pylint: disable=g-import-not-at-top

    from centernet_jax import inference  # pylint: disable=g-import-not-at-top

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


def _resolve_config_argument(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` with ``--config=PATH[:variant]``'s path made absolute where the loader finds
    it, and that path (None if there is no such argument or no such file)."""
    from centernet_jax import config_loading  # pylint: disable=g-import-not-at-top

    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            path, variant = config_loading.split_spec(arg[len("--config="):])
            try:
                path = config_loading.resolve_path(path)
            except FileNotFoundError:
                return argv, None  # the flag parser reports the missing file
            argv[i] = f"--config={path}" + (f":{variant}" if variant is not None else "")
            return argv, path
    return argv, None


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with ``--config`` located as ``load_config`` locates it."""
    from absl import app  # pylint: disable=g-import-not-at-top

    from centernet_jax import config_loading  # pylint: disable=g-import-not-at-top

    argv, path = _resolve_config_argument(sys.argv)
    sys.argv = argv  # the config flag reads its overrides from sys.argv
    binding = (config_loading.configs_package(path) if path is not None
               else contextlib.nullcontext())
    with binding:
        app.run(main, argv=argv)
