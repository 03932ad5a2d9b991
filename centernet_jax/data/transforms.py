"""Host-side train/eval transforms for 2D detection (official CenterNet semantics, spec §5.3, §6).

Input elements follow the source convention: `image` uint8 BGR [h, w, 3]; `boxes` float32 [n, 4]
(x1, y1, x2, y2) in image pixels; `classes` int32 [n] (0-based); `image_id` int64.

Outputs are fixed-shape so they batch and jit: the image is warped to `input_hw` and normalised,
and objects are padded to `max_objects` with a `mask`. Boxes come out in OUTPUT-grid pixels
(input / down_ratio) and are NOT clipped: the device-side target renderer clips them, as the
official code does after the affine (spec §3.1). Objects beyond `max_objects` are dropped like
the official loader does (it reads only the first max_objs annotations) but are counted in
`num_dropped` so the trainer can log them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import cv2
import grain
import numpy as np

from centernet_jax import affine

# Official normalisation, in cv2 BGR channel order (spec §6).
COCO_MEAN_BGR = (0.40789654, 0.44719302, 0.47026115)
COCO_STD_BGR = (0.28863828, 0.27408164, 0.27809835)
# CornerNet PCA lighting (applied to BGR images as in the official code).
PCA_EIGVAL = np.array([0.2141788, 0.01817699, 0.00341571], dtype=np.float32)
PCA_EIGVEC = np.array([[-0.58752847, -0.69563484, 0.41340352],
                       [-0.5832747, 0.00994535, -0.81221408],
                       [-0.56089297, 0.71832671, 0.41158938]], dtype=np.float32)
# The official random-crop scale factors: np.arange(0.6, 1.4, 0.1), 8 values, 1.4 excluded.
RANDOM_CROP_SCALES = tuple(float(v) for v in np.arange(0.6, 1.4, 0.1))


def get_border(border: int, size: int) -> int:
    """The official crop border: `border` halved (integer) until size > 2 * border."""
    divisor = 1
    while size - border // divisor <= border // divisor:
        divisor *= 2
    return border // divisor


def color_augment(image: np.ndarray, rng: np.random.Generator, *, jitter: float = 0.4,
                  lighting_std: float = 0.1) -> None:
    """CornerNet colour jitter and PCA lighting, IN PLACE, without clipping (spec §6).

    Brightness, contrast and saturation run in a random order, each with alpha = 1 + U(-jitter,
    jitter); the grayscale image and its mean are computed once, before any of them. Then
    lighting adds eigvec @ (eigval * N(0, lighting_std)) to every pixel.

    Args:
      image: float32 [h, w, 3] BGR image in [0, 1]; modified in place.
      rng: the source of all randomness.
    """
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[..., None]  # [h, w, 1]
    gray_mean = gray.mean()
    for op in rng.permutation(3):
        alpha = 1.0 + rng.uniform(-jitter, jitter)
        image *= alpha
        if op == 1:  # contrast: blend with the mean gray level
            image += (1.0 - alpha) * gray_mean
        elif op == 2:  # saturation: blend with the grayscale image
            image += (1.0 - alpha) * gray
        # op == 0: brightness is the scaling alone.
    strengths = rng.normal(scale=lighting_std, size=3)
    image += (PCA_EIGVEC @ (PCA_EIGVAL * strengths)).astype(np.float32)


def pad_objects(boxes: np.ndarray, classes: np.ndarray, max_objects: int) -> dict[str, np.ndarray]:
    """Keeps the first `max_objects` objects and pads to that many slots.

    Returns:
      `boxes` float32 [M, 4], `classes` int32 [M], `mask` bool [M] (True for real objects) and
      `num_dropped` int32 [] (objects beyond M). Padding slots are zero.
    """
    count = len(boxes)
    kept = min(count, max_objects)
    padded_boxes = np.zeros((max_objects, 4), dtype=np.float32)
    padded_boxes[:kept] = boxes[:kept]
    padded_classes = np.zeros((max_objects,), dtype=np.int32)
    padded_classes[:kept] = classes[:kept]
    mask = np.zeros((max_objects,), dtype=bool)
    mask[:kept] = True
    return {"boxes": padded_boxes, "classes": padded_classes, "mask": mask,
            "num_dropped": np.int32(count - kept)}


def _check_element(element: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for key in ("image", "boxes", "classes"):
        if key not in element:
            raise ValueError(f"element is missing {key!r}; it has {sorted(element)}.")
    image = element["image"]
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0):
        raise ValueError("image must be a uint8 BGR array [h, w, 3], got "
                         f"{getattr(image, 'dtype', type(image))} {np.shape(image)}.")
    boxes = np.asarray(element["boxes"], dtype=np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    classes = np.asarray(element["classes"]).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [n, 4], got {boxes.shape}.")
    if classes.shape[0] != boxes.shape[0]:
        raise ValueError(f"classes {classes.shape} and boxes {boxes.shape} disagree in n.")
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must be integers, got {classes.dtype}.")
    return image, boxes, classes.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class _WarpConfig:
    """Fields shared by the train and eval transforms."""

    input_hw: Sequence[int] = (512, 512)
    down_ratio: int = 4
    max_objects: int = 128
    mean: Sequence[float] = COCO_MEAN_BGR
    std: Sequence[float] = COCO_STD_BGR

    def __post_init__(self):
        if len(self.input_hw) != 2 or min(self.input_hw) <= 0:
            raise ValueError(f"input_hw must be (height, width) > 0, got {self.input_hw!r}.")
        if self.down_ratio <= 0 or any(v % self.down_ratio for v in self.input_hw):
            raise ValueError(f"input_hw {tuple(self.input_hw)} must be divisible by "
                             f"down_ratio {self.down_ratio}.")
        if self.max_objects <= 0:
            raise ValueError(f"max_objects must be positive, got {self.max_objects}.")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 (BGR) values, got {self.mean}, {self.std}.")

    @property
    def output_hw(self) -> tuple[int, int]:
        return (self.input_hw[0] // self.down_ratio, self.input_hw[1] // self.down_ratio)

    def _warp_image(self, image: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
        """float32 [H, W, 3] BGR in [0, 1]: one bilinear warp of the window to input_hw."""
        in_h, in_w = self.input_hw
        matrix = affine.get_affine_transform(center, scale, 0.0, (in_w, in_h))
        warped = cv2.warpAffine(image, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR)
        return warped.astype(np.float32) / np.float32(255.0)

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        return ((image - np.asarray(self.mean, np.float32))
                / np.asarray(self.std, np.float32)).astype(np.float32)

    def _boxes_to_output(self, boxes: np.ndarray, center: np.ndarray,
                         scale: float) -> np.ndarray:
        """[n, 4] boxes -> output-grid pixels, both corners through the affine; not clipped."""
        out_h, out_w = self.output_hw
        matrix = affine.get_affine_transform(center, scale, 0.0, (out_w, out_h))
        corners = affine.affine_transform_points(boxes.reshape(-1, 2, 2), matrix)
        return corners.reshape(-1, 4).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TrainTransform(_WarpConfig, grain.transforms.RandomMap):
    """Official ctdet training augmentation (spec §6); every random draw uses the given rng.

    Default "random crop": s = max(h, w) * choice(scale_choices); the centre is a random integer
    in [border', size - border') per axis, border' = `get_border(border, size)`. With
    `not_rand_crop`: c += s * clip(N(0, 1) * shift, -2 shift, 2 shift) per axis and
    s *= clip(N(0, 1) * scale + 1, 1 - scale, 1 + scale). Then a horizontal flip with
    probability `flip_prob` (c_x <- w - c_x - 1; boxes x1' = w - x2 - 1, x2' = w - x1 - 1), one
    bilinear warp to `input_hw`, optional CornerNet colour augmentation, and normalisation
    (image / 255 - mean) / std in BGR.

    Output: `image` float32 [H, W, 3]; `boxes` float32 [M, 4] in output-grid pixels (not
    clipped); `classes` int32 [M]; `mask` bool [M]; `num_dropped` int32 [].
    """

    flip_prob: float = 0.5
    scale_choices: Sequence[float] = RANDOM_CROP_SCALES
    border: int = 128
    not_rand_crop: bool = False
    shift: float = 0.1
    scale: float = 0.4
    color_aug: bool = True

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image, boxes, classes = _check_element(element)
        height, width = image.shape[:2]
        center = np.array([width / 2.0, height / 2.0], dtype=np.float32)
        scale = max(height, width) * 1.0

        if not self.not_rand_crop:
            scale = scale * self.scale_choices[int(rng.integers(len(self.scale_choices)))]
            w_border = get_border(self.border, width)
            h_border = get_border(self.border, height)
            center[0] = rng.integers(w_border, width - w_border)
            center[1] = rng.integers(h_border, height - h_border)
        else:
            limit = 2.0 * self.shift
            center[0] += scale * np.clip(rng.standard_normal() * self.shift, -limit, limit)
            center[1] += scale * np.clip(rng.standard_normal() * self.shift, -limit, limit)
            scale = scale * np.clip(rng.standard_normal() * self.scale + 1.0,
                                    1.0 - self.scale, 1.0 + self.scale)

        if rng.random() < self.flip_prob:
            image = cv2.flip(image, 1)
            center[0] = width - center[0] - 1
            boxes = boxes.copy()
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]] - 1

        warped = self._warp_image(image, center, scale)
        if self.color_aug:
            color_augment(warped, rng)
        output = {"image": self._normalise(warped)}
        output.update(pad_objects(self._boxes_to_output(boxes, center, scale), classes,
                                  self.max_objects))
        return output


@dataclasses.dataclass(frozen=True)
class EvalTransform(_WarpConfig, grain.transforms.Map):
    """Deterministic test pre-processing, official `fix_res` (spec §5.3).

    The image is letterboxed into `input_hw`: c = (w / 2, h / 2), s = max(h, w), one bilinear
    warp, then normalisation. `center`/`scale` are what `affine.boxes_to_image` needs to map
    detections back. (`keep_res`, which pads instead of resizing and so changes the input size
    per image, would be a second `resize_mode`; it is not implemented.)

    `test_scale` is the multi-scale test's image scale (spec §5.5): officially the image is
    resized by it and letterboxed with s = max(h, w) of the original, i.e. the window on the
    original image is max(h, w) / test_scale wide. It is warped here in one step (the
    official code resizes first, then warps), and `center`/`scale` describe that window, so
    detections map straight back to original pixels.

    Output: `image` float32 [H, W, 3]; `center` float32 [2]; `scale` float32 [2] (s, s);
    `image_id` int64 []; `image_hw` int32 [2] (original size); `boxes` float32 [M, 4] in
    output-grid pixels; `classes` int32 [M]; `mask` bool [M]; `num_dropped` int32 [].
    """

    resize_mode: str = "fix_res"
    test_scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if not self.test_scale > 0:
            raise ValueError(f"test_scale must be positive, got {self.test_scale!r}.")
        if self.resize_mode != "fix_res":
            raise ValueError(f"resize_mode must be 'fix_res' (only mode implemented), "
                             f"got {self.resize_mode!r}.")

    def window(self, height: int, width: int) -> tuple[np.ndarray, float]:
        """(center float32 [2], scale) of the source window for an image of this size."""
        return (np.array([width / 2.0, height / 2.0], dtype=np.float32),
                max(height, width) / float(self.test_scale))

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        image, boxes, classes = _check_element(element)
        height, width = image.shape[:2]
        center, scale = self.window(height, width)
        output = {
            "image": self._normalise(self._warp_image(image, center, scale)),
            "center": center,
            "scale": np.array([scale, scale], dtype=np.float32),
            "image_id": np.int64(element.get("image_id", 0)),
            "image_hw": np.array([height, width], dtype=np.int32),
        }
        output.update(pad_objects(self._boxes_to_output(boxes, center, scale), classes,
                                  self.max_objects))
        return output
