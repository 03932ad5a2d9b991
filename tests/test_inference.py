"""Test-time forward (plain and flip) and restoring variables for inference."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import assembly, checkpointing, convert, inference
from centernet_jax.tasks import ctdet
from configs import hourglass

SMOKE_PTH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "official",
                         "smoke_hourglass.pth")


def _logit(p):
    return float(np.log(p / (1 - p)))


def test_flip_merge_hand_built():
    """The official flip test: heatmap (after the sigmoid) and sizes averaged with the
    mirrored outputs flipped back, sizes not negated, offsets from the original image only."""
    height, width = 4, 5
    task = ctdet.CtdetTask(classes=2, options=ctdet.CtdetLoss(
        hm_weight=1.0, wh_weight=0.1, off_weight=1.0, radius="official", min_overlap=0.7))
    original = {"hm": np.full((1, height, width, 2), -30.0, np.float32),
                "wh": np.zeros((1, height, width, 2), np.float32),
                "reg": np.zeros((1, height, width, 2), np.float32)}
    mirrored = jax.tree.map(np.copy, original)
    original["hm"][0, 1, 1, 0] = _logit(0.8)
    original["wh"][0, 1, 1] = (2.0, 4.0)
    original["reg"][0, 1, 1] = (0.25, 0.5)
    # The mirrored image sees the object at x' = W - 1 - x = 3.
    mirrored["hm"][0, 1, 3, 0] = _logit(0.6)
    mirrored["wh"][0, 1, 3] = (4.0, 2.0)
    mirrored["reg"][0, 1, 3] = (0.9, 0.9)  # must be ignored

    merged = jax.device_get(task.decode(original, 3, mirrored=mirrored))
    assert merged["scores"][0, 0] == pytest.approx(0.7, abs=1e-6)
    assert merged["classes"][0, 0] == 0
    # centre (1 + 0.25, 1 + 0.5), size (3, 3)
    np.testing.assert_allclose(merged["boxes"][0, 0], [-0.25, 0.0, 2.75, 3.0], atol=1e-6)

    plain = jax.device_get(task.decode(original, 3))
    assert plain["scores"][0, 0] == pytest.approx(0.8, abs=1e-6)
    np.testing.assert_allclose(plain["boxes"][0, 0], [0.25, -0.5, 2.25, 3.5], atol=1e-6)


@pytest.fixture(scope="module")
def smoke_model():
    config = hourglass.get_config("smoke")
    parts = assembly.assemble(config)
    task, model = parts.task, parts.model
    images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    variables = model.init(jax.random.key(0), images, train=False)
    return config, task, model, variables, images


def test_detect_fn_plain_and_flip_match_the_task_decode(smoke_model):
    config, task, model, variables, images = smoke_model
    outputs = inference.last_stack_outputs(model, variables, images)
    mirrored = inference.last_stack_outputs(model, variables, images[:, :, ::-1])

    plain = jax.jit(inference.make_detect_fn(model, task, top_k=10))(variables, images)
    flip = jax.jit(inference.make_detect_fn(model, task, top_k=10, flip=True))(variables, images)
    want_plain = task.decode(outputs, 10)
    want_flip = task.decode(outputs, 10, mirrored=mirrored)
    for got, want in ((plain, want_plain), (flip, want_flip)):
        for name in ("boxes", "scores", "classes"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
    assert not np.allclose(plain["scores"], flip["scores"])  # a random net is not symmetric


def test_load_variables_best_latest_step_and_errors(trained_smoke, tmp_path):
    config, workdir = trained_smoke
    parts = assembly.assemble(config)
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
    saved = checkpointer.restore(8, parts.abstract_state())
    checkpointer.close()

    for choice, how in (("best", "best AP"), ("latest", "latest"), ("8", "requested")):
        loaded = inference.load_variables(parts, workdir=workdir, checkpoint=choice)
        assert loaded.step == 8 and how in loaded.source
        for got, want in zip(jax.tree.leaves(loaded.variables),
                             jax.tree.leaves(saved.variables)):
            np.testing.assert_array_equal(got, want)

    with pytest.raises(FileNotFoundError, match=r"No checkpoint at step 5; saved steps: \[.*8"):
        inference.load_variables(parts, workdir=workdir, checkpoint="5")
    with pytest.raises(FileNotFoundError, match="none of: best"):
        inference.load_variables(parts, workdir=workdir, checkpoint="newest")
    with pytest.raises(FileNotFoundError, match="no training checkpoints"):
        inference.load_variables(parts, workdir=str(tmp_path), checkpoint="best")
    with pytest.raises(FileNotFoundError, match="needs a workdir"):
        inference.load_variables(parts, workdir=None, checkpoint="latest")


def test_load_variables_from_a_converted_checkpoint(tmp_path):
    config = hourglass.get_config("smoke")
    parts = assembly.assemble(config)
    converted = convert.convert(SMOKE_PTH, str(tmp_path / "full"))
    loaded = inference.load_variables(parts, workdir=None, checkpoint=str(tmp_path / "full"))
    assert loaded.step is None and "converted" in loaded.source
    want = jax.tree_util.tree_leaves_with_path(converted.variables)
    got = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(loaded.variables)))
    assert len(got) == len(want)
    for path, value in want:
        np.testing.assert_array_equal(got[path], value)
    images = jnp.zeros((1, 64, 64, 3))
    detections = inference.make_detect_fn(parts.model, parts.task, top_k=5)(
        loaded.variables, images)
    assert detections["boxes"].shape == (1, 5, 4)

    # A model the checkpoint does not fit: the converter's mismatch report.
    config.dataset.num_classes = 7
    other = assembly.assemble(config)
    with pytest.raises(convert.ConversionError, match="hm"):
        inference.load_variables(other, workdir=None, checkpoint=str(tmp_path / "full"))
