"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

Data flows one way: source -> host transform -> padded batch -> global arrays -> jitted,
sharded train step (targets rendered on device) -> optax update. Evaluation runs the
jitted predictor, decodes on device, maps boxes back to image pixels on the host and
scores them with COCOeval. Checkpoints hold the train state and the input-pipeline
position, so a rerun with the same workdir resumes exactly where the last one stopped.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Callable, Iterable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from centernet_jax import checkpointing, convert, sharding, tasks, viz
from centernet_jax.data import pipeline, sources, transforms
from centernet_jax.evaluators import coco
from centernet_jax.models import detector

# Batch fields the jitted steps consume; the rest (ids, counters) stay on the host.
TRAIN_FIELDS = ("image", "boxes", "classes", "mask")
# XLA's RngBitGenerator: parameter init compiles ~4x faster than with threefry on CPU, and
# gives the same values on any mesh.
INIT_PRNG_IMPL = "rbg"


def init_rng(seed: int) -> jax.Array:
    """The key parameters are initialised from."""
    return jax.random.key(seed, impl=INIT_PRNG_IMPL)


@flax.struct.dataclass
class TrainState:
    """Everything a training step updates; a pytree of arrays."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def grid_hw(input_hw, down_ratio: int) -> tuple[int, int]:
    """The stride-``down_ratio`` output grid of an input size."""
    height, width = input_hw
    return height // down_ratio, width // down_ratio


def output_hw(config) -> tuple[int, int]:
    """The output grid of the configured training input size."""
    return grid_hw(config.input.input_hw, config.input.down_ratio)


def eval_input_hw(config) -> tuple[int, int]:
    """Evaluation input size: ``eval.input_hw``, or the training size when it is empty."""
    return tuple(config.eval.input_hw) or tuple(config.input.input_hw)


def count_params(params) -> int:
    """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """The official step schedule: lr x ``lr_drop_factor`` after each listed epoch."""
    boundaries = {int(epoch * steps_per_epoch): config.train.lr_drop_factor
                  for epoch in config.train.lr_drop_epochs}
    return optax.piecewise_constant_schedule(config.train.learning_rate, boundaries)


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with torch defaults (b1 0.9, b2 0.999, eps 1e-8), no weight decay or clipping."""
    return optax.adam(learning_rate_schedule(config, steps_per_epoch))


def create_train_state(rng: jax.Array, model, tx, input_hw) -> TrainState:
    variables = model.init(rng, jnp.zeros((1, *input_hw, 3), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params))


def make_train_step(model, task, tx, target_hw) -> Callable:
    """(state, batch) -> (state, metrics); rendered targets never leave the device."""

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        target = task.targets(batch, target_hw)

        def loss_fn(params):
            outputs, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, batch["image"],
                train=True, mutable=["batch_stats"])
            loss, parts = task.loss(outputs, target)
            return loss, (parts, updates["batch_stats"])

        (loss, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **parts, "grad_norm": optax.global_norm(grads),
                   "objects_per_image": jnp.sum(target["mask"]) / target["mask"].shape[0]}
        new_state = state.replace(step=state.step + 1, params=params,
                                  batch_stats=batch_stats, opt_state=opt_state)
        return new_state, metrics

    return train_step


def _last_stack_outputs(model, state: TrainState, images: jax.Array) -> dict[str, jax.Array]:
    """Raw head outputs of the stack used at test time (the last one)."""
    outputs = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                          images, train=False)
    return outputs[-1]


def make_predict_step(model, task, top_k: int) -> Callable:
    """(state, images) -> decoded detections of the last stack, output-grid pixels."""

    def predict_step(state: TrainState, images: jax.Array):
        return task.decode(_last_stack_outputs(model, state, images), top_k)

    return predict_step


def make_heatmap_step(model) -> Callable:
    """(state, images) -> centre-heatmap probabilities of the last stack, for pictures."""

    def heatmap_step(state: TrainState, images: jax.Array):
        return jax.nn.sigmoid(_last_stack_outputs(model, state, images)["hm"])

    return heatmap_step


def validate_config(config) -> None:
    """Fails fast, with the offending field named, on values that would fail later."""
    if config.input.down_ratio != 4:
        raise ValueError(f"input.down_ratio={config.input.down_ratio}: only 4 is supported.")
    for name, (height, width) in (("input.input_hw", config.input.input_hw),
                                  ("eval.input_hw", eval_input_hw(config))):
        if height % 4 or width % 4:
            raise ValueError(f"{name}={(height, width)} must be multiples of 4.")
    if config.train.batch_size < 1 or config.eval.batch_size < 1:
        raise ValueError("train.batch_size and eval.batch_size must be positive.")
    if config.eval.top_k < 1:
        raise ValueError(f"eval.top_k={config.eval.top_k} must be positive.")
    if config.dataset.max_objects < 1:
        raise ValueError(f"dataset.max_objects={config.dataset.max_objects} must be positive.")
    if config.train.num_epochs <= 0:
        raise ValueError(f"train.num_epochs={config.train.num_epochs} must be positive.")
    init_dir = config.init.checkpoint
    if init_dir and not os.path.exists(os.path.join(init_dir, convert.CONVERSION_FILE)):
        raise FileNotFoundError(
            f"init.checkpoint={init_dir!r} is not a converted checkpoint (no "
            f"{convert.CONVERSION_FILE}); make one with `python -m centernet_jax.convert "
            "--input=MODEL.pth --output=DIR`.")


def _eval_transform(config):
    return transforms.EvalTransform(
        input_hw=eval_input_hw(config), down_ratio=config.input.down_ratio,
        max_objects=config.dataset.max_objects, mean=config.input.mean, std=config.input.std)


def _train_transform(config):
    return transforms.TrainTransform(
        input_hw=tuple(config.input.input_hw), down_ratio=config.input.down_ratio,
        max_objects=config.dataset.max_objects, mean=config.input.mean,
        std=config.input.std, flip_prob=config.input.flip_prob,
        scale_choices=tuple(config.input.scale_choices), border=config.input.border,
        not_rand_crop=config.input.not_rand_crop, shift=config.input.shift,
        scale=config.input.scale, color_aug=config.input.color_aug)


def _mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
    stacked = jax.device_get(history)
    return {name: float(np.mean([m[name] for m in stacked])) for name in stacked[0]}


class Evaluator:
    """Runs the predictor over a finite eval stream and scores it with COCOeval."""

    def __init__(self, config, task, model, mesh, source, state_shardings):
        self.config = config
        self.task = task
        self.source = source
        self.grid_hw = grid_hw(eval_input_hw(config), config.input.down_ratio)
        self.mesh = mesh
        self.batch_size = sharding.check_batch_size(config.eval.batch_size, mesh)
        self.transform = _eval_transform(config)
        ground_truth = source.coco_ground_truth()
        self.class_names = [c["name"] for c in ground_truth["categories"]]
        # Built once: indexing the ground truth is the slow part on large datasets.
        self.coco = coco.CocoEvaluator(ground_truth, [c["id"] for c in ground_truth["categories"]])
        in_shardings = (state_shardings, sharding.batch_sharding(mesh))
        self.predict = jax.jit(make_predict_step(model, task, config.eval.top_k),
                               in_shardings=in_shardings)
        self.heatmap = jax.jit(make_heatmap_step(model), in_shardings=in_shardings)

    def batches(self) -> Iterable[dict[str, np.ndarray]]:
        return pipeline.make_eval_batches(
            self.source, self.transform, batch_size=self.batch_size,
            shard_index=jax.process_index(), shard_count=jax.process_count())

    def __call__(self, state: TrainState, step: int, workdir: str | None,
                 writer=None) -> dict[str, float]:
        evaluator = self.coco
        evaluator.reset()
        batch_sharding = sharding.batch_sharding(self.mesh)
        first = None
        num_batches = len(pipeline.eval_shard_indices(
            len(self.source), self.batch_size, jax.process_index(), jax.process_count())[0]
        ) // self.batch_size
        start = time.time()
        for index, batch in enumerate(self.batches()):
            if index % 50 == 0:
                logging.info("Evaluating step %d: batch %d/%d (%.0f s).", step, index,
                             num_batches, time.time() - start)
            images = sharding.host_to_global({"image": batch["image"]}, batch_sharding)["image"]
            detections = self.predict(state, images)
            # Every process contributes its shard; all see the whole batch afterwards.
            detections = multihost_utils.process_allgather(detections, tiled=True)
            meta = multihost_utils.process_allgather(
                {k: batch[k] for k in ("image_id", "center", "scale", "valid")}, tiled=True)
            in_image = self.task.to_image_detections(detections, meta, self.grid_hw)
            if jax.process_index() == 0:
                evaluator.add(meta["image_id"], in_image["boxes"], in_image["scores"],
                              in_image["classes"], valid=meta["valid"])
            if first is None:
                first = (batch, images, jax.device_get(detections))
        metrics = {}
        if jax.process_index() == 0:
            metrics = evaluator.compute()
            logging.info("COCO evaluation at step %d:\n%s", step, evaluator.last_summary)
            if workdir:
                evaluator.write_results(os.path.join(workdir, f"results_step_{step}.json"))
        metrics = multihost_utils.broadcast_one_to_all(
            {name: np.float32(metrics.get(name, 0.0)) for name in coco.METRIC_NAMES})
        metrics = {name: float(v) for name, v in metrics.items()}
        if first is not None and self.config.eval.num_pictures > 0:
            self._pictures(state, step, *first, workdir=workdir, writer=writer)
        return metrics

    def _pictures(self, state, step, batch, images, detections, *, workdir, writer):
        """Predicted boxes (with ground truth in white) and heatmaps, on the input canvas."""
        heatmaps = jax.device_get(multihost_utils.process_allgather(
            self.heatmap(state, images), tiled=True))
        if jax.process_index() != 0:
            return
        stride = self.config.input.down_ratio
        count = min(self.config.eval.num_pictures, int(np.sum(batch["valid"])))
        pictures = []
        for i in range(count):
            canvas, zoom = viz.upscale(viz.denormalize(
                batch["image"][i], self.config.input.mean, self.config.input.std))
            gt = batch["boxes"][i][batch["mask"][i]] * stride * zoom
            drawn = viz.draw_detections(
                canvas, detections["boxes"][i] * stride * zoom, detections["scores"][i],
                detections["classes"][i], self.class_names, self.config.eval.vis_threshold,
                gt_boxes=gt)
            pictures.append(viz.side_by_side(drawn, viz.heatmap_overlay(canvas, heatmaps[i])))
        if workdir:
            folder = os.path.join(workdir, "pictures")
            os.makedirs(folder, exist_ok=True)
            for i, picture in enumerate(pictures):
                viz.save_png(os.path.join(folder, f"step_{step:07d}_{i}.png"), picture)
        if writer is not None and pictures:
            writer.write_images(step, {"eval/predictions_and_heatmaps": np.stack(pictures)})


def use_host_cpu_devices(count: int) -> None:
    """Splits the host CPU into ``count`` JAX devices (no-op for ``count <= 0``).

    Only possible before JAX initialises its backends; later, a warning says so and the
    run goes on with the devices it has.
    """
    if count <= 0:
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as error:
        logging.warning("mesh.host_cpu_devices=%d not applied (%s); running on %d devices.",
                        count, error, jax.device_count())


def _log_devices(mesh) -> None:
    logging.info("process %d/%d: %d local devices (%s), %d global; mesh %s",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.devices()[0].platform, jax.device_count(), dict(mesh.shape))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains, evaluates periodically and at the end; resumes from ``workdir`` if possible.

    Returns the final evaluation metrics (COCO AP etc., in [0, 1]).
    """
    validate_config(config)
    use_host_cpu_devices(config.mesh.host_cpu_devices)  # before anything touches devices
    workdir = os.path.abspath(workdir)
    # The dataset check comes first: a missing dataset must stop the run within seconds.
    task = tasks.make_task(config)
    train_source = sources.make_source(config.dataset, config.dataset.train_split)
    eval_source = sources.make_source(config.dataset, config.dataset.eval_split)

    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    _log_devices(mesh)
    local_batch = sharding.check_batch_size(config.train.batch_size, mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    train_grid_hw = output_hw(config)

    model = detector.build_model(config.model, task.heads)
    steps_per_epoch = max(len(train_source) // config.train.batch_size, 1)
    total_steps = int(round(config.train.num_epochs * steps_per_epoch))
    tx = make_optimizer(config, steps_per_epoch)
    init_fn = functools.partial(create_train_state, model=model, tx=tx,
                                input_hw=tuple(config.input.input_hw))
    rng = init_rng(config.seed)
    abstract_state = jax.eval_shape(init_fn, rng)
    state_shardings = sharding.state_shardings(abstract_state, mesh)

    train_iter = pipeline.make_train_iterator(
        train_source, _train_transform(config), batch_size=local_batch, seed=config.seed,
        shard_index=jax.process_index(), shard_count=jax.process_count(),
        num_workers=config.train.num_workers,
        prefetch_buffer_size=config.train.prefetch_buffer_size)
    checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), config.train.max_checkpoints_to_keep)
    latest = checkpointer.latest_step()
    if latest is not None:
        state = checkpointer.restore(
            latest, sharding.abstract_with_shardings(abstract_state, state_shardings),
            train_iter)
        logging.info("Resumed from %s at step %d.", checkpointer.directory, latest)
    else:
        state = jax.jit(init_fn, out_shardings=state_shardings)(rng)
        if config.init.checkpoint:
            params, batch_stats, counts = convert.init_from_pretrained(
                state.params, state.batch_stats, config.init.checkpoint,
                tuple(config.init.exclude))
            # Adam's state is zeros whatever the parameter values: keep the sharded one.
            state = state.replace(params=params, batch_stats=batch_stats)
            logging.info("Initialised %d tensors from %s (%d left at fresh init).",
                         counts["loaded"], config.init.checkpoint, counts["fresh"])
    num_params = count_params(abstract_state.params)
    logging.info("Model %s: %d parameters; %d steps (%d per epoch, global batch %d).",
                 config.model.backbone, num_params, total_steps, steps_per_epoch,
                 config.train.batch_size)

    train_step = jax.jit(
        make_train_step(model, task, tx, train_grid_hw),
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=(0,))
    evaluator = Evaluator(config, task, model, mesh, eval_source, state_shardings)
    schedule = learning_rate_schedule(config, steps_per_epoch)

    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0)
    if latest is None:
        writer.write_hparams({k: str(v) for k, v in _flatten(config.to_dict()).items()})
    progress = periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=writer, every_secs=30)

    step = int(jax.device_get(state.step))
    eval_metrics: dict[str, float] = {}
    history: list[dict[str, jax.Array]] = []
    dropped_objects = 0
    start = time.time()
    with metric_writers.ensure_flushes(writer):
        while step < total_steps:
            with progress.timed("input", wait_jax_async_dispatch=False):
                batch = next(train_iter)
            dropped_objects += int(np.sum(batch["num_dropped"]))
            global_batch = sharding.host_to_global(
                {k: batch[k] for k in TRAIN_FIELDS}, batch_sharding)
            state, metrics = train_step(state, global_batch)
            step += 1
            history.append(metrics)
            progress(step)

            is_last = step == total_steps
            if step % config.train.log_every_steps == 0 or is_last:
                summary = _mean_metrics(history)
                history = []
                if not np.isfinite(summary["loss"]):
                    raise FloatingPointError(
                        f"Non-finite training loss {summary['loss']} by step {step}; "
                        "no checkpoint was written for it.")
                summary["learning_rate"] = float(schedule(step - 1))
                summary["objects_dropped_total"] = float(dropped_objects)
                writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})

            every = config.eval.every_steps
            run_eval = is_last or (every > 0 and step % every == 0)
            if run_eval:
                with progress.timed("eval"):
                    eval_metrics = evaluator(state, step, workdir, writer)
                writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
            if run_eval or step % config.train.checkpoint_every_steps == 0:
                checkpointer.save(step, state, train_iter,
                                  metrics=eval_metrics if run_eval else None)
    if dropped_objects:
        logging.warning("%d objects beyond dataset.max_objects=%d were left out of training "
                        "targets.", dropped_objects, config.dataset.max_objects)
    if not eval_metrics:  # a rerun of a finished run: report its final checkpoint
        eval_metrics = evaluator(state, step, workdir, writer)
    checkpointer.wait_until_finished()
    checkpointer.close()
    writer.close()
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump({"step": step, **eval_metrics}, f, indent=2)
    logging.info("Finished at step %d in %.1f s.", step, time.time() - start)
    return eval_metrics


def describe_model(config: ml_collections.ConfigDict) -> tuple[list[dict], int]:
    """Builds the model abstractly (``jax.eval_shape``: no data, no compute).

    Returns:
      (per-stack dict head -> output shape, number of parameters).
    """
    validate_config(config)
    task = tasks.make_task(config)
    model = detector.build_model(config.model, task.heads)
    images = jax.ShapeDtypeStruct((1, *config.input.input_hw, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, train=False),
                               jax.random.key(0), images)
    outputs = jax.eval_shape(functools.partial(model.apply, train=False), variables, images)
    num_params = count_params(variables["params"])
    shapes = [{name: tuple(out.shape) for name, out in stack.items()} for stack in outputs]
    return shapes, num_params


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
