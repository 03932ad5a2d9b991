r"""Benchmarks of model pieces and whole models, on whatever device JAX sees.

  python -m centernet_jax.bench --what=dcn [--quick] [--json=/tmp/dcn.json]
  python -m centernet_jax.bench --what=models [--quick] [--batch=16] [--iters=10] \
      [--configs=configs/hourglass.py,configs/resnet18.py:coco_nodcn] [--json=/tmp/m.json]
  python -m centernet_jax.bench --what=input [--quick] [--images=96] [--batch=16]
  python -m centernet_jax.bench --what=startup [--quick] [--images=5000]

Benchmarks live in a small registry (``centernet_jax.benchmarks.registry``):
``@register("name")`` on a function ``(quick, **options) -> dict`` whose result holds
``"rows"`` (a list of flat dicts, one per measured case, printed as a table) plus any
run-wide fields. ``run(what, quick, **options)`` returns that dict with the device kind
added; ``main`` prints the table(s) and optionally writes the whole dict as JSON.

  dcn     DeformableConv vs a plain 3x3 conv (``centernet_jax.benchmarks.dcn``).
  models  per backbone config: detect latency / throughput (plain, flip), train-step
          images/s, FLOPs, memory, decode and target-rendering shares, and NumPy
          baselines of the official decode and renderer (``centernet_jax.benchmarks.models``).
  memory  per-device memory of the compiled train step, float32 / bfloat16 x data-parallel /
          FSDP (``centernet_jax.benchmarks.memory``).
  input   host input pipeline per core (JPEG decode + TrainTransform + batching), with the
          targets rendered on the device vs on the host as the official loader does: CPU
          ms per example, images/s per core, host->device bytes per example
          (``centernet_jax.benchmarks.input_pipeline``).
  startup how soon a run reports a missing dataset, and how fast a COCO-format json opens
          (``centernet_jax.benchmarks.startup``).

Timings are wall-clock medians over repeated calls of a jitted function after warm-up,
each call waited for with ``block_until_ready``. FLOPs and bytes come from XLA's own
``cost_analysis()`` of the compiled executable (what XLA counts, not an analytic model).
"""

from __future__ import annotations

import json
from typing import Any

from centernet_jax import paths
# Importing a benchmark module registers its benchmark.
from centernet_jax.benchmarks.dcn import DCN_QUICK_SHAPES, DCN_SHAPES, bench_dcn
from centernet_jax.benchmarks.models import bench_models
from centernet_jax.benchmarks.registry import BENCHMARKS, format_table, register, run
from centernet_jax.benchmarks.timing import compiled_cost, median_seconds

__all__ = ["BENCHMARKS", "DCN_QUICK_SHAPES", "DCN_SHAPES", "bench_dcn", "bench_models",
           "compiled_cost", "format_table", "median_seconds", "register", "report", "run"]


def report(result: dict[str, Any]) -> str:
    """The printed form of a ``run`` result: run-wide fields, note, table(s)."""
    tables = ("rows", "summary", "table_columns", "note")
    settings = {k: v for k, v in result.items() if k not in tables}
    lines = [" ".join(f"{k}={v}" for k, v in settings.items())]
    if "note" in result:
        lines.append(f"note: {result['note']}")
    lines.append(format_table(result["rows"], result.get("table_columns")))
    if result.get("summary"):
        lines += ["", "summary:", format_table(result["summary"])]
    return "\n".join(lines)


def _define_flags() -> None:
    from absl import flags  # pylint: disable=g-import-not-at-top

    flags.DEFINE_string("what", "dcn", "Benchmark to run; one of the registered names.")
    flags.DEFINE_bool("quick", False, "Small shapes and few iterations (seconds, for tests).")
    flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")
    flags.DEFINE_list("configs", None,
                      "models: config files, optionally path:variant (default: the four "
                      "COCO backbones; with --quick their smoke variants).")
    flags.DEFINE_integer("batch", None, "models: throughput / training batch (default 16, "
                         "quick 4); memory: batch per device (default 16); input: examples "
                         "per host batch and device-renderer call (default 16, quick 2).")
    flags.DEFINE_integer("iters", None, "models: timed calls per measurement (default 10, "
                         "quick 3).")
    flags.DEFINE_integer("images", None, "input: generated JPEGs read per pass (default 96, "
                         "quick 4); startup: images in the generated COCO json (default "
                         "5000, quick 500).")


def main(argv: list[str]) -> None:
    from absl import app, flags  # pylint: disable=g-import-not-at-top

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    options = {name: getattr(FLAGS, name) for name in ("configs", "batch", "iters", "images")
               if getattr(FLAGS, name) is not None}
    accepted = {"models": {"configs", "batch", "iters"}, "memory": {"configs", "batch"},
                "input": {"images", "batch"}, "startup": {"images"}}
    extra = set(options) - accepted.get(FLAGS.what, set())
    if extra:
        given = ", ".join(f"--{name}" for name in sorted(extra))
        raise app.UsageError(f"{given}: not an option of --what={FLAGS.what}")
    result = run(FLAGS.what, FLAGS.quick, **options)
    print(report(result))
    if FLAGS.json:
        paths.resolve(FLAGS.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    from absl import app  # pylint: disable=g-import-not-at-top

    _define_flags()
    app.run(main)
