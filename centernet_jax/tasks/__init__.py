"""Task bundles: heads, targets, loss, decode and evaluation per task.

Every task exposes the same small interface (``heads``, ``targets``, ``loss``, ``decode``,
``to_image_detections``), so the train loop never branches on the task name.
"""

from centernet_jax.tasks import ctdet

_TASKS = {"ctdet": ctdet.from_config}


def make_task(config):
    """Builds the task named by ``config.task``."""
    if config.dataset.get("num_classes") is None:
        raise ValueError(
            "dataset.num_classes is not set. Training and evaluation take it from the data; "
            "elsewhere pass --workdir of the training run (its config.json records it) or "
            "--config.dataset.num_classes=N.")
    try:
        factory = _TASKS[config.task]
    except KeyError:
        raise ValueError(
            f"Unknown task {config.task!r}; known tasks: {sorted(_TASKS)}.") from None
    return factory(config)
