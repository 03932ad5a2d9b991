"""The project as an installable package: its metadata, and a library use from elsewhere.

The install test builds the package into a fresh virtual environment (which sees this
interpreter's packages for the dependencies, so nothing is downloaded), then, from another
directory, loads a config by path and trains twice in one Python process.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib

import pytest

import centernet_jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _requirements():
    """requirements.txt as (runtime, test) requirement lists."""
    runtime, test, section = [], [], None
    with open(os.path.join(REPO, "requirements.txt")) as f:
        for line in f:
            line = line.strip()
            if line.startswith("# Runtime"):
                section = runtime
            elif line.startswith("# tests"):
                section = test
            elif line and not line.startswith("#"):
                section.append(line)
    return runtime, test


def test_pyproject_lists_the_requirements():
    runtime, test = _requirements()
    project = _pyproject()["project"]
    assert project["dependencies"] == runtime
    assert project["optional-dependencies"]["test"] == test
    assert any(r.startswith("opencv-python-headless") for r in runtime)  # a runtime need


@pytest.mark.slow
def test_installed_package_loads_a_config_by_path_and_trains_twice(tmp_path):
    # Built from a copy: an in-tree build would leave build/ (and stale modules) behind.
    source = tmp_path / "source"
    for name in ("centernet_jax", "configs"):
        shutil.copytree(os.path.join(REPO, name), source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, capture_output=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", str(source)], capture_output=True, text=True, timeout=300, env=env)
    assert install.returncode == 0, install.stdout + install.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(f"""
        import json, os
        import centernet_jax
        from centernet_jax import load_config, train
        assert centernet_jax.__file__.startswith({str(venv)!r}), centernet_jax.__file__
        overrides = {{"train.num_epochs": 1, "dataset.num_train": 16, "eval.every_steps": 0,
                      "eval.num_pictures": 0, "dataset.num_val": 8}}
        by_path = load_config({os.path.join(REPO, "configs", "hourglass.py")!r} + ":smoke",
                              overrides)
        # A relative path that does not exist here is found among the installed configs.
        installed = load_config("configs/hourglass.py:smoke", overrides)
        assert installed.to_dict() == by_path.to_dict()
        before = by_path.to_json()
        first = train.train_and_evaluate(by_path, "run_a")
        second = train.train_and_evaluate(by_path, "run_b")
        assert by_path.to_json() == before, "the caller's config changed"
        recorded = json.load(open("run_b/config.json"))
        print(json.dumps({{"first": first, "second": second,
                           "classes": recorded["dataset"]["class_names"]}}))
    """)
    result = subprocess.run([python, "-c", script], cwd=elsewhere, capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["first"] == report["second"]  # same config, same seed, same data
    assert report["classes"][0] == "ellipse"
    assert centernet_jax.__version__  # the installed version comes from the package
