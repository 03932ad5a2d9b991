"""Device mesh, sharding rules and host-to-global array assembly.

The mesh has two axes, ``data`` and ``fsdp``. The batch is sharded over both, so switching
FSDP on does not change the data layout; large parameters (and their optimizer state) are
sharded over ``fsdp``, everything else is replicated. Models and losses contain no
collectives: XLA inserts them from these shardings.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import mesh_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices=None,
              num_slices: int = 1) -> jax.sharding.Mesh:
    """Builds a ('data', 'fsdp') mesh over all (or the given) devices.

    Args:
      data: size of the data-parallel axis; -1 takes every device left by ``fsdp``.
      fsdp: size of the parameter-sharding axis.
      devices: optional explicit device list (defaults to ``jax.devices()``).
      num_slices: TPU slices (multi-slice): ``data`` is split across them, so only the
        data-parallel gradient reduction crosses the slower data-centre network (DCN)
        while ``fsdp``'s gathers stay on each slice's interconnect (ICI). Devices must
        carry ``slice_index``.
    """
    devices = list(jax.devices() if devices is None else devices)
    num = len(devices)
    if fsdp < 1 or num % fsdp:
        raise ValueError(f"mesh.fsdp={fsdp} must be >= 1 and divide the {num} devices.")
    if data == -1:
        data = num // fsdp
    if data * fsdp != num:
        raise ValueError(
            f"mesh data={data} x fsdp={fsdp} = {data * fsdp} does not match the {num} "
            "available devices; set mesh.data=-1 to use them all.")
    # Auto axes: linen convolutions on a sharded batch fail under the Explicit default.
    axis_types = (AxisType.Auto,) * 2
    if num_slices > 1:
        if data % num_slices:
            raise ValueError(f"mesh.data={data} must be a multiple of mesh.num_slices="
                             f"{num_slices}: data parallelism is what spans slices.")
        grid = mesh_utils.create_hybrid_device_mesh(
            (data // num_slices, fsdp), (num_slices, 1), devices)
        return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)
    return jax.make_mesh((data, fsdp), MESH_AXES, axis_types=axis_types, devices=devices)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) dimension split over both mesh axes."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh) -> int:
    """Returns the per-process batch size; raises if the batch does not split evenly."""
    num_devices = mesh.devices.size
    if global_batch % num_devices:
        raise ValueError(
            f"batch size {global_batch} must be divisible by the number of devices "
            f"({num_devices}) in the mesh {dict(mesh.shape)}.")
    return global_batch // jax.process_count()


def fsdp_partition_spec(shape: tuple[int, ...], fsdp_size: int,
                        min_size: int = 2 ** 18) -> P:
    """Shards the largest divisible dimension of a big array over 'fsdp'.

    Arrays smaller than ``min_size`` elements (biases, BN statistics, small kernels) stay
    replicated: sharding them costs more in collectives than it saves in memory.
    """
    if fsdp_size <= 1 or math.prod(shape) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh,
                    min_fsdp_size: int = 2 ** 18) -> Any:
    """NamedShardings for a pytree of arrays (or ShapeDtypeStructs) on ``mesh``."""
    fsdp_size = mesh.shape["fsdp"]

    def rule(leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        return NamedSharding(mesh, fsdp_partition_spec(shape, fsdp_size, min_fsdp_size))

    return jax.tree.map(rule, abstract_state)


def host_to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles this process's slice of the batch into global arrays."""
    return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for name, value in batch.items()}


def abstract_with_shardings(abstract_tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying target shardings, for restoring onto any mesh."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_tree, shardings)


def use_host_cpu_devices(count: int) -> None:
    """Splits the host CPU into ``count`` JAX devices (no-op for ``count <= 0``).

    The count is per process: N processes give a mesh of N * ``count`` devices. Only
    possible before JAX initialises its backends (the first device access); later, a
    warning says so and the run goes on with the devices it has. ``jax.distributed``
    initialisation may come before or after this call, as long as both precede that
    first access (``distributed.initialize``).
    """
    if count <= 0:
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as error:
        logging.warning("mesh.host_cpu_devices=%d not applied (%s); running on %d devices.",
                        count, error, jax.device_count())
