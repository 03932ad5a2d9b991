"""Orbax checkpoints holding the train state and the Grain iterator state.

One checkpoint = ``state`` (a pytree of arrays, restored onto whatever mesh the caller asks
for) + ``data_iter`` (the input pipeline position, so a resumed run sees the same batches).
Kept: the latest ``max_to_keep`` steps plus the best one by the task's selecting metric
(``best_metric``, e.g. COCO AP), which evaluation saves with the checkpoint.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from centernet_jax import paths


class Checkpointer:
    """A thin wrapper over ``ocp.CheckpointManager`` with this project's layout."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3,
                 async_save: bool = True, best_metric: str | None = None):
        """Args:
          directory: the checkpoints' directory (created if needed; a bucket too).
          max_to_keep: latest checkpoints kept.
          async_save: save in a background thread.
          best_metric: the metric (in the ``metrics`` of ``save``) whose highest value
            marks the best checkpoint, always kept and found by ``best_step``; None for a
            reader that only lists and restores (``best_step`` is then None).
        """
        self.directory = paths.resolve(directory)  # Orbax writes buckets (gs://) too
        self.best_metric = best_metric
        policies = [checkpoint_managers.LatestN(n=max_to_keep)]
        best = None
        if best_metric is not None:
            best = functools.partial(_metric, best_metric)
            policies.append(checkpoint_managers.BestN(
                get_metric_fn=best, n=1, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save,
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            best_fn=best,
            best_mode="max",
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "data_iter"), options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest ``best_metric`` (None without one)."""
        return self._manager.best_step() if self.best_metric is not None else None

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data_iter: Any | None = None,
             metrics: dict[str, float] | None = None, force: bool = False) -> bool:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
        return self._manager.save(step, args=ocp.args.Composite(**items),
                                  metrics=metrics, force=force)

    def restore(self, step: int, abstract_state: Any, data_iter: Any | None = None) -> Any:
        """Restores ``state`` onto the shardings carried by ``abstract_state``.

        ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with target shardings, so
        a checkpoint written on one mesh restores onto another. ``data_iter`` (if given) is
        rewound in place to the saved input-pipeline position.
        """
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def _metric(name: str, metrics: dict[str, float]) -> float:
    return float(metrics[name])
