"""Host-side train/eval transforms (the official CenterNet loaders' semantics).

Input elements follow the source convention (`sources.py`): `image` uint8 BGR [h, w, 3];
`boxes` float32 [n, 4] (x1, y1, x2, y2) in image pixels; `classes` int32 [n]; `image_id`
int64; optionally `keypoints` [n, K, 3] and the KITTI 3D fields (`calib`, `alpha`,
`dimensions`, `location`, `rotation_y`).

Outputs are fixed-shape so they batch and jit: the image is warped to `input_hw` and normalised,
and objects are padded to `max_objects` with a `mask`. Boxes and keypoints come out in
OUTPUT-grid pixels (input / down_ratio) and are NOT clipped: the device-side target renderer
clips them, as the official code does after the affine; keypoint visibility is
kept, so the renderer can apply the official "labelled and inside the grid" rule. 3D fields are
geometric facts of the object, not of the picture, and pass through unchanged (the official
ddd loader does the same: its depth and dimensions are metres, its angles radians).

Objects beyond `max_objects` are dropped like the official loader does (it reads only the first
max_objs annotations) but are counted in `num_dropped`; the `sanitize.COUNTERS` of the element
(`num_invalid`, `num_unreadable`) pass through, so the trainer can total and log them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import cv2
import grain
import numpy as np

from centernet_jax import affine
from centernet_jax.data import sanitize

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
    """CornerNet colour jitter and PCA lighting, IN PLACE, without clipping (as officially).

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


# Per-object fields other than boxes/classes that transforms carry (padded to max_objects),
# with their trailing shape; `calib` is per image.
OBJECT_FIELDS = {"alpha": (), "dimensions": (3,), "location": (3,), "rotation_y": ()}
IMAGE_FIELDS = {"calib": (3, 4)}


def pad_objects(fields: dict[str, np.ndarray], max_objects: int) -> dict[str, np.ndarray]:
    """Keeps the first `max_objects` rows of every per-object field, zero-padded to that many.

    Args:
      fields: name -> array [n, ...] with the same n (e.g. boxes [n, 4], classes [n]).
      max_objects: M, the padded length.

    Returns:
      Each field padded to [M, ...] (same dtype), plus `mask` bool [M] (True for real
      objects) and `num_dropped` int32 [] (objects beyond M).
    """
    counts = {name: len(value) for name, value in fields.items()}
    count = next(iter(counts.values()), 0)
    if any(n != count for n in counts.values()):
        raise ValueError(f"per-object fields disagree in length: {counts}.")
    kept = min(count, max_objects)
    output = {}
    for name, value in fields.items():
        padded = np.zeros((max_objects,) + value.shape[1:], dtype=value.dtype)
        padded[:kept] = value[:kept]
        output[name] = padded
    mask = np.zeros((max_objects,), dtype=bool)
    mask[:kept] = True
    output["mask"] = mask
    output["num_dropped"] = np.int32(count - kept)
    return output


def _check_element(element: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(image, per-object fields as float32/int32 arrays), or ValueError naming the problem."""
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
    count = boxes.shape[0]
    if classes.shape[0] != count:
        raise ValueError(f"classes {classes.shape} and boxes {boxes.shape} disagree in n.")
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must be integers, got {classes.dtype}.")
    objects = {"boxes": boxes, "classes": classes.astype(np.int32)}
    if "keypoints" in element:
        keypoints = np.asarray(element["keypoints"], dtype=np.float32)
        if keypoints.ndim != 3 or keypoints.shape[0] != count or keypoints.shape[2] != 3:
            raise ValueError(f"keypoints must have shape [n={count}, K, 3], got "
                             f"{keypoints.shape}.")
        objects["keypoints"] = keypoints
    for name, trailing in OBJECT_FIELDS.items():
        if name in element:
            value = np.asarray(element[name], dtype=np.float32)
            if value.shape != (count,) + trailing:
                raise ValueError(f"{name} must have shape {(count,) + trailing}, got "
                                 f"{value.shape}.")
            objects[name] = value
    return image, objects


def _passthrough(element: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-image fields and the bad-data counters, unchanged (counters default to 0)."""
    output = {}
    for name, shape in IMAGE_FIELDS.items():
        if name in element:
            value = np.asarray(element[name], dtype=np.float32)
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {value.shape}.")
            output[name] = value
    for name in sanitize.COUNTERS:
        if name != "num_dropped":
            output[name] = np.int32(element.get(name, 0))
    return output


@dataclasses.dataclass(frozen=True)
class _WarpConfig:
    """Fields shared by the train and eval transforms."""

    input_hw: Sequence[int]  # (H, W) of the network input
    output_hw: Sequence[int]  # its output grid: `Task.output_hw(input_hw, down_ratio)`
    mean: Sequence[float]  # BGR, of pixels / 255 (the config's input.mean)
    std: Sequence[float]
    max_objects: int = 128

    def __post_init__(self):
        for name in ("input_hw", "output_hw"):
            size = getattr(self, name)
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"{name} must be (height, width) > 0, got {size!r}.")
        if self.max_objects <= 0:
            raise ValueError(f"max_objects must be positive, got {self.max_objects}.")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 (BGR) values, got {self.mean}, {self.std}.")

    def _warp_image(self, image: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
        """float32 [H, W, 3] BGR in [0, 1]: one bilinear warp of the window to input_hw."""
        in_h, in_w = self.input_hw
        matrix = affine.get_affine_transform(center, scale, 0.0, (in_w, in_h))
        warped = cv2.warpAffine(image, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR)
        return warped.astype(np.float32) / np.float32(255.0)

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        return ((image - np.asarray(self.mean, np.float32))
                / np.asarray(self.std, np.float32)).astype(np.float32)

    def _objects_to_output(self, objects: dict[str, np.ndarray], center: np.ndarray,
                           scale: float) -> dict[str, np.ndarray]:
        """Boxes (both corners) and keypoints through the output affine, then padding."""
        out_h, out_w = self.output_hw
        matrix = affine.get_affine_transform(center, scale, 0.0, (out_w, out_h))
        objects = dict(objects)
        corners = affine.affine_transform_points(objects["boxes"].reshape(-1, 2, 2), matrix)
        objects["boxes"] = corners.reshape(-1, 4).astype(np.float32)
        if "keypoints" in objects:
            keypoints = objects["keypoints"].copy()
            keypoints[..., :2] = affine.affine_transform_points(keypoints[..., :2], matrix)
            objects["keypoints"] = keypoints
        return pad_objects(objects, self.max_objects)


CROP_MODES = ("random_crop", "shift_scale", "ddd")


@dataclasses.dataclass(frozen=True)
class TrainTransform(_WarpConfig, grain.transforms.RandomMap):
    """Official training augmentation; every random draw uses the given rng.

    `crop_mode` picks the window, in the official loaders' words:
    * "random_crop" (2D detection and pose default): s = max(h, w) * choice(scale_choices); the
      centre is a random integer in [border', size - border') per axis, border' =
      `get_border(border, size)`.
    * "shift_scale" (their `--not_rand_crop`): c += s * clip(N(0, 1) * shift, -2 shift,
      2 shift) per axis and s *= clip(N(0, 1) * scale + 1, 1 - scale, 1 + scale).
    * "ddd" (KITTI): s = w; with probability `ddd_aug_prob` (the official aug_ddd),
      s *= clip(N(0, 1) * scale + 1, 1 - scale, 1 + scale) and c += (w, h) * clip(N(0, 1) *
      shift, -2 shift, 2 shift); the output's `augmented` flag records it (the official ddd
      targets then switch depth and dimension supervision off).
    Then a horizontal flip with probability `flip_prob` (c_x <- w - c_x - 1; boxes x1' = w - x2
    - 1, x2' = w - x1 - 1; keypoints x' = w - x - 1 and the `flip_pairs` swap places), one
    bilinear warp to `input_hw`, optional CornerNet colour augmentation, and normalisation
    (image / 255 - mean) / std in BGR. Rotation (the official multi_pose `aug_rot`, off by
    default) is not implemented, nor is flipping 3D annotations (the official ddd loader
    never flips).

    Output: `image` float32 [H, W, 3]; `boxes` float32 [M, 4] and `keypoints` [M, K, 3] in
    output-grid pixels (not clipped); `classes` int32 [M]; `mask` bool [M]; 3D fields padded
    to [M, ...] and `calib` [3, 4] when the element has them; `augmented` bool [] in "ddd"
    mode; the counters `num_dropped`, `num_invalid`, `num_unreadable` int32 [].
    """

    flip_prob: float = 0.5
    flip_pairs: Sequence[Sequence[int]] = ()
    crop_mode: str = "random_crop"
    scale_choices: Sequence[float] = RANDOM_CROP_SCALES
    border: int = 128
    shift: float = 0.1
    scale: float = 0.4
    ddd_aug_prob: float = 0.5
    color_aug: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}.")
        if not 0.0 <= self.flip_prob <= 1.0 or not 0.0 <= self.ddd_aug_prob <= 1.0:
            raise ValueError("flip_prob and ddd_aug_prob are probabilities in [0, 1], got "
                             f"{self.flip_prob}, {self.ddd_aug_prob}.")

    def _window(self, height: int, width: int,
                rng: np.random.Generator) -> tuple[np.ndarray, float, bool]:
        """(center, scale, augmented) of the source window, drawn as the official loaders do."""
        center = np.array([width / 2.0, height / 2.0], dtype=np.float32)
        limit = 2.0 * self.shift
        if self.crop_mode == "random_crop":
            scale = max(height, width) * self.scale_choices[
                int(rng.integers(len(self.scale_choices)))]
            w_border = get_border(self.border, width)
            h_border = get_border(self.border, height)
            center[0] = rng.integers(w_border, width - w_border)
            center[1] = rng.integers(h_border, height - h_border)
            return center, scale, True
        if self.crop_mode == "shift_scale":
            scale = max(height, width) * 1.0
            center[0] += scale * np.clip(rng.standard_normal() * self.shift, -limit, limit)
            center[1] += scale * np.clip(rng.standard_normal() * self.shift, -limit, limit)
            scale = scale * np.clip(rng.standard_normal() * self.scale + 1.0,
                                    1.0 - self.scale, 1.0 + self.scale)
            return center, scale, True
        scale = float(width)  # ddd: s = (w, h), of which the affine uses only w
        if rng.random() >= self.ddd_aug_prob:
            return center, scale, False
        scale = scale * np.clip(rng.standard_normal() * self.scale + 1.0,
                                1.0 - self.scale, 1.0 + self.scale)
        center[0] += width * np.clip(rng.standard_normal() * self.shift, -limit, limit)
        center[1] += height * np.clip(rng.standard_normal() * self.shift, -limit, limit)
        return center, scale, True

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image, objects = _check_element(element)
        height, width = image.shape[:2]
        center, scale, augmented = self._window(height, width, rng)

        if self.flip_prob > 0 and rng.random() < self.flip_prob:
            if "location" in objects:
                raise ValueError("flipping 3D annotations is not supported; set flip_prob=0 "
                                 "(the official ddd recipe never flips).")
            image = cv2.flip(image, 1)
            center[0] = width - center[0] - 1
            boxes = objects["boxes"].copy()
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]] - 1
            objects = {**objects, "boxes": boxes}
            if "keypoints" in objects:
                objects["keypoints"] = flip_keypoints(objects["keypoints"], width,
                                                      self.flip_pairs)

        warped = self._warp_image(image, center, scale)
        if self.color_aug:
            color_augment(warped, rng)
        output = {"image": self._normalise(warped)}
        output.update(self._objects_to_output(objects, center, scale))
        output.update(_passthrough(element))
        if self.crop_mode == "ddd":
            output["augmented"] = np.bool_(augmented)
        return output


def flip_keypoints(keypoints: np.ndarray, width: int,
                   flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """Mirror image keypoints [n, K, 3]: x' = width - x - 1, and each (left, right) swaps."""
    flipped = keypoints.copy()
    flipped[..., 0] = width - keypoints[..., 0] - 1
    num_keypoints = keypoints.shape[1]
    for left, right in flip_pairs:
        if not (0 <= left < num_keypoints and 0 <= right < num_keypoints):
            raise ValueError(f"flip pair ({left}, {right}) is outside the {num_keypoints} "
                             "keypoints.")
        flipped[:, [left, right]] = flipped[:, [right, left]]
    return flipped


RESIZE_MODES = ("fix_res", "keep_res")


@dataclasses.dataclass(frozen=True)
class EvalTransform(_WarpConfig, grain.transforms.Map):
    """Deterministic test pre-processing (the official test script), in a canvas of static
    size `input_hw`.

    * "fix_res" (the official default, used for Pascal and KITTI): the image is letterboxed
      into `input_hw`: c = (w / 2, h / 2), s = max(h, w), one bilinear warp.
    * "keep_res" (every official COCO experiment): no resizing; the official canvas is
      (size | keep_res_pad) + 1 per axis (pad 31, or 127 for the hourglass) with the image's
      centre (w // 2, h // 2) at the canvas centre. Here that canvas sits at the top-left of
      the fixed `input_hw` canvas (the rest is the same border fill), so every image pixel
      lands exactly where the official code puts it, stride alignment included, while the
      batch keeps one static shape. `input_hw` must hold the largest canvas (COCO, longest
      side 640: 672 with pad 31, 768 with pad 127); a larger image is an error naming the
      size needed.

    `test_scale` is the multi-scale test's image scale: officially the image is
    resized by it first. It is warped here in one step (the official code resizes, then
    warps), and `center`/`scale` describe the window on the ORIGINAL image, so detections map
    straight back to original pixels with `affine.boxes_to_image` and the output grid of
    `input_hw`.

    Output: `image` float32 [H, W, 3]; `center` float32 [2]; `scale` float32 [2] (s, s);
    `image_id` int64 []; `image_hw` int32 [2] (original size); `boxes` float32 [M, 4] and
    `keypoints` [M, K, 3] in output-grid pixels; `classes` int32 [M]; `mask` bool [M]; 3D
    fields and `calib` when present; the counters `num_dropped`, `num_invalid`,
    `num_unreadable` int32 [].
    """

    resize_mode: str = "fix_res"
    keep_res_pad: int = 31
    test_scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if not self.test_scale > 0:
            raise ValueError(f"test_scale must be positive, got {self.test_scale!r}.")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got "
                             f"{self.resize_mode!r}.")
        if self.keep_res_pad < 0 or (self.keep_res_pad + 1) & self.keep_res_pad:
            raise ValueError(f"keep_res_pad must be 2^k - 1 (31, 127), got {self.keep_res_pad}.")

    def window(self, height: int, width: int) -> tuple[np.ndarray, float]:
        """(center float32 [2], scale) of the source window for an image of this size."""
        if self.resize_mode == "fix_res":
            return (np.array([width / 2.0, height / 2.0], dtype=np.float32),
                    max(height, width) / float(self.test_scale))
        new_h, new_w = int(height * self.test_scale), int(width * self.test_scale)
        canvas_h, canvas_w = (new_h | self.keep_res_pad) + 1, (new_w | self.keep_res_pad) + 1
        in_h, in_w = self.input_hw
        if canvas_h > in_h or canvas_w > in_w:
            raise ValueError(
                f"keep_res: a {height}x{width} image at scale {self.test_scale:g} needs a "
                f"{canvas_h}x{canvas_w} canvas, larger than input_hw {tuple(self.input_hw)}; "
                "raise eval.input_hw.")
        # Canvas centre of the official (canvas_h, canvas_w) canvas placed top-left in
        # input_hw, expressed as the window centre of a scale-1 warp into input_hw.
        center = np.array([new_w // 2 + (in_w - canvas_w) / 2.0,
                           new_h // 2 + (in_h - canvas_h) / 2.0], dtype=np.float64)
        return ((center / self.test_scale).astype(np.float32),
                in_w / float(self.test_scale))

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        image, objects = _check_element(element)
        height, width = image.shape[:2]
        center, scale = self.window(height, width)
        output = {
            "image": self._normalise(self._warp_image(image, center, scale)),
            "center": center,
            "scale": np.array([scale, scale], dtype=np.float32),
            "image_id": np.int64(element.get("image_id", 0)),
            "image_hw": np.array([height, width], dtype=np.int32),
        }
        output.update(self._objects_to_output(objects, center, scale))
        output.update(_passthrough(element))
        return output
