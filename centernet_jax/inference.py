"""From a checkpoint to detections: variable loading and the jitted test-time forward.

Evaluation, prediction, export and the benchmark all run the same function: normalised NHWC
images -> the last stack's head outputs (averaged with the mirrored image's in flip mode)
-> the task's decode. Boxes come out in output-grid pixels; the host maps them back to the
original image with the ``center``/``scale`` of the eval transform.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
from absl import logging

from centernet_jax import checkpointing, convert, paths, sharding, train_state
from centernet_jax.data import transforms

Variables = dict[str, Any]
DetectFn = Callable[[Variables, jax.Array], dict[str, jax.Array]]

CHECKPOINT_HELP = ("best (highest validation AP; the latest step if none was evaluated), "
                   "latest, a step number, or a directory written by centernet_jax.convert")


def grid_hw(input_hw, down_ratio: int) -> tuple[int, int]:
    """The stride-``down_ratio`` output grid of an input size."""
    height, width = input_hw
    return height // down_ratio, width // down_ratio


def eval_input_hw(config) -> tuple[int, int]:
    """Evaluation input size: ``eval.input_hw``, or the training size when it is empty."""
    return tuple(config.eval.input_hw) or tuple(config.input.input_hw)


def make_eval_transform(config, test_scale: float = 1.0) -> transforms.EvalTransform:
    """The official test pre-processing (fix_res or keep_res) at one test scale (§5.3, §5.5)."""
    return transforms.EvalTransform(
        input_hw=eval_input_hw(config), down_ratio=config.input.down_ratio,
        max_objects=config.dataset.max_objects, mean=config.input.mean, std=config.input.std,
        resize_mode=config.eval.resize_mode, keep_res_pad=config.eval.keep_res_pad,
        test_scale=test_scale)


def last_stack_outputs(model, variables: Variables, images: jax.Array) -> dict[str, jax.Array]:
    """Raw head outputs of the stack used at test time (the last one)."""
    return model.apply(variables, images, train=False)[-1]


def make_detect_fn(model, task, *, top_k: int, flip: bool = False) -> DetectFn:
    """(variables, images [B, H, W, 3]) -> top-``top_k`` detections per image.

    With ``flip`` the batch is run together with its mirror image and the task merges the
    two sets of outputs before decoding (ctdet: heatmap and size averaged, offsets from the
    original; spec §5.4).
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


def make_heatmap_fn(model) -> Callable[[Variables, jax.Array], jax.Array]:
    """(variables, images) -> centre-heatmap probabilities [B, h, w, C], for pictures."""

    def heatmap(variables: Variables, images: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(last_stack_outputs(model, variables, images)["hm"])

    return heatmap


@dataclasses.dataclass(frozen=True)
class LoadedVariables:
    """Model variables restored for inference and where they came from."""

    variables: Variables
    source: str  # human-readable: "workdir/checkpoints step 1500 (best)", a converted dir
    step: int | None  # training step, None for a converted checkpoint


def load_variables(config, model, *, workdir: str | None, checkpoint: str = "best",
                   mesh: jax.sharding.Mesh | None = None) -> LoadedVariables:
    """Restores ``{"params", "batch_stats"}`` for ``model`` from a checkpoint.

    Args:
      config: the run's config (model, input size, optimizer: the state's structure).
      model: the CenterNet module built from ``config``.
      workdir: the training run's directory (for best / latest / step).
      checkpoint: see ``CHECKPOINT_HELP``.
      mesh: restore onto this mesh's state shardings (default: one device, replicated).

    Raises:
      FileNotFoundError: no such checkpoint, with what exists instead.
      convert.ConversionError: a converted checkpoint that does not fit ``model``.
    """
    abstract = train_state.abstract_train_state(config, model)
    if mesh is None:
        mesh = sharding.make_mesh(devices=jax.devices()[:1])
    shardings = sharding.state_shardings(abstract, mesh)
    if os.path.isdir(checkpoint) and os.path.exists(
            os.path.join(checkpoint, convert.CONVERSION_FILE)):
        return _load_converted(abstract, shardings, checkpoint)
    if workdir is None:
        raise FileNotFoundError(
            f"checkpoint={checkpoint!r} needs a workdir, or pass a converted checkpoint "
            "directory; checkpoint is " + CHECKPOINT_HELP + ".")
    directory = paths.resolve(workdir) / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist: no training checkpoints in "
                                f"workdir {workdir!r}.")
    checkpointer = checkpointing.Checkpointer(directory, async_save=False)
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
            logging.warning("No checkpoint carries a validation AP; using the latest step.")
            return max(steps), "latest: none evaluated"
        return best, "best AP"
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
