"""Measuring helpers shared by the benchmarks: wall-clock medians and XLA's own counts.

Timings are medians over repeated calls after warm-up, each call waited for with
``block_until_ready``. FLOPs, bytes and memory come from the compiled executable
(``jit(f).lower(...).compile()``): what XLA counts, not an analytic model.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax


def median_seconds(fn: Callable[..., Any], *args: Any, warmup: int = 2, iters: int = 10) -> float:
    """Median wall time of ``fn(*args)`` (waited for) over ``iters`` calls after ``warmup``."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled_cost(compiled: Any) -> dict[str, float]:
    """XLA's counts for a compiled executable: FLOPs, bytes accessed, and the temporary
    buffer size (scratch memory beyond inputs/outputs; -1 where not reported)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    cost = cost or {}
    memory = compiled.memory_analysis()
    return {"flops": float(cost.get("flops", 0.0)),
            "bytes": float(cost.get("bytes accessed", 0.0)),
            "temp_bytes": float(memory.temp_size_in_bytes) if memory is not None else -1.0}


def compiled_memory(compiled: Any) -> dict[str, int] | None:
    """Device memory the executable needs, from ``memory_analysis()``, in bytes.

    ``total`` = temp + argument + output - alias: the live bytes while it runs (an output
    that reuses a donated argument's buffer is counted once). None if not reported.
    """
    memory = compiled.memory_analysis()
    if memory is None:
        return None
    parts = {"temp": int(memory.temp_size_in_bytes),
             "argument": int(memory.argument_size_in_bytes),
             "output": int(memory.output_size_in_bytes),
             "alias": int(memory.alias_size_in_bytes)}
    parts["total"] = parts["temp"] + parts["argument"] + parts["output"] - parts["alias"]
    return parts


def device_peak_bytes(device: jax.Device | None = None) -> int | None:
    """The device's high-water mark ``memory_stats()["peak_bytes_in_use"]`` since the
    process started (process-wide, never reset), or None where the backend (CPU) has none."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # pylint: disable=broad-except  (backends without the query raise)
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])
