r"""Evaluation with the paper's three test modes, during training and on its own.

  python -m centernet_jax.evaluate --config=configs/hourglass.py:demo --workdir=runs/demo \
      --mode=flip [--checkpoint=best|latest|STEP|CONVERTED_DIR]

Modes (Objects as Points, Zhou et al. 2019, and the official test script):
  plain       one forward pass at the evaluation size.
  flip        the batch and its mirror image in one pass; the task's decode combines them.
  multiscale  the image at each of ``eval.test_scales`` (with flip when
              ``eval.multiscale_flip``); per image, the task merges the scales (2D
              detection: per-class Gaussian soft-NMS, then ``eval.max_per_image``).

``eval.soft_nms`` chooses the official soft-NMS, whose discarded boxes stay in the results
as stale duplicate rows, or the corrected one that drops them. The task's evaluator scores
the detections (COCO for 2D detection); its results and metrics go to the workdir and to
TensorBoard under ``eval_<mode>/``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from centernet_jax import (assembly, config_checks, inference, paths, runtime, sharding,
                           viz)
from centernet_jax.data import pipeline, sources

TEST_MODES = config_checks.TEST_MODES
# Fields of every eval batch that evaluation itself reads; the task names the rest.
_LOOP_FIELDS = ("image_id", "valid", "num_unreadable")


class Evaluator:
    """Runs a test mode over a finite eval stream and scores it with the task's evaluator.

    Built once per run (the jitted predictor and the indexed ground truth are reused);
    called with the model variables to evaluate.
    """

    def __init__(self, parts: assembly.Assembly, mesh, source, variable_shardings,
                 test_mode: str | None = None):
        config, task = parts.config, parts.task
        self.config = config
        self.task = task
        self.source = source
        self.mesh = mesh
        self.test_mode = test_mode or config.eval.test_mode
        if self.test_mode not in TEST_MODES:
            raise ValueError(f"test_mode={self.test_mode!r}; use one of {TEST_MODES}.")
        multiscale = self.test_mode == "multiscale"
        self.scales = tuple(float(s) for s in config.eval.test_scales) if multiscale else (1.0,)
        # Official: the merge (soft-NMS) joins the scales; at one scale it runs only with --nms.
        self.merge = multiscale or config.eval.nms
        if self.merge and task.merge is None:
            raise ValueError(f"the {task.name} task has no multi-scale merge: use "
                             "eval.test_mode plain or flip, and eval.nms=False.")
        flip = self.test_mode == "flip" or (multiscale and config.eval.multiscale_flip)
        self.grid_hw = parts.output_hw(inference.eval_input_hw(config))
        self.batch_size = sharding.check_batch_size(config.eval.batch_size, mesh)
        self.transforms = {s: inference.make_eval_transform(parts, s) for s in self.scales}
        self.class_names = [str(name) for name in source.class_names]
        # Built once: indexing the ground truth is the slow part on large datasets.
        self.scorer = task.make_evaluator(source)
        in_shardings = (variable_shardings, sharding.batch_sharding(mesh))
        self.detect = jax.jit(
            inference.make_detect_fn(parts.model, task, top_k=config.eval.top_k, flip=flip),
            in_shardings=in_shardings)
        self.heatmap = jax.jit(inference.make_heatmap_fn(parts.model, task),
                               in_shardings=in_shardings)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric a call returns: the task's, plus ``unreadable_images``."""
        return (*self.task.metrics.names, "unreadable_images")

    def __call__(self, variables: dict[str, Any], step: int, workdir: str | None = None,
                 writer=None, results_name: str | None = None) -> dict[str, float]:
        """Evaluates ``variables``; returns ``metric_names`` (the same on every process).

        Writes the task evaluator's results as ``results_name`` (default
        ``results_step_<step>``, e.g. ``.json`` for COCO) into ``workdir``.
        """
        scorer = self.scorer
        scorer.reset()
        per_image: dict[int, list[dict[str, np.ndarray]]] = {}
        picture_batch = None
        unreadable = 0
        for scale in self.scales:
            for batch, images, detections, in_image in self._run_scale(variables, scale, step):
                if picture_batch is None and scale == self._picture_scale():
                    picture_batch = (batch, images, jax.device_get(detections))
                if jax.process_index() != 0:
                    continue
                image_ids, found = in_image.pop("image_id"), in_image.pop("detections")
                valid = np.asarray(in_image["valid"], bool)
                if scale == self.scales[0]:
                    unreadable += int(np.sum(in_image["num_unreadable"]))
                if not self.merge:
                    scorer.add(image_ids, found, valid=valid)
                    continue
                for b in np.flatnonzero(valid):
                    per_image.setdefault(int(image_ids[b]), []).append(
                        {k: np.asarray(v[b]) for k, v in found.items()})
        if self.merge and jax.process_index() == 0:
            for image_id, per_scale in per_image.items():
                merged = self.task.merge(
                    per_scale, max_per_image=self.config.eval.max_per_image,
                    official=self.config.eval.soft_nms == "official")
                scorer.add(np.array([image_id]), {k: v[None] for k, v in merged.items()})
        metrics = {}
        if jax.process_index() == 0:
            if unreadable:
                logging.warning("%d evaluation image(s) could not be read and were scored as "
                                "images without detections (see the warnings naming them).",
                                unreadable)
            metrics = scorer.compute()
            metrics["unreadable_images"] = float(unreadable)
            logging.info("%s evaluation (%s) at step %d:\n%s", scorer.metrics.title,
                         self.test_mode, step, scorer.summary)
            if workdir:
                scorer.write_results(paths.resolve(workdir),
                                     results_name or f"results_step_{step}")
        metrics = multihost_utils.broadcast_one_to_all(
            {name: np.float32(metrics.get(name, 0.0)) for name in self.metric_names})
        metrics = {name: float(v) for name, v in metrics.items()}
        if picture_batch is not None and self.config.eval.num_pictures > 0:
            self._pictures(variables, step, *picture_batch, workdir=workdir, writer=writer)
        return metrics

    def _picture_scale(self) -> float:
        return 1.0 if 1.0 in self.scales else self.scales[0]

    def _run_scale(self, variables, scale: float, step: int) -> Iterator[tuple]:
        """Yields (host batch, global images, detections in output-grid pixels, and
        {"detections": in original-image pixels, "image_id", "valid", "num_unreadable"})."""
        batch_sharding = sharding.batch_sharding(self.mesh)
        num_batches = len(pipeline.eval_shard_indices(
            len(self.source), self.batch_size, jax.process_index(), jax.process_count())[0]
        ) // self.batch_size
        batches = pipeline.make_eval_batches(
            self.source, self.transforms[scale], batch_size=self.batch_size,
            shard_index=jax.process_index(), shard_count=jax.process_count())
        start = time.time()
        for index, batch in enumerate(batches):
            if index % 50 == 0:
                logging.info("Evaluating step %d (%s, scale %g): batch %d/%d (%.0f s).", step,
                             self.test_mode, scale, index, num_batches, time.time() - start)
            images = sharding.host_to_global({"image": batch["image"]}, batch_sharding)["image"]
            detections = self.detect(variables, images)
            # Every process contributes its shard; all see the whole batch afterwards.
            gathered = multihost_utils.process_allgather(detections, tiled=True)
            meta = multihost_utils.process_allgather(
                {k: batch[k] for k in (*_LOOP_FIELDS, *self.task.eval_fields)}, tiled=True)
            in_image = self.task.to_image_detections(gathered, meta, self.grid_hw)
            yield batch, images, gathered, {
                "detections": in_image, **{k: meta[k] for k in _LOOP_FIELDS}}

    def _pictures(self, variables, step, batch, images, detections, *, workdir, writer):
        """The task's picture of each image's detections (with its ground truth) beside the
        task's heatmap, on the input canvas."""
        heatmaps = jax.device_get(multihost_utils.process_allgather(
            self.heatmap(variables, images), tiled=True))
        if jax.process_index() != 0:
            return
        stride = self.config.input.down_ratio
        count = min(self.config.eval.num_pictures, int(np.sum(batch["valid"])))
        pictures = []
        for i in range(count):
            canvas, zoom = viz.upscale(viz.denormalize(
                batch["image"][i], self.config.input.mean, self.config.input.std))
            drawn = self.task.draw(
                canvas, {k: np.asarray(v[i]) for k, v in detections.items()},
                class_names=self.class_names, threshold=self.config.eval.vis_threshold,
                scale=stride * zoom,
                ground_truth={k: batch[k][i] for k in self.task.batch_fields if k in batch})
            pictures.append(viz.side_by_side(drawn, viz.heatmap_overlay(canvas, heatmaps[i])))
        if workdir:
            folder = paths.resolve(workdir) / "pictures"
            folder.mkdir(parents=True, exist_ok=True)
            for i, picture in enumerate(pictures):
                viz.save_png(folder / f"step_{step:07d}_{i}.png", picture)
        if writer is not None and pictures:
            writer.write_images(step, {"eval/predictions_and_heatmaps": np.stack(pictures)})


def evaluate(config, workdir: str, checkpoint: str = "best",
             test_mode: str | None = None) -> dict[str, float]:
    """Evaluates a trained (``best``/``latest``/step) or converted checkpoint.

    Writes ``results_<mode>_step_<step>`` (the task evaluator's results, e.g. ``.json``) and
    ``metrics_<mode>_step_<step>.json`` to ``workdir`` and the metrics to its TensorBoard
    log under ``eval_<mode>/``. Returns the metrics (the task's ``metrics.names``).
    ``config`` is not changed.
    """
    from clu import metric_writers  # pylint: disable=g-import-not-at-top

    config = config_checks.resolved_copy(config)
    config_checks.validate_config(config)
    runtime.prepare(config)  # before devices are touched
    test_mode = test_mode or config.eval.test_mode
    workdir = paths.resolve(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = sources.make_source(config.dataset, config.dataset.eval_split)
    sources.fill_dataset_facts(config, source)
    parts = assembly.assemble(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp,
                              num_slices=config.mesh.num_slices)
    loaded = inference.load_variables(parts, workdir=workdir, checkpoint=checkpoint, mesh=mesh)
    variable_shardings = jax.tree.map(lambda x: x.sharding, loaded.variables)
    evaluator = Evaluator(parts, mesh, source, variable_shardings, test_mode)
    step = loaded.step if loaded.step is not None else 0
    logging.info("Evaluating %s in %s mode on %d images.", loaded.source, test_mode,
                 len(source))
    start = time.time()
    tag = f"{test_mode}_step_{step}"
    metrics = evaluator(loaded.variables, step, workdir, results_name=f"results_{tag}")
    seconds = time.time() - start
    if jax.process_index() == 0:
        (workdir / f"metrics_{tag}.json").write_text(json.dumps(
            {"checkpoint": loaded.source, "step": loaded.step, "mode": test_mode,
             "seconds": round(seconds, 1), **metrics}, indent=2))
        writer = metric_writers.create_default_writer(str(workdir))
        writer.write_scalars(step, {f"eval_{test_mode}/{k}": v for k, v in metrics.items()})
        writer.close()
    return metrics


def main(argv: list[str]) -> None:
    from absl import flags  # pylint: disable=g-import-not-at-top

    from centernet_jax import cli, tasks  # pylint: disable=g-import-not-at-top

    config = cli.config_from_flags(argv)
    with cli.exit_on_user_error():
        metrics = evaluate(config, flags.FLAGS.workdir, flags.FLAGS.checkpoint,
                           flags.FLAGS.mode)
    print(tasks.get(config.task).metrics.format(
        metrics, flags.FLAGS.mode or config.eval.test_mode))


def _define_flags() -> None:
    from absl import flags  # pylint: disable=g-import-not-at-top

    from centernet_jax import cli  # pylint: disable=g-import-not-at-top

    cli.define_config_flags(workdir_help="The training run's directory; results go here.",
                            workdir_required=True)
    cli.define_checkpoint_flag()
    flags.DEFINE_enum("mode", None, TEST_MODES, "Test mode (default: eval.test_mode).")


if __name__ == "__main__":
    from centernet_jax import cli  # pylint: disable=g-import-not-at-top

    _define_flags()
    cli.run(main)
