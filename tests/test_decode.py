"""Tests for centernet_jax.decode against hand-made maps and a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax.decode import box_decode, nms_heatmap, peak_mask, top_k

# --------------------------------------------------------------------------------------
# NumPy reference following the official structure (per-class top-K, then global).
# --------------------------------------------------------------------------------------


def ref_nms(heatmap, kernel=3):
    """Keep pixels equal to the max of their kernel x kernel window (-inf padding)."""
    batch, height, width, channels = heatmap.shape
    pad = (kernel - 1) // 2
    padded = np.full((batch, height + 2 * pad, width + 2 * pad, channels), -np.inf, heatmap.dtype)
    padded[:, pad:pad + height, pad:pad + width] = heatmap
    pooled = np.full_like(heatmap, -np.inf)
    for dy in range(kernel):
        for dx in range(kernel):
            pooled = np.maximum(pooled, padded[:, dy:dy + height, dx:dx + width])
    return heatmap * (pooled == heatmap)


def ref_decode(heatmap, size, offset, k):
    batch, height, width, channels = heatmap.shape
    heat = ref_nms(heatmap)
    boxes = np.zeros((batch, k, 4), np.float32)
    scores = np.zeros((batch, k), np.float32)
    classes = np.zeros((batch, k), np.int32)
    for b in range(batch):
        per_class = heat[b].transpose(2, 0, 1).reshape(channels, -1)  # [C, H*W]
        cand_index = np.argsort(-per_class, axis=1, kind="stable")[:, :k]
        cand_score = np.take_along_axis(per_class, cand_index, axis=1)
        order = np.argsort(-cand_score.ravel(), kind="stable")[:k]
        for j, flat in enumerate(order):
            cls, slot = divmod(int(flat), cand_index.shape[1])
            spatial = int(cand_index[cls, slot])
            y, x = divmod(spatial, width)
            off = offset[b, y, x] if offset is not None else np.array([0.5, 0.5], np.float32)
            cx, cy = np.float32(x) + off[0], np.float32(y) + off[1]
            w, h = size[b, y, x]
            boxes[b, j] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            scores[b, j] = cand_score.ravel()[flat]
            classes[b, j] = cls
    return {"boxes": boxes, "scores": scores, "classes": classes}


# --------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------


def test_plateau_peaks_all_survive():
    heatmap = np.zeros((1, 5, 6, 1), np.float32)
    heatmap[0, 2, 2] = heatmap[0, 2, 3] = 0.8  # equal neighbours: both are maxima
    heatmap[0, 1, 2] = 0.5  # neighbour of a higher value: suppressed
    heatmap[0, 4, 5] = 0.3  # corner peak (padding is -inf, not 0)
    kept = np.asarray(nms_heatmap(heatmap))[0, :, :, 0]
    assert kept[2, 2] == kept[2, 3] == np.float32(0.8)
    assert kept[1, 2] == 0 and kept[4, 5] == np.float32(0.3)
    mask = np.asarray(peak_mask(heatmap))[0, :, :, 0]
    assert mask[2, 2] and mask[2, 3] and not mask[1, 2]


def test_negative_corner_peak_survives_with_inf_padding():
    heatmap = np.full((1, 3, 3, 1), -2.0, np.float32)
    heatmap[0, 0, 0] = -1.0  # with zero padding this would be suppressed
    assert bool(peak_mask(heatmap)[0, 0, 0, 0])


def test_nms_channels_are_independent_and_match_reference():
    rng = np.random.default_rng(0)
    heatmap = (rng.integers(0, 6, (2, 7, 8, 3)) / 5).astype(np.float32)  # many ties
    np.testing.assert_array_equal(np.asarray(nms_heatmap(heatmap)), ref_nms(heatmap))
    np.testing.assert_array_equal(np.asarray(nms_heatmap(heatmap, kernel=5)), ref_nms(heatmap, 5))
    # Unbatched [H, W, C] maps work too.
    np.testing.assert_array_equal(np.asarray(nms_heatmap(heatmap[0])), ref_nms(heatmap)[0])


def test_nms_kernel_must_be_odd():
    with pytest.raises(ValueError, match="odd"):
        peak_mask(jnp.zeros((1, 4, 4, 1)), kernel=2)


# --------------------------------------------------------------------------------------
# Top-K
# --------------------------------------------------------------------------------------


def test_top_k_indices_are_consistent():
    rng = np.random.default_rng(1)
    scores = rng.permutation(4 * 5 * 3).reshape(4, 5, 3).astype(np.float32) / 60
    result = top_k(scores, 7)
    np.testing.assert_array_equal(np.asarray(result.scores), np.sort(scores.ravel())[::-1][:7])
    ys, xs, cls = (np.asarray(v) for v in (result.ys, result.xs, result.classes))
    np.testing.assert_array_equal(scores[ys, xs, cls], np.asarray(result.scores))
    np.testing.assert_array_equal(np.asarray(result.index), ys * 5 + xs)
    for v in (result.index, result.classes, result.ys, result.xs):
        assert v.dtype == jnp.int32
    batched = top_k(np.stack([scores, scores[::-1]]), 7)  # leading batch dims
    np.testing.assert_array_equal(np.asarray(batched.scores[0]), np.asarray(result.scores))
    vmapped = jax.vmap(lambda s: top_k(s, 7))(np.stack([scores, scores[::-1]]))
    for a, b in zip(batched, vmapped):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_top_k_bounds():
    scores = jnp.zeros((2, 3, 2))
    assert top_k(scores, 12).scores.shape == (12,)
    with pytest.raises(ValueError, match="k must be an int in"):
        top_k(scores, 13)
    with pytest.raises(ValueError, match="k must be an int in"):
        top_k(scores, 0)


# --------------------------------------------------------------------------------------
# box decode
# --------------------------------------------------------------------------------------


def hand_made_maps():
    heatmap = np.zeros((1, 6, 8, 3), np.float32)
    size = np.zeros((1, 6, 8, 2), np.float32)
    offset = np.zeros((1, 6, 8, 2), np.float32)
    heatmap[0, 1, 2, 2] = 0.9   # class 2 at (x 2, y 1)
    heatmap[0, 4, 6, 0] = 0.7   # class 0 at (x 6, y 4)
    heatmap[0, 4, 5, 0] = 0.4   # suppressed by its neighbour
    heatmap[0, 4, 5, 1] = 0.5   # same pixel, other class: survives
    size[0, 1, 2] = [4.0, 2.0]
    size[0, 4, 6] = [2.0, 6.0]
    size[0, 4, 5] = [1.0, 1.0]
    offset[0, 1, 2] = [0.25, 0.75]
    offset[0, 4, 6] = [0.5, 0.0]
    offset[0, 4, 5] = [0.1, 0.2]
    return heatmap, size, offset


def test_decode_hand_made_map():
    heatmap, size, offset = hand_made_maps()
    out = jax.tree.map(np.asarray, box_decode(heatmap, size, offset, k=4))
    np.testing.assert_allclose(out["scores"][0], [0.9, 0.7, 0.5, 0.0])
    np.testing.assert_array_equal(out["classes"][0, :3], [2, 0, 1])
    # centre (2.25, 1.75), size (4, 2) -> (0.25, 0.75, 4.25, 2.75)
    np.testing.assert_allclose(out["boxes"][0, 0], [0.25, 0.75, 4.25, 2.75])
    # centre (6.5, 4.0), size (2, 6) -> (5.5, 1.0, 7.5, 7.0)
    np.testing.assert_allclose(out["boxes"][0, 1], [5.5, 1.0, 7.5, 7.0])
    # centre (5.1, 4.2), size (1, 1)
    np.testing.assert_allclose(out["boxes"][0, 2], [4.6, 3.7, 5.6, 4.7], rtol=1e-6)
    assert out["boxes"].dtype == np.float32 and out["classes"].dtype == np.int32


def test_decode_without_offset_adds_half_a_pixel():
    heatmap, size, _ = hand_made_maps()
    out = box_decode(heatmap, size, None, k=2)
    np.testing.assert_allclose(np.asarray(out["boxes"][0, 0]), [0.5, 0.5, 4.5, 2.5])
    np.testing.assert_allclose(np.asarray(out["boxes"][0, 1]), [5.5, 1.5, 7.5, 7.5])


def test_k_beyond_the_number_of_peaks_gives_zero_scores():
    heatmap, size, offset = hand_made_maps()
    out = box_decode(heatmap, size, offset, k=20)
    scores = np.asarray(out["scores"][0])
    np.testing.assert_allclose(scores[:3], [0.9, 0.7, 0.5])
    np.testing.assert_array_equal(scores[3:], 0.0)
    with pytest.raises(ValueError, match="k must be an int in"):
        box_decode(heatmap, size, offset, k=6 * 8 * 3 + 1)


def test_decode_plateau_keeps_both_equal_peaks():
    heatmap = np.zeros((1, 4, 4, 1), np.float32)
    heatmap[0, 1, 1] = heatmap[0, 1, 2] = 0.6
    size = np.ones((1, 4, 4, 2), np.float32)
    out = box_decode(heatmap, size, None, k=3)
    np.testing.assert_allclose(np.asarray(out["scores"][0]), [0.6, 0.6, 0.0])
    centres = sorted(tuple(b[:2] + 0.5) for b in np.asarray(out["boxes"][0, :2]))
    assert centres == [(1.5, 1.5), (2.5, 1.5)]


@pytest.mark.parametrize("use_offset", [True, False])
def test_decode_random_maps_match_reference(use_offset):
    rng = np.random.default_rng(2)
    batch, height, width, channels, k = 3, 9, 11, 4, 30
    heatmap = rng.permutation(batch * height * width * channels).astype(np.float32)
    heatmap = (heatmap / heatmap.size).reshape(batch, height, width, channels)  # distinct
    size = rng.uniform(0, 8, (batch, height, width, 2)).astype(np.float32)
    offset = rng.uniform(0, 1, (batch, height, width, 2)).astype(np.float32) if use_offset else None
    decode = jax.jit(box_decode, static_argnames="k")
    got = jax.tree.map(np.asarray, decode(heatmap, size, offset, k=k))
    want = ref_decode(heatmap, size, offset, k)
    np.testing.assert_array_equal(got["scores"], want["scores"])
    np.testing.assert_array_equal(got["classes"], want["classes"])
    np.testing.assert_allclose(got["boxes"], want["boxes"], rtol=1e-6, atol=1e-6)


def test_decode_ties_agree_by_score():
    # Saturated maps: many exactly equal scores; only the score multiset is defined.
    rng = np.random.default_rng(3)
    heatmap = (rng.integers(0, 3, (2, 6, 6, 3)) / 2).astype(np.float32)
    size = np.ones((2, 6, 6, 2), np.float32)
    got = np.asarray(box_decode(heatmap, size, None, k=40)["scores"])
    want = ref_decode(heatmap, size, None, 40)["scores"]
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))


def test_decode_shape_errors():
    heatmap, size, offset = hand_made_maps()
    with pytest.raises(ValueError, match="size must be"):
        box_decode(heatmap, size[..., :1], offset, k=3)
    with pytest.raises(ValueError, match="offset must be"):
        box_decode(heatmap, size, offset[:, :-1], k=3)
    with pytest.raises(ValueError, match="heatmap must be"):
        box_decode(heatmap[0], size, offset, k=3)
