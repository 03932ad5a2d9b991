"""Tests for centernet_jax.targets against hand-worked numbers and a slow NumPy reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import targets
from centernet_jax.targets import (
    RADIUS_FUNCTIONS,
    box_geometry,
    box_targets,
    draw_gaussians,
    gaussian_radius,
    gaussian_radius_corrected,
    max_gaussian_radius,
)

# --------------------------------------------------------------------------------------
# Independent slow reference of the official semantics (float64 radius and Gaussian,
# float32 box geometry, Python loops over objects and window pixels).
# --------------------------------------------------------------------------------------


def ref_radius(height, width, min_overlap=0.7):
    """CornerNet's formula as written, in Python floats (typo: /2 and '+' roots)."""
    o = min_overlap
    b1 = height + width
    c1 = width * height * (1 - o) / (1 + o)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * 1 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - o) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * 4 * c2)) / 2
    a3, b3, c3 = 4 * o, -2 * o * (height + width), (o - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def ref_gaussian_value(dx, dy, radius):
    sigma = (2 * radius + 1) / 6
    return math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))


def ref_draw(channel_map, cx, cy, radius):
    """In-place max of an official (umich) Gaussian, window clipped at the borders."""
    height, width = channel_map.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            x, y = cx + dx, cy + dy
            if 0 <= x < width and 0 <= y < height:
                value = ref_gaussian_value(dx, dy, radius)
                if value < np.finfo(np.float64).eps:  # eps * max, max = 1
                    value = 0.0
                channel_map[y, x] = max(channel_map[y, x], np.float32(value))


def ref_box_targets(boxes, classes, mask, num_classes, output_hw):
    height, width = output_hw
    batch, num_objects = classes.shape
    heatmap = np.zeros((batch, height, width, num_classes), np.float32)
    index = np.zeros((batch, num_objects), np.int32)
    size = np.zeros((batch, num_objects, 2), np.float32)
    offset = np.zeros((batch, num_objects, 2), np.float32)
    valid = np.zeros((batch, num_objects), bool)
    for b in range(batch):
        for k in range(num_objects):
            if not mask[b, k]:
                continue
            box = np.array(boxes[b, k], np.float32)
            box[[0, 2]] = np.clip(box[[0, 2]], 0, width - 1)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, height - 1)
            h, w = box[3] - box[1], box[2] - box[0]
            if not (h > 0 and w > 0):
                continue
            radius = max(0, int(ref_radius(math.ceil(h), math.ceil(w))))
            ct = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
            ct_int = ct.astype(np.int32)
            ref_draw(heatmap[b, :, :, classes[b, k]], int(ct_int[0]), int(ct_int[1]), radius)
            size[b, k] = 1.0 * w, 1.0 * h
            index[b, k] = ct_int[1] * width + ct_int[0]
            offset[b, k] = ct - ct_int
            valid[b, k] = True
    return {"heatmap": heatmap, "index": index, "size": size, "offset": offset, "mask": valid}


def random_boxes(rng, batch, num_objects, output_hw):
    """Boxes from sub-pixel to larger than the grid, many crossing or outside the border."""
    height, width = output_hw
    side = max(height, width)
    cx = rng.uniform(-0.3 * width, 1.3 * width, (batch, num_objects))
    cy = rng.uniform(-0.3 * height, 1.3 * height, (batch, num_objects))
    bw = np.exp(rng.uniform(np.log(0.1), np.log(2.0 * side), (batch, num_objects)))
    bh = np.exp(rng.uniform(np.log(0.1), np.log(2.0 * side), (batch, num_objects)))
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    boxes[:, ::5, 2] = boxes[:, ::5, 0]  # zero-width slots
    return boxes.astype(np.float32)


def assert_targets_equal(got, want):
    np.testing.assert_allclose(np.asarray(got["heatmap"]), want["heatmap"], rtol=2e-6, atol=1e-7)
    # Peaks (focal-loss positives) must be bit-exact.
    np.testing.assert_array_equal(np.asarray(got["heatmap"]) == 1.0, want["heatmap"] == 1.0)
    np.testing.assert_array_equal(np.asarray(got["mask"]), want["mask"])
    np.testing.assert_array_equal(np.asarray(got["index"]), want["index"])
    np.testing.assert_array_equal(np.asarray(got["size"]), want["size"])
    np.testing.assert_array_equal(np.asarray(got["offset"]), want["offset"])


# --------------------------------------------------------------------------------------
# Radius
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sides, expected", [
    ((1, 2, 3), 0), ((4, 5, 6, 7), 1), ((8, 9, 10), 2), ((11, 12, 13, 14), 3),
    ((15, 16, 17, 18), 4)])
def test_radius_table_for_squares(sides, expected):
    for side in sides:
        assert int(gaussian_radius(side, side)) == expected
        assert int(gaussian_radius(jnp.float32(side), jnp.float32(side))) == expected
    assert int(gaussian_radius(19, 19)) >= 5


@pytest.mark.parametrize("height, width, expected", [(32, 32, 8), (128, 128, 34), (4, 100, 2),
                                                      (100, 4, 2)])
def test_radius_examples(height, width, expected):
    assert int(gaussian_radius(height, width)) == expected
    assert int(gaussian_radius(jnp.asarray(height), jnp.asarray(width))) == expected


def test_radius_closed_form_for_squares():
    # r = -0.7 (h + w) + sqrt(0.49 (h + w)^2 + 0.84 h w) ~= 0.2733 * side.
    side = 100.0
    expected = -0.7 * 2 * side + math.sqrt(0.49 * (2 * side) ** 2 + 0.84 * side * side)
    assert gaussian_radius(side, side) == pytest.approx(expected, rel=1e-12)
    assert expected / side == pytest.approx(0.2733, abs=1e-4)


def test_radius_numpy_matches_official_float64():
    rng = np.random.default_rng(0)
    heights, widths = rng.uniform(0, 600, 200), rng.uniform(0, 600, 200)
    got = gaussian_radius(heights, widths)
    assert got.dtype == np.float64
    want = np.array([ref_radius(h, w) for h, w in zip(heights, widths)])
    # Python's float ** 2 goes through libm pow, NumPy's array ** 2 through x * x: 1 ulp.
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # On the integer sizes the official code passes (ceil), int() agrees exactly.
    sizes = np.arange(0, 160)
    got_int = np.trunc(gaussian_radius(sizes[:, None], sizes[None, :])).astype(int)
    want_int = np.array([[int(ref_radius(int(h), int(w))) for w in sizes] for h in sizes])
    np.testing.assert_array_equal(got_int, want_int)


def test_radius_jax_float32_int_matches_official_on_integer_sizes():
    sizes = np.arange(0, 400)
    heights, widths = np.meshgrid(sizes, sizes, indexing="ij")
    official = np.trunc(gaussian_radius(heights.astype(np.float64), widths.astype(np.float64)))
    got = jax.jit(gaussian_radius)(jnp.asarray(heights, jnp.float32),
                                   jnp.asarray(widths, jnp.float32))
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.trunc(np.asarray(got)), official)


def test_radius_zero_size_is_zero():
    for fn in RADIUS_FUNCTIONS.values():
        assert fn(0, 0) == 0
        assert float(fn(jnp.float32(0), jnp.float32(0))) == 0.0
        assert float(fn(jnp.float32(0), jnp.float32(7))) == 0.0


def test_corrected_radius_is_smaller_and_solves_the_quadratics():
    rng = np.random.default_rng(1)
    heights, widths = rng.uniform(1, 300, 100), rng.uniform(1, 300, 100)
    official = gaussian_radius(heights, widths)
    corrected = gaussian_radius_corrected(heights, widths)
    assert np.all(corrected < official)
    assert np.all(corrected > 0)
    o, s, a = 0.7, heights + widths, heights * widths
    # The admissible roots of the three IoU quadratics; corrected = their min.
    r1 = (s - np.sqrt(s ** 2 - 4 * a * (1 - o) / (1 + o))) / 2
    r2 = (2 * s - np.sqrt(4 * s ** 2 - 16 * (1 - o) * a)) / 8
    r3 = (-2 * o * s + np.sqrt(4 * o ** 2 * s ** 2 + 16 * o * (1 - o) * a)) / (8 * o)
    np.testing.assert_allclose(corrected, np.minimum(np.minimum(r1, r2), r3), rtol=1e-9)
    # Case 3 root is the official (typo) root divided by 2a / 2 = 4o = 2.8.
    np.testing.assert_allclose(r3, official / 2.8, rtol=1e-9)
    got32 = gaussian_radius_corrected(jnp.asarray(heights, jnp.float32),
                                      jnp.asarray(widths, jnp.float32))
    np.testing.assert_allclose(np.asarray(got32), corrected, rtol=1e-5)


def test_max_gaussian_radius():
    # A box covering a 128 x 128 grid is clipped to 127 x 127.
    assert max_gaussian_radius((128, 128)) == int(ref_radius(127, 127)) == 34
    assert max_gaussian_radius((1, 1)) == 0
    assert max_gaussian_radius((16, 40), "corrected") == int(gaussian_radius_corrected(15, 39))
    with pytest.raises(ValueError, match="radius"):
        max_gaussian_radius((8, 8), "nope")


# --------------------------------------------------------------------------------------
# Renderer: hand-worked cases
# --------------------------------------------------------------------------------------

HW = (16, 20)


def single(box, cls=0, num_classes=2, output_hw=HW, **kwargs):
    out = box_targets(np.array([[box]], np.float32), np.array([[cls]], np.int32),
                        np.array([[True]]), num_classes=num_classes, output_hw=output_hw, **kwargs)
    return jax.tree.map(np.asarray, out)


def test_hand_worked_gaussian():
    out = single([2.0, 3.0, 10.0, 11.0], cls=1)  # 8 x 8 -> r = 2, sigma = 5 / 6
    heatmap = out["heatmap"][0, :, :, 1]
    assert out["heatmap"][0, :, :, 0].max() == 0
    assert heatmap[7, 6] == 1.0
    np.testing.assert_allclose(heatmap[7, 7], np.exp(-18 / 25), rtol=1e-6)  # d^2 = 1
    np.testing.assert_allclose(heatmap[7, 8], np.exp(-72 / 25), rtol=1e-6)  # d^2 = 4
    np.testing.assert_allclose(heatmap[9, 8], np.exp(-144 / 25), rtol=1e-6)  # corner d^2 = 8
    assert heatmap[7, 9] == 0 and heatmap[10, 6] == 0  # outside the 5 x 5 window
    assert np.count_nonzero(heatmap) == 25
    assert np.isfinite(out["heatmap"]).all()
    assert out["index"][0, 0] == 7 * HW[1] + 6
    np.testing.assert_array_equal(out["size"][0, 0], [8.0, 8.0])
    np.testing.assert_array_equal(out["offset"][0, 0], [0.0, 0.0])
    assert out["mask"][0, 0]


def test_sub_pixel_box_is_a_single_peak():
    out = single([3.25, 4.25, 3.5, 4.75])  # w 0.25, h 0.5 -> ceil 1 -> r 0
    heatmap = out["heatmap"][0, :, :, 0]
    assert np.count_nonzero(heatmap) == 1 and heatmap[4, 3] == 1.0
    np.testing.assert_allclose(out["offset"][0, 0], [0.375, 0.5])
    np.testing.assert_allclose(out["size"][0, 0], [0.25, 0.5])


def test_box_larger_than_the_grid_is_clipped():
    out = single([-30.0, -40.0, 100.0, 90.0])  # clipped to (0, 0, 19, 15)
    np.testing.assert_array_equal(out["size"][0, 0], [19.0, 15.0])
    np.testing.assert_array_equal(out["offset"][0, 0], [0.5, 0.5])  # centre (9.5, 7.5)
    assert out["index"][0, 0] == 7 * 20 + 9
    radius = int(ref_radius(15, 19))
    heatmap = out["heatmap"][0, :, :, 0]
    assert heatmap[7, 9] == 1.0
    assert heatmap[7, 9 + radius] > 0 and heatmap[7, 9 + radius + 1] == 0


def test_partly_visible_box_uses_the_centre_of_the_visible_part():
    out = single([-6.0, 2.0, 4.0, 6.5])  # x clipped to [0, 4]: centre x = 2, not -1
    np.testing.assert_array_equal(out["size"][0, 0], [4.0, 4.5])
    np.testing.assert_array_equal(out["offset"][0, 0], [0.0, 0.25])
    assert out["index"][0, 0] == 4 * 20 + 2
    # Right / bottom border: clip to W - 1 = 19, H - 1 = 15.
    out = single([17.0, 13.0, 30.0, 30.0])
    np.testing.assert_array_equal(out["size"][0, 0], [2.0, 2.0])
    assert out["index"][0, 0] == 14 * 20 + 18


def test_window_is_clipped_at_the_border():
    out = single([0.0, 0.0, 1.0, 1.0], output_hw=(8, 8))  # centre (0.5, 0.5) -> (0, 0), r 0
    assert np.count_nonzero(out["heatmap"]) == 1
    centers = jnp.array([[[0, 0], [7, 5]]], jnp.int32)
    heatmap = np.asarray(draw_gaussians((1, 8, 8, 1), centers, jnp.array([[2, 2]]),
                                        jnp.array([[0, 0]]), jnp.array([[True, True]]),
                                        max_radius=3))
    want = np.zeros((8, 8), np.float32)
    ref_draw(want, 0, 0, 2)
    ref_draw(want, 7, 5, 2)
    np.testing.assert_allclose(heatmap[0, :, :, 0], want, rtol=2e-6)
    assert np.count_nonzero(heatmap[0, :3, :3, 0]) == 9 and np.count_nonzero(heatmap) == 9 + 15


def test_box_entirely_outside_the_grid_is_degenerate():
    out = single([25.0, 2.0, 40.0, 8.0])  # both x clip to 19 -> w = 0
    assert not out["mask"][0, 0]
    assert out["heatmap"].max() == 0


def test_overlapping_same_class_objects_take_the_elementwise_max():
    boxes = np.array([[[2.0, 2.0, 12.0, 12.0], [5.0, 4.0, 14.0, 11.0], [3.0, 3.0, 9.0, 13.0]]],
                     np.float32)
    classes = np.array([[1, 1, 0]], np.int32)
    both = box_targets(boxes, classes, np.ones((1, 3), bool), num_classes=2, output_hw=HW)
    separate = [single(boxes[0, k], cls=int(classes[0, k]))["heatmap"] for k in range(3)]
    np.testing.assert_array_equal(np.asarray(both["heatmap"]), np.maximum.reduce(separate))
    summed = separate[0] + separate[1]
    assert np.asarray(both["heatmap"]).max() == 1.0 and summed.max() > 1.0


def test_same_class_same_integer_centre_share_the_peak():
    boxes = np.array([[[4.0, 4.0, 10.0, 10.0], [6.2, 6.2, 8.4, 8.4]]], np.float32)
    out = jax.tree.map(np.asarray, box_targets(boxes, np.array([[0, 0]]), np.ones((1, 2), bool),
                                                 num_classes=1, output_hw=HW))
    assert out["index"][0, 0] == out["index"][0, 1] == 7 * 20 + 7
    assert out["mask"].all()
    assert np.sum(out["heatmap"] == 1.0) == 1  # one shared positive
    np.testing.assert_allclose(out["size"][0], [[6.0, 6.0], [2.2, 2.2]], rtol=1e-6)
    np.testing.assert_allclose(out["offset"][0], [[0.0, 0.0], [0.3, 0.3]], atol=1e-6)


def test_degenerate_and_masked_slots_are_zero_and_slots_are_not_compacted():
    boxes = np.array([[[1.0, 1.0, 6.0, 7.0],     # 0 valid
                       [3.0, 3.0, 3.0, 9.0],     # 1 zero width
                       [8.0, 2.0, 15.0, 9.0],    # 2 valid
                       [2.0, 2.0, 12.0, 12.0],   # 3 masked out
                       [10.0, 8.0, 18.0, 15.5],  # 4 valid
                       [4.0, 5.0, 9.0, 5.0],     # 5 zero height
                       [4.0, 5.0, 9.0, 8.0]]],   # 6 class out of range
                     np.float32)
    classes = np.array([[0, 1, 1, 0, 0, 1, 2]], np.int32)
    mask = np.array([[True, True, True, False, True, True, True]])
    out = jax.tree.map(np.asarray, box_targets(boxes, classes, mask, num_classes=2, output_hw=HW))
    np.testing.assert_array_equal(out["mask"][0], [True, False, True, False, True, False, False])
    for k in (1, 3, 5, 6):
        assert out["index"][0, k] == 0
        np.testing.assert_array_equal(out["size"][0, k], [0.0, 0.0])
        np.testing.assert_array_equal(out["offset"][0, k], [0.0, 0.0])
    for k in (0, 2, 4):  # slot k holds object k
        alone = single(boxes[0, k], cls=int(classes[0, k]))
        assert out["index"][0, k] == alone["index"][0, 0]
        np.testing.assert_array_equal(out["size"][0, k], alone["size"][0, 0])
        np.testing.assert_array_equal(out["offset"][0, k], alone["offset"][0, 0])
    expected = np.maximum.reduce([single(boxes[0, k], cls=int(classes[0, k]))["heatmap"]
                                  for k in (0, 2, 4)])
    np.testing.assert_array_equal(out["heatmap"], expected)


def test_corrected_radius_option_draws_smaller_gaussians():
    box = [1.0, 1.0, 17.0, 15.0]
    official = single(box)["heatmap"]
    corrected = single(box, radius="corrected")["heatmap"]
    assert np.count_nonzero(corrected) < np.count_nonzero(official)
    r = int(gaussian_radius_corrected(14, 16))
    assert np.count_nonzero(corrected) == (2 * r + 1) ** 2


# --------------------------------------------------------------------------------------
# Renderer: random cases against the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, output_hw", [(0, (16, 20)), (1, (24, 12)), (2, (9, 9))])
def test_random_cases_match_reference(seed, output_hw):
    rng = np.random.default_rng(seed)
    batch, num_objects, num_classes = 3, 12, 3
    boxes = random_boxes(rng, batch, num_objects, output_hw)
    classes = rng.integers(0, num_classes, (batch, num_objects)).astype(np.int32)
    mask = rng.uniform(size=(batch, num_objects)) < 0.8
    # Duplicate some objects so same-class, same-centre peaks occur.
    boxes[:, 3], classes[:, 3] = boxes[:, 2] + 0.1, classes[:, 2]
    got = box_targets(boxes, classes, mask, num_classes=num_classes, output_hw=output_hw)
    want = ref_box_targets(boxes, classes, mask, num_classes, output_hw)
    assert got["heatmap"].dtype == jnp.float32 and got["index"].dtype == jnp.int32
    assert got["size"].dtype == jnp.float32 and got["offset"].dtype == jnp.float32
    assert got["mask"].dtype == jnp.bool_
    assert want["mask"].sum() >= 5 and (~want["mask"] & mask).sum() > 0
    assert_targets_equal(got, want)


def test_works_inside_jit_and_vmap():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 2, 6, HW)
    classes = rng.integers(0, 2, (2, 6)).astype(np.int32)
    mask = np.ones((2, 6), bool)
    direct = box_targets(boxes, classes, mask, num_classes=2, output_hw=HW)

    @jax.jit
    def jitted(b, c, m):
        return box_targets(b, c, m, num_classes=2, output_hw=HW)

    # vmap over a leading axis of batches of size 1.
    per_image = jax.vmap(lambda b, c, m: box_targets(b[None], c[None], m[None], num_classes=2,
                                                       output_hw=HW))(boxes, classes, mask)
    for key in direct:
        np.testing.assert_array_equal(np.asarray(jitted(boxes, classes, mask)[key]), direct[key])
        np.testing.assert_array_equal(np.asarray(per_image[key][:, 0]), direct[key])


def test_radius_table_is_exact_where_float32_is_not():
    # 546 x 845 has an exact-integer true radius (182); official float64 gives 181.99..
    # and float32 gives 182.00002, so only the float64 table reproduces int() = 181.
    assert int(gaussian_radius(546, 845)) == 181
    assert int(gaussian_radius(jnp.float32(546), jnp.float32(845))) == 182
    table = targets.radius_table((547, 846))
    assert table[546, 845] == 181 and table[845 - 800, 546 - 500] == int(ref_radius(45, 46))
    geometry = box_geometry(jnp.array([[[0.0, 0.0, 845.0, 546.0]]]), jnp.array([[True]]),
                            output_hw=(547, 846))
    assert int(geometry.radius[0, 0]) == 181
    assert max_gaussian_radius((547, 846)) >= 181  # may include the 1e-3 slack


def test_box_geometry_without_ceil():
    boxes = jnp.array([[[0.0, 0.0, 7.5, 7.5]]])
    with_ceil = box_geometry(boxes, jnp.array([[True]]), output_hw=HW)
    without = box_geometry(boxes, jnp.array([[True]]), output_hw=HW, ceil_size=False)
    assert int(with_ceil.radius[0, 0]) == int(ref_radius(8, 8)) == 2
    assert int(without.radius[0, 0]) == int(ref_radius(7.5, 7.5)) == 2
    boxes = jnp.array([[[0.0, 0.0, 14.5, 14.5]]])  # ceil 15 -> 4; raw 14.5 -> 3
    assert int(box_geometry(boxes, jnp.array([[True]]), output_hw=HW).radius[0, 0]) == 4
    assert int(box_geometry(boxes, jnp.array([[True]]), output_hw=HW,
                            ceil_size=False).radius[0, 0]) == int(ref_radius(14.5, 14.5)) == 3


# --------------------------------------------------------------------------------------
# Cost: no objects x pixels intermediate
# --------------------------------------------------------------------------------------


def _largest_intermediate(jaxpr) -> int:
    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
        for param in eqn.params.values():
            for sub in (param if isinstance(param, (list, tuple)) else (param,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    largest = max(largest, _largest_intermediate(inner))
    return largest


def test_renderer_memory_scales_with_the_window_not_the_grid():
    batch, num_objects, output_hw, num_classes = 2, 16, (64, 64), 2
    max_radius = max_gaussian_radius(output_hw)
    window = (2 * max_radius + 1) ** 2
    assert window * 3 < output_hw[0] * output_hw[1]
    closed = jax.make_jaxpr(lambda b, c, m: box_targets(
        b, c, m, num_classes=num_classes, output_hw=output_hw))(
        jnp.zeros((batch, num_objects, 4)), jnp.zeros((batch, num_objects), jnp.int32),
        jnp.zeros((batch, num_objects), bool))
    largest = _largest_intermediate(closed.jaxpr)
    objects_x_pixels = batch * num_objects * output_hw[0] * output_hw[1]
    assert largest >= batch * num_objects * window  # the window really is materialised
    assert largest <= 2 * batch * num_objects * window  # (scatter indices at most)
    assert largest < objects_x_pixels / 2


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("boxes_shape, classes_shape, mask_shape, message", [
    ((2, 5, 3), (2, 5), (2, 5), "boxes must be"),
    ((2, 5, 4, 1), (2, 5), (2, 5), "boxes must be"),
    ((2, 5, 4), (2, 4), (2, 5), "classes must be"),
    ((2, 5, 4), (2, 5), (5,), "mask must be"),
])
def test_shape_errors(boxes_shape, classes_shape, mask_shape, message):
    with pytest.raises(ValueError, match=message):
        box_targets(np.zeros(boxes_shape, np.float32), np.zeros(classes_shape, np.int32),
                      np.zeros(mask_shape, bool), num_classes=2, output_hw=HW)


def test_dtype_and_option_errors():
    boxes = np.zeros((1, 2, 4), np.float32)
    classes, mask = np.zeros((1, 2), np.int32), np.ones((1, 2), bool)
    with pytest.raises(ValueError, match="classes must have an integer dtype"):
        box_targets(boxes, classes.astype(np.float32), mask, num_classes=2, output_hw=HW)
    with pytest.raises(ValueError, match="boxes must have a float dtype"):
        box_targets(boxes.astype(np.int32), classes, mask, num_classes=2, output_hw=HW)
    with pytest.raises(ValueError, match="mask must be bool"):
        box_targets(boxes, classes, mask.astype(np.float32), num_classes=2, output_hw=HW)
    with pytest.raises(ValueError, match="radius must be one of"):
        box_targets(boxes, classes, mask, num_classes=2, output_hw=HW, radius="fixed")
    with pytest.raises(ValueError, match="output_hw"):
        box_targets(boxes, classes, mask, num_classes=2, output_hw=(16,))
    with pytest.raises(ValueError, match="num_classes"):
        box_targets(boxes, classes, mask, num_classes=0, output_hw=HW)
    with pytest.raises(ValueError, match="min_overlap"):
        box_targets(boxes, classes, mask, num_classes=2, output_hw=HW, min_overlap=1.5)
    # A list output_hw is accepted (converted to a hashable tuple).
    out = box_targets(boxes, classes, mask, num_classes=2, output_hw=[16, 20])
    assert out["heatmap"].shape == (1, 16, 20, 2)


def test_draw_gaussians_errors():
    good = dict(centers_int=jnp.zeros((1, 2, 2), jnp.int32), radii=jnp.zeros((1, 2), jnp.int32),
                channels=jnp.zeros((1, 2), jnp.int32), valid=jnp.ones((1, 2), bool))
    with pytest.raises(ValueError, match="centers_int"):
        draw_gaussians((1, 4, 4, 1), **{**good, "centers_int": jnp.zeros((1, 2, 3), jnp.int32)},
                       max_radius=1)
    with pytest.raises(ValueError, match="radii"):
        draw_gaussians((1, 4, 4, 1), **{**good, "radii": jnp.zeros((1, 3), jnp.int32)},
                       max_radius=1)
    with pytest.raises(ValueError, match="integer dtype"):
        draw_gaussians((1, 4, 4, 1), **{**good, "centers_int": jnp.zeros((1, 2, 2))}, max_radius=1)
    with pytest.raises(ValueError, match="heatmap_shape"):
        draw_gaussians((4, 4, 1), **good, max_radius=1)
    assert targets.RADIUS_FUNCTIONS["official"] is gaussian_radius
