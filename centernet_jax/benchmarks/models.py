r"""models: whole detectors per backbone config, inference and training, with baselines.

  python -m centernet_jax.bench --what=models [--quick] [--batch=16] [--iters=10] \
      [--configs=configs/hourglass.py,configs/dla34.py:coco] [--json=/tmp/models.json]

For each config (default: the four COCO 512x512 backbones; ``--quick``: the ``smoke``
variants of the hourglass and ResNet-18 + DCN, 64 px, batch 4) it measures, on the first
device JAX sees:

* ``detect``: the jitted ``inference.make_detect_fn`` (forward + decode, as the paper
  times it), plain and flip, at batch 1 (latency) and at ``batch`` (throughput);
* ``train_step``: the real ``train.make_train_step`` with Adam on random padded boxes;
* ``decode`` and ``targets`` alone on the same shapes, as a share of ``detect`` and of
  ``train_step``;
* ``numpy_decode`` / ``numpy_targets``: the task's host NumPy references of the official
  decode and of the official per-object target drawing (``Task.reference``, where the
  task has one), checked against the JAX results before they are timed, reported as
  ``vs_numpy`` = NumPy time / JAX time on the JAX rows;
* FLOPs per image: ``xla_gflop_per_image`` from XLA's cost analysis of the compiled
  function and ``matmul_gflop_per_image`` counted from the jaxpr (convolutions and dots,
  loop bodies times their trip count); ``achieved_gflop_per_s`` = XLA FLOPs / time;
* memory: ``compiled.memory_analysis()`` per executable and the device's own high-water
  mark where the backend reports one.

Parameters are random values of each model's shapes (``synthetic_train_state``: timings do
not depend on the values, and compiling the initialiser would cost as much as a forward).
All programs of all configs are traced first and compiled concurrently on CPU hosts
(one XLA:CPU compilation uses little parallelism), and only then timed one after another.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from centernet_jax import assembly, config_loading, inference, tasks, train, train_state
from centernet_jax.benchmarks.registry import register
from centernet_jax.benchmarks.timing import (compiled_cost, compiled_memory, device_peak_bytes,
                                             median_seconds)
from centernet_jax.data import sanitize

DEFAULT_CONFIGS = ("configs/hourglass.py", "configs/dla34.py", "configs/resnet18.py",
                   "configs/resnet101.py")
# --quick (CI): one plain-convolution model and one with DCNv2; compiling every backbone's
# train step would alone take ~2 minutes on 2 CPU cores.
QUICK_CONFIGS = ("configs/hourglass.py", "configs/resnet18.py")
QUICK_VARIANT = "smoke"
DEFAULT_BATCH, QUICK_BATCH = 16, 4
DEFAULT_ITERS, QUICK_ITERS = 10, 3
DEFAULT_WARMUP, QUICK_WARMUP = 2, 1

# Every row has every one of these keys (None where a field does not apply).
ROW_FIELDS = (
    "config", "measure", "mode", "batch", "input_hw", "iters", "warmup", "ms",
    "images_per_s", "xla_gflop_per_image", "matmul_gflop_per_image", "achieved_gflop_per_s",
    "xla_memory_mbyte", "xla_temp_mbyte", "xla_argument_mbyte", "xla_output_mbyte",
    "xla_alias_mbyte", "share", "share_of", "vs_numpy", "max_abs_diff", "agrees",
    "objects_per_image", "compile_s", "device_kind", "backend")
TABLE_COLUMNS = ("config", "measure", "mode", "batch", "input_hw", "ms", "images_per_s",
                 "xla_gflop_per_image", "matmul_gflop_per_image", "achieved_gflop_per_s",
                 "xla_memory_mbyte", "share", "vs_numpy")

NOTE = (
    "ms: median wall time per call (the whole batch). share: decode / detect of the same "
    "mode and batch, targets / train_step. vs_numpy: NumPy reference time / JAX time on "
    "the same inputs (host, one thread; the official loader draws targets per image in "
    "worker processes). xla_gflop: XLA's cost analysis (kernel taps inside the input plus "
    "elementwise ops; a loop body counts once, so the DCN models' 9-tap scan is "
    "undercounted); matmul_gflop: every conv / dot tap from the jaxpr, padding included, "
    "loops multiplied out. xla_memory = temp + argument + output - alias bytes of the "
    "compiled executable. device_peak_mbyte: process-wide high-water mark after the config "
    "ran (cumulative over configs, never reset); None where the backend has no "
    "memory_stats (CPU). Parameters are random values of the model's shapes; decode "
    "inputs random logits of the real head-output shapes; train batches random padded "
    "boxes (the JAX renderer's cost grows with slots, the NumPy one's with objects). "
    "Every program is compiled (compile_s) before anything is timed.")


# ---------------------------------------------------------------------------------------
# Configs


def load_config(spec: str, default_variant: str | None = None
                ) -> tuple[str, ml_collections.ConfigDict]:
    """``path[:variant]`` -> (label ``"name:variant"``, config), found as
    ``centernet_jax.load_config`` finds it. Without a variant, ``default_variant`` is used
    (None: the config's own default)."""
    path, variant = config_loading.split_spec(spec)
    variant = variant or default_variant
    config = config_loading.load_config(path + (f":{variant}" if variant else ""), lock=False)
    name = os.path.splitext(os.path.basename(path))[0]
    return f"{name}:{config.get('variant', None) or variant or 'default'}", config


# ---------------------------------------------------------------------------------------
# FLOPs counted from the jaxpr


def matmul_flops(fn: Callable[..., Any], *args: Any) -> float:
    """2 x multiply-adds of every convolution and dot in ``fn``'s jaxpr.

    Sub-jaxprs (jit, remat, custom derivatives) are walked; a scan body counts ``length``
    times, a cond its most expensive branch, a while body once (trip count unknown).
    """
    return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def _sub_jaxprs(value: Any):
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):  # ClosedJaxpr
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)


def _jaxpr_flops(jaxpr: Any) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            contracted = math.prod(lhs_shape[d] for d in lhs_contract)
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * contracted
        elif name == "conv_general_dilated":
            rhs_shape = eqn.invars[1].aval.shape
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
            per_output = rhs_shape[rhs_spec[1]] * math.prod(rhs_shape[d] for d in rhs_spec[2:])
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * per_output
        elif name == "cond":
            total += max(_jaxpr_flops(branch.jaxpr) for branch in eqn.params["branches"])
        else:
            repeat = eqn.params["length"] if name == "scan" else 1
            for value in eqn.params.values():
                for sub in _sub_jaxprs(value):
                    total += repeat * _jaxpr_flops(sub)
    return total


# ---------------------------------------------------------------------------------------
# Inputs


def random_images(batch: int, input_hw: Sequence[int], seed: int = 0) -> jax.Array:
    """Normalised-looking NHWC float32 images [batch, H, W, 3]."""
    return jax.random.normal(jax.random.key(seed), (batch, *input_hw, 3), jnp.float32)


def random_train_batch(config, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A padded training batch of ``config``'s shapes with random boxes (output-grid pixels,
    some partly outside the grid), random classes and ~60% of the slots used.

    Raises:
      ValueError: the config's task trains on fields besides boxes, classes and mask.
    """
    task_class = tasks.get(config.task)
    extra = set(task_class.batch_fields) - {"boxes", "classes", "mask"}
    if extra:
        raise ValueError(f"random batches hold boxes, classes and mask; the {config.task} "
                         f"task also needs {sorted(extra)}")
    rng = np.random.default_rng(seed)
    grid_h, grid_w = task_class.output_hw(config.input.input_hw, config.input.down_ratio)
    slots = config.dataset.max_objects
    corner = rng.uniform(-2, [grid_w, grid_h], (batch, slots, 2))
    size = rng.uniform(0.5, [grid_w / 2, grid_h / 2], (batch, slots, 2))
    return {
        "image": rng.normal(size=(batch, *config.input.input_hw, 3)).astype(np.float32),
        "boxes": np.concatenate([corner, corner + size], -1).astype(np.float32),
        "classes": rng.integers(0, config.dataset.num_classes, (batch, slots)).astype(np.int32),
        "mask": rng.random((batch, slots)) < 0.6,
        **{name: np.zeros((batch,), np.int32) for name in sanitize.COUNTERS},
    }


def random_head_outputs(task, shapes: dict[str, jax.ShapeDtypeStruct], seed: int = 0
                        ) -> dict[str, np.ndarray]:
    """Random raw head outputs of the given shapes: heatmap logits mostly negative (as a
    trained model's are), the other heads uniform in [0, grid / 8)."""
    rng = np.random.default_rng(seed)
    outputs = {}
    for name, spec in task.heads.items():
        shape = shapes[name].shape
        if spec.is_heatmap:
            outputs[name] = (rng.normal(size=shape) * 1.5 - 3.0).astype(np.float32)
        else:
            outputs[name] = rng.uniform(0, max(shape[1], shape[2]) / 8, shape).astype(np.float32)
    return outputs


# ---------------------------------------------------------------------------------------
# Measurement


def synthetic_train_state(abstract: train_state.TrainState, seed: int = 0
                          ) -> train_state.TrainState:
    """A train state of ``abstract``'s structure filled on the host, without compiling init.

    Timings do not depend on the values, only on their being ordinary finite numbers:
    kernels ~ N(0, 1 / fan_in) (LeCun, activations stay O(1) through the network),
    BatchNorm scale / variance 1, every other float (biases, means, Adam moments) 0,
    integers (step, Adam count) 0.
    """
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = getattr(path[-1], "key", None)
        if name == "kernel":
            fan_in = math.prod(leaf.shape[:-1])
            return (rng.normal(size=leaf.shape) / math.sqrt(fan_in)).astype(leaf.dtype)
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        return np.zeros(leaf.shape, leaf.dtype)

    params = jax.tree_util.tree_map_with_path(fill, abstract.params)
    batch_stats = jax.tree_util.tree_map_with_path(fill, abstract.batch_stats)
    zeros = lambda leaf: np.zeros(leaf.shape, leaf.dtype)
    state = abstract.replace(step=zeros(abstract.step), params=params, batch_stats=batch_stats,
                             opt_state=jax.tree.map(zeros, abstract.opt_state))
    return jax.device_put(state)


class Programs:
    """Traces programs on the calling thread and compiles them in a thread pool.

    One XLA:CPU compilation keeps little more than one core busy, so on a multi-core host
    the compilations overlap (~5 per config); programs submitted twice under the same key
    compile once. On accelerators compilation runs one at a time (autotuning times kernels
    on the device, which concurrent compilations would disturb).
    """

    def __init__(self, workers: int):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        self._futures: dict[Any, concurrent.futures.Future] = {}
        self._jaxprs: dict[Any, Any] = {}

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any,
               donate_argnums: tuple[int, ...] = ()) -> Any:
        """Traces ``jit(fn)`` on ``args`` (arrays or ShapeDtypeStructs), queues its compile."""
        if key not in self._futures:
            traced = jax.jit(fn, donate_argnums=donate_argnums).trace(*args)
            self._jaxprs[key] = traced.jaxpr
            self._futures[key] = self._pool.submit(_timed_compile, traced.lower())
        return key

    def compiled(self, key: Any) -> Any:
        return self._futures[key].result()[0]

    def compile_seconds(self, key: Any) -> float:
        """Wall time of the compilation (overlapping the others running beside it)."""
        return self._futures[key].result()[1]

    def matmul_flops(self, key: Any) -> float:
        return _jaxpr_flops(self._jaxprs[key].jaxpr)

    def wait(self) -> None:
        """Blocks until every queued compile is done (raising the first error)."""
        start, total = time.perf_counter(), len(self._futures)
        for done, future in enumerate(list(self._futures.values()), 1):
            future.result()
            logging.info("Compiled %d/%d programs (%.0f s).", done, total,
                         time.perf_counter() - start)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _timed_compile(lowered: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    compiled = lowered.compile()
    return compiled, time.perf_counter() - start


def compile_workers() -> int:
    """Concurrent compilations: the host's cores on CPU, 1 on accelerators."""
    if jax.default_backend() != "cpu":
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def _decode_outputs(outputs, *, task, top_k):
    return task.decode(outputs, top_k)


def _decode_flip_outputs(outputs, mirrored, *, task, top_k):
    return task.decode(outputs, top_k, mirrored=mirrored)


def _row(**fields: Any) -> dict[str, Any]:
    unknown = set(fields) - set(ROW_FIELDS)
    if unknown:
        raise KeyError(f"not row fields: {sorted(unknown)}")
    return {name: fields.get(name) for name in ROW_FIELDS}


def _mbyte(value: int | None) -> float | None:
    return None if value is None else value / 1e6


def _hw(size: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in size)


class ConfigBench:
    """All measurements of one config: ``plan`` queues its compilations, ``measure`` (after
    every compilation is done) times them and fills ``rows``."""

    def __init__(self, label: str, config, *, batch: int, iters: int, warmup: int):
        self.label, self.config = label, config
        self.batch, self.iters, self.warmup = batch, iters, warmup
        parts = assembly.assemble(config)
        self.task, self.model, self.tx = parts.task, parts.model, parts.tx
        self.train_hw = tuple(config.input.input_hw)
        self.grid_hw = parts.output_hw()
        self.eval_hw = tuple(inference.eval_input_hw(config))
        self.top_k = int(config.eval.top_k)
        self.batches = sorted({1, batch})
        self.abstract = parts.abstract_state()
        self.host_batch = random_train_batch(config, batch)
        device = jax.devices()[0]
        self.common = {"config": label, "iters": iters, "warmup": warmup,
                       "device_kind": device.device_kind, "backend": jax.default_backend()}
        self.rows: list[dict[str, Any]] = []
        self._keys: dict[Any, Any] = {}
        self._outputs_at_batch_1: dict[str, jax.ShapeDtypeStruct] | None = None

    # -- compilation -----------------------------------------------------------------

    def head_shapes(self, batch: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The last stack's raw head outputs for ``batch`` eval images (what the task's
        decode sees; in flip mode, each of the two halves)."""
        if self._outputs_at_batch_1 is None:
            variables = {"params": self.abstract.params,
                         "batch_stats": self.abstract.batch_stats}
            images = jax.ShapeDtypeStruct((1, *self.eval_hw, 3), jnp.float32)
            self._outputs_at_batch_1 = jax.eval_shape(
                functools.partial(inference.last_stack_outputs, self.model), variables, images)
        return {name: jax.ShapeDtypeStruct((batch, *out.shape[1:]), out.dtype)
                for name, out in self._outputs_at_batch_1.items()}

    def plan(self, programs: Programs) -> None:
        """Traces every program this config times and queues its compilation."""
        variables = {"params": self.abstract.params, "batch_stats": self.abstract.batch_stats}
        for batch in self.batches:
            images = jax.ShapeDtypeStruct((batch, *self.eval_hw, 3), jnp.float32)
            for mode in ("plain", "flip"):
                detect = inference.make_detect_fn(self.model, self.task, top_k=self.top_k,
                                                  flip=mode == "flip")
                self._keys["detect", mode, batch] = programs.submit(
                    (self, "detect", mode, batch), detect, variables, images)
                shapes = self.head_shapes(batch)
                decode, args = ((_decode_flip_outputs, (shapes, shapes)) if mode == "flip"
                                else (_decode_outputs, (shapes,)))
                signature = tuple((k, v.shape, str(v.dtype)) for k, v in sorted(shapes.items()))
                self._keys["decode", mode, batch] = programs.submit(
                    ("decode", self.task, self.top_k, mode, signature),
                    functools.partial(decode, task=self.task, top_k=self.top_k), *args)
        fields = {k: self.host_batch[k] for k in self.task.batch_fields}
        self._keys["targets"] = programs.submit(
            ("targets", self.task, self.grid_hw, fields["mask"].shape),
            functools.partial(self.task.targets, output_hw=self.grid_hw), fields)
        step = train.make_train_step(self.model, self.task, self.tx, self.grid_hw)
        # Donated, as in training: the new state reuses the old state's buffers.
        self._keys["train_step"] = programs.submit(
            (self, "train_step"), step, self.abstract, self.host_batch,
            donate_argnums=(0,))

    # -- timing ----------------------------------------------------------------------

    def _time(self, fn, *args) -> float:
        return median_seconds(fn, *args, warmup=self.warmup, iters=self.iters)

    def _timed_row(self, measure: str, mode: str | None, batch: int, input_hw, seconds: float,
                   programs: Programs | None = None, key: Any = None, **extra
                   ) -> dict[str, Any]:
        """A row for a timing of ``batch`` images; with ``programs`` and ``key``, the
        compiled program's XLA counts, its jaxpr matmul FLOPs and its compile time."""
        fields = dict(self.common, measure=measure, mode=mode, batch=batch,
                      input_hw=_hw(input_hw), ms=1e3 * seconds, images_per_s=batch / seconds,
                      **extra)
        if key is not None:
            compiled = programs.compiled(key)
            flops = compiled_cost(compiled)["flops"]
            fields.update(xla_gflop_per_image=flops / batch / 1e9,
                          achieved_gflop_per_s=flops / seconds / 1e9,
                          matmul_gflop_per_image=programs.matmul_flops(key) / batch / 1e9,
                          compile_s=programs.compile_seconds(key))
            memory = compiled_memory(compiled)
            if memory is not None:
                fields.update(xla_memory_mbyte=_mbyte(memory["total"]),
                              xla_temp_mbyte=_mbyte(memory["temp"]),
                              xla_argument_mbyte=_mbyte(memory["argument"]),
                              xla_output_mbyte=_mbyte(memory["output"]),
                              xla_alias_mbyte=_mbyte(memory["alias"]))
        return _row(**fields)

    def measure(self, programs: Programs) -> None:
        """Times every planned program (compiled by now) and the NumPy baselines."""
        state = synthetic_train_state(self.abstract)
        variables = state.variables
        inference_rows = []
        for batch in self.batches:
            images = random_images(batch, self.eval_hw)
            for mode in ("plain", "flip"):
                key = self._keys["detect", mode, batch]
                compiled = programs.compiled(key)
                detections = compiled(variables, images)
                if not np.all(np.isfinite(np.asarray(detections["scores"]))):
                    raise FloatingPointError(f"{self.label}: non-finite detection scores")
                detect_row = self._timed_row(
                    "detect", mode, batch, self.eval_hw, self._time(compiled, variables, images),
                    programs, key)
                inference_rows += [detect_row, *self._decode_rows(programs, batch, mode,
                                                                  detect_row)]
        targets_rows = self._targets_rows(programs)

        key = self._keys["train_step"]
        compiled = programs.compiled(key)
        batch = jax.device_put(self.host_batch)

        metrics = {}

        def run_step():  # chains the donated state like the train loop
            nonlocal state, metrics
            state, metrics = compiled(state, batch)
            return metrics

        step_seconds = self._time(run_step)
        if not np.isfinite(float(metrics["loss"])):
            raise FloatingPointError(f"{self.label}: non-finite training loss")
        step_row = self._timed_row("train_step", None, self.batch, self.train_hw, step_seconds,
                                   programs, key,
                                   objects_per_image=targets_rows[0]["objects_per_image"])
        targets_rows[0].update(share=targets_rows[0]["ms"] / step_row["ms"],
                               share_of="train_step")
        self.rows += inference_rows + [step_row] + targets_rows

    def _decode_rows(self, programs: Programs, batch: int, mode: str,
                     detect_row: dict[str, Any]) -> list[dict[str, Any]]:
        shapes = self.head_shapes(batch)
        outputs = random_head_outputs(self.task, shapes, seed=1)
        args = ((outputs, random_head_outputs(self.task, shapes, seed=2)) if mode == "flip"
                else (outputs,))
        args = jax.device_put(args)
        key = self._keys["decode", mode, batch]
        compiled = programs.compiled(key)
        seconds = self._time(compiled, *args)
        row = self._timed_row("decode", mode, batch, self.eval_hw, seconds, programs, key,
                              share=1e3 * seconds / detect_row["ms"],
                              share_of=f"detect {mode} batch {batch}")
        baseline = self.task.reference
        if mode != "plain" or batch != self.batch or baseline is None:
            return [row]
        reference = functools.partial(baseline.decode, outputs, self.top_k)
        diff = baseline.check_decode(compiled(*args), reference())
        numpy_seconds = self._time(reference)
        row["vs_numpy"] = numpy_seconds / seconds
        return [row, self._timed_row("numpy_decode", mode, batch, self.eval_hw, numpy_seconds,
                                     max_abs_diff=diff, agrees=True)]

    def _targets_rows(self, programs: Programs) -> list[dict[str, Any]]:
        host = self.host_batch
        objects = float(np.mean(np.sum(host["mask"], -1)))
        fields = jax.device_put({k: host[k] for k in self.task.batch_fields})
        key = self._keys["targets"]
        compiled = programs.compiled(key)
        seconds = self._time(compiled, fields)
        row = self._timed_row("targets", None, self.batch, self.grid_hw, seconds, programs, key,
                              objects_per_image=objects)
        baseline = self.task.reference
        if baseline is None:
            return [row]
        reference = functools.partial(baseline.targets, host, self.grid_hw)
        diff = baseline.check_targets(compiled(fields), reference())
        numpy_seconds = self._time(reference)
        row["vs_numpy"] = numpy_seconds / seconds
        return [row, self._timed_row("numpy_targets", None, self.batch, self.grid_hw,
                                     numpy_seconds, max_abs_diff=diff, agrees=True,
                                     objects_per_image=objects)]

    def summary(self) -> dict[str, Any]:
        """One flat dict of the headline numbers (each also in a row)."""

        def find(measure, mode=None, batch=None):
            batch = self.batch if batch is None else batch
            return next(r for r in self.rows if r["measure"] == measure and r["mode"] == mode
                        and r["batch"] == batch)

        return {
            "config": self.label,
            "input_hw": _hw(self.eval_hw),
            "batch": self.batch,
            "latency_ms": find("detect", "plain", 1)["ms"],
            "flip_latency_ms": find("detect", "flip", 1)["ms"],
            "images_per_s": find("detect", "plain")["images_per_s"],
            "flip_images_per_s": find("detect", "flip")["images_per_s"],
            "train_images_per_s": find("train_step")["images_per_s"],
            "gflop_per_image": find("detect", "plain", 1)["xla_gflop_per_image"],
            "matmul_gflop_per_image": find("detect", "plain", 1)["matmul_gflop_per_image"],
            "train_gflop_per_image": find("train_step")["xla_gflop_per_image"],
            "decode_share": find("decode", "plain", 1)["share"],
            "targets_share": find("targets")["share"],
            "decode_vs_numpy": find("decode", "plain")["vs_numpy"],
            "targets_vs_numpy": find("targets")["vs_numpy"],
            "train_xla_mbyte": find("train_step")["xla_memory_mbyte"],
            "device_peak_mbyte": _mbyte(device_peak_bytes()),
        }


@register("models")
def bench_models(quick: bool, configs: Sequence[str] | None = None, batch: int | None = None,
                 iters: int | None = None) -> dict[str, Any]:
    """Every measurement in the module docstring for each config in ``configs``.

    Args:
      quick: smoke variants (for configs given without one), batch 4, 3 iterations.
      configs: ``path[:variant]`` specs; default ``DEFAULT_CONFIGS`` (COCO variants), or
        ``QUICK_CONFIGS`` when quick.
      batch: the throughput / training batch (default 16, quick 4).
      iters: timed calls per measurement (default 10, quick 3).

    Returns:
      ``rows`` (every field of ``ROW_FIELDS`` in each), ``summary`` (one row per config),
      and the run-wide settings. Every program is compiled before anything is timed, so
      no timing overlaps a compilation.
    """
    batch = batch or (QUICK_BATCH if quick else DEFAULT_BATCH)
    iters = iters or (QUICK_ITERS if quick else DEFAULT_ITERS)
    warmup = QUICK_WARMUP if quick else DEFAULT_WARMUP
    if batch < 1 or iters < 1:
        raise ValueError(f"batch and iters must be positive, got {batch}, {iters}")
    start = time.perf_counter()
    benches = [ConfigBench(*load_config(spec, QUICK_VARIANT if quick else None),
                           batch=batch, iters=iters, warmup=warmup)
               for spec in configs or (QUICK_CONFIGS if quick else DEFAULT_CONFIGS)]
    workers = compile_workers()
    programs = Programs(workers)
    try:
        for bench in benches:
            bench.plan(programs)
        programs.wait()
        compile_seconds = time.perf_counter() - start
        rows, summary = [], []
        for bench in benches:
            logging.info("Timing %s.", bench.label)
            bench.measure(programs)
            rows += bench.rows
            summary.append(bench.summary())
    finally:
        programs.close()
    return {"configs": [bench.label for bench in benches], "batch": batch, "iters": iters,
            "warmup": warmup, "compile_workers": workers,
            "compile_s": compile_seconds, "total_s": time.perf_counter() - start,
            "device_memory_stats": device_peak_bytes() is not None, "note": NOTE,
            "rows": rows, "table_columns": list(TABLE_COLUMNS), "summary": summary}
