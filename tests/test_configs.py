"""Config variants, overrides and typos."""

import pytest
from absl import flags
from ml_collections import config_flags

from centernet_jax import config_checks
from centernet_jax.tasks.ctdet import CtdetTask
from configs import hourglass


@pytest.mark.parametrize("variant", [None, "coco", "demo", "smoke"])
def test_variants_build(variant):
    config = hourglass.get_config(variant)
    assert config.task == "ctdet"
    assert config.variant == (variant or "coco")
    assert config.model.backbone == "hourglass"
    assert config.input.down_ratio == 4


def test_default_is_the_official_coco_recipe():
    config = hourglass.get_config()
    assert config.dataset.name == "coco"
    assert config.dataset.num_classes == 80 and config.dataset.max_objects == 128
    assert tuple(config.input.input_hw) == (512, 512)
    assert config.train.batch_size == 24 and config.train.learning_rate == 2.5e-4
    assert config.train.num_epochs == 50 and tuple(config.train.lr_drop_epochs) == (40,)
    assert (config.loss.hm_weight, config.loss.wh_weight, config.loss.off_weight) == (1, 0.1, 1)
    assert config.loss.radius == "official"
    hg = config.model.hourglass
    assert hg.num_stacks == 2 and hg.depth == 5
    assert tuple(hg.dims) == (256, 256, 384, 384, 384, 512)
    assert tuple(hg.modules) == (2, 2, 2, 2, 2, 4)


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="coco, custom, demo, quick, smoke"):
        hourglass.get_config("demoo")


def test_input_sizes_must_be_multiples_of_the_stride():
    # The task decides (Task.output_hw); validate_config names the offending field.
    assert CtdetTask.output_hw((64, 96), 4) == (16, 24)
    with pytest.raises(ValueError, match=r"\(66, 64\) must be a multiple of the output stride 4"):
        CtdetTask.output_hw((66, 64), 4)
    config = hourglass.get_config("smoke")
    config.input.input_hw = (66, 64)
    with pytest.raises(ValueError, match=r"input\.input_hw=\(66, 64\)"):
        config_checks.validate_config(config)
    config = hourglass.get_config("smoke")
    config.eval.input_hw = (64, 70)
    with pytest.raises(ValueError, match=r"eval\.input_hw=\(64, 70\)"):
        config_checks.validate_config(config)


def _parse(*args):
    argv = ["prog", *args]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)
    values(argv)
    return values.config


def test_command_line_variant_and_overrides():
    config = _parse("--config=configs/hourglass.py:smoke", "--config.train.batch_size=4",
                    "--config.loss.radius=corrected", "--config.input.input_hw=(32,32)",
                    "--config.eval.input_hw=(64,96)")
    assert config.variant == "smoke"
    assert config.train.batch_size == 4
    assert config.loss.radius == "corrected"
    assert tuple(config.input.input_hw) == (32, 32)
    assert tuple(config.eval.input_hw) == (64, 96)


def test_override_typo_is_rejected():
    with pytest.raises(Exception, match="trian"):
        _parse("--config=configs/hourglass.py:smoke", "--config.trian.batch_size=4")


def test_override_wrong_type_is_rejected():
    with pytest.raises(Exception):
        _parse("--config=configs/hourglass.py:smoke", "--config.train.batch_size=big")
