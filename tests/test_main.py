"""The command line: --dry_run and the missing-dataset message."""

import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "centernet_jax.main", *args], cwd=REPO,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def test_dry_run_prints_heads_and_official_parameter_count():
    result = _main("--config=configs/hourglass.py", "--dry_run")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "stack 0 head hm: (1, 128, 128, 80)" in lines
    assert "stack 1 head wh: (1, 128, 128, 2)" in lines
    assert "stack 1 head reg: (1, 128, 128, 2)" in lines
    assert "parameters: 191284008" in lines  # the official Hourglass-104 ctdet count


def test_missing_coco_stops_fast_with_instructions(tmp_path):
    start = time.time()
    result = _main("--config=configs/hourglass.py", f"--workdir={tmp_path / 'w'}",
                   f"--config.dataset.data_dir={tmp_path / 'tfds'}",
                   env={"TFDS_DATA_DIR": str(tmp_path / "nothing")})
    elapsed = time.time() - start
    assert result.returncode != 0
    message = result.stderr
    assert "coco/2017" in message
    assert "tfds build coco/2017 --file_format=array_record" in message
    assert str(tmp_path / "tfds") in message  # says where it looked
    assert "Traceback" not in message
    assert elapsed < 60, f"took {elapsed:.1f} s"  # dominated by importing TF and JAX


def test_bad_config_variant_is_reported():
    result = _main("--config=configs/hourglass.py:nope", "--dry_run")
    assert result.returncode != 0
    assert "Unknown hourglass config variant 'nope'" in result.stderr
