"""Tests for centernet_jax.losses against hand-worked values and a NumPy reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax.losses import focal_loss, gather_at_index, reg_l1_loss

LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------
# NumPy references (float64) of the official losses.
# --------------------------------------------------------------------------------------


def ref_focal_loss(logits, heatmap):
    pred = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    pred = np.clip(pred, 1e-4, 1 - 1e-4)
    gt = np.asarray(heatmap, np.float64)
    pos = gt == 1
    neg = gt < 1
    pos_loss = (np.log(pred) * (1 - pred) ** 2)[pos].sum()
    neg_loss = (np.log(1 - pred) * pred ** 2 * (1 - gt) ** 4)[neg].sum()
    num_pos = pos.sum()
    if num_pos == 0:
        return -neg_loss
    return -(pos_loss + neg_loss) / num_pos


def ref_reg_l1(pred, index, mask, target):
    batch, height, width, depth = pred.shape
    total, norm = 0.0, 0.0
    for b in range(batch):
        for k in range(index.shape[1]):
            y, x = divmod(int(index[b, k]), width)
            m = mask[b, k] if mask.ndim == 3 else np.full(depth, mask[b, k])
            for d in range(depth):
                total += abs(pred[b, y, x, d] * m[d] - target[b, k, d] * m[d])
                norm += float(m[d])
    return total / (norm + 1e-4)


# --------------------------------------------------------------------------------------
# Focal loss
# --------------------------------------------------------------------------------------


def test_focal_hand_worked_tiny_map():
    # One positive with p = 0.5 and one negative (gt 0.5) with p = 0.5:
    # -(0.25 ln 0.5 + 0.5^4 * 0.25 * ln 0.5) / 1 = 0.265625 ln 2.
    logits = jnp.zeros((1, 1, 2, 1))
    heatmap = jnp.array([1.0, 0.5]).reshape(1, 1, 2, 1)
    assert float(focal_loss(logits, heatmap)) == pytest.approx(0.265625 * LN2, rel=1e-6)


def test_focal_hand_worked_two_positives():
    # Positives p = sigmoid(ln 3) = 0.75 (twice), one negative gt 0 with p = 0.25.
    logits = jnp.array([math.log(3.0), math.log(3.0), -math.log(3.0)]).reshape(1, 3, 1, 1)
    heatmap = jnp.array([1.0, 1.0, 0.0]).reshape(1, 3, 1, 1)
    pos = 2 * (0.25 ** 2) * math.log(0.75)
    neg = 1.0 * 0.25 ** 2 * math.log(0.75)
    assert float(focal_loss(logits, heatmap)) == pytest.approx(-(pos + neg) / 2, rel=1e-6)


def test_focal_without_positives_is_unnormalised_negative_sum():
    logits = jnp.zeros((2, 1, 3, 1))  # p = 0.5 everywhere, gt = 0: each pixel 0.25 ln 2
    heatmap = jnp.zeros((2, 1, 3, 1))
    assert float(focal_loss(logits, heatmap)) == pytest.approx(6 * 0.25 * LN2, rel=1e-6)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2, 4, 5, 3)).astype(np.float32)
    heatmap = rng.uniform(0, 0.99, (2, 4, 5, 3)).astype(np.float32)
    assert float(focal_loss(logits, heatmap)) == pytest.approx(ref_focal_loss(logits, heatmap),
                                                               rel=1e-5)


def test_focal_matches_reference_and_normalises_over_the_whole_batch():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, (3, 6, 7, 4)).astype(np.float32)  # many outside the clip
    heatmap = rng.uniform(0, 1, (3, 6, 7, 4)).astype(np.float32) ** 3
    heatmap[0, 1, 2, 3] = heatmap[0, 4, 4, 0] = heatmap[2, 5, 6, 1] = 1.0
    heatmap[1, 2, 2, 2] = 1.5  # neither positive nor negative: ignored
    got = float(jax.jit(focal_loss)(logits, heatmap))
    assert got == pytest.approx(ref_focal_loss(logits, heatmap), rel=1e-5)
    # Image 1 has no positive; a per-image mean would differ from the global sum / 3.
    per_image = np.mean([ref_focal_loss(logits[i:i + 1], heatmap[i:i + 1]) for i in range(3)])
    assert abs(got - per_image) > 1e-3
    ignored = heatmap.copy()
    ignored[1, 2, 2, 2] = 7.0
    assert float(focal_loss(logits, ignored)) == pytest.approx(got, rel=1e-6)


def test_focal_clip_gives_finite_loss_and_zero_gradient_outside():
    heatmap = jnp.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.3]).reshape(1, 1, 6, 1)
    logits = jnp.array([-30.0, 30.0, 30.0, -30.0, 0.0, 0.5]).reshape(1, 1, 6, 1)
    loss, grad = jax.value_and_grad(focal_loss)(logits, heatmap)
    assert np.isfinite(float(loss))
    grad = np.asarray(grad).ravel()
    np.testing.assert_array_equal(grad[:4], 0.0)  # sigmoid outside [1e-4, 1 - 1e-4]
    assert grad[4] < 0 and grad[5] > 0  # inside: push positive up, negative down
    # The clipped probability defines the value: a confident wrong positive costs
    # -(1 - 1e-4)^2 log(1e-4) / 3 (three positives).
    single = focal_loss(jnp.full((1, 1, 1, 1), -30.0), jnp.ones((1, 1, 1, 1)))
    assert float(single) == pytest.approx(-(1 - 1e-4) ** 2 * math.log(1e-4), rel=1e-5)


def test_focal_bfloat16_inputs_are_computed_in_float32():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(0, 2, (1, 4, 4, 2)), jnp.bfloat16)
    heatmap = np.zeros((1, 4, 4, 2), np.float32)
    heatmap[0, 1, 1, 0] = 1.0
    loss = focal_loss(logits, heatmap)
    assert loss.dtype == jnp.float32
    want = ref_focal_loss(np.asarray(logits.astype(jnp.float32)), heatmap)
    assert float(loss) == pytest.approx(want, rel=1e-5)


def test_focal_shape_errors():
    with pytest.raises(ValueError, match="must equal logits shape"):
        focal_loss(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        focal_loss(jnp.zeros((4, 4, 2)), jnp.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="float dtype"):
        focal_loss(jnp.zeros((1, 4, 4, 2), jnp.int32), jnp.zeros((1, 4, 4, 2)))


# --------------------------------------------------------------------------------------
# RegL1 and gather
# --------------------------------------------------------------------------------------


def test_gather_at_index():
    feature_map = jnp.arange(2 * 3 * 4 * 2, dtype=jnp.float32).reshape(2, 3, 4, 2)
    index = jnp.array([[0, 5, 11], [7, 7, 4]])  # y * 4 + x
    got = np.asarray(gather_at_index(feature_map, index))
    fm = np.asarray(feature_map)
    want = np.stack([np.stack([fm[b, i // 4, i % 4] for i in row]) for b, row in
                     enumerate(np.asarray(index))])
    np.testing.assert_array_equal(got, want)
    assert got.shape == (2, 3, 2)


def test_reg_l1_one_object_unit_error_gives_one():
    pred = jnp.zeros((1, 4, 4, 2))
    target = jnp.zeros((1, 3, 2)).at[0, 0].set([1.0, -1.0])
    mask = jnp.array([[True, False, False]])
    index = jnp.array([[5, 0, 0]])
    loss = reg_l1_loss(pred, index, mask, target)
    assert float(loss) == pytest.approx(2.0 / (2.0 + 1e-4), rel=1e-7)
    assert float(loss) == pytest.approx(1.0, abs=1e-4)


def test_reg_l1_per_channel_mask():
    pred = jnp.zeros((1, 4, 4, 2)).at[0, 1, 1].set([3.0, 10.0])
    target = jnp.zeros((1, 2, 2)).at[0, 0].set([1.0, 0.0])
    index = jnp.array([[5, 0]])
    mask = jnp.array([[[1.0, 0.0], [0.0, 0.0]]])  # only channel 0 of object 0
    loss = reg_l1_loss(pred, index, mask, target)
    assert float(loss) == pytest.approx(2.0 / (1 + 1e-4), rel=1e-7)


def test_reg_l1_masked_slots_do_not_contribute():
    pred = jnp.ones((1, 3, 3, 2))
    target = jnp.array([[[1.0, 1.0], [1e6, -1e6]]])
    index = jnp.array([[4, 8]])
    loss = reg_l1_loss(pred, index, jnp.array([[True, False]]), target)
    assert float(loss) == 0.0


def test_reg_l1_matches_reference():
    rng = np.random.default_rng(3)
    pred = rng.normal(0, 2, (2, 5, 6, 2)).astype(np.float32)
    index = rng.integers(0, 30, (2, 7)).astype(np.int32)
    target = rng.normal(0, 2, (2, 7, 2)).astype(np.float32)
    mask = rng.uniform(size=(2, 7)) < 0.6
    got = jax.jit(reg_l1_loss)(pred, index, mask, target)
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(ref_reg_l1(pred, index, mask, target), rel=1e-5)
    channel_mask = (rng.uniform(size=(2, 7, 2)) < 0.5).astype(np.float32)
    got = reg_l1_loss(pred, index, channel_mask, target)
    assert float(got) == pytest.approx(ref_reg_l1(pred, index, channel_mask, target), rel=1e-5)


def test_reg_l1_gradient_flows_only_to_gathered_pixels():
    pred = jnp.zeros((1, 3, 3, 2))
    grad = jax.grad(reg_l1_loss)(pred, jnp.array([[4]]), jnp.array([[True]]),
                                 jnp.array([[[1.0, -1.0]]]))
    grad = np.asarray(grad)
    assert np.count_nonzero(grad) == 2
    np.testing.assert_allclose(grad[0, 1, 1], [-1 / 2.0001, 1 / 2.0001], rtol=1e-5)


def test_reg_l1_shape_errors():
    pred, index = jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 3), jnp.int32)
    mask, target = jnp.ones((1, 3), bool), jnp.zeros((1, 3, 2))
    with pytest.raises(ValueError, match="target must be"):
        reg_l1_loss(pred, index, mask, jnp.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="mask must be"):
        reg_l1_loss(pred, index, jnp.ones((1, 4), bool), target)
    with pytest.raises(ValueError, match="index must be"):
        reg_l1_loss(pred, jnp.zeros((2, 3), jnp.int32), mask, target)
    with pytest.raises(ValueError, match="index must be integer"):
        reg_l1_loss(pred, jnp.zeros((1, 3)), mask, target)
    with pytest.raises(ValueError, match="pred must be"):
        reg_l1_loss(jnp.zeros((4, 4, 2)), index, mask, target)
