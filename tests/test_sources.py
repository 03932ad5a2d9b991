"""Tests for the source registry (centernet_jax.data.sources) and the shared TFDS check
(centernet_jax.data.tfds_prepared)."""

import textwrap

import ml_collections
import pytest

import fresh_interpreter

from centernet_jax.data import sanitize, sources, tfds_prepared
from centernet_jax.data.shapes import ShapesSource


def test_shapes_from_config():
    config = ml_collections.ConfigDict(dict(
        name="shapes", seed=4, num_train=17, num_val=5, image_size=(40, 60),
        objects_per_image=(2, 2), data_dir=None))
    train = sources.make_source(config, "train")
    val = sources.make_source(config, "val")
    assert isinstance(train, sanitize.RobustSource) and isinstance(train.source, ShapesSource)
    assert isinstance(sources.make_source(config, "train", robust=False), ShapesSource)
    assert len(train) == 17 and len(val) == 5
    assert train.split == "train" and val.split == "val" and train.seed == 4
    assert train.image_size == (40, 60) and train.objects_per_image == (2, 2)
    assert len(sources.make_source(dict(name="shapes", num_val=3), "validation")) == 3
    example = train[0]
    assert 40 <= example["image"].shape[0] <= 60
    assert example["num_invalid"] == 0 and example["num_unreadable"] == 0
    with pytest.raises(ValueError, match="split"):
        sources.make_source(config, "test")
    with pytest.raises(ValueError, match="num_classes"):
        sources.make_source(dict(name="shapes", num_classes=80), "train")


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown dataset name 'imagenet'.*coco.*shapes.*voc"):
        sources.make_source(dict(name="imagenet"), "train")


def test_missing_tfds_datasets_look_in_env_and_home_without_importing_tensorflow(tmp_path):
    # A fresh interpreter, so that other tests' imports do not hide a TensorFlow import.
    script = textwrap.dedent(f"""
        import os, sys, time
        os.environ["TFDS_DATA_DIR"] = {str(tmp_path / "env")!r}
        os.environ["HOME"] = {str(tmp_path / "home")!r}
        from centernet_jax.data import sources
        messages = {{}}
        for name, split in (("coco", "val"), ("voc", "train")):
            start = time.perf_counter()
            try:
                sources.make_source(dict(name=name, data_dir=None), split)
            except sources.DatasetNotFoundError as error:
                messages[name] = str(error)
            assert time.perf_counter() - start < 1.0, name
        coco, voc = messages["coco"], messages["voc"]
        assert {str(tmp_path / "env" / "coco" / "2017")!r} in coco, coco
        assert {str(tmp_path / "home" / "tensorflow_datasets" / "coco")!r} in coco, coco
        assert "'validation'" in coco
        for year in ("2007", "2012"):
            assert {str(tmp_path / "env" / "voc")!r} + "/" + year in voc, voc
            assert {str(tmp_path / "home" / "tensorflow_datasets" / "voc")!r} + "/" + year in voc
            # A new build goes to the first candidate.
            assert f"tfds build voc/{{year}} --file_format=array_record --data_dir=" + {
                str(tmp_path / "env")!r} in voc, voc
        assert "tensorflow" not in sys.modules and "tensorflow_datasets" not in sys.modules
        print("ok")
    """)
    result = fresh_interpreter.run(script)
    assert "ok" in result.stdout, result.stdout


def _touch_split(root, tfds_name, version, split):
    directory = root / tfds_name / version
    directory.mkdir(parents=True, exist_ok=True)
    builder = tfds_name.split("/")[0]
    (directory / f"{builder}-{split}.array_record-00000-of-00002").touch()


def test_find_prepared_versions_splits_and_candidates(tmp_path, monkeypatch):
    how = "Run " + tfds_prepared.build_command("kitti") + " first."
    _touch_split(tmp_path, "kitti", "3.2.0", "train")
    _touch_split(tmp_path, "kitti", "3.2.0", "test")
    _touch_split(tmp_path, "kitti", "3.10.0", "train")  # numerically newer than 3.2.0
    (tmp_path / "kitti" / "3.11.0.incomplete").mkdir()  # an unfinished build is no version
    (tmp_path / "kitti" / "dataset_info.json").touch()
    find = tfds_prepared.find_prepared
    assert find("kitti", "train", tmp_path, how) == (tmp_path, "3.10.0")
    assert find("kitti", "test", tmp_path, how) == (tmp_path, "3.2.0")
    # Several splits must come from one version.
    assert find("kitti", ("train", "test"), str(tmp_path), how) == (tmp_path, "3.2.0")
    with pytest.raises(sources.DatasetNotFoundError) as error:
        find("kitti", ["train", "validation"], tmp_path, how)
    message = str(error.value)
    assert "splits 'train' and 'validation' are not prepared" in message
    assert str(tmp_path / "kitti" / "<version>" / "kitti-validation.array_record*") in message
    assert message.endswith(
        f"Run tfds build kitti --file_format=array_record --data_dir={tmp_path} first.")
    # Without data_dir: $TFDS_DATA_DIR first, then ~/tensorflow_datasets.
    env_dir, home = tmp_path / "env", tmp_path / "home"
    monkeypatch.setenv("TFDS_DATA_DIR", str(env_dir))
    monkeypatch.setenv("HOME", str(home))
    _touch_split(home / "tensorflow_datasets", "voc/2007", "5.0.0", "test")
    assert find("voc/2007", "test", None, how) == (home / "tensorflow_datasets", "5.0.0")
    _touch_split(env_dir, "voc/2007", "4.0.0", "test")  # an earlier candidate wins
    assert find("voc/2007", "test", None, how) == (env_dir, "4.0.0")
    with pytest.raises(ValueError, match="without a version"):
        find("voc/2007:5.0.0", "test", None, how)


def test_dataset_facts_are_recorded_for_prediction(tmp_path):
    config = ml_collections.ConfigDict(dict(dataset=dict(
        name="shapes", num_classes=ml_collections.config_dict.placeholder(int), num_val=2)))
    source = sources.make_source(config.dataset, "val")
    config.lock()
    sources.fill_dataset_facts(config, source)
    assert config.dataset.num_classes == 5 and len(config.dataset.class_names) == 5
    assert config.dataset.category_ids == (1, 2, 3, 4, 5)
    (tmp_path / "config.json").write_text(config.to_json())
    later = ml_collections.ConfigDict(dict(dataset=dict(
        name="shapes", num_classes=ml_collections.config_dict.placeholder(int))))
    sources.fill_dataset_facts_from_run(later, str(tmp_path))
    assert later.dataset.num_classes == 5
    assert later.dataset.class_names == config.dataset.class_names
