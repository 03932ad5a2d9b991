"""The official-checkpoint converter: key mapping, architecture inference, errors, files.

Numerical parity of converted official models is in test_parity.py.
"""

import ast
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from centernet_jax import assembly, config_checks, convert, torch_checkpoint, train
from configs import hourglass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PARITY = os.path.join(HERE, "fixtures", "parity")
SMOKE_PTH = os.path.join(HERE, "fixtures", "official", "smoke_hourglass.pth")
SMOKE_NPZ = os.path.join(HERE, "fixtures", "official", "smoke_hourglass.npz")


def _shapes_only_state(fixture):
    """The fixture's official keys with zero-cost (broadcast) arrays of the right shapes."""
    with open(os.path.join(PARITY, f"{fixture}.keys.json")) as f:
        keys = json.load(f)
    return {name: np.broadcast_to(np.zeros((), dtype), shape) for name, shape, dtype in keys}


def _smoke_state():
    return torch_checkpoint.load_state_dict(SMOKE_PTH)


# ----------------------------------------------------------------------------- key mapping


@pytest.mark.parametrize("key,ndim,expected", [
    ("kps.0.low2.low2.low2.low2.low2.3.bn2.bias", 1,
     ("params", ("backbone", "kps_0", "low2", "low2", "low2", "low2", "low2_3", "bn2", "bias"))),
    ("pre.1.skip.0.weight", 4, ("params", ("backbone", "pre_1", "skip_0", "kernel"))),
    ("inters_.0.1.running_var", 1, ("batch_stats", ("backbone", "inters__0_1", "var"))),
    ("hm_hp.1.1.weight", 4, ("params", ("heads_1", "hm_hp", "conv1x1", "kernel"))),
    ("wh.0.0.conv.bias", 1, ("params", ("heads_0", "wh", "conv3x3", "bias"))),
    ("layer2.0.downsample.1.running_mean", 1,
     ("batch_stats", ("backbone", "layer2_0", "downsample_1", "mean"))),
    ("deconv_layers.0.conv_offset_mask.weight", 4,
     ("params", ("backbone", "deconv_layers_0", "conv_offset_mask", "kernel"))),
    ("dla_up.ida_0.proj_1.actf.0.weight", 1,
     ("params", ("backbone", "dla_up", "ida_0", "proj_1", "actf_0", "scale"))),
    ("base.level3.tree1.tree2.conv1.weight", 4,
     ("params", ("backbone", "base", "level3", "tree1", "tree2", "conv1", "kernel"))),
    ("hps.0.weight", 4, ("params", ("heads_0", "hps", "conv3x3", "kernel"))),
    ("dep.2.bias", 1, ("params", ("heads_0", "dep", "conv1x1", "bias"))),
    ("cnvs.1.bn.num_batches_tracked", 0, None),
])
def test_key_mapping(key, ndim, expected):
    assert convert.official_key_to_flax(key, ndim) == expected


def test_unknown_key_is_a_clear_error():
    with pytest.raises(convert.ConversionError, match="neither"):
        convert.official_key_to_flax("some.module.deep.weight", 4)


def test_layouts():
    conv = np.arange(2 * 3 * 5 * 5).reshape(2, 3, 5, 5)  # OIHW
    assert convert.torch_to_flax_array(conv).shape == (5, 5, 3, 2)
    assert convert.torch_to_flax_array(conv)[1, 4, 2, 0] == conv[0, 2, 1, 4]
    assert convert.torch_to_flax_array(np.ones(3, np.float64)).dtype == np.float32
    assert convert.torch_to_flax_array(np.array(3, np.int64)).dtype == np.int64


# ----------------------------------------------------------------------------- inference


@pytest.mark.parametrize("fixture,model_config,heads", [
    ("ctdet_hourglass", {"backbone": "hourglass", "hourglass": dict(
        num_stacks=2, depth=5, dims=(256, 256, 384, 384, 384, 512), modules=(2, 2, 2, 2, 2, 4),
        pre_width=128, cnv_dim=256), "head_conv": 256}, {"hm": 80, "wh": 2, "reg": 2}),
    ("multi_pose_hourglass", None,
     {"hm": 1, "wh": 2, "hps": 34, "reg": 2, "hm_hp": 17, "hp_offset": 2}),
    ("ctdet_res_18", {"backbone": "resnet", "resnet": dict(
        depth=18, base_width=64, deformable=False, deconv_widths=(256, 256, 256)),
        "head_conv": 64}, {"hm": 80, "reg": 2, "wh": 2}),
    ("ctdet_resdcn_101", {"backbone": "resnet", "resnet": dict(
        depth=101, base_width=64, deformable=True, deconv_widths=(256, 128, 64)),
        "head_conv": 64}, {"hm": 80, "wh": 2, "reg": 2}),
    ("ddd_dla_34", {"backbone": "dla", "dla": dict(
        levels=(1, 1, 1, 2, 2, 1), channels=(16, 32, 64, 128, 256, 512)), "head_conv": 256},
     {"hm": 3, "dep": 1, "rot": 8, "dim": 3, "wh": 2, "reg": 2}),
])
def test_architecture_is_inferred_from_keys(fixture, model_config, heads):
    architecture = convert.infer_architecture(_shapes_only_state(fixture))
    if model_config is not None:
        assert architecture.model_config == model_config
    assert architecture.heads == heads
    assert architecture.kind == "full"


def test_triplets_backbone_needs_backbone_only_and_is_hourglass_52():
    state = _shapes_only_state("triplets_hg52")
    with pytest.raises(convert.ConversionError, match="backbone_only"):
        convert.convert_state_dict(state)
    architecture = convert.infer_architecture(
        {k: v for k, v in state.items() if not convert.TRIPLET_ROOTS.match(k.split(".")[0])},
        backbone_only=True)
    assert architecture.model_config["hourglass"]["num_stacks"] == 1
    assert architecture.model_config["hourglass"]["dims"] == (256, 256, 384, 384, 384, 512)
    assert architecture.kind == "backbone"
    # Every backbone key of the official CenterNet-52 maps onto our Hourglass-52.
    expected = convert.abstract_variables(architecture)
    for key, value in state.items():
        if convert.TRIPLET_ROOTS.match(key.split(".")[0]):
            continue
        target = convert.official_key_to_flax(key, value.ndim)
        if target is not None:
            flat = (target[0], *target[1])
            shape = value.shape
            assert expected.pop(flat) == (shape[2:] + shape[1:2] + shape[:1] if len(shape) == 4
                                          else shape), key
    assert not expected  # and nothing of the model is left without an official tensor


# ----------------------------------------------------------------------------- conversion


def test_smoke_checkpoint_converts_exactly():
    converted = convert.convert_state_dict(_smoke_state())
    config = hourglass.get_config("smoke")
    assert converted.architecture.heads == {"hm": 5, "wh": 2, "reg": 2}
    assert converted.architecture.model_config["hourglass"] == dict(config.model.hourglass)
    expected = dict(np.load(SMOKE_NPZ))
    flat = {"/".join((c, *p)): v for c in ("params", "batch_stats")
            for p, v in traverse_util.flatten_dict(converted.variables[c]).items()}
    assert set(flat) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(flat[name], value, err_msg=name)


def test_missing_unexpected_and_misshaped_keys_are_listed():
    state = _smoke_state()
    del state["kps.0.up1.0.bn1.running_var"]
    state["kps.0.extra.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    state["cnvs.1.conv.weight"] = np.zeros((8, 8, 5, 5), np.float32)
    with pytest.raises(convert.ConversionError) as error:
        convert.convert_state_dict(state)
    message = str(error.value)
    assert "1 missing from the checkpoint" in message
    assert "batch_stats/backbone/kps_0/up1_0/bn1/var" in message
    assert "kps.0.extra.conv1.weight" in message and "not in the model" in message
    assert "cnvs.1.conv.weight" in message and "shape differs" in message


def test_unused_imagenet_classifier_is_dropped_and_reported():
    state = _smoke_state()
    state["base.fc.weight"] = np.zeros((1000, 512, 1, 1), np.float32)
    converted = convert.convert_state_dict(state)
    assert converted.dropped == ["base.fc.weight"]


def test_backbone_only_drops_heads():
    converted = convert.convert_state_dict(_smoke_state(), backbone_only=True)
    assert converted.architecture.kind == "backbone"
    assert set(converted.variables["params"]) == {"backbone"}
    assert any(k.startswith("hm.") for k in converted.dropped)


# ----------------------------------------------------------------------------- files + init


@pytest.fixture(scope="module")
def converted_smoke(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("converted") / "smoke")
    converted = convert.convert(SMOKE_PTH, out)
    return out, converted


def test_save_and_load_round_trip(converted_smoke):
    out, converted = converted_smoke
    variables, metadata = convert.load(out)
    assert metadata["kind"] == "full" and metadata["heads"] == {"hm": 5, "wh": 2, "reg": 2}
    assert metadata["source"]["file"] == "smoke_hourglass.pth"
    assert len(metadata["source"]["sha256"]) == 64
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(converted.variables)):
        np.testing.assert_array_equal(a, b)


def _fresh_state(config):
    return jax.jit(assembly.assemble(config, steps_per_epoch=4).init)(jax.random.key(0))


def test_init_from_pretrained_loads_everything_and_keeps_dtypes(converted_smoke):
    out, converted = converted_smoke
    state = _fresh_state(hourglass.get_config("smoke"))
    params, batch_stats, counts = convert.init_from_pretrained(
        state.params, state.batch_stats, out)
    assert counts["fresh"] == 0
    for a, b in zip(jax.tree.leaves((params, batch_stats)),
                    jax.tree.leaves((converted.variables["params"],
                                     converted.variables["batch_stats"]))):
        assert a.dtype == jnp.float32
        np.testing.assert_array_equal(a, b)


def test_init_with_other_classes_needs_exclude(converted_smoke):
    out, _ = converted_smoke
    config = hourglass.get_config("smoke")
    config.dataset.num_classes = 3
    state = _fresh_state(config)
    with pytest.raises(convert.ConversionError, match="heads_0/hm/conv1x1/kernel"):
        convert.init_from_pretrained(state.params, state.batch_stats, out)
    params, _, counts = convert.init_from_pretrained(
        state.params, state.batch_stats, out, exclude=(r"heads_\d+/hm/conv1x1",))
    assert counts["fresh"] == 4  # kernel + bias of both stacks' class heatmaps
    np.testing.assert_array_equal(params["heads_1"]["hm"]["conv1x1"]["bias"],
                                  state.params["heads_1"]["hm"]["conv1x1"]["bias"])


def test_init_from_backbone_checkpoint_leaves_heads_fresh(tmp_path):
    out = str(tmp_path / "backbone")
    convert.convert(SMOKE_PTH, out, backbone_only=True)
    state = _fresh_state(hourglass.get_config("smoke"))
    params, _, counts = convert.init_from_pretrained(state.params, state.batch_stats, out)
    assert counts["loaded"] > 0 and counts["fresh"] == 2 * 3 * 4  # 2 stacks x 3 heads x 4
    np.testing.assert_array_equal(params["heads_0"]["wh"]["conv3x3"]["kernel"],
                                  state.params["heads_0"]["wh"]["conv3x3"]["kernel"])


@pytest.mark.slow
def test_main_trains_from_a_converted_checkpoint(converted_smoke, tmp_path):
    out, converted = converted_smoke
    config = hourglass.get_config("smoke")
    config.init.checkpoint = out
    config.dataset.num_train = config.train.batch_size  # one step
    config.eval.every_steps = 0
    workdir = str(tmp_path / "run")
    metrics = train.train_and_evaluate(config, workdir)
    assert "AP" in metrics


def test_init_checkpoint_that_is_not_converted_fails_fast(tmp_path):
    config = hourglass.get_config("smoke")
    config.init.checkpoint = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="centernet_jax.convert"):
        config_checks.validate_config(config)


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "centernet_jax.convert", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_command_line_converts_and_reports(tmp_path):
    result = _run_cli(f"--input={SMOKE_PTH}", f"--output={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-2000:]
    heads_line = next(line for line in result.stdout.splitlines() if line.startswith("heads:"))
    assert ast.literal_eval(heads_line.removeprefix("heads:").strip()) == {"hm": 5, "wh": 2, "reg": 2}
    assert os.path.exists(tmp_path / "out" / convert.CONVERSION_FILE)


def test_command_line_corrupt_file_is_one_clear_line(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    data = bytearray(open(SMOKE_PTH, "rb").read())
    corrupt.write_bytes(bytes(data[: len(data) // 2]))
    result = _run_cli(f"--input={corrupt}", f"--output={tmp_path / 'out'}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr and "corrupt.pth" in result.stderr
