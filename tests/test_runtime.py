"""runtime.prepare: the process start-up every entry point shares; safe to repeat."""

import sys

from absl import logging

from centernet_jax import runtime
from configs import hourglass


def test_prepare_is_idempotent_and_hides_accelerators_from_tensorflow():
    config = hourglass.get_config("smoke")
    runtime.prepare(config)
    filters = list(logging.get_absl_handler().filters)
    runtime.prepare(config)
    runtime.prepare()
    assert list(logging.get_absl_handler().filters) == filters  # one filter, not three
    assert sum(isinstance(f, runtime._QuietLibraryInfo) for f in filters) == 1
    tf = sys.modules["tensorflow"]
    assert tf.config.get_visible_devices("GPU") == []
