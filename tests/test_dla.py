"""Tests for the DLA-34 backbone (official `pose_dla_dcn` dla_34) and its configs.

The full DLA-34 is only traced abstractly (jax.eval_shape); numerics run on narrow models.
Output parity with the official model is checked in test_parity.py.
"""

import json
import math
import pathlib
import re

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from centernet_jax import inference, train, train_state
from centernet_jax.models import detector, dla
from centernet_jax.models.heads import HeadSpec
from configs import dla34
from tests.conftest import build_setup, random_batch

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "parity"
COCO_HEADS = {"hm": HeadSpec(80, init="heatmap"), "wh": HeadSpec(2), "reg": HeadSpec(2)}
POSE_HEADS = {"hm": HeadSpec(1, init="heatmap"), "wh": HeadSpec(2), "hps": HeadSpec(34),
              "reg": HeadSpec(2), "hm_hp": HeadSpec(17, init="heatmap"), "hp_offset": HeadSpec(2)}
DDD_HEADS = {"hm": HeadSpec(3, init="heatmap"), "dep": HeadSpec(1), "rot": HeadSpec(8),
             "dim": HeadSpec(3), "wh": HeadSpec(2), "reg": HeadSpec(2)}
NARROW = dict(levels=(1, 1, 1, 2, 2, 1), channels=(4, 6, 8, 10, 12, 14))


def _count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _abstract_variables(model, hw=(64, 64)):
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *hw, 3)), train=False))


def _dla_model(heads, **dla_fields):
    config = ml_collections.ConfigDict(dict(backbone="dla"))
    if dla_fields:
        config.dla = ml_collections.ConfigDict(dla_fields)
    return detector.build_model(config, heads)


@pytest.fixture(scope="module")
def dla34_coco_variables():
    return _abstract_variables(_dla_model(COCO_HEADS))


@pytest.mark.parametrize("heads, expected", [
    (COCO_HEADS, 19_675_892), (POSE_HEADS, 20_112_346), (DDD_HEADS, 20_102_323)])
def test_parameter_count_matches_official_without_imagenet_fc(heads, expected):
    # Official counts (20,188,892 / 20,625,346 / 20,615,323) minus the unused base.fc (513,000).
    params = _abstract_variables(_dla_model(heads))["params"]
    assert _count(params) == expected


def test_default_head_width_is_256(dla34_coco_variables):
    heads = dla34_coco_variables["params"]["heads_0"]
    assert heads["hm"]["conv3x3"]["kernel"].shape == (3, 3, 64, 256)
    assert _count(heads) == 464_724


def _official_key_to_flax(key, ndim):
    """The naming contract: `.<i>` -> `_<i>`, dots -> path, weight -> kernel/scale."""
    *parents, leaf = key.split(".")
    if leaf == "num_batches_tracked" or key.startswith("base.fc."):
        return None
    if parents[0] not in ("base", "dla_up", "ida_up"):
        head, layer = parents
        path = ("heads_0", head, {"0": "conv3x3", "2": "conv1x1"}[layer])
    else:
        path = ("backbone", *re.sub(r"\.(\d+)", r"_\1", ".".join(parents)).split("."))
    if leaf in ("running_mean", "running_var"):
        return ("batch_stats", *path, leaf.removeprefix("running_"))
    if leaf == "weight":
        return ("params", *path, "kernel" if ndim == 4 else "scale")
    assert leaf == "bias", key
    return ("params", *path, "bias")


def test_official_keys_map_one_to_one_onto_flax_tree(dla34_coco_variables):
    keys = json.loads((FIXTURES / "ctdet_dla_34.keys.json").read_text())
    flat = {
        (collection, *path): leaf.shape
        for collection in ("params", "batch_stats")
        for path, leaf in flax.traverse_util.flatten_dict(
            flax.core.unfreeze(dla34_coco_variables[collection])).items()
    }
    mapped = {}
    for name, shape, _ in keys:
        target = _official_key_to_flax(name, len(shape))
        if target is None:
            continue
        # OIHW -> HWIO; the depthwise deconvs (C, 1, k, k) -> (k, k, 1, C) the same way.
        mapped[target] = tuple(shape[2:] + shape[1:2] + shape[:1]) if len(shape) == 4 else tuple(shape)
    assert len(mapped) == 343  # 400 keys - 55 num_batches_tracked - base.fc.{weight,bias}
    assert set(flat) == set(mapped), (sorted(set(flat) - set(mapped))[:5],
                                      sorted(set(mapped) - set(flat))[:5])
    assert {k: flat[k] for k in mapped} == mapped
    # Spot checks of the contract.
    assert flat[("params", "backbone", "base", "base_layer_0", "kernel")] == (7, 7, 3, 16)
    assert flat[("params", "backbone", "ida_up", "up_2", "kernel")] == (8, 8, 1, 64)
    assert flat[("params", "backbone", "dla_up", "ida_0", "proj_1", "conv",
                 "conv_offset_mask", "kernel")] == (3, 3, 512, 27)
    assert ("batch_stats", "backbone", "base", "level3", "project_1", "mean") in flat


def test_output_shapes_and_strides():
    model = dla.DLA(**NARROW)
    images = jnp.zeros((2, 64, 96, 3))

    def forward(images):
        variables = model.init(jax.random.key(0), images, train=False)
        levels = dla.DLABase(**NARROW).apply(
            {"params": variables["params"]["base"],
             "batch_stats": variables["batch_stats"]["base"]}, images, train=False)
        return model.apply(variables, images, train=False), levels

    features, levels = jax.eval_shape(forward, images)
    assert isinstance(features, list) and len(features) == 1
    assert features[0].shape == (2, 16, 24, NARROW["channels"][2])
    assert [x.shape for x in levels] == [
        (2, 64 // 2**i, 96 // 2**i, c) for i, c in enumerate(NARROW["channels"])]


def test_bilinear_up_init():
    kernel = dla.bilinear_upsample_kernel(2, 3)
    assert kernel.shape == (4, 4, 1, 3)
    np.testing.assert_allclose(kernel[:, :, 0, 2], np.outer([.25, .75, .75, .25], [.25, .75, .75, .25]))
    np.testing.assert_allclose(dla.bilinear_upsample_kernel(4, 1)[:, 0, 0, 0],
                               np.array([1, 3, 5, 7, 7, 5, 3, 1]) / 8 * 0.125)

    # The module starts from it: a constant map stays constant away from the border.
    up = dla.DepthwiseUpsample(4)
    x = jnp.ones((1, 6, 6, 2))
    variables = up.init(jax.random.key(0), x)
    np.testing.assert_array_equal(variables["params"]["kernel"], dla.bilinear_upsample_kernel(4, 2))
    y = up.apply(variables, x)
    assert y.shape == (1, 24, 24, 2)
    np.testing.assert_allclose(y[0, 2:-2, 2:-2], 1.0, rtol=1e-6)


def _np_depthwise_conv_transpose(x, kernel, stride, padding):
    """Definition of torch ConvTranspose2d(groups=C): out[i s - p + u] += x[i] * w[u]."""
    b, h, w, c = x.shape
    k = kernel.shape[0]
    full = np.zeros((b, (h - 1) * stride + k, (w - 1) * stride + k, c))
    for i in range(h):
        for j in range(w):
            full[:, i * stride:i * stride + k, j * stride:j * stride + k] += (
                x[:, i, j, None, None, :] * kernel[:, :, 0, :])
    out_h, out_w = (h - 1) * stride + k - 2 * padding, (w - 1) * stride + k - 2 * padding
    return full[:, padding:padding + out_h, padding:padding + out_w]


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_depthwise_upsample_matches_transposed_conv_definition(factor):
    rng = np.random.default_rng(factor)
    x = rng.normal(size=(2, 3, 5, 4))
    kernel = rng.normal(size=(2 * factor, 2 * factor, 1, 4))  # not symmetric: catches flips
    up = dla.DepthwiseUpsample(factor, dtype=jnp.float32)
    with jax.default_matmul_precision("highest"):
        y = up.apply({"params": {"kernel": jnp.asarray(kernel, jnp.float32)}},
                     jnp.asarray(x, jnp.float32))
    expected = _np_depthwise_conv_transpose(x, kernel, factor, factor // 2)
    assert y.shape == expected.shape == (2, 3 * factor, 5 * factor, 4)
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_plain_conv_ablation_drops_only_the_offset_convs():
    deformable = _count(_abstract_variables(_dla_model(COCO_HEADS))["params"])
    plain = _count(_abstract_variables(_dla_model(COCO_HEADS, deformable=False))["params"])
    assert deformable - plain == 638_064  # the 16 DCN conv_offset_mask layers (official)


def test_config_defaults_and_errors():
    model = _dla_model(COCO_HEADS, channels=(4, 6, 8, 10, 12, 14))
    assert model.backbone.levels == (1, 1, 1, 2, 2, 1)
    assert model.backbone.channels == (4, 6, 8, 10, 12, 14)
    assert model.backbone.deformable is True
    assert model.head_conv == 256
    with pytest.raises(ValueError, match="unknown model.dla fields.*chanels"):
        _dla_model(COCO_HEADS, chanels=(4, 6, 8, 10, 12, 14))
    with pytest.raises(ValueError, match="6 levels and 6 channels"):
        _dla_model(COCO_HEADS, channels=(4, 6, 8, 10, 12))
    with pytest.raises(ValueError, match="deformable must be a bool"):
        _dla_model(COCO_HEADS, deformable="no")


def test_input_size_not_multiple_of_32_is_a_clear_error():
    model = dla.DLA(**NARROW)
    with pytest.raises(ValueError, match="multiples of 32.*48x64.*64x64"):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 48, 64, 3)),
                                          train=False))
    with pytest.raises(ValueError, match="NHWC"):
        model.check_input_shape((64, 64, 3))


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("variant", [None, "coco", "demo", "smoke"])
def test_config_variants_build(variant):
    config = dla34.get_config(variant)
    assert config.variant == (variant or "coco")
    assert config.model.backbone == "dla"
    for hw in (config.input.input_hw, inference.eval_input_hw(config)):
        assert hw[0] % 32 == 0 and hw[1] % 32 == 0
    dla.dla_config(config.model)  # no unknown fields


def test_default_is_the_official_ctdet_coco_dla_1x_recipe():
    config = dla34.get_config()
    assert config.dataset.name == "coco" and config.dataset.num_classes == 80
    assert tuple(config.input.input_hw) == (512, 512)
    assert config.train.batch_size == 128 and config.train.learning_rate == 5e-4
    assert config.train.num_epochs == 140 and tuple(config.train.lr_drop_epochs) == (90, 120)
    assert config.model.head_conv == 256
    assert dla.dla_config(config.model) == dla.DLA_34


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="coco, custom, pascal, pascal_512, demo, smoke"):
        dla34.get_config("demoo")


@pytest.mark.slow
def test_smoke_config_train_step_is_finite():
    config, model, task, tx, init_fn = build_setup(dla34.get_config("smoke"))
    state = init_fn(train_state.init_rng(0))
    output_hw = task.output_hw(config.input.input_hw, config.input.down_ratio)
    step = jax.jit(train.make_train_step(model, task, tx, output_hw))
    batch = {k: jnp.asarray(v) for k, v in random_batch(config).items()}
    new_state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert int(new_state.step) == 1
    # Train mode normalises with batch statistics and updates the running ones, in the
    # neck as well as in the base.
    for path in (("base", "level2", "root", "bn"), ("ida_up", "node_2", "actf_0")):
        before, after = state.batch_stats["backbone"], new_state.batch_stats["backbone"]
        for name in path:
            before, after = before[name], after[name]
        assert not np.allclose(before["mean"], after["mean"]), path
