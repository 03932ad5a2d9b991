"""The sharded train step: 8 fake CPU devices against 1 device."""

import dataclasses

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from centernet_jax import sharding, train, train_state
from tests.conftest import random_batch


def _run_steps(mesh, setup, batches, min_fsdp_size):
    config, model, task, tx, init_fn = setup
    abstract = jax.eval_shape(init_fn, train_state.init_rng(0))
    state_sh = sharding.state_shardings(abstract, mesh, min_fsdp_size=min_fsdp_size)
    batch_sh = sharding.batch_sharding(mesh)
    state = jax.jit(init_fn, out_shardings=state_sh)(train_state.init_rng(0))
    output_hw = task.output_hw(config.input.input_hw, config.input.down_ratio)
    step = jax.jit(train.make_train_step(model, task, tx, output_hw),
                   in_shardings=(state_sh, batch_sh),
                   out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
    losses = []
    for batch in batches:
        state, metrics = step(state, sharding.host_to_global(batch, batch_sh))
        losses.append({k: float(v) for k, v in metrics.items()})
    return state, losses


@pytest.mark.slow
def test_eight_devices_match_one(smoke_setup):
    assert jax.device_count() == 8, "conftest sets 8 fake CPU devices"
    config = smoke_setup[0]
    batches = [random_batch(config, seed) for seed in range(3)]
    one = sharding.make_mesh(devices=jax.devices()[:1])
    eight = sharding.make_mesh(data=4, fsdp=2)
    # A tiny threshold so that the smoke model's kernels really are sharded over fsdp.
    state1, losses1 = _run_steps(one, smoke_setup, batches, min_fsdp_size=2 ** 18)
    state8, losses8 = _run_steps(eight, smoke_setup, batches, min_fsdp_size=64)
    sharded = [leaf for leaf in jax.tree.leaves(state8.params)
               if leaf.sharding.spec != P()]
    assert sharded, "expected some parameters to be sharded over fsdp"
    for a, b in zip(losses1, losses8):
        for name in ("loss", "hm_loss", "wh_loss", "off_loss"):
            np.testing.assert_allclose(a[name], b[name], rtol=2e-5, err_msg=name)
    assert losses1[-1]["loss"] != losses1[0]["loss"]  # training did move
    for p1, p8 in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state8.params)):
        # Adam amplifies float noise in near-zero gradients: compare against the lr scale.
        np.testing.assert_allclose(np.asarray(p1), np.asarray(p8), rtol=1e-4, atol=2e-4)


def test_mesh_shape_errors():
    with pytest.raises(ValueError, match="does not match"):
        sharding.make_mesh(data=3, fsdp=2)
    with pytest.raises(ValueError, match="divide"):
        sharding.make_mesh(data=-1, fsdp=3)
    mesh = sharding.make_mesh(data=-1, fsdp=2)
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    with pytest.raises(ValueError, match="divisible"):
        sharding.check_batch_size(12, mesh)


def test_fsdp_rule_shards_only_large_divisible_arrays():
    assert sharding.fsdp_partition_spec((3, 3, 64, 128), 2, min_size=1000) == P(None, None, None, "fsdp")
    assert sharding.fsdp_partition_spec((128,), 2, min_size=1000) == P()
    assert sharding.fsdp_partition_spec((3, 3, 63, 127), 2, min_size=10) == P()
    assert sharding.fsdp_partition_spec((3, 3, 64, 128), 1, min_size=1) == P()


@dataclasses.dataclass(frozen=True)
class _SliceDevice:
    """Stands in for a device of a multi-slice pod (CPU devices have no slice_index); not
    "tpu", whose per-slice layout would also need physical coordinates."""
    id: int
    slice_index: int
    platform: str = "cpu"
    device_kind: str = "fake"
    process_index: int = 0


def test_multislice_mesh_spans_slices_with_the_data_axis():
    devices = [_SliceDevice(i, slice_index=i // 4) for i in range(8)]
    mesh = sharding.make_mesh(data=4, fsdp=2, devices=devices, num_slices=2)
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    slices = np.vectorize(lambda d: d.slice_index)(mesh.devices)
    # Each fsdp group (a row) lives in one slice; the data axis crosses slices.
    assert all(len(set(row)) == 1 for row in slices)
    assert set(slices[:, 0]) == {0, 1}
    with pytest.raises(ValueError, match="multiple of mesh.num_slices"):
        sharding.make_mesh(data=2, fsdp=4, devices=devices, num_slices=4)
