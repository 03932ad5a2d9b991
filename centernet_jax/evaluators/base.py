"""What every evaluator provides, and how a task names its metrics.

A task builds its evaluator from the evaluation split (`Task.make_evaluator(source)`). The
evaluation loop only sees this interface: it adds each batch's detections (already mapped
to original-image pixels by the task) with the images' ids, computes the metrics once all
images are in, and writes the results file(s) beside them.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Protocol, runtime_checkable

import numpy as np
from etils import epath


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """The metrics an evaluator reports.

    Attributes:
      title: how a printout introduces them, e.g. "COCO bbox".
      names: every metric `compute` returns, in a fixed order (the same on every process).
      headline: the ones printed at the end of a run.
      best: the one that selects the best checkpoint (higher is better).
    """

    title: str
    names: tuple[str, ...]
    headline: tuple[str, ...]
    best: str

    def __post_init__(self):
        missing = [n for n in (*self.headline, self.best) if n not in self.names]
        if missing:
            raise ValueError(f"{self.title}: metrics {missing} are not among {self.names}")

    def format(self, metrics: Mapping[str, float], label: str = "") -> str:
        """One line: '<title> (<label>): AP 0.543, AP50 0.881, ...'."""
        title = f"{self.title} ({label})" if label else self.title
        return f"{title}: " + ", ".join(f"{name} {metrics[name]:.3f}" for name in self.headline)


@runtime_checkable
class Evaluator(Protocol):
    """Accumulates one pass over the evaluation split and scores it.

    Attributes:
      metrics: the `MetricSpec` of what `compute` returns.
      summary: a human-readable report of the last `compute` (logged), "" before.
    """

    metrics: MetricSpec
    summary: str

    def reset(self) -> None:
        """Forgets the detections added so far (the ground truth stays indexed)."""

    def add(self, image_ids: np.ndarray, detections: Mapping[str, np.ndarray],
            valid: np.ndarray | None = None) -> None:
        """Adds a batch: image_ids [B]; detections, each [B, K, ...] in original-image
        pixels (`Task.to_image_detections`); valid [B] bool (padding rows are False).

        Raises ValueError for an image added twice."""

    def compute(self) -> dict[str, float]:
        """Every metric of `metrics.names` over the images added so far."""

    def write_results(self, directory: epath.PathLike, name: str) -> epath.Path:
        """Writes the detections added so far under `directory` (a bucket path too),
        named after `name` (e.g. `<name>.json`); returns the path written."""
