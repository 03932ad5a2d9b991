"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

Data flows one way: source -> host transform -> padded batch -> global arrays -> jitted,
sharded train step (targets rendered on device) -> optax update. Evaluation
(``evaluate.Evaluator``) runs periodically and at the end. Checkpoints hold the train
state and the input-pipeline position, so a rerun with the same workdir resumes exactly
where the last one stopped.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from centernet_jax import (assembly, checkpointing, config_checks, convert, evaluate, paths,
                           runtime, sharding, train_state)
from centernet_jax.data import pipeline, sanitize, sources, transforms


def train_fields(task) -> tuple[str, ...]:
    """Batch fields the jitted step consumes: the image, the task's fields and the bad-data
    counters (summed by the step over the global batch, every process alike). The rest
    (ids, ...) stay on the host."""
    return ("image", *task.batch_fields, *sanitize.COUNTERS)


def make_train_step(model, task, tx, target_hw) -> Callable:
    """(state, batch) -> (state, metrics); rendered targets never leave the device."""

    def train_step(state: train_state.TrainState, batch: dict[str, jax.Array]):
        target = task.targets(batch, target_hw)

        def loss_fn(params):
            outputs, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, batch["image"],
                train=True, mutable=["batch_stats"])
            loss, parts = task.loss(outputs, target)
            return loss, (parts, updates["batch_stats"])

        (loss, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A non-finite loss or gradient never reaches the state, so no checkpoint can hold
        # it; the host decides (train.on_nonfinite) whether to go on or stop.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        params, opt_state, batch_stats = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            (params, opt_state, batch_stats),
            (state.params, state.opt_state, state.batch_stats))
        metrics = {"loss": loss, **parts, "grad_norm": grad_norm,
                   "objects_per_image": jnp.sum(target["mask"]) / target["mask"].shape[0],
                   "nonfinite": 1.0 - finite.astype(jnp.float32),
                   # Batches made by hand (notebooks, tests) may leave the counters out.
                   **{name: jnp.sum(batch[name]) for name in sanitize.COUNTERS
                      if name in batch}}
        new_state = state.replace(step=state.step + 1, params=params,
                                  batch_stats=batch_stats, opt_state=opt_state)
        return new_state, metrics

    return train_step


def _train_transform(config, output_hw, flip_pairs=()):
    return transforms.TrainTransform(
        input_hw=tuple(config.input.input_hw), output_hw=tuple(output_hw),
        max_objects=config.dataset.max_objects, mean=config.input.mean,
        std=config.input.std, flip_prob=config.input.flip_prob, flip_pairs=tuple(flip_pairs),
        crop_mode=config.input.crop_mode, scale_choices=tuple(config.input.scale_choices),
        border=config.input.border, shift=config.input.shift, scale=config.input.scale,
        ddd_aug_prob=config.input.ddd_aug_prob, color_aug=config.input.color_aug)


class Preempted(RuntimeError):
    """Training stopped on SIGTERM or a preemption notice after checkpointing ``step``."""

    def __init__(self, step: int, directory: str):
        super().__init__(f"Preempted at step {step}: checkpoint saved in {directory}; rerun "
                         "the same command to resume from it.")
        self.step = step


class _PreemptionWatch:
    """Notices SIGTERM (what schedulers and preemptible VMs send before killing a job).

    One process: a signal handler sets a flag, read at the next step boundary. Several
    processes: JAX's preemption service (started by ``jax.distributed``) receives the signal
    and ``reached_preemption_sync_point`` makes every process stop at the same step, so the
    collective checkpoint save lines up.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        del frame
        self.requested = True
        logging.warning("Received signal %d: checkpointing after the current step.", signum)

    def __call__(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


class _NonFiniteGuard:
    """Reads the train step's ``nonfinite`` flags and applies ``train.on_nonfinite``.

    The step has already left the state untouched on such a step; "skip" logs it and goes
    on, "stop" raises naming the step. Flags are read at log and checkpoint steps only, so
    the host never waits for the device in between.
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.skipped = 0
        self._unchecked: list[tuple[int, jax.Array]] = []

    def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
        self._unchecked.append((step, metrics["nonfinite"]))

    def check(self) -> None:
        flags = jax.device_get([flag for _, flag in self._unchecked])
        steps = [step for (step, _), flag in zip(self._unchecked, flags) if flag > 0]
        self._unchecked = []
        for step in steps:
            if self.mode == "stop":
                raise FloatingPointError(
                    f"Non-finite loss or gradient at step {step}: the update was not applied "
                    "and training stopped (train.on_nonfinite='stop'). Checkpoints hold only "
                    "finite states; rerun to resume from the last one, or set "
                    "--config.train.on_nonfinite=skip to skip such steps.")
            self.skipped += 1
            logging.warning("Non-finite loss or gradient at step %d: update skipped "
                            "(%d so far).", step, self.skipped)


def _mean_metrics(history: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Means over the finite steps of ``history`` (host values; NaN where every step was
    non-finite). The data counters are not means: see ``_count_data``.
    """
    stacked = [m for m in history if not m["nonfinite"] > 0]
    names = [name for name in history[0]
             if name != "nonfinite" and name not in sanitize.COUNTERS]
    if not stacked:
        return {name: float("nan") for name in names}
    return {name: float(np.mean([m[name] for m in stacked])) for name in names}


def _count_data(history: list[dict[str, np.ndarray]], totals: dict[str, int]) -> None:
    """Adds the steps' bad-data counters (host values) to ``totals``; logs what grew since
    the last call."""
    grown = {}
    for name in sanitize.COUNTERS:
        count = int(sum(int(m.get(name, 0)) for m in history))
        if count:
            totals[name] += count
            grown[name] = count
    if grown:
        logging.warning("Input data since the last log: %s (totals so far: %s).",
                        ", ".join(f"{n} {c} ({sanitize.COUNTERS[n]})" for n, c in grown.items()),
                        ", ".join(f"{n} {c}" for n, c in totals.items()))


def _log_devices(mesh) -> None:
    logging.info("process %d/%d: %d local devices (%s), %d global; mesh %s",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.devices()[0].platform, jax.device_count(), dict(mesh.shape))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains, evaluates periodically and at the end; resumes from ``workdir`` if possible.

    Prepares the process first (``runtime.prepare``), so a notebook needs nothing else, and
    can call it again in the same process. ``config`` is not changed: what the data adds
    (e.g. the class count of a COCO-format json) goes into a copy, recorded as the run's
    ``config.json``.

    Returns the final evaluation metrics (names: the task's ``metrics.names``).
    """
    config = config_checks.resolved_copy(config)
    config_checks.validate_config(config)
    runtime.prepare(config)  # before devices are touched
    workdir = paths.resolve(workdir)  # local, or a bucket (gs://...)
    # The dataset check comes first: a missing dataset must stop the run within seconds.
    train_source = sources.make_source(config.dataset, config.dataset.train_split)
    eval_source = sources.make_source(config.dataset, config.dataset.eval_split)
    sources.fill_dataset_facts(config, train_source)  # e.g. the class count of a COCO json
    steps_per_epoch = max(len(train_source) // config.train.batch_size, 1)
    parts = assembly.assemble(config, steps_per_epoch)
    task, model, tx = parts.task, parts.model, parts.tx

    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp,
                              num_slices=config.mesh.num_slices)
    _log_devices(mesh)
    local_batch = sharding.check_batch_size(config.train.batch_size, mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    train_grid_hw = parts.output_hw()
    total_steps = int(round(config.train.num_epochs * steps_per_epoch))
    rng = train_state.init_rng(config.seed)
    abstract_state = parts.abstract_state()
    state_shardings = sharding.state_shardings(abstract_state, mesh)

    train_iter = pipeline.make_train_iterator(
        train_source, _train_transform(config, train_grid_hw,
                                       getattr(train_source, "flip_pairs", None) or ()),
        batch_size=local_batch, seed=config.seed,
        shard_index=jax.process_index(), shard_count=jax.process_count(),
        num_workers=config.train.num_workers,
        prefetch_buffer_size=config.train.prefetch_buffer_size)
    checkpointer = checkpointing.Checkpointer(
        workdir / "checkpoints", config.train.max_checkpoints_to_keep,
        best_metric=task.metrics.best)
    latest = checkpointer.latest_step()
    if latest is not None:
        state = checkpointer.restore(
            latest, sharding.abstract_with_shardings(abstract_state, state_shardings),
            train_iter)
        logging.info("Resumed from %s at step %d.", checkpointer.directory, latest)
    else:
        state = jax.jit(parts.init, out_shardings=state_shardings)(rng)
        if config.init.checkpoint:
            params, batch_stats, counts = convert.init_from_pretrained(
                state.params, state.batch_stats, config.init.checkpoint,
                tuple(config.init.exclude))
            # Adam's state is zeros whatever the parameter values: keep the sharded one.
            state = state.replace(params=params, batch_stats=batch_stats)
            logging.info("Initialised %d tensors from %s (%d left at fresh init).",
                         counts["loaded"], config.init.checkpoint, counts["fresh"])
    num_params = train_state.count_params(abstract_state.params)
    logging.info("Model %s: %d parameters; %d steps (%d per epoch, global batch %d).",
                 config.model.backbone, num_params, total_steps, steps_per_epoch,
                 config.train.batch_size)

    train_step = jax.jit(
        make_train_step(model, task, tx, train_grid_hw),
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=(0,))
    evaluator = evaluate.Evaluator(parts, mesh, eval_source, state_shardings.variables)
    schedule = train_state.learning_rate_schedule(config, steps_per_epoch)

    writer = metric_writers.create_default_writer(
        str(workdir), just_logging=jax.process_index() > 0)
    if latest is None:
        writer.write_hparams({k: str(v) for k, v in _flatten(config.to_dict()).items()})
    progress = periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=writer, every_secs=30)

    fields = train_fields(task)
    step = int(jax.device_get(state.step))
    eval_metrics: dict[str, float] = {}
    history: list[dict[str, jax.Array]] = []
    data_counts = {name: 0 for name in sanitize.COUNTERS}
    guard = _NonFiniteGuard(config.train.on_nonfinite)
    preemption = _PreemptionWatch()
    start = time.time()
    try:
        with metric_writers.ensure_flushes(writer):
            while step < total_steps:
                with progress.timed("input", wait_jax_async_dispatch=False):
                    batch = next(train_iter)
                global_batch = sharding.host_to_global(
                    {k: batch[k] for k in fields}, batch_sharding)
                state, metrics = train_step(state, global_batch)
                step += 1
                history.append(metrics)
                guard.add(step, metrics)
                progress(step)

                is_last = step == total_steps
                if step % config.train.log_every_steps == 0 or is_last:
                    guard.check()
                    fetched = jax.device_get(history)  # one transfer for both
                    summary = _mean_metrics(fetched)
                    _count_data(fetched, data_counts)
                    history = []
                    summary["learning_rate"] = float(schedule(step - 1))
                    summary.update({f"data_{name}_total": float(count)
                                    for name, count in data_counts.items()})
                    summary["nonfinite_steps_total"] = float(guard.skipped)
                    writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})

                every = config.eval.every_steps
                run_eval = is_last or (every > 0 and step % every == 0)
                if run_eval:
                    with progress.timed("eval"):
                        eval_metrics = evaluator(state.variables, step, workdir, writer)
                    writer.write_scalars(step,
                                         {f"eval/{k}": v for k, v in eval_metrics.items()})
                preempted = preemption(step)
                if run_eval or preempted or step % config.train.checkpoint_every_steps == 0:
                    guard.check()
                    checkpointer.save(step, state, train_iter, force=preempted,
                                      metrics=eval_metrics if run_eval else None)
                if preempted:
                    checkpointer.wait_until_finished()
                    raise Preempted(step, checkpointer.directory)
    finally:
        preemption.close()
        checkpointer.wait_until_finished()
    if guard.skipped:
        logging.warning("%d steps with a non-finite loss or gradient were skipped.",
                        guard.skipped)
    if any(data_counts.values()):
        logging.warning(
            "Input data over this run (since it last started): %s. dataset.max_objects=%d.",
            "; ".join(f"{count} {sanitize.COUNTERS[name]}"
                      for name, count in data_counts.items()), config.dataset.max_objects)
    if not eval_metrics:  # a rerun of a finished run: report its final checkpoint
        eval_metrics = evaluator(state.variables, step, workdir, writer)
    checkpointer.wait_until_finished()
    checkpointer.close()
    writer.close()
    if jax.process_index() == 0:
        (workdir / "final_metrics.json").write_text(
            json.dumps({"step": step, **eval_metrics}, indent=2))
    logging.info("Finished at step %d in %.1f s.", step, time.time() - start)
    return eval_metrics


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
