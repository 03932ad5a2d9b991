"""Start-up checks of a config: a bad value fails in seconds, naming its field."""

from __future__ import annotations

from centernet_jax import convert, inference, paths, tasks

TEST_MODES = ("plain", "flip", "multiscale")
SOFT_NMS_VARIANTS = ("official", "corrected")


def resolved_copy(config):
    """A deep copy of ``config`` with references resolved, locked if ``config`` is: a run
    records what the data adds in the copy, never in the caller's config."""
    copy = config.copy_and_resolve_references()
    if config.is_locked:
        copy.lock()
    return copy


def validate_config(config) -> None:
    """Fails fast, with the offending field named, on values that would fail later."""
    task_class = tasks.get(config.task)  # an unknown task name is an error naming the known
    if config.input.down_ratio != 4:
        raise ValueError(f"input.down_ratio={config.input.down_ratio}: only 4 is supported.")
    for name, input_hw in (("input.input_hw", config.input.input_hw),
                           ("eval.input_hw", inference.eval_input_hw(config))):
        try:
            task_class.output_hw(input_hw, config.input.down_ratio)
        except ValueError as error:
            raise ValueError(f"{name}={tuple(input_hw)}: {error}") from None
    if config.train.batch_size < 1 or config.eval.batch_size < 1:
        raise ValueError("train.batch_size and eval.batch_size must be positive.")
    if config.eval.top_k < 1:
        raise ValueError(f"eval.top_k={config.eval.top_k} must be positive.")
    if config.dataset.max_objects < 1:
        raise ValueError(f"dataset.max_objects={config.dataset.max_objects} must be positive.")
    if config.train.num_epochs <= 0:
        raise ValueError(f"train.num_epochs={config.train.num_epochs} must be positive.")
    if config.mesh.num_slices < 1:
        raise ValueError(f"mesh.num_slices={config.mesh.num_slices} must be >= 1.")
    if config.train.on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"train.on_nonfinite={config.train.on_nonfinite!r}; use 'stop' or "
                         "'skip'.")
    if config.eval.test_mode not in TEST_MODES:
        raise ValueError(f"eval.test_mode={config.eval.test_mode!r}; use one of {TEST_MODES}.")
    if not config.eval.test_scales or min(config.eval.test_scales) <= 0:
        raise ValueError(f"eval.test_scales={tuple(config.eval.test_scales)} must be positive.")
    if config.eval.soft_nms not in SOFT_NMS_VARIANTS:
        raise ValueError(f"eval.soft_nms={config.eval.soft_nms!r}; use one of "
                         f"{SOFT_NMS_VARIANTS}.")
    if config.eval.max_per_image < 1:
        raise ValueError(f"eval.max_per_image={config.eval.max_per_image} must be positive.")
    init_dir = config.init.checkpoint
    if init_dir and not (paths.resolve(init_dir) / convert.CONVERSION_FILE).exists():
        raise FileNotFoundError(
            f"init.checkpoint={init_dir!r} is not a converted checkpoint (no "
            f"{convert.CONVERSION_FILE}); make one with `python -m centernet_jax.convert "
            "--input=MODEL.pth --output=DIR`.")
