"""Grain input pipelines: an infinite, checkpointable train stream and a finite, padded eval stream.

Train: source -> shuffle -> repeat (reshuffled every epoch) -> random_map(transform) -> shard
(this process's slice) -> batch -> iterator. All of it is a lazy Grain MapDataset, so the
iterator state is just a position: `get_state()`/`set_state()` (and Grain's Orbax handlers
`grain.checkpoint.CheckpointSave/CheckpointRestore`) resume at exactly the next batch.

Eval: each process reads a contiguous share of the examples; the last batch is padded (with
copies of a real example marked `valid=False`) so that every process runs the same number of
batches and every example is seen exactly once overall.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import grain
import numpy as np


def _split_seed(seed: int) -> tuple[int, int]:
    """Two independent 32-bit seeds (shuffle, augmentation) from one pipeline seed."""
    shuffle_seed, augment_seed = np.random.SeedSequence(seed).generate_state(2)
    return int(shuffle_seed), int(augment_seed)


def _check_sharding(shard_index: int, shard_count: int) -> None:
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}.")


def make_train_iterator(
    source,
    transform: grain.transforms.RandomMap,
    *,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    num_workers: int = 0,
    num_threads: int = 4,
    prefetch_buffer_size: int = 4,
) -> grain.DatasetIterator:
    """An infinite iterator of per-process batches.

    The augmentation rng of each element is derived from (seed, global position in the
    repeated, shuffled stream), so a batch does not depend on `num_workers`, and resuming from
    a saved state reproduces the same batches. Process p of n gets every n-th batch of
    `batch_size` consecutive elements, so the assembled global batch is the same for any n.
    `random_map` is applied before sharding (it is lazy, so this costs nothing), so the
    processes get independent augmentation draws.

    Args:
      source: a random-access source (`__len__`, `__getitem__`).
      transform: a `grain.transforms.RandomMap`, e.g. `TrainTransform`.
      batch_size: per-process batch size; incomplete batches never occur (infinite stream).
      seed: pipeline seed (shuffle order and augmentation).
      shard_index, shard_count: this process's slice (process_index, process_count).
      num_workers: Grain worker processes (0: read in this process with `num_threads` threads).
      num_threads: reader threads per process.
      prefetch_buffer_size: batches read ahead per process.

    Returns:
      A `grain.DatasetIterator` of dicts of NumPy arrays with a leading batch axis.
    """
    _check_sharding(shard_index, shard_count)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if len(source) == 0:
        raise ValueError("the training source is empty.")
    shuffle_seed, augment_seed = _split_seed(seed)
    dataset = (
        grain.MapDataset.source(source)
        .shuffle(seed=shuffle_seed)
        .repeat()
        .random_map(transform, seed=augment_seed)
    )
    # Batch first, then deal whole batches to processes: the global batch of step k is then
    # stream elements [k * B, (k + 1) * B) in order, whatever the number of processes.
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset[shard_index::shard_count]
    iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size))
    if num_workers > 0:
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(iter_dataset)


class _PaddedEvalElement:
    """Maps a position in the padded per-process stream to a transformed element + `valid`."""

    def __init__(self, source, transform, indices: np.ndarray, valid: np.ndarray):
        self._source = source
        self._transform = transform
        self._indices = indices
        self._valid = valid

    def __call__(self, position: int) -> dict[str, Any]:
        element = self._source[int(self._indices[position])]
        element = (self._transform.map(element) if isinstance(self._transform, grain.transforms.Map)
                   else self._transform(element))
        # A source that replaces unreadable examples (sanitize.RobustSource) has handed over
        # another example: it must not be scored as this one, nor twice.
        unreadable = int(element.get("num_unreadable", 0)) > 0
        valid = bool(self._valid[position]) and not unreadable
        if not self._valid[position] and "num_unreadable" in element:
            element["num_unreadable"] = np.int32(0)  # padding rows count nothing
        return {**element, "valid": np.bool_(valid)}


def eval_shard_indices(num_examples: int, batch_size: int, shard_index: int = 0,
                       shard_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Example indices read by one process, padded to whole batches, and their validity.

    Process p gets the contiguous range [p * per, min((p + 1) * per, n)) with
    per = ceil(n / shard_count); all processes get ceil(per / batch_size) batches. Padding rows
    repeat a real example (the share's first, or example 0 if the share is empty).

    Returns:
      (indices int64 [num_batches * batch_size], valid bool [num_batches * batch_size]).
    """
    _check_sharding(shard_index, shard_count)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    per_process = math.ceil(num_examples / shard_count)
    num_rows = math.ceil(per_process / batch_size) * batch_size
    start = min(shard_index * per_process, num_examples)
    stop = min(start + per_process, num_examples)
    real = np.arange(start, stop, dtype=np.int64)
    filler = start if stop > start else 0
    indices = np.concatenate([real, np.full(num_rows - real.size, filler, dtype=np.int64)])
    valid = np.arange(num_rows) < real.size
    return indices, valid


def make_eval_batches(
    source,
    transform: grain.transforms.Map | Callable[[dict[str, Any]], dict[str, Any]],
    *,
    batch_size: int,
    shard_index: int = 0,
    shard_count: int = 1,
    num_threads: int = 4,
) -> Iterator[dict[str, np.ndarray]]:
    """A finite iterator over this process's eval batches, padded with a `valid` bool [B] mask.

    Every process yields the same number of batches; over all processes each example appears
    exactly once with `valid=True`. Order within a process follows the example index.
    """
    # Validate eagerly (a generator body would only run at the first `next`).
    indices, valid = eval_shard_indices(len(source), batch_size, shard_index, shard_count)
    if indices.size == 0:
        return iter(())
    dataset = (
        grain.MapDataset.range(indices.size)
        .map(_PaddedEvalElement(source, transform, indices, valid))
        .batch(batch_size, drop_remainder=True)
    )
    return iter(dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=max(2, num_threads))))
