"""The converter + flax models reproduce the official PyTorch models' outputs.

Fixtures (`tests/fixtures/parity/`): the official state-dict keys and shapes, the official
models' head outputs on a fixed input, and a deterministic weight recipe
(`tests/parity_weights.py`). Each test generates the weights, converts them with
`convert.convert_state_dict` (which also infers the architecture), runs the flax model and
compares every head output, NCHW -> NHWC, within `tol * max_abs` of that head.
"""

import os
import time

import jax
import numpy as np
import pytest

from centernet_jax import convert
from centernet_jax.models import dcn, detector
from centernet_jax.models.heads import HeadSpec
from tests import parity_weights

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "parity")
# (fixture, tolerance relative to each head's max |output|)
MODELS = [
    ("ctdet_res_18", 2e-4),
    ("ctdet_resdcn_18", 2e-4),
    ("ctdet_resdcn_101", 2e-4),
    ("ctdet_dla_34", 5e-4),  # DCN sampling in the DLA neck amplifies float32 rounding
    ("multi_pose_dla_34", 5e-4),
    ("ddd_dla_34", 5e-4),
    ("ctdet_hourglass", 2e-4),
    ("multi_pose_hourglass", 2e-4),
]


def _load(name):
    return parity_weights.load_fixture(name, root=FIXTURES)


def _relative_errors(outputs, io):
    """{output name: max|flax - official| / max|official|} over every stored head output."""
    errors = {}
    for stack, heads in enumerate(outputs):
        for head, value in heads.items():
            name = head if len(outputs) == 1 else f"{head}__stack{stack}"
            reference = io[name].transpose(0, 2, 3, 1)
            assert value.shape == reference.shape, name
            errors[name] = float(np.max(np.abs(np.asarray(value) - reference))
                                 / io[f"{name}__max_abs"])
    return errors


@pytest.mark.parametrize("name,tol", MODELS, ids=[m[0] for m in MODELS])
def test_official_model_parity(name, tol, record_property):
    keys, state, io = _load(name)
    start = time.time()
    converted = convert.convert_state_dict(state)
    architecture = converted.architecture
    # The converted weights replace every initial value: the heads' init does not matter.
    heads = {name: HeadSpec(channels) for name, channels in architecture.heads.items()}
    model = detector.build_model(architecture.config_dict(), heads)
    image = io["input"].transpose(0, 2, 3, 1)
    with jax.default_matmul_precision("highest"):
        outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))(converted.variables, image)
    errors = _relative_errors(outputs, io)
    expected_outputs = {k for k in io if k not in ("input", "image_bgr_uint8")
                        and "__" not in k.replace("__stack", "")
                        and not k.startswith(("norm_", "weights_"))}
    assert set(errors) == expected_outputs  # every official head is compared
    record_property("max_relative_error", max(errors.values()))
    print(f"{name}: worst {max(errors, key=errors.get)} {max(errors.values()):.2e} "
          f"({time.time() - start:.1f} s)")
    assert max(errors.values()) <= tol, errors
    # The official parameter count (model.parameters(), without DLA's unused fc).
    fc = sum(int(np.prod(s)) for k, s, _ in keys if convert.IGNORED_KEYS.match(k))
    official = sum(int(np.prod(s)) for k, s, _ in keys if not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked")))
    assert converted.num_params == official - fc


def test_dcnv2_unit_parity():
    keys, state, io = _load("dcnv2_unit")
    params = {
        "kernel": convert.torch_to_flax_array(state["weight"]),
        "bias": state["bias"],
        "conv_offset_mask": {"kernel": convert.torch_to_flax_array(state["conv_offset_mask.weight"]),
                             "bias": state["conv_offset_mask.bias"]},
    }
    layer = dcn.DeformableConv(features=state["bias"].shape[0])
    x = io["input"].transpose(0, 2, 3, 1)
    with jax.default_matmul_precision("highest"):
        out = layer.apply({"params": params}, x)
    error = np.max(np.abs(np.asarray(out) - io["output"].transpose(0, 2, 3, 1)))
    assert error <= 2e-4 * io["output__max_abs"]
