"""The task protocol: everything the train loop, evaluation, prediction and export know of a
task.

A *task* (2D detection, multi-person pose, monocular 3D, corner triplets) is what gives the
network's heads a meaning. The rest of the package is task-neutral: it moves batches, runs
the model, gathers outputs and calls the methods below, in this order::

      config ──► Task.from_config ──► heads / pre_heads ──► model (backbone + heads)
                                                                 │
  train:  batch[image, *batch_fields] ─► targets ─► loss(outputs per stack, targets)
  eval:   outputs of the last stack ─► decode (flip: with the mirrored outputs)
            ─► to_image_detections (host, with batch[*eval_fields])
            ─► [merge, when several test scales] ─► evaluator.add ─► compute
  predict:                              ... ─► to_image_detections ─► results + draw
  export:   decode ─► export_outputs (inside the exported function)

To add a task, subclass `Task`, fill in every abstract member (tasks/ctdet.py is the worked
example) and register the class with `tasks.register`; nothing outside `tasks/` changes.

Conventions every task follows:

* Batches are padded: each per-object field has a leading [B, N] with N =
  `dataset.max_objects`, and `mask` [B, N] marks real objects. Coordinates in training
  batches are output-grid pixels (input pixels / down ratio), as the transforms leave them.
* Head outputs are dicts head name -> [B, h, w, channels] float32 raw values (no sigmoid).
* Detections are dicts of fixed-size arrays [B, K, ...] (K = `eval.top_k`), best first,
  with a `scores` [B, K] entry; the decode leaves them in output-grid pixels and
  `to_image_detections` maps them to original-image pixels. One image's detections are the
  same dict indexed at b.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from centernet_jax import affine
from centernet_jax.evaluators.base import Evaluator, MetricSpec
from centernet_jax.models.heads import HeadSpec, PreHeadFactory

Outputs = dict[str, jax.Array]
Detections = dict[str, Any]


class Task(abc.ABC):
    """The interface of a CenterNet task; see the module docstring for where each member is
    used.

    Class attributes:
      name: the registry key, `config.task`.
      metrics: what the task's evaluator reports (title, names, headline, best).
      batch_fields: per-batch fields, besides `image`, that `targets` reads on device
        (e.g. boxes, classes, mask; keypoints; 3D fields).
      eval_fields: fields of an evaluation batch, besides `image_id` and `valid`, that
        `to_image_detections` reads on the host (e.g. center, scale; calib).
      export_units: exported output name -> what its values mean (written into the
        export's metadata).
      exact_stride: True: input sizes must be multiples of the output stride (every
        CenterNet model); False: any size, the grid being ceil(input / stride) (CornerNet's
        511-pixel input on a 128 grid).
    """

    name: ClassVar[str]
    metrics: ClassVar[MetricSpec]
    batch_fields: ClassVar[tuple[str, ...]]
    eval_fields: ClassVar[tuple[str, ...]] = ("center", "scale")
    export_units: ClassVar[dict[str, str]]
    exact_stride: ClassVar[bool] = True

    # -- construction ---------------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config) -> "Task":
        """The task a run's config describes (class count from `config.dataset`, options
        from `config.loss`; see `options_from_config`)."""

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Object classes the task detects."""

    # -- model ----------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def heads(self) -> Mapping[str, HeadSpec]:
        """Head name -> `HeadSpec` (channels, initialisation, optional pre-head module)."""

    @property
    def pre_heads(self) -> Mapping[str, PreHeadFactory]:
        """Pre-head module key -> factory, for `HeadSpec.pre` (default: none)."""
        return {}

    @classmethod
    def output_hw(cls, input_hw: Sequence[int], down_ratio: int) -> tuple[int, int]:
        """The output grid of an input size; ValueError if the task needs exact multiples."""
        if cls.exact_stride and any(int(v) % down_ratio for v in input_hw):
            raise ValueError(f"input size {tuple(input_hw)} must be a multiple of the output "
                             f"stride {down_ratio} for the {cls.name} task.")
        return affine.grid_hw(input_hw, down_ratio)

    # -- training (on device, jitted) -----------------------------------------------------

    @abc.abstractmethod
    def targets(self, batch: Mapping[str, jax.Array], output_hw: tuple[int, int]
                ) -> dict[str, jax.Array]:
        """Dense and sparse targets from the padded `batch_fields` of a batch."""

    @abc.abstractmethod
    def loss(self, outputs: Sequence[Outputs], targets: Mapping[str, jax.Array]
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(scalar loss, named scalar parts for logging) over the supervised stacks.

        `targets` also carries `mask` [B, N] (objects the targets keep), which the train
        step reports as objects per image."""

    # -- inference (on device, jitted) ----------------------------------------------------

    @abc.abstractmethod
    def decode(self, outputs: Outputs, k: int, mirrored: Outputs | None = None
               ) -> dict[str, jax.Array]:
        """Top-`k` detections per image, in output-grid pixels.

        `mirrored` holds the outputs for the width-mirrored images (the flip test): the task
        decides what is averaged with what (its flip semantics)."""

    def heatmap(self, outputs: Outputs) -> jax.Array:
        """Probabilities [B, h, w, C] to overlay on pictures; default: the sigmoid of the
        first "heatmap" head."""
        name = next((n for n, spec in self.heads.items() if spec.is_heatmap), None)
        if name is None:
            raise NotImplementedError(f"task {self.name!r} has no heatmap head to draw")
        return jax.nn.sigmoid(outputs[name].astype(jnp.float32))

    @abc.abstractmethod
    def export_outputs(self, detections: Mapping[str, jax.Array], down_ratio: int
                       ) -> dict[str, jax.Array]:
        """What an exported detector returns: `decode`'s detections in pixels of the
        network's input (output-grid coordinates times `down_ratio`), named as
        `export_units`."""

    # -- host side (NumPy) ----------------------------------------------------------------

    @abc.abstractmethod
    def to_image_detections(self, detections: Mapping[str, np.ndarray],
                            batch: Mapping[str, np.ndarray], output_hw: tuple[int, int]
                            ) -> Detections:
        """Maps a batch of decoded detections to original-image pixels with the batch's
        `eval_fields` (e.g. the window `center` / `scale` of the eval transform)."""

    # Multi-scale testing: per image, merges the detections of every test scale (each in
    # original-image pixels) into one set. None: the task has no multi-scale test.
    # Signature: merge(per_scale: list[Detections], *, max_per_image: int,
    #                  official: bool) -> Detections.
    merge = None

    # NumPy transcriptions of the official host-side code (target drawing per example, the
    # decode), which the benchmarks time as baselines after checking them against the
    # task's own; None where the task has none. Members: image_targets(example, output_hw,
    # max_objects), shipped_fields, targets(batch, output_hw), decode(outputs, k),
    # check_targets(got, want), check_decode(got, want) (tasks/ctdet_reference.py).
    reference = None

    @abc.abstractmethod
    def make_evaluator(self, source) -> Evaluator:
        """The evaluator of an evaluation split (`source.coco_ground_truth()` and the other
        source facts); its `metrics` must be this task's `metrics`."""

    @abc.abstractmethod
    def results(self, image_id: int, detections: Detections, category_ids: Sequence[int], *,
                coordinate_decimals: int | None, score_decimals: int | None
                ) -> list[dict[str, Any]]:
        """One image's detections (original-image pixels) as JSON-ready result records, the
        format evaluation writes and prediction writes (COCO results for 2D detection)."""

    @abc.abstractmethod
    def draw(self, image_rgb: np.ndarray, detections: Detections, *,
             class_names: Sequence[str], threshold: float, scale: float = 1.0,
             ground_truth: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """A picture of one image's detections scoring >= `threshold`.

        Args:
          image_rgb: uint8 [H, W, 3].
          detections: one image's detections, in pixels of a grid that `scale` maps onto
            `image_rgb` (1 for original-image detections on the original image; the
            stride times any zoom for output-grid detections on the input canvas).
          ground_truth: one transformed example's fields (e.g. boxes, mask) in the same
            grid, drawn beside the detections when given.
        Returns:
          uint8 [H, W, 3] RGB.
        """


def options_from_config(options_class: type, section, where: str):
    """Builds the dataclass `options_class` from a config section, strictly.

    Every field of `options_class` must be in `section` and nothing else may be: a typo or a
    field of another task's options is an error naming the known fields.

    Args:
      options_class: a dataclass whose fields are the options.
      section: a ConfigDict or mapping (e.g. `config.loss`).
      where: how to name the section in errors, e.g. "loss" -> "loss.wh_weight".
    """
    values = dict(section.items()) if section is not None else {}
    known = [field.name for field in dataclasses.fields(options_class)]
    unknown = sorted(set(values) - set(known))
    missing = [name for name in known if name not in values]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown field(s) {', '.join(f'{where}.{n}' for n in unknown)}")
        if missing:
            problems.append(f"missing field(s) {', '.join(f'{where}.{n}' for n in missing)}")
        raise ValueError(f"{'; '.join(problems)}; {options_class.__name__} takes exactly "
                         f"{', '.join(known)}.")
    return options_class(**values)
