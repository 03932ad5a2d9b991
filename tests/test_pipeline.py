"""Tests for the Grain train/eval pipelines (centernet_jax.data.pipeline); num_workers=0 only."""

import json

import grain
import numpy as np
import pytest

from centernet_jax.data import pipeline
from centernet_jax.data.shapes import ShapesSource
from tests.conftest import eval_transform, train_transform


def _small_source(split="train", num_examples=12):
    return ShapesSource(split, num_examples=num_examples, seed=0, image_size=(32, 48),
                        objects_per_image=(1, 3))


class _IdAndDraw(grain.transforms.RandomMap):
    """Keeps the image id and one augmentation draw: exposes the stream's order and rngs."""

    def random_map(self, element, rng):
        return {"image_id": element["image_id"], "draw": np.float64(rng.random())}


def _assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_train_batches_shapes_and_determinism():
    source = _small_source()
    transform = train_transform(input_hw=(32, 32), max_objects=4, border=8)
    iterator = pipeline.make_train_iterator(source, transform, batch_size=3, seed=7)
    batch = next(iterator)
    assert batch["image"].shape == (3, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["boxes"].shape == (3, 4, 4) and batch["mask"].shape == (3, 4)
    assert batch["num_dropped"].shape == (3,)
    again = next(pipeline.make_train_iterator(source, transform, batch_size=3, seed=7))
    _assert_batches_equal([batch], [again])
    other = next(pipeline.make_train_iterator(source, transform, batch_size=3, seed=8))
    assert not np.array_equal(batch["image"], other["image"])


def test_resume_from_state_gives_the_same_next_batches():
    source = _small_source()
    transform = train_transform(input_hw=(32, 32), max_objects=4, border=8)
    iterator = pipeline.make_train_iterator(source, transform, batch_size=2, seed=3)
    for _ in range(5):  # cross an epoch boundary (12 examples = 6 batches) below
        next(iterator)
    state = iterator.get_state()
    state = json.loads(json.dumps(state))  # what a checkpoint would store
    expected = [next(iterator) for _ in range(3)]

    resumed = pipeline.make_train_iterator(source, transform, batch_size=2, seed=3)
    resumed.set_state(state)
    _assert_batches_equal(expected, [next(resumed) for _ in range(3)])


def test_resume_through_orbax_checkpoint(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    source = _small_source()
    transform = train_transform(input_hw=(32, 32), max_objects=4, border=8)
    iterator = pipeline.make_train_iterator(source, transform, batch_size=2, seed=3)
    next(iterator)
    manager = ocp.CheckpointManager(tmp_path)
    manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    expected = [next(iterator) for _ in range(2)]
    resumed = pipeline.make_train_iterator(source, transform, batch_size=2, seed=3)
    manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
    _assert_batches_equal(expected, [next(resumed) for _ in range(2)])
    manager.close()


def test_shuffled_epochs_and_shards_partition_the_examples():
    source = _small_source(num_examples=12)
    per_shard = []
    for shard_index in range(2):
        iterator = pipeline.make_train_iterator(source, _IdAndDraw(), batch_size=3, seed=1,
                                                shard_index=shard_index, shard_count=2)
        batches = [next(iterator) for _ in range(4)]  # 2 epochs of 6 examples per shard
        per_shard.append((np.concatenate([b["image_id"] for b in batches]),
                          np.concatenate([b["draw"] for b in batches])))
    ids = np.stack([p[0] for p in per_shard])  # [shard, position]
    for epoch in range(2):
        epoch_ids = ids[:, epoch * 6:(epoch + 1) * 6]
        assert sorted(epoch_ids.ravel().tolist()) == list(range(1, 13))
    assert not np.array_equal(ids[:, :6], ids[:, 6:])  # reshuffled each epoch
    assert not np.array_equal(ids[0, :6], np.arange(1, 7))  # shuffled at all
    draws = np.concatenate([p[1] for p in per_shard])
    assert len(np.unique(draws)) == len(draws)  # no two elements share augmentation draws


@pytest.mark.parametrize("shard_count", [2, 3])
def test_global_batch_does_not_depend_on_the_process_count(shard_count):
    """Process batches stacked in process order equal the one-process batch, row for row,
    across epoch boundaries (the loss trajectory must not depend on the host count)."""
    source = _small_source(num_examples=10)
    local = 2
    single = pipeline.make_train_iterator(source, _IdAndDraw(), batch_size=local * shard_count,
                                          seed=3)
    shards = [pipeline.make_train_iterator(source, _IdAndDraw(), batch_size=local, seed=3,
                                           shard_index=i, shard_count=shard_count)
              for i in range(shard_count)]
    for _ in range(7):
        want = next(single)
        got = [next(shard) for shard in shards]
        for key in ("image_id", "draw"):
            np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), want[key])


def test_eval_shard_indices_by_hand():
    indices, valid = pipeline.eval_shard_indices(11, batch_size=4, shard_index=0, shard_count=2)
    assert indices.tolist() == [0, 1, 2, 3, 4, 5, 0, 0]
    assert valid.tolist() == [True] * 6 + [False] * 2
    indices, valid = pipeline.eval_shard_indices(11, batch_size=4, shard_index=1, shard_count=2)
    assert indices.tolist() == [6, 7, 8, 9, 10, 6, 6, 6]
    assert valid.tolist() == [True] * 5 + [False] * 3
    indices, valid = pipeline.eval_shard_indices(1, batch_size=2, shard_index=1, shard_count=2)
    assert indices.tolist() == [0, 0] and not valid.any()
    with pytest.raises(ValueError):
        pipeline.eval_shard_indices(10, batch_size=2, shard_index=2, shard_count=2)


@pytest.mark.parametrize("num_examples, batch_size", [(11, 4), (3, 2)])
def test_eval_stream_sharded_over_two_processes(num_examples, batch_size):
    source = _small_source("val", num_examples=num_examples)
    transform = eval_transform(input_hw=(32, 32), max_objects=4)
    streams = [list(pipeline.make_eval_batches(source, transform, batch_size=batch_size,
                                               shard_index=p, shard_count=2))
               for p in range(2)]
    assert len(streams[0]) == len(streams[1]) > 0
    seen = []
    for stream in streams:
        for batch in stream:
            assert batch["image"].shape == (batch_size, 32, 32, 3)
            assert batch["valid"].dtype == np.bool_ and batch["valid"].shape == (batch_size,)
            seen += batch["image_id"][batch["valid"]].tolist()
            padding = batch["image_id"][~batch["valid"]]
            assert np.all((padding >= 1) & (padding <= num_examples))  # copies of real examples
    assert sorted(seen) == list(range(1, num_examples + 1))
    # A valid row is exactly the transformed example.
    first = streams[1][0]
    index = int(first["image_id"][0]) - 1
    np.testing.assert_array_equal(first["image"][0], transform.map(source[index])["image"])


def test_eval_stream_single_process_and_empty_source():
    source = _small_source("val", num_examples=5)
    batches = list(pipeline.make_eval_batches(source, eval_transform(input_hw=(32, 32)),
                                              batch_size=2))
    assert [b["valid"].tolist() for b in batches] == [[True, True], [True, True], [True, False]]
    assert list(pipeline.make_eval_batches(_small_source("val", 0), eval_transform(),
                                           batch_size=2)) == []


def test_bad_arguments():
    source = _small_source()
    with pytest.raises(ValueError, match="shard"):
        pipeline.make_train_iterator(source, train_transform(), batch_size=2, seed=0,
                                     shard_index=1, shard_count=1)
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.make_train_iterator(source, train_transform(), batch_size=0, seed=0)
    with pytest.raises(ValueError, match="shard"):
        pipeline.make_eval_batches(source, eval_transform(), batch_size=2, shard_count=0)
