"""dcn: DeformableConv (DCNv2) vs a plain 3x3 convolution of the same shape.

  python -m centernet_jax.bench --what=dcn [--quick]
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from centernet_jax.benchmarks.registry import register
from centernet_jax.benchmarks.timing import compiled_cost, median_seconds
from centernet_jax.models.dcn import DeformableConv

# (batch, height, width, in_channels, out_channels): the DCN necks of ResNet-DCN / DLA at
# 512x512 input (stride-4 map 128x128 with 64 channels, 32x32 with 128 ... ).
DCN_SHAPES = ((8, 64, 64, 64, 64), (8, 32, 32, 128, 128), (2, 128, 128, 64, 64))
DCN_QUICK_SHAPES = ((2, 16, 12, 16, 8),)


def _perturb_offsets(params: Any, key: jax.Array, scale: float = 0.25) -> Any:
    """Gives `conv_offset_mask` random weights (offsets ~ 1 px) instead of its zero init.

    With the zero init every sample lands on an integer position; random offsets make the
    timed work the realistic one (same ops, but no accidental regularity).
    """
    kernel = params["params"]["conv_offset_mask"]["kernel"]
    fan_in = np.prod(kernel.shape[:-1])
    noise = jax.random.normal(key, kernel.shape, kernel.dtype) * (scale * 4.0 / np.sqrt(fan_in))
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: noise if jax.tree_util.keystr(path).endswith(
            "['conv_offset_mask']['kernel']") else leaf, params)


def _time_layer(module: nn.Module, params: Any, x: jax.Array, iters: int) -> dict[str, float]:
    """Forward and forward+backward (grads of params and input) timings and XLA costs.

    Times in ms, XLA counts in GFLOP and MB (`*_mbyte`: bytes accessed; `*_temp_mbyte`:
    temporary buffers, i.e. the scratch memory the executable needs).
    """
    cotangent = jax.random.normal(jax.random.key(2), jax.eval_shape(module.apply, params, x).shape,
                                  x.dtype)

    def loss(p, inputs):
        return jnp.vdot(module.apply(p, inputs), cotangent)

    results = {}
    for name, fn in (("fwd", module.apply), ("fwd_bwd", jax.grad(loss, argnums=(0, 1)))):
        compiled = jax.jit(fn).lower(params, x).compile()
        cost = compiled_cost(compiled)
        results[f"{name}_ms"] = 1e3 * median_seconds(compiled, params, x, iters=iters)
        results[f"{name}_gflop"] = cost["flops"] / 1e9
        results[f"{name}_mbyte"] = cost["bytes"] / 1e6
        results[f"{name}_temp_mbyte"] = cost["temp_bytes"] / 1e6
    return results


@register("dcn")
def bench_dcn(quick: bool) -> dict[str, Any]:
    """DeformableConv 3x3 vs nn.Conv 3x3 (same shape, float32), forward and forward+backward.

    One row per (shape, layer); `fwd_ratio` / `fwd_bwd_ratio` are time(layer) / time(conv)
    for the same shape (1 for the conv rows); `matmul_gflop` is the analytic forward count
    of the dense contractions (for the DCN: its [C, O] taps plus the offset/mask conv).
    """
    shapes = DCN_QUICK_SHAPES if quick else DCN_SHAPES
    iters = 3 if quick else 10
    rows = []
    for batch, height, width, c_in, c_out in shapes:
        x = jax.random.normal(jax.random.key(0), (batch, height, width, c_in), jnp.float32)
        dcn = DeformableConv(c_out, kernel_size=3)
        dcn_params = _perturb_offsets(jax.jit(dcn.init)(jax.random.key(1), x), jax.random.key(3))
        conv = nn.Conv(c_out, (3, 3), padding=((1, 1), (1, 1)))
        conv_params = jax.jit(conv.init)(jax.random.key(1), x)
        shape = f"{batch}x{height}x{width}x{c_in}->{c_out}"
        # Multiply-adds of the dense contractions (the offset/mask conv has 27 outputs).
        contraction = 2 * batch * height * width * 9 * c_in / 1e9
        conv_row = {"shape": shape, "layer": "conv", "matmul_gflop": contraction * c_out,
                    **_time_layer(conv, conv_params, x, iters)}
        dcn_row = {"shape": shape, "layer": "dcn", "matmul_gflop": contraction * (c_out + 27),
                   **_time_layer(dcn, dcn_params, x, iters)}
        for row in (dcn_row, conv_row):
            row["fwd_ratio"] = row["fwd_ms"] / conv_row["fwd_ms"]
            row["fwd_bwd_ratio"] = row["fwd_bwd_ms"] / conv_row["fwd_bwd_ms"]
        rows += [dcn_row, conv_row]
    note = ("XLA's cost_analysis counts a while-loop body once: DeformableConv scans over its "
            "9 taps, so its XLA flops/bytes undercount the tap work (matmul_gflop is exact).")
    return {"dtype": "float32", "iters": iters, "note": note, "rows": rows}
