r"""Micro-benchmarks of model pieces, on whatever device JAX sees.

  python -m centernet_jax.bench --what=dcn [--quick] [--json=/tmp/dcn.json]

Benchmarks live in a small registry: `@register("name")` on a function `quick -> dict`
whose result holds `"rows"` (a list of flat dicts, one per measured case, printed as a
table) plus any run-wide fields. `run(what, quick)` returns that dict with the device
kind added; `main` prints the table and optionally writes the dict as JSON.

Timings are wall-clock medians over repeated calls of a jitted function after warm-up,
each call waited for with `block_until_ready`. FLOPs and bytes come from XLA's own
`cost_analysis()` of the compiled executable (what XLA counts, not an analytic model).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Callable

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from centernet_jax.models.dcn import DeformableConv

BenchFn = Callable[[bool], dict[str, Any]]
BENCHMARKS: dict[str, BenchFn] = {}


def register(name: str) -> Callable[[BenchFn], BenchFn]:
    """Adds `fn(quick) -> {"rows": [...], ...}` to `BENCHMARKS` under `name`."""

    def add(fn: BenchFn) -> BenchFn:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = fn
        return fn

    return add


def median_seconds(fn: Callable[..., Any], *args: Any, warmup: int = 2, iters: int = 10) -> float:
    """Median wall time of `fn(*args)` (waited for) over `iters` calls after `warmup` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled_cost(compiled: Any) -> dict[str, float]:
    """XLA's counts for a compiled executable (`jit(f).lower(...).compile()`): FLOPs, bytes
    accessed, and the temporary buffer size (peak scratch memory beyond inputs/outputs;
    -1 where the backend does not report it)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    cost = cost or {}
    memory = compiled.memory_analysis()
    return {"flops": float(cost.get("flops", 0.0)),
            "bytes": float(cost.get("bytes accessed", 0.0)),
            "temp_bytes": float(memory.temp_size_in_bytes) if memory is not None else -1.0}


# ---------------------------------------------------------------------------------------
# dcn: DeformableConv (DCNv2) vs a plain 3x3 convolution of the same shape.

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


# ---------------------------------------------------------------------------------------


def run(what: str, quick: bool = False) -> dict[str, Any]:
    """Runs benchmark `what`; its result plus `what`, `quick`, `device_kind`, `backend`."""
    if what not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {what!r}; known: {sorted(BENCHMARKS)}")
    result = BENCHMARKS[what](quick)
    device = jax.devices()[0]
    return {"what": what, "quick": quick, "device_kind": device.device_kind,
            "backend": jax.default_backend(), **result}


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of flat dicts as an aligned text table (floats with 4 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
             for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


FLAGS = flags.FLAGS
flags.DEFINE_string("what", "dcn", "Benchmark to run; one of the registered names.")
flags.DEFINE_bool("quick", False, "Small shapes and few iterations (seconds, for tests).")
flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    result = run(FLAGS.what, FLAGS.quick)
    notes = {k: v for k, v in result.items() if k != "rows" and k != "note"}
    print(" ".join(f"{k}={v}" for k, v in notes.items()))
    if "note" in result:
        print(f"note: {result['note']}")
    print(format_table(result["rows"]))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main)
