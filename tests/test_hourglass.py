"""Tests for the stacked hourglass backbone (and the shared layers it uses).

The full Hourglass-104 is only ever traced abstractly (jax.eval_shape); numerics are
checked on a tiny hourglass against an independent float64 NumPy forward.
"""

import json
import math
import pathlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax.convert import official_key_to_flax
from centernet_jax.models.detector import CenterNet
from centernet_jax.models.heads import HeadSpec
from centernet_jax.models.hourglass import HOURGLASS_104, Hourglass
from centernet_jax.models.layers import upsample_nearest_2x
from tests.numpy_layers import np_bn, np_conv, np_relu

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
COCO_HEADS = {"hm": HeadSpec(80, init="heatmap"), "wh": HeadSpec(2), "reg": HeadSpec(2)}
# 2 stacks; level 0 has a single module (low3 = just the next->cur residual);
# dims[0] != cnv_dim so the inter-stack 1x1 convs change width.
TINY = dict(num_stacks=2, depth=2, dims=(8, 12, 16), modules=(1, 2, 3), pre_width=6, cnv_dim=10)


def _official_keys():
    with open(FIXTURES / "parity" / "ctdet_hourglass.keys.json") as f:
        return [(name, shape) for name, shape, _ in json.load(f)]


@pytest.fixture(scope="module")
def hg104_abstract_variables():
    model = CenterNet(backbone=Hourglass(**HOURGLASS_104), heads=COCO_HEADS, head_conv=256)
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)), train=False)
    )


def _count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def test_hourglass104_parameter_count_matches_official(hg104_abstract_variables):
    params = hg104_abstract_variables["params"]
    # torch model.parameters(): weights, biases, BN gamma/beta; no running stats.
    assert _count(params) == 191_284_008
    assert _count(params["heads_0"]) + _count(params["heads_1"]) == 3_583_656
    running = sum(math.prod(s) for n, s in _official_keys() if "running_" in n)
    assert _count(hg104_abstract_variables["batch_stats"]) == running


def test_official_keys_map_one_to_one_onto_flax_tree(hg104_abstract_variables):
    flat = {
        (collection, *path): leaf.shape
        for collection in ("params", "batch_stats")
        for path, leaf in flax.traverse_util.flatten_dict(
            flax.core.unfreeze(hg104_abstract_variables[collection])
        ).items()
    }
    mapped = set()
    official = [(n, s) for n, s in _official_keys() if not n.endswith("num_batches_tracked")]
    for name, shape in official:
        collection, path = official_key_to_flax(name, ndim=len(shape))
        target = (collection, *path)
        assert target in flat, f"{name} -> {target} missing"
        expected = tuple(shape[2:] + shape[1:2] + shape[:1]) if len(shape) == 4 else tuple(shape)
        assert flat[target] == expected, name  # OIHW -> HWIO
        mapped.add(target)
    assert len(mapped) == len(official)
    assert set(flat) == mapped, f"flax leaves with no official key: {sorted(set(flat) - mapped)[:5]}"


# ----------------------------------------------------------------------------- NumPy reference


def _np_residual(x, p, s, stride=1):
    y = np_relu(np_bn(np_conv(x, p["conv1"]["kernel"], stride), p["bn1"], s["bn1"]))
    y = np_bn(np_conv(y, p["conv2"]["kernel"]), p["bn2"], s["bn2"])
    if "skip_0" in p:
        skip = np_bn(np_conv(x, p["skip_0"]["kernel"], stride), p["skip_1"], s["skip_1"])
    else:
        assert stride == 1 and x.shape[-1] == y.shape[-1]
        skip = x
    return np_relu(y + skip)


def _np_level(x, p, s, dims, modules):
    mod = modules[0]
    up1 = x
    for i in range(mod):
        up1 = _np_residual(up1, p[f"up1_{i}"], s[f"up1_{i}"])
    low = x
    for i in range(mod):
        low = _np_residual(low, p[f"low1_{i}"], s[f"low1_{i}"], stride=2 if i == 0 else 1)
    if len(dims) > 2:
        low = _np_level(low, p["low2"], s["low2"], dims[1:], modules[1:])
    else:
        for i in range(modules[1]):
            low = _np_residual(low, p[f"low2_{i}"], s[f"low2_{i}"])
    for i in range(mod):
        low = _np_residual(low, p[f"low3_{i}"], s[f"low3_{i}"])
    return up1 + low.repeat(2, axis=1).repeat(2, axis=2)


def _np_hourglass(images, p, s, cfg):
    x = np_relu(np_bn(np_conv(images, p["pre_0"]["conv"]["kernel"], 2), p["pre_0"]["bn"], s["pre_0"]["bn"]))
    inter = _np_residual(x, p["pre_1"], s["pre_1"], stride=2)
    outs = []
    for k in range(cfg["num_stacks"]):
        kp = _np_level(inter, p[f"kps_{k}"], s[f"kps_{k}"], cfg["dims"], cfg["modules"])
        cnv = np_conv(kp, p[f"cnvs_{k}"]["conv"]["kernel"])
        cnv = np_relu(np_bn(cnv, p[f"cnvs_{k}"]["bn"], s[f"cnvs_{k}"]["bn"]))
        outs.append(cnv)
        if k < cfg["num_stacks"] - 1:
            a = np_conv(inter, p[f"inters__{k}_0"]["kernel"])
            a = np_bn(a, p[f"inters__{k}_1"], s[f"inters__{k}_1"])
            b = np_conv(cnv, p[f"cnvs__{k}_0"]["kernel"])
            b = np_bn(b, p[f"cnvs__{k}_1"], s[f"cnvs__{k}_1"])
            inter = _np_residual(np_relu(a + b), p[f"inters_{k}"], s[f"inters_{k}"])
    return outs


def _randomise(variables, seed=0):
    """Weights ~ N(0, 1.2^2 / fan_in), BN gamma ~ U(0.5, 1), beta/mean ~ 0.1 N, var ~ U(0.5, 1.5)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = math.prod(leaf.shape[:-1])
            return rng.normal(size=leaf.shape) * 1.2 / np.sqrt(fan_in)
        if name == "scale":
            return rng.uniform(0.5, 1.0, leaf.shape)
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape)
        return 0.1 * rng.normal(size=leaf.shape)

    return jax.tree_util.tree_map_with_path(fill, variables)


def _jit_apply(model):
    return jax.jit(model.apply, static_argnames=("train", "mutable"))


@pytest.fixture(scope="module")
def tiny_setup():
    """Tiny model, float64 images, random float64 variables, its jitted float32 apply."""
    model = Hourglass(**TINY)
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3))
    # Only the tree structure is needed: eval_shape avoids compiling every initialiser.
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    variables = _randomise(flax.core.unfreeze(abstract))
    return model, images, variables, _jit_apply(model)


def test_tiny_hourglass_matches_numpy_reference(tiny_setup):
    model, images, variables, apply = tiny_setup
    with jax.default_matmul_precision("highest"):
        outs = apply(variables, jnp.asarray(images, jnp.float32), train=False)
    refs = _np_hourglass(images, variables["params"], variables["batch_stats"], TINY)
    assert len(outs) == len(refs) == 2
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape == (2, 8, 8, 10)
        assert np.abs(ref).max() > 0.1  # not a degenerate (all-zero) comparison
        np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4 * np.abs(ref).max(), rtol=0)
    # The stacks differ (the second sees the inter-stack merge).
    assert not np.allclose(refs[0], refs[1])


def test_train_mode_updates_batch_stats_with_torch_momentum(tiny_setup):
    model, images, variables, apply = tiny_setup
    x = jnp.asarray(images, jnp.float32)
    with jax.default_matmul_precision("highest"):
        outs, updates = apply(variables, x, train=True, mutable="batch_stats")
        eval_outs = apply(variables, x, train=False)
    assert [o.shape for o in outs] == [(2, 8, 8, 10)] * 2
    # First BN sees the raw 7x7 s2 conv output; new = 0.9 old + 0.1 batch statistic.
    conv = np_conv(images, variables["params"]["pre_0"]["conv"]["kernel"], 2)
    old = variables["batch_stats"]["pre_0"]["bn"]
    new = updates["batch_stats"]["pre_0"]["bn"]
    expected_mean = 0.9 * old["mean"] + 0.1 * conv.mean((0, 1, 2))
    expected_var = 0.9 * old["var"] + 0.1 * conv.var((0, 1, 2))  # biased, as flax
    np.testing.assert_allclose(new["mean"], expected_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new["var"], expected_var, rtol=1e-4, atol=1e-5)
    # Every BN in the model moved.
    old_leaves = jax.tree.leaves(variables["batch_stats"])
    new_leaves = jax.tree.leaves(updates["batch_stats"])
    assert len(old_leaves) == len(new_leaves)
    for old_leaf, new_leaf in zip(old_leaves, new_leaves):
        assert not np.allclose(old_leaf, new_leaf)
    # Train mode normalises with batch statistics: different from eval outputs.
    assert not np.allclose(outs[1], eval_outs[1], atol=1e-3)


def test_parameter_names_follow_official_layout(tiny_setup):
    params = tiny_setup[2]["params"]
    assert set(params) == {"pre_0", "pre_1", "kps_0", "kps_1", "cnvs_0", "cnvs_1", "inters_0",
                           "inters__0_0", "inters__0_1", "cnvs__0_0", "cnvs__0_1"}
    kp = params["kps_0"]
    assert set(kp) == {"up1_0", "low1_0", "low2", "low3_0"}
    assert set(kp["low2"]) == {"up1_0", "up1_1", "low1_0", "low1_1", "low2_0", "low2_1", "low2_2",
                               "low3_0", "low3_1"}
    # Skip branch only where stride or width changes.
    assert "skip_0" in kp["low1_0"] and "skip_0" in kp["low3_0"]
    assert "skip_0" not in kp["up1_0"] and "skip_0" not in kp["low2"]["low2_0"]
    assert "skip_0" not in params["inters_0"]
    assert "bias" not in params["pre_0"]["conv"]  # conv before BN has no bias
    assert params["pre_0"]["conv"]["kernel"].shape == (7, 7, 3, 6)
    assert params["cnvs__0_0"]["kernel"].shape == (1, 1, 10, 8)


def test_bfloat16_compute_keeps_float32_params(tiny_setup):
    model, images, variables, apply = tiny_setup
    bf16 = Hourglass(**TINY, dtype=jnp.bfloat16)
    abstract = jax.eval_shape(lambda: bf16.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(abstract))
    x = jnp.asarray(images, jnp.float32)
    out_bf16 = _jit_apply(bf16)(variables, x, train=False)[-1]
    with jax.default_matmul_precision("highest"):
        out_f32 = apply(variables, x, train=False)[-1]
    assert out_bf16.dtype == jnp.bfloat16
    scale = float(jnp.abs(out_f32).max())
    assert float(jnp.abs(out_bf16.astype(jnp.float32) - out_f32).max()) < 0.1 * scale


def test_input_size_must_suit_the_depth():
    model = Hourglass(**TINY)  # depth 2: multiples of 16
    with pytest.raises(ValueError, match=r"multiples of 4 \* 2\*\*2 = 16.*got 20x32"):
        model.init(jax.random.key(0), jnp.zeros((1, 20, 32, 3)), train=False)
    with pytest.raises(ValueError, match="NHWC"):
        model.check_input_shape((32, 32, 3))
    # Like the official model, ceil(H/4) divisible by 2**depth also works (e.g. 511, 127).
    model.check_input_shape((1, 31, 64, 3))
    Hourglass(**HOURGLASS_104).check_input_shape((1, 127, 511, 3))
    with pytest.raises(ValueError, match="= 128"):
        Hourglass(**HOURGLASS_104).check_input_shape((1, 96, 128, 3))
    out = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((1, 31, 64, 3)), train=False)[0])
    assert out[0].shape == (1, 8, 16, 10)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="depth \\+ 1 = 3"):
        Hourglass(**{**TINY, "dims": (8, 12)})
    with pytest.raises(ValueError, match="modules"):
        Hourglass(**{**TINY, "modules": (1, 0, 3)})


def test_upsample_nearest_2x():
    x = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
    expected = np.asarray(x).repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(upsample_nearest_2x(x), expected)
