r"""Command-line entry point.

  python -m centernet_jax.main --config=configs/hourglass.py:demo --workdir=runs/demo
  python -m centernet_jax.main --config=configs/hourglass.py --dry_run

Everything else lives in ``centernet_jax.train.train_and_evaluate``, which notebooks can
import and call directly with a config from ``configs/``.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from centernet_jax.data import sources

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with a variant: configs/hourglass.py:demo.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
flags.DEFINE_bool("dry_run", False,
                  "Build the model abstractly, print head shapes and the parameter count, "
                  "and exit (no data, no training).")


class _QuietLibraryInfo(std_logging.Filter):
    """Drops the INFO chatter of Orbax's checkpoint internals; warnings still pass."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def _hide_gpus_from_tensorflow() -> None:
    # clu's writers import TensorFlow; it must not grab accelerator memory JAX needs.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/hourglass.py:demo")
    # Imported here so that --help and flag errors stay fast.
    from centernet_jax import convert, train  # pylint: disable=g-import-not-at-top

    if FLAGS.dry_run:
        shapes, num_params = train.describe_model(config)
        for i, stack in enumerate(shapes):
            for name, shape in stack.items():
                print(f"stack {i} head {name}: {shape}")
        print(f"parameters: {num_params}")
        return
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required for training.")
    _hide_gpus_from_tensorflow()
    logging.get_absl_handler().addFilter(_QuietLibraryInfo())
    try:
        metrics = train.train_and_evaluate(config, FLAGS.workdir)
    except (sources.DatasetNotFoundError, convert.ConversionError, FileNotFoundError) as error:
        logging.error("%s", error)
        sys.exit(f"error: {error}")
    print("COCO bbox: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in
                                    ("AP", "AP50", "AP75", "APs", "APm", "APl")))


if __name__ == "__main__":
    app.run(main)
