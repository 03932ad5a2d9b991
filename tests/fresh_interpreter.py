"""Run a test script in a fresh Python, so other tests' imports (TensorFlow...) do not hide
what the code under test imports, and time it from a cold start."""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parents[1])


def run(script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `script` with the repository importable; asserts it exits 0."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [REPO_ROOT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=timeout, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr
    return result
