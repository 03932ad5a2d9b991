"""From a checkpoint to detections: variable loading and the jitted test-time forward.

Evaluation, prediction, export and the benchmark all run the same function: normalised NHWC
images -> the last stack's head outputs (with the mirrored image's in flip mode) -> the
task's decode. Detections come out in output-grid pixels; the host maps them back to the
original image with the task's ``to_image_detections`` and the eval transform's window.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from absl import logging

from centernet_jax import assembly, checkpointing, convert, paths, sharding, train_state
from centernet_jax.data import transforms

Variables = dict[str, Any]
DetectFn = Callable[[Variables, jax.Array], dict[str, jax.Array]]

CHECKPOINT_HELP = ("best (the highest validation score of the task's selecting metric, e.g. "
                   "COCO AP; the latest step if none was evaluated), latest, a step number, "
                   "or a directory written by centernet_jax.convert")


def eval_input_hw(config) -> tuple[int, int]:
    """Evaluation input size: ``eval.input_hw``, or the training size when it is empty."""
    return tuple(config.eval.input_hw) or tuple(config.input.input_hw)


def make_eval_transform(parts: assembly.Assembly, test_scale: float = 1.0
                        ) -> transforms.EvalTransform:
    """The official test pre-processing (fix_res or keep_res) at one test scale."""
    config = parts.config
    input_hw = eval_input_hw(config)
    return transforms.EvalTransform(
        input_hw=input_hw, output_hw=parts.output_hw(input_hw),
        max_objects=config.dataset.max_objects, mean=config.input.mean, std=config.input.std,
        resize_mode=config.eval.resize_mode, keep_res_pad=config.eval.keep_res_pad,
        test_scale=test_scale)


def last_stack_outputs(model, variables: Variables, images: jax.Array) -> dict[str, jax.Array]:
    """Raw head outputs of the stack used at test time (the last one)."""
    return model.apply(variables, images, train=False)[-1]


def make_detect_fn(model, task, *, top_k: int, flip: bool = False) -> DetectFn:
    """(variables, images [B, H, W, 3]) -> top-``top_k`` detections per image.

    With ``flip`` the batch is run together with its mirror image and the task's decode
    receives both sets of outputs (the flip test; what is averaged is the task's choice).
    """

    def detect(variables: Variables, images: jax.Array) -> dict[str, jax.Array]:
        if not flip:
            return task.decode(last_stack_outputs(model, variables, images), top_k)
        batch = images.shape[0]
        both = last_stack_outputs(model, variables,
                                  jnp.concatenate([images, images[:, :, ::-1]], axis=0))
        original = jax.tree.map(lambda x: x[:batch], both)
        mirrored = jax.tree.map(lambda x: x[batch:], both)
        return task.decode(original, top_k, mirrored=mirrored)

    return detect


def make_heatmap_fn(model, task) -> Callable[[Variables, jax.Array], jax.Array]:
    """(variables, images) -> the task's heatmap probabilities [B, h, w, C], for pictures."""

    def heatmap(variables: Variables, images: jax.Array) -> jax.Array:
        return task.heatmap(last_stack_outputs(model, variables, images))

    return heatmap


@dataclasses.dataclass(frozen=True)
class LoadedVariables:
    """Model variables restored for inference and where they came from."""

    variables: Variables
    source: str  # human-readable: "workdir/checkpoints step 1500 (best)", a converted dir
    step: int | None  # training step, None for a converted checkpoint


def load_variables(parts: assembly.Assembly, *, workdir: str | None, checkpoint: str = "best",
                   mesh: jax.sharding.Mesh | None = None) -> LoadedVariables:
    """Restores ``{"params", "batch_stats"}`` for ``parts.model`` from a checkpoint.

    Args:
      parts: what the run's config assembles (the state's structure; the task's metric
        that selects the best checkpoint).
      workdir: the training run's directory (for best / latest / step; a bucket too).
      checkpoint: see ``CHECKPOINT_HELP``.
      mesh: restore onto this mesh's state shardings (default: one device, replicated).

    Raises:
      FileNotFoundError: no such checkpoint, with what exists instead.
      convert.ConversionError: a converted checkpoint that does not fit ``model``.
    """
    abstract = parts.abstract_state()
    if mesh is None:
        mesh = sharding.make_mesh(devices=jax.devices()[:1])
    shardings = sharding.state_shardings(abstract, mesh)
    if checkpoint not in ("best", "latest") and not checkpoint.isdigit() and (
            paths.resolve(checkpoint) / convert.CONVERSION_FILE).exists():
        return _load_converted(abstract, shardings, checkpoint)
    if workdir is None:
        raise FileNotFoundError(
            f"checkpoint={checkpoint!r} needs a workdir, or pass a converted checkpoint "
            "directory; checkpoint is " + CHECKPOINT_HELP + ".")
    directory = paths.resolve(workdir) / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist: no training checkpoints in "
                                f"workdir {workdir!r}.")
    checkpointer = checkpointing.Checkpointer(directory, async_save=False,
                                              best_metric=parts.task.metrics.best)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise FileNotFoundError(f"{directory} holds no checkpoints.")
        step, how = _resolve_step(checkpointer, checkpoint, steps)
        state = checkpointer.restore(step, sharding.abstract_with_shardings(abstract, shardings))
    finally:
        checkpointer.close()
    logging.info("Restored %s step %d (%s).", directory, step, how)
    return LoadedVariables(state.variables, f"{directory} step {step} ({how})", step)


def _resolve_step(checkpointer: checkpointing.Checkpointer, checkpoint: str,
                  steps: list[int]) -> tuple[int, str]:
    if checkpoint == "latest":
        return max(steps), "latest"
    if checkpoint == "best":
        best = checkpointer.best_step()
        if best is None:
            logging.warning("No checkpoint carries a validation %s; using the latest step.",
                            checkpointer.best_metric)
            return max(steps), "latest: none evaluated"
        return best, f"best {checkpointer.best_metric}"
    if checkpoint.isdigit():
        if int(checkpoint) not in steps:
            raise FileNotFoundError(f"No checkpoint at step {checkpoint}; saved steps: "
                                    f"{sorted(steps)}.")
        return int(checkpoint), "requested"
    raise FileNotFoundError(f"checkpoint={checkpoint!r} is none of: {CHECKPOINT_HELP}.")


def _load_converted(abstract: train_state.TrainState, shardings: train_state.TrainState,
                    directory: str) -> LoadedVariables:
    params = sharding.abstract_with_shardings(abstract.params, shardings.params)
    batch_stats = sharding.abstract_with_shardings(abstract.batch_stats, shardings.batch_stats)
    params, batch_stats, counts = convert.init_from_pretrained(params, batch_stats, directory)
    if counts["fresh"]:
        raise convert.ConversionError(
            f"{directory} holds only {counts['loaded']} of the model's tensors "
            f"({counts['fresh']} missing): a backbone-only checkpoint initialises training "
            "but cannot be evaluated.")
    return LoadedVariables({"params": params, "batch_stats": batch_stats},
                           f"converted checkpoint {directory}", None)
