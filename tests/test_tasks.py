"""The task protocol: every registered task conforms, and a new task plugs in end to end.

`CentreTask` below is a whole task in a few dozen lines (one class-agnostic centre heatmap,
points as detections, its own "hit rate" metric). It is registered here and trained,
evaluated, used for prediction and exported with no change anywhere outside this file.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageDraw

from centernet_jax import (affine, assembly, decode, evaluate, export, inference, losses,
                           predict, targets, tasks, train)
from centernet_jax.data import pipeline, sources
from centernet_jax.evaluators.base import Evaluator, MetricSpec
from centernet_jax.models.heads import HeadSpec
from configs import hourglass

# Every registered task, with a small config of it that builds without downloads. A task
# added to the registry must add its config here, or `test_every_task_has_an_example_config`
# fails.
EXAMPLE_CONFIGS = {"ctdet": lambda: hourglass.get_config("smoke")}


# -- A new task, defined outside the package ----------------------------------------------


class HitRate:
    """Fraction of ground-truth boxes whose inside holds a detection scoring >= 0.3."""

    metrics = MetricSpec(title="centre hit rate", names=("hit_rate", "detections"),
                         headline=("hit_rate",), best="hit_rate")

    def __init__(self, ground_truth: dict):
        self._boxes = {image["id"]: [] for image in ground_truth["images"]}
        for annotation in ground_truth["annotations"]:
            x, y, w, h = annotation["bbox"]
            self._boxes[annotation["image_id"]].append((x, y, x + w, y + h))
        self.reset()

    def reset(self):
        self._points, self.summary = {}, ""

    def add(self, image_ids, detections, valid=None):
        valid = np.ones(len(image_ids), bool) if valid is None else valid
        for b in np.flatnonzero(valid):
            confident = detections["scores"][b] >= 0.3
            self._points[int(image_ids[b])] = detections["points"][b][confident]

    def compute(self):
        hits = [np.any((p[:, 0] >= x1) & (p[:, 0] <= x2) & (p[:, 1] >= y1) & (p[:, 1] <= y2))
                for image_id, p in self._points.items() for x1, y1, x2, y2 in
                self._boxes[image_id]]
        self.summary = f"{sum(hits)} of {len(hits)} boxes hit"
        return {"hit_rate": float(np.mean(hits)) if hits else 0.0,
                "detections": float(sum(len(p) for p in self._points.values()))}

    def write_results(self, directory, name):
        path = directory / f"{name}.json"
        path.write_text(json.dumps({str(k): v.tolist() for k, v in self._points.items()}))
        return path


@dataclasses.dataclass(frozen=True)
class CentreTask(tasks.Task):
    """Object centres as points, class-agnostic: one heatmap head."""

    name = "test_centres"
    metrics = HitRate.metrics
    batch_fields = ("boxes", "mask")
    export_units = {"points": "x, y in input pixels", "scores": "peak probability"}

    @classmethod
    def from_config(cls, config):
        tasks.options_from_config(_NoOptions, config.loss, "loss")
        return cls()

    num_classes = 1
    heads = {"centre": HeadSpec(1, init="heatmap")}

    def targets(self, batch, output_hw):
        classes = jnp.zeros(batch["mask"].shape, jnp.int32)
        return targets.box_targets(batch["boxes"], classes, batch["mask"], num_classes=1,
                                   output_hw=output_hw)

    def loss(self, outputs, target):
        focal = sum(losses.focal_loss(out["centre"], target["heatmap"]) for out in outputs)
        return focal / len(outputs), {"centre_loss": focal / len(outputs)}

    def decode(self, outputs, k, mirrored=None):
        heat = jax.nn.sigmoid(outputs["centre"])
        if mirrored is not None:
            heat = 0.5 * (heat + jax.nn.sigmoid(mirrored["centre"])[:, :, ::-1])
        peaks = decode.top_k(decode.nms_heatmap(heat), k)
        points = jnp.stack([peaks.xs, peaks.ys], -1).astype(jnp.float32) + 0.5
        return {"points": points, "scores": peaks.scores}

    def export_outputs(self, detections, down_ratio):
        return {"points": detections["points"] * down_ratio, "scores": detections["scores"]}

    def to_image_detections(self, detections, batch, output_hw):
        points = affine.points_to_image(np.asarray(detections["points"]), batch["center"],
                                        batch["scale"], output_hw)
        return {"points": points, "scores": np.asarray(detections["scores"])}

    def make_evaluator(self, source):
        return HitRate(source.coco_ground_truth())

    def results(self, image_id, detections, category_ids, *, coordinate_decimals,
                score_decimals):
        return [{"image_id": image_id, "point": np.round(p, coordinate_decimals).tolist(),
                 "score": round(float(s), score_decimals)}
                for p, s in zip(detections["points"], detections["scores"])]

    def draw(self, image_rgb, detections, *, class_names, threshold, scale=1.0,
             ground_truth=None):
        picture = Image.fromarray(np.asarray(image_rgb, np.uint8))
        pen = ImageDraw.Draw(picture)
        for (x, y), score in zip(detections["points"] * scale, detections["scores"]):
            if score >= threshold:
                pen.ellipse([x - 2, y - 2, x + 2, y + 2], outline=(255, 0, 0))
        return np.asarray(picture)


@dataclasses.dataclass(frozen=True)
class _NoOptions:
    pass


@pytest.fixture
def centre_task():
    tasks.register(CentreTask)
    yield CentreTask
    tasks.unregister(CentreTask.name)


def _centre_config():
    config = hourglass.get_config("smoke")
    config.task = CentreTask.name
    config.loss = ml_collections.ConfigDict()
    config.eval.num_pictures = 1
    return config


# -- The registry ---------------------------------------------------------------------------


def test_every_task_has_an_example_config():
    assert set(tasks.names()) == set(EXAMPLE_CONFIGS)


def test_registry_rejects_incomplete_tasks_and_name_clashes(centre_task):
    class Incomplete(tasks.Task):
        name = "incomplete"

    with pytest.raises(TypeError, match="abstract members"):
        tasks.register(Incomplete)
    with pytest.raises(TypeError, match="not a subclass"):
        tasks.register(dict)
    clash = type("Clash", (CentreTask,), {})
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(clash)
    with pytest.raises(ValueError, match="known tasks: .*'ctdet'"):
        tasks.get("nope")


def test_loss_options_are_checked_strictly():
    config = hourglass.get_config("smoke")
    with config.unlocked():
        config.loss.hm_wieght = 1.0
    with pytest.raises(ValueError, match=r"unknown field\(s\) loss.hm_wieght"):
        tasks.make_task(config)
    config = hourglass.get_config("smoke")
    config.loss.radius = "round"
    with pytest.raises(ValueError, match="loss.radius='round'"):
        tasks.make_task(config)


# -- Every registered task through the protocol ---------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLE_CONFIGS))
def test_task_follows_the_protocol(name):
    config = EXAMPLE_CONFIGS[name]()
    source = sources.make_source(config.dataset, config.dataset.eval_split)
    sources.fill_dataset_facts(config, source)
    parts = assembly.assemble(config)
    task = parts.task
    assert isinstance(task, tasks.Task) and task.name == name
    assert set(task.metrics.headline) <= set(task.metrics.names)

    # Training: the task's fields of a real batch -> targets -> a finite loss.
    grid_hw = parts.output_hw()
    train_batch = next(pipeline.make_train_iterator(
        source, train._train_transform(config, grid_hw), batch_size=2, seed=0))
    variables = jax.jit(parts.init)(jax.random.key(0)).variables
    outputs = parts.model.apply(variables, jnp.asarray(train_batch["image"]), train=False)
    assert [set(stack) for stack in outputs] == [set(task.heads)] * len(outputs)
    target = task.targets({k: jnp.asarray(train_batch[k]) for k in task.batch_fields}, grid_hw)
    assert target["mask"].shape == train_batch["mask"].shape
    loss, parts_of_loss = task.loss(outputs, target)
    assert loss.shape == () and np.isfinite(float(loss))
    assert all(np.isfinite(float(v)) for v in parts_of_loss.values())

    # Inference: decode (plain and flip) -> image pixels -> evaluator, results, picture.
    k = 7
    eval_hw = inference.eval_input_hw(config)
    eval_batch = next(pipeline.make_eval_batches(
        source, inference.make_eval_transform(parts), batch_size=2))
    last = inference.last_stack_outputs(parts.model, variables, jnp.asarray(eval_batch["image"]))
    detections = jax.device_get(task.decode(last, k))
    flipped = jax.device_get(task.decode(last, k, mirrored=last))
    assert set(flipped) == set(detections) and detections["scores"].shape == (2, k)
    in_image = task.to_image_detections(
        detections, {f: eval_batch[f] for f in task.eval_fields}, parts.output_hw(eval_hw))
    assert {name: v.shape[:2] for name, v in in_image.items()} == {
        name: (2, k) for name in in_image}
    evaluator = task.make_evaluator(source)
    assert isinstance(evaluator, Evaluator) and evaluator.metrics == task.metrics
    evaluator.add(eval_batch["image_id"], in_image, valid=eval_batch["valid"])
    assert set(evaluator.compute()) == set(task.metrics.names)
    one_image = {name: v[0] for name, v in in_image.items()}
    records = task.results(int(eval_batch["image_id"][0]), one_image, source.category_ids,
                           coordinate_decimals=3, score_decimals=6)
    assert len(records) == k and json.loads(json.dumps(records)) == records
    canvas = np.zeros((*eval_hw, 3), np.uint8)
    picture = task.draw(canvas, {n: v[0] for n, v in detections.items()},
                        class_names=source.class_names, threshold=0.0,
                        scale=config.input.down_ratio)
    assert picture.shape == canvas.shape and picture.dtype == np.uint8 and picture.any()
    if task.merge is not None:
        merged = task.merge([one_image, one_image], max_per_image=k, official=True)
        assert set(merged) == set(one_image)
    exported = task.export_outputs(detections, config.input.down_ratio)
    assert set(exported) == set(task.export_units)


# -- A new task end to end ------------------------------------------------------------------


@pytest.mark.slow
def test_a_task_defined_outside_the_package_trains_evaluates_predicts_and_exports(
        centre_task, tmp_path):
    config = _centre_config()
    workdir = tmp_path / "run"
    metrics = train.train_and_evaluate(config, str(workdir))
    assert set(metrics) == {"hit_rate", "detections", "unreadable_images"}
    assert metrics["detections"] > 0
    assert (workdir / "results_step_16.json").exists()
    assert len(list((workdir / "pictures").glob("*.png"))) == 2  # evaluated at 8 and 16

    flip = evaluate.evaluate(config, str(workdir), test_mode="flip")
    assert set(flip) == set(metrics)
    assert (workdir / "results_flip_step_16.json").exists()
    with pytest.raises(ValueError, match="no multi-scale merge"):
        evaluate.evaluate(config, str(workdir), test_mode="multiscale")

    source = sources.make_source(config.dataset, "val")
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        Image.fromarray(source[index]["image"][..., ::-1]).save(images / f"{index}.png")
    summary = predict.predict(config, str(images), str(tmp_path / "out"), workdir=str(workdir))
    written = json.loads((tmp_path / "out" / predict.DETECTIONS_FILE).read_text())
    assert summary["num_images"] == 3 and len(written) == 3 * config.eval.top_k
    assert set(written[0]) == {"image_id", "file_name", "point", "score"}
    assert os.path.exists(tmp_path / "out" / "0.png")

    directory, _ = export.export_checkpoint(config, str(tmp_path / "export"),
                                            workdir=str(workdir))
    detector = export.load(directory)
    outputs = detector(np.zeros((2, *config.input.input_hw, 3), np.float32))
    assert set(outputs) == {"points", "scores"}
    assert outputs["points"].shape == (2, config.eval.top_k, 2)
    assert detector.metadata["task"] == CentreTask.name
