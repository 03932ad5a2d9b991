"""Loading a config file by path, with its variant and overrides, from any working directory.

    from centernet_jax import load_config
    config = load_config("configs/hourglass.py:demo", {"train.num_epochs": 0.1})

does exactly what ``--config=configs/hourglass.py:demo --config.train.num_epochs=0.1`` does on
the command line: the same file, the same variant argument, the same override parsing and
type checks (ml_collections' config flags run underneath), and the same locked result, in
which a misspelt field is an error.

Where the file is found: a path is taken as given if it exists; a relative one that does not
exist from the working directory is looked up in the project (the directory holding
``configs/``, in a checkout or where the package is installed), so notebooks and cluster jobs
need not ``cd`` into the repository.

Config files import their helpers as ``from configs import common``. While a file under a
``configs`` directory loads, that name is bound to the file's own directory, so the helpers
next to it are the ones used, installed or not and whatever else is called ``configs``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from typing import Any, Iterator, Mapping

import ml_collections

CONFIGS_PACKAGE = "configs"


def project_root() -> str:
    """The directory that holds ``centernet_jax/`` and ``configs/``."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"path[:variant]"`` -> (path, variant or None)."""
    path, sep, variant = os.fspath(spec).partition(":")
    return path, (variant if sep else None)


def resolve_path(path: str) -> str:
    """The absolute path of a config file (see the module docstring for where it looks).

    Raises:
      FileNotFoundError: naming every place looked in.
    """
    candidates = [path]
    if not os.path.isabs(path):
        candidates.append(os.path.join(project_root(), path))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise FileNotFoundError(f"config file {path!r} not found (looked in: "
                            f"{', '.join(os.path.abspath(c) for c in candidates)}).")


@contextlib.contextmanager
def configs_package(config_path: str) -> Iterator[None]:
    """Binds ``import configs`` to the directory of ``config_path`` while the block runs, if
    that directory is a ``configs`` directory (see the module docstring)."""
    directory = os.path.dirname(os.path.abspath(config_path))
    current = sys.modules.get(CONFIGS_PACKAGE)
    if (os.path.basename(directory) != CONFIGS_PACKAGE
            or list(getattr(current, "__path__", [])) == [directory]):
        yield
        return
    saved = {name: module for name, module in sys.modules.items()
             if name == CONFIGS_PACKAGE or name.startswith(CONFIGS_PACKAGE + ".")}
    for name in saved:
        del sys.modules[name]
    package = types.ModuleType(CONFIGS_PACKAGE)
    package.__path__ = [directory]
    package.__file__ = os.path.join(directory, "__init__.py")
    sys.modules[CONFIGS_PACKAGE] = package
    try:
        yield
    finally:
        for name in [n for n in sys.modules
                     if n == CONFIGS_PACKAGE or n.startswith(CONFIGS_PACKAGE + ".")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _flag_text(value: Any) -> str:
    """A Python value as the command line would spell it for ml_collections' parsers."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(tuple(value) if isinstance(value, list) else value)


def _message(error: BaseException) -> str:
    """The innermost message of a (possibly wrapped) parsing error, on one line."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    return " ".join(text.split())


def load_config(spec: str, overrides: Mapping[str, Any] | None = None, *,
                lock: bool = True) -> ml_collections.ConfigDict:
    """Loads ``path[:variant]`` and applies ``overrides`` exactly as the command line does.

    Args:
      spec: a config file, optionally with its variant: ``"configs/hourglass.py:demo"``.
      overrides: dotted field -> value, e.g. ``{"train.batch_size": 8, "input.input_hw":
        (64, 64)}``; a string is parsed as the command line would parse it, other values
        are written as Python literals first.
      lock: lock the result (as ``--config`` does): assigning a field that does not exist
        is then an error.

    Raises:
      FileNotFoundError: no such config file.
      ValueError: an unknown field or a value of the wrong type in ``overrides``, with the
        parser's explanation.
    """
    # Imported here: absl flags are only needed while loading.
    from absl import flags  # pylint: disable=g-import-not-at-top
    from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

    path, variant = split_spec(spec)
    path = resolve_path(path)
    argv = ["load_config", f"--config={path}" + (f":{variant}" if variant is not None else "")]
    argv += [f"--config.{key}={_flag_text(value)}" for key, value in (overrides or {}).items()]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Config file.", flag_values=flag_values,
                                    lock_config=lock, sys_argv=argv)
    with configs_package(path):
        try:
            flag_values(argv)
        except (flags.Error, AttributeError, KeyError, TypeError) as error:
            raise ValueError(f"{spec!r} with overrides {dict(overrides or {})}: "
                             f"{_message(error)}") from error
    return flag_values.config
