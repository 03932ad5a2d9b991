"""The benchmark registry: ``@register(name)`` functions ``(quick, **options) -> dict``.

A benchmark's result holds ``"rows"`` (flat dicts, one per measured case, printed as a
table) plus any run-wide fields; optional ``"table_columns"`` picks the printed columns
(the JSON keeps every field) and optional ``"summary"`` is a second, shorter table.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Sequence

import jax

BenchFn = Callable[..., dict[str, Any]]
BENCHMARKS: dict[str, BenchFn] = {}

# Modules under centernet_jax.benchmarks that register a benchmark when imported.
BUILTIN_MODULES = ("dcn", "models", "memory", "input_pipeline", "startup")


def register(name: str) -> Callable[[BenchFn], BenchFn]:
    """Adds ``fn(quick, **options) -> {"rows": [...], ...}`` to ``BENCHMARKS``."""

    def add(fn: BenchFn) -> BenchFn:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = fn
        return fn

    return add


def load_builtin() -> None:
    """Imports the built-in benchmark modules (each registers itself once)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"centernet_jax.benchmarks.{module}")


def run(what: str, quick: bool = False, **options: Any) -> dict[str, Any]:
    """Runs benchmark ``what``; its result plus ``what``, ``quick``, ``device_kind``,
    ``backend``. ``options`` go to the benchmark function as keyword arguments."""
    load_builtin()
    if what not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {what!r}; known: {sorted(BENCHMARKS)}")
    result = BENCHMARKS[what](quick, **options)
    device = jax.devices()[0]
    return {"what": what, "quick": quick, "device_kind": device.device_kind,
            "backend": jax.default_backend(), **result}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of flat dicts as an aligned text table (floats with 4 significant digits,
    None as "-"). ``columns`` defaults to every key, in first-seen order."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)
