"""The command line: --dry_run and the missing-dataset message."""

import os
import subprocess
import sys

import pytest

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


def test_missing_coco_stops_first_with_instructions(tmp_path):
    # How long it takes is `python -m centernet_jax.bench --what=startup` (missing_dataset).
    result = _main("--config=configs/hourglass.py", f"--workdir={tmp_path / 'w'}",
                   f"--config.dataset.data_dir={tmp_path / 'tfds'}",
                   env={"TFDS_DATA_DIR": str(tmp_path / "nothing")})
    assert result.returncode != 0
    message = result.stderr
    assert "coco/2017" in message
    assert "tfds build coco/2017 --file_format=array_record" in message
    assert str(tmp_path / "tfds") in message  # says where it looked
    assert "Traceback" not in message
    # It stops before any model work: nothing built, nothing written.
    assert "parameters" not in message and not (tmp_path / "w").exists()


def test_bad_config_variant_is_reported():
    result = _main("--config=configs/hourglass.py:nope", "--dry_run")
    assert result.returncode != 0
    assert "Unknown hourglass config variant 'nope'" in result.stderr


def write_coco_folder(root, num_images, seed, *, corrupt=(), nan_box=()):
    """Embedded-dataset pictures written as a COCO-format folder: images/*.jpg + json.

    Images in `corrupt` get bytes that are not a JPEG; the first box of images in `nan_box`
    gets a NaN width.
    """
    import json

    import cv2

    from centernet_jax.data.shapes import ShapesSource

    source = ShapesSource("train", num_examples=num_images, seed=seed, image_size=(48, 80),
                          objects_per_image=(1, 3))
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for index in range(num_images):
        example = source[index]
        name = f"{index:04d}.jpg"
        if index in corrupt:
            (root / "images" / name).write_bytes(b"not a jpeg at all")
        else:
            cv2.imwrite(str(root / "images" / name), example["image"],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
        height, width = example["image"].shape[:2]
        images.append({"id": 1000 + index, "file_name": name, "height": height, "width": width})
        for k, (box, cls) in enumerate(zip(example["boxes"].tolist(),
                                           example["classes"].tolist())):
            w = float("nan") if index in nan_box and k == 0 else box[2] - box[0]
            annotations.append({"id": len(annotations) + 1, "image_id": 1000 + index,
                                "category_id": 10 * (cls + 1), "bbox": [box[0], box[1], w,
                                                                        box[3] - box[1]],
                                "area": (box[2] - box[0]) * (box[3] - box[1]), "iscrowd": 0})
    categories = [{"id": 10 * (i + 1), "name": name}
                  for i, name in enumerate(source.class_names)]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return path, root / "images"


@pytest.mark.slow
def test_trains_on_a_coco_format_folder(tmp_path):
    import json

    train_json, train_images = write_coco_folder(tmp_path / "train", 12, seed=0, corrupt={3},
                                                 nan_box={5})
    val_json, val_images = write_coco_folder(tmp_path / "val", 6, seed=1)
    workdir = tmp_path / "run"
    result = _main(
        "--config=configs/dla34.py:custom", f"--workdir={workdir}",
        f"--config.dataset.annotations={train_json}", f"--config.dataset.images={train_images}",
        f"--config.dataset.val_annotations={val_json}",
        f"--config.dataset.val_images={val_images}",
        # A tiny DLA and a few steps (the smoke sizes); everything else is the custom recipe.
        "--config.model.dla.channels=(4,8,8,8,16,16)", "--config.model.head_conv=8",
        "--config.input.input_hw=(64,64)", "--config.input.border=16",
        "--config.eval.input_hw=(64,64)", "--config.train.batch_size=4",
        "--config.eval.batch_size=4", "--config.train.num_epochs=2",
        "--config.train.log_every_steps=3", "--config.eval.num_pictures=1",
        env={"XLA_FLAGS": ""}, timeout=600)  # one CPU device, as on a laptop
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((workdir / "config.json").read_text())["dataset"]
    assert recorded["num_classes"] == 5 and recorded["category_ids"] == [10, 20, 30, 40, 50]
    assert recorded["class_names"][0] == "ellipse"
    metrics = json.loads((workdir / "final_metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["unreadable_images"] == 0
    assert f"COCO bbox: AP {metrics['AP']:.3f}, AP50 " in result.stdout  # the task's summary
    detections = json.loads(next(workdir.glob("results_step_*.json")).read_text())
    assert {d["category_id"] for d in detections} <= {10, 20, 30, 40, 50}
    # The corrupt JPEG and the NaN box were skipped, counted and reported; training went on.
    assert "Skipping unreadable example 3" in result.stderr
    assert "num_unreadable" in result.stderr and "num_invalid" in result.stderr
