"""Task bundles: heads, targets, loss, decode and evaluation per task.

Every task exposes the same small interface (``heads``, ``targets``, ``loss``, ``decode``,
``to_image_detections``), so the train loop never branches on the task name.
"""

from centernet_jax.tasks import ctdet

_TASKS = {"ctdet": ctdet.from_config}


def make_task(config):
    """Builds the task named by ``config.task``."""
    try:
        factory = _TASKS[config.task]
    except KeyError:
        raise ValueError(
            f"Unknown task {config.task!r}; known tasks: {sorted(_TASKS)}.") from None
    return factory(config)
