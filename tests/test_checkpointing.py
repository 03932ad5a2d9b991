"""Checkpoints: restore onto a different mesh; iterator position; best-by-AP retention."""

import grain
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from centernet_jax import checkpointing, sharding


def _state(mesh, min_fsdp_size):
    rng = np.random.default_rng(0)
    tree = {"conv": {"kernel": rng.normal(size=(3, 3, 16, 32)).astype(np.float32),
                     "bias": rng.normal(size=(32,)).astype(np.float32)},
            "step": np.int32(7)}
    shardings = sharding.state_shardings(tree, mesh, min_fsdp_size=min_fsdp_size)
    return tree, jax.device_put(tree, shardings)


def test_restore_onto_a_different_mesh(tmp_path):
    mesh8 = sharding.make_mesh(data=4, fsdp=2)
    host, state8 = _state(mesh8, min_fsdp_size=64)
    assert state8["conv"]["kernel"].sharding.spec == P(None, None, None, "fsdp")
    ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=True)
    ckpt.save(3, state8)
    ckpt.wait_until_finished()

    for devices, data, fsdp in [(jax.devices()[:2], 1, 2), (jax.devices()[:2], 2, 1),
                                (jax.devices()[:1], 1, 1)]:
        mesh = sharding.make_mesh(data=data, fsdp=fsdp, devices=devices)
        abstract = jax.eval_shape(lambda: host)
        targets = sharding.state_shardings(abstract, mesh, min_fsdp_size=64)
        restored = ckpt.restore(3, sharding.abstract_with_shardings(abstract, targets))
        for got, want, target in zip(jax.tree.leaves(restored), jax.tree.leaves(host),
                                     jax.tree.leaves(targets)):
            np.testing.assert_array_equal(np.asarray(got), want)
            assert got.sharding == target
            assert len(got.sharding.device_set) == len(devices)
    ckpt.close()


def test_iterator_position_is_restored(tmp_path):
    def make_iter():
        return iter(grain.MapDataset.range(100).shuffle(seed=1).batch(4).to_iter_dataset())

    iterator = make_iter()
    for _ in range(3):
        next(iterator)
    host, _ = _state(sharding.make_mesh(devices=jax.devices()[:1]), 2 ** 20)
    ckpt = checkpointing.Checkpointer(str(tmp_path))
    ckpt.save(3, host, iterator)
    ckpt.wait_until_finished()
    expected = [next(iterator) for _ in range(2)]

    fresh = make_iter()
    ckpt.restore(3, jax.eval_shape(lambda: host), fresh)
    for want in expected:
        np.testing.assert_array_equal(next(fresh), want)
    ckpt.close()


def test_keeps_latest_and_best(tmp_path):
    host = {"w": np.zeros(3, np.float32)}
    ckpt = checkpointing.Checkpointer(str(tmp_path), max_to_keep=2, async_save=False,
                                      best_metric="AP")
    aps = {1: 0.2, 2: 0.9, 3: 0.1, 4: None, 5: 0.3, 6: None}
    for step, ap in aps.items():
        ckpt.save(step, host, metrics=None if ap is None else {"AP": ap})
    ckpt.wait_until_finished()
    assert ckpt.best_step() == 2
    assert set(ckpt.all_steps()) == {2, 5, 6}
    assert ckpt.latest_step() == 6
    ckpt.close()


def test_without_a_best_metric_keeps_only_the_latest(tmp_path):
    host = {"w": np.zeros(3, np.float32)}
    ckpt = checkpointing.Checkpointer(str(tmp_path), max_to_keep=2, async_save=False)
    for step, ap in {1: 0.2, 2: 0.9, 3: 0.1}.items():
        ckpt.save(step, host, metrics={"AP": ap})
    ckpt.wait_until_finished()
    assert ckpt.best_step() is None
    assert set(ckpt.all_steps()) == {2, 3}
    ckpt.close()
