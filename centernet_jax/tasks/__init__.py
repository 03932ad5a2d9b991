"""Tasks: what the heads mean (targets, loss, decode, evaluation, results, pictures, export).

The interface every task implements is `base.Task` (its module docstring draws where each
member is used); `ctdet.py` is the worked example. A task class is registered by name and
built from a run's config with `make_task(config)`; `config.task` picks it.
"""

from __future__ import annotations

from centernet_jax.tasks.base import Task, options_from_config
from centernet_jax.tasks import ctdet

_REGISTRY: dict[str, type[Task]] = {}


def register(task_class: type[Task], *, replace: bool = False) -> type[Task]:
    """Registers `task_class` under `task_class.name` (usable as a class decorator).

    Raises:
      TypeError: not a `Task` subclass, or abstract members left unimplemented.
      ValueError: the name is taken (unless `replace`).
    """
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise TypeError(f"{task_class!r} is not a subclass of tasks.Task")
    if task_class.__abstractmethods__:
        raise TypeError(f"task {task_class.__name__} leaves abstract members unimplemented: "
                        f"{sorted(task_class.__abstractmethods__)}")
    for attribute in ("name", "metrics", "batch_fields", "export_units"):
        if not hasattr(task_class, attribute):
            raise TypeError(f"task {task_class.__name__} must define the class attribute "
                            f"{attribute!r}")
    name = task_class.name
    if name in _REGISTRY and _REGISTRY[name] is not task_class and not replace:
        raise ValueError(f"a task named {name!r} is already registered "
                         f"({_REGISTRY[name].__name__}); pass replace=True to replace it")
    _REGISTRY[name] = task_class
    return task_class


def unregister(name: str) -> None:
    """Removes a registered task (e.g. one a test registered)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """The registered task names."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Task]:
    """The task class registered as `name`; ValueError naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; known tasks: {names()}.") from None


def make_task(config) -> Task:
    """Builds the task named by `config.task` from the run's config."""
    task_class = get(config.task)
    if config.dataset.get("num_classes") is None:
        raise ValueError(
            "dataset.num_classes is not set. Training and evaluation take it from the data; "
            "elsewhere pass --workdir of the training run (its config.json records it) or "
            "--config.dataset.num_classes=N.")
    return task_class.from_config(config)


register(ctdet.CtdetTask)

__all__ = ["Task", "get", "make_task", "names", "options_from_config", "register",
           "unregister"]
