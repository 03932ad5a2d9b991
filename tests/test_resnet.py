"""Tests for the ResNet backbones (msra `res_*` and `resdcn_*`) and their configs.

Full-size models are only traced abstractly (jax.eval_shape); numerics are checked on tiny
ResNets against an independent float64 NumPy forward written from torch's definitions.
Numerical parity with the official model lives in test_parity.py.
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

from centernet_jax.models import detector, resnet
from centernet_jax.models.heads import HeadSpec
from centernet_jax.models.resnet import ConvTranspose2d, ResNet
from configs import resnet18, resnet101
from tests.numpy_layers import np_bn, np_conv, np_relu
from tests.conftest import build_setup, random_batch

PARITY_FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "parity"
COCO_HEADS = {"hm": HeadSpec(80, init="heatmap"), "wh": HeadSpec(2), "reg": HeadSpec(2)}


def _model_config(**resnet_fields):
    return ml_collections.ConfigDict(dict(backbone="resnet", resnet=resnet_fields))


def _abstract_variables(model, hw=(128, 128)):
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *hw, 3)), train=False))


def _count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("depth, deformable, official_count, head_input", [
    (18, False, 15_820_372, 256),   # res_18
    (101, False, 53_435_476, 256),  # res_101
    (18, True, 14_437_349, 64),     # resdcn_18
    (101, True, 49_673_189, 64),    # resdcn_101
])
def test_parameter_count_matches_official(depth, deformable, official_count, head_input):
    model = detector.build_model(_model_config(depth=depth, deformable=deformable), COCO_HEADS)
    assert model.head_conv == 64  # the official ResNet head width when the config sets none
    variables = _abstract_variables(model)
    assert _count(variables["params"]) == official_count
    assert variables["params"]["heads_0"]["hm"]["conv3x3"]["kernel"].shape == (3, 3, head_input, 64)


def _official_key_to_flax(key, ndim):
    """The naming contract: `.<i>` -> `_<i>`, dots -> path; heads `<h>.0`/`.2` -> conv3x3/1x1."""
    *parents, leaf = key.split(".")
    if leaf == "num_batches_tracked":
        return None
    head = re.fullmatch(r"(hm|wh|reg)\.(0|2)\.(weight|bias)", key)
    if head:
        conv = "conv3x3" if head[2] == "0" else "conv1x1"
        return ("params", "heads_0", head[1], conv, "kernel" if head[3] == "weight" else "bias")
    path = re.sub(r"\.(\d+)", r"_\1", ".".join(parents)).split(".")
    names = {"running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var"),
             "weight": ("params", "kernel" if ndim == 4 else "scale"), "bias": ("params", "bias")}
    collection, name = names[leaf]
    return (collection, "backbone", *path, name)


@pytest.mark.parametrize("fixture, depth, deformable", [
    ("ctdet_res_18", 18, False), ("ctdet_resdcn_101", 101, True)])
def test_official_keys_map_one_to_one_onto_flax_tree(fixture, depth, deformable):
    keys = json.loads((PARITY_FIXTURES / f"{fixture}.keys.json").read_text())
    model = detector.build_model(_model_config(depth=depth, deformable=deformable), COCO_HEADS)
    variables = _abstract_variables(model)
    flat = {(collection, *path): leaf.shape
            for collection in ("params", "batch_stats")
            for path, leaf in flax.traverse_util.flatten_dict(variables[collection]).items()}
    mapped = {}
    for name, shape, _ in keys:
        target = _official_key_to_flax(name, len(shape))
        if target is None:
            continue
        # OIHW -> HWIO; ConvTranspose2d (C_in, C_out, k, k) -> (k, k, C_out, C_in) alike.
        expected = tuple(shape[2:] + shape[1:2] + shape[:1]) if len(shape) == 4 else tuple(shape)
        assert flat.get(target) == expected, f"{name} -> {target}: {flat.get(target)}"
        mapped[target] = name
    assert set(flat) == set(mapped), sorted(set(flat) - set(mapped))[:5]


@pytest.mark.parametrize("deformable", [False, True])
def test_output_is_stride_4_with_last_deconv_width(deformable):
    model = ResNet(depth=18, deformable=deformable, base_width=8, deconv_widths=(16, 12, 10))
    images = jnp.zeros((2, 128, 96, 3))
    variables = _abstract_variables(model, hw=(128, 96))
    features = jax.eval_shape(lambda v: model.apply(v, images, train=False), variables)
    assert isinstance(features, list) and len(features) == 1
    assert features[0].shape == (2, 32, 24, 10)


@pytest.mark.parametrize("size", [125, 126, 127, 128, 160])
def test_odd_and_even_inputs_give_ceil_quarter_like_torch(size):
    # Torch: each stride-2 layer maps n -> ceil(n / 2), each 4x4 s2 p1 deconv n -> 2n, so the
    # output is 8 * ceil(n / 32); for these sizes that is ceil(n / 4).
    model = ResNet(depth=18, deformable=False, base_width=4, deconv_widths=(4, 4, 4))
    images = jnp.zeros((1, size, 64, 3))
    variables = _abstract_variables(model, hw=(size, 64))
    (features,) = jax.eval_shape(lambda v: model.apply(v, images, train=False), variables)
    assert features.shape == (1, -(-size // 4), 16, 4)
    assert resnet.output_size(size) == -(-size // 4)


def test_input_whose_output_would_not_be_a_quarter_is_a_clear_error():
    model = ResNet(depth=18, deformable=False, base_width=4, deconv_widths=(4, 4, 4))
    with pytest.raises(ValueError, match="multiples of 32.*100x64.*128x64"):
        model.init(jax.random.key(0), jnp.zeros((1, 100, 64, 3)), train=False)


# ----------------------------------------------------------------------------- config


def test_missing_fields_take_official_defaults():
    backbone = resnet.build(ml_collections.ConfigDict(dict(backbone="resnet")), jnp.float32)
    assert (backbone.depth, backbone.deformable, backbone.base_width) == (18, True, 64)
    assert tuple(backbone.deconv_widths) == (256, 128, 64)
    msra = resnet.build(_model_config(depth=101, deformable=False), jnp.bfloat16)
    assert msra.depth == 101 and tuple(msra.deconv_widths) == (256, 256, 256)
    assert msra.dtype == jnp.bfloat16


def test_unknown_config_field_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown model.resnet fields \['dcn'\].*deformable"):
        detector.build_model(_model_config(depth=18, dcn=True), COCO_HEADS)


@pytest.mark.parametrize("fields, message", [
    (dict(depth=19), "depth must be one of"),
    (dict(deconv_widths=(64, 64)), "deconv_widths needs 3"),
    (dict(deformable="yes"), "deformable must be a bool"),
])
def test_bad_config_values_are_clear_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        detector.build_model(_model_config(**fields), COCO_HEADS)


# ----------------------------------------------------------------------------- NumPy reference


def _np_conv_transpose(x, kernel, stride, padding):
    """torch ConvTranspose2d by its definition: out[i*s - p + a] += x[i] @ W[:, :, a],

    with `kernel` [k, k, C_out, C_in] (the torch weight transposed by (2, 3, 1, 0)).
    """
    b, h, w, _ = x.shape
    k = kernel.shape[0]
    full = np.zeros((b, (h - 1) * stride + k, (w - 1) * stride + k, kernel.shape[2]))
    for a in range(k):
        for c in range(k):
            full[:, a:a + stride * (h - 1) + 1:stride, c:c + stride * (w - 1) + 1:stride] += (
                x @ kernel[a, c].T)
    return full[:, padding:full.shape[1] - padding, padding:full.shape[2] - padding]


def _np_max_pool_3x3_s2(x):
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    ho, wo = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    return np.max([x[:, i:i + 2 * (ho - 1) + 1:2, j:j + 2 * (wo - 1) + 1:2]
                   for i in range(3) for j in range(3)], axis=0)


def _np_basic_block(x, p, s, stride):
    y = np_relu(np_bn(np_conv(x, p["conv1"]["kernel"], stride), p["bn1"], s["bn1"]))
    y = np_bn(np_conv(y, p["conv2"]["kernel"]), p["bn2"], s["bn2"])
    if "downsample_0" in p:
        x = np_bn(np_conv(x, p["downsample_0"]["kernel"], stride),
                   p["downsample_1"], s["downsample_1"])
    return np_relu(y + x)


def _np_resnet18(x, p, s, deformable):
    """res_18 / resdcn_18 forward; DCN with zero offset/mask conv = 0.5 * conv + bias."""
    x = np_relu(np_bn(np_conv(x, p["conv1"]["kernel"], 2), p["bn1"], s["bn1"]))
    x = _np_max_pool_3x3_s2(x)
    for layer in range(4):
        for block in range(2):
            name = f"layer{layer + 1}_{block}"
            x = _np_basic_block(x, p[name], s[name], 2 if layer and not block else 1)
    per_stage = 6 if deformable else 3
    for stage in range(3):
        i = stage * per_stage
        if deformable:
            dcn = p[f"deconv_layers_{i}"]
            x = 0.5 * np_conv(x, dcn["kernel"]) + dcn["bias"]
            x = np_relu(np_bn(x, p[f"deconv_layers_{i + 1}"], s[f"deconv_layers_{i + 1}"]))
            i += 3
        x = _np_conv_transpose(x, p[f"deconv_layers_{i}"]["kernel"], stride=2, padding=1)
        x = np_relu(np_bn(x, p[f"deconv_layers_{i + 1}"], s[f"deconv_layers_{i + 1}"]))
    return x


def _randomise(variables, seed):
    """float64 NumPy params and running stats for the (abstract) `variables` tree.

    Kernels are N(0, 1.4^2 / fan_in), BN statistics and affines O(1); the DCN offset/mask
    convs stay zero (their official init), so each DCN is 0.5 * conv + bias. Filling an
    abstract tree avoids compiling `init`, which takes seconds on a CPU.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        names = [p.key for p in path]
        if "conv_offset_mask" in names:
            return np.zeros(leaf.shape, np.float64)
        if names[-1] == "var":
            return rng.uniform(0.5, 1.5, leaf.shape)
        if names[-1] == "scale":
            return rng.uniform(0.5, 1.0, leaf.shape)
        if names[-1] == "kernel":
            fan_in = math.prod(leaf.shape[:-1])
            return rng.normal(size=leaf.shape) * 1.4 / math.sqrt(fan_in)
        return 0.1 * rng.normal(size=leaf.shape)

    return jax.tree_util.tree_map_with_path(draw, variables)


def test_conv_transpose_matches_torch_definition():
    # An asymmetric kernel catches a spatial flip; 3x3 s2 p1 an off-by-one in the padding.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 3))
    for k, stride, padding in ((4, 2, 1), (3, 2, 1), (2, 2, 0)):
        layer = ConvTranspose2d(6, kernel_size=k, strides=stride, padding=padding)
        kernel = rng.normal(size=(k, k, 6, 3))
        with jax.default_matmul_precision("highest"):
            got = layer.apply({"params": {"kernel": jnp.asarray(kernel, jnp.float32)}},
                              jnp.asarray(x, jnp.float32))
        want = _np_conv_transpose(x, kernel, stride, padding)
        assert got.shape == want.shape == (2, (5 - 1) * stride - 2 * padding + k,
                                           (7 - 1) * stride - 2 * padding + k, 6)
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("deformable", [False, True])
def test_tiny_resnet18_matches_numpy_reference(deformable):
    # 63 x 64: odd and even sizes through every stride-2 conv, the max-pool and the neck.
    model = ResNet(depth=18, deformable=deformable, base_width=4, deconv_widths=(6, 5, 4))
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 63, 64, 3))
    variables = _randomise(_abstract_variables(model, hw=(64, 64)), seed=2)
    with jax.default_matmul_precision("highest"):
        (got,) = model.apply(jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), variables),
                             jnp.asarray(images, jnp.float32), train=False)
    want = _np_resnet18(images, variables["params"], variables["batch_stats"], deformable)
    assert got.shape == want.shape == (2, 16, 16, 4)
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.abs(want).max())


def test_bfloat16_computation_keeps_float32_params_and_tracks_float32():
    f32 = ResNet(depth=18, deformable=True, base_width=4, deconv_widths=(6, 5, 4))
    bf16 = f32.clone(dtype=jnp.bfloat16)
    variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32),
                             _randomise(_abstract_variables(f32, hw=(64, 64)), seed=3))
    images = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))
    assert jax.tree.map(jnp.shape, _abstract_variables(bf16, hw=(64, 64))) == jax.tree.map(
        jnp.shape, variables)
    (want,) = jax.jit(lambda v, x: f32.apply(v, x, train=False))(variables, images)
    (got,) = jax.jit(lambda v, x: bf16.apply(v, x, train=False))(variables, images)
    assert got.dtype == jnp.bfloat16
    error = jnp.abs(got.astype(jnp.float32) - want).max() / jnp.abs(want).max()
    assert error < 0.1


def test_resdcn_upsampler_init_has_the_official_bilinear_channel():
    kernel = resnet.resdcn_up_init(jax.random.key(0), (4, 4, 8, 5))
    tent = np.array([0.25, 0.75, 0.75, 0.25])
    for c in range(5):
        np.testing.assert_allclose(kernel[:, :, 0, c], np.outer(tent, tent))
    others = np.asarray(kernel[:, :, 1:, :])
    assert 0 < np.abs(others).max() <= 1 / math.sqrt(8 * 16)  # torch U(+-1/sqrt(C_out k k))


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("deformable", [False, True])
def test_train_mode_updates_batch_stats(deformable):
    model = detector.build_model(
        _model_config(depth=18, deformable=deformable, base_width=4, deconv_widths=(8, 8, 8)),
        {"hm": HeadSpec(3, init="heatmap"), "wh": HeadSpec(2), "reg": HeadSpec(2)})
    images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32),
                             _randomise(_abstract_variables(model, hw=(64, 64)), seed=0))
    outputs, updates = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, images)
    assert outputs[0]["hm"].shape == (2, 16, 16, 3)
    before = flax.traverse_util.flatten_dict(variables["batch_stats"])
    after = flax.traverse_util.flatten_dict(updates["batch_stats"])
    assert set(before) == set(after)
    unchanged = [k for k in before if np.allclose(before[k], after[k])]
    assert not unchanged, unchanged[:3]
    assert all(np.isfinite(v).all() for v in after.values())


def test_smoke_config_trains_one_step():
    from centernet_jax import train, train_state

    config, model, task, tx, init_fn = build_setup(resnet18.get_config("smoke"))
    state = jax.jit(init_fn)(train_state.init_rng(0))
    output_hw = task.output_hw(config.input.input_hw, config.input.down_ratio)
    step = jax.jit(train.make_train_step(model, task, tx, output_hw))
    new_state, metrics = step(state, random_batch(config))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
    assert int(new_state.step) == 1
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new_state.params)
    assert all(jax.tree.leaves(moved["heads_0"]))


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("module, variant", [
    (resnet18, None), (resnet18, "coco_nodcn"), (resnet18, "demo"), (resnet18, "demo_nodcn"),
    (resnet18, "smoke"),
    (resnet101, None), (resnet101, "smoke")])
def test_config_variants_build_a_stride_4_model(module, variant):
    config = module.get_config(variant)
    assert config.model.backbone == "resnet" and "hourglass" not in config.model
    model = detector.build_model(config.model, {
        "hm": HeadSpec(config.dataset.num_classes, init="heatmap"), "wh": HeadSpec(2),
        "reg": HeadSpec(2)})
    hw = tuple(config.input.input_hw)
    assert hw[0] % 32 == 0 and hw[1] % 32 == 0
    if variant in ("demo", "demo_nodcn", "smoke"):  # full-size models are checked above
        variables = _abstract_variables(model, hw)
        outputs = jax.eval_shape(
            lambda v: model.apply(v, jnp.zeros((1, *hw, 3)), train=False), variables)
        assert outputs[0]["hm"].shape == (1, hw[0] // 4, hw[1] // 4, config.dataset.num_classes)


def test_coco_configs_are_the_official_recipes():
    r18 = resnet18.get_config()
    assert r18.variant == "coco" and r18.dataset.name == "coco"
    assert tuple(r18.input.input_hw) == (512, 512) and r18.model.head_conv == 64
    assert r18.train.batch_size == 114 and r18.train.learning_rate == 5e-4
    assert r18.train.num_epochs == 140 and tuple(r18.train.lr_drop_epochs) == (90, 120)
    assert dict(r18.model.resnet) == dict(depth=18, deformable=True, base_width=64,
                                          deconv_widths=(256, 128, 64))
    assert resnet18.get_config("coco_nodcn").model.resnet.deconv_widths == (256, 256, 256)
    r101 = resnet101.get_config()
    assert r101.train.batch_size == 96 and r101.train.learning_rate == 3.75e-4
    assert r101.train.num_epochs == 140 and tuple(r101.train.lr_drop_epochs) == (90, 120)
    assert r101.model.resnet.depth == 101 and r101.model.resnet.deformable


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="coco, coco_nodcn, custom, pascal, demo, demo_nodcn, smoke"):
        resnet18.get_config("demoo")
