"""Tests for `python -m centernet_jax.prepare` and prepared data flowing into batches."""

import subprocess
import sys

import numpy as np
import pytest

from centernet_jax import prepare
from centernet_jax.data import pipeline, sources
from configs import common
from test_kitti import write_raw_tree  # the tiny raw KITTI tree of the KITTI tests
from tests.conftest import eval_transform, train_transform


def test_cli_needs_one_known_dataset():
    result = subprocess.run([sys.executable, "-m", "centernet_jax.prepare", "imagenet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Name one dataset" in result.stderr
    assert "coco,voc,coco_keypoints,kitti" in result.stderr


def test_cli_reports_missing_manual_files_in_one_line_of_advice(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "centernet_jax.prepare", "kitti", f"--manual_dir={tmp_path}",
         f"--data_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "training/image_2" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ValueError, match="--manual_dir"):
        prepare.prepare("kitti", data_dir=str(tmp_path))


def test_prepared_kitti_feeds_the_ddd_pipeline(tmp_path):
    write_raw_tree(tmp_path / "raw")
    prepare.prepare("kitti", manual_dir=str(tmp_path / "raw"), data_dir=str(tmp_path / "tfds"))
    config = common.base_config()
    config.dataset = common.kitti_dataset()
    config.dataset.data_dir = str(tmp_path / "tfds")
    common.kitti_input(config)
    train = sources.make_source(config.dataset, "train")
    transform = train_transform(input_hw=(32, 96), max_objects=config.dataset.max_objects,
                       crop_mode=config.input.crop_mode, flip_prob=0.0,
                       color_aug=False, mean=config.input.mean, std=config.input.std)
    batch = next(pipeline.make_train_iterator(train, transform, batch_size=2, seed=0))
    assert batch["image"].shape == (2, 32, 96, 3) and batch["calib"].shape == (2, 3, 4)
    for name, trailing in (("location", (3,)), ("dimensions", (3,)), ("rotation_y", ()),
                           ("alpha", ())):
        assert batch[name].shape == (2, 50) + trailing
    assert batch["augmented"].dtype == np.bool_
    classes = batch["classes"][batch["mask"]]
    assert classes.min() >= -3 and classes.max() <= 2  # ignore codes kept for the renderer
    val = sources.make_source(config.dataset, "validation")
    evaluation = eval_transform(input_hw=(32, 96), max_objects=50).map(val[0])
    np.testing.assert_allclose(evaluation["calib"], val.source[0]["calib"])
