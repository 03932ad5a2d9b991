r"""memory: per-device memory of the real train step, float32 vs bfloat16 x DP vs FSDP.

  python -m centernet_jax.bench --what=memory [--quick] [--json=/tmp/memory.json]
  python -m centernet_jax.benchmarks.memory [--quick] [--configs=configs/hourglass.py] \
      [--batch=16] [--devices=8] [--fsdp=8] [--min_fsdp_size=262144] [--json=/tmp/m.json]

For each config (default Hourglass-104 at 512x512; ``--quick``: the smoke hourglass at
64 px) it compiles, without running anything, the train step that training jits
(``train.make_train_step`` with Adam, the state donated, ``sharding.state_shardings``
for the state and ``sharding.batch_sharding`` for the batch) for four cases:

  dtype  float32 | bfloat16   (``config.model.dtype``; parameters and Adam stay float32)
  mesh   data=N, fsdp=1 (pure data parallel) | data=N/F, fsdp=F (default F = N: pure FSDP)

The inputs are ShapeDtypeStructs carrying their shardings (``jit(...).lower(...)
.compile()``: no array is allocated). ``batch`` is per device; the global batch is
``batch x devices``.

Per device, from XLA's ``compiled.memory_analysis()`` (MB = 1e6 bytes): ``argument`` (the
state and batch shards the step receives), ``output`` (new state, metrics), ``alias``
(outputs written into donated argument buffers), ``temp`` (activations kept for the
backward pass, gradients, scratch), ``generated_code``, and ``total = argument + output +
temp - alias``: what must fit at once. Analytically, from the shardings, the per-device
bytes of the parameters, the Adam state (mu, nu), the BatchNorm statistics, the whole
state and the batch, to cross-check ``argument`` (which should equal state + batch); and
``residual``, the bytes the forward pass keeps for the backward pass at the per-device
batch (``jax.vjp`` residuals, from the program alone: an upper bound on activation memory
that does not depend on a backend's buffer assignment).

Fake devices. The mesh is built from N CPU devices. If this process has fewer CPU devices
than N (JAX fixes the count when it starts), the benchmark reruns itself in a
subprocess with ``JAX_NUM_CPU_DEVICES=N JAX_PLATFORMS=cpu`` and returns its result, so it
works from any process, on any host, with no flags to remember. Compilation targets
XLA:CPU: its buffer assignment is a proxy for a GPU's or TPU's (different fusion, layouts,
collective buffers and workspaces), good for comparing cases, not for exact budgets. In
particular XLA:CPU has no bfloat16 convolutions: it converts around each one, so on CPU
bf16 ``temp`` is about f32 ``temp``; the bf16 saving shows in ``residual``.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from centernet_jax import assembly, sharding, train
from centernet_jax.benchmarks import models
from centernet_jax.benchmarks.models import load_config
from centernet_jax.benchmarks.registry import register
from centernet_jax.benchmarks.timing import compiled_memory

DEFAULT_CONFIGS = ("configs/hourglass.py",)
QUICK_CONFIGS = ("configs/hourglass.py",)
QUICK_VARIANT = "smoke"
DEFAULT_BATCH, QUICK_BATCH = 16, 2  # per device
DEFAULT_DEVICES = 8
DTYPES = ("float32", "bfloat16")
# The smoke model's largest tensor has 2,304 elements, below the training threshold
# (sharding.fsdp_partition_spec, 2**18): quick mode lowers it so FSDP shards something.
QUICK_MIN_FSDP_SIZE = 2 ** 10
DEFAULT_MIN_FSDP_SIZE = 2 ** 18

ROW_FIELDS = (
    "config", "dtype", "mesh", "data", "fsdp", "devices", "batch_per_device", "global_batch",
    "input_hw", "argument_mbyte", "output_mbyte", "alias_mbyte", "temp_mbyte",
    "generated_code_mbyte", "total_mbyte", "params_mbyte",
    "opt_state_mbyte", "batch_stats_mbyte", "state_mbyte", "batch_mbyte", "residual_mbyte",
    "sharded_param_fraction", "min_fsdp_size", "lower_s", "compile_s")
TABLE_COLUMNS = ("config", "dtype", "mesh", "global_batch", "argument_mbyte",
                 "output_mbyte", "alias_mbyte", "temp_mbyte", "total_mbyte",
                 "params_mbyte", "opt_state_mbyte", "state_mbyte", "residual_mbyte",
                 "compile_s")

NOTE = (
    "Per-device bytes (MB = 1e6) of the compiled, sharded train step (Adam, donated state) "
    "from XLA's memory_analysis: total = argument + output + temp - alias. params / "
    "opt_state (Adam mu + nu) / state / batch: analytic per-device bytes from the "
    "shardings; argument = state + batch. Parameters and optimizer state are float32 in "
    "every case; dtype is the computation dtype. residual: bytes the forward keeps for the "
    "backward (jax.vjp residuals at the per-device batch; an upper bound on the "
    "activation memory, compilers rematerialise cheap ones). Compiled for fake XLA:CPU "
    "devices, a proxy for a GPU's or TPU's buffer assignment (other fusions, layouts, "
    "collective and convolution workspaces): XLA:CPU has no bfloat16 convolutions and "
    "converts around each one, so its bf16 temp is no smaller than f32 temp; read the "
    "bf16 saving from residual.")


def _mbyte(num_bytes: int | None) -> float | None:
    return None if num_bytes is None else num_bytes / 1e6


def per_device_bytes(tree: Any, shardings: Any) -> int:
    """Bytes one device holds of ``tree`` (arrays or ShapeDtypeStructs) under ``shardings``
    (a matching tree of NamedShardings): the shard shape times the item size, per leaf."""
    leaves = jax.tree.leaves(tree)
    leaf_shardings = jax.tree.leaves(shardings)
    if len(leaves) != len(leaf_shardings):
        raise ValueError(f"{len(leaves)} leaves but {len(leaf_shardings)} shardings")
    return sum(math.prod(s.shard_shape(tuple(leaf.shape))) * jnp.dtype(leaf.dtype).itemsize
               for leaf, s in zip(leaves, leaf_shardings))


def abstract_train_batch(config, global_batch: int, batch_sharding) -> dict[str, Any]:
    """ShapeDtypeStructs of a padded training batch (``train.train_fields``), sharded."""
    host = models.random_train_batch(config, 1)

    def spec(array):
        return jax.ShapeDtypeStruct((global_batch, *array.shape[1:]), array.dtype,
                                    sharding=batch_sharding)

    return {name: spec(array) for name, array in host.items()}


def residual_bytes(parts, abstract, batch: int) -> int:
    """Bytes the forward pass keeps for the backward pass at ``batch`` images: the leaves
    of ``jax.vjp``'s function for the loss w.r.t. the parameters (activations, and the
    kernels in the computation dtype). Nothing runs (``jax.eval_shape``); it depends on
    the program, not on a compiler's buffer assignment, and is what bfloat16 halves."""
    images = abstract_train_batch(parts.config, batch, None)
    model, task, output_hw = parts.model, parts.task, parts.output_hw()

    def backward_inputs(params, batch_stats, images):
        target = task.targets(images, output_hw)

        def loss_fn(params):
            outputs, _ = model.apply({"params": params, "batch_stats": batch_stats},
                                     images["image"], train=True, mutable=["batch_stats"])
            return task.loss(outputs, target)[0]

        return jax.vjp(loss_fn, params)[1]

    saved = jax.eval_shape(backward_inputs, abstract.params, abstract.batch_stats, images)
    return sum(math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(saved))


def _lower_case(label: str, config, dtype: str, mesh, batch_per_device: int,
                min_fsdp_size: int) -> tuple[dict[str, Any], Any]:
    """Traces and lowers one case; (row fields known before compiling, lowered)."""
    config = config.copy_and_resolve_references()
    config.model.dtype = dtype
    parts = assembly.assemble(config)
    abstract = parts.abstract_state()
    state_shardings = sharding.state_shardings(abstract, mesh, min_fsdp_size=min_fsdp_size)
    batch_sharding = sharding.batch_sharding(mesh)
    devices = mesh.devices.size
    global_batch = batch_per_device * devices
    state_in = sharding.abstract_with_shardings(abstract, state_shardings)
    batch_in = abstract_train_batch(config, global_batch, batch_sharding)

    step = jax.jit(train.make_train_step(parts.model, parts.task, parts.tx, parts.output_hw()),
                   in_shardings=(state_shardings, batch_sharding),
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=(0,))
    start = time.perf_counter()
    lowered = step.lower(state_in, batch_in)
    lower_s = time.perf_counter() - start

    params_bytes = per_device_bytes(abstract.params, state_shardings.params)
    param_leaves = jax.tree.leaves(abstract.params)
    sharded = sum(math.prod(p.shape) * jnp.dtype(p.dtype).itemsize
                  for p, s in zip(param_leaves, jax.tree.leaves(state_shardings.params))
                  if not s.is_fully_replicated)
    total_param_bytes = sum(math.prod(p.shape) * jnp.dtype(p.dtype).itemsize
                            for p in param_leaves)
    fields = {
        "config": label, "dtype": dtype,
        "mesh": f"data={mesh.shape['data']},fsdp={mesh.shape['fsdp']}",
        "data": mesh.shape["data"], "fsdp": mesh.shape["fsdp"], "devices": devices,
        "batch_per_device": batch_per_device, "global_batch": global_batch,
        "input_hw": "x".join(str(int(v)) for v in config.input.input_hw),
        "params_mbyte": _mbyte(params_bytes),
        "opt_state_mbyte": _mbyte(per_device_bytes(abstract.opt_state,
                                                   state_shardings.opt_state)),
        "batch_stats_mbyte": _mbyte(per_device_bytes(abstract.batch_stats,
                                                     state_shardings.batch_stats)),
        "state_mbyte": _mbyte(per_device_bytes(abstract, state_shardings)),
        "batch_mbyte": _mbyte(per_device_bytes(batch_in, jax.tree.map(
            lambda leaf: leaf.sharding, batch_in))),
        "residual_mbyte": _mbyte(residual_bytes(parts, abstract, batch_per_device)),
        "sharded_param_fraction": sharded / total_param_bytes,
        "min_fsdp_size": min_fsdp_size, "lower_s": lower_s,
    }
    return fields, lowered


def _timed_compile(lowered: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    compiled = lowered.compile()
    return compiled, time.perf_counter() - start


def _memory_fields(compiled: Any) -> dict[str, Any]:
    memory = compiled_memory(compiled)
    if memory is None:
        raise RuntimeError("this backend reports no memory_analysis for the train step")
    stats = compiled.memory_analysis()
    return {"argument_mbyte": _mbyte(memory["argument"]),
            "output_mbyte": _mbyte(memory["output"]),
            "alias_mbyte": _mbyte(memory["alias"]),
            "temp_mbyte": _mbyte(memory["temp"]),
            "generated_code_mbyte": _mbyte(int(stats.generated_code_size_in_bytes)),
            "total_mbyte": _mbyte(memory["total"])}


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per config: bf16 / f32 and FSDP / DP ratios of the per-device bytes."""
    summary = []
    for config in dict.fromkeys(row["config"] for row in rows):
        by_case = {(r["dtype"], r["fsdp"] > 1): r for r in rows if r["config"] == config}
        if len(by_case) != 4:
            continue
        f32_dp, f32_fsdp = by_case["float32", False], by_case["float32", True]
        bf16_dp, bf16_fsdp = by_case["bfloat16", False], by_case["bfloat16", True]
        summary.append({
            "config": config,
            "f32_dp_total_mbyte": f32_dp["total_mbyte"],
            "bf16_fsdp_total_mbyte": bf16_fsdp["total_mbyte"],
            "bf16_over_f32_temp_dp": bf16_dp["temp_mbyte"] / f32_dp["temp_mbyte"],
            "bf16_over_f32_total_dp": bf16_dp["total_mbyte"] / f32_dp["total_mbyte"],
            "bf16_over_f32_residual": bf16_dp["residual_mbyte"] / f32_dp["residual_mbyte"],
            "fsdp_over_dp_argument_f32": f32_fsdp["argument_mbyte"] / f32_dp["argument_mbyte"],
            "fsdp_over_dp_total_f32": f32_fsdp["total_mbyte"] / f32_dp["total_mbyte"],
            "fsdp_over_dp_total_bf16": bf16_fsdp["total_mbyte"] / bf16_dp["total_mbyte"],
        })
    return summary


def _cpu_devices() -> list[jax.Device]:
    try:
        return list(jax.devices("cpu"))
    except RuntimeError:  # JAX_PLATFORMS without cpu
        return []


def measure(configs: Sequence[str], *, quick: bool, batch: int, devices: int, fsdp: int,
            min_fsdp_size: int, dtypes: Sequence[str] = DTYPES,
            workers: int | None = None) -> dict[str, Any]:
    """Compiles every case on this process's first ``devices`` CPU devices (which must
    exist) and returns the benchmark result (see ``bench_memory``)."""
    cpu = _cpu_devices()
    if len(cpu) < devices:
        raise RuntimeError(f"need {devices} CPU devices, this process has {len(cpu)}")
    meshes = [sharding.make_mesh(devices, 1, cpu[:devices]),
              sharding.make_mesh(devices // fsdp, fsdp, cpu[:devices])]
    workers = workers or max(1, len(os.sched_getaffinity(0)) if hasattr(
        os, "sched_getaffinity") else os.cpu_count() or 1)
    start = time.perf_counter()
    rows, futures = [], []
    # Lowering runs here, one case at a time; XLA:CPU compilations overlap in the pool.
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for spec in configs:
            label, config = load_config(spec, QUICK_VARIANT if quick else None)
            for dtype in dtypes:
                for mesh in meshes:
                    fields, lowered = _lower_case(label, config, dtype, mesh, batch,
                                                  min_fsdp_size)
                    rows.append(fields)
                    futures.append(pool.submit(_timed_compile, lowered))
        for fields, future in zip(rows, futures):
            compiled, seconds = future.result()
            fields.update(_memory_fields(compiled), compile_s=seconds)
            del compiled
    rows = [{name: row.get(name) for name in ROW_FIELDS} for row in rows]
    return {"configs": list(dict.fromkeys(r["config"] for r in rows)),
            "batch_per_device": batch, "devices": devices, "fsdp": fsdp,
            "min_fsdp_size": min_fsdp_size, "compile_workers": workers,
            "total_s": time.perf_counter() - start, "note": NOTE, "rows": rows,
            "table_columns": list(TABLE_COLUMNS), "summary": _summary(rows)}


def _run_in_subprocess(options: dict[str, Any], devices: int) -> dict[str, Any]:
    """Reruns ``measure(**options)`` in a fresh Python with ``devices`` CPU devices."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="memory_bench_") as tmp:
        out = os.path.join(tmp, "result.json")
        process = subprocess.run(
            [sys.executable, "-m", "centernet_jax.benchmarks.memory",
             f"--worker_options={json.dumps(options)}", f"--worker_output={out}"],
            cwd=root, env=env, capture_output=True, text=True, check=False)
        if process.returncode != 0:
            raise RuntimeError(f"memory benchmark subprocess failed ({process.returncode}):\n"
                               + process.stderr[-4000:])
        with open(out) as f:
            return json.load(f)


@register("memory")
def bench_memory(quick: bool, configs: Sequence[str] | None = None, batch: int | None = None,
                 devices: int | None = None, fsdp: int | None = None,
                 min_fsdp_size: int | None = None, subprocess_devices: bool | None = None
                 ) -> dict[str, Any]:
    """Per-device memory of the compiled train step, 4 cases per config (module docstring).

    Args:
      quick: smoke variants (for configs given without one), 64 px, batch 2 per device,
        ``min_fsdp_size`` 1024 (seconds; for tests).
      configs: ``path[:variant]`` specs; default Hourglass-104 (``configs/hourglass.py``).
      batch: per-device batch (default 16, quick 2); global = batch x devices.
      devices: mesh size N (default 8).
      fsdp: the FSDP case's fsdp axis (default N: data=1); must divide N.
      min_fsdp_size: tensors with fewer elements stay replicated (default 2**18, the
        training rule; quick 2**10).
      subprocess_devices: True always compiles in a subprocess with N fake CPU devices,
        False never does (this process must have them), None (default) only when this
        process has fewer than N CPU devices.

    Returns:
      ``rows`` (one per config x dtype x mesh, every field of ``ROW_FIELDS``), ``summary``
      (ratios per config) and the run-wide settings.
    """
    devices = devices or DEFAULT_DEVICES
    fsdp = fsdp or devices
    if devices < 1 or fsdp < 1 or devices % fsdp:
        raise ValueError(f"fsdp={fsdp} must be positive and divide devices={devices}")
    options = dict(
        configs=list(configs or (QUICK_CONFIGS if quick else DEFAULT_CONFIGS)), quick=quick,
        batch=batch or (QUICK_BATCH if quick else DEFAULT_BATCH), devices=devices, fsdp=fsdp,
        min_fsdp_size=min_fsdp_size or (QUICK_MIN_FSDP_SIZE if quick
                                        else DEFAULT_MIN_FSDP_SIZE))
    if options["batch"] < 1:
        raise ValueError(f"batch must be positive, got {options['batch']}")
    if subprocess_devices is None:
        subprocess_devices = len(_cpu_devices()) < devices
    if subprocess_devices:
        return {**_run_in_subprocess(options, devices), "fake_devices": "subprocess"}
    return {**measure(**options), "fake_devices": "in-process"}


# ---------------------------------------------------------------------------------------
# Command line (also the subprocess worker).


def _define_flags() -> None:
    from absl import flags  # pylint: disable=g-import-not-at-top

    flags.DEFINE_bool("quick", False, "Smoke config, 64 px, batch 2 per device.")
    flags.DEFINE_list("configs", None, "Config files, optionally path:variant.")
    flags.DEFINE_integer("batch", None, "Per-device batch (default 16, quick 2).")
    flags.DEFINE_integer("devices", None, "Mesh size (default 8 fake CPU devices).")
    flags.DEFINE_integer("fsdp", None, "fsdp axis of the FSDP case (default: devices).")
    flags.DEFINE_integer("min_fsdp_size", None, "Smallest tensor (elements) sharded by FSDP.")
    flags.DEFINE_string("json", None, "Also write the result as JSON to this path.")
    flags.DEFINE_string("worker_options", None, "Internal: run measure(**json) here.")
    flags.DEFINE_string("worker_output", None, "Internal: where the worker writes JSON.")


def main(argv: list[str]) -> None:
    from absl import app, flags  # pylint: disable=g-import-not-at-top

    from centernet_jax import bench  # pylint: disable=g-import-not-at-top

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    if FLAGS.worker_options:
        result = measure(**json.loads(FLAGS.worker_options))
        with open(FLAGS.worker_output, "w") as f:
            json.dump(result, f)
        return
    options = {name: getattr(FLAGS, name) for name in
               ("configs", "batch", "devices", "fsdp", "min_fsdp_size")
               if getattr(FLAGS, name) is not None}
    result = bench.run("memory", FLAGS.quick, **options)
    print(bench.report(result))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    from absl import app  # pylint: disable=g-import-not-at-top

    # This module has registered "memory" as __main__; the registry imports it by its
    # package name, which must find this module rather than register a second copy.
    sys.modules.setdefault("centernet_jax.benchmarks.memory", sys.modules[__name__])
    _define_flags()
    app.run(main)
