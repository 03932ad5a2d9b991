"""Test-wide setup: 8 fake CPU devices so sharding tests run on any machine."""

import os
import tempfile

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for the whole session, shared with the subprocesses tests start.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jax_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")


import numpy as np  # noqa: E402
import pytest  # noqa: E402


def random_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic padded training batch matching ``config`` (no input pipeline)."""
    rng = np.random.default_rng(seed)
    batch = config.train.batch_size
    height, width = config.input.input_hw
    grid_h, grid_w = height // 4, width // 4
    num = config.dataset.max_objects
    xy = rng.uniform(-2, [grid_w, grid_h], (batch, num, 2))
    wh = rng.uniform(0.5, [grid_w / 2, grid_h / 2], (batch, num, 2))
    return {
        "image": rng.normal(size=(batch, height, width, 3)).astype(np.float32),
        "boxes": np.concatenate([xy, xy + wh], -1).astype(np.float32),
        "classes": rng.integers(0, config.dataset.num_classes, (batch, num)).astype(np.int32),
        "mask": rng.random((batch, num)) < 0.6,
    }


def train_transform(input_hw=(512, 512), **kwargs):
    """A TrainTransform at stride 4 with the official normalisation unless overridden."""
    from centernet_jax import affine
    from centernet_jax.data.transforms import TrainTransform
    from configs.common import COCO_MEAN_BGR, COCO_STD_BGR

    kwargs = {"mean": COCO_MEAN_BGR, "std": COCO_STD_BGR, **kwargs}
    return TrainTransform(input_hw=input_hw, output_hw=affine.grid_hw(input_hw, 4), **kwargs)


def eval_transform(input_hw=(512, 512), **kwargs):
    """An EvalTransform at stride 4 with the official normalisation unless overridden."""
    from centernet_jax import affine
    from centernet_jax.data.transforms import EvalTransform
    from configs.common import COCO_MEAN_BGR, COCO_STD_BGR

    kwargs = {"mean": COCO_MEAN_BGR, "std": COCO_STD_BGR, **kwargs}
    return EvalTransform(input_hw=input_hw, output_hw=affine.grid_hw(input_hw, 4), **kwargs)


def build_setup(config):
    """(config, model, task, tx, init_fn) for ``config``, as train_and_evaluate builds them
    (``assembly.assemble``; ``init_fn(rng)`` is the fresh train state)."""
    from centernet_jax import assembly

    parts = assembly.assemble(config, steps_per_epoch=4)
    return config, parts.model, parts.task, parts.tx, parts.init


@pytest.fixture
def smoke_setup():
    """``build_setup`` for the smoke hourglass."""
    from configs import hourglass

    return build_setup(hourglass.get_config("smoke"))


@pytest.fixture(scope="session")
def trained_smoke(tmp_path_factory):
    """(config, workdir) of a smoke hourglass trained 8 steps, checkpoint at step 8.

    Shared by the inference, evaluation, prediction and export tests: treat as read-only.
    """
    from centernet_jax import train
    from configs import hourglass

    config = hourglass.get_config("smoke")
    config.train.num_epochs = 1  # 64 images / batch 8 = 8 steps
    config.eval.every_steps = 0
    config.eval.num_pictures = 0
    workdir = str(tmp_path_factory.mktemp("trained_smoke"))
    train.train_and_evaluate(config, workdir)
    return config, workdir
