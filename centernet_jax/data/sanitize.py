"""Bad data: unreadable examples and non-finite annotations become counted, logged skips.

Real datasets contain the odd corrupt JPEG, a missing file or a NaN in an annotation. None of
them may crash a week-long run deep inside XLA, and none may vanish silently. `RobustSource`
wraps any source (the convention in `sources.py`) and:

* replaces an example whose reading raises (corrupt or missing image, undecodable record) by
  the next readable one, deterministically (index + 1, + 2, ...), logging one line naming the
  example and the error, and records how many it passed over in `num_unreadable`;
* removes objects whose box (or 3D field) is not finite, logging one line, counted in
  `num_invalid`; keypoints with non-finite coordinates are marked unlabelled (v = 0) and
  counted there too.

Everything else follows the official semantics and is left to the transforms and the target
renderer, exactly as the official loader does: a box partly or wholly outside the image is
clipped to the output grid after the affine and then has zero size, a zero-area box gets no
target, a keypoint outside the output grid is not supervised.

The counts travel with the example (`COUNTERS`, int32 scalars), so they add up correctly over
Grain worker processes and JAX processes: the trainer sums them per batch and logs totals.
"""

from __future__ import annotations

from typing import Any, Callable

from absl import logging
import numpy as np

# Per-example counters every transformed example carries (int32 []).
COUNTERS = {
    "num_dropped": "objects beyond max_objects (the official loader reads only the first ones)",
    "num_invalid": "objects removed, or keypoints unlabelled, for non-finite annotations",
    "num_unreadable": "unreadable examples passed over (replaced by the next readable one)",
}
# Per-object fields whose rows are removed together with an invalid box.
PER_OBJECT_FIELDS = ("boxes", "classes", "keypoints", "is_crowd", "is_difficult", "alpha",
                     "dimensions", "location", "rotation_y", "truncated", "occluded")
_MUST_BE_FINITE = ("boxes", "alpha", "dimensions", "location", "rotation_y")


class UnreadableRunError(RuntimeError):
    """Too many consecutive examples could not be read: the data, not one file, is broken."""


# Names an example in messages: a string, or a function making one, called only when there is
# something to say (building the name for every example would be wasted work).
Where = str | Callable[[], str]


def _describe(where: Where) -> str:
    return (where() if callable(where) else where) or "example"


def remove_invalid_objects(element: dict[str, Any], where: Where = "") -> dict[str, Any]:
    """Drops objects with non-finite fields; unlabels non-finite keypoints; counts both.

    Args:
      element: a source element (see `sources.py`); not modified.
      where: names the example in the log line (a string, or a function making one).

    Returns:
      A new element with the bad rows removed and `num_invalid` int32 [] added.
    """
    boxes = np.asarray(element["boxes"], dtype=np.float32).reshape(-1, 4)
    count = boxes.shape[0]
    keep = np.ones((count,), dtype=bool)
    for key in _MUST_BE_FINITE:
        if key in element:
            values = np.asarray(element[key], dtype=np.float32).reshape(count, -1)
            keep &= np.isfinite(values).all(axis=1)
    output = dict(element)
    num_invalid = int(count - keep.sum())
    if num_invalid:
        for key in PER_OBJECT_FIELDS:
            if key in output:
                output[key] = np.asarray(output[key])[keep]
    if "keypoints" in output:
        keypoints = np.asarray(output["keypoints"], dtype=np.float32)
        bad = ~np.isfinite(keypoints).all(axis=-1)  # [n, K]
        if bad.any():
            keypoints = keypoints.copy()
            keypoints[bad] = 0.0  # (0, 0, v=0): unlabelled
            num_invalid += int(bad.sum())
        output["keypoints"] = keypoints
    if num_invalid:
        logging.warning("%s: %d object(s)/keypoint(s) with non-finite annotations removed.",
                        _describe(where), num_invalid)
    output["num_invalid"] = np.int32(num_invalid)
    return output


def check_classes(element: dict[str, Any], num_classes: int, where: Where = "") -> None:
    """Classes must lie in [0, num_classes), or be an ignore code in [-(num_classes+1), -1]."""
    classes = np.asarray(element["classes"]).reshape(-1)
    bad = (classes >= num_classes) | (classes < -(num_classes + 1))
    if bad.any():
        indices = sorted(set(classes[bad].tolist()))
        raise ValueError(f"{_describe(where)}: class indices {indices} are "
                         f"outside [0, {num_classes}) (the source's class map is wrong).")


class RobustSource:
    """A source whose unreadable examples and non-finite annotations are counted skips.

    Evaluation streams use the same replacement but mark a replaced example invalid
    (`num_unreadable` > 0), so no image is scored twice.

    Args:
      source: any source in the `sources.py` convention.
      max_consecutive: this many unreadable examples in a row stop the run with an error
        (a wrong folder or a broken dataset is not "the odd bad file").

    Elements gain `num_invalid` and `num_unreadable` (int32 []). Other attributes
    (`class_names`, `coco_ground_truth`, ...) are the wrapped source's.
    """

    def __init__(self, source, *, max_consecutive: int = 16):
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be positive, got {max_consecutive}.")
        self.source = source
        self.max_consecutive = max_consecutive

    def __len__(self) -> int:
        return len(self.source)

    def __getattr__(self, name: str):
        if name == "source":  # not yet set (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)

    def __repr__(self) -> str:
        return f"RobustSource({self.source!r})"

    def _sanitise(self, element: dict[str, Any], index: int) -> dict[str, Any]:
        def where() -> str:
            return f"example {index} (image_id {element.get('image_id', '?')}) of {self.source!r}"

        element = remove_invalid_objects(element, where)
        check_classes(element, self.source.num_classes, where)
        return element

    def __getitem__(self, index) -> dict[str, Any]:
        index = int(index)
        size = len(self.source)
        for passed in range(min(self.max_consecutive, size)):
            position = (index + passed) % size
            try:
                element = self.source[position]
            # Decoders raise many types (OSError, ValueError, TensorFlow's OpError, ...); a
            # bug that makes every read fail still stops the run after max_consecutive.
            except Exception as error:  # pylint: disable=broad-except
                logging.warning("Skipping unreadable example %d of %r (%s: %s); using the "
                                "next one.", position, self.source, type(error).__name__, error)
                continue
            return {**self._sanitise(element, position), "num_unreadable": np.int32(passed)}
        raise UnreadableRunError(
            f"{min(self.max_consecutive, size)} consecutive examples from {index} of "
            f"{self.source!r} could not be read; the dataset (or the path to it) is broken. "
            "See the warnings above for the errors.")
