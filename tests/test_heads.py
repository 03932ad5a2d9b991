"""Tests for the CenterNet heads and the detector (`CenterNet`, `build_model`)."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from centernet_jax.models.detector import BACKBONES, CenterNet, build_model
from centernet_jax.models.heads import Heads, HeadSpec
from centernet_jax.models.hourglass import Hourglass

TINY_HOURGLASS = dict(num_stacks=2, depth=2, dims=(8, 12, 16), modules=(1, 1, 1), pre_width=4, cnv_dim=8)
# The 2D detection heads with 3 classes: a heatmap, box size and sub-pixel offset.
CTDET_HEADS = {"hm": HeadSpec(3, init="heatmap"), "wh": HeadSpec(2), "reg": HeadSpec(2)}


def _np_conv_same(x, kernel, bias):
    """Stride-1 NHWC conv with torch padding (k-1)//2, HWIO kernel, float64."""
    k = kernel.shape[0]
    p = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[3],))
    for i in range(k):
        for j in range(k):
            out += xp[:, i:i + x.shape[1], j:j + x.shape[2]] @ kernel[i, j]
    return out + bias


def test_heads_init_and_shapes():
    # Repeated shapes reuse compiled initialisers.
    heads = {"wh": HeadSpec(2), "hm": HeadSpec(3, init="heatmap"), "reg": HeadSpec(2),
             "hm_hp": HeadSpec(3, init="heatmap")}
    module = Heads(heads=heads, head_conv=16)
    x = jnp.zeros((2, 6, 7, 8))
    outputs, variables = module.init_with_output(jax.random.key(0), x)
    assert list(outputs) == list(heads)  # order of the mapping is kept (outside jit)
    for name, spec in heads.items():
        assert outputs[name].shape == (2, 6, 7, spec.channels)
        assert outputs[name].dtype == jnp.float32
    params = variables["params"]
    assert set(params) == set(heads)
    assert set(params["hm"]) == {"conv3x3", "conv1x1"}
    assert params["hm"]["conv3x3"]["kernel"].shape == (3, 3, 8, 16)
    assert params["hm"]["conv1x1"]["kernel"].shape == (1, 1, 16, 3)
    # Heatmap heads (init="heatmap") start at sigmoid ~ 0.1: bias -2.19.
    np.testing.assert_array_equal(params["hm"]["conv1x1"]["bias"], np.full(3, -2.19, np.float32))
    np.testing.assert_array_equal(params["hm_hp"]["conv1x1"]["bias"], np.full(3, -2.19, np.float32))
    # With zero input the 3x3 conv outputs its (zero) bias, so hm outputs are exactly the bias.
    np.testing.assert_allclose(outputs["hm"], -2.19, rtol=1e-6)
    # Other heads: normal(0.001) kernel, zero bias (the official ResNet init).
    np.testing.assert_array_equal(params["wh"]["conv1x1"]["bias"], 0.0)
    wh_std = float(jnp.std(jnp.concatenate([params[n]["conv1x1"]["kernel"].ravel() for n in ("wh", "reg")])))
    assert 0.0007 < wh_std < 0.0013
    hm_std = float(jnp.std(params["hm"]["conv1x1"]["kernel"]))
    assert hm_std > 0.05  # flax default (lecun normal, std 1/sqrt(16) = 0.25)


def test_custom_hm_bias_and_single_conv_heads():
    module = Heads(heads={"hm": HeadSpec(4, init="heatmap"), "reg": HeadSpec(2)}, head_conv=0,
                   hm_bias=-4.6)
    params = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 8))))["params"]
    assert set(params["hm"]) == {"conv1x1"}
    assert params["hm"]["conv1x1"]["kernel"].shape == (1, 1, 8, 4)
    real = module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 8)))["params"]
    np.testing.assert_allclose(real["hm"]["conv1x1"]["bias"], -4.6)


def test_the_spec_not_the_name_chooses_the_init():
    module = Heads(heads={"centres": HeadSpec(2, init="heatmap"), "hm": HeadSpec(2)}, head_conv=0)
    params = module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 8)))["params"]
    np.testing.assert_allclose(params["centres"]["conv1x1"]["bias"], -2.19)
    np.testing.assert_array_equal(params["hm"]["conv1x1"]["bias"], 0.0)
    assert float(jnp.std(params["hm"]["conv1x1"]["kernel"])) < 0.003


class _Doubling(nn.Module):
    """A stand-in pre-head module (e.g. a corner pool): counts its calls, doubles its input
    through one learnable scale."""

    @nn.compact
    def __call__(self, x):
        self.sow("intermediates", "calls", 1)
        return x * self.param("scale", nn.initializers.constant(2.0), ())


def test_pre_head_modules_run_once_and_feed_the_heads_that_name_them():
    heads = {"tl": HeadSpec(3, init="heatmap", pre="pool"), "tl_off": HeadSpec(2, pre="pool"),
             "plain": HeadSpec(2)}
    module = Heads(heads=heads, pre_heads={"pool": _Doubling}, head_conv=0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, 5, 6)), jnp.float32)
    variables = module.init(jax.random.key(0), x)
    assert set(variables["params"]) == {"tl", "tl_off", "plain", "pool"}
    outputs, state = module.apply(variables, x, mutable=["intermediates"])
    assert state["intermediates"]["pool"]["calls"] == (1,)  # shared, not run per head
    params = variables["params"]
    for name, source in (("tl", 2 * x), ("tl_off", 2 * x), ("plain", x)):
        conv = params[name]["conv1x1"]
        expected = jnp.einsum("bhwc,co->bhwo", source, conv["kernel"][0, 0]) + conv["bias"]
        np.testing.assert_allclose(outputs[name], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"pre-head modules \['unused'\] are read by no head"):
        Heads(heads={"plain": HeadSpec(2)}, pre_heads={"unused": _Doubling})


def test_head_matches_numpy_conv_relu_conv():
    rng = np.random.default_rng(0)
    module = Heads(heads={"hm": HeadSpec(3, init="heatmap"), "wh": HeadSpec(2)}, head_conv=5)
    x = rng.normal(size=(2, 5, 6, 4))
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 5, 6, 4))))
    params = jax.tree.map(lambda a: rng.normal(size=a.shape), flax.core.unfreeze(abstract["params"]))
    with jax.default_matmul_precision("highest"):
        out = module.apply({"params": params}, jnp.asarray(x, jnp.float32))
    for name in ("hm", "wh"):
        p = params[name]
        hidden = np.maximum(_np_conv_same(x, p["conv3x3"]["kernel"], p["conv3x3"]["bias"]), 0)
        ref = _np_conv_same(hidden, p["conv1x1"]["kernel"], p["conv1x1"]["bias"])
        np.testing.assert_allclose(np.asarray(out[name]), ref, atol=1e-4 * np.abs(ref).max(), rtol=0)


def _random_variables(module, *args, seed=0, **kwargs):
    """Variables with the init's structure, filled from NumPy (skips compiling initialisers)."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
    return jax.tree_util.tree_map_with_path(
        lambda path, a: rng.uniform(0.5, 1.5, a.shape) if path[-1].key == "var"
        else 0.3 * rng.normal(size=a.shape),
        flax.core.unfreeze(abstract),
    )


def test_bfloat16_heads_return_float32():
    module = Heads(heads={"hm": HeadSpec(3, init="heatmap")}, head_conv=8, dtype=jnp.bfloat16)
    x = jnp.ones((1, 4, 4, 8), jnp.bfloat16)
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(abstract))
    out = module.apply(_random_variables(module, x), x)
    assert out["hm"].dtype == jnp.float32


@pytest.mark.parametrize("heads", [
    {}, {"hm": HeadSpec(0)}, {"hm": HeadSpec(2.5)}, {"h/m": HeadSpec(2)}, {"hm": HeadSpec(True)},
    {"hm": 2},  # a plain channel count: the task must say how the head starts
    {"hm": HeadSpec(2, init="zeros")}, {"hm": HeadSpec(2, pre="pool")}])
def test_bad_heads_are_rejected(heads):
    with pytest.raises(ValueError):
        Heads(heads=heads)


def _tiny_config(**overrides):
    config = ml_collections.ConfigDict()
    config.backbone = "hourglass"
    config.hourglass = ml_collections.ConfigDict(TINY_HOURGLASS)
    config.head_conv = 6
    config.dtype = "float32"
    config.update(overrides)
    return config


def test_build_model_and_forward_train_and_eval():
    heads = CTDET_HEADS
    model = build_model(_tiny_config(), heads)
    assert isinstance(model.backbone, Hourglass) and model.head_conv == 6
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 32, 3)), jnp.float32)
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    variables = _random_variables(model, images, train=False)
    assert set(variables["params"]) == {"backbone", "heads_0", "heads_1"}  # heads per stack
    assert set(variables["batch_stats"]) == {"backbone"}
    assert variables["params"]["heads_1"]["hm"]["conv3x3"]["kernel"].shape == (3, 3, 8, 6)

    eval_outputs = apply(variables, images, train=False)
    train_outputs, updates = apply(variables, images, train=True, mutable="batch_stats")
    for outputs in (eval_outputs, train_outputs):
        assert len(outputs) == 2
        for stack in outputs:
            assert set(stack) == set(heads)  # (jit returns dicts with sorted keys)
            for name, spec in heads.items():
                assert stack[name].shape == (2, 4, 8, spec.channels)
                assert stack[name].dtype == jnp.float32
                assert np.isfinite(np.asarray(stack[name])).all()
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b),
                           variables["batch_stats"], updates["batch_stats"])
    assert all(jax.tree.leaves(changed))


def test_build_model_defaults_and_dtype():
    config = _tiny_config(dtype="bfloat16")
    del config["head_conv"]
    model = build_model(config, {"hm": HeadSpec(3, init="heatmap")})
    assert model.head_conv == TINY_HOURGLASS["cnv_dim"]  # the hourglass heads are cnv_dim wide
    assert model.dtype == jnp.bfloat16 and model.backbone.dtype == jnp.bfloat16
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(abstract))
    outputs = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)[0])
    assert outputs[-1]["hm"].dtype == jnp.float32
    # Missing hourglass sub-config means the Hourglass-104 preset.
    full = build_model(ml_collections.ConfigDict({"backbone": "hourglass"}),
                       {"hm": HeadSpec(80, init="heatmap")})
    assert full.backbone.num_stacks == 2 and tuple(full.backbone.dims) == (256, 256, 384, 384, 384, 512)
    assert full.head_conv == 256


def test_build_model_rejects_bad_configs():
    heads = {"hm": HeadSpec(3, init="heatmap")}
    with pytest.raises(ValueError, match="known backbones: .*'hourglass'"):
        build_model(_tiny_config(backbone="resnet_999"), heads)
    with pytest.raises(ValueError, match="unknown model.hourglass fields \\['stacks'\\]"):
        build_model(_tiny_config(hourglass={"stacks": 3}), heads)
    with pytest.raises(ValueError, match="dtype"):
        build_model(_tiny_config(dtype="float33"), heads)
    with pytest.raises(ValueError, match="dtype"):
        build_model(_tiny_config(dtype="int32"), heads)
    with pytest.raises(ValueError, match="must be a HeadSpec"):
        build_model(_tiny_config(), {"hm": 3})
    assert "hourglass" in BACKBONES


def test_detector_rejects_bad_images():
    model = CenterNet(backbone=Hourglass(**TINY_HOURGLASS),
                      heads={"hm": HeadSpec(3, init="heatmap")})
    with pytest.raises(ValueError, match="NHWC"):
        model.init(jax.random.key(0), jnp.zeros((16, 16, 3)), train=False)
    with pytest.raises(ValueError, match="float"):
        model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3), jnp.uint8), train=False)
    with pytest.raises(ValueError, match=r"multiples of 4 \* 2\*\*2 = 16"):
        model.init(jax.random.key(0), jnp.zeros((1, 24, 16, 3)), train=False)
