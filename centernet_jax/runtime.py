"""Process start-up: what every entry point, command line or library call, does first.

`prepare(config)` is idempotent and cheap after its first call, so the command-line tools
and the library functions they wrap (`train.train_and_evaluate`, `evaluate.evaluate`,
`predict.predict`, `export.export_checkpoint`) all call it, and a notebook can call them
again and again in one Python process. In order:

1. TensorFlow (imported by TFDS and clu's writers) is kept off the accelerators, so it does
   not reserve GPU memory that JAX needs;
2. Orbax's INFO chatter is filtered out of the absl log (warnings still pass);
3. the host CPU is split into `mesh.host_cpu_devices` JAX devices when asked (only possible
   before the first device access; later a warning says so);
4. the process joins its multi-process group, if there is one (`distributed.initialize`).
"""

from __future__ import annotations

import logging as std_logging

from absl import logging

from centernet_jax import distributed, sharding

_done: set[str] = set()


class _QuietLibraryInfo(std_logging.Filter):
    """Drops the INFO chatter of Orbax's checkpoint internals; warnings still pass."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def hide_accelerators_from_tensorflow() -> None:
    """Makes TensorFlow see no GPU (once per process; a warning if it is too late)."""
    if "tensorflow" in _done:
        return
    _done.add("tensorflow")
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError as error:  # TensorFlow initialised its devices before us
        logging.warning("Could not hide GPUs from TensorFlow (%s); it may hold GPU memory.",
                        error)


def quiet_library_logs() -> None:
    """Filters Orbax's INFO lines out of the absl log handler (once per process)."""
    if "logs" in _done:
        return
    _done.add("logs")
    logging.get_absl_handler().addFilter(_QuietLibraryInfo())


def prepare(config=None) -> None:
    """Readies this process for `config`'s run; safe to call any number of times.

    Args:
      config: a run's config (its `mesh.host_cpu_devices` is applied), or None.
    """
    hide_accelerators_from_tensorflow()
    quiet_library_logs()
    if config is not None:
        sharding.use_host_cpu_devices(config.mesh.host_cpu_devices)
    distributed.initialize()  # a no-op on one host, or when already done
