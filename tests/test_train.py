"""End to end: train + evaluate the smoke config; SIGKILL and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from centernet_jax import checkpointing, train, train_state
from configs import hourglass
from tests.conftest import build_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_train_and_evaluate(tmp_path):
    config = hourglass.get_config("smoke")
    workdir = str(tmp_path / "run")
    metrics = train.train_and_evaluate(config, workdir)
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics)
    assert all(-1.0 <= v <= 1.0 for v in metrics.values())
    files = os.listdir(workdir)
    assert "config.json" in files and "final_metrics.json" in files
    assert any(f.startswith("events.out.tfevents") for f in files)
    assert json.load(open(os.path.join(workdir, "final_metrics.json")))["step"] == 16
    pictures = os.listdir(os.path.join(workdir, "pictures"))
    assert len(pictures) == 2 * config.eval.num_pictures  # evaluated at steps 8 and 16
    results = json.load(open(os.path.join(workdir, "results_step_16.json")))
    assert len(results) == config.dataset.num_val * config.eval.top_k
    steps = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints")).all_steps()
    assert 16 in steps

    # A rerun of a finished run resumes at the end and only re-evaluates.
    again = train.train_and_evaluate(config, workdir)
    assert again["AP"] == pytest.approx(metrics["AP"])


def _final_params(workdir, config):
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
    step = checkpointer.latest_step()
    init_fn = build_setup(config)[-1]
    state = checkpointer.restore(step, jax.eval_shape(init_fn, train_state.init_rng(0)))
    return step, jax.device_get(state.params)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    args = ["--config=configs/hourglass.py:smoke", "--config.train.num_epochs=6",
            "--config.eval.every_steps=0", "--config.train.checkpoint_every_steps=4"]

    def command(workdir):
        return [sys.executable, "-m", "centernet_jax.main", *args, f"--workdir={workdir}"]

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    subprocess.run(command(straight), cwd=REPO, check=True, capture_output=True, timeout=600)

    process = subprocess.Popen(command(interrupted), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoints = interrupted / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if checkpoints.exists() and any(p.name.isdigit() and int(p.name) >= 8
                                        for p in checkpoints.iterdir()):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert killed_at < 48, "the run must be killed mid-training"

    resumed = subprocess.run(command(interrupted), cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stderr

    config = hourglass.get_config("smoke")
    step_a, params_a = _final_params(str(straight), config)
    step_b, params_b = _final_params(str(interrupted), config)
    assert step_a == step_b == 48
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(a, b)
    metrics_a = json.load(open(straight / "final_metrics.json"))
    metrics_b = json.load(open(interrupted / "final_metrics.json"))
    assert metrics_a == metrics_b
