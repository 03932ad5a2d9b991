"""Tests for the native JAX DCNv2 (`centernet_jax.models.dcn`).

The reference is a slow per-pixel, per-tap, per-corner NumPy float64 loop written after the
official CUDA kernel's semantics (tap t = i*k + j, offset channel 2t = dy and 2t+1 = dx,
a sample contributes only if -1 < y < H and -1 < x < W, each of its four corners only if it
lies inside the image). The official `dcnv2_unit` fixture pins the layout end to end.
"""

import math
import os

import jax
import jax.numpy as jnp
from jax import lax
from jax import test_util as jtu
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import pytest

from centernet_jax.models.dcn import DeformableConv, deform_sample, modulated_deform_conv
from tests import parity_weights

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "parity")


def _output_size(size, k, stride, pad, dilation):
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def reference_dcn(x, offset, mask, kernel, bias, *, stride=1, pad=None, dilation=1):
    """DCNv2 forward, one output pixel, tap and corner at a time (float64, NHWC / HWIO)."""
    x, offset, mask, kernel = (np.asarray(a, np.float64) for a in (x, offset, mask, kernel))
    batch, height, width, _ = x.shape
    k = kernel.shape[0]
    pad = (k - 1) // 2 * dilation if pad is None else pad
    out_h = _output_size(height, k, stride, pad, dilation)
    out_w = _output_size(width, k, stride, pad, dilation)
    out = np.zeros((batch, out_h, out_w, kernel.shape[3]))
    for b in range(batch):
        for oh in range(out_h):
            for ow in range(out_w):
                acc = np.zeros(kernel.shape[3]) if bias is None else np.array(bias, np.float64)
                for i in range(k):
                    for j in range(k):
                        t = i * k + j
                        y = oh * stride - pad + i * dilation + offset[b, oh, ow, 2 * t]
                        xx = ow * stride - pad + j * dilation + offset[b, oh, ow, 2 * t + 1]
                        value = np.zeros(x.shape[3])
                        if -1 < y < height and -1 < xx < width:
                            y_low, x_low = math.floor(y), math.floor(xx)
                            ly, lx = y - y_low, xx - x_low
                            for cy, wy in ((y_low, 1 - ly), (y_low + 1, ly)):
                                for cx, wx in ((x_low, 1 - lx), (x_low + 1, lx)):
                                    if 0 <= cy <= height - 1 and 0 <= cx <= width - 1:
                                        value += wy * wx * x[b, cy, cx]
                        acc += mask[b, oh, ow, t] * (value @ kernel[i, j])
                out[b, oh, ow] = acc
    return out


def _random_offsets(rng, shape, height, width, *, stride, pad, dilation, k, scale):
    """Offsets mixing continuous values up to several px, integer positions, and positions
    landing exactly on -1, 0, H-1 / W-1 and H / W (the gate and corner edge cases)."""
    batch, out_h, out_w = shape
    taps = k * k
    tap_i, tap_j = np.divmod(np.arange(taps), k)
    base_y = (np.arange(out_h) * stride - pad)[:, None] + tap_i * dilation  # [Ho, T]
    base_x = (np.arange(out_w) * stride - pad)[:, None] + tap_j * dilation  # [Wo, T]
    base = np.stack(np.broadcast_arrays(base_y[:, None, :], base_x[None, :, :]), -1)
    base = np.broadcast_to(base, (batch, out_h, out_w, taps, 2)).astype(np.float64)
    limits = np.array([height, width], np.float64)
    continuous = rng.normal(size=base.shape) * scale
    integer = rng.integers(-3, 4, size=base.shape).astype(np.float64)
    edge_targets = np.stack([np.full_like(base, -1.0), np.zeros_like(base),
                             np.broadcast_to(limits - 1, base.shape),
                             np.broadcast_to(limits, base.shape)])
    edge = np.take_along_axis(edge_targets, rng.integers(0, 4, (1,) + base.shape), 0)[0] - base
    kind = rng.integers(0, 3, base.shape)
    offset = np.where(kind == 0, continuous, np.where(kind == 1, integer, edge))
    return offset.reshape(batch, out_h, out_w, 2 * taps), base + offset


REFERENCE_CASES = [
    # (batch, H, W, C_in, C_out, k, stride, dilation, pad, offset scale)
    (2, 7, 6, 3, 4, 3, 1, 1, None, 3.0),
    (1, 9, 8, 2, 3, 3, 2, 1, None, 2.0),
    (2, 8, 7, 3, 2, 3, 1, 2, None, 4.0),
    (1, 5, 9, 4, 5, 1, 1, 1, None, 2.0),
    (1, 10, 7, 2, 3, 3, 2, 2, None, 3.0),
    (1, 6, 5, 3, 2, 3, 1, 1, 0, 1.5),
]


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_matches_reference_loop_x64(case):
    batch, height, width, c_in, c_out, k, stride, dilation, pad, scale = case
    rng = np.random.default_rng(sum(case[:6]))
    pad_value = (k - 1) // 2 * dilation if pad is None else pad
    out_h = _output_size(height, k, stride, pad_value, dilation)
    out_w = _output_size(width, k, stride, pad_value, dilation)
    x = rng.normal(size=(batch, height, width, c_in))
    offset, positions = _random_offsets(rng, (batch, out_h, out_w), height, width,
                                        stride=stride, pad=pad_value, dilation=dilation, k=k,
                                        scale=scale)
    mask = rng.uniform(size=(batch, out_h, out_w, k * k))
    kernel = rng.normal(size=(k, k, c_in, c_out))
    bias = rng.normal(size=(c_out,))
    expected = reference_dcn(x, offset, mask, kernel, bias, stride=stride, pad=pad,
                             dilation=dilation)
    with jax.enable_x64(True):
        fn = jax.jit(lambda *a: modulated_deform_conv(*a, strides=stride, padding=pad,
                                                      dilation=dilation))
        got = fn(x, offset, mask, kernel, bias)
        assert got.dtype == jnp.float64
        got = np.asarray(got)
    assert got.shape == expected.shape == (batch, out_h, out_w, c_out)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    # The cases do cover the edge cases: positions exactly at -1 and at H / W (gated off),
    # in (-1, 0) (one corner inside), fully outside, and non-integer inside.
    limits = np.array([height, width])
    assert np.any(positions == -1) and np.any(positions == limits)
    assert np.any((positions > -1) & (positions < 0))
    assert np.any((positions < -1) | (positions > limits))
    assert np.any((positions != np.round(positions)) & (positions > 0) & (positions < limits - 1))


def test_reference_is_not_trivially_satisfied():
    """The reference distinguishes the (dy, dx) channel order and the mask."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 6, 6, 2))
    offset = rng.normal(size=(1, 6, 6, 18)) * 2
    mask = rng.uniform(size=(1, 6, 6, 9))
    kernel = rng.normal(size=(3, 3, 2, 2))
    base = reference_dcn(x, offset, mask, kernel, None)
    swapped = offset.reshape(1, 6, 6, 9, 2)[..., ::-1].reshape(1, 6, 6, 18)
    assert np.abs(reference_dcn(x, swapped, mask, kernel, None) - base).max() > 0.1
    assert np.abs(reference_dcn(x, offset, np.ones_like(mask), kernel, None) - base).max() > 0.1


@pytest.mark.parametrize("k, stride, dilation", [(3, 1, 1), (3, 2, 1), (3, 1, 2), (3, 2, 2),
                                                 (1, 1, 1), (5, 2, 1)])
def test_zero_offsets_unit_mask_is_convolution(k, stride, dilation):
    rng = np.random.default_rng(k * 10 + stride + dilation)
    pad = (k - 1) // 2 * dilation
    x = rng.normal(size=(2, 9, 8, 3))
    kernel = rng.normal(size=(k, k, 3, 4))
    out_h, out_w = (_output_size(s, k, stride, pad, dilation) for s in (9, 8))
    offset = np.zeros((2, out_h, out_w, 2 * k * k))
    mask = np.ones((2, out_h, out_w, k * k))
    with jax.enable_x64(True):
        got = jax.jit(lambda *a: modulated_deform_conv(*a, strides=stride, dilation=dilation))(
            x, offset, mask, kernel)
        want = lax.conv_general_dilated(
            x, kernel, (stride, stride), ((pad, pad), (pad, pad)), rhs_dilation=(dilation,) * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2])
def test_fresh_module_is_half_conv_plus_bias(stride):
    rng = np.random.default_rng(stride)
    x = jnp.asarray(rng.normal(size=(2, 10, 9, 5)), jnp.float32)
    module = DeformableConv(6, strides=stride)
    variables = jax.jit(module.init)(jax.random.key(0), x)
    params = variables["params"]
    assert jax.tree.map(jnp.shape, params) == {
        "kernel": (3, 3, 5, 6), "bias": (6,),
        "conv_offset_mask": {"kernel": (3, 3, 5, 27), "bias": (27,)}}
    np.testing.assert_array_equal(params["conv_offset_mask"]["kernel"], 0)
    np.testing.assert_array_equal(params["conv_offset_mask"]["bias"], 0)
    # torch's default U(+-1/sqrt(fan_in)) kernel init.
    bound = 1 / math.sqrt(9 * 5)
    assert np.abs(params["kernel"]).max() <= bound and np.abs(params["kernel"]).max() > bound / 2
    params = {**params, "bias": jnp.asarray(rng.normal(size=6), jnp.float32)}
    with jax.default_matmul_precision("highest"):
        got = jax.jit(module.apply)({"params": params}, x)
        conv = lax.conv_general_dilated(x, params["kernel"], (stride, stride), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert got.shape == (2, -(-10 // stride), -(-9 // stride), 6)
    np.testing.assert_allclose(got, 0.5 * conv + params["bias"], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------
# The official DCN(8 -> 6, 3x3) unit fixture.


def _unit_fixture():
    keys, state, io = parity_weights.load_fixture("dcnv2_unit", root=FIXTURES)
    assert [name for name, _, _ in keys] == ["weight", "bias", "conv_offset_mask.weight",
                                             "conv_offset_mask.bias"]
    nhwc = lambda a: np.transpose(a, (0, 2, 3, 1))
    hwio = lambda w: np.transpose(w, (2, 3, 1, 0))
    params = {"kernel": hwio(state["weight"]), "bias": state["bias"],
              "conv_offset_mask": {"kernel": hwio(state["conv_offset_mask.weight"]),
                                   "bias": state["conv_offset_mask.bias"]}}
    arrays = {name: nhwc(io[name]) for name in ("input", "offset", "mask", "output")}
    return params, arrays, float(io["output__max_abs"])


@pytest.mark.parametrize("x64", [False, True])
def test_official_unit_fixture(x64):
    params, io, max_abs = _unit_fixture()
    dtype = np.float64 if x64 else np.float32
    tol = (1e-6 if x64 else 2e-4) * max_abs
    cast = lambda tree: jax.tree.map(lambda a: np.asarray(a, dtype), tree)
    params, io = cast(params), cast(io)
    module = DeformableConv(6, kernel_size=3, dtype=dtype, param_dtype=dtype)
    with jax.enable_x64(x64), jax.default_matmul_precision("highest"):
        abstract = jax.eval_shape(module.init, jax.random.key(0), io["input"])["params"]
        assert jax.tree.map(lambda a: (a.shape, a.dtype), abstract) == jax.tree.map(
            lambda a: (a.shape, a.dtype), params)
        functional = jax.jit(modulated_deform_conv)(io["input"], io["offset"], io["mask"],
                                                    params["kernel"], params["bias"])
        layer, state = jax.jit(lambda p, x: module.apply(
            {"params": p}, x, capture_intermediates=True))(params, io["input"])
        assert functional.dtype == layer.dtype == dtype
        functional, layer = np.asarray(functional), np.asarray(layer)
        offset_mask = np.asarray(state["intermediates"]["conv_offset_mask"]["__call__"][0])
    assert np.abs(functional - io["output"]).max() <= tol
    assert np.abs(layer - io["output"]).max() <= tol
    # The module splits conv_offset_mask's 27 channels as 18 offsets, then 9 mask logits.
    np.testing.assert_allclose(offset_mask[..., :18], io["offset"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(jax.nn.sigmoid(offset_mask[..., 18:]), io["mask"], rtol=0,
                               atol=1e-6)
    # The fixture is sensitive to the layout: reading offsets as (dx, dy) fails by far.
    swapped = io["offset"].reshape(2, 11, 10, 9, 2)[..., ::-1].reshape(2, 11, 10, 18)
    with jax.enable_x64(x64):
        wrong = jax.jit(modulated_deform_conv)(io["input"], swapped, io["mask"],
                                               params["kernel"], params["bias"])
    assert np.abs(np.asarray(wrong) - io["output"]).max() > 100 * tol


# ---------------------------------------------------------------------------------------
# Gradients and transformations.


def _smooth_point(rng, batch=1, height=6, width=5, c_in=2, c_out=3):
    """Inputs whose sample positions have fractional parts in [0.2, 0.8] (the bilinear
    kernel is smooth there), some of them outside the image."""
    x = rng.normal(size=(batch, height, width, c_in))
    integer = rng.integers(-2, 3, size=(batch, height, width, 18))
    offset = integer + rng.uniform(0.2, 0.8, size=integer.shape)
    mask = rng.uniform(0.1, 0.9, size=(batch, height, width, 9))
    kernel = rng.normal(size=(3, 3, c_in, c_out))
    bias = rng.normal(size=(c_out,))
    return x, offset, mask, kernel, bias


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_check_grads_x64(mode):
    args = _smooth_point(np.random.default_rng(7))
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(a) for a in args)
        jtu.check_grads(jax.jit(modulated_deform_conv), args, order=1, modes=[mode],
                                  eps=1e-4, atol=1e-5, rtol=1e-5)
        # Every argument influences the output.
        grads = jax.jit(jax.grad(lambda *a: jnp.sum(modulated_deform_conv(*a) ** 2),
                                 argnums=range(5)))(*args)
    for grad in grads:
        assert np.abs(np.asarray(grad)).max() > 1e-3


def test_module_gradients_reach_offset_conv():
    """From the official zero init, the offset/mask conv gets a gradient (so it can learn)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 8, 7, 4)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(2, 8, 7, 5)), jnp.float32)
    module = DeformableConv(5)
    params = jax.jit(module.init)(jax.random.key(0), x)["params"]

    @jax.jit
    def loss_grad(p):
        return jax.grad(lambda p: jnp.mean((module.apply({"params": p}, x) - target) ** 2))(p)

    grads = loss_grad(params)
    norms = {jax.tree_util.keystr(path): float(jnp.linalg.norm(g))
             for path, g in jax.tree_util.tree_leaves_with_path(grads)}
    assert len(norms) == 4 and all(n > 1e-4 for n in norms.values()), norms


def test_jit_and_vmap_over_extra_axis():
    rng = np.random.default_rng(11)
    stack = [_smooth_point(rng, batch=2) for _ in range(3)]
    x, offset, mask, kernel, bias = (np.stack([s[i] for s in stack]).astype(np.float32)
                                     for i in range(5))
    with jax.default_matmul_precision("highest"):
        batched = jax.jit(jax.vmap(modulated_deform_conv))(x, offset, mask, kernel, bias)
        singles = [jax.jit(modulated_deform_conv)(*(a[n] for a in (x, offset, mask, kernel, bias)))
                   for n in range(3)]
    assert batched.shape == (3, 2, 6, 5, 3)
    np.testing.assert_allclose(batched, np.stack(singles), rtol=0, atol=1e-5)
    expected = reference_dcn(x[1], offset[1], mask[1], kernel[1], bias[1])
    np.testing.assert_allclose(batched[1], expected, rtol=0, atol=1e-4)


def test_bfloat16_module_close_to_float32():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 12, 11, 8)), jnp.float32)
    module32 = DeformableConv(6)
    params = jax.jit(module32.init)(jax.random.key(0), x)["params"]
    # Non-trivial offsets (~1 px) and masks.
    params["conv_offset_mask"]["kernel"] = jnp.asarray(
        rng.normal(size=(3, 3, 8, 27)) * 0.15, jnp.float32)
    module16 = DeformableConv(6, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    params16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    with jax.default_matmul_precision("highest"):
        want = jax.jit(module32.apply)({"params": params}, x)
    got = jax.jit(module16.apply)({"params": params16}, x.astype(jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    scale = float(jnp.abs(want).max())
    error = float(jnp.abs(got.astype(jnp.float32) - want).max())
    assert error <= 3e-2 * scale, (error, scale)


def test_bfloat16_sampling_coordinates_stay_float32():
    """At column 257 bfloat16 resolves only even numbers: 257 + 0.5 must still sample
    halfway between columns 257 and 258, so coordinates must be computed in float32."""
    width = 300
    row = (np.arange(width) % 4).astype(np.float32)  # exact in bfloat16
    x = jnp.asarray(row.reshape(1, 1, width, 1), jnp.bfloat16)
    offset = jnp.zeros((1, 1, width, 2), jnp.bfloat16).at[..., 1].set(0.5)  # dx = 0.5
    mask = jnp.ones((1, 1, width, 1), jnp.bfloat16)
    sampled = jax.jit(deform_sample, static_argnames="kernel_size")(
        x, offset, mask, kernel_size=1)
    assert sampled.dtype == jnp.bfloat16 and sampled.shape == (1, 1, width, 1, 1)
    expected = 0.5 * (row + np.append(row[1:], 0.0))  # the last sample's right corner is 0
    np.testing.assert_array_equal(np.asarray(sampled, np.float32).ravel(), expected)


def test_batch_sharded_over_devices_matches_unsharded():
    devices = jax.devices()
    assert len(devices) == 8, "tests/conftest.py sets up 8 CPU devices"
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    batch = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    rng = np.random.default_rng(13)
    x, offset, mask, kernel, bias = (a.astype(np.float32) for a in _smooth_point(rng, batch=8))
    fn = jax.jit(modulated_deform_conv)
    sharded_fn = jax.jit(modulated_deform_conv,
                         in_shardings=(batch, batch, batch, replicated, replicated),
                         out_shardings=batch)
    with jax.default_matmul_precision("highest"):
        want = fn(x, offset, mask, kernel, bias)
        got = sharded_fn(x, offset, mask, kernel, bias)
    assert len(got.sharding.device_set) == 8
    assert got.addressable_shards[0].data.shape == (1,) + want.shape[1:]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
