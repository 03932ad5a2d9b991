"""Tests for centernet_jax.paths (local vs bucket paths)."""

import os

from etils import epath

from centernet_jax import paths


def test_local_paths_become_absolute_and_expanded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.resolve("runs/a") == epath.Path(tmp_path / "runs" / "a")
    assert paths.resolve("~/tfds") == epath.Path(tmp_path / "home" / "tfds")
    assert not paths.is_remote("runs/a") and not paths.is_remote(tmp_path)


def test_bucket_paths_are_kept_as_given():
    for url in ("gs://bucket/runs/a", "s3://bucket/x"):
        assert paths.is_remote(url)
        resolved = paths.resolve(url)
        assert os.fspath(resolved) == url and isinstance(resolved, epath.Path)
        assert os.fspath(resolved / "checkpoints") == url + "/checkpoints"

