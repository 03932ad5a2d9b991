"""End to end: train + evaluate the smoke config; SIGKILL and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from centernet_jax import checkpointing, sharding, train, train_state
from configs import hourglass
from tests.conftest import build_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# What `configs/hourglass.py:quick` reaches (deterministic on CPU: AP 0.107, AP50 0.279,
# the loss falling from 2.76 to 1.80 between the first and last 50 steps); the floors sit
# well below, so only a model that does not learn fails them.
QUICK_AP_FLOOR, QUICK_AP50_FLOOR, QUICK_LOSS_RATIO = 0.04, 0.12, 0.8


def _logged(workdir, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar the run wrote to its TensorBoard log, by step."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    values = []
    for path in sorted(Path(workdir).glob("events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            values += [(event.step, float(tf.make_ndarray(v.tensor)))
                       for v in event.summary.value if v.tag == tag]
    return sorted(values)


def test_smoke_train_and_evaluate(tmp_path):
    config = hourglass.get_config("smoke")
    workdir = str(tmp_path / "run")
    metrics = train.train_and_evaluate(config, workdir)
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics)
    assert all(-1.0 <= v <= 1.0 for v in metrics.values())
    losses = [loss for _, loss in _logged(workdir, "train/loss")]
    assert len(losses) == 8 and losses[-1] < losses[0]  # logged every 2 of 16 steps
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


@pytest.mark.slow
def test_a_short_run_learns(tmp_path):
    # On one CPU device, as on a laptop (the tests' 8 fake devices would triple its time).
    command = [sys.executable, "-m", "centernet_jax.main", "--config=configs/hourglass.py:quick",
               f"--workdir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "XLA_FLAGS": ""},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "final_metrics.json").read_text())
    losses = [loss for _, loss in _logged(tmp_path, "train/loss")]
    assert len(losses) == 6  # steps 50, 100, ..., 300
    assert losses[-1] < QUICK_LOSS_RATIO * losses[0], losses
    assert metrics["AP"] > QUICK_AP_FLOOR and metrics["AP50"] > QUICK_AP50_FLOOR, metrics


def _final_params(workdir, config):
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
    step = checkpointer.latest_step()
    init_fn = build_setup(config)[-1]
    state = checkpointer.restore(step, jax.eval_shape(init_fn, train_state.init_rng(0)))
    return step, jax.device_get(state.params)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    args = ["--config=configs/hourglass.py:smoke", "--config.train.num_epochs=3",
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
    assert killed_at < 24, "the run must be killed mid-training"

    resumed = subprocess.run(command(interrupted), cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stderr

    config = hourglass.get_config("smoke")
    step_a, params_a = _final_params(str(straight), config)
    step_b, params_b = _final_params(str(interrupted), config)
    assert step_a == step_b == 24
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(a, b)
    metrics_a = json.load(open(straight / "final_metrics.json"))
    metrics_b = json.load(open(interrupted / "final_metrics.json"))
    assert metrics_a == metrics_b


def _plant(monkeypatch, at_call, action):
    """Runs ``action(batch)`` on the ``at_call``-th training batch sent to the devices."""
    calls = {"n": 0}
    original = sharding.host_to_global

    def host_to_global(batch, batch_sharding):
        if "boxes" in batch:  # a training batch (evaluation sends images only)
            calls["n"] += 1
            if calls["n"] == at_call:
                batch = action(dict(batch))
        return original(batch, batch_sharding)

    monkeypatch.setattr(sharding, "host_to_global", host_to_global)


def _nan_image(batch):
    image = np.array(batch["image"])
    image[0, 0, 0, 0] = np.nan  # a corrupt input: NaN through the whole forward pass
    return {**batch, "image": image}


def _all_finite(tree):
    return all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(leaf).dtype, np.floating))


def _fast_smoke():
    config = hourglass.get_config("smoke")
    config.train.num_epochs = 1  # 8 steps
    config.eval.every_steps = 0
    config.eval.num_pictures = 0
    config.train.checkpoint_every_steps = 4
    return config


def test_planted_nan_stops_naming_the_step(tmp_path, monkeypatch):
    config = _fast_smoke()
    _plant(monkeypatch, 6, _nan_image)
    with pytest.raises(FloatingPointError, match="at step 6"):
        train.train_and_evaluate(config, str(tmp_path))
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "checkpoints"))
    assert checkpointer.all_steps() == [4]  # nothing saved at or after the bad step
    checkpointer.close()


def test_planted_nan_is_skipped_when_configured(tmp_path, monkeypatch, caplog):
    config = _fast_smoke()
    config.train.on_nonfinite = "skip"
    _plant(monkeypatch, 6, _nan_image)
    metrics = train.train_and_evaluate(config, str(tmp_path))
    assert np.isfinite(metrics["AP"])
    assert "Non-finite loss or gradient at step 6: update skipped" in caplog.text
    step, params = _final_params(str(tmp_path), config)
    assert step == 8 and _all_finite(params)


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_continues_as_if_uninterrupted(tmp_path, monkeypatch):
    config = _fast_smoke()
    config.train.checkpoint_every_steps = 100  # only the preemption saves mid-run
    straight = str(tmp_path / "straight")
    train.train_and_evaluate(config, straight)

    def terminate(batch):
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends before killing
        return batch

    _plant(monkeypatch, 3, terminate)
    interrupted = str(tmp_path / "interrupted")
    with pytest.raises(train.Preempted, match="Preempted at step 3"):
        train.train_and_evaluate(config, interrupted)
    checkpointer = checkpointing.Checkpointer(os.path.join(interrupted, "checkpoints"))
    assert checkpointer.all_steps() == [3]
    checkpointer.close()

    monkeypatch.undo()
    train.train_and_evaluate(config, interrupted)
    step_a, params_a = _final_params(straight, config)
    step_b, params_b = _final_params(interrupted, config)
    assert step_a == step_b == 8
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(a, b)
    assert (json.load(open(os.path.join(straight, "final_metrics.json")))
            == json.load(open(os.path.join(interrupted, "final_metrics.json"))))
