"""The embedded default dataset: procedurally generated shapes on textured backgrounds.

Nothing is downloaded or stored: example `index` of a split is generated on the fly from
(seed, split, index) alone, so any process can read any example in any order (a Grain
RandomAccessDataSource). Generation has two stages:

* `_layout(index)`: everything that decides the ground truth (image size, object classes,
  geometry, binary masks, tight boxes, colours). Objects are rejected while any object would
  end up with less than `min_visible` of its area visible, and every object colour keeps a
  minimum distance from every background colour, so the ground truth is visible and learnable.
* `_render(layout)`: the pixels (background texture, object fills, sensor noise).

`coco_ground_truth()` needs only the first stage.

Conventions (shared by every source): `image` uint8 BGR [h, w, 3]; `boxes` float32 [n, 4]
(x1, y1, x2, y2) in image pixels with x2 = x1 + width (pixel i covers [i, i + 1)); `classes`
int32 [n], 0-based; `image_id` int64 >= 1; `image_hw` int32 [2].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import cv2
import numpy as np

from centernet_jax.data import sources

CLASS_NAMES = ("ellipse", "rectangle", "triangle", "ring", "cross")
SPLIT_IDS = {"train": 0, "val": 1, "validation": 1}
BACKGROUND_KINDS = ("flat", "gradient", "noise", "stripes", "checkerboard")

_SUBPIXEL_BITS = 4  # cv2 drawing "shift": coordinates carry 4 fractional bits
_SUBPIXEL = float(1 << _SUBPIXEL_BITS)
_MAX_PLACEMENT_ATTEMPTS = 30
_COLOUR_CANDIDATES = 64
# Object aspect ratios (width / height) are log-uniform in [1 / r, r] per class.
_ASPECT_RANGE = {"ellipse": 2.0, "rectangle": 2.0, "triangle": 1.4, "ring": 1.25, "cross": 1.4}


@dataclasses.dataclass(frozen=True)
class _Object:
    class_id: int
    colour: np.ndarray  # float32 [3], BGR 0..255
    mask: np.ndarray  # bool [h, w], the whole shape (before occlusion)
    box: np.ndarray  # float32 [4], tight box of `mask`, x2 = last column + 1


@dataclasses.dataclass(frozen=True)
class _Layout:
    index: int
    height: int
    width: int
    background_kind: str
    background_colours: np.ndarray  # float32 [2, 3]; background pixels lie between these
    noise_std: float
    objects: tuple[_Object, ...]  # bottom to top


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _fixed_point(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * _SUBPIXEL).astype(np.int32)


def _draw_shape(canvas: np.ndarray, name: str, x0: float, y0: float, bw: float, bh: float,
                rng: np.random.Generator) -> None:
    """Draws shape `name` filling the box [x0, x0 + bw] x [y0, y0 + bh] (pixel centres)."""
    cx, cy = x0 + bw / 2.0, y0 + bh / 2.0
    if name in ("ellipse", "ring"):
        center = tuple(int(v) for v in _fixed_point([cx, cy]))
        axes = tuple(int(v) for v in _fixed_point([bw / 2.0, bh / 2.0]))
        cv2.ellipse(canvas, center, axes, 0, 0, 360, 255, -1, cv2.LINE_8, _SUBPIXEL_BITS)
        if name == "ring":
            thickness = max(1.5, rng.uniform(0.25, 0.45) * min(bw, bh) / 2.0)
            inner = tuple(int(v) for v in _fixed_point(
                [max(bw / 2.0 - thickness, 0.5), max(bh / 2.0 - thickness, 0.5)]))
            cv2.ellipse(canvas, center, inner, 0, 0, 360, 0, -1, cv2.LINE_8, _SUBPIXEL_BITS)
        return
    if name == "rectangle":
        polygons = [[(x0, y0), (x0 + bw, y0), (x0 + bw, y0 + bh), (x0, y0 + bh)]]
    elif name == "triangle":
        orientation = int(rng.integers(4))  # apex up, down, left or right
        if orientation == 0:
            polygons = [[(x0, y0 + bh), (x0 + bw, y0 + bh), (cx, y0)]]
        elif orientation == 1:
            polygons = [[(x0, y0), (x0 + bw, y0), (cx, y0 + bh)]]
        elif orientation == 2:
            polygons = [[(x0 + bw, y0), (x0 + bw, y0 + bh), (x0, cy)]]
        else:
            polygons = [[(x0, y0), (x0, y0 + bh), (x0 + bw, cy)]]
    elif name == "cross":
        fraction = rng.uniform(0.25, 0.4)
        half_w, half_h = max(0.75, fraction * bw / 2.0), max(0.75, fraction * bh / 2.0)
        polygons = [
            [(x0, cy - half_h), (x0 + bw, cy - half_h), (x0 + bw, cy + half_h), (x0, cy + half_h)],
            [(cx - half_w, y0), (cx + half_w, y0), (cx + half_w, y0 + bh), (cx - half_w, y0 + bh)],
        ]
    else:
        raise ValueError(f"unknown shape {name!r}")
    for polygon in polygons:
        cv2.fillPoly(canvas, [_fixed_point(polygon)], 255, cv2.LINE_8, _SUBPIXEL_BITS)


def _tight_box(mask: np.ndarray) -> np.ndarray | None:
    """(x1, y1, x2, y2) of the True pixels with x2 = last column + 1, or None if empty."""
    columns = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if columns.size == 0:
        return None
    return np.array([columns[0], rows[0], columns[-1] + 1, rows[-1] + 1], dtype=np.float32)


def _distance_to_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of each of points [N, 3] to the segment a-b."""
    direction = b - a
    length_sq = float(direction @ direction)
    if length_sq == 0.0:
        return np.linalg.norm(points - a, axis=-1)
    t = np.clip((points - a) @ direction / length_sq, 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * direction), axis=-1)


class ShapesSource:
    """Random-access source of procedurally generated shapes (grain RandomAccessDataSource).

    Args:
      split: "train" or "val" ("validation" is an alias of "val").
      num_examples: number of examples in the split.
      seed: dataset seed; example `index` depends only on (seed, split, index).
      image_size: (min_side, max_side) in pixels; height and width are drawn independently.
      objects_per_image: (min, max) objects attempted per image, inclusive. An object that
        cannot be placed within the visibility rule after several attempts is left out.
      object_size: (min_px, max_fraction): geometric-mean side length is log-uniform between
        min_px pixels and max_fraction * min(h, w).
      min_visible: every object keeps at least this fraction of its area unoccluded.
      min_contrast: minimum Euclidean BGR distance (0..255 units) between an object colour and
        any background colour.
      min_object_contrast: minimum BGR distance between the colours of two objects.
      noise_std: (min, max) standard deviation of the additive Gaussian pixel noise.
    """

    def __init__(
        self,
        split: str = "train",
        num_examples: int = 1000,
        seed: int = 0,
        image_size: Sequence[int] = (96, 160),
        objects_per_image: Sequence[int] = (1, 8),
        object_size: Sequence[float] = (8.0, 0.8),
        min_visible: float = 0.5,
        min_contrast: float = 80.0,
        min_object_contrast: float = 40.0,
        noise_std: Sequence[float] = (0.0, 6.0),
    ):
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}.")
        if num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {num_examples}.")
        min_side, max_side = (int(v) for v in image_size)
        if not 16 <= min_side <= max_side:
            raise ValueError(f"image_size must be (min_side, max_side) with 16 <= min <= max, "
                             f"got {tuple(image_size)}.")
        min_objects, max_objects = (int(v) for v in objects_per_image)
        if not 0 <= min_objects <= max_objects:
            raise ValueError(f"objects_per_image must be (min, max) with 0 <= min <= max, "
                             f"got {tuple(objects_per_image)}.")
        min_px, max_fraction = float(object_size[0]), float(object_size[1])
        if not (2.0 <= min_px and 0.0 < max_fraction <= 1.0 and min_px < max_fraction * min_side):
            raise ValueError(f"object_size must be (min_px >= 2, max_fraction in (0, 1]) with "
                             f"min_px < max_fraction * min_side, got {tuple(object_size)}.")
        self.split = split
        self.num_examples = int(num_examples)
        self.seed = int(seed)
        self.image_size = (min_side, max_side)
        self.objects_per_image = (min_objects, max_objects)
        self.object_size = (min_px, max_fraction)
        self.min_visible = float(min_visible)
        self.min_contrast = float(min_contrast)
        self.min_object_contrast = float(min_object_contrast)
        self.noise_std = (float(noise_std[0]), float(noise_std[1]))
        self._split_id = SPLIT_IDS[split]

    # -- Dataset metadata ------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)

    @property
    def category_ids(self) -> tuple[int, ...]:
        """COCO category id of each 0-based class (contiguous, 1-based)."""
        return tuple(range(1, len(CLASS_NAMES) + 1))

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:
        return (f"ShapesSource(split={self.split!r}, num_examples={self.num_examples}, "
                f"seed={self.seed}, image_size={self.image_size}, "
                f"objects_per_image={self.objects_per_image}, object_size={self.object_size})")

    def __getitem__(self, index) -> dict[str, Any]:
        layout = self._layout(sources.check_index(index, self.num_examples))
        boxes = np.array([obj.box for obj in layout.objects], dtype=np.float32).reshape(-1, 4)
        return {
            "image": self._render(layout),
            "boxes": boxes,
            "classes": np.array([obj.class_id for obj in layout.objects], dtype=np.int32),
            "image_id": np.int64(layout.index + 1),
            "image_hw": np.array([layout.height, layout.width], dtype=np.int32),
        }

    def coco_ground_truth(self) -> dict[str, Any]:
        """The whole split as a COCO-format ground-truth dict (no pixels are rendered).

        Annotation `area` is the box area (there are no segmentations); category ids are
        1-based (`category_ids`).
        """
        images, annotations = [], []
        for index in range(self.num_examples):
            layout = self._layout(index)
            image_id = index + 1
            images.append({"id": image_id, "width": layout.width, "height": layout.height,
                           "file_name": f"shapes_{self.split}_{index:07d}.png"})
            for obj in layout.objects:
                x1, y1, x2, y2 = (float(v) for v in obj.box)
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id,
                    "category_id": obj.class_id + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        categories = [{"id": i + 1, "name": name, "supercategory": "shape"}
                      for i, name in enumerate(CLASS_NAMES)]
        return {"info": {"description": repr(self)}, "images": images,
                "annotations": annotations, "categories": categories}

    # -- Generation ------------------------------------------------------------------------

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._split_id, index, stream])

    def _layout(self, index: int) -> _Layout:
        """Everything that determines the ground truth of example `index`."""
        rng = self._rng(index, stream=0)
        min_side, max_side = self.image_size
        height, width = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
        background_kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
        background_colours = rng.uniform(0.0, 255.0, size=(2, 3)).astype(np.float32)
        if background_kind == "flat":
            background_colours[1] = background_colours[0]
        noise_std = float(rng.uniform(*self.noise_std))

        min_px, max_fraction = self.object_size
        max_extent = max_fraction * min(height, width)
        num_objects = int(rng.integers(self.objects_per_image[0], self.objects_per_image[1] + 1))
        objects: list[_Object] = []
        visible: list[np.ndarray] = []  # unoccluded part of each placed object
        for _ in range(num_objects):
            class_id = int(rng.integers(len(CLASS_NAMES)))
            name = CLASS_NAMES[class_id]
            for _attempt in range(_MAX_PLACEMENT_ATTEMPTS):
                side = _log_uniform(rng, min_px, max_extent)
                aspect = _log_uniform(rng, 1.0 / _ASPECT_RANGE[name], _ASPECT_RANGE[name])
                bw = float(np.clip(side * math.sqrt(aspect), min_px, min(max_extent, width - 2)))
                bh = float(np.clip(side / math.sqrt(aspect), min_px, min(max_extent, height - 2)))
                x0 = rng.uniform(0.0, width - 1 - bw)
                y0 = rng.uniform(0.0, height - 1 - bh)
                canvas = np.zeros((height, width), dtype=np.uint8)
                _draw_shape(canvas, name, x0, y0, bw, bh, rng)
                mask = canvas > 0
                area = int(mask.sum())
                if area == 0:
                    continue
                box = _tight_box(mask)
                still_visible = [v & ~mask for v in visible]
                if any(v.sum() < self.min_visible * o.mask.sum()
                       for v, o in zip(still_visible, objects)):
                    continue
                colour = self._pick_colour(rng, background_colours, [o.colour for o in objects])
                objects.append(_Object(class_id=class_id, colour=colour, mask=mask, box=box))
                visible = still_visible + [mask]
                break
        return _Layout(index=index, height=height, width=width, background_kind=background_kind,
                       background_colours=background_colours, noise_std=noise_std,
                       objects=tuple(objects))

    def _pick_colour(self, rng: np.random.Generator, background_colours: np.ndarray,
                     object_colours: list[np.ndarray]) -> np.ndarray:
        """A colour far from the background's colour segment and from the other objects."""
        candidates = rng.uniform(0.0, 255.0, size=(_COLOUR_CANDIDATES, 3)).astype(np.float32)
        margin = _distance_to_segment(candidates, *background_colours) / self.min_contrast
        for other in object_colours:
            margin = np.minimum(
                margin, np.linalg.norm(candidates - other, axis=-1) / self.min_object_contrast)
        good = np.flatnonzero(margin >= 1.0)
        return candidates[good[0] if good.size else int(np.argmax(margin))]

    def _render(self, layout: _Layout) -> np.ndarray:
        """uint8 BGR [h, w, 3] pixels of a layout."""
        rng = self._rng(layout.index, stream=1)
        height, width = layout.height, layout.width
        blend = self._background_pattern(rng, layout.background_kind, height, width)
        c0, c1 = layout.background_colours
        image = c0 + blend[..., None] * (c1 - c0)  # float32 [h, w, 3]
        for obj in layout.objects:
            image[obj.mask] = obj.colour
        if layout.noise_std > 0:
            image += layout.noise_std * rng.standard_normal((height, width, 3), dtype=np.float32)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)

    @staticmethod
    def _background_pattern(rng: np.random.Generator, kind: str, height: int,
                            width: int) -> np.ndarray:
        """float32 [h, w] in [0, 1]: where each pixel lies between the two background colours."""
        if kind == "flat":
            return np.zeros((height, width), dtype=np.float32)
        if kind == "noise":
            grid = rng.uniform(0.0, 1.0, size=tuple(rng.integers(2, 9, size=2))).astype(np.float32)
            smooth = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
            return np.clip(smooth, 0.0, 1.0)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        if kind == "checkerboard":
            cell = float(rng.uniform(4.0, 32.0))
            ox, oy = rng.uniform(0.0, 2.0 * cell, size=2)
            parity = (np.floor((xs + ox) / cell) + np.floor((ys + oy) / cell)) % 2
            return parity.astype(np.float32)
        angle = rng.uniform(0.0, np.pi)
        projection = xs * np.cos(angle) + ys * np.sin(angle)
        if kind == "gradient":
            low, high = projection.min(), projection.max()
            return ((projection - low) / max(high - low, 1e-6)).astype(np.float32)
        if kind == "stripes":
            period = float(rng.uniform(5.0, 40.0))
            wave = 0.5 + 0.5 * np.sin(2.0 * np.pi * projection / period + rng.uniform(0, 2 * np.pi))
            if rng.random() < 0.5:
                wave = (wave > 0.5).astype(np.float32)  # hard-edged stripes
            return wave.astype(np.float32)
        raise ValueError(f"unknown background kind {kind!r}")


def from_config(config: Any, split: str) -> ShapesSource:
    """The shapes source of `split` ("train", "val"/"validation") from a dataset config."""
    if split == "train":
        num_examples = sources._field(config, "num_train", 1000)
    elif split in ("val", "validation"):
        num_examples = sources._field(config, "num_val", 200)
    else:
        raise ValueError(f"unknown shapes split {split!r}; known: 'train', 'val'.")
    optional = {key: sources._field(config, key) for key in (
        "image_size", "objects_per_image", "object_size", "min_visible", "min_contrast",
        "min_object_contrast", "noise_std")}
    return ShapesSource(split=split, num_examples=num_examples,
                        seed=sources._field(config, "seed", 0),
                        **{key: value for key, value in optional.items() if value is not None})
