"""Eval-only runs: the three test modes end to end, and the command line."""

import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from centernet_jax import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_copy(trained_smoke, tmp_path):
    """A private copy of the trained smoke run (evaluation writes into its workdir)."""
    config, workdir = trained_smoke
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    return config.copy_and_resolve_references(), copy


def _results_per_image(path):
    with open(path) as f:
        results = json.load(f)
    per_image = collections.defaultdict(list)
    for row in results:
        per_image[row["image_id"]].append(row)
    return per_image


def test_plain_and_flip_modes_write_results_and_metrics(run_copy):
    config, workdir = run_copy
    before = config.to_dict()
    plain = evaluate.evaluate(config, workdir, checkpoint="latest", test_mode="plain")
    flip = evaluate.evaluate(config, workdir, checkpoint="latest", test_mode="flip")
    assert config.to_dict() == before  # the caller's config is not changed
    for mode, metrics in (("plain", plain), ("flip", flip)):
        with open(os.path.join(workdir, f"metrics_{mode}_step_8.json")) as f:
            saved = json.load(f)
        assert saved["mode"] == mode and saved["step"] == 8 and "step 8" in saved["checkpoint"]
        assert saved["AP"] == pytest.approx(metrics["AP"])
        per_image = _results_per_image(os.path.join(workdir, f"results_{mode}_step_8.json"))
        assert len(per_image) == config.dataset.num_val
        assert all(len(rows) == config.eval.top_k for rows in per_image.values())
    flip_scores = [r["score"] for rows in _results_per_image(
        os.path.join(workdir, "results_flip_step_8.json")).values() for r in rows]
    plain_scores = [r["score"] for rows in _results_per_image(
        os.path.join(workdir, "results_plain_step_8.json")).values() for r in rows]
    assert flip_scores != plain_scores
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))


def test_multiscale_merges_scales_with_soft_nms(run_copy):
    config, workdir = run_copy
    config.eval.test_scales = (0.5, 1.0)
    # Above top_k: only the two scales together have that many candidates per image.
    limit = config.eval.max_per_image = config.eval.top_k + config.eval.top_k // 2
    counts = {}
    for variant in ("official", "corrected"):
        config.eval.soft_nms = variant
        evaluate.evaluate(config, workdir, checkpoint="latest", test_mode="multiscale")
        os.rename(os.path.join(workdir, "results_multiscale_step_8.json"),
                  os.path.join(workdir, f"{variant}.json"))
        per_image = _results_per_image(os.path.join(workdir, f"{variant}.json"))
        assert len(per_image) == config.dataset.num_val
        counts[variant] = {}
        for image_id, rows in per_image.items():
            scores = np.sort([r["score"] for r in rows])[::-1]
            # The max_per_image cut keeps scores >= the limit-th best: only ties exceed it.
            assert len(rows) <= limit or scores[limit] == scores[limit - 1]
            counts[variant][image_id] = len(rows)
    # Official soft-NMS keeps every row (stale duplicates included), so all 2 x top_k
    # candidates of the two scales reach the cut; the corrected one can only drop rows.
    assert all(count >= limit for count in counts["official"].values())
    assert all(counts["corrected"][i] <= counts["official"][i] for i in counts["official"])


def _evaluate_cli(*args):
    return subprocess.run([sys.executable, "-m", "centernet_jax.evaluate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_command_line_and_its_errors(run_copy):
    _, workdir = run_copy
    args = ["--config=configs/hourglass.py:smoke", f"--workdir={workdir}"]
    ok = _evaluate_cli(*args, "--mode=flip", "--checkpoint=8")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "COCO bbox (flip): AP " in ok.stdout
    assert os.path.exists(os.path.join(workdir, "results_flip_step_8.json"))

    missing = _evaluate_cli(*args, "--checkpoint=99")
    assert missing.returncode == 1
    assert "No checkpoint at step 99" in missing.stderr and "Traceback" not in missing.stderr
    bad_mode = _evaluate_cli(*args, "--mode=mosaic")
    assert bad_mode.returncode != 0 and "mode" in bad_mode.stderr
