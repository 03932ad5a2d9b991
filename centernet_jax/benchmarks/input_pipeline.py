r"""input: host input-pipeline cost per core, targets rendered on the device vs on the host.

  python -m centernet_jax.bench --what=input [--quick] [--images=96] [--batch=16] \
      [--json=/tmp/input.json]

Both pipelines read the same in-memory JPEGs (generated here, deterministically: 640x480,
smooth multi-scale noise plus filled shapes at the object boxes, quality 90, ~7 objects of
COCO-like sizes each, 80 classes) and do, per example, in one thread:

The task, class count and normalisation are those of ``config`` (default the COCO 2D
detection recipe of ``configs/hourglass.py``: 80 classes).

* ``device_targets`` (this project): ``cv2.imdecode`` -> ``TrainTransform`` (official
  defaults: random crop, flip, colour augmentation, normalisation to 512x512) -> batch
  (``np.stack`` per field, as Grain's ``batch`` does) of the fields the train step
  receives (``train.train_fields``: the image, the task's padded fields and the int32
  bad-data counters). The targets are rendered inside the jitted train step.
* ``host_targets`` (the official loader's split): the same, plus the task's targets
  rendered on the host one object at a time, as the official loader does
  (``Task.reference.image_targets``; for 2D detection a [80, 128, 128] float32 heatmap,
  sizes and offsets [128, 2], indices and a mask), and the batch holds the image and
  every target array. This is a lower bound on the official loader's host cost: the boxes
  go through the affine vectorised here (officially one Python call per corner), and the
  official loader's unused zero arrays (dense_wh, cat_spec_wh / mask) are not allocated.

Both use the same augmentation draws per example. Cost per example is process CPU time
(``time.process_time``) with OpenCV held to one thread, split by stage (decode,
transform, render, batch); ``cpu_over_wall`` ~ 1 confirms one busy core. The host -> device
bytes per example are the bytes of the arrays each batch ships. Finally the device
renderer (``Task.targets``, jitted) is timed on one batch of the same boxes, after
checking that it equals the host renderer there, so the trade is visible: host CPU saved
per example vs device time spent per example.

Every pass over the images is repeated ``rounds`` times, the two pipelines alternating;
times are medians over rounds.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import statistics
import time
from typing import Any, Callable, Sequence

import cv2
import jax
import numpy as np

from centernet_jax import tasks, train
from centernet_jax.benchmarks.models import load_config
from centernet_jax.benchmarks.registry import register
from centernet_jax.benchmarks.timing import median_seconds
from centernet_jax.data.transforms import TrainTransform

PIPELINES = ("device_targets", "host_targets")
STAGES = ("decode", "transform", "render", "batch")
JPEG_QUALITY = 90
# Objects per image: 1 + Poisson(MEAN_OBJECTS - 1) (COCO train2017: 7.3 on average).
MEAN_OBJECTS = 7.0
# Object sides (sqrt of the area) are log-uniform in this range of the image's short side:
# 6 to 320 px on 480 gives ~42% small (< 32^2), 28% medium, 30% large (COCO: 41/34/24).
SIDE_RANGE = (6 / 480, 320 / 480)
MAX_ASPECT = 3.0  # width / height log-uniform in [1 / 3, 3]


@dataclasses.dataclass(frozen=True)
class InputSettings:
    """What one run measures. ``images`` distinct JPEGs of ``image_hw`` are generated and
    each pipeline reads all of them ``rounds`` times, in batches of ``batch``."""

    config: str = "configs/hourglass.py"  # its task, class count and normalisation
    image_hw: tuple[int, int] = (480, 640)
    input_hw: tuple[int, int] = (512, 512)
    max_objects: int = 128
    images: int = 96
    batch: int = 16
    rounds: int = 3
    render_iters: int = 10
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What ``InputSettings.config`` contributes: the task and the transform's facts."""

    task: Any
    output_hw: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, settings: InputSettings) -> "_Setup":
        config = load_config(settings.config)[1]
        task = tasks.make_task(config)
        if task.reference is None:
            raise ValueError(f"the {task.name} task has no host reference to compare with")
        return cls(task=task,
                   output_hw=task.output_hw(settings.input_hw, config.input.down_ratio),
                   mean=tuple(config.input.mean), std=tuple(config.input.std))


# ~20 s on 2 CPU cores: ~4 s generating the JPEGs, ~10 s timed passes, the rest warm-up,
# compiling and timing the device renderer.
DEFAULT = InputSettings()
# A handful of small images: seconds, for tests.
QUICK = InputSettings(image_hw=(48, 64), input_hw=(64, 64), images=4, batch=2, rounds=1,
                      render_iters=3)

TABLE_COLUMNS = ("pipeline", "cpu_ms_per_example", "cpu_ratio", "images_per_s_per_core",
                 "wall_images_per_s", "cpu_over_wall", "decode_cpu_ms", "transform_cpu_ms",
                 "render_cpu_ms", "batch_cpu_ms", "h2d_mbyte_per_example", "bytes_ratio")

NOTE = (
    "One thread, OpenCV at 1 thread. cpu_ms: process CPU time per example (median over "
    "rounds), split into decode (cv2.imdecode of in-memory JPEG bytes), transform "
    "(TrainTransform: crop, flip, warp, colour, normalise), render (host targets, one "
    "object at a time) and batch (np.stack of the shipped fields). images_per_s_per_core "
    "= 1000 / cpu_ms; wall_images_per_s is the measured one-thread rate (noisy where other "
    "jobs share the cores). cpu_ratio / bytes_ratio: per example, relative to "
    "device_targets. h2d bytes: what each batch ships to the device per example "
    "(device_targets: train.train_fields; host_targets: the image and the official "
    "target arrays with their dtypes). The image is HWC float32 in both (the official "
    "loader's CHW transpose is a view, copied at collation either way). host_targets is a "
    "lower bound on the official loader (vectorised box affine, no unused zero arrays). "
    "device_render: "
    "the task's jitted targets on one batch of the same boxes, on the default JAX "
    "device (on a CPU backend that is the same host cores).")


# ---------------------------------------------------------------------------------------
# Synthetic JPEGs


def _smooth_noise(rng: np.random.Generator, height: int, width: int, channels: int,
                  cell_sizes: Sequence[int], amplitude: float) -> np.ndarray:
    """float32 [H, W, C]: Gaussian noise on coarse grids of ``cell_sizes`` px, bicubically
    upsampled and summed, each octave's std ``amplitude * sqrt(cell)`` (1/f-like)."""
    out = np.zeros((height, width, channels), np.float32)
    for cell in cell_sizes:
        coarse = rng.standard_normal((height // cell + 2, width // cell + 2, channels))
        # Upsample past the borders and crop, so no octave is aligned to the image edge.
        fine = cv2.resize(coarse.astype(np.float32), (width + 2 * cell, height + 2 * cell),
                          interpolation=cv2.INTER_CUBIC)
        out += amplitude * math.sqrt(cell) * fine[cell:cell + height, cell:cell + width
                                                  ].reshape(height, width, channels)
    return out


def synthetic_boxes(rng: np.random.Generator, image_hw: Sequence[int], count: int
                    ) -> np.ndarray:
    """float32 [count, 4] (x1, y1, x2, y2) inside the image, COCO-like sizes (``SIDE_RANGE``
    of the short side, log-uniform; aspect log-uniform in [1/3, 3]), at least 1 px."""
    height, width = image_hw
    short = min(height, width)
    log_side = rng.uniform(math.log(SIDE_RANGE[0] * short), math.log(SIDE_RANGE[1] * short),
                           count)
    log_aspect = rng.uniform(-math.log(MAX_ASPECT), math.log(MAX_ASPECT), count)
    box_w = np.clip(np.exp(log_side + log_aspect / 2), 1.0, width)
    box_h = np.clip(np.exp(log_side - log_aspect / 2), 1.0, height)
    x1 = rng.uniform(0, width - box_w)
    y1 = rng.uniform(0, height - box_h)
    return np.stack([x1, y1, x1 + box_w, y1 + box_h], -1).astype(np.float32)


def synthetic_image(rng: np.random.Generator, image_hw: Sequence[int], boxes: np.ndarray
                    ) -> np.ndarray:
    """uint8 BGR [H, W, 3] that compresses like a photo: a smooth luminance and colour
    background, a filled rectangle or ellipse of a random colour per box, fine grain."""
    height, width = image_hw
    image = (110.0 + _smooth_noise(rng, height, width, 1, (64, 16, 4), 8.0)
             + _smooth_noise(rng, height, width, 3, (64, 16), 2.5))
    for x1, y1, x2, y2 in boxes:
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), colour, -1)
        else:
            cv2.ellipse(image, (int((x1 + x2) / 2), int((y1 + y2) / 2)),
                        (int((x2 - x1) / 2), int((y2 - y1) / 2)), 0.0, 0.0, 360.0, colour, -1)
    image += (_smooth_noise(rng, height, width, 1, (2,), 11.0)
              + _smooth_noise(rng, height, width, 3, (2,), 3.0))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_examples(settings: InputSettings, num_classes: int) -> list[dict[str, Any]]:
    """``settings.images`` examples: ``jpeg`` (bytes, quality 90), ``boxes`` float32 [n, 4]
    in image pixels, ``classes`` int32 [n] in [0, num_classes), n ~ 1 + Poisson(6)."""
    examples = []
    for index in range(settings.images):
        rng = np.random.default_rng([settings.seed, index])
        count = 1 + int(rng.poisson(MEAN_OBJECTS - 1))
        boxes = synthetic_boxes(rng, settings.image_hw, count)
        image = synthetic_image(rng, settings.image_hw, boxes)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        examples.append({"jpeg": encoded.tobytes(), "boxes": boxes,
                         "classes": rng.integers(0, num_classes, count).astype(np.int32),
                         "image_id": np.int64(index + 1)})
    return examples


def decode(example: dict[str, Any]) -> dict[str, Any]:
    """A source element (uint8 BGR image, boxes, classes, image_id) from an example."""
    image = cv2.imdecode(np.frombuffer(example["jpeg"], np.uint8), cv2.IMREAD_COLOR)
    return {"image": image, "boxes": example["boxes"], "classes": example["classes"],
            "image_id": example["image_id"],
            "image_hw": np.array(image.shape[:2], np.int32)}


# ---------------------------------------------------------------------------------------
# The two pipelines


class Pipeline:
    """One pipeline's per-example stages; ``run`` times a pass over the examples."""

    def __init__(self, name: str, settings: InputSettings, setup: _Setup):
        if name not in PIPELINES:
            raise ValueError(f"unknown pipeline {name!r}; known: {PIPELINES}")
        self.name, self.settings, self.setup = name, settings, setup
        self.transform = TrainTransform(input_hw=settings.input_hw, output_hw=setup.output_hw,
                                        mean=setup.mean, std=setup.std,
                                        max_objects=settings.max_objects)
        self.fields = (train.train_fields(setup.task) if name == "device_targets"
                       else ("image", *setup.task.reference.shipped_fields))

    def render(self, transformed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The official targets of one transformed example (host_targets only)."""
        return self.setup.task.reference.image_targets(
            transformed, self.setup.output_hw, self.settings.max_objects)

    def run(self, examples: Sequence[dict[str, Any]], clock: Callable[[], float]
            ) -> tuple[dict[str, float], int, dict[str, np.ndarray]]:
        """One pass over ``examples``.

        Returns:
          (``clock`` seconds per stage summed over the pass plus ``wall`` seconds, bytes of
          every batch, the first batch). Later batches are dropped as soon as they are
          counted, as a trainer hands them to the device, so the allocator reuses memory.
        """
        spent = dict.fromkeys(STAGES, 0.0)
        num_bytes, first_batch, pending = 0, None, []
        wall_start = time.perf_counter()
        for index, example in enumerate(examples):
            start = clock()
            element = decode(example)
            decoded = clock()
            # The same augmentation draws for every pipeline and round.
            rng = np.random.default_rng([self.settings.seed, index])
            record = self.transform.random_map(element, rng)
            transformed = clock()
            if self.name == "host_targets":
                record.update(self.render(record))
            rendered = clock()
            pending.append(record)
            if len(pending) == self.settings.batch or index == len(examples) - 1:
                batch = {k: np.stack([r[k] for r in pending]) for k in self.fields}
                num_bytes += shipped_bytes(batch)
                first_batch = batch if first_batch is None else first_batch
                pending = []
            batched = clock()
            spent["decode"] += decoded - start
            spent["transform"] += transformed - decoded
            spent["render"] += rendered - transformed
            spent["batch"] += batched - rendered
        spent["wall"] = time.perf_counter() - wall_start
        return spent, num_bytes, first_batch


def shipped_bytes(batch: dict[str, np.ndarray]) -> int:
    """Bytes of every array of a batch (what goes host -> device)."""
    return sum(int(array.nbytes) for array in batch.values())


# ---------------------------------------------------------------------------------------
# The benchmark


def _device_render(settings: InputSettings, setup: _Setup, batch: dict[str, np.ndarray]
                   ) -> tuple[float, float]:
    """(median seconds of the jitted device renderer on ``batch``, max |difference| to
    the host renderer on the same boxes; raises if any target disagrees)."""
    task, reference = setup.task, setup.task.reference
    render = jax.jit(functools.partial(task.targets, output_hw=setup.output_hw))
    fields = jax.device_put({k: batch[k] for k in task.batch_fields})
    want = reference.targets(batch, setup.output_hw)
    diff = reference.check_targets(render(fields), want)
    return median_seconds(render, fields, iters=settings.render_iters), diff


def measure(settings: InputSettings) -> dict[str, Any]:
    """Every measurement in the module docstring for ``settings``."""
    if min(settings.images, settings.batch, settings.rounds, settings.render_iters) < 1:
        raise ValueError(f"images, batch, rounds and render_iters must be positive: {settings}")
    start = time.perf_counter()
    setup = _Setup.of(settings)
    examples = make_examples(settings, setup.task.num_classes)
    generate_s = time.perf_counter() - start
    pipelines = [Pipeline(name, settings, setup) for name in PIPELINES]

    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # per core: OpenCV would otherwise spread warps over every core
    try:
        for pipeline in pipelines:  # warm-up: code paths, allocator, caches
            pipeline.run(examples[:settings.batch], time.process_time)
        passes = {name: [] for name in PIPELINES}
        shipped, first_batches = {}, {}
        for _ in range(settings.rounds):
            for pipeline in pipelines:
                spent, shipped[pipeline.name], first_batches[pipeline.name] = pipeline.run(
                    examples, time.process_time)
                passes[pipeline.name].append(spent)
    finally:
        cv2.setNumThreads(cv2_threads)

    count = len(examples)
    rows = []
    for pipeline in pipelines:
        runs = passes[pipeline.name]
        cpu_ms = _per_example_ms(runs, count, lambda p: sum(p[stage] for stage in STAGES))
        wall_ms = _per_example_ms(runs, count, operator.itemgetter("wall"))
        stage_ms = {f"{stage}_cpu_ms": _per_example_ms(runs, count, operator.itemgetter(stage))
                    for stage in STAGES}
        num_bytes = shipped[pipeline.name] / count
        rows.append({
            "pipeline": pipeline.name,
            "targets_on": "device" if pipeline.name == "device_targets" else "host",
            "examples": count, "rounds": settings.rounds,
            "cpu_ms_per_example": cpu_ms,
            "wall_ms_per_example": wall_ms,
            "images_per_s_per_core": 1e3 / cpu_ms,
            "wall_images_per_s": 1e3 / wall_ms,
            "cpu_over_wall": cpu_ms / wall_ms,
            **stage_ms,
            "h2d_bytes_per_example": num_bytes,
            "h2d_mbyte_per_example": num_bytes / 1e6,
            "h2d_fields": ",".join(pipeline.fields),
        })
    device_row, host_row = rows
    for row in rows:
        row["cpu_ratio"] = row["cpu_ms_per_example"] / device_row["cpu_ms_per_example"]
        row["bytes_ratio"] = row["h2d_bytes_per_example"] / device_row["h2d_bytes_per_example"]

    render_batch = first_batches["device_targets"]
    render_s, render_diff = _device_render(settings, setup, render_batch)
    render_examples = len(render_batch["image"])
    summary = {
        "host_over_device_cpu": host_row["cpu_ratio"],
        "device_over_host_images_per_core": (device_row["images_per_s_per_core"]
                                             / host_row["images_per_s_per_core"]),
        "host_over_device_bytes": host_row["bytes_ratio"],
        "host_cpu_saved_ms_per_example": (host_row["cpu_ms_per_example"]
                                          - device_row["cpu_ms_per_example"]),
        "device_render_ms_per_example": 1e3 * render_s / render_examples,
        "device_render_ms_per_batch": 1e3 * render_s,
        "device_render_batch": render_examples,
        "device_render_max_abs_diff": render_diff,
    }
    jpeg_bytes = [len(e["jpeg"]) for e in examples]
    return {
        "image_hw": _hw(settings.image_hw), "input_hw": _hw(settings.input_hw),
        "config": settings.config, "task": setup.task.name,
        "output_hw": _hw(setup.output_hw), "num_classes": setup.task.num_classes,
        "max_objects": settings.max_objects, "images": count, "batch": settings.batch,
        "rounds": settings.rounds, "num_threads": 1, "cv2_threads": 1,
        "objects_per_image": float(np.mean([len(e["boxes"]) for e in examples])),
        "jpeg_kbyte": float(np.mean(jpeg_bytes)) / 1e3, "jpeg_quality": JPEG_QUALITY,
        "generate_s": generate_s, "total_s": time.perf_counter() - start,
        "note": NOTE, "rows": rows, "table_columns": list(TABLE_COLUMNS),
        "summary": [summary],
    }


def _per_example_ms(passes: Sequence[dict[str, float]], count: int,
                    seconds_of_pass: Callable[[dict[str, float]], float]) -> float:
    """Milliseconds per example: the median over passes of ``seconds_of_pass``."""
    return 1e3 * statistics.median(seconds_of_pass(p) for p in passes) / count


def _hw(size: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in size)


@register("input")
def bench_input(quick: bool, images: int | None = None, batch: int | None = None
                ) -> dict[str, Any]:
    """Host input-pipeline cost per core with device- vs host-rendered targets.

    Args:
      quick: ``QUICK`` settings (4 images of 64x48 to 64x64, batch 2, one round).
      images: generated JPEGs per pass (default 96, quick 4).
      batch: examples per host batch and per device-renderer call (default 16, quick 2).

    Returns:
      ``rows`` (one per pipeline), ``summary`` (the ratios and the device renderer's
      time) and the run-wide settings.
    """
    settings = QUICK if quick else DEFAULT
    overrides = {k: v for k, v in (("images", images), ("batch", batch)) if v is not None}
    return measure(dataclasses.replace(settings, **overrides))
