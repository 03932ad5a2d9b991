"""CenterNet training targets: Gaussian radius, peak rendering and box-centre targets.

The box-centre targets (`box_targets`: a per-class centre heatmap, box sizes, sub-pixel
offsets) are what 2D detection trains on and what pose and 3D detection start from.

Conventions (shared by every target builder in this package):

* Coordinates are in *output-grid* pixels (input pixels / down ratio), x to the right,
  y down, boxes as (x1, y1, x2, y2).
* Objects live in fixed, annotation-indexed slots padded to `max_objects`: slot k belongs to
  object k. Masked and degenerate slots keep zeros in every regression target and have
  `mask == False`; slots are never compacted.
* Heatmaps are NHWC, float32, combined across objects by elementwise max.
* `index` is row-major over the output width: y * W + x.

Official semantics reproduced here (the official CenterNet 2D detection loader):

1. Boxes are clipped, x to [0, W - 1] and y to [0, H - 1], *before* the centre is taken,
   so a partly visible box gets the centre of its visible part.
2. Only boxes with clipped w > 0 and h > 0 are used.
3. radius = max(0, int(gaussian_radius(ceil(h), ceil(w)))), CornerNet's formula including
   its typo (see `gaussian_radius`).
4. centre = clipped-box centre in float32, centre_int = truncation (never rounding).
5. A (2r + 1)^2 Gaussian with sigma = (2r + 1) / 6 is max-combined into the heatmap at
   centre_int; its peak is exactly 1.0.

Rendering cost grows with objects x (static maximum Gaussian window), never with
objects x pixels: every object scatters a (2R + 1)^2 window, R being the largest radius a
box on this grid can have, with `.at[].max(mode="drop")`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = Any

# float64 machine epsilon: the official Gaussian zeroes values below eps * max. Inside a
# (2r + 1)^2 window the smallest value is exp(-36 r^2 / (2r + 1)^2) > exp(-9), so the cut
# never fires; it is kept for fidelity.
_FLOAT64_EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------------------
# Gaussian radius
# --------------------------------------------------------------------------------------


def _array_namespace(*values: ArrayLike):
    """jax.numpy if any value is a JAX array (or tracer), else NumPy."""
    return jnp if any(isinstance(v, jax.Array) for v in values) else np


def _as_float(xp, value: ArrayLike):
    """NumPy: float64 (the official code evaluates the radius on Python floats).
    JAX: float32 (or a wider float dtype the caller already has)."""
    if xp is np:
        return np.asarray(value, dtype=np.float64)
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        return value.astype(jnp.float32)
    return value.astype(jnp.promote_types(value.dtype, jnp.float32))


def _safe_ratio(xp, numerator, denominator):
    """numerator / denominator, and 0 where the denominator is 0 (a 0 x 0 box)."""
    positive = denominator > 0
    return xp.where(positive, numerator / xp.where(positive, denominator, 1.0), 0.0)


def gaussian_radius(height: ArrayLike, width: ArrayLike, min_overlap: float = 0.7):
    """CornerNet's Gaussian radius exactly as the official code computes it, typo included.

    Three quadratics in r bound the corner displacement that keeps IoU >= min_overlap
    (o): (1) r^2 + (h + w) r + hw (1 - o) / (1 + o), (2) 4 r^2 + 2 (h + w) r + (1 - o) hw,
    (3) 4o r^2 - 2o (h + w) r + (o - 1) hw (coefficients as written in the code). Each root
    is taken as (b + sqrt(b^2 - 4ac)) / 2: divided by 2 instead of 2a, and the first two
    with a sign that gives the larger, not the admissible, root. The minimum of the three
    is returned; with o = 0.7 that is always root (3), about 0.2733 x side for squares.

    Args:
      height, width: box sizes in output pixels, >= 0; scalars or arrays that broadcast.
        The official 2D detection loader passes ceil(h), ceil(w) of the clipped box.
      min_overlap: the IoU o in (0, 1).

    Returns:
      The radius as a float, before any int() truncation, with the broadcast shape.
      NumPy or Python inputs are evaluated in float64 with the official expression and
      evaluation order (equal to the official Python-float result up to libm pow
      rounding, 1 ulp; int() identical for all integer sizes below 1024). JAX inputs are
      evaluated in float32 with root (3) in its algebraically equal, cancellation-free
      form c'/(sqrt(.) + |b|); int() of that matches the official one for every integer
      size pair below 546 px, but some larger boxes have an exactly integer true radius
      that float32 lands on the other side of. `box_geometry` therefore looks integer
      (ceiled) sizes up in `radius_table`, built from the float64 evaluation.
    """
    xp = _array_namespace(height, width, min_overlap)
    h, w = _as_float(xp, height), _as_float(xp, width)
    o = min_overlap
    total = h + w
    if xp is np:
        # Evaluation order of the official code, so the float64 result is bit-exact.
        c1 = w * h * (1 - o) / (1 + o)
        c2 = (1 - o) * w * h
        c3 = (o - 1) * w * h
    else:
        area = h * w  # exact in float32 for integer sizes below 4096
        c1 = area * ((1 - o) / (1 + o))
        c2 = (1 - o) * area
        c3 = (o - 1) * area

    b1 = total
    r1 = (b1 + xp.sqrt(b1**2 - 4 * c1)) / 2

    a2, b2 = 4, 2 * total
    r2 = (b2 + xp.sqrt(b2**2 - 4 * a2 * c2)) / 2

    a3, b3 = 4 * o, -2 * o * total
    sq3 = xp.sqrt(b3**2 - 4 * a3 * c3)
    if xp is np:
        r3 = (b3 + sq3) / 2
    else:
        # (b3 + sq3) / 2 == -2 a3 c3 / (sq3 - b3); b3 <= 0, so nothing cancels.
        r3 = _safe_ratio(xp, -2 * a3 * c3, sq3 - b3)
    return xp.minimum(xp.minimum(r1, r2), r3)


def gaussian_radius_corrected(height: ArrayLike, width: ArrayLike, min_overlap: float = 0.7):
    """The mathematically correct CornerNet radius (CornerNet issue #116 / PR #171).

    Same three IoU cases as `gaussian_radius`, but each root is divided by 2a and the
    admissible root is taken: the smaller root of r^2 - (h + w) r + hw (1 - o) / (1 + o)
    and of 4 r^2 - 2 (h + w) r + (1 - o) hw, and the positive root of
    4o r^2 + 2o (h + w) r + (o - 1) hw. Roots are evaluated in cancellation-free form.
    With o = 0.7 the result is the official radius / 2.8 (about 2.8x smaller).

    Args and returns as `gaussian_radius` (NumPy -> float64, JAX -> float32).
    """
    xp = _array_namespace(height, width, min_overlap)
    h, w = _as_float(xp, height), _as_float(xp, width)
    o = min_overlap
    total, area = h + w, h * w

    # Smaller root of a r^2 - b r + c = 0 is 2c / (b + sqrt(b^2 - 4ac)).
    c1 = area * (1 - o) / (1 + o)
    r1 = _safe_ratio(xp, 2 * c1, total + xp.sqrt(total**2 - 4 * c1))

    c2 = (1 - o) * area
    r2 = _safe_ratio(xp, 2 * c2, 2 * total + xp.sqrt(4 * total**2 - 16 * c2))

    # Positive root of a r^2 + b r - c' = 0 (c' >= 0) is 2c' / (b + sqrt(b^2 + 4ac')).
    c3 = (1 - o) * area
    b3 = 2 * o * total
    r3 = _safe_ratio(xp, 2 * c3, b3 + xp.sqrt(b3**2 + 16 * o * c3))
    return xp.minimum(xp.minimum(r1, r2), r3)


RADIUS_FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "official": gaussian_radius,
    "corrected": gaussian_radius_corrected,
}


def _check_radius_options(radius: str, min_overlap: float) -> None:
    if radius not in RADIUS_FUNCTIONS:
        raise ValueError(f"radius must be one of {sorted(RADIUS_FUNCTIONS)}, got {radius!r}")
    if not isinstance(min_overlap, (int, float)) or not 0.0 < float(min_overlap) < 1.0:
        raise ValueError(f"min_overlap must be a Python float in (0, 1), got {min_overlap!r}")


def _check_output_hw(output_hw: Any) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in output_hw)
        ok = all(int(v) == v for v in output_hw) and height > 0 and width > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"output_hw must be two positive integers (H, W), got {output_hw!r}")
    return height, width


def _radius_grid(output_hw: tuple[int, int], radius: str, min_overlap: float) -> np.ndarray:
    """float64 radius for every integer (h, w) in [0, H - 1] x [0, W - 1]."""
    hs = np.arange(output_hw[0], dtype=np.float64)[:, None]
    ws = np.arange(output_hw[1], dtype=np.float64)[None, :]
    return np.broadcast_to(RADIUS_FUNCTIONS[radius](hs, ws, float(min_overlap)), output_hw)


def radius_table(output_hw: tuple[int, int], radius: str = "official",
                 min_overlap: float = 0.7) -> np.ndarray:
    """Static int radius lookup table: table[h, w] = max(0, int(radius_fn(h, w))).

    Covers every integer size a box clipped to the H x W grid can have after ceil
    (h in [0, H - 1], w in [0, W - 1]). Evaluated once in float64 with the official
    expression, so gathering from it reproduces the official int radius bit for bit
    (the float32 formula can land on the other side of an exact-integer radius).

    Returns:
      Read-only int32 NumPy array [H, W].
    """
    _check_radius_options(radius, min_overlap)
    return _radius_table(_check_output_hw(output_hw), radius, float(min_overlap))


@functools.lru_cache(maxsize=None)
def _radius_table(output_hw: tuple[int, int], radius: str, min_overlap: float) -> np.ndarray:
    table = np.maximum(np.trunc(_radius_grid(output_hw, radius, min_overlap)), 0)
    table = table.astype(np.int32)
    table.flags.writeable = False
    return table


def max_gaussian_radius(output_hw: tuple[int, int], radius: str = "official",
                        min_overlap: float = 0.7) -> int:
    """The largest int radius any box clipped to an H x W grid can get (a static int).

    A clipped box has h in [0, H - 1] and w in [0, W - 1]; the radius is evaluated in
    float64 over all integer sizes (no monotonicity assumed). A 1e-3 slack covers the
    float32 formula (used for non-ceiled sizes) landing just above an integer.
    """
    _check_radius_options(radius, min_overlap)
    return _max_gaussian_radius(_check_output_hw(output_hw), radius, float(min_overlap))


@functools.lru_cache(maxsize=None)
def _max_gaussian_radius(output_hw: tuple[int, int], radius: str, min_overlap: float) -> int:
    largest = float(np.max(_radius_grid(output_hw, radius, min_overlap)))
    return max(0, int(math.floor(largest + 1e-3)))


# --------------------------------------------------------------------------------------
# Gaussian rendering
# --------------------------------------------------------------------------------------


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_integer(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.integer)


def _is_bool_or_integer(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.bool_) or jnp.issubdtype(dtype, jnp.integer)


def draw_gaussians(heatmap_shape: tuple[int, int, int, int], centers_int: ArrayLike,
                   radii: ArrayLike, channels: ArrayLike, valid: ArrayLike, *,
                   max_radius: int) -> Array:
    """Renders one official (umich) Gaussian per valid object, combined by elementwise max.

    Object n of image b puts exp(-(dx^2 + dy^2) / (2 sigma^2)), sigma = (2r + 1) / 6, on the
    (2r + 1)^2 window around `centers_int[b, n]` in channel `channels[b, n]`; the peak is
    exactly 1.0, the window is clipped at the borders, overlapping windows combine by
    max. Cost is O(B * N * (2 * max_radius + 1)^2): windows are scattered into the
    flattened heatmap with a scatter-max; out-of-window, out-of-grid and invalid entries
    get an out-of-range index and are dropped.

    Args:
      heatmap_shape: static (B, H, W, C).
      centers_int: int [B, N, 2], (x, y) integer peak positions. Out-of-grid peaks only
        draw the part of their window that falls inside the grid.
      radii: int [B, N], Gaussian radius r >= 0 (r = 0 draws a single pixel of 1.0).
      channels: int [B, N], channel (class) index; objects outside [0, C) are not drawn.
      valid: bool [B, N]; invalid objects are not drawn.
      max_radius: static int, the window half-size. Radii above it keep their sigma but
        are cropped to the window: pass `max_gaussian_radius(...)` to avoid that.

    Returns:
      float32 [B, H, W, C], zeros where nothing was drawn.
    """
    _check(len(heatmap_shape) == 4 and all(int(d) > 0 for d in heatmap_shape),
           f"heatmap_shape must be four positive ints (B, H, W, C), got {heatmap_shape!r}")
    batch, height, width, num_channels = (int(d) for d in heatmap_shape)
    _check(isinstance(max_radius, (int, np.integer)) and max_radius >= 0,
           f"max_radius must be a non-negative int, got {max_radius!r}")
    _check(height * width * num_channels < 2**31 - 1,
           f"H * W * C = {height * width * num_channels} overflows int32 indices")
    centers_int, radii = jnp.asarray(centers_int), jnp.asarray(radii)
    channels, valid = jnp.asarray(channels), jnp.asarray(valid)
    _check(centers_int.ndim == 3 and centers_int.shape[0] == batch and centers_int.shape[2] == 2,
           f"centers_int must be [B={batch}, N, 2] (x, y), got {centers_int.shape}")
    num_objects = centers_int.shape[1]
    for name, value in (("radii", radii), ("channels", channels), ("valid", valid)):
        _check(value.shape == (batch, num_objects),
               f"{name} must be [B, N] = {(batch, num_objects)}, got {value.shape}")
    for name, value in (("centers_int", centers_int), ("radii", radii), ("channels", channels)):
        _check(_is_integer(value.dtype), f"{name} must have an integer dtype, got {value.dtype}")
    _check(_is_bool_or_integer(valid.dtype), f"valid must be bool, got {valid.dtype}")

    return _draw_gaussians(centers_int, radii, channels, valid,
                           heatmap_shape=(batch, height, width, num_channels),
                           max_radius=int(max_radius))


@functools.partial(jax.jit, static_argnames=("heatmap_shape", "max_radius"))
def _draw_gaussians(centers_int, radii, channels, valid, *, heatmap_shape, max_radius):
    _, height, width, num_channels = heatmap_shape
    num_pixels = height * width * num_channels
    offsets = jnp.arange(-max_radius, max_radius + 1, dtype=jnp.int32)
    dy = offsets[None, :, None]  # [1, K, 1]
    dx = offsets[None, None, :]  # [1, 1, K]
    # Squared distance and its float32 image are exact (small integers).
    dist2 = (dx * dx + dy * dy).astype(jnp.float32)

    def render_image(center, radius, channel, ok):
        # center [N, 2], radius/channel/ok [N] -> heatmap [H, W, C] for one image.
        center = center.astype(jnp.int32)
        radius = radius.astype(jnp.int32)[:, None, None]
        channel = channel.astype(jnp.int32)[:, None, None]
        x = center[:, 0, None, None] + dx
        y = center[:, 1, None, None] + dy
        inside = (ok.astype(bool)[:, None, None]
                  & (jnp.abs(dx) <= radius) & (jnp.abs(dy) <= radius)
                  & (x >= 0) & (x < width) & (y >= 0) & (y < height)
                  & (channel >= 0) & (channel < num_channels))
        # -d^2 / (2 sigma^2) with sigma = D / 6 is -18 d^2 / D^2: one rounding, then exp.
        diameter = (2 * radius + 1).astype(jnp.float32)
        values = jnp.exp(-18.0 * dist2 / (diameter * diameter))
        values = jnp.where(dist2 == 0, 1.0, values)  # exact 1.0 peak: focal positives
        values = jnp.where(values < _FLOAT64_EPS, 0.0, values)
        flat = jnp.where(inside, (y * width + x) * num_channels + channel, num_pixels)
        heat = jnp.zeros((num_pixels,), jnp.float32)
        heat = heat.at[flat.reshape(-1)].max(values.reshape(-1), mode="drop")
        return heat.reshape(height, width, num_channels)

    return jax.vmap(render_image)(centers_int, radii, channels, valid)


# --------------------------------------------------------------------------------------
# Box geometry and box-centre targets
# --------------------------------------------------------------------------------------


class BoxGeometry(NamedTuple):
    """Per-slot geometry of clipped boxes; zeros in every field where `valid` is False.

    center: float32 [B, N, 2], (x, y) centre of the clipped box.
    center_int: int32 [B, N, 2], truncated centre (inside the grid).
    size: float32 [B, N, 2], (w, h) of the clipped box.
    radius: int32 [B, N], max(0, int(radius_fn(ceil(h), ceil(w)))), exact (table lookup);
      without ceil, int() of the float32 formula capped at `max_gaussian_radius`.
    valid: bool [B, N], input mask AND clipped w > 0 AND clipped h > 0.
    """

    center: Array
    center_int: Array
    size: Array
    radius: Array
    valid: Array


def box_geometry(boxes: ArrayLike, mask: ArrayLike, *, output_hw: tuple[int, int],
                 radius: str = "official", min_overlap: float = 0.7,
                 ceil_size: bool = True) -> BoxGeometry:
    """Clips boxes to the output grid and derives centre, size and Gaussian radius.

    Args:
      boxes: float [B, N, 4], (x1, y1, x2, y2) in output-grid pixels before clipping.
      mask: bool [B, N], slots holding real objects.
      output_hw: static (H, W) of the output grid.
      radius: key of RADIUS_FUNCTIONS.
      min_overlap: IoU passed to the radius function.
      ceil_size: radius from (ceil(h), ceil(w)) as the official 2D detection and pose
        loaders do; False uses the raw (h, w) as the official 3D detection loader does.

    Returns:
      BoxGeometry (see its docstring). Jittable, vmap-friendly; no loop over objects.
    """
    height, width = _check_output_hw(output_hw)
    _check_radius_options(radius, min_overlap)
    boxes, mask = jnp.asarray(boxes), jnp.asarray(mask)
    _check(boxes.ndim >= 1 and boxes.shape[-1] == 4,
           f"boxes must be [..., 4] (x1, y1, x2, y2), got shape {boxes.shape}")
    _check(jnp.issubdtype(boxes.dtype, jnp.floating),
           f"boxes must have a float dtype, got {boxes.dtype}")
    _check(mask.shape == boxes.shape[:-1],
           f"mask must be {boxes.shape[:-1]} to match boxes, got {mask.shape}")
    _check(_is_bool_or_integer(mask.dtype), f"mask must be bool, got {mask.dtype}")
    return _box_geometry(boxes, mask, output_hw=(height, width), radius=radius,
                         min_overlap=float(min_overlap), ceil_size=bool(ceil_size))


@functools.partial(jax.jit, static_argnames=("output_hw", "radius", "min_overlap", "ceil_size"))
def _box_geometry(boxes, mask, *, output_hw, radius, min_overlap, ceil_size):
    height, width = output_hw
    max_radius = max_gaussian_radius((height, width), radius, min_overlap)
    boxes = boxes.astype(jnp.float32)
    x1 = jnp.clip(boxes[..., 0], 0.0, width - 1.0)
    y1 = jnp.clip(boxes[..., 1], 0.0, height - 1.0)
    x2 = jnp.clip(boxes[..., 2], 0.0, width - 1.0)
    y2 = jnp.clip(boxes[..., 3], 0.0, height - 1.0)
    box_w, box_h = x2 - x1, y2 - y1
    valid = jnp.asarray(mask).astype(bool) & (box_w > 0) & (box_h > 0)

    # Degenerate slots get size 0 (radius 0) so no NaN or garbage reaches the int cast.
    radius_h = jnp.where(valid, box_h, 0.0)
    radius_w = jnp.where(valid, box_w, 0.0)
    if ceil_size:
        # Integer sizes in [0, H - 1] x [0, W - 1]: exact official radius from the table.
        table = jnp.asarray(_radius_table(output_hw, radius, min_overlap))
        rows = jnp.ceil(radius_h).astype(jnp.int32)
        cols = jnp.ceil(radius_w).astype(jnp.int32)
        radius_int = table[rows, cols]
    else:
        radius_float = RADIUS_FUNCTIONS[radius](radius_h, radius_w, min_overlap)
        radius_int = jnp.clip(jnp.trunc(radius_float), 0, max_radius).astype(jnp.int32)

    center = jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2], axis=-1)
    center_int = center.astype(jnp.int32)  # centre >= 0: the cast truncates like int()
    size = jnp.stack([box_w, box_h], axis=-1)

    keep = valid[..., None]
    return BoxGeometry(
        center=jnp.where(keep, center, 0.0),
        center_int=jnp.where(keep, center_int, 0),
        size=jnp.where(keep, size, 0.0),
        radius=jnp.where(valid, radius_int, 0),
        valid=valid,
    )


@functools.partial(jax.jit, static_argnames=("num_classes", "output_hw", "radius", "min_overlap"))
def _box_targets(boxes, classes, mask, *, num_classes, output_hw, radius, min_overlap):
    height, width = output_hw
    classes = classes.astype(jnp.int32)
    in_range = (classes >= 0) & (classes < num_classes)
    geometry = _box_geometry(boxes, mask.astype(bool) & in_range, output_hw=output_hw,
                             radius=radius, min_overlap=min_overlap, ceil_size=True)
    heatmap = _draw_gaussians(
        geometry.center_int, geometry.radius, classes, geometry.valid,
        heatmap_shape=(boxes.shape[0], height, width, num_classes),
        max_radius=max_gaussian_radius(output_hw, radius, min_overlap))
    center_x, center_y = geometry.center_int[..., 0], geometry.center_int[..., 1]
    offset = geometry.center - geometry.center_int.astype(jnp.float32)
    return {
        "heatmap": heatmap,
        "index": jnp.where(geometry.valid, center_y * width + center_x, 0).astype(jnp.int32),
        "size": geometry.size,
        "offset": jnp.where(geometry.valid[..., None], offset, 0.0),
        "mask": geometry.valid,
    }


def box_targets(boxes: ArrayLike, classes: ArrayLike, mask: ArrayLike, *, num_classes: int,
                  output_hw: tuple[int, int], radius: str = "official",
                  min_overlap: float = 0.7) -> dict[str, Array]:
    """Official CenterNet box-centre training targets for a padded batch (jitted).

    Args:
      boxes: float [B, N, 4], (x1, y1, x2, y2) in output-grid pixels, before clipping.
      classes: int [B, N], class ids in [0, num_classes). Out-of-range ids are treated
        like masked slots (not drawn, mask False).
      mask: bool (or integer) [B, N], slots holding real objects.
      num_classes: static C, heatmap channels.
      output_hw: static (H, W) of the output grid.
      radius: "official" (CornerNet typo, the default) or "corrected".
      min_overlap: static IoU for the radius (0.7).

    Returns:
      dict with
        heatmap: float32 [B, H, W, C], Gaussians max-combined per class, peaks exactly 1.
        index:   int32 [B, N], y * W + x of the truncated centre.
        size:    float32 [B, N, 2], (w, h) of the clipped box in output pixels.
        offset:  float32 [B, N, 2], centre - truncated centre, in [0, 1).
        mask:    bool [B, N], input mask AND clipped w > 0 AND clipped h > 0.
      Slot k is object k; slots with mask False hold zeros in index, size and offset.

    Raises:
      ValueError: on bad shapes, dtypes or static options (before tracing).
    """
    height, width = _check_output_hw(output_hw)
    _check(isinstance(num_classes, (int, np.integer)) and not isinstance(num_classes, bool)
           and num_classes > 0, f"num_classes must be a positive int, got {num_classes!r}")
    _check_radius_options(radius, min_overlap)
    boxes, classes, mask = jnp.asarray(boxes), jnp.asarray(classes), jnp.asarray(mask)
    _check(boxes.ndim == 3 and boxes.shape[-1] == 4,
           f"boxes must be [B, N, 4] (x1, y1, x2, y2), got shape {boxes.shape}")
    _check(jnp.issubdtype(boxes.dtype, jnp.floating),
           f"boxes must have a float dtype, got {boxes.dtype}")
    _check(classes.shape == boxes.shape[:2],
           f"classes must be [B, N] = {boxes.shape[:2]} to match boxes, got {classes.shape}")
    _check(_is_integer(classes.dtype), f"classes must have an integer dtype, got {classes.dtype}")
    _check(mask.shape == boxes.shape[:2],
           f"mask must be [B, N] = {boxes.shape[:2]} to match boxes, got {mask.shape}")
    _check(_is_bool_or_integer(mask.dtype), f"mask must be bool, got {mask.dtype}")
    return _box_targets(boxes, classes, mask, num_classes=int(num_classes),
                          output_hw=(height, width), radius=radius,
                          min_overlap=float(min_overlap))
