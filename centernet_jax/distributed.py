"""Multi-process start-up: one process per host, joined into one global device mesh.

``initialize()`` must run before anything touches devices (the first ``jax.devices()``,
``jax.process_index()`` or computation builds the backends, and they cannot be rebuilt).
``runtime.prepare`` calls it, and every entry point (``main``, ``train.train_and_evaluate``,
``evaluate.evaluate``, ...) calls that first; a notebook on a cluster that touches devices
itself before training calls it right after the imports:

    from centernet_jax import runtime
    runtime.prepare(config)

How the processes find each other, in order:
  1. explicit: ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES``
     and ``JAX_PROCESS_ID``, set on every process by a launch script;
  2. a detected multi-process cluster: Slurm (``SLURM_NTASKS`` > 1), Open MPI
     (``OMPI_COMM_WORLD_SIZE`` > 1) or a Cloud TPU VM (JAX reads the worker list from the
     TPU environment or the metadata server, so a single-host TPU VM becomes a one-process
     group); JAX's own auto-detection then supplies address, count and id;
  3. otherwise a single process: nothing to do.

Ordering: ``jax_num_cpu_devices`` (``sharding.use_host_cpu_devices``) and
``jax.distributed.initialize`` both configure the CPU client, which JAX builds lazily at
the first device access from the device count and the distributed client. Neither call
builds it, so their relative order does not matter, but both must come before that first
access. ``runtime.prepare`` sets the device count first and initialises second; ``main``
then logs the devices (which builds the backends).
"""

from __future__ import annotations

import os
import socket
from typing import Mapping

import jax
from absl import logging

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"
EXPLICIT_ENV = (COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV)


def explicit_params(environ: Mapping[str, str] | None = None
                    ) -> tuple[str, int, int] | None:
    """(coordinator address, process count, process id) from the env contract, or None.

    Raises:
      ValueError: naming the variable, if only some of the three are set, a number is not
        an integer, the count is < 1, the id is outside [0, count), or the address has no
        port.
    """
    environ = os.environ if environ is None else environ
    values = {name: environ.get(name, "").strip() for name in EXPLICIT_ENV}
    present = [name for name, value in values.items() if value]
    if not present:
        return None
    if len(present) < len(EXPLICIT_ENV):
        missing = [name for name in EXPLICIT_ENV if name not in present]
        raise ValueError(
            f"{', '.join(present)} set but {', '.join(missing)} not: multi-process start-up "
            f"needs all of {', '.join(EXPLICIT_ENV)} (or none, for auto-detection).")
    address = values[COORDINATOR_ENV]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{COORDINATOR_ENV}={address!r} must be host:port, "
                         "e.g. 10.0.0.2:8476 (the address of process 0).")
    num_processes = _parse_int(NUM_PROCESSES_ENV, values[NUM_PROCESSES_ENV])
    process_id = _parse_int(PROCESS_ID_ENV, values[PROCESS_ID_ENV])
    if num_processes < 1:
        raise ValueError(f"{NUM_PROCESSES_ENV}={num_processes} must be >= 1.")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"{PROCESS_ID_ENV}={process_id} must be in [0, {num_processes}) "
                         f"for {NUM_PROCESSES_ENV}={num_processes}.")
    return address, num_processes, process_id


def _parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer.") from None


def detect_cluster(environ: Mapping[str, str] | None = None) -> str | None:
    """The multi-process cluster this process runs in ('slurm', 'openmpi', 'cloud_tpu'), or None.

    Slurm and Open MPI count only when they run more than one task: a one-task job (e.g. an
    interactive ``srun`` shell) is a single process and needs no coordinator.
    """
    environ = os.environ if environ is None else environ
    # SLURM_STEP_NODELIST: inside an `srun` step (the batch script itself is one process).
    if _count(environ, "SLURM_NTASKS") > 1 and "SLURM_STEP_NODELIST" in environ:
        return "slurm"
    if _count(environ, "OMPI_COMM_WORLD_SIZE") > 1:
        if "OMPI_MCA_orte_hnp_uri" not in environ:
            # Open MPI >= 5 (PRRTE) does not export the launcher address JAX reads.
            raise ValueError(
                "Open MPI job without OMPI_MCA_orte_hnp_uri: JAX cannot find the "
                f"coordinator; set {', '.join(EXPLICIT_ENV)} on every process instead.")
        return "openmpi"
    if _on_cloud_tpu_vm():
        return "cloud_tpu"
    return None


def _count(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ.get(name, "0"))
    except ValueError:
        return 0


def _on_cloud_tpu_vm() -> bool:
    # JAX decides this at import (TPU chips present and libtpu installed); there is no
    # public accessor, hence the guarded lookup.
    try:
        from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
    except ImportError:
        return False
    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def initialize(initialization_timeout: int = 300) -> bool:
    """Joins the multi-process group if there is one; call before touching devices.

    Safe to call more than once and in single-process runs (a no-op there).

    Args:
      initialization_timeout: seconds to wait for all processes to connect.

    Returns:
      True if this process is part of an initialised multi-process group.
    """
    if jax.distributed.is_initialized():
        return True
    explicit = explicit_params()
    if explicit is not None:
        address, num_processes, process_id = explicit
        jax.distributed.initialize(coordinator_address=address, num_processes=num_processes,
                                   process_id=process_id,
                                   initialization_timeout=initialization_timeout)
        return True
    cluster = detect_cluster()
    if cluster is None:
        return False
    logging.info("Detected a %s cluster; initialising jax.distributed.", cluster)
    jax.distributed.initialize(initialization_timeout=initialization_timeout)
    return True


def log_process_info() -> None:
    """One line per process: index/count, host, local devices, global device count."""
    local = jax.local_devices()
    logging.info("process %d/%d on %s: %d local %s devices (ids %s), %d global devices.",
                 jax.process_index(), jax.process_count(), socket.gethostname(), len(local),
                 local[0].platform if local else "-", [d.id for d in local],
                 jax.device_count())


def quiet_non_primary_logging(all_processes: bool = False) -> None:
    """Lowers absl logging to WARNING on processes other than 0, unless ``all_processes``.

    Every process runs the same loop; without this, each INFO line appears once per host.
    """
    if jax.process_index() > 0 and not all_processes:
        logging.set_verbosity(logging.WARNING)


def free_port() -> int:
    """A TCP port free on this machine now, for a local coordinator (tests, one-box runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
