"""Tests for bad-data handling (centernet_jax.data.sanitize) through transforms and pipelines."""

import pickle

import numpy as np
import pytest

from centernet_jax import targets
from centernet_jax.data import pipeline, sanitize
from tests.conftest import eval_transform, train_transform


class _ListSource:
    """Examples 0..n-1; those in `broken` raise like a corrupt JPEG would."""

    class_names = ("a", "b", "c")
    num_classes = 3
    flip_pairs = ((0, 1),)

    def __init__(self, num_examples=6, broken=(), boxes=None, keypoints=False):
        self.num_examples = num_examples
        self.broken = set(broken)
        self.boxes = boxes
        self.keypoints = keypoints

    def __len__(self):
        return self.num_examples

    def __repr__(self):
        return "_ListSource"

    def __getitem__(self, index):
        if index in self.broken:
            raise OSError(f"cannot decode images/{index:06d}.jpg")
        boxes = (np.array([[2, 2, 20, 20]], np.float32) if self.boxes is None
                 else np.asarray(self.boxes, np.float32))
        element = {"image": np.full((32, 32, 3), index, np.uint8), "boxes": boxes,
                   "classes": np.arange(len(boxes), dtype=np.int32) % 3,
                   "image_id": np.int64(100 + index)}
        if self.keypoints:
            element["keypoints"] = np.tile(np.array([[5, 5, 2], [8, 8, 1]], np.float32),
                                           (len(boxes), 1, 1))
        return element


def test_non_finite_boxes_are_removed_and_counted():
    boxes = [[1, 1, 9, 9], [np.nan, 1, 5, 5], [2, 2, np.inf, 8], [3, 3, 12, 12]]
    element = _ListSource(boxes=boxes)[0]
    element["is_crowd"] = np.array([False, True, False, True])
    clean = sanitize.remove_invalid_objects(element)
    np.testing.assert_array_equal(clean["boxes"], [[1, 1, 9, 9], [3, 3, 12, 12]])
    np.testing.assert_array_equal(clean["classes"], [0, 0])  # rows 0 and 3 of 0,1,2,0
    np.testing.assert_array_equal(clean["is_crowd"], [False, True])
    assert clean["num_invalid"] == 2 and clean["num_invalid"].dtype == np.int32
    assert len(element["boxes"]) == 4  # the input is not modified
    assert sanitize.remove_invalid_objects(_ListSource()[0])["num_invalid"] == 0


def test_non_finite_3d_fields_remove_the_object():
    element = _ListSource(boxes=[[1, 1, 9, 9], [2, 2, 8, 8]])[0]
    element["location"] = np.array([[1, 2, 3], [1, np.nan, 3]], np.float32)
    element["rotation_y"] = np.array([0.1, 0.2], np.float32)
    clean = sanitize.remove_invalid_objects(element)
    assert clean["num_invalid"] == 1 and len(clean["boxes"]) == 1
    np.testing.assert_array_equal(clean["rotation_y"], np.float32([0.1]))


def test_non_finite_keypoints_become_unlabelled():
    element = _ListSource(boxes=[[1, 1, 9, 9]], keypoints=True)[0]
    element["keypoints"][0, 1, 0] = np.nan
    clean = sanitize.remove_invalid_objects(element)
    assert clean["num_invalid"] == 1 and len(clean["boxes"]) == 1  # the person stays
    np.testing.assert_array_equal(clean["keypoints"][0], [[5, 5, 2], [0, 0, 0]])


class _WrongClassMap(_ListSource):
    def __getitem__(self, index):
        return {**super().__getitem__(index), "classes": np.array([3], np.int32)}


def test_class_out_of_range_is_an_error_not_a_skip():
    with pytest.raises(ValueError, match=r"class indices \[3\] are outside \[0, 3\)"):
        sanitize.RobustSource(_WrongClassMap())[0]
    element = {**_ListSource()[0], "classes": np.array([-4], np.int32)}  # ignore codes: >= -4
    sanitize.check_classes(element, 3)
    with pytest.raises(ValueError, match="outside"):
        sanitize.check_classes({**element, "classes": np.array([-5], np.int32)}, 3)


def test_unreadable_example_is_replaced_by_the_next_and_counted(caplog):
    source = sanitize.RobustSource(_ListSource(broken={2, 3}))
    assert len(source) == 6 and source.class_names == ("a", "b", "c")
    assert source.flip_pairs == ((0, 1),)  # attributes of the wrapped source
    assert source[1]["image_id"] == 101 and source[1]["num_unreadable"] == 0
    with caplog.at_level("WARNING"):
        element = source[2]
    assert element["image_id"] == 104 and element["num_unreadable"] == 2
    assert "images/000002.jpg" in caplog.text and "images/000003.jpg" in caplog.text
    wraps = sanitize.RobustSource(_ListSource(broken={5}))
    assert wraps[5]["image_id"] == 100  # wraps around to example 0
    assert pickle.loads(pickle.dumps(source))[2]["image_id"] == 104  # Grain workers pickle


def test_a_broken_dataset_stops_with_a_clear_error():
    source = sanitize.RobustSource(_ListSource(num_examples=40, broken=set(range(40))),
                                   max_consecutive=4)
    with pytest.raises(sanitize.UnreadableRunError, match="4 consecutive examples from 7"):
        source[7]


def test_train_stream_carries_the_counters():
    source = sanitize.RobustSource(_ListSource(num_examples=8, broken={5},
                                               boxes=[[1, 1, 9, 9], [np.nan, 0, 1, 1]]))
    transform = train_transform(input_hw=(32, 32), max_objects=4, border=8)
    iterator = pipeline.make_train_iterator(source, transform, batch_size=8, seed=0)
    batch = next(iterator)  # one epoch, shuffled: example 5 was replaced by 6 once
    assert batch["num_unreadable"].sum() == 1 and batch["num_invalid"].sum() == 8
    assert batch["mask"].sum() == 8


def test_eval_stream_marks_unreadable_examples_invalid_and_scores_the_rest_once():
    source = sanitize.RobustSource(_ListSource(num_examples=7, broken={3}))
    transform = eval_transform(input_hw=(32, 32), max_objects=2)
    seen, unreadable = [], 0
    for shard in range(2):
        for batch in pipeline.make_eval_batches(source, transform, batch_size=3,
                                                shard_index=shard, shard_count=2):
            seen += batch["image_id"][batch["valid"]].tolist()
            unreadable += int(batch["num_unreadable"].sum())
    assert sorted(seen) == [100, 101, 102, 104, 105, 106] and unreadable == 1


def test_degenerate_and_outside_boxes_follow_the_official_semantics():
    # In a 32x32 image (output grid 8x8): a normal box, a zero-area box, a box wholly
    # outside the image, and one half outside. The official loader clips after the affine
    # and draws only boxes with positive clipped size.
    boxes = [[4, 4, 20, 20], [10, 10, 10, 18], [40, 40, 60, 60], [-8, 8, 8, 24]]
    element = _ListSource(boxes=boxes)[0]
    element["classes"] = np.zeros((4,), np.int32)
    out = eval_transform(input_hw=(32, 32), max_objects=4).map(element)
    assert out["mask"].all() and out["num_invalid"] == 0  # nothing removed on the host
    rendered = targets.box_targets(out["boxes"][None], out["classes"][None],
                                   out["mask"][None], num_classes=1, output_hw=(8, 8))
    assert np.asarray(rendered["mask"])[0].tolist() == [True, False, False, True]
    np.testing.assert_allclose(np.asarray(rendered["size"])[0, 3], [2, 4])  # clipped at x=0
