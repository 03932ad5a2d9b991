"""Soft-NMS and the multi-scale merge of CenterNet's test mode (NumPy, host side).

Official semantics (the official multi-scale test's `merge_outputs` and its Cython soft-NMS):

* Per class, the boxes of all test scales are concatenated and run through the Bodla et al.
  soft-NMS: Gaussian decay exp(-iou^2 / sigma) with sigma = 0.5, score threshold 0.001, and
  IoU with the +1-pixel convention, area = (x2 - x1 + 1) * (y2 - y1 + 1). `Nt` = 0.5 is
  passed but only the linear and hard variants use it.
* The pass is sequential: step i moves the best remaining box to row i and decays every
  later box that overlaps it. A box whose decayed score drops below the threshold is
  "discarded" by copying the last active row over it and shrinking the active count.
* Quirk: the caller ignores the returned keep list and uses every row of the mutated array,
  so the discard leaves *stale duplicate rows* in the results (`official=True` reproduces
  this; `official=False` returns only the kept rows).
* Then max_per_image: when more rows than the limit remain over all classes, keep the rows
  whose score is >= the max_per_image-th largest score (ties can keep more).

Numerics mirror the official Cython build, as compiled with Cython 3.3: the
detections are float32, every score operation and the IoU division are float32, while the
`+1` extents, the two areas and the union are evaluated in float64 and rounded to float32
when stored; the Gaussian `exp` runs in float64 on the float32 argument and is rounded to
float32. Other Cython versions can differ by about 1 ulp.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

ArrayLike = Any

METHODS = ("gaussian", "linear", "hard")
_F32 = np.float32
_F64 = np.float64


class SoftNMSResult(NamedTuple):
    """The rows a caller should use after one class's soft-NMS pass.

    boxes: float32 [m, 4] (x1, y1, x2, y2), the input's pixel units.
    scores: float32 [m], decayed scores.
    keep: int64 [m], the input row each output row holds. In corrected mode these are the
      kept detections (unique, best first). In official mode m = n and stale rows repeat the
      index of the row they were copied from.
    """
    boxes: np.ndarray
    scores: np.ndarray
    keep: np.ndarray


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_options(sigma: float, threshold: float, method: str, iou_threshold: float) -> None:
    _check(method in METHODS, f"method must be one of {METHODS}, got {method!r}")
    for name, value in (("sigma", sigma), ("threshold", threshold),
                        ("iou_threshold", iou_threshold)):
        _check(isinstance(value, (int, float, np.integer, np.floating))
               and not isinstance(value, bool) and np.isfinite(value),
               f"{name} must be a finite real number, got {value!r}")
    _check(sigma > 0, f"sigma must be > 0, got {sigma!r}")


def _as_detections(boxes: ArrayLike, scores: ArrayLike, name: str = ""
                   ) -> tuple[np.ndarray, np.ndarray]:
    """float32 copies of boxes [n, 4] and scores [n], validated."""
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    _check(boxes.ndim == 2 and boxes.shape[1] == 4,
           f"{name}boxes must have shape [n, 4], got {boxes.shape}")
    _check(scores.shape == (boxes.shape[0],),
           f"{name}scores must have shape [n] = [{boxes.shape[0]}], got {scores.shape}")
    for arg, values in (("boxes", boxes), ("scores", scores)):
        _check(np.issubdtype(values.dtype, np.number) and not np.iscomplexobj(values),
               f"{name}{arg} must be real numbers, got dtype {values.dtype}")
        _check(bool(np.all(np.isfinite(values))), f"{name}{arg} must be finite")
    # The official code casts the detections to float32 before soft-NMS.
    return boxes.astype(_F32), scores.astype(_F32)


def _decay(top: np.ndarray, boxes: np.ndarray, scores: np.ndarray, *, method: str,
           sigma: np.float32, iou_threshold: np.float32, threshold: np.float32
           ) -> tuple[np.ndarray, np.ndarray]:
    """The scores of `boxes` after suppression by `top`, and which of them are discarded.

    Args:
      top: float32 [4], the box picked at this step.
      boxes, scores: float32 [r, 4] and [r], the rows after it.

    Returns:
      (float32 [r] decayed scores, bool [r] discarded). Only boxes that overlap `top`
      (positive +1 intersection width and height) are decayed or can be discarded.
    """
    tx1, ty1, tx2, ty2 = top
    x1, y1, x2, y2 = boxes.T
    # +1 extents and areas in float64, stored as float32 (see module docstring).
    area = (((x2 - x1).astype(_F64) + 1.0) * ((y2 - y1).astype(_F64) + 1.0)).astype(_F32)
    top_area = (_F64(tx2 - tx1) + 1.0) * (_F64(ty2 - ty1) + 1.0)
    inter_w = ((np.minimum(tx2, x2) - np.maximum(tx1, x1)).astype(_F64) + 1.0).astype(_F32)
    inter_h = ((np.minimum(ty2, y2) - np.maximum(ty1, y1)).astype(_F64) + 1.0).astype(_F32)
    overlap = (inter_w > 0) & (inter_h > 0)
    inter = inter_w * inter_h
    union = (top_area + area.astype(_F64) - inter.astype(_F64)).astype(_F32)
    # The official Cython raises ZeroDivisionError here; only badly inverted boxes get here.
    _check(not np.any(overlap & (union == 0)),
           "boxes: an overlapping pair has zero +1-pixel union (inverted boxes)")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iou = inter / union
        if method == "gaussian":
            weight = np.exp((-(iou * iou) / sigma).astype(_F64)).astype(_F32)
        elif method == "linear":
            weight = np.where(iou > iou_threshold, _F32(1) - iou, _F32(1))
        else:
            weight = np.where(iou > iou_threshold, _F32(0), _F32(1))
        decayed = np.where(overlap, weight * scores, scores)
    return decayed, overlap & (decayed < threshold)


def _apply_step(boxes: np.ndarray, scores: np.ndarray, source: np.ndarray, start: int,
                count: int, decayed: np.ndarray, discard: np.ndarray) -> int:
    """Writes one step's decay into rows [start, count) in place; returns the new count.

    Reproduces the official in-place loop: rows are visited in order; a discarded row is
    overwritten by the last active row (not yet visited, so still undecayed), which is then
    visited at the same position; the last row keeps its old contents as a stale copy. Each
    row is decayed by the same amount wherever it is visited, so `decayed` and `discard`
    (indexed by original position - start) are computed once, vectorised, and only the
    discards need this loop.
    """
    end = count - 1
    position = start
    flagged = np.flatnonzero(discard) + start
    next_flag = 0
    while position <= end:
        while next_flag < len(flagged) and flagged[next_flag] < position:
            next_flag += 1
        hole = flagged[next_flag] if next_flag < len(flagged) else end + 1
        if hole > end:
            scores[position:end + 1] = decayed[position - start:end + 1 - start]
            break
        scores[position:hole] = decayed[position - start:hole - start]
        position, row = hole, hole  # `row`: original position of the row now at `position`
        while True:  # the row at `position` is discarded
            if position == end:
                # Copies itself over itself: this stale row keeps its decayed score.
                scores[position] = decayed[row - start]
                end -= 1
                break
            boxes[position], source[position] = boxes[end], source[end]
            row, end = end, end - 1
            if not discard[row - start]:
                scores[position] = decayed[row - start]
                position += 1
                break
    return end + 1


def soft_nms(boxes: ArrayLike, scores: ArrayLike, *, sigma: float = 0.5,
             threshold: float = 0.001, method: str = "gaussian", iou_threshold: float = 0.5,
             official: bool = True) -> SoftNMSResult:
    """Soft-NMS of one class's detections (Bodla et al., as CenterNet runs it).

    At step i the highest-scoring remaining box (the first one among equal scores) is swapped
    into row i, and every later box that overlaps it (+1-pixel IoU `iou`) has its score
    multiplied by

      gaussian: exp(-iou^2 / sigma)          (the official choice)
      linear:   1 - iou if iou > iou_threshold else 1
      hard:     0 if iou > iou_threshold else 1

    A decayed score below `threshold` discards the box. Non-overlapping boxes are never
    decayed or discarded, even when their score is below `threshold`.

    Args:
      boxes: [n, 4] (x1, y1, x2, y2) in original-image pixels; cast to float32.
      scores: [n]; cast to float32.
      sigma: Gaussian variance, > 0.
      threshold: score below which a decayed box is discarded.
      method: "gaussian", "linear" or "hard".
      iou_threshold: `Nt` of the linear and hard methods (official merge passes 0.5).
      official: True returns all n rows of the official in-place array, stale copies of
        discarded rows included (what CenterNet's merge_outputs uses); False returns only the
        kept rows, best first.

    Returns:
      SoftNMSResult(boxes float32 [m, 4], scores float32 [m], keep int64 [m]); m = n in
      official mode.
    """
    boxes, scores = _as_detections(boxes, scores)
    _check_options(sigma, threshold, method, iou_threshold)
    source = np.arange(len(scores), dtype=np.int64)
    options = dict(method=method, sigma=_F32(sigma), iou_threshold=_F32(iou_threshold),
                   threshold=_F32(threshold))
    count = len(scores)
    step = 0
    while step < count:
        best = step + int(np.argmax(scores[step:count]))  # first of equal maxima
        for array in (boxes, scores, source):
            array[[step, best]] = array[[best, step]]
        if step + 1 < count:
            decayed, discard = _decay(boxes[step], boxes[step + 1:count],
                                      scores[step + 1:count], **options)
            count = _apply_step(boxes, scores, source, step + 1, count, decayed, discard)
        step += 1
    if not official:
        boxes, scores, source = boxes[:count], scores[:count], source[:count]
    return SoftNMSResult(boxes=boxes, scores=scores, keep=source)


def _as_scale_detections(detections: Mapping[str, ArrayLike], index: int, num_classes: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check(isinstance(detections, Mapping) and {"boxes", "scores", "classes"} <= set(detections),
           f"per_scale[{index}] must be a dict with boxes, scores and classes")
    name = f"per_scale[{index}] "
    boxes, scores = _as_detections(detections["boxes"], detections["scores"], name)
    classes = np.asarray(detections["classes"])
    _check(classes.shape == scores.shape,
           f"{name}classes must have shape [n] = [{len(scores)}], got {classes.shape}")
    _check(np.issubdtype(classes.dtype, np.integer) or classes.size == 0,
           f"{name}classes must be integers, got dtype {classes.dtype}")
    _check(bool(np.all((classes >= 0) & (classes < num_classes))),
           f"{name}classes must lie in [0, num_classes = {num_classes})")
    return boxes, scores, classes.astype(np.int64)


def merge_detections(per_scale: Sequence[Mapping[str, ArrayLike]], *, num_classes: int,
                     max_per_image: int = 100, apply_nms: bool = True, official: bool = True,
                     sigma: float = 0.5, threshold: float = 0.001, method: str = "gaussian",
                     iou_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """CenterNet's `merge_outputs`: one image's detections from all test scales, merged.

    Per class, the scales' boxes are concatenated (scale order, then input order), run
    through `soft_nms` when `apply_nms` (official: multi-scale, or `--nms` at one scale),
    then the max_per_image cut keeps the rows scoring >= the max_per_image-th largest score
    over all classes (ties can keep more than max_per_image).

    Args:
      per_scale: one dict per scale with boxes [k, 4] (x1, y1, x2, y2, original-image
        pixels), scores [k] and classes [k] (int, 0-based); k may differ between scales.
      num_classes: number of classes C.
      max_per_image: detection budget per image, >= 1.
      apply_nms: run soft-NMS per class.
      official: keep soft-NMS's stale rows (see `soft_nms`).
      sigma, threshold, method, iou_threshold: soft-NMS options (official defaults).

    Returns:
      dict with boxes float32 [m, 4], scores float32 [m] and classes int32 [m], grouped by
      class in increasing class order; within a class, soft-NMS row order.
    """
    _check(isinstance(num_classes, (int, np.integer)) and not isinstance(num_classes, bool)
           and num_classes >= 1, f"num_classes must be a positive int, got {num_classes!r}")
    _check(isinstance(max_per_image, (int, np.integer)) and not isinstance(max_per_image, bool)
           and max_per_image >= 1,
           f"max_per_image must be a positive int, got {max_per_image!r}")
    _check(isinstance(per_scale, Sequence) and len(per_scale) >= 1,
           "per_scale must be a non-empty list of per-scale detection dicts")
    _check_options(sigma, threshold, method, iou_threshold)
    parts = [_as_scale_detections(d, i, num_classes) for i, d in enumerate(per_scale)]
    boxes, scores, classes = (np.concatenate(p) for p in zip(*parts))
    # A stable sort by class keeps the official per-class order (scale, then input row).
    order = np.argsort(classes, kind="stable")
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    if apply_nms:
        bounds = np.searchsorted(classes, np.arange(num_classes + 1))
        present = np.flatnonzero(np.diff(bounds))
        merged = [soft_nms(boxes[bounds[c]:bounds[c + 1]], scores[bounds[c]:bounds[c + 1]],
                           sigma=sigma, threshold=threshold, method=method,
                           iou_threshold=iou_threshold, official=official) for c in present]
        if merged:
            boxes = np.concatenate([m.boxes for m in merged])
            scores = np.concatenate([m.scores for m in merged])
            classes = np.repeat(present, [len(m.scores) for m in merged])
    if len(scores) > max_per_image:
        kth_largest = np.partition(scores, len(scores) - max_per_image)[-max_per_image]
        keep = scores >= kth_largest
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    return {"boxes": boxes.astype(_F32), "scores": scores.astype(_F32),
            "classes": classes.astype(np.int32)}
