"""load_config: a config by path, variant and overrides, exactly as the command line loads it."""

import os
import subprocess
import sys
import types

import pytest
from absl import flags
from ml_collections import config_flags

from centernet_jax import config_loading, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOURGLASS = os.path.join(REPO, "configs", "hourglass.py")


def _from_command_line(argv):
    """The config ``--config=...`` and ``--config.a.b=v`` give, parsed the way main does."""
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values,
                                    lock_config=True, sys_argv=argv)
    flag_values(argv)
    return flag_values.config


def test_equals_the_command_line(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the relative path is found in the project, not here
    overrides = {"train.batch_size": 4, "input.input_hw": (32, 32), "eval.nms": True,
                 "loss.radius": "corrected", "eval.test_scales": [0.5, 1.0]}
    loaded = load_config("configs/hourglass.py:smoke", overrides)
    expected = _from_command_line(
        ["main", f"--config={HOURGLASS}:smoke", "--config.train.batch_size=4",
         "--config.input.input_hw=(32, 32)", "--config.eval.nms=true",
         "--config.loss.radius=corrected", "--config.eval.test_scales=(0.5, 1.0)"])
    assert loaded.to_dict() == expected.to_dict()
    assert loaded.train.batch_size == 4 and loaded.eval.test_scales == (0.5, 1.0)
    assert loaded.is_locked
    with pytest.raises(AttributeError):
        loaded.train.batch_sise = 3  # locked: a misspelt field is an error
    assert load_config(f"{HOURGLASS}").variant == "coco"  # the default variant


def test_overrides_are_type_checked_and_typos_named():
    with pytest.raises(ValueError, match='Did you mean "batch_size"'):
        load_config("configs/hourglass.py:smoke", {"train.batch_sise": 4})
    with pytest.raises(ValueError, match="invalid literal for int"):
        load_config("configs/hourglass.py:smoke", {"train.batch_size": "four"})
    with pytest.raises(ValueError, match="Unknown hourglass config variant 'nope'"):
        load_config("configs/hourglass.py:nope")
    with pytest.raises(FileNotFoundError, match="looked in"):
        load_config("configs/nothere.py")


def test_configs_import_their_own_helpers_whatever_else_is_called_configs(tmp_path,
                                                                           monkeypatch):
    # A user's own `configs` package must not capture the shipped configs' imports.
    impostor = types.ModuleType("configs")
    impostor.__path__ = [str(tmp_path)]
    monkeypatch.setitem(sys.modules, "configs", impostor)
    config = load_config(f"{HOURGLASS}:smoke")
    assert config.model.backbone == "hourglass"
    assert sys.modules["configs"] is impostor  # restored afterwards

    # A config of the user's, outside any `configs` directory, loads as given.
    own = tmp_path / "mine.py"
    own.write_text("import ml_collections\n\ndef get_config(arg=None):\n"
                   "    return ml_collections.ConfigDict({'x': arg or 'default'})\n")
    assert load_config(f"{own}:given").x == "given"


def test_command_line_finds_the_config_from_another_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = REPO  # the package importable, the working directory elsewhere
    result = subprocess.run(
        [sys.executable, "-m", "centernet_jax.main", "--config=configs/hourglass.py:smoke",
         "--config.input.input_hw=(32, 32)", "--dry_run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stack 0 head hm: (1, 8, 8, 5)" in result.stdout.splitlines()


def test_split_and_resolve():
    assert config_loading.split_spec("a/b.py:demo") == ("a/b.py", "demo")
    assert config_loading.split_spec("a/b.py") == ("a/b.py", None)
    assert config_loading.resolve_path("configs/dla34.py") == os.path.join(
        REPO, "configs", "dla34.py")
