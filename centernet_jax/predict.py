r"""Detections on your own images: the task's JSON results and annotated pictures.

  python -m centernet_jax.predict --config=configs/hourglass.py:demo --workdir=runs/demo \
      --input='photos/*.jpg' --output=runs/demo/predictions [--checkpoint=best] [--flip]

``--input`` is one image, a directory (its images, not recursive) or a glob; images of any
size and aspect ratio are letterboxed to the config's evaluation size exactly as in
evaluation (official ``fix_res``) and run in batches of a fixed size, so the model compiles
once. Files that cannot be decoded are skipped with a warning and listed in the summary.
Inputs and outputs may live in a bucket (``gs://...``).

``--output`` receives:

  detections.json  the task's results (``Task.results``) with "file_name" (and
                   "category_name") added to each record: for 2D detection COCO results
                   [{"image_id", "file_name", "category_id", "category_name",
                   "bbox": [x, y, w, h], "score"}], every top-k (``eval.top_k``)
                   detection with ``score >= --score_threshold``. Coordinates are in
                   original-image pixels and, like the official results, NOT clipped.
  images.json      {"<image_id>": {"file_name", "path", "height", "width", "picture"}};
                   ids are 1, 2, ... over the readable images in input order.
  summary.json     counts, timings, skipped files and the checkpoint used.
  <stem>.png       the task's picture of the detections scoring >= --draw_threshold
                   (default ``eval.vis_threshold``) on the original image;
                   ``<stem>_<id>.png`` where names clash.

No dataset is read: class names come from constants (the embedded shapes dataset, COCO),
so a COCO model runs without COCO on disk. From a notebook::

  from centernet_jax import load_config, predict
  summary = predict.predict(load_config("configs/hourglass.py:demo"), "photos/", "out/",
                            workdir="runs/demo")
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob
import json
import os
import tempfile
import time
from typing import Any, Iterable, Iterator, Sequence

import cv2
import jax
import numpy as np
from absl import logging

from etils import epath

from centernet_jax import assembly, config_checks, inference, paths, runtime, viz
from centernet_jax.data import coco, shapes, sources, voc

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DETECTIONS_FILE = "detections.json"
IMAGES_FILE = "images.json"
SUMMARY_FILE = "summary.json"
# Decimals kept in detections.json: 1/1000 pixel and 1e-6 in score are far below what
# the model resolves, and they keep the file a third of the size of full float64 text.
_COORDINATE_DECIMALS = 3
_SCORE_DECIMALS = 6


# -- Inputs ---------------------------------------------------------------------------------


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _glob(pattern: str) -> list[str]:
    """Files matching ``pattern``, local or in a bucket (wildcards after the bucket name)."""
    if not paths.is_remote(pattern):
        return glob.glob(pattern)
    parts = pattern.split("/")
    first = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    if first == len(parts):
        return [pattern]
    base = epath.Path("/".join(parts[:first]))
    return [str(path) for path in base.glob("/".join(parts[first:]))]


def find_images(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The image files named by ``inputs``, in order, without duplicates.

    Each entry is an image file (taken whatever its extension), a directory (its files with
    an image extension, not recursive, sorted by name) or a glob pattern (its matching
    files with an image extension, sorted); local or in a bucket (``gs://...``).

    Raises:
      FileNotFoundError: no file found, naming what was searched.
    """
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: dict[str, None] = {}  # ordered set
    for spec in specs:
        spec = os.fspath(spec)
        spec = spec if paths.is_remote(spec) else os.path.expanduser(spec)
        path = epath.Path(spec)
        if path.is_file():
            matches = [spec]
        elif path.is_dir():
            matches = sorted(str(child) for child in path.iterdir()
                             if _is_image_name(child.name) and child.is_file())
        else:
            matches = sorted(match for match in _glob(spec)
                             if _is_image_name(match) and epath.Path(match).is_file())
        found.update(dict.fromkeys(matches))
    if not found:
        raise FileNotFoundError(
            f"No input images found in {', '.join(repr(os.fspath(s)) for s in specs)}: "
            f"expected an image file, a directory holding {'/'.join(IMAGE_EXTENSIONS)} "
            "files, or a glob matching some.")
    return list(found)


def read_image(path: str) -> np.ndarray:
    """uint8 BGR [h, w, 3], as the model expects; grayscale is replicated, alpha dropped.

    Decodes from bytes (``cv2.imread`` fails silently and on some platforms on non-ASCII
    paths, and cannot read buckets); EXIF orientation is applied, 16-bit images are scaled
    to 8 bits.

    Raises:
      ValueError: an empty or undecodable file.
      OSError: an unreadable file.
    """
    data = np.frombuffer(epath.Path(path).read_bytes(), dtype=np.uint8)
    if data.size == 0:
        raise ValueError("empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError("not a decodable image")
    return image


# -- Class names ----------------------------------------------------------------------------


def class_names(dataset_config, num_classes: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(names, COCO category ids) of the model's classes, without reading the dataset.

    Names recorded by training (``dataset.class_names``/``category_ids``, read back from the
    run's config.json) come first; then shapes, COCO and VOC use their constants; any other
    dataset (or a class count that does not match) gets ``class_<i>`` with ids 1..C.
    """
    recorded = dataset_config.get("class_names") if hasattr(dataset_config, "get") else None
    if recorded and len(recorded) == num_classes:  # written by training (fill_dataset_facts)
        ids = dataset_config.get("category_ids") or range(1, num_classes + 1)
        return tuple(recorded), tuple(int(i) for i in ids)
    name = dataset_config.get("name") if hasattr(dataset_config, "get") else None
    known = {
        "shapes": (tuple(shapes.CLASS_NAMES), tuple(range(1, len(shapes.CLASS_NAMES) + 1))),
        "coco": (tuple(coco.COCO_CLASS_NAMES), tuple(coco.COCO_CATEGORY_IDS)),
        "voc": (tuple(voc.CLASS_NAMES), tuple(voc.CATEGORY_IDS)),
    }
    if name in known and len(known[name][0]) == num_classes:
        return known[name]
    if name in known:
        logging.warning("dataset %r has %d classes but the model %d: naming them class_<i>.",
                        name, len(known[name][0]), num_classes)
    return (tuple(f"class_{i}" for i in range(num_classes)),
            tuple(range(1, num_classes + 1)))


# -- Host pipeline --------------------------------------------------------------------------


@dataclasses.dataclass
class _Loaded:
    """One decoded, letterboxed image (``element`` from ``EvalTransform.map``)."""

    path: str
    bgr: np.ndarray | None  # the original, kept only for drawing
    element: dict[str, np.ndarray] | None = None  # image [H, W, 3], center [2], scale [2]
    error: str | None = None


def _load(path: str, transform, keep_original: bool) -> _Loaded:
    try:
        bgr = read_image(path)
    except (OSError, ValueError, cv2.error) as error:
        return _Loaded(path, None, error=str(error).strip().splitlines()[-1] or "unreadable")
    element = transform.map({"image": bgr, "boxes": np.zeros((0, 4), np.float32),
                             "classes": np.zeros((0,), np.int32)})
    return _Loaded(path, bgr if keep_original else None, element)


def _prefetched(pool: concurrent.futures.Executor, paths: Iterable[str], transform,
                keep_original: bool, depth: int) -> Iterator[_Loaded]:
    """Loads ``paths`` in ``pool`` with up to ``depth`` in flight; yields in input order."""
    pending: collections.deque[concurrent.futures.Future] = collections.deque()
    for path in paths:
        pending.append(pool.submit(_load, path, transform, keep_original))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _batches(loaded: Iterator[_Loaded], batch_size: int,
             on_skip) -> Iterator[list[_Loaded]]:
    """Groups the readable images into lists of up to ``batch_size``; reports the rest."""
    batch: list[_Loaded] = []
    for item in loaded:
        if item.error is not None:
            on_skip(item)
            continue
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stack_padded(batch: list[_Loaded], batch_size: int, fields: Sequence[str]
                  ) -> dict[str, np.ndarray]:
    """Stacks ``image`` and the task's eval ``fields`` and pads to ``batch_size`` rows.

    Padding rows are zero images with the first row's other fields (e.g. a valid window);
    their detections are dropped.
    """
    stacked = {}
    for key in ("image", *fields):
        rows = [item.element[key] for item in batch]
        pad = np.zeros_like(rows[0]) if key == "image" else rows[0]
        stacked[key] = np.stack(rows + [pad] * (batch_size - len(rows)))
    return stacked


def _atomic_write_json(path: str, obj: Any) -> None:
    """Writes JSON to a temporary file in the same directory, then renames it over ``path``
    (a bucket object is written whole in one request)."""
    if paths.is_remote(path):
        epath.Path(path).write_text(json.dumps(obj))
        return
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w") as f:
            json.dump(obj, f)
        os.chmod(temporary, 0o644)  # mkstemp makes it private
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _canonical(path: str) -> str:
    """A path's one spelling: symbolic links resolved locally, bucket paths as given."""
    return path if paths.is_remote(path) else os.path.realpath(path)


class _PictureNames:
    """``<stem>.png`` in the output directory; ``<stem>_<id>.png`` when that is taken."""

    def __init__(self, output_dir: str, inputs: Sequence[str]):
        self.output_dir = output_dir
        # Never overwrite an input (output directory == input directory).
        self.taken = {_canonical(path) for path in inputs}

    def __call__(self, path: str, image_id: int) -> str:
        stem = os.path.splitext(os.path.basename(path))[0]
        for name in (f"{stem}.png", f"{stem}_{image_id}.png"):
            target = _canonical(str(epath.Path(self.output_dir) / name))
            if target not in self.taken:
                self.taken.add(target)
                return name
        raise FileExistsError(f"no free picture name for {path} in {self.output_dir}")


def _draw_and_save(path: str, task, bgr: np.ndarray, detections: dict[str, np.ndarray],
                   names: Sequence[str], threshold: float) -> None:
    picture = task.draw(np.ascontiguousarray(bgr[..., ::-1]), detections, class_names=names,
                        threshold=threshold)
    viz.save_png(path, picture)


def _keep_rows(detections: dict[str, np.ndarray], score_threshold: float
               ) -> tuple[dict[str, np.ndarray], int]:
    """One image's detections with a finite value everywhere and ``score >=
    score_threshold``; and how many rows were dropped for a non-finite value."""
    finite = np.ones(len(detections["scores"]), bool)
    for value in detections.values():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating):
            finite &= np.isfinite(value.reshape(len(value), -1)).all(-1)
    keep = finite & (detections["scores"] >= score_threshold)
    return {k: np.asarray(v)[keep] for k, v in detections.items()}, int(np.sum(~finite))


# -- Prediction -----------------------------------------------------------------------------


def predict(config, inputs: str | os.PathLike | Sequence[str | os.PathLike],
            output_dir: str, *, workdir: str | None = None, checkpoint: str = "best",
            flip: bool = False, batch_size: int = 8, score_threshold: float = 0.0,
            draw_threshold: float | None = None, pictures: bool = True,
            log_every: int = 100, num_threads: int = 4) -> dict[str, Any]:
    """Detects objects in image files; writes JSON results and pictures to ``output_dir``.

    Args:
      config: the model's config (``configs/*.py``); only model, input and eval fields
        are read, never the dataset.
      inputs: an image file, a directory, a glob, or a list of these (``find_images``).
      output_dir: created if needed; see the module docstring for what it receives.
      workdir, checkpoint: which variables to load (``inference.load_variables``).
      flip: the flip test (the image and its mirror image, combined by the task's decode).
      batch_size: images per forward pass; the last batch is padded to it.
      score_threshold: detections scoring below it are left out of detections.json.
      draw_threshold: detections drawn on pictures; default ``config.eval.vis_threshold``.
      pictures: write the annotated PNGs.
      log_every: log progress every this many input files.
      num_threads: host threads decoding, letterboxing and drawing images.

    Returns:
      A summary: ``num_inputs``, ``num_images`` (read and detected), ``num_detections``,
      ``num_skipped`` and ``skipped`` ([{"path", "reason"}]), ``seconds`` (the loop, after
      loading and compiling) and ``images_per_second``, ``compile_seconds``,
      ``checkpoint``/``step``, and the output file paths.

    Raises:
      FileNotFoundError: no input image, or no such checkpoint.
      ValueError: a non-positive ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    draw_threshold = config.eval.vis_threshold if draw_threshold is None else draw_threshold
    files = find_images(inputs)  # fails before any model work
    output_dir = str(paths.resolve(output_dir))
    epath.Path(output_dir).mkdir(parents=True, exist_ok=True)

    config = config_checks.resolved_copy(config)
    runtime.prepare(config)
    sources.fill_dataset_facts_from_run(config, workdir)
    parts = assembly.assemble(config)
    task = parts.task
    loaded = inference.load_variables(parts, workdir=workdir, checkpoint=checkpoint)
    variables = loaded.variables
    names, category_ids = class_names(config.dataset, task.num_classes)
    transform = inference.make_eval_transform(parts)
    grid_hw = transform.output_hw
    device = next(iter(jax.tree.leaves(variables)[0].sharding.device_set))
    image_spec = jax.ShapeDtypeStruct(
        (batch_size, *transform.input_hw, 3), np.float32,
        sharding=jax.sharding.SingleDeviceSharding(device))

    start = time.time()
    detect = jax.jit(inference.make_detect_fn(parts.model, task, top_k=config.eval.top_k,
                                              flip=flip))
    detect = detect.lower(variables, image_spec).compile()
    compile_seconds = time.time() - start
    logging.info("Predicting %d files with %s (%s, batch %d, input %s, top %d); compiled "
                 "in %.1f s.", len(files), loaded.source, "flip" if flip else "plain",
                 batch_size, tuple(transform.input_hw), config.eval.top_k, compile_seconds)

    name_picture = _PictureNames(output_dir, files)
    results: list[dict[str, Any]] = []
    images: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, str]] = []
    num_nonfinite = 0
    drawing: collections.deque[concurrent.futures.Future] = collections.deque()
    pool = concurrent.futures.ThreadPoolExecutor(max(1, num_threads))
    start = time.time()
    next_log = log_every

    def on_skip(item: _Loaded) -> None:
        logging.warning("Skipping %s: %s.", item.path, item.error)
        skipped.append({"path": item.path, "reason": item.error})

    def log_progress(final: bool = False) -> None:
        nonlocal next_log
        done = len(images) + len(skipped)
        if not final and (log_every <= 0 or done < next_log):
            return
        next_log = (done // max(log_every, 1) + 1) * max(log_every, 1)
        elapsed = max(time.time() - start, 1e-9)
        rate = done / elapsed
        eta = (len(files) - done) / rate if rate > 0 else float("inf")
        logging.info("Predicted %d/%d files (%d skipped), %.1f images/s, ETA %.0f s.",
                     done, len(files), len(skipped), rate, eta)

    def finish(batch: list[_Loaded], stacked: dict[str, np.ndarray],
               detections: dict[str, jax.Array]) -> None:
        """Host side of one batch: map detections back, collect results, queue pictures."""
        nonlocal num_nonfinite
        count = len(batch)
        detections = {k: np.asarray(v)[:count] for k, v in detections.items()}
        in_image = task.to_image_detections(
            detections, {k: stacked[k][:count] for k in task.eval_fields}, grid_hw)
        category_names = dict(zip(category_ids, names))
        for i, item in enumerate(batch):
            image_id = len(images) + 1
            found, nonfinite = _keep_rows({k: v[i] for k, v in in_image.items()},
                                          score_threshold)
            num_nonfinite += nonfinite
            file_name = os.path.basename(item.path)
            for record in task.results(image_id, found, category_ids,
                                       coordinate_decimals=_COORDINATE_DECIMALS,
                                       score_decimals=_SCORE_DECIMALS):
                named = {"image_id": image_id, "file_name": file_name}
                if "category_id" in record:
                    named.update(category_id=record["category_id"],
                                 category_name=category_names[record["category_id"]])
                results.append({**named, **record})
            height, width = item.element["image_hw"]
            picture = name_picture(item.path, image_id) if pictures else None
            images[str(image_id)] = {"file_name": file_name,
                                     "path": str(paths.resolve(item.path)),
                                     "height": int(height), "width": int(width),
                                     "picture": picture}
            if picture:
                drawing.append(pool.submit(
                    _draw_and_save, str(epath.Path(output_dir) / picture), task, item.bgr,
                    found, names, draw_threshold))
            item.bgr = item.element = None  # free the pixels early
        while drawing and (drawing[0].done() or len(drawing) > 2 * batch_size):
            drawing.popleft().result()  # re-raises a failed save
        log_progress()

    try:
        stream = _prefetched(pool, files, transform, keep_original=pictures,
                             depth=2 * batch_size)
        in_flight = None  # the previous batch: its host work overlaps this batch's compute
        for batch in _batches(stream, batch_size, on_skip):
            stacked = _stack_padded(batch, batch_size, task.eval_fields)
            detections = detect(variables, jax.device_put(stacked["image"], device))
            if in_flight is not None:
                finish(*in_flight)
            in_flight = (batch, stacked, detections)
        if in_flight is not None:
            finish(*in_flight)
        while drawing:
            drawing.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.time() - start
    log_progress(final=True)

    if num_nonfinite:
        logging.warning("Dropped %d non-finite detections.", num_nonfinite)
    detections_file = str(epath.Path(output_dir) / DETECTIONS_FILE)
    images_file = str(epath.Path(output_dir) / IMAGES_FILE)
    _atomic_write_json(detections_file, results)
    _atomic_write_json(images_file, images)
    summary = {
        "num_inputs": len(files),
        "num_images": len(images),
        "num_detections": len(results),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "num_nonfinite_dropped": num_nonfinite,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(images) / max(seconds, 1e-9), 2),
        "compile_seconds": round(compile_seconds, 3),
        "checkpoint": loaded.source,
        "step": loaded.step,
        "flip": bool(flip),
        "score_threshold": float(score_threshold),
        "draw_threshold": float(draw_threshold) if pictures else None,
        "categories": [{"id": int(i), "name": n} for i, n in zip(category_ids, names)],
        "detections_file": detections_file,
        "images_file": images_file,
    }
    _atomic_write_json(str(epath.Path(output_dir) / SUMMARY_FILE), summary)
    logging.info("Done: %d images, %d detections, %d skipped, %.1f s (%.1f images/s); "
                 "results in %s.", len(images), len(results), len(skipped), seconds,
                 summary["images_per_second"], detections_file)
    return summary


# -- Command line ---------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    import sys  # pylint: disable=g-import-not-at-top

    from absl import flags  # pylint: disable=g-import-not-at-top

    from centernet_jax import cli  # pylint: disable=g-import-not-at-top

    config = cli.config_from_flags(argv)
    with cli.exit_on_user_error():
        summary = predict(
            config, flags.FLAGS.input, flags.FLAGS.output, workdir=flags.FLAGS.workdir,
            checkpoint=flags.FLAGS.checkpoint, flip=flags.FLAGS.flip,
            batch_size=flags.FLAGS.batch_size, score_threshold=flags.FLAGS.score_threshold,
            draw_threshold=flags.FLAGS.draw_threshold, pictures=not flags.FLAGS.no_pictures)
    print(f"{summary['num_images']} images, {summary['num_detections']} detections, "
          f"{summary['num_skipped']} skipped, {summary['seconds']:.1f} s "
          f"({summary['images_per_second']:.1f} images/s): {summary['detections_file']}")
    for entry in summary["skipped"]:
        print(f"skipped {entry['path']}: {entry['reason']}")
    if summary["num_images"] == 0:
        sys.exit(f"error: none of the {summary['num_inputs']} input files could be read.")


def _define_flags() -> None:
    from absl import flags  # pylint: disable=g-import-not-at-top

    from centernet_jax import cli  # pylint: disable=g-import-not-at-top

    cli.define_config_flags(workdir_help="The training run's directory (not needed for a "
                            "converted checkpoint).")
    cli.define_checkpoint_flag()
    flags.DEFINE_string("input", None, "An image, a directory of images or a glob (quote it).",
                        required=True)
    flags.DEFINE_string("output", None, "Directory for detections.json, images.json and "
                        "the pictures.", required=True)
    flags.DEFINE_bool("flip", False, "Flip test: average with the mirrored image.")
    flags.DEFINE_integer("batch_size", 8, "Images per forward pass.", lower_bound=1)
    flags.DEFINE_float("score_threshold", 0.0, "Leave detections scoring below this out of "
                       "detections.json.")
    flags.DEFINE_float("draw_threshold", None, "Draw boxes scoring at least this "
                       "(default: the config's eval.vis_threshold).")
    flags.DEFINE_bool("no_pictures", False, "Write no annotated PNGs.")


if __name__ == "__main__":
    from centernet_jax import cli  # pylint: disable=g-import-not-at-top

    _define_flags()
    cli.run(main)
