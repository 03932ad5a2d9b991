"""Multi-process start-up: the env-var contract, and 2 processes training like 1."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from centernet_jax import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:8476", "JAX_NUM_PROCESSES": "4",
        "JAX_PROCESS_ID": "3"}


def test_explicit_params_parsed():
    assert distributed.explicit_params(GOOD) == ("10.0.0.2:8476", 4, 3)
    assert distributed.explicit_params({}) is None
    assert distributed.explicit_params({"JAX_PROCESS_ID": " "}) is None  # blank is unset


@pytest.mark.parametrize("change, message", [
    ({"JAX_PROCESS_ID": None}, "JAX_PROCESS_ID not"),
    ({"JAX_COORDINATOR_ADDRESS": None, "JAX_NUM_PROCESSES": None},
     "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES not"),
    ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
    ({"JAX_PROCESS_ID": "1.0"}, "JAX_PROCESS_ID='1.0' is not an integer"),
    ({"JAX_PROCESS_ID": "4"}, "JAX_PROCESS_ID=4 must be in [0, 4)"),
    ({"JAX_PROCESS_ID": "-1"}, "JAX_PROCESS_ID=-1 must be in [0, 4)"),
    ({"JAX_NUM_PROCESSES": "0", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES=0 must be >= 1"),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.2"}, "JAX_COORDINATOR_ADDRESS='10.0.0.2' must be"),
])
def test_explicit_params_rejects_bad_env(change, message):
    environ = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ValueError) as error:
        distributed.explicit_params(environ)
    assert message in str(error.value)


def test_detect_cluster_needs_more_than_one_task():
    slurm_step = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_PROCID": "0"}
    assert distributed.detect_cluster({**slurm_step, "SLURM_NTASKS": "2"}) == "slurm"
    assert distributed.detect_cluster({**slurm_step, "SLURM_NTASKS": "1"}) is None
    # The batch script of a 2-task job is still one process.
    assert distributed.detect_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}) is None
    mpi = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_MCA_orte_hnp_uri": "1.2@tcp://10.0.0.1:5000"}
    assert distributed.detect_cluster(mpi) == "openmpi"
    assert distributed.detect_cluster({**mpi, "OMPI_COMM_WORLD_SIZE": "1"}) is None
    with pytest.raises(ValueError, match="JAX_COORDINATOR_ADDRESS"):
        distributed.detect_cluster({"OMPI_COMM_WORLD_SIZE": "2"})
    assert distributed.detect_cluster({}) is None  # this CPU test machine


def test_initialize_is_a_no_op_on_a_single_host(monkeypatch):
    for name in distributed.EXPLICIT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(distributed, "detect_cluster", lambda: None)
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize",
                        lambda **kwargs: calls.append(kwargs))
    assert not distributed.initialize()
    assert not calls


def test_initialize_passes_the_env_contract(monkeypatch):
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.jax.distributed, "initialize",
                        lambda **kwargs: calls.append(kwargs))
    assert distributed.initialize(initialization_timeout=9)
    assert calls == [dict(coordinator_address="10.0.0.2:8476", num_processes=4, process_id=3,
                          initialization_timeout=9)]


# --- 2 processes x 2 CPU devices vs 1 process x 4 devices, same global batch 8 ----------

_RUN_FLAGS = ("--config=configs/hourglass.py:smoke", "--config.train.num_epochs=1",  # 8 steps
              "--config.train.log_every_steps=1", "--config.eval.every_steps=0",
              "--config.eval.num_pictures=0", "--config.train.checkpoint_every_steps=100")


def _start(workdir, devices_per_process, env):
    return subprocess.Popen(
        [sys.executable, "-m", "centernet_jax.main", *_RUN_FLAGS, f"--workdir={workdir}",
         f"--config.mesh.host_cpu_devices={devices_per_process}"],
        cwd=REPO, env={**_without_cluster_env(), **env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _without_cluster_env() -> dict[str, str]:
    # pytest itself may run inside a Slurm or MPI job.
    drop = (*distributed.EXPLICIT_ENV, "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _finish(process, timeout=600):
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    return stdout, stderr


def _train_losses(workdir) -> dict[int, float]:
    """step -> train/loss at full float32 precision, from the TensorBoard events."""
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util

    losses = {}
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.tag == "train/loss":
                    losses[event.step] = float(tensor_util.make_ndarray(value.tensor))
    return losses


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(tmp_path):
    port = distributed.free_port()
    cluster = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2"}
    multi_dirs = [tmp_path / "multi", tmp_path / "multi"]  # one shared workdir, as on a pod
    processes = [_start(multi_dirs[i], 2, {**cluster, "JAX_PROCESS_ID": str(i)})
                 for i in range(2)]
    single = _start(tmp_path / "single", 4, {})
    outputs = [_finish(p) for p in processes]
    single_out, single_err = _finish(single)

    # Every process says who it is and what it sees; only process 0 logs INFO afterwards.
    for i, (_, stderr) in enumerate(outputs):
        assert f"process {i}/2 on" in stderr
        assert "2 local cpu devices" in stderr and "4 global devices" in stderr
    assert "process 0/1 on" in single_err and "4 global devices" in single_err
    assert "train/loss=" in outputs[0][1] and "train/loss=" not in outputs[1][1]
    assert "COCO bbox:" in outputs[0][0] and "COCO bbox:" not in outputs[1][0]

    multi_losses = _train_losses(tmp_path / "multi")
    single_losses = _train_losses(tmp_path / "single")
    assert sorted(single_losses) == list(range(1, 9))
    assert sorted(multi_losses) == sorted(single_losses)
    multi = np.array([multi_losses[s] for s in sorted(multi_losses)])
    single = np.array([single_losses[s] for s in sorted(single_losses)])
    print("losses 1 process :", single.tolist())
    print("losses 2 processes:", multi.tolist())
    # Same examples and augmentations in every global batch; only the summation order of
    # the batch reductions may differ.
    np.testing.assert_allclose(multi, single, rtol=1e-5)

    with open(tmp_path / "multi" / "final_metrics.json") as f:
        multi_metrics = json.load(f)
    with open(tmp_path / "single" / "final_metrics.json") as f:
        single_metrics = json.load(f)
    assert multi_metrics["step"] == single_metrics["step"] == 8
    for name in ("AP", "AP50", "AR100"):
        assert multi_metrics[name] == pytest.approx(single_metrics[name], abs=1e-4), name
