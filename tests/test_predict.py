"""centernet_jax.predict: image files in, COCO-format JSON and annotated pictures out."""

import collections
import json
import os
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

from centernet_jax import assembly, inference, predict
from centernet_jax.data import shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Readable test images: name -> (height, width) of the original.
READABLE = {"a.png": (70, 130), "b.jpg": (200, 90), "c_gray.png": (48, 64)}
UNREADABLE = ("bad.jpg", "empty.png")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Three images of different sizes and formats, a corrupt and an empty file, a .txt."""
    folder = tmp_path_factory.mktemp("predict_inputs")
    # A shapes image gives the model something it has seen; noise and gray the odd cases.
    example = shapes.ShapesSource("val", num_examples=1, image_size=(70, 130))[0]["image"]
    example = cv2.resize(example, (130, 70))
    cv2.imwrite(str(folder / "a.png"), example)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "b.jpg"), rng.integers(0, 256, (200, 90, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "c_gray.png"), rng.integers(0, 256, (48, 64), dtype=np.uint8))
    (folder / "bad.jpg").write_bytes(rng.bytes(512))
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()  # not searched: directories are read non-recursively
    cv2.imwrite(str(folder / "sub" / "d.png"), np.zeros((40, 40, 3), np.uint8))
    return folder


@pytest.fixture(scope="module")
def plain_run(trained_smoke, image_dir, tmp_path_factory):
    """Plain prediction over the directory, batch 2 (so the last batch is padded)."""
    config, workdir = trained_smoke
    output = tmp_path_factory.mktemp("predict_plain")
    summary = predict.predict(config, str(image_dir), str(output), workdir=workdir,
                              batch_size=2, draw_threshold=0.0, log_every=1)
    return summary, output


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def _by_image(detections):
    grouped = collections.defaultdict(list)
    for detection in detections:
        grouped[detection["image_id"]].append(detection)
    return grouped


def test_find_images_filters_sorts_and_deduplicates(tmp_path):
    for name in ("b.JPG", "a.png", "c.webp", "d.Jpeg", "e.gif", "f.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.png").write_bytes(b"x")
    found = [os.path.basename(p) for p in predict.find_images(str(tmp_path))]
    assert found == ["a.png", "b.JPG", "c.webp", "d.Jpeg"]
    globbed = predict.find_images([str(tmp_path / "*.png"), str(tmp_path / "a.png"),
                                   str(tmp_path / "f.txt")])
    # A file named explicitly is taken whatever its extension; duplicates appear once.
    assert [os.path.basename(p) for p in globbed] == ["a.png", "f.txt"]


@pytest.mark.parametrize("spec", ["missing_dir", "empty_dir", "*.jpg"])
def test_no_input_images_is_a_clear_error_before_any_model_work(tmp_path, spec):
    from configs import hourglass

    config = hourglass.get_config("smoke")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    # workdir=None would fail at loading: the input error must come first.
    with pytest.raises(FileNotFoundError, match="No input images found") as error:
        predict.predict(config, str(tmp_path / spec), str(tmp_path / "out"))
    assert spec in str(error.value)
    assert not (tmp_path / "out").exists()


def test_class_names_need_no_dataset():
    from configs import common, hourglass

    coco = hourglass.get_config("coco").dataset  # COCO is not on this machine
    names, ids = predict.class_names(coco, 80)
    assert names[0] == "person" and names[-1] == "toothbrush" and ids[-1] == 90
    assert predict.class_names(common.shapes_dataset(8, 8), 5) == (
        shapes.CLASS_NAMES, (1, 2, 3, 4, 5))
    assert predict.class_names({"name": "mine"}, 2) == (("class_0", "class_1"), (1, 2))


def test_summary_counts_and_names_skipped_files(plain_run, image_dir):
    summary, _ = plain_run
    assert summary["num_inputs"] == 5  # notes.txt and sub/ are not inputs
    assert summary["num_images"] == 3
    assert summary["num_skipped"] == 2
    assert sorted(os.path.basename(s["path"]) for s in summary["skipped"]) == sorted(UNREADABLE)
    reasons = {os.path.basename(s["path"]): s["reason"] for s in summary["skipped"]}
    assert reasons["empty.png"] == "empty file"
    assert summary["step"] == 8
    assert os.path.exists(summary["detections_file"])
    assert summary["seconds"] > 0 and summary["images_per_second"] > 0


def test_detections_json_is_coco_results_with_top_k_per_image(trained_smoke, plain_run):
    config, _ = trained_smoke
    summary, output = plain_run
    detections = _load_json(output / predict.DETECTIONS_FILE)
    images = _load_json(output / predict.IMAGES_FILE)
    assert summary["num_detections"] == len(detections)
    # Ids 1.. over the readable images in input (sorted) order.
    assert {k: (v["file_name"], v["height"], v["width"]) for k, v in images.items()} == {
        str(i + 1): (name, *hw) for i, (name, hw) in enumerate(READABLE.items())}
    grouped = _by_image(detections)
    assert {i: len(d) for i, d in grouped.items()} == {1: config.eval.top_k,
                                                       2: config.eval.top_k,
                                                       3: config.eval.top_k}
    for detection in detections:
        assert set(detection) == {"image_id", "file_name", "category_id", "category_name",
                                  "bbox", "score"}
        assert detection["file_name"] == images[str(detection["image_id"])]["file_name"]
        assert shapes.CLASS_NAMES[detection["category_id"] - 1] == detection["category_name"]
        assert len(detection["bbox"]) == 4 and np.all(np.isfinite(detection["bbox"]))
        assert 0.0 <= detection["score"] <= 1.0


def test_box_centres_lie_in_the_letterbox_window(plain_run):
    """fix_res: the network sees a max(h, w) square centred on the image, so every centre
    (a grid peak plus an offset of about one cell) maps inside that square."""
    _, output = plain_run
    images = _load_json(output / predict.IMAGES_FILE)
    inside_image = []
    for image_id, found in _by_image(_load_json(output / predict.DETECTIONS_FILE)).items():
        height, width = (images[str(image_id)][k] for k in ("height", "width"))
        side = max(height, width)
        cell = side / 16  # the 64 px eval input's 16x16 output grid
        boxes = np.array([d["bbox"] for d in found])
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        lower = np.array([width, height]) / 2 - side / 2 - cell
        upper = np.array([width, height]) / 2 + side / 2 + cell
        assert np.all((centres >= lower) & (centres <= upper)), image_id
        inside_image.append(np.mean(np.all((centres >= 0) & (centres <= [width, height]), -1)))
    assert np.mean(inside_image) > 0.5, inside_image


def test_pictures_are_the_original_images_with_boxes(image_dir, plain_run):
    _, output = plain_run
    pictures = sorted(p for p in os.listdir(output) if p.endswith(".png"))
    assert pictures == sorted(os.path.splitext(n)[0] + ".png" for n in READABLE)
    for name, (height, width) in READABLE.items():
        picture = cv2.imread(str(output / (os.path.splitext(name)[0] + ".png")))
        assert picture is not None and picture.shape == (height, width, 3), name
    # draw_threshold 0 draws all top-k boxes (test_glob_input... checks the undrawn image).
    original = cv2.imread(str(image_dir / "a.png"))
    assert np.any(cv2.imread(str(output / "a.png")) != original)


def test_detections_equal_the_live_model(trained_smoke, image_dir, plain_run):
    config, workdir = trained_smoke
    _, output = plain_run
    parts = assembly.assemble(config)
    task, model = parts.task, parts.model
    variables = inference.load_variables(parts, workdir=workdir).variables
    transform = inference.make_eval_transform(parts)
    element = transform.map({"image": cv2.imread(str(image_dir / "b.jpg")),
                             "boxes": np.zeros((0, 4)), "classes": np.zeros((0,), np.int32)})
    detect = jax.jit(inference.make_detect_fn(model, task, top_k=config.eval.top_k))
    found = jax.device_get(detect(variables, element["image"][None]))
    expected = task.to_image_detections(
        found, {"center": element["center"][None], "scale": element["scale"][None]},
        transform.output_hw)
    written = _by_image(_load_json(output / predict.DETECTIONS_FILE))[2]  # b.jpg
    np.testing.assert_allclose([d["score"] for d in written], expected["scores"][0],
                               atol=1e-6)  # JSON keeps 6 decimals
    boxes = np.array([d["bbox"] for d in written])
    want = expected["boxes"][0]
    want_xywh = np.concatenate([want[:, :2], want[:, 2:] - want[:, :2]], -1)
    np.testing.assert_allclose(boxes, want_xywh, atol=1e-3, rtol=1e-6)  # 3 decimals
    np.testing.assert_array_equal([d["category_id"] - 1 for d in written],
                                  expected["classes"][0])


def test_flip_single_file_and_score_threshold(trained_smoke, image_dir, plain_run, tmp_path):
    config, workdir = trained_smoke
    _, plain_output = plain_run
    plain = _by_image(_load_json(plain_output / predict.DETECTIONS_FILE))[1]  # a.png
    summary = predict.predict(config, str(image_dir / "a.png"), str(tmp_path), workdir=workdir,
                              flip=True, pictures=False)
    assert summary["num_inputs"] == 1 and summary["num_images"] == 1
    assert summary["flip"] is True
    flipped = _load_json(tmp_path / predict.DETECTIONS_FILE)
    assert {d["file_name"] for d in flipped} == {"a.png"} and len(flipped) == config.eval.top_k
    assert not np.allclose([d["score"] for d in flipped], [d["score"] for d in plain],
                           atol=1e-4)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".png")]


def test_glob_input_and_score_threshold(trained_smoke, image_dir, plain_run, tmp_path):
    config, workdir = trained_smoke
    _, plain_output = plain_run
    plain = _by_image(_load_json(plain_output / predict.DETECTIONS_FILE))
    threshold = float(np.median([d["score"] for d in plain[1]]))
    summary = predict.predict(config, str(image_dir / "*.png"), str(tmp_path),
                              workdir=workdir, checkpoint="8", score_threshold=threshold,
                              draw_threshold=1.1)
    assert summary["num_inputs"] == 3  # a.png, c_gray.png, empty.png
    assert [os.path.basename(s["path"]) for s in summary["skipped"]] == ["empty.png"]
    images = _load_json(tmp_path / predict.IMAGES_FILE)
    assert [images[k]["file_name"] for k in ("1", "2")] == ["a.png", "c_gray.png"]
    detections = _by_image(_load_json(tmp_path / predict.DETECTIONS_FILE))
    # a.png keeps exactly the plain run's detections at or above the threshold.
    kept = [d["score"] for d in plain[1] if d["score"] >= threshold]
    assert 0 < len(detections[1]) < config.eval.top_k
    np.testing.assert_allclose([d["score"] for d in detections[1]], kept, atol=1e-6)
    assert all(d["score"] >= threshold for ds in detections.values() for d in ds)
    # Nothing scores 1.1: the pictures are the originals, pixel for pixel (PNG is lossless;
    # this also rules out a BGR/RGB swap, a resize or a crop).
    for name in ("a.png", "c_gray.png"):
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / name)),
                                      cv2.imread(str(image_dir / name)))


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "centernet_jax.predict", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_command_line_writes_results(trained_smoke, image_dir, tmp_path):
    _, workdir = trained_smoke
    result = _run_cli("--config=configs/hourglass.py:smoke", "--config.eval.top_k=7",
                      f"--workdir={workdir}", "--checkpoint=latest",
                      f"--input={image_dir}", f"--output={tmp_path / 'out'}", "--flip",
                      "--batch_size=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 images, 21 detections, 2 skipped" in result.stdout
    assert "bad.jpg" in result.stdout and "empty.png" in result.stdout
    detections = _load_json(tmp_path / "out" / predict.DETECTIONS_FILE)
    assert {i: len(d) for i, d in _by_image(detections).items()} == {1: 7, 2: 7, 3: 7}
    assert sorted(p for p in os.listdir(tmp_path / "out") if p.endswith(".png")) == [
        "a.png", "b.png", "c_gray.png"]


def test_command_line_missing_input_is_one_line(tmp_path):
    result = _run_cli("--config=configs/hourglass.py:smoke", f"--input={tmp_path / 'nope'}",
                      f"--output={tmp_path / 'out'}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No input images found" in errors[0], result.stderr[-2000:]
    assert str(tmp_path / "nope") in errors[0]
